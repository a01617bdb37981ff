//! A multi-key transaction's version is every written key's version, on every
//! replica, across restarts.

use super::*;

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
