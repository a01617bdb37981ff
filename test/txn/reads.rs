//! GETs inside a transaction read the state from before it; a read-only transaction
//! is answered under writes to its keys as `Get` is.

use super::*;

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
