//! Recovery from every named crash point (`pkg/crash.rs`), end to end: a real cluster
//! (a leader and three followers on Unix sockets, vote timeout 500ms) with one node
//! armed through `TPC_CRASH_AT`; the write that reaches the point; the node's death
//! (`abort`, like `kill -9`) and its log line; a restart without the variable; and then
//! DESIGN §1: every follower's direct read settles on the same value (the new one if the
//! client was told OK or every follower's COMMIT vote was durable and no ABORT was, the
//! old one if the write was refused or an ABORT was durable), a read through the leader
//! agrees, and a further write of the same key succeeds everywhere (no lock left
//! behind).
//!
//! Waits poll with bounded deadlines; nothing sleeps to synchronise.

#[path = "e2e_support/mod.rs"]
mod support;

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use tonic::Code;

use support::{
    get, poll, settled_get, wait_follower_ready, wait_leader_ready, Cluster, NodeDirs, CRASH_AT,
    POLL_TIMEOUT,
};

/// The key every case writes.
const KEY: &str = "crash key/with space";
/// How long a crashed node may take to die after the write that reaches its point.
const EXIT_WITHIN: Duration = Duration::from_secs(10);
/// A bound on one client write (CALL_TIMEOUT is shorter; this only guards against a hang).
const PUT_WITHIN: Duration = Duration::from_secs(20);
/// SIGABRT: what `std::process::abort` dies of.
const SIGABRT: i32 = 6;

/// Which node carries the crash point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Armed {
    /// The first follower (F1).
    F1,
    Leader,
}

/// What the client must be told for the write that reaches the crash point.
#[derive(Clone, Copy, Debug)]
enum Told {
    Ok,
    /// An error with this code.
    Refused(Code),
    /// Some error (the leader died: the connection broke).
    AnyError,
    /// Either (the leader died around its answer).
    Either,
}

/// What every follower must hold in the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// The crashing write was applied.
    New,
    /// The crashing write was not applied.
    Old,
}

/// What the followers must answer while the crashed node is still down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WhileDown {
    /// Nothing checked.
    Unchecked,
    /// Every follower voted and has no decision: every direct read is UNAVAILABLE.
    AllLocked,
}

struct Case {
    /// The `TPC_CRASH_AT` value (`<point>` or `<point>:<n>`).
    spec: &'static str,
    on: Armed,
    /// A write made (and acknowledged) before the one that crashes.
    old: Option<&'static str>,
    told: Told,
    outcome: Outcome,
    while_down: WhileDown,
    /// Something the restarted node's log must mention besides its replay line.
    restart_log_mentions: Option<&'static str>,
    /// Once the armed follower died, the leader is killed too (`kill -9`) and restarted
    /// after it.
    leader_killed_too: bool,
}

/// The part of a node's stderr log written by its latest run (the support module heads
/// each run with a `===== start` line).
fn last_run_log(dirs: &NodeDirs) -> String {
    let log = dirs.log();
    match log.rfind("===== start") {
        Some(at) => log[at..].to_string(),
        None => log,
    }
}

/// Polls until the latest run of `dirs` has logged `needle` (a log line may trail the
/// state it reports).
async fn wait_log(dirs: &NodeDirs, needle: &str) {
    poll(
        &format!("{}'s log to say {needle:?}", dirs.name),
        POLL_TIMEOUT,
        || async {
            let log = last_run_log(dirs);
            if log.contains(needle) {
                Ok(())
            } else {
                Err(format!(
                    "latest run's log so far:\n{}",
                    log.lines().rev().take(5).collect::<Vec<_>>().join("\n")
                ))
            }
        },
    )
    .await
}

/// A client `Get` through the leader: `None` for NOT_FOUND.
async fn leader_get(cluster: &Cluster, key: &str) -> Option<String> {
    match cluster.client().get(key).await {
        Ok(v) => Some(v),
        Err(s) if s.code() == Code::NotFound => None,
        Err(s) => panic!("Get({key:?}) through the leader: {s:?}"),
    }
}

/// Polls every follower's direct read of `key` until none is UNAVAILABLE, then asserts
/// that they all agree and hold `expected`.
async fn assert_followers_settle_on(cluster: &Cluster, key: &str, expected: Option<&str>) {
    let mut seen = Vec::new();
    for addr in cluster.follower_addrs() {
        seen.push((addr.clone(), settled_get(&addr, key).await));
    }
    assert!(
        seen.windows(2).all(|w| w[0].1 == w[1].1),
        "followers disagree on {key:?} (DESIGN §1.1): {seen:#?}"
    );
    assert_eq!(
        seen[0].1.as_deref(),
        expected,
        "the followers' value of {key:?}: {seen:#?}"
    );
}

/// A write that must succeed; retried only while the leader answers UNAVAILABLE (a link
/// to a restarted follower may still be reconnecting: such a write is not applied).
/// Anything else (ABORTED: a lock left behind) fails at once.
async fn put_succeeds(cluster: &Cluster, key: &str, value: &str) {
    let c = cluster.client();
    poll(
        &format!("Put({key:?}, {value:?}) to succeed"),
        POLL_TIMEOUT,
        || {
            let mut c = c.clone();
            async move {
                match c.put(key, value).await {
                    Ok(()) => Ok(()),
                    Err(s) if s.code() == Code::Unavailable => Err(format!("{s:?}")),
                    Err(s) => panic!("Put({key:?}, {value:?}) after recovery: {s:?}"),
                }
            }
        },
    )
    .await
}

/// Starts the followers, then the leader, with `spec` armed on `on`, and waits for all.
async fn start_armed(spec: &str, on: Armed) -> Cluster {
    let mut cluster = Cluster::new(3);
    for i in 0..3 {
        if on == Armed::F1 && i == 0 {
            cluster.start_follower(i, &[(CRASH_AT, spec)]);
        } else {
            cluster.start_follower(i, &[]);
        }
    }
    for addr in cluster.follower_addrs() {
        wait_follower_ready(&addr).await;
    }
    if on == Armed::Leader {
        cluster.start_leader(&[(CRASH_AT, spec)]);
    } else {
        cluster.start_leader(&[]);
    }
    wait_leader_ready(&cluster.leader_addr()).await;
    if on == Armed::Leader {
        // Its journal writes are counted from here (the first view is the second).
        support::wait_view(&cluster.leader_addr()).await;
    }
    cluster
}

async fn run(case: Case) {
    let point = case.spec.split(':').next().expect("a point name");
    let mut cluster = start_armed(case.spec, case.on).await;

    if let Some(old) = case.old {
        cluster
            .client()
            .put(KEY, old)
            .await
            .expect("the write before the crashing one");
        assert_followers_settle_on(&cluster, KEY, Some(old)).await;
    }

    // The write that reaches the crash point.
    let new = "new value";
    let answer = tokio::time::timeout(PUT_WITHIN, cluster.client().put(KEY, new))
        .await
        .expect("a Put must not hang when a node crashes");
    let told_ok = match (case.told, &answer) {
        (Told::Ok, Ok(())) | (Told::Either, Ok(())) => true,
        (Told::Refused(code), Err(s)) if s.code() == code => false,
        (Told::AnyError, Err(_)) | (Told::Either, Err(_)) => false,
        (expected, got) => panic!("the crashing Put: expected {expected:?}, got {got:?}"),
    };
    eprintln!("{}: the crashing Put answered {answer:?}", case.spec);

    // The armed node died at its crash point.
    let (node, dirs) = match case.on {
        Armed::F1 => (
            cluster.followers[0].as_mut().expect("f1 is running"),
            &cluster.follower_dirs[0],
        ),
        Armed::Leader => (
            cluster.leader.as_mut().expect("the leader is running"),
            &cluster.leader_dirs,
        ),
    };
    let status = node.wait_exit(EXIT_WITHIN).await;
    assert_eq!(
        status.signal(),
        Some(SIGABRT),
        "{} should have aborted at {}: {status:?}",
        dirs.name,
        case.spec
    );
    let needle = format!("crash point {point} reached");
    assert!(
        last_run_log(dirs).contains(&needle),
        "{}'s log should say {needle:?}",
        dirs.name
    );
    match case.on {
        Armed::F1 => cluster.followers[0] = None,
        Armed::Leader => cluster.leader = None,
    }
    if case.leader_killed_too {
        cluster.kill_leader();
    }

    // While the leader is down, what the followers answer is fixed.
    let old = case.old;
    match case.while_down {
        WhileDown::Unchecked => {}
        WhileDown::AllLocked => {
            for addr in cluster.follower_addrs() {
                match get(&addr, KEY).await {
                    Err(s) if s.code() == Code::Unavailable => {}
                    other => panic!(
                        "{addr}: prepared and undecided, a direct read must be UNAVAILABLE \
                         (DESIGN §1.3), got {other:?}"
                    ),
                }
            }
        }
    }

    // Restart without the variable; the node replays its journal.
    match case.on {
        Armed::F1 => {
            cluster.start_follower(0, &[]);
            wait_follower_ready(&cluster.follower_addr(0)).await;
            wait_log(
                &cluster.follower_dirs[0],
                "journal replayed; follower ready",
            )
            .await;
        }
        Armed::Leader => {
            cluster.start_leader(&[]);
            wait_log(&cluster.leader_dirs, "leader journal recovered").await;
        }
    }
    if case.leader_killed_too {
        cluster.start_leader(&[]);
    }
    let dirs = match case.on {
        Armed::F1 => &cluster.follower_dirs[0],
        Armed::Leader => &cluster.leader_dirs,
    };
    if let Some(needle) = case.restart_log_mentions {
        wait_log(dirs, needle).await;
    }
    assert!(
        !last_run_log(dirs).contains("crash point"),
        "the restarted {} must not crash again",
        dirs.name
    );
    wait_leader_ready(&cluster.leader_addr()).await;

    // DESIGN §1: one value everywhere, the right one.
    let expected = match case.outcome {
        Outcome::New => Some(new),
        Outcome::Old => old,
    };
    if told_ok {
        assert_eq!(
            case.outcome,
            Outcome::New,
            "the client was told OK, so the write must be applied (DESIGN §1.2)"
        );
    }
    assert_followers_settle_on(&cluster, KEY, expected).await;
    assert_eq!(
        leader_get(&cluster, KEY).await.as_deref(),
        expected,
        "Get({KEY:?}) through the leader"
    );

    // No lock left behind: a further write succeeds and reaches every follower.
    let after = "after recovery";
    put_succeeds(&cluster, KEY, after).await;
    assert_followers_settle_on(&cluster, KEY, Some(after)).await;
    assert_eq!(
        leader_get(&cluster, KEY).await.as_deref(),
        Some(after),
        "Get({KEY:?}) through the leader after the further write"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_after_vote_journaled_the_write_fails_and_is_aborted_everywhere() {
    // Visit 1 is the first write's vote; F1 dies after journaling the second write's vote.
    run(Case {
        spec: "follower-after-vote-journaled:2",
        on: Armed::F1,
        old: Some("old value"),
        told: Told::Refused(Code::Unavailable),
        outcome: Outcome::Old,
        while_down: WhileDown::Unchecked,
        restart_log_mentions: None,
        leader_killed_too: false,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_after_apply_the_write_succeeds_and_is_applied_everywhere() {
    // Visit 1 is the first write's apply; F1 dies after applying the second write.
    run(Case {
        spec: "follower-after-apply:2",
        on: Armed::F1,
        old: Some("old value"),
        told: Told::Ok,
        outcome: Outcome::New,
        while_down: WhileDown::Unchecked,
        restart_log_mentions: None,
        leader_killed_too: false,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_after_first_ack_the_durable_commit_is_finished_after_restart() {
    run(Case {
        spec: "leader-after-first-ack",
        on: Armed::Leader,
        old: None,
        told: Told::Either,
        outcome: Outcome::New,
        while_down: WhileDown::Unchecked,
        restart_log_mentions: None,
        leader_killed_too: false,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_torn_write_on_a_follower_voting_the_write_fails_and_the_torn_tail_is_dropped() {
    // A fresh follower's first journal write is its first PREPARE's.
    run(Case {
        spec: "journal-torn-write",
        on: Armed::F1,
        old: None,
        told: Told::Refused(Code::Unavailable),
        outcome: Outcome::Old,
        while_down: WhileDown::Unchecked,
        restart_log_mentions: Some("dropping torn tail"),
        leader_killed_too: false,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_torn_write_on_the_leader_after_a_commit_loses_nothing() {
    // Leader journal writes: 1 the start-up metadata, 2 the first view (once every
    // follower told its member id, before anything is written), 3 the cluster's first
    // data, after its first commit (whose votes are its only record, DESIGN §1.4).
    run(Case {
        spec: "journal-torn-write:3",
        on: Armed::Leader,
        old: None,
        told: Told::Either,
        outcome: Outcome::New,
        while_down: WhileDown::Unchecked,
        restart_log_mentions: Some("dropping torn tail"),
        leader_killed_too: false,
    })
    .await;
}

/// The last COMMIT vote commits: the leader dies before it answers or sends anything,
/// and its journal holds nothing of the write. The restart learns from the followers'
/// fence reports that every one voted COMMIT, and commits everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_after_last_vote_the_restart_commits_everywhere() {
    run(Case {
        spec: "leader-after-last-vote:2",
        on: Armed::Leader,
        old: Some("old value"),
        told: Told::AnyError,
        outcome: Outcome::New,
        while_down: WhileDown::AllLocked,
        restart_log_mentions: Some("recovered an in-doubt transaction"),
        leader_killed_too: false,
    })
    .await;
}

/// F1 voted COMMIT (the write is committed and acknowledged) and dies as the decision
/// arrives, before journaling it; the leader is killed too. Both restart: F1 still holds
/// the write prepared, the others hold it committed (or prepared), and the restarted
/// leader commits it on F1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_before_decision_with_the_leader_killed_too_the_write_is_committed() {
    run(Case {
        spec: "follower-before-decision:2",
        on: Armed::F1,
        old: Some("old value"),
        told: Told::Ok,
        outcome: Outcome::New,
        while_down: WhileDown::Unchecked,
        restart_log_mentions: None,
        leader_killed_too: true,
    })
    .await;
}

/// Waits until every follower of `cluster` in `which` holds `KEY` locked (prepared).
async fn wait_locked(cluster: &Cluster, which: &[usize]) {
    for &i in which {
        let addr = cluster.follower_addr(i);
        poll(
            &format!("{addr} to hold {KEY:?} prepared"),
            POLL_TIMEOUT,
            || async {
                match get(&addr, KEY).await {
                    Err(s) if s.code() == Code::Unavailable => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
    }
}

/// The leader decides ABORT on a vote that did not come in time (F1's state thread is
/// held right after it journaled its COMMIT vote), journals the ABORT, and dies before
/// sending it. Every follower in fact voted COMMIT, so without that record the commit
/// rule would commit; with it, the restart aborts everywhere (DESIGN §1.4: the leader's
/// durable ABORT wins). Deterministic: F1's vote is held until the leader is dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_after_an_abort_journaled_on_a_missing_vote_the_restart_aborts_everywhere() {
    let mut cluster = Cluster::new(3);
    let release = cluster.follower_dirs[0].root().join("release-the-vote");
    let pause = format!("follower-after-vote-journaled={}", release.display());
    cluster.start_follower(0, &[("TPC_PAUSE_AT", pause.as_str())]);
    for i in 1..3 {
        cluster.start_follower(i, &[]);
    }
    for addr in cluster.follower_addrs() {
        wait_follower_ready(&addr).await;
    }
    cluster.start_leader(&[(CRASH_AT, "leader-after-decision-journaled")]);
    wait_leader_ready(&cluster.leader_addr()).await;

    let answer = tokio::time::timeout(PUT_WITHIN, cluster.client().put(KEY, "never"))
        .await
        .expect("a Put must not hang");
    assert!(
        answer.is_err(),
        "the leader died before answering: {answer:?}"
    );
    let status = cluster
        .leader
        .as_mut()
        .expect("running")
        .wait_exit(EXIT_WITHIN)
        .await;
    assert_eq!(status.signal(), Some(SIGABRT), "{status:?}");
    cluster.leader = None;
    assert!(
        last_run_log(&cluster.follower_dirs[0]).contains("paused at follower-after-vote-journaled")
    );
    // F1's COMMIT vote goes out now, to a leader that is gone: every follower voted COMMIT.
    std::fs::write(&release, b"").expect("release F1");
    wait_locked(&cluster, &[0, 1, 2]).await;

    cluster.start_leader(&[]);
    wait_leader_ready(&cluster.leader_addr()).await;
    assert_followers_settle_on(&cluster, KEY, None).await;
    assert_eq!(leader_get(&cluster, KEY).await, None);
    put_succeeds(&cluster, KEY, "after recovery").await;
    assert_followers_settle_on(&cluster, KEY, Some("after recovery")).await;
}

/// The leader dies with its write prepared on two followers while the third never
/// handled the PREPARE (its state thread is held before it, and it is then killed, so
/// the PREPARE is gone). The restart fences all three: the third reports it never voted,
/// and now never will, so the write is aborted everywhere, with no client action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_that_never_voted_makes_the_restart_abort() {
    let mut cluster = Cluster::new(3);
    let never = cluster.follower_dirs[2].root().join("never-created");
    let pause = format!("follower-before-message={}", never.display());
    for i in 0..2 {
        cluster.start_follower(i, &[]);
    }
    cluster.start_follower(2, &[("TPC_PAUSE_AT", pause.as_str())]);
    for addr in cluster.follower_addrs() {
        wait_follower_ready(&addr).await;
    }
    cluster.start_leader(&[]);
    wait_leader_ready(&cluster.leader_addr()).await;

    let client = cluster.client();
    let put = tokio::spawn(async move {
        let mut client = client;
        client.put(KEY, "lost").await
    });
    wait_locked(&cluster, &[0, 1]).await;
    wait_log(
        &cluster.follower_dirs[2],
        "paused at follower-before-message",
    )
    .await;
    cluster.kill_leader();
    let _ = put.await;
    cluster.kill_follower(2);
    cluster.start_follower(2, &[]);
    wait_follower_ready(&cluster.follower_addr(2)).await;

    cluster.start_leader(&[]);
    wait_leader_ready(&cluster.leader_addr()).await;
    wait_log(&cluster.leader_dirs, "recovered an in-doubt transaction").await;
    assert_followers_settle_on(&cluster, KEY, None).await;
    assert_eq!(leader_get(&cluster, KEY).await, None);
    put_succeeds(&cluster, KEY, "after recovery").await;
    assert_followers_settle_on(&cluster, KEY, Some("after recovery")).await;
}
