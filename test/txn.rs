//! End-to-end tests of multi-key transactions (DESIGN §6) and the versions they give
//! (§1.8): real `tpc` processes (the built binary) in temporary directories, real gRPC
//! over Unix sockets, real fsyncs, real `kill -9`. Every test checks one rule: what a
//! `Txn` answers, and what every replica holds afterwards, read directly on each
//! follower (not only through the leader). Waits poll with a bound; a failing test
//! prints the stderr of every node it started.

#[path = "e2e_support/mod.rs"]
mod support;

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

// ---------------------------------------------------------------------------------------
// 1. Compare-and-swap.
// ---------------------------------------------------------------------------------------

/// `Client::cas` and the raw transaction it is: a swap answers the new version, which
/// the leader and every follower then report with the new value; a refused swap
/// changes nothing anywhere and its else-branch GET shows the current value and version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_swaps_only_from_the_expected_value_and_answers_the_version_every_replica_holds() {
    let cluster = Cluster::start(3).await;
    let mut c = cluster.client();

    c.put("k", "v1").await.expect("put k=v1");
    let (_, v1) = settled_version(&cluster.leader_addr(), "k")
        .await
        .expect("k was written");
    assert_replicas(&cluster, "k", Some(("v1", &v1))).await;

    // A swap from the current value.
    let v2 = match c.cas("k", Some("v1"), "v2").await.expect("cas v1 -> v2") {
        Swap::Done(v2) => v2,
        refused => panic!("cas from the current value refused: {refused:?}"),
    };
    assert!(
        version(&v2, "cas's version") > version(&v1, "put's version"),
        "{v2} after {v1}"
    );
    assert_replicas(&cluster, "k", Some(("v2", &v2))).await;

    // A swap from a stale value: refused, shows the current state, changes nothing.
    assert_eq!(
        c.cas("k", Some("v1"), "v3").await.expect("cas v1 -> v3"),
        Swap::Refused(Some(("v2".to_string(), v2.clone())))
    );
    assert_replicas(&cluster, "k", Some(("v2", &v2))).await;

    // From an absent key: `None` expects it absent; an expected value never matches.
    assert_eq!(
        c.cas("fresh", Some(""), "x")
            .await
            .expect("cas on an absent key"),
        Swap::Refused(None),
        "an absent key is not equal even to the empty value"
    );
    assert_replicas(&cluster, "fresh", None).await;
    let created = match c.cas("fresh", None, "x").await.expect("cas create") {
        Swap::Done(created) => created,
        refused => panic!("cas of an absent key expected absent refused: {refused:?}"),
    };
    assert_replicas(&cluster, "fresh", Some(("x", &created))).await;
    assert_eq!(
        c.cas("fresh", None, "y").await.expect("cas create again"),
        Swap::Refused(Some(("x".to_string(), created.clone())))
    );
    assert_replicas(&cluster, "fresh", Some(("x", &created))).await;

    // The same as a raw transaction: success answers the version, no result (no GET in
    // the branch that ran).
    let answer = c
        .txn(
            Txn::new()
                .if_value("k", "v2")
                .then_put("k", "v4")
                .else_get("k"),
        )
        .await
        .expect("raw cas v2 -> v4");
    assert!(answer.succeeded, "{answer:?}");
    assert!(answer.results.is_empty(), "{answer:?}");
    let v4 = answer.version.clone();
    assert!(version(&v4, "txn's version") > version(&v2, "v2"));
    assert_replicas(&cluster, "k", Some(("v4", &v4))).await;

    // And a refused one: the else branch's GET shows the current value and version,
    // the answer has no version (nothing written), and nothing changed.
    let answer = c
        .txn(
            Txn::new()
                .if_value("k", "v2")
                .then_put("k", "v5")
                .else_get("k"),
        )
        .await
        .expect("raw cas v2 -> v5");
    assert_eq!(
        answer,
        api::TxnResponse {
            succeeded: false,
            results: vec![found("k", "v4", &v4)],
            version: String::new(),
        }
    );
    assert_replicas(&cluster, "k", Some(("v4", &v4))).await;
}

// ---------------------------------------------------------------------------------------
// 2. Compares and branches.
// ---------------------------------------------------------------------------------------

/// Every kind of compare, on a present and on an absent key, alone and several at once,
/// chooses the branch that runs; that branch's writes (and only those) reach every
/// follower with the transaction's version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compares_choose_the_branch_and_only_that_branch_is_applied_on_every_follower() {
    let cluster = Cluster::start(3).await;
    let mut c = cluster.client();
    c.put("a", "1").await.expect("put a");
    c.put("b", "2").await.expect("put b");
    c.put("e", "").await.expect("put e (the empty value)");
    let leader = cluster.leader_addr();
    let (_, va) = settled_version(&leader, "a").await.expect("a");
    let (_, vb) = settled_version(&leader, "b").await.expect("b");
    let (_, ve) = settled_version(&leader, "e").await.expect("e");
    let unused = "99.99";

    use compare::{Op, Target};
    let exists_not = |key: &str, value: &str| {
        Txn::new().if_compare(raw_compare(key, Target::Exists, Op::NotEqual, value))
    };
    let rows: Vec<(&str, Txn, bool)> = vec![
        // VALUE
        ("a = 1", Txn::new().if_value("a", "1"), true),
        ("a = 2", Txn::new().if_value("a", "2"), false),
        ("a != 1", Txn::new().if_value_not("a", "1"), false),
        ("a != 2", Txn::new().if_value_not("a", "2"), true),
        ("absent = ''", Txn::new().if_value("absent", ""), false),
        ("absent = x", Txn::new().if_value("absent", "x"), false),
        ("absent != ''", Txn::new().if_value_not("absent", ""), true),
        ("absent != x", Txn::new().if_value_not("absent", "x"), true),
        ("e = ''", Txn::new().if_value("e", ""), true),
        ("e != ''", Txn::new().if_value_not("e", ""), false),
        // VERSION
        ("a version = va", Txn::new().if_version("a", &va), true),
        ("a version = vb", Txn::new().if_version("a", &vb), false),
        (
            "a version = unused",
            Txn::new().if_version("a", unused),
            false,
        ),
        (
            "a version != va",
            Txn::new().if_version_not("a", &va),
            false,
        ),
        ("a version != vb", Txn::new().if_version_not("a", &vb), true),
        (
            "absent version = va",
            Txn::new().if_version("absent", &va),
            false,
        ),
        (
            "absent version != va",
            Txn::new().if_version_not("absent", &va),
            true,
        ),
        ("e version = ve", Txn::new().if_version("e", &ve), true),
        // EXISTS
        ("a exists", Txn::new().if_exists("a"), true),
        ("e exists", Txn::new().if_exists("e"), true),
        ("absent exists", Txn::new().if_exists("absent"), false),
        ("a missing", Txn::new().if_missing("a"), false),
        ("absent missing", Txn::new().if_missing("absent"), true),
        ("a exists != true", exists_not("a", "true"), false),
        ("absent exists != true", exists_not("absent", "true"), true),
        (
            "absent exists != false",
            exists_not("absent", "false"),
            false,
        ),
        // Several: all must hold, wherever the one that fails is.
        (
            "all hold",
            Txn::new()
                .if_value("a", "1")
                .if_exists("b")
                .if_version("b", &vb)
                .if_missing("absent")
                .if_value_not("absent", "1"),
            true,
        ),
        (
            "the first fails",
            Txn::new()
                .if_value("a", "2")
                .if_exists("b")
                .if_version("b", &vb),
            false,
        ),
        (
            "the middle one fails",
            Txn::new()
                .if_value("a", "1")
                .if_missing("b")
                .if_version("b", &vb),
            false,
        ),
        (
            "the last fails",
            Txn::new()
                .if_value("a", "1")
                .if_exists("b")
                .if_version("b", &va),
            false,
        ),
        (
            "two compares on one key",
            Txn::new().if_value("a", "1").if_version("a", &va),
            true,
        ),
    ];
    for (i, (name, compares, expected)) in rows.into_iter().enumerate() {
        let out = format!("out{i}");
        let answer = c
            .txn(
                compares
                    .then_put(&out, "then")
                    .else_put(&out, "else")
                    .else_delete("never-written"),
            )
            .await
            .unwrap_or_else(|s| panic!("{name}: {}", describe(&s)));
        assert_eq!(answer.succeeded, expected, "{name}: {answer:?}");
        assert!(answer.results.is_empty(), "{name}: no GET: {answer:?}");
        let written = version(&answer.version, name);
        assert!(written > version(&ve, "e"), "{name}: {written}");
        let value = if expected { "then" } else { "else" };
        assert_replicas(&cluster, &out, Some((value, &answer.version))).await;
    }
    // No compare changed what it compared.
    assert_replicas(&cluster, "a", Some(("1", &va))).await;
    assert_replicas(&cluster, "b", Some(("2", &vb))).await;
    assert_replicas(&cluster, "e", Some(("", &ve))).await;
    assert_replicas(&cluster, "absent", None).await;

    // Branches of several ops: the success branch's puts and deletes, all with one
    // version; the failure branch's writes nowhere.
    let answer = c
        .txn(
            Txn::new()
                .if_value("a", "1")
                .then_put("x", "x1")
                .then_delete("b")
                .then_put("a", "a2")
                .else_put("y", "never")
                .else_delete("a"),
        )
        .await
        .expect("a two-branch txn");
    assert!(answer.succeeded, "{answer:?}");
    let v = answer.version.clone();
    assert_replicas(&cluster, "x", Some(("x1", &v))).await;
    assert_replicas(&cluster, "a", Some(("a2", &v))).await;
    assert_replicas(&cluster, "b", None).await;
    assert_replicas(&cluster, "y", None).await;

    // The same shape when the compares fail: the failure branch's writes only.
    let answer = c
        .txn(
            Txn::new()
                .if_value("a", "1")
                .then_put("x", "never")
                .then_delete("a")
                .else_put("y", "y1")
                .else_put("b", "b2")
                .else_delete("x"),
        )
        .await
        .expect("a two-branch txn that fails");
    assert!(!answer.succeeded, "{answer:?}");
    let w = answer.version.clone();
    assert!(version(&w, "failure branch") > version(&v, "success branch"));
    assert_replicas(&cluster, "y", Some(("y1", &w))).await;
    assert_replicas(&cluster, "b", Some(("b2", &w))).await;
    assert_replicas(&cluster, "x", None).await;
    assert_replicas(&cluster, "a", Some(("a2", &v))).await;

    // Compares fail, the failure branch is empty: succeeds with succeeded = false, no
    // version, and changes nothing (not even a version).
    let answer = c
        .txn(
            Txn::new()
                .if_value("a", "1")
                .then_put("a", "never")
                .then_delete("y"),
        )
        .await
        .expect("a txn with an empty failure branch");
    assert_eq!(answer, api::TxnResponse::default());
    assert_replicas(&cluster, "a", Some(("a2", &v))).await;
    assert_replicas(&cluster, "y", Some(("y1", &w))).await;

    // A failure branch of GETs only: no version either.
    let answer = c
        .txn(
            Txn::new()
                .if_missing("a")
                .then_put("a", "never")
                .else_get("a"),
        )
        .await
        .expect("a txn whose failure branch only reads");
    assert_eq!(
        answer,
        api::TxnResponse {
            succeeded: false,
            results: vec![found("a", "a2", &v)],
            version: String::new(),
        }
    );

    // A read-only txn that succeeds: no version.
    let answer = c
        .txn(Txn::new().if_value("a", "a2").then_get("y"))
        .await
        .expect("a read-only txn");
    assert_eq!(
        answer,
        api::TxnResponse {
            succeeded: true,
            results: vec![found("y", "y1", &w)],
            version: String::new(),
        }
    );

    // The empty transaction succeeds and does nothing.
    let answer = c.txn(Txn::new()).await.expect("the empty txn");
    assert_eq!(
        answer,
        api::TxnResponse {
            succeeded: true,
            results: Vec::new(),
            version: String::new(),
        }
    );
    assert_replicas(&cluster, "a", Some(("a2", &v))).await;
}

// ---------------------------------------------------------------------------------------
// 3. GETs inside a transaction.
// ---------------------------------------------------------------------------------------

/// A transaction's results are one per GET of the branch that ran, in order, each the
/// key's state from before the transaction (even when the branch writes the key), and
/// `found = false` for an absent key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gets_in_a_transaction_read_the_state_from_before_it_in_order() {
    let cluster = Cluster::start(3).await;
    let mut c = cluster.client();
    c.put("a", "1").await.expect("put a");
    c.put("c", "3").await.expect("put c");
    let leader = cluster.leader_addr();
    let (_, va) = settled_version(&leader, "a").await.expect("a");
    let (_, vc) = settled_version(&leader, "c").await.expect("c");

    // The success branch: it writes a and c and reads them before and after its writes.
    let answer = c
        .txn(
            Txn::new()
                .if_value("a", "1")
                .then_get("a")
                .then_put("a", "2")
                .then_get("b")
                .then_delete("c")
                .then_get("c")
                .then_put("b", "new")
                .then_get("a")
                .else_get("c"),
        )
        .await
        .expect("a txn that reads what it writes");
    assert!(answer.succeeded, "{answer:?}");
    assert_eq!(
        answer.results,
        vec![
            found("a", "1", &va),
            not_found("b"),
            found("c", "3", &vc),
            found("a", "1", &va),
        ]
    );
    let t1 = answer.version.clone();
    assert_replicas(&cluster, "a", Some(("2", &t1))).await;
    assert_replicas(&cluster, "b", Some(("new", &t1))).await;
    assert_replicas(&cluster, "c", None).await;

    // The failure branch: only its GETs are answered, in its order.
    let answer = c
        .txn(
            Txn::new()
                .if_value("a", "1")
                .then_get("a")
                .then_get("b")
                .else_get("c")
                .else_put("c", "again")
                .else_get("a")
                .else_get("c")
                .else_get("nothing-here"),
        )
        .await
        .expect("a txn whose else branch reads");
    assert!(!answer.succeeded, "{answer:?}");
    assert_eq!(
        answer.results,
        vec![
            not_found("c"),
            found("a", "2", &t1),
            not_found("c"),
            not_found("nothing-here"),
        ]
    );
    let t2 = answer.version.clone();
    assert!(version(&t2, "t2") > version(&t1, "t1"));
    assert_replicas(&cluster, "c", Some(("again", &t2))).await;

    // A read-only transaction (one follower's snapshot) answers the same way.
    let answer = c
        .txn(
            Txn::new()
                .then_get("b")
                .then_get("absent")
                .then_get("a")
                .then_get("b"),
        )
        .await
        .expect("a read-only txn");
    assert_eq!(
        answer,
        api::TxnResponse {
            succeeded: true,
            results: vec![
                found("b", "new", &t1),
                not_found("absent"),
                found("a", "2", &t1),
                found("b", "new", &t1),
            ],
            version: String::new(),
        }
    );
}

/// A read-only transaction is a read: under a steady stream of writes to its key it is
/// answered, as `Get` of that key is (DESIGN §1.3: the leader hides a follower's
/// locked keys from clients), with the key's latest acknowledged state or a newer one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_transaction_is_answered_under_writes_to_its_key_as_get_is() {
    const WRITERS: usize = 4;
    const READS: usize = 20;
    let cluster = Cluster::start(3).await;
    let leader = cluster.leader_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (leader, stop, acked) = (leader.clone(), stop.clone(), acked.clone());
            tokio::spawn(async move {
                let mut c = support::client(&leader);
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    c.put("hot", &format!("{w}-{n}"))
                        .await
                        .unwrap_or_else(|s| panic!("put hot: {}", describe(&s)));
                    acked.fetch_add(1, Ordering::SeqCst);
                    n += 1;
                }
            })
        })
        .collect();
    wait_count("writes to be under way", &acked, 20).await;

    let mut c = support::client(&leader);
    let mut gets = Vec::new();
    let mut txns = Vec::new();
    for _ in 0..READS {
        gets.push(c.get_versioned("hot").await.map_err(|s| describe(&s)));
        let answer = c.txn(Txn::new().then_get("hot")).await;
        txns.push(answer.map(|a| a.results).map_err(|s| describe(&s)));
    }
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.expect("a writer");
    }
    let failed_gets: Vec<_> = gets.iter().filter_map(|g| g.as_ref().err()).collect();
    assert!(
        failed_gets.is_empty(),
        "Get of the hot key: {failed_gets:#?}"
    );
    let failed_txns: Vec<_> = txns.iter().filter_map(|t| t.as_ref().err()).collect();
    assert!(
        failed_txns.is_empty(),
        "{} of {READS} read-only Txn(get hot) failed while every Get succeeded: {failed_txns:#?}",
        failed_txns.len()
    );
    // And each read is at least as new as the Get just before it (linearizable).
    for (get, txn) in gets.iter().zip(&txns) {
        let (Ok((_, got)), Ok(results)) = (get, txn) else {
            unreachable!("checked above");
        };
        let [read] = results.as_slice() else {
            panic!("one GET, one result: {results:?}");
        };
        assert!(read.found, "{read:?}");
        assert!(
            version(&read.version, "txn") >= version(got, "get"),
            "the read-only Txn read {read:?}, older than the Get before it ({got})"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 4. Versions of multi-key transactions, across restarts.
// ---------------------------------------------------------------------------------------

/// A transaction's version is the version of every key it wrote, on every follower, and
/// stays so after `kill -9` of every node and a restart; a later epoch's transactions
/// have greater versions, and VERSION compares still match the old ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_key_transactions_version_is_every_written_keys_version_and_survives_restart() {
    let mut cluster = Cluster::start(3).await;
    let mut c = cluster.client();
    let keys = ["k1", "k2", "k3", "k4"];
    c.put("gone", "soon").await.expect("put gone");

    let answer = c
        .txn(
            keys.iter()
                .fold(Txn::new(), |t, k| t.then_put(k, &format!("{k}=1")))
                .then_delete("gone"),
        )
        .await
        .expect("a four-key txn");
    assert!(answer.succeeded);
    let first = answer.version.clone();
    // A second one rewrites two of the keys only.
    let answer = c
        .txn(
            Txn::new()
                .if_version("k1", &first)
                .then_put("k1", "k1=2")
                .then_put("k2", "k2=2"),
        )
        .await
        .expect("a two-key txn");
    assert!(answer.succeeded);
    let second = answer.version.clone();
    assert!(version(&second, "second") > version(&first, "first"));

    let expected: Vec<(&str, Option<(String, String)>)> = vec![
        ("k1", Some(("k1=2".into(), second.clone()))),
        ("k2", Some(("k2=2".into(), second.clone()))),
        ("k3", Some(("k3=1".into(), first.clone()))),
        ("k4", Some(("k4=1".into(), first.clone()))),
        ("gone", None),
    ];
    let check = |cluster: &Cluster| {
        let expected = expected.clone();
        let leader = cluster.leader_addr();
        let followers = cluster.follower_addrs();
        async move {
            for (key, held) in &expected {
                for addr in std::iter::once(&leader).chain(&followers) {
                    assert_eq!(
                        &settled_version(addr, key).await,
                        held,
                        "Get({key:?}) on {addr}"
                    );
                }
            }
        }
    };
    check(&cluster).await;

    restart_all(&mut cluster).await;
    check(&cluster).await;

    // The old versions still compare equal; the new epoch's transaction is newer.
    let mut c = cluster.client();
    let answer = c
        .txn(
            Txn::new()
                .if_version("k3", &first)
                .if_version("k1", &second)
                .then_put("k3", "k3=3")
                .then_put("k4", "k4=3"),
        )
        .await
        .expect("a txn after the restart");
    assert!(
        answer.succeeded,
        "versions survived the restart: {answer:?}"
    );
    let third = answer.version.clone();
    let (third_id, second_id) = (version(&third, "third"), version(&second, "second"));
    assert!(third_id > second_id, "{third} after {second}");
    assert!(third_id.epoch > second_id.epoch, "a restart is a new epoch");
    assert_replicas(&cluster, "k3", Some(("k3=3", &third))).await;
    assert_replicas(&cluster, "k4", Some(("k4=3", &third))).await;
    assert_replicas(&cluster, "k1", Some(("k1=2", &second))).await;
}

// ---------------------------------------------------------------------------------------
// 5. Limits.
// ---------------------------------------------------------------------------------------

/// Every rule of §6's limits is refused with INVALID_ARGUMENT naming it, and a refused
/// transaction changes nothing; the limits themselves are allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_beyond_the_limits_are_refused_naming_the_rule_and_change_nothing() {
    // Multi-MiB transactions take a debug build's followers a while to journal: a
    // generous vote timeout (speed is not what this test checks).
    let mut cluster = Cluster::new(3);
    cluster.vote_timeout = "10s".into();
    let cluster = cluster.started().await;
    let mut c = cluster.client();
    c.put("a", "1").await.expect("put a");
    c.put("b", "2").await.expect("put b");
    // Every refused transaction below would write some of these keys.
    let watched = ["a", "b", "fresh", "k0", "k128"];
    let before = follower_copies(&cluster, &watched).await;
    assert_eq!(before["fresh"], None);
    let va = before["a"].clone().expect("a").1;

    use compare::{Op, Target};
    use txn_op::Kind;
    let put = |key: &str, value: &str| raw_op(Kind::Put, key, value);
    let get = |key: &str| raw_op(Kind::Get, key, "");
    let del = |key: &str| raw_op(Kind::Delete, key, "");
    let value_is = |key: &str, value: &str| raw_compare(key, Target::Value, Op::Equal, value);
    let request = |compare: Vec<api::Compare>, success: Vec<api::TxnOp>, failure| api::TxnRequest {
        compare,
        success,
        failure,
    };
    let many_puts: Vec<api::TxnOp> = (0..129).map(|i| put(&format!("k{i}"), "v")).collect();
    let long_key = "k".repeat(64 * KIB + 1);
    let long_value = "v".repeat(3 * MIB + 1);
    let half_big = "h".repeat(2 * MIB + KIB);

    let refused: Vec<(&str, api::TxnRequest, Vec<&str>)> = vec![
        (
            "129 ops in the success branch",
            request(vec![], many_puts.clone(), vec![]),
            vec!["129 ops", "success", "128"],
        ),
        (
            "129 ops in the failure branch",
            request(vec![value_is("a", "1")], vec![put("fresh", "x")], many_puts),
            vec!["129 ops", "failure", "128"],
        ),
        (
            "129 compares",
            request(
                (0..129).map(|_| value_is("a", "1")).collect(),
                vec![put("fresh", "x")],
                vec![],
            ),
            vec!["129 compares", "128"],
        ),
        (
            "a key put twice in the success branch",
            request(
                vec![],
                vec![put("a", "x"), put("fresh", "y"), put("a", "z")],
                vec![],
            ),
            vec!["twice", "\"a\""],
        ),
        (
            "a key put and deleted in the success branch",
            request(vec![], vec![put("fresh", "x"), del("fresh")], vec![]),
            vec!["twice", "\"fresh\""],
        ),
        (
            "a key deleted twice in the success branch",
            request(vec![], vec![del("a"), get("a"), del("a")], vec![]),
            vec!["twice", "\"a\""],
        ),
        (
            "a key written twice in the failure branch, whose compares hold",
            request(
                vec![value_is("a", "1")],
                vec![put("fresh", "x")],
                vec![del("b"), put("b", "y")],
            ),
            vec!["twice", "failure", "\"b\""],
        ),
        (
            "EXISTS \"yes\"",
            request(
                vec![raw_compare("a", Target::Exists, Op::Equal, "yes")],
                vec![put("fresh", "x")],
                vec![],
            ),
            vec!["EXISTS", "\"true\" or \"false\""],
        ),
        (
            "EXISTS \"\"",
            request(
                vec![raw_compare("a", Target::Exists, Op::NotEqual, "")],
                vec![put("fresh", "x")],
                vec![],
            ),
            vec!["EXISTS", "\"true\" or \"false\""],
        ),
        (
            "EXISTS \"True\"",
            request(
                vec![raw_compare("a", Target::Exists, Op::Equal, "True")],
                vec![put("fresh", "x")],
                vec![],
            ),
            vec!["EXISTS", "\"true\" or \"false\""],
        ),
        (
            "EXISTS \"1\"",
            request(
                vec![raw_compare("a", Target::Exists, Op::Equal, "1")],
                vec![put("fresh", "x")],
                vec![],
            ),
            vec!["EXISTS", "\"true\" or \"false\""],
        ),
        (
            "an unknown compare target",
            request(
                vec![api::Compare {
                    target: 7,
                    ..value_is("a", "1")
                }],
                vec![put("fresh", "x")],
                vec![],
            ),
            vec!["unknown target"],
        ),
        (
            "an unknown compare op",
            request(
                vec![api::Compare {
                    op: 7,
                    ..value_is("a", "1")
                }],
                vec![put("fresh", "x")],
                vec![],
            ),
            vec!["unknown op"],
        ),
        (
            "an unknown op kind",
            request(
                vec![],
                vec![
                    put("fresh", "x"),
                    api::TxnOp {
                        kind: 9,
                        ..get("b")
                    },
                ],
                vec![],
            ),
            vec!["unknown kind"],
        ),
        (
            "an empty key in a compare",
            request(vec![value_is("", "1")], vec![put("fresh", "x")], vec![]),
            vec!["compare 1", "empty"],
        ),
        (
            "an empty key in a put",
            request(vec![], vec![put("fresh", "x"), put("", "y")], vec![]),
            vec!["success op 2", "empty"],
        ),
        (
            "an empty key in a get of the failure branch",
            request(vec![], vec![put("fresh", "x")], vec![get("")]),
            vec!["failure op 1", "empty"],
        ),
        (
            "a key over 64 KiB in a compare",
            request(
                vec![value_is(&long_key, "1")],
                vec![put("fresh", "x")],
                vec![],
            ),
            vec!["compare 1", "64 KiB"],
        ),
        (
            "a key over 64 KiB in a delete",
            request(vec![], vec![put("fresh", "x"), del(&long_key)], vec![]),
            vec!["success op 2", "64 KiB"],
        ),
        (
            "a key over 64 KiB in a get",
            request(vec![], vec![get(&long_key), put("fresh", "x")], vec![]),
            vec!["success op 1", "64 KiB"],
        ),
        (
            "a value over 3 MiB in a put",
            request(vec![], vec![put("fresh", &long_value)], vec![]),
            vec!["success op 1", "3 MiB"],
        ),
        (
            "a value over 3 MiB in the failure branch, whose compares hold",
            request(
                vec![value_is("a", "1")],
                vec![put("fresh", "x")],
                vec![put("b", &long_value)],
            ),
            vec!["failure op 1", "3 MiB"],
        ),
        (
            "a value over 3 MiB in a VALUE compare",
            request(
                vec![value_is("a", &long_value)],
                vec![put("fresh", "x")],
                vec![],
            ),
            vec!["compare 1", "3 MiB"],
        ),
        (
            "over 4 MiB of keys and values in one branch",
            request(
                vec![],
                vec![put("fresh", &half_big), put("b", &half_big)],
                vec![],
            ),
            vec!["4 MiB"],
        ),
        (
            "over 4 MiB of keys and values, counting the branch that would not run",
            request(
                vec![value_is("a", "1")],
                vec![put("fresh", &half_big)],
                vec![put("b", &half_big)],
            ),
            vec!["4 MiB"],
        ),
        (
            "over 4 MiB of keys and values, counting compares",
            request(
                vec![value_is("a", &half_big)],
                vec![put("fresh", &half_big)],
                vec![],
            ),
            vec!["4 MiB"],
        ),
    ];
    for bad in ["", "1", "abc", "1.2.3", "-1.2", "1.x", " 1.2", "1.2 "] {
        let answer = c
            .txn(Txn::new().if_version("a", bad).then_put("fresh", "x"))
            .await;
        assert_status(
            answer,
            Code::InvalidArgument,
            &["compare 1", "version", "<epoch>.<seq>"],
            &format!("version {bad:?}"),
        );
    }
    for (what, request, needles) in refused {
        assert_status(c.txn(request).await, Code::InvalidArgument, &needles, what);
        assert_eq!(
            follower_copies(&cluster, &watched).await,
            before,
            "after the refused {what}"
        );
    }
    assert_eq!(
        settled_version(&cluster.leader_addr(), "a").await,
        Some(("1".to_string(), va.clone()))
    );

    // The limits themselves are allowed: 128 ops in each branch, 128 compares, a key
    // read in the branch that writes it, and exactly 4 MiB of keys and values.
    let answer = c
        .txn(api::TxnRequest {
            compare: (0..128).map(|_| value_is("a", "1")).collect(),
            success: (0..127)
                .map(|i| get(&format!("k{i}")))
                .chain([put("fresh", "x")])
                .collect(),
            failure: (0..128).map(|i| get(&format!("k{i}"))).collect(),
        })
        .await
        .expect("128 compares and 128 ops per branch");
    assert!(answer.succeeded, "{answer:?}");
    assert_eq!(answer.results.len(), 127);
    assert_replicas(&cluster, "fresh", Some(("x", &answer.version))).await;

    let answer = c
        .txn(
            Txn::new()
                .then_get("b")
                .then_put("b", "b2")
                .else_put("b", "b3"),
        )
        .await
        .expect("a key read and written, once in each branch");
    assert!(answer.succeeded, "{answer:?}");
    assert_replicas(&cluster, "b", Some(("b2", &answer.version))).await;

    // Exactly 4 MiB: the longest key with the largest value, plus a compare whose
    // value fills the rest.
    let max_key = "K".repeat(64 * KIB);
    let max_value = "m".repeat(3 * MIB);
    let fill = |others: usize| "f".repeat(4 * MIB - others);
    let rest = fill(max_key.len() + max_value.len() + "c".len());
    let at_limit = api::TxnRequest {
        compare: vec![raw_compare("c", Target::Value, Op::NotEqual, &rest)],
        success: vec![put(&max_key, &max_value)],
        failure: vec![],
    };
    let answer = c
        .txn(at_limit.clone())
        .await
        .expect("a write txn of exactly 4 MiB");
    assert!(answer.succeeded, "{answer:?}");
    for addr in cluster.follower_addrs() {
        let held = settled_version(&addr, &max_key).await;
        assert!(
            held.as_ref()
                .is_some_and(|(v, ver)| *v == max_value && *ver == answer.version),
            "the 3 MiB value of the 64 KiB key on {addr}"
        );
    }
    // One byte more is refused.
    let mut over = at_limit.clone();
    over.compare[0].value.push('f');
    assert_status(
        c.txn(over).await,
        Code::InvalidArgument,
        &["4 MiB"],
        "4 MiB + 1 byte",
    );
    // A read-only one of exactly 4 MiB (one follower's snapshot) is allowed too.
    let rest = fill(max_key.len() + max_value.len() + "c".len() + max_key.len());
    let answer = c
        .txn(api::TxnRequest {
            compare: vec![
                value_is(&max_key, &max_value),
                raw_compare("c", Target::Value, Op::NotEqual, &rest),
            ],
            success: vec![get(&max_key)],
            failure: vec![],
        })
        .await
        .expect("a read-only txn of exactly 4 MiB");
    assert!(answer.succeeded, "{:?}", answer.version);
    assert!(answer.version.is_empty(), "{:?}", answer.version);
    assert!(answer.results.len() == 1 && answer.results[0].value == max_value);
}

// ---------------------------------------------------------------------------------------
// 6. Followers refuse transactions.
// ---------------------------------------------------------------------------------------

/// A follower refuses every `Txn` (writing, read-only, empty) with FAILED_PRECONDITION,
/// and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_refuses_every_transaction_with_failed_precondition() {
    let cluster = Cluster::start(2).await;
    cluster
        .client()
        .put("a", "1")
        .await
        .expect("put a through the leader");
    let before = follower_copies(&cluster, &["a", "b"]).await;
    for addr in cluster.follower_addrs() {
        let mut direct = support::client(&addr);
        for (what, txn) in [
            ("a write", Txn::new().then_put("b", "x")),
            ("a cas", Txn::new().if_value("a", "1").then_put("a", "2")),
            ("a read", Txn::new().then_get("a")),
            ("the empty txn", Txn::new()),
        ] {
            assert_status(
                direct.txn(txn).await,
                Code::FailedPrecondition,
                &["leader"],
                &format!("{what} on follower {addr}"),
            );
        }
    }
    assert_eq!(follower_copies(&cluster, &["a", "b"]).await, before);
}

// ---------------------------------------------------------------------------------------
// 7. A counter incremented by concurrent CAS loops.
// ---------------------------------------------------------------------------------------

/// The counter's value and version, read through the leader.
async fn read_counter(c: &Client, key: &str) -> (u64, String) {
    poll("the counter", POLL_TIMEOUT, || {
        let mut c = c.clone();
        async move {
            let (value, version) = c.get_versioned(key).await.map_err(|s| describe(&s))?;
            Ok((value.parse::<u64>().expect("a number"), version))
        }
    })
    .await
}

/// One client's CAS loop on the counter: `successes` increments, each a transaction
/// `if <counter's version or value> then put n+1 else get`. Returns the values its
/// successful swaps wrote, with their versions, and how many attempts failed.
async fn increment(
    addr: String,
    key: &'static str,
    by_version: bool,
    successes: usize,
) -> (Vec<(u64, String)>, usize) {
    let mut c = Client::new(&addr, Duration::from_secs(30)).expect("client");
    let mut current = read_counter(&c, key).await;
    let mut done = Vec::new();
    let mut failed = 0;
    while done.len() < successes {
        let (n, held) = current.clone();
        let compare = if by_version {
            Txn::new().if_version(key, &held)
        } else {
            Txn::new().if_value(key, &n.to_string())
        };
        let txn = compare.then_put(key, &(n + 1).to_string()).else_get(key);
        match c.txn(txn).await {
            Ok(answer) if answer.succeeded => {
                assert!(answer.results.is_empty(), "{answer:?}");
                version(&answer.version, "a swap's version");
                done.push((n + 1, answer.version.clone()));
                current = (n + 1, answer.version);
            }
            Ok(answer) => {
                failed += 1;
                assert!(answer.version.is_empty(), "nothing written: {answer:?}");
                let [now] = answer.results.as_slice() else {
                    panic!("one GET result: {answer:?}");
                };
                assert!(now.found, "{answer:?}");
                let value = now.value.parse::<u64>().expect("a number");
                assert!(
                    value >= n && (value, now.version.as_str()) != (n, held.as_str()),
                    "the compare failed, so the counter moved on from {n}@{held}: {answer:?}"
                );
                current = (value, now.version.clone());
            }
            Err(s) if matches!(s.code(), Code::Aborted | Code::Unavailable) => {
                failed += 1;
                current = read_counter(&c, key).await;
            }
            Err(s) => panic!("a CAS: unexpected {}", describe(&s)),
        }
    }
    (done, failed)
}

/// Concurrent clients incrementing one counter with CAS loops (half comparing its
/// version, half its value) lose no increment and count none twice: it ends at exactly
/// the number of successful swaps, each of which wrote a different number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_incremented_by_concurrent_cas_loops_counts_every_successful_swap_once() {
    const CLIENTS: usize = 8;
    const EACH: usize = 25;
    const KEY: &str = "counter";
    let cluster = Cluster::start(3).await;
    cluster.client().put(KEY, "0").await.expect("put counter=0");
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|i| tokio::spawn(increment(cluster.leader_addr(), KEY, i % 2 == 0, EACH)))
        .collect();
    let results = tokio::time::timeout(Duration::from_secs(120), futures::future::join_all(tasks))
        .await
        .expect("the CAS loops finished in time");
    let mut written = BTreeMap::new();
    let mut failed = 0;
    for result in results {
        let (done, f) = result.expect("a CAS loop");
        failed += f;
        for (n, held) in done {
            assert!(
                written.insert(n, held).is_none(),
                "two successful swaps wrote {n}: a lost update"
            );
        }
    }
    let total = (CLIENTS * EACH) as u64;
    eprintln!("{total} swaps, {failed} failed attempts");
    assert_eq!(
        written.keys().copied().collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>(),
        "the successful swaps wrote 1..={total}"
    );
    let versions: Vec<TxId> = written.values().map(|v| version(v, "swap")).collect();
    assert!(
        versions.windows(2).all(|w| w[0] < w[1]),
        "each swap's version is greater than the one before it"
    );
    let last = written[&total].clone();
    assert_replicas(&cluster, KEY, Some((&total.to_string(), &last))).await;
}

// ---------------------------------------------------------------------------------------
// 8. The shell's one-shot commands.
// ---------------------------------------------------------------------------------------

/// Runs `tpc client --leader LEADER ARGS...`.
fn tpc_client(leader: &str, args: &[&str]) -> Output {
    std::process::Command::new(support::tpc_binary())
        .args(["client", "--leader", leader])
        .args(args)
        .output()
        .expect("run tpc client")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts the exit code of a `tpc client` run.
fn assert_exit(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: stdout {:?}, stderr {:?}",
        stdout(out),
        stderr(out)
    );
}

/// `tpc client cas|mput|mdel|txn|get -v`: what they print and their exit codes (0 done,
/// 1 not swapped or not found, 2 a usage error, with the usage on stderr).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_cas_mput_mdel_and_txn_commands_print_and_exit_as_documented() {
    let cluster = Cluster::start(2).await;
    let leader = cluster.leader_addr();
    let run = |args: &[&str]| tpc_client(&leader, args);

    let out = run(&["mput", "a", "1", "b", "2", "my key", "a value"]);
    assert_exit(&out, 0, "mput");
    let (_, v1) = settled_version(&leader, "a").await.expect("a");
    assert_replicas(&cluster, "b", Some(("2", &v1))).await;
    assert_replicas(&cluster, "my key", Some(("a value", &v1))).await;

    let out = run(&["get", "-v", "a"]);
    assert_exit(&out, 0, "get -v");
    assert_eq!(stdout(&out), format!("1\nversion {v1}\n"));

    // cas: 0 when swapped; 1 when not, naming the current value and version.
    let out = run(&["cas", "a", "1", "5"]);
    assert_exit(&out, 0, "cas 1 -> 5");
    let (_, v5) = settled_version(&leader, "a").await.expect("a");
    assert_replicas(&cluster, "a", Some(("5", &v5))).await;
    let out = run(&["cas", "a", "1", "6"]);
    assert_exit(&out, 1, "cas 1 -> 6");
    let err = stderr(&out);
    assert!(
        err.contains("not swapped") && err.contains("\"5\"") && err.contains(&v5),
        "{err:?}"
    );
    let out = run(&["cas", "absent", "x", "y"]);
    assert_exit(&out, 1, "cas on an absent key");
    assert!(stderr(&out).contains("absent"), "{out:?}");
    assert_replicas(&cluster, "a", Some(("5", &v5))).await;
    assert_replicas(&cluster, "absent", None).await;

    // txn: the then branch.
    let out = run(&[
        "txn", "if", "a", "=", "5", "then", "put", "a", "2", "else", "get", "a",
    ]);
    assert_exit(&out, 0, "txn that succeeds");
    let (_, v2) = settled_version(&leader, "a").await.expect("a");
    assert_eq!(
        stdout(&out),
        format!("succeeded: the then branch ran\nversion {v2}\n")
    );
    assert_replicas(&cluster, "a", Some(("2", &v2))).await;
    // The else branch: what its GET read, and no version (nothing written).
    let out = run(&[
        "txn", "if", "a", "=", "1", "then", "put", "a", "2", "else", "get", "a",
    ]);
    assert_exit(&out, 0, "txn whose else branch runs");
    assert_eq!(
        stdout(&out),
        format!("compares failed: the else branch ran\nget \"a\": \"2\" (version {v2})\n")
    );
    assert_replicas(&cluster, "a", Some(("2", &v2))).await;
    // Several conditions and ops, a version compare, a missing key's GET.
    let out = run(&[
        "txn", "if", "a", "version", "=", &v2, "and", "zz", "missing", "then", "get", "zz,", "put",
        "c", "3,", "del", "b",
    ]);
    assert_exit(&out, 0, "txn with a version compare");
    let (_, v3) = settled_version(&leader, "c").await.expect("c");
    assert_eq!(
        stdout(&out),
        format!("succeeded: the then branch ran\nget \"zz\": not found\nversion {v3}\n")
    );
    assert_replicas(&cluster, "b", None).await;

    // mdel, then get of a deleted key: 1, NOT_FOUND.
    let out = run(&["mdel", "a", "c", "never"]);
    assert_exit(&out, 0, "mdel");
    for key in ["a", "c"] {
        assert_replicas(&cluster, key, None).await;
        let out = run(&["get", key]);
        assert_exit(&out, 1, "get of a deleted key");
        assert!(stderr(&out).contains("NOT_FOUND"), "{out:?}");
    }

    // Usage errors: 2, the usage on stderr, nothing sent.
    for (args, needle) in [
        (
            vec!["txn", "if", "a", "~", "1", "then", "get", "a"],
            "usage: txn",
        ),
        (
            vec!["txn", "if", "my key", "exists", "put", "x", "1"],
            "usage: txn",
        ),
        (vec!["txn", "then", "put", "x"], "usage: txn"),
        (vec!["mput", "x", "1", "y"], "usage: mput"),
        (vec!["mput", "x"], "Usage"),
        (vec!["mdel"], "Usage"),
        (vec!["cas", "x", "1"], "Usage"),
    ] {
        let out = run(&args);
        assert_exit(&out, 2, &format!("{args:?}"));
        assert!(
            stderr(&out).contains(needle),
            "{args:?}: stderr should contain {needle:?}: {:?}",
            stderr(&out)
        );
        assert!(stdout(&out).is_empty(), "{args:?}: {out:?}");
    }
    assert_replicas(&cluster, "x", None).await;
    assert_replicas(&cluster, "my key", Some(("a value", &v1))).await;
}

// ---------------------------------------------------------------------------------------
// 9. kill -9 mid-transaction: all or nothing on every replica.
// ---------------------------------------------------------------------------------------

/// The keys the workload writes.
const WORKLOAD_KEYS: [&str; 6] = ["w0", "w1", "w2", "w3", "w4", "w5"];

/// One transaction a workload client sent: the keys it wrote (one value, unique to it,
/// on each) and what the leader answered.
#[derive(Clone, Debug)]
struct Attempt {
    keys: Vec<String>,
    answer: Result<TxId, Code>,
    /// When the answer arrived.
    answered: Instant,
}

/// Workload progress counters.
#[derive(Default)]
struct Progress {
    acked: AtomicUsize,
    failed: AtomicUsize,
}

/// Two to four distinct workload keys, chosen by `seed`.
fn pick_keys(seed: u64) -> Vec<String> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let count = 2 + (next() % 3) as usize;
    let mut keys: Vec<&str> = WORKLOAD_KEYS.to_vec();
    for i in (1..keys.len()).rev() {
        keys.swap(i, (next() % (i as u64 + 1)) as usize);
    }
    keys[..count].iter().map(|k| k.to_string()).collect()
}

/// Starts `clients` loops, each writing one unique value (`txn-<phase>-<client>-<n>`)
/// to two to four keys in one transaction, until `stop`: with a compare that holds, in
/// the success branch, or (every third) with one that fails, in the failure branch; the
/// other branch writes another key.
fn start_workload(
    leader: &str,
    phase: u64,
    clients: usize,
    stop: &Arc<AtomicBool>,
    progress: &Arc<Progress>,
) -> Vec<tokio::task::JoinHandle<Vec<(String, Attempt)>>> {
    (0..clients)
        .map(|client_no| {
            let leader = leader.to_string();
            let (stop, progress) = (stop.clone(), progress.clone());
            tokio::spawn(async move {
                let mut c = support::client(&leader);
                let mut log = Vec::new();
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let value = format!("txn-{phase}-{client_no}-{n}");
                    let keys = pick_keys((phase << 40) + (n << 8) + client_no as u64);
                    // A key the transaction must not write: the other branch's.
                    let other = WORKLOAD_KEYS
                        .iter()
                        .find(|k| !keys.iter().any(|key| key == *k))
                        .expect("at most four of six keys");
                    // Every third transaction's compare fails: its failure branch
                    // writes the keys. The other branch writes `other`.
                    let fails = n % 3 == 2;
                    let writes = |t: Txn, then: bool| {
                        if then {
                            keys.iter()
                                .fold(t, |t, k| t.then_put(k, &value))
                                .else_put(other, &value)
                        } else {
                            keys.iter()
                                .fold(t, |t, k| t.else_put(k, &value))
                                .then_put(other, &value)
                        }
                    };
                    let txn = if fails {
                        writes(Txn::new().if_value(&keys[0], "never"), false)
                    } else {
                        writes(Txn::new().if_value_not(&keys[0], "never"), true)
                    };
                    let answer = match c.txn(txn).await {
                        Ok(answer) => {
                            assert_eq!(answer.succeeded, !fails, "{value}: {answer:?}");
                            progress.acked.fetch_add(1, Ordering::SeqCst);
                            Ok(version(&answer.version, "an acknowledged txn"))
                        }
                        Err(s) => {
                            progress.failed.fetch_add(1, Ordering::SeqCst);
                            Err(s.code())
                        }
                    };
                    let failed = answer.is_err();
                    log.push((
                        value,
                        Attempt {
                            keys,
                            answer,
                            answered: Instant::now(),
                        },
                    ));
                    n += 1;
                    if failed {
                        // A node is down: back off instead of spinning.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                log
            })
        })
        .collect()
}

/// Stops a workload and collects what it sent.
async fn stop_workload(
    stop: &Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<(String, Attempt)>>>,
    attempts: &mut BTreeMap<String, Attempt>,
) {
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        for (value, attempt) in task.await.expect("a workload client") {
            attempts.insert(value, attempt);
        }
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

/// A key's state with its version parsed.
type Parsed = Option<(String, TxId)>;

/// Polls until every follower answers every workload key (no UNAVAILABLE left) and all
/// of them answer the same; returns that state.
async fn settled_agreement(cluster: &Cluster) -> BTreeMap<String, Parsed> {
    let followers: Vec<Client> = cluster
        .follower_addrs()
        .iter()
        .map(|a| support::client(a))
        .collect();
    poll(
        "every follower to answer every key, all alike",
        Duration::from_secs(30),
        || {
            let followers = followers.clone();
            async move {
                let mut copies = Vec::new();
                for (i, mut c) in followers.into_iter().enumerate() {
                    let mut copy = BTreeMap::new();
                    for key in WORKLOAD_KEYS {
                        let held = match c.get_versioned(key).await {
                            Ok((value, v)) => Some((value, version(&v, "a key's version"))),
                            Err(s) if s.code() == Code::NotFound => None,
                            Err(s) => return Err(format!("follower {i}, {key}: {}", describe(&s))),
                        };
                        copy.insert(key.to_string(), held);
                    }
                    copies.push(copy);
                }
                if copies.windows(2).all(|w| w[0] == w[1]) {
                    Ok(copies.swap_remove(0))
                } else {
                    Err(format!("followers disagree: {copies:#?}"))
                }
            }
        },
    )
    .await
}

/// The all-or-nothing check of a state (settled, or one snapshot) against every
/// transaction attempted; returns every violation. A transaction T whose value a key
/// holds at version V wrote all its keys at V: each of them holds V (and T's value) or
/// a later version; T wrote only its keys (of the branch that ran), at the version it
/// was acknowledged with, if it was; one the leader refused (`refusals_are_final`:
/// ABORTED or UNAVAILABLE from a live leader) is nowhere.
fn torn_transactions(
    state: &BTreeMap<String, Parsed>,
    attempts: &BTreeMap<String, Attempt>,
    refusals_are_final: bool,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (key, held) in state {
        let Some((value, at)) = held else {
            continue;
        };
        let Some(attempt) = attempts.get(value) else {
            problems.push(format!("{key} holds {value:?}, which no transaction wrote"));
            continue;
        };
        if !attempt.keys.contains(key) {
            problems.push(format!(
                "{key} holds {value:?}, whose transaction did not write {key} (in the branch \
                 that should run)"
            ));
        }
        match attempt.answer {
            Ok(acked) if acked != *at => problems.push(format!(
                "{key} holds {value:?} at {at}, but the transaction was acknowledged as {acked}"
            )),
            Err(code @ (Code::Aborted | Code::Unavailable)) if refusals_are_final => {
                problems.push(format!(
                    "{key} holds {value:?} at {at}, whose transaction the leader answered {code:?}"
                ))
            }
            _ => {}
        }
        for other in &attempt.keys {
            match &state[other] {
                None => problems.push(format!(
                    "{key} holds {value:?} at {at}, but {other}, which the same transaction \
                     wrote, is absent"
                )),
                Some((other_value, other_at)) if other_at < at => problems.push(format!(
                    "{key} holds {value:?} at {at}, but {other}, which the same transaction \
                     wrote, holds the older {other_value:?} at {other_at}"
                )),
                Some((other_value, other_at)) if other_at == at && other_value != value => problems
                    .push(format!(
                        "{key} holds {value:?} at {at}, but {other} holds {other_value:?} at \
                         the same version"
                    )),
                Some(_) => {}
            }
        }
    }
    problems
}

/// Every acknowledged transaction's keys hold its version (and value) or a later one.
fn lost_acknowledged(
    state: &BTreeMap<String, Parsed>,
    attempts: &BTreeMap<String, Attempt>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (value, attempt) in attempts {
        let Ok(acked) = attempt.answer else {
            continue;
        };
        for key in &attempt.keys {
            match &state[key] {
                Some((held, at)) if *at > acked || (*at == acked && held == value) => {}
                other => problems.push(format!(
                    "acknowledged {value:?} at {acked} is lost on {key}, which holds {other:?}"
                )),
            }
        }
    }
    problems
}

/// Both checks, for a settled state.
fn all_or_nothing_violations(
    state: &BTreeMap<String, Parsed>,
    attempts: &BTreeMap<String, Attempt>,
    refusals_are_final: bool,
) -> Vec<String> {
    let mut problems = torn_transactions(state, attempts, refusals_are_final);
    problems.extend(lost_acknowledged(state, attempts));
    problems
}

/// What a read-only transaction of every workload key answered, and when it was sent.
struct Snapshot {
    sent: Instant,
    state: BTreeMap<String, Parsed>,
}

/// Reads every workload key in one read-only transaction (one follower's snapshot),
/// again and again until `stop`; returns the snapshots it got.
fn start_snapshot_reader(
    leader: &str,
    stop: &Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Snapshot>> {
    let leader = leader.to_string();
    let stop = stop.clone();
    tokio::spawn(async move {
        let mut c = support::client(&leader);
        let txn = WORKLOAD_KEYS.iter().fold(Txn::new(), |t, k| t.then_get(k));
        let mut snapshots = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let sent = Instant::now();
            match c.txn(txn.clone()).await {
                Ok(answer) => {
                    assert!(answer.succeeded && answer.version.is_empty(), "{answer:?}");
                    let keys: Vec<&str> = answer.results.iter().map(|r| r.key.as_str()).collect();
                    assert_eq!(keys, WORKLOAD_KEYS, "one result per GET, in order");
                    let state = answer
                        .results
                        .into_iter()
                        .map(|r| {
                            let held = r
                                .found
                                .then(|| (r.value, version(&r.version, "a GET's version")));
                            (r.key, held)
                        })
                        .collect();
                    snapshots.push(Snapshot { sent, state });
                }
                // A node is down: back off instead of spinning.
                // A node is down, or (see the ignored test of read-only transactions
                // under writes) it starved: try again.
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
        snapshots
    })
}

/// Which node dies.
#[derive(Clone, Copy, Debug)]
enum Victim {
    Leader,
    Follower(usize),
}

/// Settles the cluster (every follower answers every workload key, all alike) and
/// checks that state against every transaction sent so far, and that the leader
/// answers the same.
async fn check_all_or_nothing(
    cluster: &Cluster,
    attempts: &BTreeMap<String, Attempt>,
    snapshots: &[Snapshot],
    refusals_are_final: bool,
    what: &str,
) {
    // Each snapshot is all or nothing too, and (linearizable) shows every transaction
    // acknowledged before it was sent.
    for Snapshot { sent, state } in snapshots {
        let mut problems = torn_transactions(state, attempts, refusals_are_final);
        let before: BTreeMap<String, Attempt> = attempts
            .iter()
            .filter(|(_, a)| a.answered < *sent)
            .map(|(v, a)| (v.clone(), a.clone()))
            .collect();
        problems.extend(lost_acknowledged(state, &before));
        assert!(
            problems.is_empty(),
            "{what}: a read-only transaction saw {problems:#?}\nsnapshot: {state:#?}"
        );
    }
    let state = settled_agreement(cluster).await;
    let acked = attempts.values().filter(|a| a.answer.is_ok()).count();
    let failed: BTreeSet<String> = attempts
        .values()
        .filter_map(|a| a.answer.err().map(|c| format!("{c:?}")))
        .collect();
    eprintln!(
        "{what}: {} transactions, {acked} acknowledged, failures {failed:?}; {} snapshots",
        attempts.len(),
        snapshots.len()
    );
    let problems = all_or_nothing_violations(&state, attempts, refusals_are_final);
    assert!(
        problems.is_empty(),
        "{what}: {problems:#?}\nstate: {state:#?}"
    );
    let mut c = cluster.client();
    for (key, held) in &state {
        let through_leader = match c.get_versioned(key).await {
            Ok((value, v)) => Some((value, version(&v, "leader's version"))),
            Err(s) if s.code() == Code::NotFound => None,
            Err(s) => panic!("{what}: Get({key}) through the leader: {}", describe(&s)),
        };
        assert_eq!(&through_leader, held, "{what}: {key} through the leader");
    }
}

/// Runs the multi-key workload and `kill -9`s `victim` while transactions are in
/// flight, restarts it and checks, once the cluster has settled, that every follower
/// holds the same and every transaction is all or nothing; several rounds, then a last
/// workload on the restarted cluster.
async fn kill_mid_transaction(victim: Victim) {
    const CLIENTS: usize = 4;
    const ROUNDS: u64 = 3;
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader_addr();
    let mut attempts = BTreeMap::new();
    let mut snapshots = Vec::new();
    // Only while the leader lives is its every answer its own (a killed leader's
    // clients see their connection fail, as UNAVAILABLE too).
    let refusals_are_final = matches!(victim, Victim::Follower(_));

    for round in 0..ROUNDS {
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(Progress::default());
        let tasks = start_workload(&leader, round, CLIENTS, &stop, &progress);
        let reader = start_snapshot_reader(&leader, &stop);
        wait_count("acknowledged transactions", &progress.acked, 25).await;
        match victim {
            Victim::Leader => cluster.kill_leader(),
            Victim::Follower(i) => {
                cluster.kill_follower(i);
                // Transactions go on (and fail) while it is down.
                let failed = progress.failed.load(Ordering::SeqCst);
                wait_count("refused transactions", &progress.failed, failed + CLIENTS).await;
            }
        }
        stop_workload(&stop, tasks, &mut attempts).await;
        snapshots.extend(reader.await.expect("the snapshot reader"));
        match victim {
            Victim::Leader => cluster.start_leader(&[]),
            Victim::Follower(i) => {
                cluster.start_follower(i, &[]);
                wait_follower_ready(&cluster.follower_addr(i)).await;
            }
        }
        wait_leader_ready(&leader).await;
        let what = format!("{victim:?} killed, round {round}");
        check_all_or_nothing(&cluster, &attempts, &snapshots, refusals_are_final, &what).await;
    }

    // The restarted cluster takes transactions on every key again.
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(Progress::default());
    let tasks = start_workload(&leader, ROUNDS, CLIENTS, &stop, &progress);
    let reader = start_snapshot_reader(&leader, &stop);
    wait_count(
        "acknowledged transactions after the restarts",
        &progress.acked,
        8,
    )
    .await;
    stop_workload(&stop, tasks, &mut attempts).await;
    snapshots.extend(reader.await.expect("the snapshot reader"));
    let what = format!("{victim:?}, after the restarts");
    check_all_or_nothing(&cluster, &attempts, &snapshots, refusals_are_final, &what).await;
}

/// The check itself catches a torn transaction, a lost acknowledged one and a refused
/// one that was applied (so the tests below can fail).
#[test]
fn the_all_or_nothing_check_catches_torn_lost_and_refused_transactions() {
    let v = |s: &str| version(s, "test");
    let attempt = |keys: &[&str], answer: Result<TxId, Code>| Attempt {
        keys: keys.iter().map(|k| k.to_string()).collect(),
        answer,
        answered: Instant::now(),
    };
    let attempts: BTreeMap<String, Attempt> = [
        ("t1", attempt(&["w0", "w1"], Ok(v("1.1")))),
        ("t2", attempt(&["w1", "w2"], Err(Code::Unknown))),
        ("t3", attempt(&["w0", "w2"], Err(Code::Aborted))),
    ]
    .into_iter()
    .map(|(k, a)| (k.to_string(), a))
    .collect();
    let state = |cells: &[(&str, Option<(&str, &str)>)]| -> BTreeMap<String, Parsed> {
        let mut state: BTreeMap<String, Parsed> = WORKLOAD_KEYS
            .iter()
            .map(|k| (k.to_string(), None))
            .collect();
        for (key, held) in cells {
            state.insert(
                key.to_string(),
                held.map(|(val, at)| (val.to_string(), v(at))),
            );
        }
        state
    };
    let good = state(&[
        ("w0", Some(("t1", "1.1"))),
        ("w1", Some(("t2", "1.2"))),
        ("w2", Some(("t2", "1.2"))),
    ]);
    assert_eq!(
        all_or_nothing_violations(&good, &attempts, true),
        Vec::<String>::new()
    );
    let nothing_of_t2 = state(&[("w0", Some(("t1", "1.1"))), ("w1", Some(("t1", "1.1")))]);
    assert!(all_or_nothing_violations(&nothing_of_t2, &attempts, true).is_empty());
    let t3_applied = state(&[
        ("w0", Some(("t3", "1.3"))),
        ("w1", Some(("t1", "1.1"))),
        ("w2", Some(("t3", "1.3"))),
    ]);
    assert!(
        all_or_nothing_violations(&t3_applied, &attempts, false).is_empty(),
        "a refusal seen by a client whose leader died may be a lost answer"
    );
    // (what, state, refusals are final, caught as torn (else as lost))
    let bad = [
        (
            "t2 torn",
            state(&[("w0", Some(("t1", "1.1"))), ("w1", Some(("t2", "1.2")))]),
            true,
            true,
        ),
        (
            "t1 lost",
            state(&[("w1", Some(("t2", "1.2"))), ("w2", Some(("t2", "1.2")))]),
            true,
            false,
        ),
        (
            "t1 at another version",
            state(&[("w0", Some(("t1", "1.3"))), ("w1", Some(("t1", "1.3")))]),
            true,
            true,
        ),
        (
            "t1 on a key of its other branch",
            state(&[
                ("w0", Some(("t1", "1.1"))),
                ("w1", Some(("t1", "1.1"))),
                ("w4", Some(("t1", "1.1"))),
            ]),
            false,
            true,
        ),
        ("t3 applied though refused", t3_applied, true, true),
        (
            "same version, another value",
            state(&[("w0", Some(("t1", "1.1"))), ("w1", Some(("t2", "1.1")))]),
            false,
            true,
        ),
        (
            "an unknown value",
            state(&[
                ("w0", Some(("t1", "1.1"))),
                ("w1", Some(("t1", "1.1"))),
                ("w3", Some(("zz", "1.1"))),
            ]),
            false,
            true,
        ),
    ];
    for (what, state, final_refusals, torn) in bad {
        let caught = if torn {
            torn_transactions(&state, &attempts, final_refusals)
        } else {
            lost_acknowledged(&state, &attempts)
        };
        assert!(!caught.is_empty(), "{what} not caught");
    }
}

/// `kill -9` of the leader while multi-key transactions are in flight: once restarted
/// and settled, every follower holds the same, and every transaction is all or nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_leader_mid_transaction_leaves_every_transaction_all_or_nothing() {
    kill_mid_transaction(Victim::Leader).await;
}

/// `kill -9` of a follower while multi-key transactions are in flight: the same, and
/// every transaction the leader refused (ABORTED, UNAVAILABLE) is applied nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_follower_mid_transaction_leaves_every_transaction_all_or_nothing() {
    kill_mid_transaction(Victim::Follower(1)).await;
}

// ---------------------------------------------------------------------------------------
// 10. Crashes at chosen steps of a transaction's 2PC (`TPC_CRASH_AT`).
// ---------------------------------------------------------------------------------------

/// Waits until the node that was armed with a crash point has died by it.
async fn wait_crashed(node: &mut support::Node) {
    let status = node.wait_exit(POLL_TIMEOUT).await;
    assert!(
        !status.success(),
        "{} exited by its crash point: {status:?}",
        node.name
    );
}

/// Every follower and the leader hold `expected` for each key, every present key at the
/// same version; returns that version.
async fn assert_all_at_one_version(
    cluster: &Cluster,
    expected: &[(&str, Option<&str>)],
    what: &str,
) -> String {
    let mut versions = BTreeSet::new();
    for (key, value) in expected {
        let held = settled_version(&cluster.leader_addr(), key).await;
        assert_eq!(
            held.as_ref().map(|(v, _)| v.as_str()),
            *value,
            "{what}: Get({key:?}) through the leader"
        );
        if let Some((value, at)) = &held {
            versions.insert(at.clone());
            assert_replicas(cluster, key, Some((value, at))).await;
        } else {
            assert_replicas(cluster, key, None).await;
        }
    }
    assert_eq!(
        versions.len(),
        1,
        "{what}: one transaction's version: {versions:?}"
    );
    versions.into_iter().next().expect("one version")
}

/// A leader that dies once every participant has voted (before it answers or sends a
/// decision) decides the transaction when restarted: COMMIT, with the branch its
/// participants' votes chose, applied on every follower with the transaction's own
/// (older epoch's) version; for a transaction whose compares failed, the failure branch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_whose_leader_died_after_the_last_vote_commits_the_branch_that_was_chosen() {
    let mut cluster = Cluster::new(3);
    for i in 0..3 {
        cluster.start_follower(i, &[]);
    }
    for addr in cluster.follower_addrs() {
        wait_follower_ready(&addr).await;
    }
    let crash = [(support::CRASH_AT, "leader-after-last-vote")];
    cluster.start_leader(&crash);
    wait_leader_ready(&cluster.leader_addr()).await;

    // The compares fail (`a` is absent): the failure branch is chosen.
    let answer = cluster
        .client()
        .txn(
            Txn::new()
                .if_value("a", "1")
                .then_put("a", "then-a")
                .then_put("c", "then-c")
                .else_put("a", "else-a")
                .else_put("b", "else-b")
                .else_delete("c"),
        )
        .await;
    assert!(
        answer.is_err(),
        "the leader died before answering: {answer:?}"
    );
    wait_crashed(cluster.leader.as_mut().expect("leader")).await;
    cluster.start_leader(&[]);
    wait_leader_ready(&cluster.leader_addr()).await;
    let failure = assert_all_at_one_version(
        &cluster,
        &[("a", Some("else-a")), ("b", Some("else-b"))],
        "the failure branch",
    )
    .await;
    assert_replicas(&cluster, "c", None).await;

    // Again with compares that hold: the success branch.
    cluster.kill_leader();
    cluster.start_leader(&crash);
    wait_leader_ready(&cluster.leader_addr()).await;
    let answer = cluster
        .client()
        .txn(
            Txn::new()
                .if_value("a", "else-a")
                .if_version("b", &failure)
                .then_put("a", "A")
                .then_put("c", "C")
                .then_delete("b")
                .else_put("a", "never"),
        )
        .await;
    assert!(
        answer.is_err(),
        "the leader died before answering: {answer:?}"
    );
    wait_crashed(cluster.leader.as_mut().expect("leader")).await;
    cluster.start_leader(&[]);
    wait_leader_ready(&cluster.leader_addr()).await;
    let success = assert_all_at_one_version(
        &cluster,
        &[("a", Some("A")), ("c", Some("C"))],
        "the success branch",
    )
    .await;
    assert_replicas(&cluster, "b", None).await;

    // Both were decided by a later leader: their versions are their own, older than
    // the current epoch's transactions.
    let (failure, success) = (version(&failure, "failure"), version(&success, "success"));
    assert!(success > failure);
    let answer = cluster
        .client()
        .txn(Txn::new().then_put("d", "D"))
        .await
        .expect("a txn after the recoveries");
    let now = version(&answer.version, "now");
    assert!(
        now.epoch > success.epoch,
        "{now} is of a later epoch than {success}"
    );
}

/// A follower that dies when the decision arrives (it voted; the decision is lost with
/// it) keeps the transaction prepared; restarted, it gets the decision again and applies
/// the branch that ran (here the failure branch), with the transaction's version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_died_before_the_decision_applies_the_branch_that_ran_once_restarted() {
    let mut cluster = Cluster::new(3);
    cluster.start_follower(0, &[(support::CRASH_AT, "follower-before-decision")]);
    for i in 1..3 {
        cluster.start_follower(i, &[]);
    }
    for addr in cluster.follower_addrs() {
        wait_follower_ready(&addr).await;
    }
    cluster.start_leader(&[]);
    wait_leader_ready(&cluster.leader_addr()).await;

    let answer = cluster
        .client()
        .txn(
            Txn::new()
                .if_exists("a")
                .then_put("a", "then-a")
                .then_put("c", "then-c")
                .else_put("a", "else-a")
                .else_put("b", "else-b")
                .else_get("a"),
        )
        .await
        .expect("every participant voted: the answer is the commit");
    assert!(!answer.succeeded, "{answer:?}");
    assert_eq!(answer.results, vec![not_found("a")]);
    let at = answer.version.clone();
    version(&at, "the transaction's version");
    wait_crashed(cluster.follower(0)).await;

    // The others applied it; the leader answers it.
    for addr in &cluster.follower_addrs()[1..] {
        assert_eq!(
            settled_version(addr, "a").await,
            Some(("else-a".into(), at.clone()))
        );
        assert_eq!(
            settled_version(addr, "b").await,
            Some(("else-b".into(), at.clone()))
        );
        assert_eq!(settled_version(addr, "c").await, None);
    }
    cluster.start_follower(0, &[]);
    wait_follower_ready(&cluster.follower_addr(0)).await;
    assert_replicas(&cluster, "a", Some(("else-a", &at))).await;
    assert_replicas(&cluster, "b", Some(("else-b", &at))).await;
    assert_replicas(&cluster, "c", None).await;
}

/// A follower that dies with its COMMIT vote durable but not sent: the leader misses a
/// vote and aborts (ABORTED or UNAVAILABLE); once the follower is back, the transaction
/// is applied nowhere and its keys are free for the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_whose_vote_died_with_a_follower_is_applied_nowhere() {
    let mut cluster = Cluster::new(3);
    cluster.start_follower(0, &[(support::CRASH_AT, "follower-after-vote-journaled")]);
    for i in 1..3 {
        cluster.start_follower(i, &[]);
    }
    for addr in cluster.follower_addrs() {
        wait_follower_ready(&addr).await;
    }
    cluster.start_leader(&[]);
    wait_leader_ready(&cluster.leader_addr()).await;

    let answer = cluster
        .client()
        .txn(
            Txn::new()
                .if_missing("a")
                .then_put("a", "1")
                .then_put("b", "2")
                .then_put("c", "3"),
        )
        .await;
    match &answer {
        Err(s) if matches!(s.code(), Code::Aborted | Code::Unavailable) => {}
        other => panic!("a missing vote aborts the transaction: {other:?}"),
    }
    wait_crashed(cluster.follower(0)).await;
    for addr in &cluster.follower_addrs()[1..] {
        for key in ["a", "b", "c"] {
            assert_eq!(settled_version(addr, key).await, None, "{key} on {addr}");
        }
    }
    cluster.start_follower(0, &[]);
    wait_follower_ready(&cluster.follower_addr(0)).await;
    for key in ["a", "b", "c"] {
        assert_replicas(&cluster, key, None).await;
    }
    let answer = cluster
        .client()
        .txn(
            Txn::new()
                .if_missing("a")
                .then_put("a", "again")
                .then_put("b", "again"),
        )
        .await
        .expect("the keys are free again");
    assert!(answer.succeeded, "{answer:?}");
    assert_replicas(&cluster, "a", Some(("again", &answer.version))).await;
    assert_replicas(&cluster, "b", Some(("again", &answer.version))).await;
}
