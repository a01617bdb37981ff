//! End-to-end tests: real `tpc` processes (the built binary), each in its own temporary
//! directories, talking over Unix sockets inside them. Every test checks one rule of
//! DESIGN.md; crashes are real (`kill -9`, or `TPC_CRASH_AT` crash points that abort the
//! process at a chosen protocol step). Waits poll with a bounded deadline; a failing test
//! prints the stderr of every node it started.

#[path = "e2e_support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::Code;
use tpc::tpc::follower::CHECKPOINT_RECORDS;
use tpc::txid::TxId;

use support::{
    follower, get, poll, settled_get, spawn, spawn_with_dirs, wait_follower_ready,
    wait_leader_ready, Cluster, NodeDirs, Role, CALL_TIMEOUT, CRASH_AT, POLL_TIMEOUT,
};

const MIB: usize = 1024 * 1024;
const KIB: usize = 1024;

/// Asserts that a direct read of every follower answers `expected` (after any
/// in-flight decision has arrived: UNAVAILABLE is polled past).
async fn assert_followers(cluster: &Cluster, key: &str, expected: Option<&str>) {
    for addr in cluster.follower_addrs() {
        let got = settled_get(&addr, key).await;
        assert_eq!(
            got.as_deref(),
            expected,
            "direct Get({key:?}) on follower {addr}"
        );
    }
}

/// Asserts that `status` has `code` and (if given) mentions `needle`.
fn assert_status(result: Result<impl std::fmt::Debug, tonic::Status>, code: Code, needle: &str) {
    match result {
        Ok(v) => panic!("expected {code:?} mentioning {needle:?}, got Ok({v:?})"),
        Err(s) => {
            assert_eq!(s.code(), code, "unexpected status: {s:?}");
            assert!(
                s.message().contains(needle),
                "the {code:?} message should mention {needle:?}: {:?}",
                s.message()
            );
        }
    }
}

/// Sends `bytes`, as they are, as the request of the unary `api.KeyValueAPI/METHOD`.
async fn raw_unary(addr: &str, method: &str, bytes: Vec<u8>) -> Result<Vec<u8>, tonic::Status> {
    let address: tpc::net::Address = addr.parse().expect("address");
    let channel = tpc::net::connect(&address, Duration::from_secs(10))
        .await
        .map_err(tonic::Status::unavailable)?;
    let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(usize::MAX);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = format!("/api.KeyValueAPI/{method}").parse().expect("path");
    grpc.unary(tonic::Request::new(bytes), path, RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

/// A codec that sends and receives bytes unexamined, to send what no client would.
#[derive(Clone, Copy)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        prost::bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        let mut out = vec![0; prost::bytes::Buf::remaining(src)];
        prost::bytes::Buf::copy_to_slice(src, &mut out);
        Ok(Some(out))
    }
}

/// Names in `dir` that are directories.
fn subdirectories(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry"))
        .filter(|e| e.file_type().expect("file type").is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

fn entries(dir: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// 1. Reads and writes, any key, limits, writes refused by followers.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_the_leader_reach_every_follower_any_key_round_trips_and_bad_input_is_refused(
) {
    // A 3 MiB value takes the followers a while to journal in a debug build: a vote
    // timeout that is generous (speed is not what this test checks).
    let mut cluster = Cluster::new(3);
    cluster.vote_timeout = "10s".into();
    let cluster = cluster.started().await;
    let mut c = cluster.client();

    // Put, overwrite, delete.
    c.put("k", "v1").await.expect("put k=v1");
    assert_eq!(c.get("k").await.expect("get k"), "v1");
    assert_followers(&cluster, "k", Some("v1")).await;
    c.put("k", "v2").await.expect("overwrite k=v2");
    assert_eq!(c.get("k").await.expect("get k"), "v2");
    assert_followers(&cluster, "k", Some("v2")).await;
    c.delete("k").await.expect("delete k");
    assert_eq!(c.get("k").await.unwrap_err().code(), Code::NotFound);
    assert_followers(&cluster, "k", None).await;

    // Deleting an absent key succeeds and leaves it absent.
    c.delete("never-written")
        .await
        .expect("delete of an absent key");
    assert_eq!(
        c.get("never-written").await.unwrap_err().code(),
        Code::NotFound
    );

    // An empty value is a value, not a delete.
    c.put("empty", "").await.expect("put empty value");
    assert_eq!(c.get("empty").await.expect("get empty"), "");
    assert_followers(&cluster, "empty", Some("")).await;

    // Any string key round-trips, on the leader and on every follower, and nothing is
    // created outside the node directories.
    let pid = std::process::id();
    let escape_name = format!("tpc-e2e-escape-{pid}");
    let escape_abs = std::env::temp_dir().join(&escape_name);
    let weird_keys: Vec<String> = vec![
        "a/b".into(),
        "a/b/c/".into(),
        "/".into(),
        ".".into(),
        "..".into(),
        "../escape".into(),
        format!("../../{escape_name}"),
        escape_abs.display().to_string(),
        "with space".into(),
        " ".into(),
        "line\nbreak".into(),
        "cr\r\n".into(),
        "tab\there".into(),
        "percent %2F %".into(),
        "ünïcödé ключ 鍵 🙂".into(),
        "nul\0byte".into(),
        "\0".into(),
        "UPPER".into(),
        "upper".into(),
        "Upper".into(),
        "k".repeat(300),
        "x".repeat(64 * KIB), // the longest key allowed
    ];
    for (i, key) in weird_keys.iter().enumerate() {
        let value = format!(
            "value #{i} for {:?}",
            key.chars().take(40).collect::<String>()
        );
        c.put(key, &value)
            .await
            .unwrap_or_else(|e| panic!("put {key:?}: {e:?}"));
    }
    for (i, key) in weird_keys.iter().enumerate() {
        let value = format!(
            "value #{i} for {:?}",
            key.chars().take(40).collect::<String>()
        );
        assert_eq!(
            c.get(key)
                .await
                .unwrap_or_else(|e| panic!("get {key:?}: {e:?}")),
            value,
            "Get({key:?}) through the leader"
        );
        assert_followers(&cluster, key, Some(&value)).await;
    }

    // The largest value allowed (3 MiB exactly) round-trips.
    let big: String = "0123456789abcdef".repeat(3 * MIB / 16);
    assert_eq!(big.len(), 3 * MIB);
    c.put("big", &big).await.expect("put a 3 MiB value");
    assert!(c.get("big").await.expect("get big") == big, "3 MiB value");
    for addr in cluster.follower_addrs() {
        assert!(
            settled_get(&addr, "big").await.as_deref() == Some(big.as_str()),
            "3 MiB value on {addr}"
        );
    }

    // Limits: INVALID_ARGUMENT naming the limit, and nothing changes.
    c.put("limited", "before").await.expect("put limited");
    assert_status(
        c.put("limited", &"v".repeat(3 * MIB + 1)).await,
        Code::InvalidArgument,
        "3 MiB",
    );
    let long_key = "k".repeat(64 * KIB + 1);
    assert_status(c.put(&long_key, "v").await, Code::InvalidArgument, "64 KiB");
    assert_status(c.get(&long_key).await, Code::InvalidArgument, "64 KiB");
    assert_status(c.delete(&long_key).await, Code::InvalidArgument, "64 KiB");
    assert_status(c.put("", "v").await, Code::InvalidArgument, "");
    assert_status(c.get("").await, Code::InvalidArgument, "");
    assert_status(c.delete("").await, Code::InvalidArgument, "");
    // Bytes that are no protobuf, and a request over the 16 MiB message limit, get
    // INVALID_ARGUMENT from the leader and from a follower, and change nothing.
    let not_utf8_key = vec![0x0a, 0x02, 0xff, 0xfe];
    let limited_to_17_mib = {
        let value = vec![b'v'; 17 * MIB];
        let mut bytes = vec![0x0a, 0x07];
        bytes.extend_from_slice(b"limited");
        bytes.push(0x12);
        prost::encoding::encode_varint(value.len() as u64, &mut bytes);
        bytes.extend_from_slice(&value);
        bytes
    };
    for addr in [cluster.leader_addr(), cluster.follower_addr(0)] {
        for method in ["Put", "Get"] {
            assert_status(
                raw_unary(&addr, method, not_utf8_key.clone()).await,
                Code::InvalidArgument,
                "not a valid api.",
            );
            assert_status(
                raw_unary(&addr, method, limited_to_17_mib.clone()).await,
                Code::InvalidArgument,
                "16 MiB",
            );
        }
    }
    assert_eq!(c.get("limited").await.expect("get limited"), "before");
    assert_followers(&cluster, "limited", Some("before")).await;

    // Writes sent to a follower are refused and change nothing.
    for addr in cluster.follower_addrs() {
        let mut direct = support::client(&addr);
        assert_status(
            direct.put("limited", "sneaky").await,
            Code::FailedPrecondition,
            "",
        );
        assert_status(direct.delete("limited").await, Code::FailedPrecondition, "");
        assert_status(
            direct.put("new-key", "x").await,
            Code::FailedPrecondition,
            "",
        );
    }
    assert_followers(&cluster, "limited", Some("before")).await;
    assert_followers(&cluster, "new-key", None).await;
    assert_eq!(c.get("limited").await.expect("get limited"), "before");

    // Nothing outside the directories we gave.
    assert!(
        !escape_abs.exists(),
        "{} was created by a key",
        escape_abs.display()
    );
    for dirs in cluster.follower_dirs.iter() {
        assert_eq!(
            subdirectories(&dirs.kv_dir()),
            Vec::<String>::new(),
            "the kv dir of {} has subdirectories",
            dirs.name
        );
        let allowed: BTreeSet<String> = ["journal", "kv", "cwd", "stderr.log"]
            .iter()
            .map(|s| s.to_string())
            .chain([format!("{}.sock", dirs.name)])
            .collect();
        let found = entries(dirs.root());
        assert!(
            found.is_subset(&allowed),
            "unexpected entries in the node dir of {}: {:?}",
            dirs.name,
            found.difference(&allowed).collect::<Vec<_>>()
        );
    }
    for dirs in cluster.follower_dirs.iter().chain([&cluster.leader_dirs]) {
        assert_eq!(
            entries(&dirs.cwd()),
            BTreeSet::new(),
            "{} wrote into its working directory",
            dirs.name
        );
    }
    let leader_allowed: BTreeSet<String> = ["journal", "cwd", "stderr.log", "leader.sock"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let found = entries(cluster.leader_dirs.root());
    assert!(
        found.is_subset(&leader_allowed),
        "unexpected entries in the leader's dir: {:?}",
        found.difference(&leader_allowed).collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------------
// 2. A follower that crashed between its vote and the decision.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_crashed_after_voting_keeps_the_key_locked_until_the_leader_redelivers_the_decision(
) {
    let mut cluster = Cluster::new(3);
    cluster.start_follower(0, &[(CRASH_AT, "follower-before-decision")]);
    cluster.start_follower(1, &[]);
    cluster.start_follower(2, &[]);
    for addr in cluster.follower_addrs() {
        wait_follower_ready(&addr).await;
    }
    cluster.start_leader(&[]);
    wait_leader_ready(&cluster.leader_addr()).await;
    let mut c = cluster.client();

    c.put("k", "v1")
        .await
        .expect("the decision was durable at the leader: the put must succeed");
    let status = cluster.follower(0).wait_exit(Duration::from_secs(10)).await;
    assert!(!status.success(), "f1 should have aborted: {status:?}");
    assert!(
        cluster.follower_dirs[0]
            .log()
            .contains("crash point follower-before-decision reached"),
        "f1 should have died at its crash point"
    );
    cluster.followers[0] = None;
    assert_eq!(c.get("k").await.expect("get k via the leader"), "v1");

    // F1 comes back where the leader can't reach it: its prepared lock is restored from
    // its journal, so it answers UNAVAILABLE for k, never the old (absent) value.
    let elsewhere = cluster.follower_dirs[0].socket("f1-elsewhere.sock");
    cluster.followers[0] = Some(spawn(
        &cluster.follower_dirs[0],
        Role::Follower,
        &elsewhere,
        &[],
    ));
    wait_follower_ready(&elsewhere).await;
    for attempt in 0..5 {
        match get(&elsewhere, "k").await {
            Err(s) if s.code() == Code::Unavailable => {}
            other => panic!(
                "attempt {attempt}: a follower with an undecided prepared write of k must answer UNAVAILABLE, got {other:?}"
            ),
        }
        assert_eq!(c.get("k").await.expect("get k via the leader"), "v1");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Back on its own address, the leader redelivers the decision.
    cluster.kill_follower(0);
    cluster.start_follower(0, &[]);
    let f1 = cluster.follower_addr(0);
    poll("f1 to apply the redelivered decision", POLL_TIMEOUT, || {
        let f1 = f1.clone();
        async move {
            match get(&f1, "k").await {
                Ok(Some(v)) if v == "v1" => Ok(()),
                Ok(other) => panic!("f1 answered {other:?} for k, expected v1"),
                Err(s) if matches!(s.code(), Code::Unavailable | Code::Unknown) => {
                    Err(format!("{s:?}"))
                }
                Err(s) => panic!("f1: unexpected {s:?}"),
            }
        }
    })
    .await;
    assert_followers(&cluster, "k", Some("v1")).await;
    assert_eq!(c.get("k").await.expect("get k via the leader"), "v1");
}

// ---------------------------------------------------------------------------------------
// 3. A follower down.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_while_a_follower_is_down_fails_unavailable_changes_nothing_and_writes_resume_after_its_restart(
) {
    let mut cluster = Cluster::start(3).await;
    let mut c = cluster.client();
    c.put("k", "old").await.expect("put k=old");
    assert_followers(&cluster, "k", Some("old")).await;

    cluster.kill_follower(1);
    let answer = tokio::time::timeout(Duration::from_secs(20), c.put("k", "new"))
        .await
        .expect("a put with a follower down must not hang");
    assert_status(answer, Code::Unavailable, "");
    for i in [0, 2] {
        let addr = cluster.follower_addr(i);
        assert_eq!(
            settled_get(&addr, "k").await.as_deref(),
            Some("old"),
            "{addr} after a failed put"
        );
    }
    assert_eq!(c.get("k").await.expect("get k via the leader"), "old");

    cluster.start_follower(1, &[]);
    poll("a put to succeed after f2's restart", POLL_TIMEOUT, || {
        let mut c = c.clone();
        async move { c.put("k", "new2").await.map_err(|s| format!("{s:?}")) }
    })
    .await;
    assert_followers(&cluster, "k", Some("new2")).await;
    assert_eq!(c.get("k").await.expect("get k via the leader"), "new2");
}

// ---------------------------------------------------------------------------------------
// 4. kill -9 of every node under load.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Write {
    client: usize,
    value: String,
    issued: Instant,
    completed: Instant,
    /// `Ok` acknowledged; `Err(code)` outcome unknown (unless ABORTED: not applied).
    result: Result<(), Code>,
}

/// The rule: the final value of a key is never older than its last acknowledged write.
fn check_final_value(key: &str, writes: &[Write], last: Option<&str>) -> Result<(), String> {
    let acked: Vec<&Write> = writes.iter().filter(|w| w.result.is_ok()).collect();
    let Some(value) = last else {
        return match acked.first() {
            Some(w) => Err(format!(
                "{key}: absent after restart, but {:?} (client {}) was acknowledged",
                w.value, w.client
            )),
            None => Ok(()),
        };
    };
    let Some(w) = writes.iter().find(|w| w.value == value) else {
        return Err(format!("{key}: {value:?} was never written to this key"));
    };
    if w.result == Err(Code::Aborted) {
        return Err(format!(
            "{key}: {value:?} was refused with ABORTED (not applied), yet it is the value"
        ));
    }
    if w.result.is_ok() {
        if let Some(later) = acked
            .iter()
            .find(|l| l.value != w.value && l.issued > w.completed)
        {
            return Err(format!(
                "{key}: the value is {value:?} (acknowledged), but the acknowledged write {:?} \
                 was issued after it completed: a lost acknowledged write",
                later.value
            ));
        }
    }
    Ok(())
}

#[test]
fn the_final_value_check_catches_lost_writes() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let w = |client, value: &str, issued, completed, result| Write {
        client,
        value: value.into(),
        issued: at(issued),
        completed: at(completed),
        result,
    };
    let writes = vec![
        w(0, "a", 0, 10, Ok(())),
        w(1, "b", 5, 15, Ok(())), // concurrent with a
        w(0, "c", 20, 30, Ok(())),
        w(1, "d", 25, 40, Err(Code::Unavailable)),
        w(1, "e", 50, 60, Err(Code::Aborted)),
    ];
    assert!(check_final_value("k", &writes, Some("c")).is_ok());
    assert!(check_final_value("k", &writes, Some("d")).is_ok());
    assert!(check_final_value("k", &writes, Some("a")).is_err());
    assert!(check_final_value("k", &writes, Some("b")).is_err());
    assert!(check_final_value("k", &writes, Some("e")).is_err());
    assert!(check_final_value("k", &writes, Some("zzz")).is_err());
    assert!(check_final_value("k", &writes, None).is_err());
    assert!(check_final_value("k", &writes[3..4], None).is_ok());
    assert!(check_final_value("k", &writes[..2], Some("a")).is_ok());
    assert!(check_final_value("k", &writes[..2], Some("b")).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_of_every_node() {
    const CLIENTS: usize = 4;
    const KEYS: usize = 8;
    let mut cluster = Cluster::start(3).await;
    let stop = Arc::new(AtomicBool::new(false));
    // Acknowledged writes per key, so far.
    let acked_per_key: Arc<Vec<AtomicUsize>> =
        Arc::new((0..KEYS).map(|_| AtomicUsize::new(0)).collect());
    let mut tasks = Vec::new();
    for client_no in 0..CLIENTS {
        let addr = cluster.leader_addr();
        let stop = stop.clone();
        let acked_per_key = acked_per_key.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = support::client(&addr);
            let mut log: Vec<(String, Write)> = Vec::new();
            let mut n = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let k = (client_no * 3 + n * 5 + n / 8) % KEYS;
                let key = format!("key{k}");
                let value = format!("c{client_no}-{n}");
                let issued = Instant::now();
                let result = c.put(&key, &value).await.map_err(|s| s.code());
                let completed = Instant::now();
                let failed = result.is_err();
                if !failed {
                    acked_per_key[k].fetch_add(1, Ordering::SeqCst);
                }
                log.push((
                    key,
                    Write {
                        client: client_no,
                        value,
                        issued,
                        completed,
                        result,
                    },
                ));
                n += 1;
                if failed {
                    // The nodes are being killed; don't spin.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            log
        }));
    }
    // Once every key has acknowledged writes to lose, every node dies mid-write (the
    // bound only catches a cluster that stopped taking writes).
    poll(
        "every key to have two acknowledged writes",
        POLL_TIMEOUT,
        || {
            let acked_per_key = acked_per_key.clone();
            async move {
                let counts: Vec<usize> = acked_per_key
                    .iter()
                    .map(|n| n.load(Ordering::SeqCst))
                    .collect();
                if counts.iter().all(|&n| n >= 2) {
                    Ok(())
                } else {
                    Err(format!("acknowledged per key: {counts:?}"))
                }
            }
        },
    )
    .await;
    cluster.kill_all();
    stop.store(true, Ordering::SeqCst);
    let mut per_key: BTreeMap<String, Vec<Write>> = BTreeMap::new();
    for task in tasks {
        for (key, write) in task.await.expect("client task") {
            per_key.entry(key).or_default().push(write);
        }
    }
    let acked = per_key
        .values()
        .flatten()
        .filter(|w| w.result.is_ok())
        .count();
    let failed: Vec<Code> = per_key
        .values()
        .flatten()
        .filter_map(|w| w.result.err())
        .collect();
    eprintln!(
        "workload: {acked} acknowledged writes, {} failed ({:?} ...)",
        failed.len(),
        &failed[..failed.len().min(5)]
    );

    // Restart everything.
    for i in 0..3 {
        cluster.start_follower(i, &[]);
    }
    cluster.start_leader(&[]);
    for addr in cluster.follower_addrs() {
        wait_follower_ready(&addr).await;
    }
    wait_leader_ready(&cluster.leader_addr()).await;

    let mut c = cluster.client();
    let mut problems = Vec::new();
    for k in 0..KEYS {
        let key = format!("key{k}");
        let mut seen = Vec::new();
        for addr in cluster.follower_addrs() {
            seen.push(settled_get(&addr, &key).await);
        }
        assert!(
            seen.windows(2).all(|w| w[0] == w[1]),
            "followers disagree on {key} after restart: {seen:?}"
        );
        let through_leader = match c.get(&key).await {
            Ok(v) => Some(v),
            Err(s) if s.code() == Code::NotFound => None,
            Err(s) => panic!("get {key} via the leader: {s:?}"),
        };
        assert_eq!(
            through_leader, seen[0],
            "the leader's answer for {key} differs from the followers'"
        );
        let writes = per_key.get(&key).cloned().unwrap_or_default();
        if let Err(problem) = check_final_value(&key, &writes, through_leader.as_deref()) {
            problems.push(problem);
        }
    }
    assert!(problems.is_empty(), "durability violated: {problems:#?}");
}

// ---------------------------------------------------------------------------------------
// 5. Directory locks, corrupt journals, torn tails.
// ---------------------------------------------------------------------------------------

/// Starts `role` on `journal_dir`/`kv_dir` and asserts that it exits non-zero saying the
/// directory is locked.
async fn assert_refused_as_locked(
    name: &str,
    role: Role,
    journal_dir: &std::path::Path,
    kv_dir: &std::path::Path,
) {
    let dirs = NodeDirs::new(name);
    let mut node = spawn_with_dirs(&dirs, role, &dirs.addr(), &[], journal_dir, kv_dir);
    let status = node.wait_exit(Duration::from_secs(10)).await;
    assert!(
        !status.success(),
        "{name} on shared directories must fail: {status:?}"
    );
    let log = dirs.log();
    assert!(
        log.contains("locked") || log.contains("another tpc process"),
        "{name}'s error should say the directory is locked:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_cannot_share_a_journal_or_kv_directory() {
    let f1 = NodeDirs::new("f1");
    let _f1 = follower(&f1);
    wait_follower_ready(&f1.addr()).await;
    let ld = NodeDirs::new("leader");
    let _leader = support::leader(&ld, &[&f1]);
    wait_leader_ready(&ld.addr()).await;

    let scratch = NodeDirs::new("scratch");
    assert_refused_as_locked(
        "both-shared",
        Role::Follower,
        &f1.journal_dir(),
        &f1.kv_dir(),
    )
    .await;
    assert_refused_as_locked(
        "kv-shared",
        Role::Follower,
        &scratch.journal_dir(),
        &f1.kv_dir(),
    )
    .await;
    assert_refused_as_locked(
        "journal-shared",
        Role::Follower,
        &f1.journal_dir(),
        &scratch.kv_dir(),
    )
    .await;
    assert_refused_as_locked(
        "leader-shared",
        Role::leader(vec![f1.addr()]),
        &ld.journal_dir(),
        &scratch.kv_dir(),
    )
    .await;

    // The owners were not disturbed.
    let mut c = support::client(&ld.addr());
    c.put("k", "v").await.expect("put after the refused starts");
    assert_eq!(c.get("k").await.expect("get k"), "v");
    assert_eq!(settled_get(&f1.addr(), "k").await.as_deref(), Some("v"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_journal_line_stops_a_follower_naming_file_and_line_and_a_torn_tail_is_dropped() {
    let mut cluster = Cluster::start(1).await;
    let mut c = cluster.client();
    c.put("a", "1").await.expect("put a");
    c.put("b", "2").await.expect("put b");
    assert_followers(&cluster, "b", Some("2")).await;
    cluster.kill_all();

    let journal = cluster.follower_dirs[0].journal_file();
    let good = journal_records(&journal);
    let lines = good.iter().filter(|&&b| b == b'\n').count();
    assert!(
        lines >= 1 && good.ends_with(b"\n"),
        "f1's journal should hold complete records: {:?}",
        String::from_utf8_lossy(&good)
    );

    // A complete line with a bad checksum: refuse to start, name file and line, change nothing.
    let mut corrupt = good.clone();
    corrupt.extend_from_slice(b"deadbeef put bogus%20record\n");
    std::fs::write(&journal, &corrupt).expect("write the corrupt journal");
    cluster.start_follower(0, &[]);
    let status = cluster.follower(0).wait_exit(Duration::from_secs(10)).await;
    cluster.followers[0] = None;
    assert!(
        !status.success(),
        "a follower with a corrupt journal must not run: {status:?}"
    );
    let log = cluster.follower_dirs[0].log();
    let path = journal.display().to_string();
    let line = format!("line {}", lines + 1);
    assert!(
        log.contains(&path) && log.contains(&line),
        "the error should name {path} and {line:?}:\n{log}"
    );
    assert!(
        std::fs::read(&journal).expect("read journal") == corrupt,
        "a corrupt journal must be left exactly as it was"
    );

    // A torn tail (half of a line, no newline) is dropped; the follower serves.
    let last_line_start = good[..good.len() - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let last_line = &good[last_line_start..good.len() - 1];
    let mut torn = good.clone();
    torn.extend_from_slice(&last_line[..last_line.len() / 2]);
    std::fs::write(&journal, &torn).expect("write the torn journal");
    cluster.start_follower(0, &[]);
    let f1 = cluster.follower_addr(0);
    wait_follower_ready(&f1).await;
    // Direct reads need the leader's lease (the follower holds a view).
    cluster.start_leader(&[]);
    wait_leader_ready(&cluster.leader_addr()).await;
    assert_eq!(settled_get(&f1, "a").await.as_deref(), Some("1"));
    assert_eq!(settled_get(&f1, "b").await.as_deref(), Some("2"));
    let after = journal_records(&journal);
    assert!(
        after.starts_with(&good) && after.ends_with(b"\n"),
        "the torn tail should have been cut off: {:?}",
        String::from_utf8_lossy(&after[good.len().min(after.len())..])
    );

    // New records after the dropped tail replay fine.
    cluster.start_leader(&[]);
    wait_leader_ready(&cluster.leader_addr()).await;
    c.put("c", "3").await.expect("put c after the torn tail");
    assert_followers(&cluster, "c", Some("3")).await;
    cluster.kill_follower(0);
    cluster.start_follower(0, &[]);
    wait_follower_ready(&f1).await;
    for (key, value) in [("a", "1"), ("b", "2"), ("c", "3")] {
        assert_eq!(settled_get(&f1, key).await.as_deref(), Some(value), "{key}");
    }
}

// ---------------------------------------------------------------------------------------
// 6. The leader starts before its followers.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_started_before_its_followers_answers_unavailable_then_serves_once_they_are_up() {
    let mut cluster = Cluster::new(3);
    cluster.start_leader(&[]);
    // Wait until the leader itself accepts connections (so UNAVAILABLE below is its
    // answer, not a refused connection).
    let socket = cluster.leader_dirs.root().join("leader.sock");
    poll("the leader to listen", POLL_TIMEOUT, || {
        let socket = socket.clone();
        async move {
            std::os::unix::net::UnixStream::connect(&socket)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await;

    let mut c = cluster.client();
    let answer = tokio::time::timeout(Duration::from_secs(20), c.get("k"))
        .await
        .expect("a get with every follower down must not hang");
    assert_status(answer, Code::Unavailable, "");
    let answer = tokio::time::timeout(Duration::from_secs(20), c.put("k", "early"))
        .await
        .expect("a put with every follower down must not hang");
    assert_status(answer, Code::Unavailable, "");

    for i in 0..3 {
        cluster.start_follower(i, &[]);
    }
    poll(
        "a put to succeed once the followers are up",
        POLL_TIMEOUT,
        || {
            let mut c = c.clone();
            async move { c.put("k", "v").await.map_err(|s| format!("{s:?}")) }
        },
    )
    .await;
    assert_eq!(c.get("k").await.expect("get k"), "v");
    assert_followers(&cluster, "k", Some("v")).await;
}

/// A journal file's bytes up to the end of its last record (journals are preallocated:
/// zeros follow the records).
fn journal_records(path: &std::path::Path) -> Vec<u8> {
    let mut bytes = std::fs::read(path).expect("read the journal");
    let end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    assert!(
        bytes[end..].iter().all(|&b| b == 0),
        "only zeros may follow the last record of {}",
        path.display()
    );
    bytes.truncate(end);
    bytes
}

/// Complete records in a journal file (lines up to its last '\n').
fn journal_record_count(path: &std::path::Path) -> usize {
    std::fs::read(path).map_or(0, |bytes| bytes.iter().filter(|&&b| b == b'\n').count())
}

/// A follower checkpoints under load: its store sync runs on a thread of its own while
/// it goes on taking writes (held here at a pause point while writes go on), and then
/// its journal is rewritten with the live records of the sync's start plus every record
/// journaled since. Its key files written since the sync started may be stale on disk
/// after a machine crash; with them made stale and the follower restarted, it must
/// still hold every acknowledged write (a rewrite that dropped the records journaled
/// during the sync would lose those writes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_checkpoint_keeps_the_writes_made_during_its_store_sync() {
    const WRITERS: usize = 16;
    let mut cluster = Cluster::new(2);
    let go = cluster.follower_dirs[0].root().join("go");
    let pause = format!("follower-before-store-sync={}", go.display());
    cluster.start_follower(0, &[("TPC_PAUSE_AT", pause.as_str())]);
    cluster.start_follower(1, &[]);
    for addr in cluster.follower_addrs() {
        wait_follower_ready(&addr).await;
    }
    cluster.start_leader(&[]);
    wait_leader_ready(&cluster.leader_addr()).await;

    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let mut c = cluster.client();
        let (stop, written) = (stop.clone(), written.clone());
        writers.push(tokio::spawn(async move {
            // Every write to a key of its own.
            let mut acknowledged = Vec::new();
            for n in 0.. {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                let (key, value) = (format!("w{w}-{n}"), format!("v{n}"));
                c.put(&key, &value).await.expect("put");
                acknowledged.push((key, value));
                written.fetch_add(1, Ordering::AcqRel);
            }
            acknowledged
        }));
    }
    // The journal reaches the checkpoint bound; the sync thread holds before syncing.
    let f1_dirs = &cluster.follower_dirs[0];
    poll(
        "the follower's store sync to start",
        Duration::from_secs(120),
        || {
            let paused = f1_dirs
                .log()
                .contains("paused at follower-before-store-sync");
            async move { paused.then_some(()).ok_or("not yet".to_string()) }
        },
    )
    .await;
    // Every key file changed from here on was changed after the live records were taken.
    let sync_started = std::time::SystemTime::now();
    // Writes go on while the sync is held: the follower's state thread does not wait.
    let before = written.load(Ordering::Acquire);
    poll("writes during the sync", Duration::from_secs(60), || {
        let more = written.load(Ordering::Acquire) - before;
        async move { (more >= 200).then_some(()).ok_or(format!("{more} writes")) }
    })
    .await;
    std::fs::write(&go, b"").expect("release the sync");
    // Then the journal is rewritten: it shrinks.
    let journal = cluster.follower_dirs[0].journal_file();
    let mut largest = 0;
    poll(
        "the follower's checkpoint",
        Duration::from_secs(120),
        || {
            let records = journal_record_count(&journal);
            largest = largest.max(records);
            let shrunk = largest >= CHECKPOINT_RECORDS && records < largest / 2;
            let progress = format!("{records} records in the journal, {largest} at most");
            async move { shrunk.then_some(()).ok_or(progress) }
        },
    )
    .await;
    stop.store(true, Ordering::Release);
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.extend(writer.await.expect("writer"));
    }
    let f1 = cluster.follower_addr(0);
    settle_last_writes(&f1, &acknowledged, WRITERS).await;
    cluster.kill_follower(0);
    // A machine crash could lose every key file change the sync did not cover.
    let mut damaged = 0;
    let kv_dir = cluster.follower_dirs[0].kv_dir();
    for entry in std::fs::read_dir(&kv_dir).expect("list the follower's store") {
        let entry = entry.expect("a store entry");
        let changed = entry.metadata().and_then(|m| m.modified()).expect("mtime");
        if entry.file_name().to_string_lossy().starts_with('v') && changed > sync_started {
            std::fs::write(entry.path(), b"").expect("empty a key file");
            damaged += 1;
        }
    }
    assert!(
        damaged >= 200,
        "only {damaged} key files changed during the sync"
    );
    cluster.start_follower(0, &[]);
    wait_follower_ready(&f1).await;
    settle_last_writes(&f1, &acknowledged, WRITERS).await;
    // What it holds is in its files now (faster to read there than one Get each).
    cluster.kill_all();
    let store = tpc::kvstore::KvStore::open(&kv_dir).expect("open the follower's store");
    let held = store.dump().expect("read the follower's store");
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|(key, value)| held.get(key).map(|h| &h.value) != Some(value))
        .map(|(key, _)| key)
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost by the restarted follower: {:?}",
        lost.len(),
        acknowledged.len(),
        &lost[..lost.len().min(10)]
    );
}

/// Waits until `follower` has each writer's last write. Writes are acknowledged at their
/// commit point and their decisions reach a follower after that, in order on its
/// stream: once each writer's last write reads back, every earlier decision is in too.
async fn settle_last_writes(follower: &str, acknowledged: &[(String, String)], writers: usize) {
    for w in 0..writers {
        let prefix = format!("w{w}-");
        let (key, value) = acknowledged
            .iter()
            .rev()
            .find(|(key, _)| key.starts_with(&prefix))
            .expect("every writer wrote");
        assert_eq!(
            settled_get(follower, key).await.as_deref(),
            Some(value.as_str())
        );
    }
}

// ---------------------------------------------------------------------------------------
// 7. Versions (DESIGN §1.8).
// ---------------------------------------------------------------------------------------

/// A key's version and value read directly on `addr` once it is not locked there.
async fn settled_version(addr: &str, key: &str) -> Option<(String, String)> {
    poll(
        &format!("{addr} to answer Get({key:?})"),
        POLL_TIMEOUT,
        || async {
            match support::client(addr).get_versioned(key).await {
                Ok(held) => Ok(Some(held)),
                Err(s) if s.code() == Code::NotFound => Ok(None),
                Err(s) => Err(format!("{s:?}")),
            }
        },
    )
    .await
}

/// Every key's version is the id of the transaction that last wrote it: Put and Delete
/// answer it, the leader and every follower report the same one, later writes have
/// greater ones, and restarts keep them; `tpc client get -v` prints it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_are_the_last_writers_id_everywhere_and_survive_restarts() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader_addr();
    let mut api = tpc::proto::api::key_value_api_client::KeyValueApiClient::new(
        tpc::net::connect(&leader.parse().expect("address"), CALL_TIMEOUT)
            .await
            .expect("connect"),
    );
    let put = |key: &str, value: &str| tpc::proto::api::PutRequest {
        key: key.into(),
        value: value.into(),
    };
    let first = api.put(put("k", "v1")).await.expect("put").into_inner();
    let first: TxId = first.version.parse().expect("Put answers a version");
    let second = api.put(put("k", "v2")).await.expect("put").into_inner();
    let second: TxId = second.version.parse().expect("Put answers a version");
    assert!(second > first, "{second} after {first}");
    let expected = Some(("v2".to_string(), second.to_string()));
    assert_eq!(settled_version(&leader, "k").await, expected);
    for addr in cluster.follower_addrs() {
        assert_eq!(settled_version(&addr, "k").await, expected, "{addr}");
    }
    let deleted = api
        .delete(tpc::proto::api::DeleteRequest { key: "k".into() })
        .await
        .expect("delete")
        .into_inner();
    let deleted: TxId = deleted.version.parse().expect("Delete answers a version");
    assert!(deleted > second);
    for addr in cluster.follower_addrs() {
        assert_eq!(
            settled_version(&addr, "k").await,
            None,
            "{addr}: no version left"
        );
    }
    api.put(put("kept", "x")).await.expect("put");
    let kept = settled_version(&leader, "kept").await;

    cluster.kill_all();
    for i in 0..3 {
        cluster.start_follower(i, &[]);
    }
    cluster.start_leader(&[]);
    for addr in cluster.follower_addrs() {
        wait_follower_ready(&addr).await;
        assert_eq!(
            settled_version(&addr, "kept").await,
            kept,
            "{addr} after a restart"
        );
    }
    wait_leader_ready(&cluster.leader_addr()).await;
    let (value, version) = kept.expect("kept");
    let out = std::process::Command::new(support::tpc_binary())
        .args([
            "client",
            "--leader",
            &cluster.leader_addr(),
            "get",
            "-v",
            "kept",
        ])
        .output()
        .expect("run tpc client");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{value}\nversion {version}\n")
    );
}

/// A follower whose key files were written before versions serves them, upgraded, with
/// version 0.0 (older than any transaction).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_with_a_store_written_before_versions_serves_it_upgraded() {
    let dirs = NodeDirs::new("upgrade-f1");
    std::fs::create_dir_all(dirs.kv_dir()).expect("kv dir");
    // `k` + the key's encoding, holding the value alone: the format before versions.
    std::fs::write(dirs.kv_dir().join("kold"), "from before").expect("an old key file");
    let _follower = support::follower(&dirs);
    wait_follower_ready(&dirs.addr()).await;
    assert_eq!(
        settled_version(&dirs.addr(), "old").await,
        Some(("from before".to_string(), "0.0".to_string()))
    );
    assert!(!dirs.kv_dir().join("kold").exists(), "the old file is gone");
}
