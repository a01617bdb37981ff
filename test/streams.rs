//! In-process integration tests of the leader <-> follower streams (DESIGN §1-§2).
//!
//! Two kinds of tests, all in one process, over Unix sockets in a temporary directory:
//!
//! - a real leader driving **mock followers** ([`Mock`]): each answers from a script,
//!   records every `LeaderMsg` it receives, and withholds its response headers until its
//!   first reply, as the classic Python/Go peers do;
//! - a **mock leader** (a raw `TPCMsg` stream, [`Raw`]) driving a real follower, checked
//!   through the follower's own `KeyValueAPI`.
//!
//! No sleeps are used for synchronisation: tests wait on the mocks' message logs (a watch
//! channel) or on replies, each bounded by [`WAIT`].

#[path = "inproc_support/mod.rs"]
mod inproc;
#[path = "raw_leader/mod.rs"]
mod raw_leader;

use inproc::{eventually, start_leader};
use raw_leader::Raw;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Code, Request, Status, Streaming};

use tpc::client::{Client, Txn};
use tpc::net::{self, Address, ListenAddr, Listener};
use tpc::proto::api::key_value_api_client::KeyValueApiClient;
use tpc::proto::api::{DeleteRequest, PutRequest};
use tpc::proto::rpc::two_phase_commit_server::{TwoPhaseCommit, TwoPhaseCommitServer};
use tpc::proto::rpc::{Action, LeaderMsg, MessageType, Operation, Response};
use tpc::tpc::follower::{Follower, FollowerConfig};

/// The bound on every wait: generous, only reached when a test fails.
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// Mock follower
// ---------------------------------------------------------------------------------------

/// How a mock answers one message.
#[derive(Clone, Copy, Debug)]
enum Answer {
    /// Reply with this action at once.
    Reply(Action),
    /// Reply with this action after a delay (later messages of the stream wait behind it).
    Delayed(Duration, Action),
    /// Never answer this message (the stream stays open).
    Silent,
    /// End the stream (status OK if headers were sent, else UNAVAILABLE) without answering.
    Close,
    /// Reply with this action only once a PREPARE of this key has arrived on the same
    /// stream; meanwhile later messages are read and answered, so replies go out of order.
    AfterPrepareOf(&'static str, Action),
}

/// Decides the answer to a message from the stream's number (1 = first `TPCMsg` call)
/// and the message.
type Script = Arc<dyn Fn(usize, &LeaderMsg) -> Answer + Send + Sync>;

/// Every message a mock received, with the number of the stream it came on.
type Log = Vec<(usize, LeaderMsg)>;

#[derive(Clone)]
struct Mock {
    script: Script,
    /// Echo the transaction id in responses (false: a classic peer, no txid).
    echo_txid: bool,
    log: watch::Sender<Log>,
    calls: Arc<AtomicUsize>,
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<Response, Status>> + Send>>;

#[tonic::async_trait]
impl TwoPhaseCommit for Mock {
    type TPCMsgStream = ResponseStream;

    async fn tpc_msg(
        &self,
        request: Request<Streaming<LeaderMsg>>,
    ) -> Result<tonic::Response<ResponseStream>, Status> {
        let stream_no = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let mut inbound = request.into_inner();
        let (out, mut out_rx) = mpsc::unbounded_channel::<Result<Response, Status>>();
        let mock = self.clone();
        tokio::spawn(async move {
            while let Ok(Some(msg)) = inbound.message().await {
                mock.log
                    .send_modify(|log| log.push((stream_no, msg.clone())));
                let action = match (mock.script)(stream_no, &msg) {
                    Answer::Reply(action) => action,
                    Answer::Delayed(delay, action) => {
                        tokio::time::sleep(delay).await;
                        action
                    }
                    Answer::Silent => continue,
                    Answer::Close => return,
                    Answer::AfterPrepareOf(key, action) => {
                        let response = mock.response(&msg, action);
                        let mut log = mock.log.subscribe();
                        let out = out.clone();
                        tokio::spawn(async move {
                            let seen = log
                                .wait_for(|log| {
                                    log.iter().any(|(s, m)| {
                                        *s == stream_no && is_prepare(m) && m.key == key
                                    })
                                })
                                .await
                                .is_ok();
                            if seen {
                                let _ = out.send(Ok(response));
                            }
                        });
                        continue;
                    }
                };
                let response = mock.response(&msg, action);
                if out.send(Ok(response)).is_err() {
                    return;
                }
            }
        });
        // Classic peers send their response headers only together with their first reply.
        match out_rx.recv().await {
            Some(first) => {
                let rest = UnboundedReceiverStream::new(out_rx);
                let stream = tokio_stream::once(first).chain(rest);
                Ok(tonic::Response::new(Box::pin(stream)))
            }
            None => Err(Status::unavailable(
                "mock closed the stream before answering",
            )),
        }
    }
}

impl Mock {
    /// The response to `msg` with `action`.
    fn response(&self, msg: &LeaderMsg, action: Action) -> Response {
        Response {
            action: action as i32,
            txid: if self.echo_txid {
                msg.txid.clone()
            } else {
                String::new()
            },
            ..Default::default()
        }
    }
}

/// A running mock follower.
struct MockHandle {
    /// Its address, as given to the leader.
    addr: String,
    log: watch::Sender<Log>,
    calls: Arc<AtomicUsize>,
    _stop: oneshot::Sender<()>,
}

impl MockHandle {
    /// Every message but the leader's fences (see [`is_fence`]), which tests of other
    /// rules need not count.
    fn messages(&self) -> Log {
        without_fences(&self.log.borrow())
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Waits (at most [`WAIT`]) until the log, fences left out, satisfies `pred`;
    /// returns it.
    async fn wait_for(&self, what: &str, pred: impl Fn(&Log) -> bool) -> Log {
        self.wait_for_all(what, |log| pred(&without_fences(log)))
            .await
            .into_iter()
            .filter(|(_, m)| !is_fence(m))
            .collect()
    }

    /// Waits (at most [`WAIT`]) until the whole log satisfies `pred`; returns it.
    async fn wait_for_all(&self, what: &str, pred: impl Fn(&Log) -> bool) -> Log {
        let mut rx = self.log.subscribe();
        let seen = tokio::time::timeout(WAIT, async {
            rx.wait_for(|log| pred(log)).await.map(|log| log.clone())
        })
        .await;
        match seen {
            Ok(Ok(log)) => log,
            _ => panic!(
                "mock {}: {what}: not seen within {WAIT:?}; received: {:#?}",
                self.addr,
                self.messages()
            ),
        }
    }

    /// The PREPAREs received, in order.
    fn prepares(&self) -> Vec<LeaderMsg> {
        self.messages()
            .into_iter()
            .map(|(_, m)| m)
            .filter(is_prepare)
            .collect()
    }
}

async fn spawn_mock(dir: &Path, name: &str, echo_txid: bool, script: Script) -> MockHandle {
    let path = dir.join(format!("{name}.sock"));
    let listener = Listener::bind(&ListenAddr::Addr(Address::Unix(path.clone())))
        .await
        .expect("bind mock socket");
    let (log, _) = watch::channel(Vec::new());
    let calls = Arc::new(AtomicUsize::new(0));
    let mock = Mock {
        script,
        echo_txid,
        log: log.clone(),
        calls: calls.clone(),
    };
    let router = tonic::transport::Server::builder().add_service(TwoPhaseCommitServer::new(mock));
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(listener.serve(router, async {
        let _ = stopped.await;
    }));
    MockHandle {
        addr: format!("unix:{}", path.display()),
        log,
        calls,
        _stop: stop,
    }
}

/// A script: vote `vote` on every PREPARE, ACK every decision.
fn voting(vote: Action) -> Script {
    Arc::new(move |_, msg| Answer::Reply(normal_answer(msg, vote)))
}

fn normal_answer(msg: &LeaderMsg, vote: Action) -> Action {
    if is_prepare(msg) {
        vote
    } else {
        Action::Ack
    }
}

fn is_prepare(msg: &LeaderMsg) -> bool {
    msg.r#type == MessageType::Vote as i32 && msg.action == Action::Prepare as i32
}

/// A leader's fence: a GLOBAL ABORT of `<epoch>.0`, an id no transaction has. A leader
/// sends one to every follower when it starts (a restarted one to learn what is in
/// doubt; every one to learn which followers speak protocol 2); classic peers ACK it.
fn is_fence(msg: &LeaderMsg) -> bool {
    msg.r#type == MessageType::Global as i32
        && msg.action == Action::Abort as i32
        && msg.txid.ends_with(".0")
}

fn without_fences(log: &Log) -> Log {
    log.iter().filter(|(_, m)| !is_fence(m)).cloned().collect()
}

fn is_global(msg: &LeaderMsg, action: Action, txid: &str) -> bool {
    msg.r#type == MessageType::Global as i32 && msg.action == action as i32 && msg.txid == txid
}

fn has_global(log: &Log, action: Action, txid: &str) -> bool {
    log.iter().any(|(_, m)| is_global(m, action, txid))
}

/// Parses a txid "<epoch>.<seq>".
fn parse_txid(txid: &str) -> (u64, u64) {
    let (epoch, seq) = txid
        .split_once('.')
        .unwrap_or_else(|| panic!("txid {txid:?} is not <epoch>.<seq>"));
    (
        epoch.parse().unwrap_or_else(|_| panic!("txid {txid:?}")),
        seq.parse().unwrap_or_else(|_| panic!("txid {txid:?}")),
    )
}

// ---------------------------------------------------------------------------------------
// Real nodes
// ---------------------------------------------------------------------------------------

fn client(addr: &str) -> Client {
    Client::new(addr, WAIT).expect("client")
}

/// A running real follower.
struct FollowerNode {
    addr: Address,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<tpc::Result<()>>>,
}

fn follower_config(dir: &Path) -> FollowerConfig {
    FollowerConfig {
        journal_path: dir.join("follower").join("journal"),
        kv_dir: dir.join("follower").join("kv"),
    }
}

async fn serve_follower(dir: &Path, follower: Follower) -> FollowerNode {
    let path: PathBuf = dir.join("follower.sock");
    let addr = Address::Unix(path);
    let listener = Listener::bind(&ListenAddr::Addr(addr.clone()))
        .await
        .expect("bind follower socket");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(follower.serve(listener, async {
        let _ = stopped.await;
    }));
    FollowerNode {
        addr,
        stop: Some(stop),
        task: Some(task),
    }
}

async fn start_follower(dir: &Path) -> FollowerNode {
    let follower = Follower::open(&follower_config(dir)).expect("follower opens");
    serve_follower(dir, follower).await
}

impl FollowerNode {
    /// A direct read of the follower's own copy. The test plays the leader of cluster
    /// "c1", so it first grants the lease for direct reads, as a leader's runtime does
    /// twice a second (`view_change.rs`); a follower of no cluster yet needs none.
    async fn get(&self, key: &str) -> Result<String, Status> {
        let address: tpc::net::Address = self.addr.to_string().parse().expect("address");
        if let Ok(channel) = tpc::net::connect(&address, Duration::from_secs(5)).await {
            let mut reads =
                tpc::proto::rpc::follower_reads_client::FollowerReadsClient::new(channel);
            let _ = reads
                .lease(tpc::proto::rpc::LeaseRequest {
                    cluster_id: "c1".into(),
                    epoch: u64::MAX,
                    view_epoch: 0,
                })
                .await;
        }
        client(&self.addr.to_string()).get(key).await
    }

    async fn open(&self) -> Raw {
        Raw::open(&self.addr).await
    }

    /// Stops the server and waits until it has stopped (directories unlocked).
    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let result = tokio::time::timeout(WAIT, task)
                .await
                .expect("follower stops within the bound after its shutdown signal")
                .expect("follower task");
            result.expect("follower served without error");
        }
    }
}

fn epoch_of(txid: &str) -> u64 {
    if txid.is_empty() {
        0
    } else {
        parse_txid(txid).0
    }
}

fn prepare(txid: &str, key: &str, value: &str) -> LeaderMsg {
    LeaderMsg {
        r#type: MessageType::Vote as i32,
        action: Action::Prepare as i32,
        key: key.into(),
        value: value.into(),
        txid: txid.into(),
        op: Operation::Put as i32,
        epoch: epoch_of(txid),
        low_water: String::new(),
        cluster_id: "c1".into(),
        cluster_has_data: false,
        ..Default::default()
    }
}

fn decide(txid: &str, action: Action) -> LeaderMsg {
    LeaderMsg {
        r#type: MessageType::Global as i32,
        action: action as i32,
        txid: txid.into(),
        epoch: epoch_of(txid),
        cluster_id: "c1".into(),
        ..Default::default()
    }
}

/// A classic tooling PREPARE: no txid, no extensions.
fn legacy_prepare(key: &str, value: &str) -> LeaderMsg {
    LeaderMsg {
        r#type: MessageType::Vote as i32,
        action: Action::Prepare as i32,
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

fn legacy_decide(action: Action) -> LeaderMsg {
    LeaderMsg {
        r#type: MessageType::Global as i32,
        action: action as i32,
        ..Default::default()
    }
}

fn assert_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, what: &str) {
    match result {
        Err(status) if status.code() == code => {}
        other => panic!("{what}: expected {code:?}, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Leader against mock followers
// ---------------------------------------------------------------------------------------

/// The first message of a starting leader on every stream is a fence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starting_leader_fences_every_follower_first_and_classic_peers_just_ack_it() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = spawn_mock(dir.path(), "m1", false, voting(Action::Commit)).await;
    let (leader, _stop) = start_leader(dir.path(), vec![m1.addr.clone()], WAIT).await;
    let log = m1.wait_for_all("the fence", |log| !log.is_empty()).await;
    assert!(is_fence(&log[0].1), "{log:#?}");
    assert_eq!(log[0].1.txid, "1.0", "a first start is epoch 1");
    client(&leader)
        .put("k", "v")
        .await
        .expect("a classic peer's ACK of the fence lets writes through");
}

/// DESIGN §6 with a classic follower: what its PREPARE can't carry (a compare, several
/// ops) is refused with `FAILED_PRECONDITION` naming it; a Put still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_in_a_cluster_with_a_classic_peer_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = spawn_mock(dir.path(), "m1", false, voting(Action::Commit)).await;
    let (leader, _stop) = start_leader(dir.path(), vec![m1.addr.clone()], WAIT).await;
    let mut c = client(&leader);
    c.put("k", "v").await.expect("a single write works");
    for txn in [
        Txn::new().then_put("a", "1").then_put("b", "2"),
        Txn::new().if_value("k", "v").then_put("k", "w"),
        Txn::new().then_get("k"),
    ] {
        let refused = c.txn(txn.clone()).await.expect_err("refused");
        assert_eq!(
            refused.code(),
            Code::FailedPrecondition,
            "{txn:?}: {refused:?}"
        );
        assert!(refused.message().contains(&m1.addr), "{refused:?}");
    }
    assert!(
        m1.prepares().len() == 1,
        "no PREPARE of a refused transaction was sent"
    );
}

/// A Put through the leader is a PREPARE (with an `<epoch>.<seq>` txid, the key, value,
/// op PUT and cluster id) followed by a COMMIT of the same txid on every follower, over
/// one long-lived stream per follower, even with header-withholding peers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_is_prepare_then_commit_on_one_long_lived_stream() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = spawn_mock(dir.path(), "m1", true, voting(Action::Commit)).await;
    let m2 = spawn_mock(dir.path(), "m2", true, voting(Action::Commit)).await;
    let (leader, _stop) = start_leader(
        dir.path(),
        vec![m1.addr.clone(), m2.addr.clone()],
        Duration::from_secs(5),
    )
    .await;
    let channel = net::connect(&leader.parse().unwrap(), WAIT).await.unwrap();
    let mut kv = KeyValueApiClient::new(channel);

    let echoed = kv
        .put(PutRequest {
            key: "k".into(),
            value: "v1".into(),
        })
        .await
        .expect("put succeeds")
        .into_inner();
    assert_eq!(echoed.value, "v1", "Put echoes the value");

    let mut first_txid = None;
    for m in [&m1, &m2] {
        let log = m
            .wait_for("PREPARE then COMMIT", |log| log.len() >= 2)
            .await;
        let (_, p) = &log[0];
        assert!(is_prepare(p), "first message is VOTE/PREPARE: {p:?}");
        assert_eq!((p.key.as_str(), p.value.as_str()), ("k", "v1"));
        assert_eq!(p.op, Operation::Put as i32);
        assert!(!p.cluster_id.is_empty(), "cluster id set: {p:?}");
        let (epoch, seq) = parse_txid(&p.txid);
        assert_eq!(p.epoch, epoch, "epoch field matches the txid: {p:?}");
        assert!(seq >= 1);
        assert!(is_global(&log[1].1, Action::Commit, &p.txid), "{log:#?}");
        match &first_txid {
            None => first_txid = Some(p.txid.clone()),
            Some(t) => assert_eq!(t, &p.txid, "one txid for all followers"),
        }
    }
    let first_txid = first_txid.unwrap();

    kv.put(PutRequest {
        key: "k".into(),
        value: "v2".into(),
    })
    .await
    .expect("second put succeeds");
    for m in [&m1, &m2] {
        let log = m
            .wait_for("second PREPARE then COMMIT", |log| log.len() >= 4)
            .await;
        let p = &log[2].1;
        assert!(is_prepare(p), "{log:#?}");
        assert_eq!(p.value, "v2");
        let (e1, s1) = parse_txid(&first_txid);
        let (e2, s2) = parse_txid(&p.txid);
        assert_eq!(e1, e2, "same leader epoch");
        assert!(s2 > s1, "seq grows: {first_txid} then {}", p.txid);
        assert!(is_global(&log[3].1, Action::Commit, &p.txid), "{log:#?}");
        assert!(
            log.iter().all(|(stream, _)| *stream == 1),
            "all on the first stream: {log:#?}"
        );
        assert_eq!(m.calls(), 1, "one long-lived TPCMsg stream per follower");
    }
}

/// One ABORT vote aborts the write (ABORTED), and the ABORT decision goes to every
/// follower that got the PREPARE, including the one that voted ABORT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_vote_aborts_and_decision_reaches_every_follower() {
    let dir = tempfile::tempdir().unwrap();
    let yes = spawn_mock(dir.path(), "yes", true, voting(Action::Commit)).await;
    let no = spawn_mock(dir.path(), "no", true, voting(Action::Abort)).await;
    let (leader, _stop) = start_leader(
        dir.path(),
        vec![yes.addr.clone(), no.addr.clone()],
        Duration::from_secs(5),
    )
    .await;

    assert_code(
        client(&leader).put("k", "v").await,
        Code::Aborted,
        "put with an ABORT vote",
    );
    let txid = yes.prepares()[0].txid.clone();
    assert_eq!(no.prepares()[0].txid, txid);
    for m in [&yes, &no] {
        let log = m
            .wait_for("GLOBAL/ABORT", |log| has_global(log, Action::Abort, &txid))
            .await;
        assert!(
            !has_global(&log, Action::Commit, &txid),
            "no COMMIT of an aborted transaction: {log:#?}"
        );
    }
}

/// A classic peer answers without txids: replies are matched to the oldest unanswered
/// message, and Put and Delete (op DELETE) both work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_peer_without_txids_in_responses_works() {
    let dir = tempfile::tempdir().unwrap();
    // m2 is slow to ACK, so a decision and the next PREPARE are usually both unanswered
    // when its (txid-less) replies come: each must answer the oldest one.
    let slow_acks: Script = Arc::new(|_, msg| {
        if is_prepare(msg) {
            Answer::Reply(Action::Commit)
        } else {
            Answer::Delayed(Duration::from_millis(100), Action::Ack)
        }
    });
    let m1 = spawn_mock(dir.path(), "m1", false, voting(Action::Commit)).await;
    let m2 = spawn_mock(dir.path(), "m2", false, slow_acks).await;
    let (leader, _stop) = start_leader(
        dir.path(),
        vec![m1.addr.clone(), m2.addr.clone()],
        Duration::from_secs(5),
    )
    .await;
    let mut c = client(&leader);

    c.put("k", "v").await.expect("put through classic peers");
    c.delete("k").await.expect("delete through classic peers");
    let channel = net::connect(&leader.parse().unwrap(), WAIT).await.unwrap();
    KeyValueApiClient::new(channel)
        .delete(DeleteRequest { key: "k".into() })
        .await
        .expect("a second delete (absent key) succeeds too");

    for m in [&m1, &m2] {
        let log = m
            .wait_for("three transactions decided", |log| log.len() >= 6)
            .await;
        let prepares = m.prepares();
        assert_eq!(prepares.len(), 3, "{log:#?}");
        assert_eq!(prepares[0].op, Operation::Put as i32);
        assert_eq!(prepares[0].value, "v");
        assert_eq!(prepares[1].op, Operation::Delete as i32, "{log:#?}");
        assert_eq!(prepares[1].key, "k");
        for p in &prepares {
            assert!(
                has_global(&log, Action::Commit, &p.txid),
                "COMMIT of {}: {log:#?}",
                p.txid
            );
        }
        assert_eq!(m.calls(), 1, "stream kept: {log:#?}");
    }
}

/// A follower that never answers the PREPARE (and withholds its headers) makes the Put
/// UNAVAILABLE; the leader reconnects and sends that follower the ABORT before anything
/// else on the new stream, then goes on working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_prepare_is_unavailable_then_abort_first_on_new_stream() {
    let dir = tempfile::tempdir().unwrap();
    let good = spawn_mock(dir.path(), "good", true, voting(Action::Commit)).await;
    let silent_script: Script = Arc::new(|stream, msg| {
        if stream == 1 && is_prepare(msg) {
            Answer::Silent
        } else {
            Answer::Reply(normal_answer(msg, Action::Commit))
        }
    });
    let silent = spawn_mock(dir.path(), "silent", true, silent_script).await;
    let (leader, _stop) = start_leader(
        dir.path(),
        vec![good.addr.clone(), silent.addr.clone()],
        Duration::from_millis(300),
    )
    .await;
    let mut c = client(&leader);

    assert_code(
        c.put("k", "v").await,
        Code::Unavailable,
        "put with a silent follower",
    );
    let log = silent.wait_for("the PREPARE", |log| !log.is_empty()).await;
    let txid = log[0].1.txid.clone();
    let log = silent
        .wait_for("GLOBAL/ABORT on a new stream", |log| {
            log.iter()
                .any(|(s, m)| *s >= 2 && is_global(m, Action::Abort, &txid))
        })
        .await;
    let first_on_new_stream = log
        .iter()
        .find(|(s, _)| *s == 2)
        .map(|(_, m)| m.clone())
        .expect("a second stream");
    assert!(
        is_global(&first_on_new_stream, Action::Abort, &txid),
        "the decision comes first on the new stream: {log:#?}"
    );
    good.wait_for("GLOBAL/ABORT", |log| has_global(log, Action::Abort, &txid))
        .await;

    c.put("k", "v2").await.expect("the link works again");
    let log = silent.messages();
    let p = silent.prepares().last().cloned().unwrap();
    assert_eq!(p.value, "v2");
    let pos = |pred: &dyn Fn(&LeaderMsg) -> bool| log.iter().position(|(_, m)| pred(m));
    assert!(
        pos(&|m| is_global(m, Action::Abort, &txid)) < pos(&|m| m.txid == p.txid),
        "the pending ABORT before the new PREPARE: {log:#?}"
    );
}

/// A follower that closes an established stream instead of voting makes the Put
/// UNAVAILABLE; the ABORT is the first message on the next stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_stream_during_prepare_is_unavailable_then_abort_on_new_stream() {
    let dir = tempfile::tempdir().unwrap();
    let good = spawn_mock(dir.path(), "good", true, voting(Action::Commit)).await;
    let prepares_seen = Arc::new(AtomicUsize::new(0));
    let seen = prepares_seen.clone();
    let closing_script: Script = Arc::new(move |_, msg| {
        if is_prepare(msg) && seen.fetch_add(1, Ordering::SeqCst) == 1 {
            Answer::Close // the second PREPARE ever received
        } else {
            Answer::Reply(normal_answer(msg, Action::Commit))
        }
    });
    let closing = spawn_mock(dir.path(), "closing", true, closing_script).await;
    let (leader, _stop) = start_leader(
        dir.path(),
        vec![good.addr.clone(), closing.addr.clone()],
        Duration::from_millis(300),
    )
    .await;
    let mut c = client(&leader);

    c.put("k", "v1").await.expect("first put");
    assert_code(
        c.put("k", "v2").await,
        Code::Unavailable,
        "put whose PREPARE ends the stream",
    );
    let txid = closing.prepares()[1].txid.clone();
    let log = closing
        .wait_for("GLOBAL/ABORT on a new stream", |log| {
            log.iter()
                .any(|(s, m)| *s >= 2 && is_global(m, Action::Abort, &txid))
        })
        .await;
    let first_on_new_stream = log.iter().find(|(s, _)| *s == 2).map(|(_, m)| m.clone());
    assert!(
        first_on_new_stream.is_some_and(|m| is_global(&m, Action::Abort, &txid)),
        "the decision comes first on the new stream: {log:#?}"
    );
    good.wait_for("GLOBAL/ABORT", |log| has_global(log, Action::Abort, &txid))
        .await;
}

/// A client whose deadline expires while the votes are collected gets
/// DEADLINE_EXCEEDED (or CANCELLED), yet the transaction still reaches its decision
/// (COMMIT here) and the key is not left locked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_is_decided_even_when_the_client_deadline_expires() {
    let dir = tempfile::tempdir().unwrap();
    let fast = spawn_mock(dir.path(), "fast", true, voting(Action::Commit)).await;
    let delayed_once = Arc::new(AtomicBool::new(false));
    let flag = delayed_once.clone();
    let slow_script: Script = Arc::new(move |_, msg| {
        if is_prepare(msg) && !flag.swap(true, Ordering::SeqCst) {
            Answer::Delayed(Duration::from_millis(300), Action::Commit)
        } else {
            Answer::Reply(normal_answer(msg, Action::Commit))
        }
    });
    let slow = spawn_mock(dir.path(), "slow", true, slow_script).await;
    let (leader, _stop) = start_leader(
        dir.path(),
        vec![fast.addr.clone(), slow.addr.clone()],
        Duration::from_secs(2),
    )
    .await;

    let mut impatient = Client::new(&leader, Duration::from_millis(50)).unwrap();
    match impatient.put("k", "v1").await {
        Err(status) if matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled) => {}
        other => panic!("expected DEADLINE_EXCEEDED or CANCELLED, got {other:?}"),
    }
    let log = slow.wait_for("the PREPARE", |log| !log.is_empty()).await;
    let txid = log[0].1.txid.clone();
    for m in [&fast, &slow] {
        m.wait_for("GLOBAL/COMMIT despite the client's deadline", |log| {
            has_global(log, Action::Commit, &txid)
        })
        .await;
    }
    client(&leader)
        .put("k", "v2")
        .await
        .expect("a following put of the same key succeeds");
    let p = slow.prepares().last().cloned().unwrap();
    assert_eq!(p.value, "v2");
    slow.wait_for("COMMIT of the second put", |log| {
        has_global(log, Action::Commit, &p.txid)
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Mock leader against a real follower
// ---------------------------------------------------------------------------------------

/// PREPARE locks the key (direct reads UNAVAILABLE) and votes COMMIT with the txid and the
/// adopted cluster id; COMMIT applies; decisions are idempotent; ABORT keeps the old
/// value; a PREPARE of a decided transaction, or below the low-water mark, gets ABORT and
/// takes no lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_prepare_commit_abort_idempotence_and_low_water() {
    let dir = tempfile::tempdir().unwrap();
    let f = start_follower(dir.path()).await;
    let mut s = f.open().await;

    let vote = s.expect(prepare("1.1", "k", "v1"), Action::Commit).await;
    assert_eq!(
        vote.cluster_id, "c1",
        "the follower reports the adopted cluster"
    );
    assert_code(
        f.get("k").await,
        Code::Unavailable,
        "read of a prepared key",
    );

    s.expect(decide("1.1", Action::Commit), Action::Ack).await;
    assert_eq!(f.get("k").await.unwrap(), "v1");
    s.expect(decide("1.1", Action::Commit), Action::Ack).await;
    assert_eq!(
        f.get("k").await.unwrap(),
        "v1",
        "repeated COMMIT changes nothing"
    );

    s.expect(prepare("1.2", "k", "v2"), Action::Commit).await;
    assert_code(
        f.get("k").await,
        Code::Unavailable,
        "read of a prepared key",
    );
    s.expect(decide("1.2", Action::Abort), Action::Ack).await;
    assert_eq!(f.get("k").await.unwrap(), "v1", "ABORT keeps the old value");

    s.expect(prepare("1.1", "k", "v3"), Action::Abort).await;
    assert_eq!(
        f.get("k").await.unwrap(),
        "v1",
        "a stale PREPARE of a decided transaction takes no lock"
    );

    let mut marked = prepare("1.6", "k2", "x");
    marked.low_water = "1.5".into();
    s.expect(marked, Action::Commit).await;
    s.expect(prepare("1.3", "k3", "y"), Action::Abort).await;
    assert_code(
        f.get("k3").await,
        Code::NotFound,
        "a PREPARE below the low-water mark takes no lock",
    );
    s.expect(decide("1.6", Action::Commit), Action::Ack).await;
    assert_eq!(f.get("k2").await.unwrap(), "x");
}

/// A follower that adopted cluster "c1" refuses a leader of "c2" (FAILED_PRECONDITION),
/// a malformed message ends its stream with INVALID_ARGUMENT, and the follower keeps
/// serving its other streams and new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_refuses_other_cluster_and_malformed_messages_but_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let f = start_follower(dir.path()).await;
    let mut s1 = f.open().await;
    s1.expect(prepare("1.1", "a", "1"), Action::Commit).await;
    s1.expect(decide("1.1", Action::Commit), Action::Ack).await;

    let mut other = f.open().await;
    let mut foreign = prepare("1.2", "x", "2");
    foreign.cluster_id = "c2".into();
    assert_code(
        other.ask(foreign).await,
        Code::FailedPrecondition,
        "a leader of another cluster",
    );
    assert_code(
        f.get("x").await,
        Code::NotFound,
        "the refused PREPARE took no lock",
    );

    let mut bad = f.open().await;
    let malformed = LeaderMsg {
        r#type: MessageType::Global as i32,
        action: Action::Prepare as i32,
        key: "y".into(),
        value: "3".into(),
        txid: "1.3".into(),
        epoch: 1,
        cluster_id: "c1".into(),
        ..Default::default()
    };
    assert_code(
        bad.ask(malformed).await,
        Code::InvalidArgument,
        "GLOBAL/PREPARE",
    );
    assert_code(
        f.get("y").await,
        Code::NotFound,
        "malformed message ignored",
    );

    s1.expect(prepare("1.4", "b", "4"), Action::Commit).await;
    s1.expect(decide("1.4", Action::Commit), Action::Ack).await;
    let mut s3 = f.open().await;
    let vote = s3.expect(prepare("1.5", "c", "5"), Action::Commit).await;
    assert_eq!(vote.cluster_id, "c1", "still in cluster c1");
    s3.expect(decide("1.5", Action::Commit), Action::Ack).await;
    assert_eq!(f.get("b").await.unwrap(), "4");
    assert_eq!(f.get("c").await.unwrap(), "5");
}

/// A follower restarted from its directories restores its prepared transaction (the key
/// stays locked) and applies the decision that arrives on a new stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_restores_prepared_transaction_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = start_follower(dir.path()).await;
    {
        let mut s = f.open().await;
        s.expect(prepare("1.1", "k", "v"), Action::Commit).await;
    }
    f.stop().await;

    let follower = Follower::open(&follower_config(dir.path())).expect("reopen");
    eventually("replay done", WAIT, || async { follower.is_ready() }).await;
    let f = serve_follower(dir.path(), follower).await;
    assert_code(
        f.get("other").await,
        Code::NotFound,
        "the restarted follower answers reads",
    );
    assert_code(
        f.get("k").await,
        Code::Unavailable,
        "the restored prepared transaction locks its key",
    );
    let mut s = f.open().await;
    s.expect(decide("1.1", Action::Commit), Action::Ack).await;
    assert_eq!(f.get("k").await.unwrap(), "v");
}

/// Legacy messages (no txid): at most one undecided legacy transaction; an identical
/// PREPARE gets the same vote, a different one ABORT; a legacy decision following a
/// refused PREPARE on the same stream changes nothing; on the first stream it decides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_legacy_messages() {
    let dir = tempfile::tempdir().unwrap();
    let f = start_follower(dir.path()).await;
    let mut s1 = f.open().await;
    let mut s2 = f.open().await;

    s1.expect(legacy_prepare("k", "v"), Action::Commit).await;
    s1.expect(legacy_prepare("k", "v"), Action::Commit).await;
    assert_code(f.get("k").await, Code::Unavailable, "legacy-prepared key");

    s2.expect(legacy_prepare("k2", "w"), Action::Abort).await;
    s2.expect(legacy_decide(Action::Commit), Action::Ack).await;
    assert_code(
        f.get("k").await,
        Code::Unavailable,
        "a legacy decision after a refused PREPARE on its stream changes nothing",
    );
    assert_code(f.get("k2").await, Code::NotFound, "the refused PREPARE");

    s1.expect(legacy_decide(Action::Commit), Action::Ack).await;
    assert_eq!(f.get("k").await.unwrap(), "v");
    assert_code(f.get("k2").await, Code::NotFound, "k2 never written");
}

/// The epoch and low-water rules survive a follower restart (DESIGN §1.5: the follower
/// persists the mark; a repeated PREPARE gets the same vote): PREPAREs refused before
/// the restart, from an older epoch or below the mark, are refused after it too, and
/// take no lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_epoch_and_low_water_refusals_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = start_follower(dir.path()).await;
    {
        let mut s = f.open().await;
        // Joins cluster c1 at epoch 1 (no mark yet).
        s.expect(prepare("1.1", "k", "v"), Action::Commit).await;
        s.expect(decide("1.1", Action::Commit), Action::Ack).await;
        // A new leader epoch 2, with a low-water mark.
        let mut marked = prepare("2.6", "k2", "x");
        marked.low_water = "2.5".into();
        s.expect(marked, Action::Commit).await;
        s.expect(decide("2.6", Action::Commit), Action::Ack).await;
        s.expect(prepare("1.9", "old-epoch", "y"), Action::Abort)
            .await;
        s.expect(prepare("2.3", "below-mark", "y"), Action::Abort)
            .await;
    }
    f.stop().await;

    let f = start_follower(dir.path()).await;
    let mut s = f.open().await;
    // Each message carries only its own epoch and no mark, as a late duplicate would.
    let old_epoch = s.ask(prepare("1.9", "old-epoch", "y")).await.unwrap();
    let below_mark = s.ask(prepare("2.3", "below-mark", "y")).await.unwrap();
    assert_eq!(
        (
            Action::try_from(old_epoch.action),
            Action::try_from(below_mark.action)
        ),
        (Ok(Action::Abort), Ok(Action::Abort)),
        "after a restart: PREPARE 1.9 (older epoch) and 2.3 (below mark 2.5) must still get ABORT"
    );
    assert_code(f.get("old-epoch").await, Code::NotFound, "no lock");
    assert_code(f.get("below-mark").await, Code::NotFound, "no lock");
}

// ---------------------------------------------------------------------------------------
// Concurrent transactions
// ---------------------------------------------------------------------------------------

/// The position in `log` of the first message satisfying `pred`.
fn position_of(log: &Log, what: &str, pred: impl Fn(&LeaderMsg) -> bool) -> usize {
    log.iter()
        .position(|(_, m)| pred(m))
        .unwrap_or_else(|| panic!("{what}: not in the log: {log:#?}"))
}

/// The txid of the first PREPARE of `key` in `log`.
fn prepare_txid(log: &Log, key: &str) -> String {
    log.iter()
        .find(|(_, m)| is_prepare(m) && m.key == key)
        .map(|(_, m)| m.txid.clone())
        .unwrap_or_else(|| panic!("no PREPARE of {key:?}: {log:#?}"))
}

/// What [`slow_waits_for_fast`] saw.
struct SlowFast {
    mock: MockHandle,
    slow: Result<(), Status>,
    fast: Result<(), Status>,
    _leader: oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

/// One mock follower that withholds its vote on key "slow" until the PREPARE of key
/// "fast" has arrived on the same stream (and votes `fast_vote` on "fast" at once), so
/// the two votes go back in the opposite order of their PREPAREs. Puts "slow", waits
/// until its PREPARE reached the mock, then puts "fast"; returns both answers. The vote
/// timeout (5 s) is far below the bound on the client calls ([`WAIT`]): a leader that
/// holds "fast" back until "slow" is decided makes "slow" time out, not hang.
async fn slow_waits_for_fast(fast_vote: Action, warm_up: bool) -> SlowFast {
    let dir = tempfile::tempdir().unwrap();
    let script: Script = Arc::new(move |_, msg| match msg.key.as_str() {
        "slow" if is_prepare(msg) => Answer::AfterPrepareOf("fast", Action::Commit),
        "fast" if is_prepare(msg) => Answer::Reply(fast_vote),
        _ => Answer::Reply(normal_answer(msg, Action::Commit)),
    });
    let mock = spawn_mock(dir.path(), "m", true, script).await;
    let (leader, stop) =
        start_leader(dir.path(), vec![mock.addr.clone()], Duration::from_secs(5)).await;
    if warm_up {
        // Open the stream first. (The mock withholds its response headers until its
        // first reply, as classic peers do.)
        client(&leader)
            .put("warm", "up")
            .await
            .expect("warm-up put");
    }

    let slow = {
        let leader = leader.clone();
        tokio::spawn(async move { client(&leader).put("slow", "s").await })
    };
    mock.wait_for("the PREPARE of slow", |log| {
        log.iter().any(|(_, m)| is_prepare(m) && m.key == "slow")
    })
    .await;
    let fast = client(&leader).put("fast", "f").await;
    let slow = slow.await.expect("the slow put's task");
    SlowFast {
        mock,
        slow,
        fast,
        _leader: stop,
        _dir: dir,
    }
}

/// Transactions on different keys run concurrently and are pipelined on one stream: the
/// follower gets the PREPARE of "fast" while "slow" is still undecided (its vote is
/// withheld until then), on the same long-lived stream, and accepts the votes out of
/// order. A leader that runs one transaction at a time, or sends a stream's next message
/// only once the previous one is answered, never sends "fast"'s PREPARE in time:
/// "slow" times out (UNAVAILABLE) and this test fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_keys_run_concurrently_pipelined_on_one_stream() {
    let run = slow_waits_for_fast(Action::Commit, true).await;
    run.slow
        .expect("put(slow) succeeds: its vote came once fast's PREPARE had arrived");
    run.fast.expect("put(fast) succeeds");

    let m = &run.mock;
    let log = m.messages();
    let slow = prepare_txid(&log, "slow");
    let fast = prepare_txid(&log, "fast");
    let log = m
        .wait_for("both COMMITs", |log| {
            has_global(log, Action::Commit, &slow) && has_global(log, Action::Commit, &fast)
        })
        .await;
    assert!(
        log.iter().all(|(stream, _)| *stream == 1),
        "everything on the first stream: {log:#?}"
    );
    assert_eq!(m.calls(), 1, "one TPCMsg stream: {log:#?}");
    let fast_prepare = position_of(&log, "PREPARE of fast", |m| is_prepare(m) && m.txid == fast);
    let slow_decision = position_of(&log, "COMMIT of slow", |m| {
        is_global(m, Action::Commit, &slow)
    });
    assert!(
        fast_prepare < slow_decision,
        "fast's PREPARE came while slow was undecided: {log:#?}"
    );
}

/// A fresh stream is not gated on its response headers: the mock, like a classic peer,
/// sends its headers only with its first reply, and withholds that reply (the vote on
/// "slow", the stream's first message) until the PREPARE of "fast" has arrived. A leader
/// that waited for the headers before sending the stream's next message would make
/// "slow" time out (DESIGN §2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_stream_is_not_gated_on_response_headers() {
    let run = slow_waits_for_fast(Action::Commit, false).await;
    run.slow
        .expect("put(slow) succeeds: fast's PREPARE went out before the headers came");
    run.fast.expect("put(fast) succeeds");
    assert_eq!(run.mock.calls(), 1, "one TPCMsg stream");
}

/// Votes that come back out of order are matched by their transaction id, not by
/// position: "fast" is voted ABORT before "slow"'s (withheld) COMMIT comes, and only
/// "fast" aborts. A leader that took the first reply as the answer to the oldest
/// unanswered message would abort "slow" (and commit "fast").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn votes_out_of_order_are_matched_by_txid() {
    let run = slow_waits_for_fast(Action::Abort, true).await;
    run.slow
        .expect("put(slow) succeeds: its own vote was COMMIT");
    assert_code(run.fast, Code::Aborted, "put(fast), voted ABORT");

    let m = &run.mock;
    let log = m.messages();
    let slow = prepare_txid(&log, "slow");
    let fast = prepare_txid(&log, "fast");
    let log = m
        .wait_for("both decisions", |log| {
            has_global(log, Action::Commit, &slow) && has_global(log, Action::Abort, &fast)
        })
        .await;
    assert!(
        !has_global(&log, Action::Abort, &slow) && !has_global(&log, Action::Commit, &fast),
        "each transaction got its own decision: {log:#?}"
    );
    assert_eq!(m.calls(), 1, "one TPCMsg stream: {log:#?}");
}

/// Writes to one key queue at the leader, first come first served, instead of racing for
/// the followers' lock (and aborting): 20 puts of key "k" fired at once all succeed, and
/// every follower stream carries them strictly one after the other — PREPARE(a),
/// COMMIT(a), PREPARE(b), COMMIT(b), ... — never a PREPARE of "k" while an earlier "k"
/// transaction is undecided on that stream. Meanwhile a put of another key is not held
/// behind the queue: the mock withholds its vote on the first "k" transaction until the
/// PREPARE of "other" has arrived.
///
/// Two followers: a real one (which would vote ABORT on a PREPARE of a key it still
/// holds locked: a leader that does not queue fails the "all succeed" check) and a mock
/// that logs (it votes COMMIT blindly: a leader that does not queue fails the
/// alternation check). The mock's log gives the order the leader chose, so the real
/// follower must end with the value of the last "k" PREPARE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_one_key_queue_fifo_instead_of_aborting() {
    const N: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let real = start_follower(dir.path()).await;
    let withheld = Arc::new(AtomicBool::new(false));
    let flag = withheld.clone();
    let script: Script = Arc::new(move |_, msg| {
        if is_prepare(msg) && msg.key == "k" && !flag.swap(true, Ordering::SeqCst) {
            Answer::AfterPrepareOf("other", Action::Commit)
        } else {
            Answer::Reply(normal_answer(msg, Action::Commit))
        }
    });
    let mock = spawn_mock(dir.path(), "m", true, script).await;
    let (leader, _stop) = start_leader(
        dir.path(),
        vec![real.addr.to_string(), mock.addr.clone()],
        Duration::from_secs(5),
    )
    .await;
    // Open the streams first (the mock withholds its headers until its first reply).
    client(&leader)
        .put("warm", "up")
        .await
        .expect("warm-up put");

    let puts: Vec<_> = (0..N)
        .map(|i| {
            let leader = leader.clone();
            tokio::spawn(async move { client(&leader).put("k", &format!("v{i}")).await })
        })
        .collect();
    mock.wait_for("a PREPARE of k", |log| {
        log.iter().any(|(_, m)| is_prepare(m) && m.key == "k")
    })
    .await;
    client(&leader)
        .put("other", "o")
        .await
        .expect("a put of another key is not held behind k's queue");
    for (i, put) in puts.into_iter().enumerate() {
        put.await
            .expect("put task")
            .unwrap_or_else(|status| panic!("put k=v{i}: {status:?}"));
    }

    let k_txids = |log: &Log| -> Vec<String> {
        log.iter()
            .filter(|(_, m)| is_prepare(m) && m.key == "k")
            .map(|(_, m)| m.txid.clone())
            .collect()
    };
    let log = mock
        .wait_for("every k transaction committed", |log| {
            let txids = k_txids(log);
            txids.len() == N && txids.iter().all(|t| has_global(log, Action::Commit, t))
        })
        .await;
    let txids = k_txids(&log);
    let k_messages: Vec<&LeaderMsg> = log
        .iter()
        .map(|(_, m)| m)
        .filter(|m| txids.contains(&m.txid))
        .collect();
    assert_eq!(
        k_messages.len(),
        2 * N,
        "one PREPARE, one COMMIT each: {log:#?}"
    );
    for (pair, txid) in k_messages.chunks(2).zip(&txids) {
        assert!(
            is_prepare(pair[0])
                && pair[0].txid == *txid
                && is_global(pair[1], Action::Commit, txid),
            "k's transactions one after the other, PREPAREs and COMMITs in the same order; \
             at {txid}: {pair:#?}\nwhole log: {log:#?}"
        );
    }
    let mut values: Vec<&str> = k_messages
        .iter()
        .filter(|m| is_prepare(m))
        .map(|m| m.value.as_str())
        .collect();
    let last = values[N - 1].to_string();
    values.sort_unstable();
    values.dedup();
    assert_eq!(values.len(), N, "each put is its own transaction: {log:#?}");
    assert!(log.iter().all(|(s, _)| *s == 1), "one stream: {log:#?}");
    let first_k_decision = position_of(&log, "first COMMIT of k", |m| {
        is_global(m, Action::Commit, &txids[0])
    });
    let other = position_of(&log, "PREPARE of other", |m| {
        is_prepare(m) && m.key == "other"
    });
    assert!(
        other < first_k_decision,
        "other's PREPARE went out while k's first transaction was undecided: {log:#?}"
    );

    // The real follower applied them in the same order: it ends with the last one.
    let read = tokio::time::timeout(WAIT, async {
        loop {
            match real.get("k").await {
                Err(status) if status.code() == Code::Unavailable => {
                    // The last decision is on its way to this follower.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                other => return other,
            }
        }
    })
    .await
    .expect("the real follower answers a read of k within the bound");
    assert_eq!(
        read.expect("read of k"),
        last,
        "the last write in k's queue wins"
    );
}
