//! Compares (VALUE, VERSION, EXISTS, on present and absent keys) choose the branch,
//! and only that branch is applied on every follower.

use super::*;

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
