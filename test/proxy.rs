//! Tests of the fault-injecting proxy (`pkg/proxy`), in process, over Unix sockets in a
//! temporary directory.
//!
//! - Each fault on its own, between a raw client stream (a mock leader that sends N
//!   numbered messages, half-closes and reads every reply to the end of the stream) and a
//!   scripted mock follower that records what it receives and ACKs everything. Because
//!   the client reads to the end of the stream, and the mock ends its stream only after
//!   it has read all its input, no test waits on time.
//! - The same seed gives the same deliveries; another seed, others.
//! - A real leader and real followers through proxies: transparent without faults, and
//!   the store stays correct (DESIGN §1.1, §2) through drops, duplicates, replays and
//!   delays, once the network heals.

#[path = "inproc_support/mod.rs"]
mod inproc;

use inproc::eventually;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Code, Request, Status, Streaming};

use tpc::client::Client;
use tpc::net::{self, Address, ListenAddr, Listener};
use tpc::proto::api::key_value_api_client::KeyValueApiClient;
use tpc::proto::api::{GetRequest, PutRequest};
use tpc::proto::rpc::follower_reads_client::FollowerReadsClient;
use tpc::proto::rpc::two_phase_commit_client::TwoPhaseCommitClient;
use tpc::proto::rpc::two_phase_commit_server::{TwoPhaseCommit, TwoPhaseCommitServer};
use tpc::proto::rpc::{Action, LeaderMsg, MessageType, ReadRequest, Response};
use tpc::proxy::{FaultControl, Faults, Proxy, ProxyConfig};
use tpc::tpc::follower::{Follower, FollowerConfig};

/// The bound on every wait: generous, only reached when a test fails.
const WAIT: Duration = Duration::from_secs(10);

/// Messages per raw stream.
const N: usize = 60;

fn unix(dir: &Path, name: &str) -> Address {
    Address::Unix(dir.join(format!("{name}.sock")))
}

async fn bind(addr: &Address) -> Listener {
    Listener::bind(&ListenAddr::Addr(addr.clone()))
        .await
        .expect("bind socket")
}

// ---------------------------------------------------------------------------------------
// Mock follower: records every message, ACKs each with its txid
// ---------------------------------------------------------------------------------------

#[derive(Clone)]
struct Mock {
    log: watch::Sender<Vec<LeaderMsg>>,
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<Response, Status>> + Send>>;

#[tonic::async_trait]
impl TwoPhaseCommit for Mock {
    type TPCMsgStream = ResponseStream;

    async fn tpc_msg(
        &self,
        request: Request<Streaming<LeaderMsg>>,
    ) -> Result<tonic::Response<ResponseStream>, Status> {
        let mut inbound = request.into_inner();
        let (out, mut out_rx) = mpsc::unbounded_channel::<Result<Response, Status>>();
        let log = self.log.clone();
        tokio::spawn(async move {
            while let Ok(Some(msg)) = inbound.message().await {
                log.send_modify(|log| log.push(msg.clone()));
                let ack = Response {
                    action: Action::Ack as i32,
                    txid: msg.txid.clone(),
                    ..Default::default()
                };
                if out.send(Ok(ack)).is_err() {
                    return;
                }
            }
        });
        // Like the classic peers: response headers only with the first reply.
        match out_rx.recv().await {
            Some(first) => {
                let rest = UnboundedReceiverStream::new(out_rx);
                Ok(tonic::Response::new(Box::pin(
                    tokio_stream::once(first).chain(rest),
                )))
            }
            None => Err(Status::unavailable("mock: stream ended before any message")),
        }
    }
}

struct MockHandle {
    addr: Address,
    log: watch::Sender<Vec<LeaderMsg>>,
    _stop: oneshot::Sender<()>,
}

impl MockHandle {
    /// The numbers of the messages received, in order.
    fn received(&self) -> Vec<usize> {
        self.log.borrow().iter().map(|m| number(&m.txid)).collect()
    }
}

async fn spawn_mock(dir: &Path, name: &str) -> MockHandle {
    let addr = unix(dir, name);
    let listener = bind(&addr).await;
    let (log, _) = watch::channel(Vec::new());
    let router = tonic::transport::Server::builder()
        .add_service(TwoPhaseCommitServer::new(Mock { log: log.clone() }));
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(listener.serve(router, async {
        let _ = stopped.await;
    }));
    MockHandle {
        addr,
        log,
        _stop: stop,
    }
}

// ---------------------------------------------------------------------------------------
// Proxy and raw client
// ---------------------------------------------------------------------------------------

struct ProxyHandle {
    addr: Address,
    faults: FaultControl,
    _stop: oneshot::Sender<()>,
}

async fn spawn_proxy(
    dir: &Path,
    name: &str,
    target: &Address,
    faults: Faults,
    seed: u64,
) -> ProxyHandle {
    let proxy = Proxy::new(ProxyConfig {
        target: target.clone(),
        faults,
        seed,
    })
    .expect("valid proxy config");
    let control = proxy.faults();
    let addr = unix(dir, name);
    let listener = bind(&addr).await;
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(proxy.serve(listener, async {
        let _ = stopped.await;
    }));
    ProxyHandle {
        addr,
        faults: control,
        _stop: stop,
    }
}

fn message(i: usize) -> LeaderMsg {
    LeaderMsg {
        r#type: MessageType::Global as i32,
        action: Action::Commit as i32,
        txid: format!("1.{i}"),
        epoch: 1,
        ..Default::default()
    }
}

fn number(txid: &str) -> usize {
    txid.strip_prefix("1.")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected txid {txid:?}"))
}

/// What a raw client saw: the numbers of the replies, in order, and the status that
/// ended the stream (None: it ended cleanly).
#[derive(Debug, PartialEq)]
struct Seen {
    replies: Vec<usize>,
    end: Option<(Code, String)>,
}

/// Opens a stream to `addr` the way the leader does (messages queued before the response
/// headers are awaited), sends messages 0..n, half-closes and reads to the end.
async fn run_stream(addr: &Address, n: usize) -> Seen {
    let channel = net::connect(addr, WAIT)
        .await
        .expect("connect to the proxy");
    let mut client = TwoPhaseCommitClient::new(channel);
    let (requests, rx) = mpsc::unbounded_channel();
    for i in 0..n {
        requests.send(message(i)).expect("queue a message");
    }
    drop(requests);
    let seen = async {
        let mut responses = match client.tpc_msg(UnboundedReceiverStream::new(rx)).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                return Seen {
                    replies: Vec::new(),
                    end: Some((status.code(), status.message().to_string())),
                }
            }
        };
        let mut replies = Vec::new();
        loop {
            match responses.message().await {
                Ok(Some(r)) => replies.push(number(&r.txid)),
                Ok(None) => return Seen { replies, end: None },
                Err(status) => {
                    return Seen {
                        replies,
                        end: Some((status.code(), status.message().to_string())),
                    }
                }
            }
        }
    };
    tokio::time::timeout(WAIT, seen)
        .await
        .expect("the stream ends within the bound")
}

/// Runs one stream of N messages through a fresh proxy with `faults` to a fresh mock;
/// returns what the mock received and what the client saw.
async fn through_proxy(faults: Faults, seed: u64) -> (Vec<usize>, Seen) {
    let dir = tempfile::tempdir().unwrap();
    let mock = spawn_mock(dir.path(), "mock").await;
    let proxy = spawn_proxy(dir.path(), "proxy", &mock.addr, faults, seed).await;
    let seen = run_stream(&proxy.addr, N).await;
    (mock.received(), seen)
}

fn all() -> Vec<usize> {
    (0..N).collect()
}

fn strictly_increasing(xs: &[usize]) -> bool {
    xs.windows(2).all(|w| w[0] < w[1])
}

fn dedup(xs: &[usize]) -> Vec<usize> {
    let mut v = xs.to_vec();
    v.dedup();
    v
}

fn has_adjacent_duplicate(xs: &[usize]) -> bool {
    xs.windows(2).any(|w| w[0] == w[1])
}

/// True if some message arrives again after a later one was delivered.
fn has_late_repeat(xs: &[usize]) -> bool {
    let mut highest = None;
    for &x in xs {
        if highest.is_some_and(|h| x < h) {
            return true;
        }
        highest = highest.max(Some(x));
    }
    false
}

// ---------------------------------------------------------------------------------------
// Faults one by one, against the mock
// ---------------------------------------------------------------------------------------

/// Without faults, but with delays, everything arrives once and in order both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delays_keep_order_and_lose_nothing() {
    let faults = Faults {
        delay_ms: (0, 3),
        ..Faults::none()
    };
    let (received, seen) = through_proxy(faults, 1).await;
    assert_eq!(received, all());
    assert_eq!(
        seen,
        Seen {
            replies: all(),
            end: None
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_loses_leader_messages() {
    let (received, seen) = through_proxy(
        Faults {
            drop: 0.3,
            ..Faults::none()
        },
        2,
    )
    .await;
    assert!(
        !received.is_empty() && received.len() < N && strictly_increasing(&received),
        "some messages dropped, the rest once and in order: {received:?}"
    );
    assert_eq!(seen.replies, received, "every delivered message answered");
    assert_eq!(seen.end, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dup_delivers_leader_messages_twice() {
    let (received, seen) = through_proxy(
        Faults {
            dup: 0.3,
            ..Faults::none()
        },
        3,
    )
    .await;
    assert!(
        received.len() > N && has_adjacent_duplicate(&received),
        "{received:?}"
    );
    assert_eq!(dedup(&received), all(), "nothing lost, order kept");
    assert_eq!(seen.replies, received, "each copy answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_reply_loses_follower_replies() {
    let (received, seen) = through_proxy(
        Faults {
            drop_reply: 0.3,
            ..Faults::none()
        },
        4,
    )
    .await;
    assert_eq!(received, all(), "every message reaches the follower");
    assert!(
        !seen.replies.is_empty() && seen.replies.len() < N && strictly_increasing(&seen.replies),
        "{seen:?}"
    );
    assert_eq!(seen.end, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dup_reply_delivers_follower_replies_twice() {
    let (received, seen) = through_proxy(
        Faults {
            dup_reply: 0.3,
            ..Faults::none()
        },
        5,
    )
    .await;
    assert_eq!(received, all());
    assert!(
        seen.replies.len() > N && has_adjacent_duplicate(&seen.replies),
        "{seen:?}"
    );
    assert_eq!(dedup(&seen.replies), all());
}

/// Replay delivers an earlier message again after later ones, in both directions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_delivers_old_messages_late() {
    let (received, seen) = through_proxy(
        Faults {
            replay: 0.2,
            ..Faults::none()
        },
        6,
    )
    .await;
    assert!(
        received.len() > N && has_late_repeat(&received),
        "an old leader message arrives after newer ones: {received:?}"
    );
    let mut firsts = received.clone();
    firsts.retain({
        let mut seen = std::collections::HashSet::new();
        move |x| seen.insert(*x)
    });
    assert_eq!(firsts, all(), "nothing lost");
    assert!(
        has_late_repeat(&seen.replies),
        "an old reply arrives after newer ones: {seen:?}"
    );
}

/// A cut ends the client's stream with UNAVAILABLE, whether it fires before the
/// target's headers (on the first message) or later; the proxy serves new streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_ends_the_stream_with_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let mock = spawn_mock(dir.path(), "mock").await;
    let cut_at_once = Faults {
        cut: 1.0,
        ..Faults::none()
    };
    let proxy = spawn_proxy(dir.path(), "proxy", &mock.addr, cut_at_once, 7).await;
    let cut = Some((Code::Unavailable, "proxy cut the stream".to_string()));

    let seen = run_stream(&proxy.addr, N).await;
    assert_eq!(seen.end, cut, "{seen:?}");
    assert!(mock.received().is_empty(), "the cutting message is lost");

    proxy
        .faults
        .set(Faults {
            cut: 0.05,
            ..Faults::none()
        })
        .unwrap();
    let seen = run_stream(&proxy.addr, N).await;
    assert_eq!(seen.end, cut, "{seen:?}");
    assert!(seen.replies.len() < N, "{seen:?}");

    proxy.faults.heal();
    let seen = run_stream(&proxy.addr, N).await;
    assert_eq!(seen.end, None, "a healed proxy forwards new streams");
    assert_eq!(seen.replies, all());
}

/// The same seed and faults give the same deliveries both ways; another seed, others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_seed_same_faults() {
    let faults = Faults {
        drop: 0.3,
        dup: 0.3,
        drop_reply: 0.1,
        replay: 0.05,
        delay_ms: (0, 2),
        ..Faults::none()
    };
    let first = through_proxy(faults.clone(), 42).await;
    let again = through_proxy(faults.clone(), 42).await;
    let other = through_proxy(faults, 43).await;
    assert_eq!(first, again, "same seed, same deliveries");
    assert_ne!(first.0, other.0, "another seed, other deliveries");
    assert_ne!(first.0, all(), "faults fired");
}

/// An unreachable target ends the client's stream with UNAVAILABLE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_target_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let nowhere = unix(dir.path(), "nobody-listens");
    let proxy = spawn_proxy(dir.path(), "proxy", &nowhere, Faults::none(), 8).await;
    let seen = run_stream(&proxy.addr, 3).await;
    assert!(
        matches!(&seen.end, Some((Code::Unavailable, why)) if why.contains("target unreachable")),
        "{seen:?}"
    );
    let mut kv = KeyValueApiClient::new(net::connect(&proxy.addr, WAIT).await.unwrap());
    let get = kv.get(GetRequest { key: "k".into() }).await;
    assert_eq!(get.map_err(|s| s.code()).err(), Some(Code::Unavailable));
}

// ---------------------------------------------------------------------------------------
// Real leader and followers through proxies
// ---------------------------------------------------------------------------------------

struct FollowerNode {
    addr: Address,
    _stop: oneshot::Sender<()>,
}

async fn start_follower(dir: &Path, name: &str) -> FollowerNode {
    let follower = Follower::open(&FollowerConfig {
        journal_path: dir.join(name).join("journal"),
        kv_dir: dir.join(name).join("kv"),
    })
    .expect("follower opens");
    let addr = unix(dir, name);
    let listener = bind(&addr).await;
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(follower.serve(listener, async {
        let _ = stopped.await;
    }));
    FollowerNode { addr, _stop: stop }
}

async fn start_leader(
    dir: &Path,
    followers: &[&Address],
    vote_timeout: Duration,
) -> (Client, oneshot::Sender<()>) {
    let followers = followers.iter().map(|a| a.to_string()).collect();
    let (addr, stop) = inproc::start_leader(dir, followers, vote_timeout).await;
    (Client::new(&addr, WAIT).expect("client"), stop)
}

fn client(addr: &Address) -> Client {
    Client::new(&addr.to_string(), WAIT).expect("client")
}

fn code<T>(result: Result<T, Status>) -> Result<T, Code> {
    result.map_err(|s| s.code())
}

/// Without faults the proxy is transparent: writes and reads through the leader work,
/// the leader's reads go through the proxy, and direct calls pass status codes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transparent_between_real_leader_and_follower() {
    let dir = tempfile::tempdir().unwrap();
    let follower = start_follower(dir.path(), "f1").await;
    let proxy = spawn_proxy(dir.path(), "p1", &follower.addr, Faults::none(), 9).await;
    let (mut c, _leader) =
        start_leader(dir.path(), &[&proxy.addr], Duration::from_millis(300)).await;

    c.put("k", "v1").await.expect("put");
    assert_eq!(c.get("k").await.expect("get"), "v1");
    c.put("k", "v2").await.expect("overwrite");
    assert_eq!(c.get("k").await.expect("get"), "v2");
    c.delete("k").await.expect("delete");
    assert_eq!(code(c.get("k").await), Err(Code::NotFound));
    c.put("k", "v3").await.expect("put again");
    // Committed: the leader answers with it even before the follower applied it.
    assert_eq!(c.get("k").await.expect("get"), "v3");

    // Direct calls through the proxy: codes and messages unchanged.
    let mut via_proxy = KeyValueApiClient::new(net::connect(&proxy.addr, WAIT).await.unwrap());
    let mut direct = KeyValueApiClient::new(net::connect(&follower.addr, WAIT).await.unwrap());
    let get = |k: &str| GetRequest { key: k.into() };
    let put = || PutRequest {
        key: "k".into(),
        value: "x".into(),
    };
    // Locked (UNAVAILABLE) until the decision reaches the follower, then the new value.
    eventually("the follower to apply v3", WAIT, || {
        let mut via_proxy = via_proxy.clone();
        async move {
            via_proxy
                .get(get("k"))
                .await
                .is_ok_and(|answer| answer.into_inner().value == "v3")
        }
    })
    .await;
    // The leader's forwarded-read stream passes too (UNIMPLEMENTED would make the leader
    // fall back to unary Get, and the proxy's stream faults would never touch reads).
    let mut reads = FollowerReadsClient::new(net::connect(&proxy.addr, WAIT).await.unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tx.send(ReadRequest {
        id: 42,
        key: "k".into(),
        ..Default::default()
    })
    .unwrap();
    let mut replies = reads
        .reads(UnboundedReceiverStream::new(rx))
        .await
        .expect("Reads stream through the proxy")
        .into_inner();
    let reply = tokio::time::timeout(WAIT, replies.message())
        .await
        .expect("a reply within the bound")
        .expect("stream up")
        .expect("a reply");
    assert_eq!((reply.id, reply.code, reply.value.as_str()), (42, 0, "v3"));
    for (via, straight) in [
        (
            via_proxy.get(get("absent")).await.err(),
            direct.get(get("absent")).await.err(),
        ),
        (
            via_proxy.put(put()).await.err(),
            direct.put(put()).await.err(),
        ),
    ] {
        let (via, straight) = (via.expect("an error"), straight.expect("an error"));
        assert_eq!(
            (via.code(), via.message()),
            (straight.code(), straight.message())
        );
    }

    // The leader's reads go through the proxy: with every call dropped, they fail (once
    // the leader has the follower's ACK of v3, it no longer answers from v3 itself).
    proxy
        .faults
        .set(Faults {
            drop: 1.0,
            ..Faults::none()
        })
        .unwrap();
    eventually(
        "reads to fail through a proxy that drops everything",
        WAIT,
        || {
            let mut c = c.clone();
            async move { code(c.get("k").await) == Err(Code::Unavailable) }
        },
    )
    .await;
    let dropped = via_proxy.get(get("k")).await.expect_err("dropped");
    assert_eq!(
        (dropped.code(), dropped.message()),
        (Code::Unavailable, "proxy dropped the call")
    );
    proxy.faults.heal();
    assert_eq!(c.get("k").await.expect("get after healing"), "v3");
}

/// Through drops, duplicates, replays and delays the store stays correct: once the
/// network heals and every follower answers, both hold, for every key, the value of the
/// last Put that succeeded on it (an error answer means "not applied, ever").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_stays_correct_through_faults() {
    const PUTS: usize = 100;
    const KEYS: [&str; 3] = ["a", "b", "c"];
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults {
        drop: 0.1,
        dup: 0.1,
        replay: 0.05,
        drop_reply: 0.1,
        delay_ms: (0, 20),
        ..Faults::none()
    };
    let f1 = start_follower(dir.path(), "f1").await;
    let f2 = start_follower(dir.path(), "f2").await;
    let p1 = spawn_proxy(dir.path(), "p1", &f1.addr, faults.clone(), 101).await;
    let p2 = spawn_proxy(dir.path(), "p2", &f2.addr, faults, 102).await;
    let (mut c, _leader) = start_leader(
        dir.path(),
        &[&p1.addr, &p2.addr],
        Duration::from_millis(300),
    )
    .await;

    let mut last_ok: [Option<String>; 3] = Default::default();
    let mut outcomes: Vec<(usize, String, Result<(), Code>)> = Vec::new();
    for i in 0..PUTS {
        let k = i % KEYS.len();
        let value = format!("v{i}");
        let result = code(c.put(KEYS[k], &value).await);
        assert!(
            matches!(result, Ok(()) | Err(Code::Aborted | Code::Unavailable)),
            "put {i}: {result:?}"
        );
        if result.is_ok() {
            last_ok[k] = Some(value.clone());
        }
        outcomes.push((k, value, result));
    }
    let succeeded = outcomes.iter().filter(|o| o.2.is_ok()).count();
    assert!(succeeded > 0, "some puts succeed through these faults");

    p1.faults.heal();
    p2.faults.heal();
    let followers = [&f1, &f2];
    for f in followers {
        for key in KEYS {
            eventually(
                &format!("{} answers {key:?}", f.addr),
                Duration::from_secs(20),
                || async { code(client(&f.addr).get(key).await) != Err(Code::Unavailable) },
            )
            .await;
        }
    }
    for (k, key) in KEYS.iter().enumerate() {
        let mut values = Vec::new();
        for f in followers {
            values.push(match code(client(&f.addr).get(key).await) {
                Ok(v) => Some(v),
                Err(Code::NotFound) => None,
                Err(other) => panic!("{key:?} on {}: {other:?}", f.addr),
            });
        }
        let history: Vec<_> = outcomes.iter().filter(|o| o.0 == k).collect();
        assert_eq!(
            values[0], values[1],
            "followers disagree on {key:?}; puts: {history:?}"
        );
        assert_eq!(
            values[0], last_ok[k],
            "{key:?} holds not the last successful put; puts: {history:?}"
        );
    }
    eprintln!("{succeeded} of {PUTS} puts succeeded through the faults");
}
