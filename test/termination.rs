//! Cooperative termination (DESIGN §9) with real follower processes: a follower whose
//! transaction's decision does not come asks the other participants, and applies the
//! decision they give, with no leader running.
//!
//! The test plays the leader over raw `TPCMsg` streams (a leader that dies at a chosen
//! step is a peer that misbehaves on purpose): it prepares a transaction, hands its
//! decision to some followers or none, then goes away, as a leader killed with -9 does.
//! The followers run with a short `--termination-timeout`.

#[path = "raw_leader/mod.rs"]
mod raw_leader;
#[path = "e2e_support/mod.rs"]
mod support;

use std::time::Duration;

use raw_leader::Raw;
use support::{poll, NodeDirs, Role, POLL_TIMEOUT};
use tpc::net::{self, Address};
use tpc::proto::rpc::decision_reply::Known;
use tpc::proto::rpc::follower_reads_client::FollowerReadsClient;
use tpc::proto::rpc::{
    Action, DecisionRequest, LeaderMsg, LeaseRequest, MessageType, Operation, ViewInfo,
};

const CLUSTER: &str = "c1";
const TERMINATION_TIMEOUT: &str = "300ms";

/// Real follower processes, and the member id each created.
struct Followers {
    nodes: Vec<support::Node>,
    dirs: Vec<NodeDirs>,
    ids: Vec<String>,
}

impl Followers {
    async fn start(n: usize) -> Followers {
        let dirs: Vec<NodeDirs> = (1..=n).map(|i| NodeDirs::new(&format!("f{i}"))).collect();
        let args = [
            ("--termination-timeout", TERMINATION_TIMEOUT),
            ("--http-port", "0"),
        ];
        let nodes = dirs
            .iter()
            .map(|d| support::spawn_with_args(d, Role::Follower, &d.addr(), &args))
            .collect();
        for d in &dirs {
            support::wait_follower_ready(&d.addr()).await;
        }
        let ids = dirs
            .iter()
            .map(|d| {
                let file = d.journal_dir().join(tpc::member::FILE);
                std::fs::read_to_string(file)
                    .expect("member id")
                    .trim()
                    .to_string()
            })
            .collect();
        Followers { nodes, dirs, ids }
    }

    fn addrs(&self) -> Vec<String> {
        self.dirs.iter().map(NodeDirs::addr).collect()
    }

    /// A stream to every follower, each handed the view in force (epoch 1, every
    /// follower a member holding every key), as a leader's first messages do.
    async fn streams(&self) -> Vec<Raw> {
        let mut streams = Vec::new();
        for addr in self.addrs() {
            let mut stream = open(&addr).await;
            let view = LeaderMsg {
                r#type: MessageType::Global as i32,
                action: Action::Commit as i32,
                txid: "0.1".into(),
                epoch: 1,
                cluster_id: CLUSTER.into(),
                protocol: 2,
                view: Some(ViewInfo {
                    epoch: 1,
                    replication: self.ids.len() as u32,
                    member_ids: self.ids.clone(),
                    addresses: self.addrs(),
                    ..Default::default()
                }),
                ..Default::default()
            };
            stream.expect(view, Action::Ack).await;
            streams.push(stream);
        }
        streams
    }

    /// Follower `i`'s PREPARE of `txid`, putting `value` at `key`, naming every
    /// follower, in view 1.
    fn prepare(&self, i: usize, txid: &str, key: &str, value: &str) -> LeaderMsg {
        LeaderMsg {
            r#type: MessageType::Vote as i32,
            action: Action::Prepare as i32,
            key: key.into(),
            value: value.into(),
            txid: txid.into(),
            op: Operation::Put as i32,
            epoch: 1,
            cluster_id: CLUSTER.into(),
            participants: self.addrs(),
            protocol: 2,
            view_epoch: 1,
            member_id: self.ids[i].clone(),
            ..Default::default()
        }
    }

    /// What follower `i` answers about `txid`, asked as itself.
    async fn known(&self, i: usize, txid: &str) -> Result<(Known, bool), String> {
        let mut reads = reads(&self.dirs[i].addr()).await?;
        let request = DecisionRequest {
            cluster_id: CLUSTER.into(),
            txid: txid.into(),
            member_id: self.ids[i].clone(),
        };
        let reply = reads
            .ask_decision(request)
            .await
            .map_err(|s| s.message().to_string())?
            .into_inner();
        Ok((
            Known::try_from(reply.known).unwrap_or(Known::Unknown),
            reply.failed,
        ))
    }

    /// Waits until follower `i` answers `want` about `txid`.
    async fn wait_known(&self, i: usize, txid: &str, want: Known) {
        poll(
            &format!("follower {i} to know {txid} {want:?}"),
            POLL_TIMEOUT,
            || async {
                match self.known(i, txid).await? {
                    (known, _) if known == want => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await
    }

    /// Follower `i`'s own copy of `key`, read directly under a lease the test grants as
    /// the leader of epoch 1.
    async fn read(&self, i: usize, key: &str) -> Option<String> {
        let addr = self.dirs[i].addr();
        let mut reads = reads(&addr).await.expect("follower reachable");
        let lease = LeaseRequest {
            cluster_id: CLUSTER.into(),
            epoch: 1,
            view_epoch: 0,
        };
        reads.lease(lease).await.expect("lease granted");
        support::get(&addr, key).await.expect("a direct read")
    }
}

async fn reads(addr: &str) -> Result<FollowerReadsClient<tonic::transport::Channel>, String> {
    let address: Address = addr.parse()?;
    let channel = net::connect(&address, Duration::from_secs(5)).await?;
    Ok(FollowerReadsClient::new(channel))
}

/// A raw stream to the follower at `addr`: the test is its leader.
async fn open(addr: &str) -> Raw {
    Raw::open(&addr.parse().expect("address")).await
}

fn decide(txid: &str, action: Action) -> LeaderMsg {
    LeaderMsg {
        r#type: MessageType::Global as i32,
        action: action as i32,
        txid: txid.into(),
        epoch: 1,
        cluster_id: CLUSTER.into(),
        protocol: 2,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_learn_a_commit_from_the_one_it_reached_with_no_leader_running() {
    let followers = Followers::start(3).await;
    let mut streams = followers.streams().await;
    for (i, stream) in streams.iter_mut().enumerate() {
        let prepare = followers.prepare(i, "1.1", "k", "v");
        stream.expect(prepare, Action::Commit).await;
    }
    streams[0]
        .expect(decide("1.1", Action::Commit), Action::Ack)
        .await;
    drop(streams); // The leader is gone.
    for i in 1..3 {
        followers.wait_known(i, "1.1", Known::Committed).await;
        assert_eq!(
            followers.read(i, "k").await.as_deref(),
            Some("v"),
            "follower {i}"
        );
        let http = support::http_address(&followers.dirs[i]).await;
        let (_, metrics) = support::http_get(&http, "/metrics").await;
        assert!(
            metrics.contains("tpc_termination_asks_total{decision=\"commit\"} 1"),
            "follower {i}: {metrics}"
        );
    }
    assert_eq!(followers.read(0, "k").await.as_deref(), Some("v"));
    drop(followers.nodes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_that_never_voted_makes_the_termination_abort() {
    let followers = Followers::start(3).await;
    let mut streams = followers.streams().await;
    // Follower 3 joins the cluster (another transaction) but never sees 1.2's PREPARE.
    let other = followers.prepare(2, "1.1", "other", "x");
    streams[2].expect(other, Action::Commit).await;
    streams[2]
        .expect(decide("1.1", Action::Commit), Action::Ack)
        .await;
    for (i, stream) in streams[..2].iter_mut().enumerate() {
        let prepare = followers.prepare(i, "1.2", "k", "v");
        stream.expect(prepare, Action::Commit).await;
    }
    drop(streams);
    for i in 0..2 {
        followers.wait_known(i, "1.2", Known::Aborted).await;
        assert_eq!(
            followers.read(i, "k").await,
            None,
            "aborted, unlocked: follower {i}"
        );
    }
    // Follower 3 refused it durably: its late PREPARE is voted ABORT, also after a
    // restart.
    let mut followers = followers;
    followers.nodes[2].kill();
    let d = &followers.dirs[2];
    let args = [("--termination-timeout", TERMINATION_TIMEOUT)];
    followers.nodes[2] = support::spawn_with_args(d, Role::Follower, &d.addr(), &args);
    support::wait_follower_ready(&d.addr()).await;
    let mut late = open(&d.addr()).await;
    let prepare = followers.prepare(2, "1.2", "k", "v");
    late.expect(prepare, Action::Abort).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_participant_voted_and_none_knows_the_decision_the_transaction_waits() {
    let followers = Followers::start(2).await;
    let mut streams = followers.streams().await;
    for (i, stream) in streams.iter_mut().enumerate() {
        let prepare = followers.prepare(i, "1.1", "k", "v");
        stream.expect(prepare, Action::Commit).await;
    }
    drop(streams);
    // Both have asked, and found no decision (their logs say so).
    for d in &followers.dirs {
        poll(
            "the participants to ask each other",
            POLL_TIMEOUT,
            || async {
                match d.log().contains("the transaction stays prepared") {
                    true => Ok(()),
                    false => Err("not yet".to_string()),
                }
            },
        )
        .await;
    }
    for i in 0..2 {
        assert_eq!(followers.known(i, "1.1").await, Ok((Known::Voted, false)));
    }
    // A leader decides it in the end (DESIGN §1.4: only a leader can hold an ABORT no
    // participant has seen).
    let mut leader = open(&followers.addrs()[1]).await;
    leader
        .expect(decide("1.1", Action::Commit), Action::Ack)
        .await;
    followers.wait_known(0, "1.1", Known::Committed).await;
    assert_eq!(followers.read(0, "k").await.as_deref(), Some("v"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_question_gets_a_clear_error_and_changes_nothing() {
    let followers = Followers::start(1).await;
    let mut streams = followers.streams().await;
    let prepare = followers.prepare(0, "1.1", "k", "v");
    streams[0].expect(prepare, Action::Commit).await;
    let mut reads = reads(&followers.addrs()[0]).await.expect("reachable");
    let ask = |txid: &str, cluster: &str, member: &str| DecisionRequest {
        cluster_id: cluster.into(),
        txid: txid.into(),
        member_id: member.into(),
    };
    let me = followers.ids[0].clone();
    let cases = [
        (
            ask("x.y", CLUSTER, &me),
            tonic::Code::InvalidArgument,
            "transaction id",
        ),
        (
            ask("1.0", CLUSTER, &me),
            tonic::Code::InvalidArgument,
            "no transaction",
        ),
        (
            ask("1.1", CLUSTER, "a b\n"),
            tonic::Code::InvalidArgument,
            "member",
        ),
        (
            ask("1.1", "other", &me),
            tonic::Code::FailedPrecondition,
            "cluster",
        ),
    ];
    for (request, code, says) in cases {
        let status = reads
            .ask_decision(request.clone())
            .await
            .expect_err("refused");
        assert_eq!(status.code(), code, "{request:?}: {status:?}");
        assert!(status.message().contains(says), "{request:?}: {status:?}");
    }
    assert_eq!(
        followers.known(0, "1.1").await,
        Ok((Known::Voted, false)),
        "still prepared"
    );
}
