//! In-process tests of the leader's forwarded reads (`rpc.FollowerReads/Reads`): many
//! reads on one long-lived stream per follower, matched by id, with a fallback to unary
//! `Get` for followers that don't serve the stream (classic tooling).
//!
//! Two kinds: a raw `Reads` stream against a real follower (the follower's rules), and a
//! real leader against mock followers that answer reads from a script and count the
//! streams they were opened (the leader's side). Waits are bounded by [`WAIT`]; no sleeps.

#[path = "inproc_support/mod.rs"]
mod inproc;

use std::collections::HashMap;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use inproc::start_leader;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Code, Request, Status, Streaming};
use tpc::client::Client;
use tpc::net::{self, Address, ListenAddr, Listener};
use tpc::proto::api::key_value_api_server::{KeyValueApi, KeyValueApiServer};
use tpc::proto::api::{self, DeleteRequest, GetRequest, PutRequest};
use tpc::proto::rpc::follower_reads_client::FollowerReadsClient;
use tpc::proto::rpc::follower_reads_server::{FollowerReads, FollowerReadsServer};
use tpc::proto::rpc::two_phase_commit_client::TwoPhaseCommitClient;
use tpc::proto::rpc::{
    Action, LeaderMsg, MessageType, Operation, ReadReply, ReadRequest, Response,
};
use tpc::tpc::follower::{Follower, FollowerConfig};

/// The bound on every wait: generous, only reached when a test fails.
const WAIT: Duration = Duration::from_secs(10);

fn client(addr: &str) -> Client {
    Client::new(addr, WAIT).expect("client")
}

async fn bind(dir: &Path, name: &str) -> (Address, Listener) {
    let addr = Address::Unix(dir.join(format!("{name}.sock")));
    let listener = Listener::bind(&ListenAddr::Addr(addr.clone()))
        .await
        .expect("bind socket");
    (addr, listener)
}

// ---------------------------------------------------------------------------------------
// A raw Reads stream against a real follower
// ---------------------------------------------------------------------------------------

/// Sends `requests` on one `Reads` stream, all before reading any reply; returns the
/// replies by id.
async fn read_all(addr: &Address, requests: Vec<(u64, String)>) -> HashMap<u64, ReadReply> {
    let channel = net::connect(addr, WAIT).await.expect("connect");
    let mut reads = FollowerReadsClient::new(channel);
    let (tx, rx) = mpsc::unbounded_channel();
    let n = requests.len();
    for (id, key) in requests {
        tx.send(ReadRequest {
            id,
            key,
            ..Default::default()
        })
        .expect("queue a read");
    }
    let mut replies = tokio::time::timeout(WAIT, reads.reads(UnboundedReceiverStream::new(rx)))
        .await
        .expect("stream opens within the bound")
        .expect("stream opens")
        .into_inner();
    let mut by_id = HashMap::new();
    while by_id.len() < n {
        let reply = tokio::time::timeout(WAIT, replies.message())
            .await
            .expect("a reply within the bound")
            .expect("the stream stays up")
            .expect("a reply for every read");
        assert!(
            by_id.insert(reply.id, reply.clone()).is_none(),
            "one reply per read: {reply:?} twice"
        );
    }
    by_id
}

fn tpc_msg(kind: MessageType, action: Action, txid: &str, key: &str, value: &str) -> LeaderMsg {
    LeaderMsg {
        r#type: kind as i32,
        action: action as i32,
        key: key.into(),
        value: value.into(),
        txid: txid.into(),
        op: Operation::Put as i32,
        epoch: 1,
        cluster_id: "c1".into(),
        ..Default::default()
    }
}

/// A follower answers every forwarded read with the id it came with, as its unary `Get`
/// would: the value; NOT_FOUND for an absent key; INVALID_ARGUMENT for a key outside
/// the limits (and it keeps serving); UNAVAILABLE for a key with an undecided
/// transaction (never its old value, DESIGN §1.3), and the new value once decided.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_answers_forwarded_reads_by_id_as_get_would() {
    let dir = tempfile::tempdir().unwrap();
    let follower = Follower::open(&FollowerConfig {
        journal_path: dir.path().join("journal"),
        kv_dir: dir.path().join("kv"),
    })
    .expect("follower opens");
    let (addr, listener) = bind(dir.path(), "follower").await;
    let (_stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(follower.serve(listener, async {
        let _ = stopped.await;
    }));

    // A leader's stream: "k" committed as "old", then a PREPARE of "new" left undecided.
    let channel = net::connect(&addr, WAIT).await.expect("connect");
    let (to_follower, rx) = mpsc::unbounded_channel();
    let mut tpc = TwoPhaseCommitClient::new(channel);
    let mut answers = tpc
        .tpc_msg(UnboundedReceiverStream::new(rx))
        .await
        .expect("TPCMsg stream opens")
        .into_inner();
    let mut ask = async |msg: LeaderMsg| -> Response {
        to_follower.send(msg).expect("stream open");
        tokio::time::timeout(WAIT, answers.message())
            .await
            .expect("an answer within the bound")
            .expect("stream up")
            .expect("an answer")
    };
    let vote = ask(tpc_msg(
        MessageType::Vote,
        Action::Prepare,
        "1.1",
        "k",
        "old",
    ))
    .await;
    assert_eq!(vote.action, Action::Commit as i32);
    let ack = ask(tpc_msg(MessageType::Global, Action::Commit, "1.1", "k", "")).await;
    assert_eq!(ack.action, Action::Ack as i32);
    let vote = ask(tpc_msg(
        MessageType::Vote,
        Action::Prepare,
        "1.2",
        "k",
        "new",
    ))
    .await;
    assert_eq!(vote.action, Action::Commit as i32);

    let too_long = "x".repeat(64 * 1024 + 1);
    let replies = read_all(
        &addr,
        vec![
            (7, "k".into()),
            (3, "absent".into()),
            (9, String::new()),
            (4, too_long),
            (5, "k".into()),
        ],
    )
    .await;
    let code = |id: u64| Code::from(replies[&id].code as i32);
    assert_eq!(code(7), Code::Unavailable, "locked key: {:?}", replies[&7]);
    assert_eq!(code(5), Code::Unavailable, "locked key: {:?}", replies[&5]);
    assert!(
        replies[&7].value.is_empty() && replies[&7].message.contains("undecided"),
        "no old value, and why: {:?}",
        replies[&7]
    );
    assert_eq!(code(3), Code::NotFound, "{:?}", replies[&3]);
    assert_eq!(
        code(9),
        Code::InvalidArgument,
        "empty key: {:?}",
        replies[&9]
    );
    assert_eq!(
        code(4),
        Code::InvalidArgument,
        "key too long: {:?}",
        replies[&4]
    );

    let ack = ask(tpc_msg(MessageType::Global, Action::Commit, "1.2", "k", "")).await;
    assert_eq!(ack.action, Action::Ack as i32);
    let replies = read_all(&addr, vec![(1, "k".into())]).await;
    assert_eq!(
        (
            Code::from(replies[&1].code as i32),
            replies[&1].value.as_str()
        ),
        (Code::Ok, "new"),
        "the decided value: {:?}",
        replies[&1]
    );
}

// ---------------------------------------------------------------------------------------
// A real leader against mock followers
// ---------------------------------------------------------------------------------------

/// How a mock answers the reads of its `n`th `Reads` stream (from 1).
#[derive(Clone, Copy, PartialEq, Eq)]
enum StreamScript {
    /// Answer every read with "stream:<key>".
    Answer,
    /// End the stream at its first read, without answering.
    EndAtFirstRead,
    /// Read the requests, answer none.
    Silent,
}

/// A mock follower's read side: unary `Get` answers "unary:<key>"; `Reads` (if served)
/// follows its script per stream.
#[derive(Clone)]
struct ReadMock {
    script: Arc<dyn Fn(usize) -> StreamScript + Send + Sync>,
    streams: Arc<AtomicUsize>,
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<ReadReply, Status>> + Send>>;

#[tonic::async_trait]
impl FollowerReads for ReadMock {
    type ReadsStream = ReplyStream;
    type CopyStream =
        Pin<Box<dyn Stream<Item = Result<tpc::proto::rpc::CopyBatch, Status>> + Send>>;

    async fn copy(
        &self,
        _: Request<tpc::proto::rpc::CopyRequest>,
    ) -> Result<tonic::Response<Self::CopyStream>, Status> {
        Err(Status::unimplemented("a read mock copies nothing"))
    }

    async fn catch_up(
        &self,
        _: Request<tpc::proto::rpc::CatchUpRequest>,
    ) -> Result<tonic::Response<tpc::proto::rpc::CatchUpReply>, Status> {
        Err(Status::unimplemented("a read mock catches up on nothing"))
    }

    async fn lease(
        &self,
        _: Request<tpc::proto::rpc::LeaseRequest>,
    ) -> Result<tonic::Response<tpc::proto::rpc::LeaseReply>, Status> {
        Err(Status::unimplemented("a read mock takes no lease"))
    }

    async fn ask_decision(
        &self,
        _: Request<tpc::proto::rpc::DecisionRequest>,
    ) -> Result<tonic::Response<tpc::proto::rpc::DecisionReply>, Status> {
        Err(Status::unimplemented("a read mock holds no transaction"))
    }

    async fn reads(
        &self,
        request: Request<Streaming<ReadRequest>>,
    ) -> Result<tonic::Response<ReplyStream>, Status> {
        let n = self.streams.fetch_add(1, Ordering::SeqCst) + 1;
        let script = (self.script)(n);
        let mut inbound = request.into_inner();
        let (out, out_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(read)) = inbound.message().await {
                match script {
                    StreamScript::Answer => {
                        let reply = ReadReply {
                            id: read.id,
                            code: 0,
                            value: format!("stream:{}", read.key),
                            message: String::new(),
                            version: "7.1".into(),
                            txn: None,
                        };
                        if out.send(Ok(reply)).is_err() {
                            return;
                        }
                    }
                    StreamScript::EndAtFirstRead => return,
                    StreamScript::Silent => {}
                }
            }
            drop(out);
        });
        Ok(tonic::Response::new(Box::pin(
            UnboundedReceiverStream::new(out_rx),
        )))
    }
}

#[tonic::async_trait]
impl KeyValueApi for ReadMock {
    async fn get(
        &self,
        request: Request<GetRequest>,
    ) -> Result<tonic::Response<api::Response>, Status> {
        Ok(tonic::Response::new(api::Response {
            value: format!("unary:{}", request.into_inner().key),
            version: "7.2".into(),
        }))
    }

    async fn put(&self, _: Request<PutRequest>) -> Result<tonic::Response<api::Response>, Status> {
        Err(Status::failed_precondition("mock follower"))
    }

    async fn delete(
        &self,
        _: Request<DeleteRequest>,
    ) -> Result<tonic::Response<api::Response>, Status> {
        Err(Status::failed_precondition("mock follower"))
    }

    async fn txn(
        &self,
        _: Request<api::TxnRequest>,
    ) -> Result<tonic::Response<api::TxnResponse>, Status> {
        Err(Status::failed_precondition("mock follower"))
    }
}

/// Starts a mock follower (serving `Reads` only if `streams` is given) and a leader of
/// it alone; returns the leader's address, the mock's stream count, and what keeps them up.
async fn leader_of_mock(
    dir: &Path,
    streams: Option<Arc<dyn Fn(usize) -> StreamScript + Send + Sync>>,
    vote_timeout: Duration,
) -> (String, Arc<AtomicUsize>, Vec<oneshot::Sender<()>>) {
    let (addr, listener) = bind(dir, "mock").await;
    let count = Arc::new(AtomicUsize::new(0));
    let serves_streams = streams.is_some();
    let mock = ReadMock {
        script: streams.unwrap_or_else(|| Arc::new(|_| StreamScript::Answer)),
        streams: count.clone(),
    };
    let router = tonic::transport::Server::builder()
        .add_service(KeyValueApiServer::new(mock.clone()))
        .add_optional_service(serves_streams.then(|| FollowerReadsServer::new(mock)));
    let (stop_mock, stopped) = oneshot::channel::<()>();
    tokio::spawn(listener.serve(router, async {
        let _ = stopped.await;
    }));
    let (leader, stop_leader) = start_leader(dir, vec![addr.to_string()], vote_timeout).await;
    (leader, count, vec![stop_mock, stop_leader])
}

/// The leader forwards reads on a `Reads` stream when the follower serves it: every
/// read of many concurrent ones comes back with its own key's answer, all on one stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_forwards_reads_on_one_stream() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, streams, _keep) = leader_of_mock(
        dir.path(),
        Some(Arc::new(|_| StreamScript::Answer)),
        Duration::from_secs(5),
    )
    .await;
    let reads = (0..32).map(|i| {
        let leader = leader.clone();
        tokio::spawn(async move { (i, client(&leader).get_versioned(&format!("key{i}")).await) })
    });
    for read in reads {
        let (i, answer) = read.await.expect("read task");
        let (value, version) = answer.expect("read succeeds");
        assert_eq!(value, format!("stream:key{i}"));
        assert_eq!(version, "7.1", "the follower's version, passed through");
    }
    assert_eq!(
        streams.load(Ordering::SeqCst),
        1,
        "one Reads stream for all"
    );
}

/// A follower that does not serve `Reads` (classic tooling: UNIMPLEMENTED) is read
/// with unary `Get`, from the first read on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_without_the_read_stream_is_read_with_get() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, _, _keep) = leader_of_mock(dir.path(), None, Duration::from_secs(5)).await;
    for key in ["a", "b"] {
        assert_eq!(
            client(&leader)
                .get_versioned(key)
                .await
                .expect("read succeeds"),
            (format!("unary:{key}"), "7.2".to_string())
        );
    }
}

/// A stream that ends fails the read waiting on it (the leader tries again, as after any
/// follower error) and the next read opens a new stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_read_stream_is_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let script = |n| match n {
        1 => StreamScript::EndAtFirstRead,
        _ => StreamScript::Answer,
    };
    let (leader, streams, _keep) =
        leader_of_mock(dir.path(), Some(Arc::new(script)), Duration::from_secs(5)).await;
    assert_eq!(
        client(&leader).get("k").await.expect("read succeeds"),
        "stream:k"
    );
    assert_eq!(streams.load(Ordering::SeqCst), 2, "the first stream ended");
}

/// A follower that takes reads and never answers them: the leader answers UNAVAILABLE
/// once its read deadline (twice the vote timeout) has passed, naming the follower's
/// silence; it does not hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_forwarded_reads_time_out_as_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, _, _keep) = leader_of_mock(
        dir.path(),
        Some(Arc::new(|_| StreamScript::Silent)),
        Duration::from_millis(200),
    )
    .await;
    match client(&leader).get("k").await {
        Err(status) if status.code() == Code::Unavailable => assert!(
            status.message().contains("no answer within"),
            "names the silence: {status:?}"
        ),
        other => panic!("expected UNAVAILABLE, got {other:?}"),
    }
}
