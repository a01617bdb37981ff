//! Crashes at chosen steps of a transaction's 2PC (`TPC_CRASH_AT`): the branch chosen
//! before the crash is the one applied, on every replica, after the restart.

use super::*;

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
    let mut cluster = first_follower_crashing_at("follower-before-decision").await;

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
    let mut cluster = first_follower_crashing_at("follower-after-vote-journaled").await;

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

/// A cluster of three followers, the first of which dies at crash point `point`.
async fn first_follower_crashing_at(point: &str) -> Cluster {
    let mut cluster = Cluster::new(3);
    cluster.start_follower(0, &[(support::CRASH_AT, point)]);
    for i in 1..3 {
        cluster.start_follower(i, &[]);
    }
    for addr in cluster.follower_addrs() {
        wait_follower_ready(&addr).await;
    }
    cluster.start_leader(&[]);
    wait_leader_ready(&cluster.leader_addr()).await;
    cluster
}
