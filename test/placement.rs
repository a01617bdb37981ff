//! End-to-end tests of placement (DESIGN §7): with fewer replicas than followers, each
//! key lives on exactly its replicas, reads find it while a replica is down, a PREPARE
//! meant for one member is refused by any other, and a restarted leader keeps its view.
//! Real `tpc` processes (the built binary) over Unix sockets; which followers hold a
//! key is computed here from the member ids on disk with `tpc::placement`, as any
//! node computes it, and checked by reading every follower directly.

#[path = "e2e_support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use tonic::Code;
use tpc::client::{Swap, Txn};
use tpc::placement::{MemberId, View};

use support::{get, poll, wait_leader_ready, Cluster, POLL_TIMEOUT};

/// A cluster of `n` followers, each key on `replication` of them; not started.
fn cluster(n: usize, replication: usize) -> Cluster {
    let mut cluster = Cluster::new(n);
    cluster.leader_args = vec![("--replication".into(), replication.to_string())];
    cluster
}

/// Follower `i`'s member id, from its journal directory.
fn member_id(cluster: &Cluster, i: usize) -> MemberId {
    let path = cluster.follower_dirs[i]
        .journal_dir()
        .join(tpc::member::FILE);
    let id = std::fs::read_to_string(&path).expect("a started follower has a member id");
    MemberId(id.trim().to_string())
}

/// The followers (indices) that hold `key`, by placement over the followers' ids.
fn replicas(cluster: &Cluster, replication: usize, key: &str) -> BTreeSet<usize> {
    let ids: Vec<MemberId> = (0..cluster.follower_dirs.len())
        .map(|i| member_id(cluster, i))
        .collect();
    let view = View::new(1, replication, &ids);
    view.replicas(key)
        .into_iter()
        .map(|m| ids.iter().position(|id| id == m).expect("a member"))
        .collect()
}

/// The followers whose own copy holds `key` with `value`, read directly on each (once
/// the key's decision is applied there: the client hears OK at the last vote). A
/// follower that does not hold the key refuses the read (FAILED_PRECONDITION).
async fn holders(cluster: &Cluster, key: &str, value: &str) -> BTreeSet<usize> {
    let mut holders = BTreeSet::new();
    for i in 0..cluster.follower_dirs.len() {
        let addr = cluster.follower_addr(i);
        let held = poll("a settled direct read", POLL_TIMEOUT, || async {
            match get(&addr, key).await {
                Ok(held) => Ok(held),
                Err(s) if s.code() == Code::FailedPrecondition => Ok(None),
                Err(s) => Err(format!("{s:?}")),
            }
        })
        .await;
        if held.as_deref() == Some(value) {
            holders.insert(i);
        }
    }
    holders
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_lives_on_exactly_its_replicas_and_nowhere_else() {
    let cluster = cluster(5, 3).started().await;
    let mut client = cluster.client();
    let mut per_follower = [0usize; 5];
    for k in 0..40 {
        let key = format!("key-{k}");
        client.put(&key, &format!("v{k}")).await.expect("put");
        let expected = replicas(&cluster, 3, &key);
        assert_eq!(expected.len(), 3);
        assert_eq!(
            holders(&cluster, &key, &format!("v{k}")).await,
            expected,
            "{key}"
        );
        assert_eq!(client.get(&key).await.expect("get"), format!("v{k}"));
        for &f in &expected {
            per_follower[f] += 1;
        }
    }
    assert_eq!(per_follower.iter().sum::<usize>(), 120);
    // A follower read directly refuses a key it does not hold, naming the view.
    let key = "key-0";
    let outsider = (0..5)
        .find(|i| !replicas(&cluster, 3, key).contains(i))
        .unwrap();
    let refused = support::client(&cluster.follower_addr(outsider))
        .get(key)
        .await
        .expect_err("not a replica");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("view 1"), "{refused:?}");
    assert!(
        per_follower.iter().all(|&n| n < 40),
        "no follower holds every key: {per_follower:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_works_after_a_keys_first_replica_died_and_other_keys_take_writes() {
    let mut cluster = cluster(4, 2).started().await;
    let mut client = cluster.client();
    client.put("k", "before").await.expect("put");
    let ids: Vec<MemberId> = (0..4).map(|i| member_id(&cluster, i)).collect();
    let primary = View::new(1, 2, &ids).replicas("k")[0].clone();
    let dead = ids.iter().position(|id| *id == primary).unwrap();
    cluster.kill_follower(dead);

    for _ in 0..10 {
        assert_eq!(
            client.get("k").await.expect("the other replica answers"),
            "before"
        );
    }
    let err = client
        .put("k", "after")
        .await
        .expect_err("a replica is down");
    assert!(
        matches!(err.code(), Code::Unavailable | Code::Aborted),
        "fails cleanly: {err:?}"
    );
    assert_eq!(
        client.get("k").await.unwrap(),
        "before",
        "never half applied"
    );
    // A key the dead follower does not hold takes writes.
    let elsewhere = (0..)
        .map(|i| format!("other-{i}"))
        .find(|key| !replicas(&cluster, 2, key).contains(&dead))
        .unwrap();
    client
        .put(&elsewhere, "x")
        .await
        .expect("its replicas are up");
    assert_eq!(client.get(&elsewhere).await.unwrap(), "x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_to_a_member_answered_by_another_process_aborts_or_runs_in_the_next_view() {
    let mut cluster = cluster(3, 2).started().await;
    let mut client = cluster.client();
    client.put("seed", "1").await.expect("the cluster has data");
    let key = "moved";
    client.put(key, "old").await.expect("put");
    let owner = *replicas(&cluster, 2, key).iter().next().unwrap();
    let other = (0..3).find(|&i| i != owner).unwrap();
    // Another process answers at the owner's address: a copy of another follower's data
    // (same cluster, with data) under a new member id.
    cluster.kill_follower(owner);
    let (from, to) = (&cluster.follower_dirs[other], &cluster.follower_dirs[owner]);
    for (src, dst) in [
        (from.journal_dir(), to.journal_dir()),
        (from.kv_dir(), to.kv_dir()),
    ] {
        let _ = std::fs::remove_dir_all(&dst);
        copy_dir(&src, &dst);
    }
    std::fs::remove_file(to.journal_dir().join(tpc::member::FILE)).unwrap();
    std::fs::remove_file(to.journal_dir().join("journal.lock")).ok();
    cluster.start_follower(owner, &[]);
    support::wait_follower_ready(&cluster.follower_addr(owner)).await;

    // The leader hears of the new member when it reconnects (DESIGN §8): until then a
    // PREPARE meant for the old member is refused there and the write aborts, applied
    // nowhere; from then on the write runs in the next view. Never half.
    let value = match client.put(key, "new").await {
        Ok(_) => "new",
        Err(err) => {
            assert_eq!(err.code(), Code::Aborted, "{err:?}");
            assert!(
                err.message().contains("member"),
                "names the reason: {err:?}"
            );
            "old"
        }
    };
    assert_eq!(
        client.get(key).await.unwrap(),
        value,
        "applied whole or nowhere"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_leader_keeps_its_view_and_refuses_another_replication_factor() {
    let mut cluster = cluster(4, 2).started().await;
    cluster.client().put("a", "1").await.expect("put");
    cluster.kill_leader();

    cluster.leader_args = vec![("--replication".into(), "3".into())];
    cluster.start_leader(&[]);
    let status = cluster
        .leader
        .as_mut()
        .unwrap()
        .wait_exit(Duration::from_secs(10))
        .await;
    assert!(!status.success());
    let log = cluster.leader_dirs.log();
    assert!(
        log.contains("--replication 2") && log.contains("this start gives --replication 3"),
        "a clear refusal: {log}"
    );

    cluster.leader_args = vec![("--replication".into(), "2".into())];
    cluster.start_leader(&[]);
    wait_leader_ready(&cluster.leader_addr()).await;
    let mut client = cluster.client();
    assert_eq!(client.get("a").await.unwrap(), "1");
    client.put("a", "2").await.expect("the same view");
    assert_eq!(
        holders(&cluster, "a", "2").await,
        replicas(&cluster, 2, "a")
    );
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_over_keys_on_different_replicas_commits_whole_and_each_part_in_place() {
    let cluster = cluster(5, 2).started().await;
    let mut client = cluster.client();
    // Two keys no follower holds both of, and a third: the transaction spans them.
    let x = "x".to_string();
    let rx = replicas(&cluster, 2, &x);
    let y = (0..)
        .map(|i| format!("y{i}"))
        .find(|k| replicas(&cluster, 2, k).is_disjoint(&rx))
        .unwrap();
    client.put(&x, "1").await.unwrap();
    client.put(&y, "2").await.unwrap();

    // Both compares hold, each on its own replicas: the success branch everywhere.
    let txn = Txn::new()
        .if_value(&x, "1")
        .if_value(&y, "2")
        .then_put(&x, "10")
        .then_put(&y, "20")
        .then_get(&y)
        .else_get(&x);
    let answer = client.txn(txn).await.expect("txn");
    assert!(answer.succeeded);
    assert_eq!(answer.results.len(), 1);
    assert_eq!(
        (
            answer.results[0].key.as_str(),
            answer.results[0].value.as_str()
        ),
        (y.as_str(), "2")
    );
    assert_eq!(holders(&cluster, &x, "10").await, rx);
    assert_eq!(holders(&cluster, &y, "20").await, replicas(&cluster, 2, &y));

    // The compare on y fails on y's replicas only: the failure branch everywhere, and its
    // GET of x is read on x's replicas.
    let txn = Txn::new()
        .if_value(&x, "10")
        .if_value(&y, "nope")
        .then_put(&x, "bad")
        .then_put(&y, "bad")
        .else_get(&x)
        .else_put(&y, "21");
    let answer = client.txn(txn).await.expect("txn");
    assert!(!answer.succeeded);
    assert_eq!(answer.results[0].value, "10");
    assert_eq!(client.get(&x).await.unwrap(), "10", "x untouched");
    assert_eq!(client.get(&y).await.unwrap(), "21");
    assert_eq!(holders(&cluster, &y, "21").await, replicas(&cluster, 2, &y));
}

/// Runs `tpc members list --leader ADDR --json` and parses its output.
fn members_json(leader: &str) -> serde_json::Value {
    let output = std::process::Command::new(support::tpc_binary())
        .args(["members", "list", "--leader", leader, "--json"])
        .output()
        .expect("run tpc members list");
    assert!(
        output.status.success(),
        "tpc members list failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("tpc members list --json prints JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_list_shows_the_view_and_which_members_are_down() {
    let mut cluster = cluster(4, 3).started().await;
    support::wait_view(&cluster.leader_addr()).await;
    let view = members_json(&cluster.leader_addr());
    assert_eq!(view["epoch"], 1);
    assert_eq!(view["replication"], 3);
    assert_eq!(view["moving_keys"], 0);
    let members = view["members"].as_array().expect("members");
    assert_eq!(members.len(), 4);
    for (i, member) in members.iter().enumerate() {
        assert_eq!(member["id"], member_id(&cluster, i).0.as_str());
        assert_eq!(member["address"], cluster.follower_addr(i).as_str());
        assert_eq!(member["state"], "active");
    }

    cluster.kill_follower(2);
    let view = poll("f3 shown down", POLL_TIMEOUT, || async {
        let view = members_json(&cluster.leader_addr());
        match view["members"][2]["state"].as_str() {
            Some("down") => Ok(view),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(view["members"][0]["state"], "active");
    assert_eq!(
        view["epoch"], 1,
        "no view change (membership changes are not built yet)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_of_one_key_on_its_replicas_lose_none() {
    let cluster = cluster(5, 2).started().await;
    let mut client = cluster.client();
    client.put("counter", "0").await.expect("put");
    let workers: Vec<_> = (0..6)
        .map(|_| {
            let mut client = cluster.client();
            tokio::spawn(async move {
                let mut swapped = 0;
                while swapped < 5 {
                    let Ok(held) = client.get("counter").await else {
                        continue;
                    };
                    let next = (held.parse::<u64>().unwrap() + 1).to_string();
                    if let Ok(Swap::Done(_)) = client.cas("counter", Some(&held), &next).await {
                        swapped += 1;
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("worker");
    }
    assert_eq!(
        client.get("counter").await.unwrap(),
        "30",
        "every swap counted once"
    );
    assert_eq!(
        holders(&cluster, "counter", "30").await,
        replicas(&cluster, 2, "counter")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_fails_on_one_replica_is_aborted_on_the_others() {
    let mut cluster = cluster(4, 3).started().await;
    let mut client = cluster.client();
    client.put("k", "before").await.expect("put");
    let replicas = replicas(&cluster, 3, "k");
    let down = *replicas.iter().next().unwrap();
    cluster.kill_follower(down);
    let err = client
        .put("k", "after")
        .await
        .expect_err("a replica is down");
    assert!(
        matches!(err.code(), Code::Unavailable | Code::Aborted),
        "{err:?}"
    );
    // The others got the PREPARE, and then the ABORT: unlocked, unchanged.
    for &f in replicas.iter().filter(|&&f| f != down) {
        let addr = cluster.follower_addr(f);
        let held = poll("the replica unlocked", POLL_TIMEOUT, || async {
            get(&addr, "k").await.map_err(|s| format!("{s:?}"))
        })
        .await;
        assert_eq!(held.as_deref(), Some("before"), "follower {f}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_to_a_follower_restarted_empty_at_its_address_fails_cleanly_or_lands_in_the_new_view(
) {
    let mut cluster = cluster(4, 2).started().await;
    let mut client = cluster.client();
    client.put("k", "before").await.expect("put");
    let replicas = replicas(&cluster, 2, "k");
    let emptied = *replicas.iter().next().unwrap();
    cluster.kill_follower(emptied);
    for dir in [
        cluster.follower_dirs[emptied].journal_dir(),
        cluster.follower_dirs[emptied].kv_dir(),
    ] {
        std::fs::remove_dir_all(dir).unwrap();
    }
    cluster.start_follower(emptied, &[]);
    support::wait_follower_ready(&cluster.follower_addr(emptied)).await;
    // The new process replaces the member (DESIGN §8): a write either fails cleanly
    // (under the old view, the PREPARE meant for the old member is refused) or runs in
    // the next view, where the empty follower takes the key's writes; never half.
    let expected = match client.put("k", "after").await {
        Ok(_) => "after",
        Err(err) => {
            assert!(
                matches!(err.code(), Code::Unavailable | Code::Aborted),
                "fails cleanly: {err:?}"
            );
            "before"
        }
    };
    assert_eq!(
        client.get("k").await.unwrap(),
        expected,
        "never half applied"
    );
    let other = *replicas.iter().find(|&&f| f != emptied).unwrap();
    let addr = cluster.follower_addr(other);
    let held = poll("the other replica unlocked", POLL_TIMEOUT, || async {
        get(&addr, "k").await.map_err(|s| format!("{s:?}"))
    })
    .await;
    assert_eq!(held.as_deref(), Some(expected));
    // The replacement catches up; then the key lives on its replicas of the new view
    // (the new member's id places other keys on it than the old one's).
    let leader = cluster.leader_addr();
    let view = poll("the replacement's view in force", POLL_TIMEOUT, || async {
        let view = tpc::client::members::fetch(&leader, Duration::from_secs(5)).await?;
        match (view.epoch, view.moving_keys) {
            (2, 0) => Ok(view),
            other => Err(format!("epoch and moving keys {other:?}")),
        }
    })
    .await;
    let ids: Vec<MemberId> = view
        .members
        .iter()
        .map(|m| MemberId(m.id.clone()))
        .collect();
    assert!(
        ids.contains(&member_id(&cluster, emptied)),
        "the new member is in"
    );
    let new_replicas: BTreeSet<usize> = View::new(2, 2, &ids)
        .replicas("k")
        .into_iter()
        .map(|id| (0..4).find(|&i| member_id(&cluster, i) == *id).unwrap())
        .collect();
    assert_eq!(holders(&cluster, "k", expected).await, new_replicas);
}
