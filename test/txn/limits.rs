//! §6's limits are refused with INVALID_ARGUMENT naming the rule, and followers refuse
//! every transaction.

use super::*;

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
