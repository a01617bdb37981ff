//! Compare-and-swap: `Client::cas` and its raw transaction, and a counter incremented
//! by concurrent CAS loops.

use super::*;

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
