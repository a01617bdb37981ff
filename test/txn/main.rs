//! End-to-end tests of multi-key transactions (DESIGN §6) and the versions they give
//! (§1.8): real `tpc` processes (the built binary) in temporary directories, real gRPC
//! over Unix sockets, real fsyncs, real `kill -9`. Every test checks one rule: what a
//! `Txn` answers, and what every replica holds afterwards, read directly on each
//! follower (not only through the leader). Waits poll with a bound; a failing test
//! prints the stderr of every node it started.
//!
//! The helpers every module shares are here; each module is one topic: `cas`
//! (compare-and-swap, a counter under concurrent CAS loops), `branches` (compares choose
//! the branch), `reads` (GETs in a transaction, read-only transactions), `versions`,
//! `limits` (and followers refusing transactions), `commands` (the one-shot shell
//! commands), `crashes` (kill -9 mid-transaction: all or nothing) and `crash_points`
//! (crashes at chosen steps of 2PC).

#[path = "../e2e_support/mod.rs"]
mod support;

mod branches;
mod cas;
mod commands;
mod crash_points;
mod crashes;
mod limits;
mod reads;
mod versions;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::{Code, Status};
use tpc::client::{Client, Swap, Txn};
use tpc::proto::api::{self, compare, txn_op};
use tpc::txid::TxId;

use support::{poll, wait_follower_ready, wait_leader_ready, Cluster, POLL_TIMEOUT};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// A key's state on one replica: `Some((value, version))`, `None` if absent.
type Held = Option<(String, String)>;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn describe(status: &Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// Parses a version (`<epoch>.<seq>`), panicking with `what` if it is not one.
fn version(text: &str, what: &str) -> TxId {
    text.parse()
        .unwrap_or_else(|e| panic!("{what}: {text:?} is not a version: {e}"))
}

/// `key`'s value and version read on `addr` (the leader or a follower directly), once it
/// is not locked there: UNAVAILABLE (a decision on its way) is polled past.
async fn settled_version(addr: &str, key: &str) -> Held {
    let c = support::client(addr);
    poll(
        &format!("{addr} to answer Get({key:?}) with its value and version"),
        POLL_TIMEOUT,
        || {
            let mut c = c.clone();
            async move {
                match c.get_versioned(key).await {
                    Ok(held) => Ok(Some(held)),
                    Err(s) if s.code() == Code::NotFound => Ok(None),
                    Err(s)
                        if matches!(
                            s.code(),
                            Code::Unavailable | Code::Unknown | Code::DeadlineExceeded
                        ) =>
                    {
                        Err(describe(&s))
                    }
                    Err(s) => panic!("Get({key:?}) on {addr}: unexpected {}", describe(&s)),
                }
            }
        },
    )
    .await
}

/// What the leader answers for `key`, and what every follower holds, must all be
/// `expected` (value and version).
async fn assert_replicas(cluster: &Cluster, key: &str, expected: Option<(&str, &str)>) {
    let expected: Held = expected.map(|(v, ver)| (v.to_string(), ver.to_string()));
    assert_eq!(
        settled_version(&cluster.leader_addr(), key).await,
        expected,
        "Get({key:?}) through the leader"
    );
    for addr in cluster.follower_addrs() {
        assert_eq!(
            settled_version(&addr, key).await,
            expected,
            "direct Get({key:?}) on follower {addr}"
        );
    }
}

/// Every follower's copy of each of `keys` (read directly), which must be identical on
/// every follower; returns it.
async fn follower_copies(cluster: &Cluster, keys: &[&str]) -> BTreeMap<String, Held> {
    let mut first: Option<BTreeMap<String, Held>> = None;
    for addr in cluster.follower_addrs() {
        let mut copy = BTreeMap::new();
        for key in keys {
            copy.insert(key.to_string(), settled_version(&addr, key).await);
        }
        match &first {
            None => first = Some(copy),
            Some(first) => assert_eq!(&copy, first, "follower {addr} differs from the first"),
        }
    }
    first.expect("a cluster has followers")
}

/// Asserts that `result` is the error `code` with a message that mentions every one of
/// `needles`.
fn assert_status<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    needles: &[&str],
    what: &str,
) {
    match result {
        Ok(v) => panic!("{what}: expected {code:?}, got Ok({v:?})"),
        Err(s) => {
            assert_eq!(s.code(), code, "{what}: {}", describe(&s));
            for needle in needles {
                assert!(
                    s.message().contains(needle),
                    "{what}: the {code:?} message should mention {needle:?}: {:?}",
                    s.message()
                );
            }
        }
    }
}

/// Kills every node with SIGKILL, restarts them all and waits until they serve.
async fn restart_all(cluster: &mut Cluster) {
    cluster.kill_all();
    for i in 0..cluster.follower_dirs.len() {
        cluster.start_follower(i, &[]);
    }
    cluster.start_leader(&[]);
    for addr in cluster.follower_addrs() {
        wait_follower_ready(&addr).await;
    }
    wait_leader_ready(&cluster.leader_addr()).await;
}

/// A raw compare, as the wire has it.
fn raw_compare(key: &str, target: compare::Target, op: compare::Op, value: &str) -> api::Compare {
    let (value, version) = match target {
        compare::Target::Version => (String::new(), value.to_string()),
        _ => (value.to_string(), String::new()),
    };
    api::Compare {
        key: key.to_string(),
        target: target as i32,
        op: op as i32,
        value,
        version,
    }
}

/// A raw op, as the wire has it.
fn raw_op(kind: txn_op::Kind, key: &str, value: &str) -> api::TxnOp {
    api::TxnOp {
        kind: kind as i32,
        key: key.to_string(),
        value: value.to_string(),
    }
}

/// A GET result as the leader should answer it.
fn found(key: &str, value: &str, version: &str) -> api::TxnResult {
    api::TxnResult {
        key: key.to_string(),
        found: true,
        value: value.to_string(),
        version: version.to_string(),
    }
}

/// A GET result for an absent key.
fn not_found(key: &str) -> api::TxnResult {
    api::TxnResult {
        key: key.to_string(),
        found: false,
        value: String::new(),
        version: String::new(),
    }
}

/// Waits until `counter` reaches `at_least`.
async fn wait_count(what: &str, counter: &AtomicUsize, at_least: usize) {
    poll(what, POLL_TIMEOUT, || async {
        let n = counter.load(Ordering::SeqCst);
        if n >= at_least {
            Ok(())
        } else {
            Err(format!("{n} so far"))
        }
    })
    .await
}
