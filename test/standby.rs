//! Standby leaders (DESIGN §9) with real processes: three leaders (`--peer`) and three
//! followers. Raft elects one active leader; the standbys forward every call to it;
//! when it is killed with -9 another takes over, and every acknowledged write
//! survives.

#[path = "e2e_support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{poll, Node, NodeDirs, Role, CALL_TIMEOUT, POLL_TIMEOUT};
use tonic::Code;
use tpc::check::{self, OpKind, Operation};
use tpc::client::Client;

const LEADERS: usize = 3;
const FOLLOWERS: usize = 3;

/// Three leaders of three followers, each leader in its own directories.
struct Cluster {
    // Nodes first: processes die before their directories go.
    leaders: Vec<Option<Node>>,
    followers: Vec<Node>,
    leader_dirs: Vec<NodeDirs>,
    follower_dirs: Vec<NodeDirs>,
    /// The leaders' extra environment.
    leader_env: Vec<(String, String)>,
}

impl Cluster {
    async fn start() -> Cluster {
        Cluster::start_with(&[], &[]).await
    }

    /// Starts the followers (the first with `first_follower_env`), then the leaders
    /// with `leader_env`.
    async fn start_with(
        first_follower_env: &[(&str, &str)],
        leader_env: &[(&str, &str)],
    ) -> Cluster {
        let follower_dirs: Vec<NodeDirs> = (1..=FOLLOWERS)
            .map(|i| NodeDirs::new(&format!("f{i}")))
            .collect();
        let followers: Vec<Node> = follower_dirs
            .iter()
            .enumerate()
            .map(|(i, dirs)| {
                let env = if i == 0 { first_follower_env } else { &[] };
                support::spawn(dirs, Role::Follower, &dirs.addr(), env)
            })
            .collect();
        for dirs in &follower_dirs {
            support::wait_follower_ready(&dirs.addr()).await;
        }
        let mut cluster = Cluster {
            leaders: (0..LEADERS).map(|_| None).collect(),
            followers,
            leader_dirs: (1..=LEADERS)
                .map(|i| NodeDirs::new(&format!("leader{i}")))
                .collect(),
            follower_dirs,
            leader_env: leader_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        for i in 0..LEADERS {
            cluster.start_leader(i);
        }
        cluster
    }

    fn addrs(&self) -> Vec<String> {
        self.leader_dirs.iter().map(NodeDirs::addr).collect()
    }

    fn start_leader(&mut self, i: usize) {
        let followers = self.follower_dirs.iter().map(NodeDirs::addr).collect();
        let peers: Vec<String> = (0..LEADERS)
            .filter(|&j| j != i)
            .map(|j| self.leader_dirs[j].addr())
            .collect();
        let peers = peers.join(",");
        let dirs = &self.leader_dirs[i];
        let env: Vec<(&str, &str)> = self
            .leader_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.leaders[i] = Some(support::spawn_with_env_and_args(
            dirs,
            Role::leader(followers),
            &dirs.addr(),
            &env,
            &[("--peer", &peers)],
        ));
    }

    /// Waits until every running leader agrees on the active one, which serves with
    /// its view formed; its index.
    async fn active(&self) -> usize {
        self.active_among(&[]).await
    }

    /// Like [`Cluster::active`], leaving the leaders `ignored` out (a paused one).
    async fn active_among(&self, ignored: &[usize]) -> usize {
        let addrs = self.addrs();
        let running: Vec<usize> = (0..LEADERS)
            .filter(|&i| self.leaders[i].is_some() && !ignored.contains(&i))
            .collect();
        support::agreed_active("standby", &addrs, &running, POLL_TIMEOUT).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_is_active_and_the_standbys_forward_every_call_to_it() {
    let cluster = Cluster::start().await;
    let addrs = cluster.addrs();
    let active = cluster.active().await;
    let status = tpc::client::status::fetch(&addrs[active], CALL_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(status.role, "active");
    let roles: Vec<&str> = status.leaders.iter().map(|l| l.role.as_str()).collect();
    assert_eq!(
        roles.iter().filter(|r| **r == "active").count(),
        1,
        "{roles:?}"
    );
    assert_eq!(status.leaders.len(), LEADERS);

    for (i, addr) in addrs.iter().enumerate().filter(|(i, _)| *i != active) {
        let status = tpc::client::status::fetch(addr, CALL_TIMEOUT)
            .await
            .unwrap();
        assert_eq!(status.role, "standby", "leader {i}");
        assert_eq!(status.active_leader, addrs[active], "leader {i}");
        // A client of this standby only: every call is served by the active leader.
        let mut standby = support::client(addr);
        let key = format!("key-{i}");
        standby
            .put(&key, "one")
            .await
            .expect("put through a standby");
        assert_eq!(
            standby.get(&key).await.expect("get through a standby"),
            "one"
        );
        let swapped = standby.cas(&key, Some("one"), "two").await.expect("txn");
        assert!(matches!(swapped, tpc::client::Swap::Done(_)), "{swapped:?}");
        let mut direct = support::client(&addrs[active]);
        assert_eq!(
            direct.get(&key).await.unwrap(),
            "two",
            "the active leader applied it"
        );
        standby
            .delete(&key)
            .await
            .expect("delete through a standby");
        let gone = standby.get(&key).await.expect_err("deleted");
        assert_eq!(gone.code(), Code::NotFound);
        // Operators' calls too.
        let members = tpc::client::members::fetch(addr, CALL_TIMEOUT)
            .await
            .unwrap();
        assert_eq!(members.members.len(), FOLLOWERS);
    }

    // A call a standby already forwarded is never forwarded again.
    let standby = (active + 1) % LEADERS;
    let channel = tpc::net::connect(&addrs[standby].parse().unwrap(), CALL_TIMEOUT)
        .await
        .unwrap();
    let mut raw = tpc::proto::api::key_value_api_client::KeyValueApiClient::new(channel);
    let mut request = tonic::Request::new(tpc::proto::api::PutRequest {
        key: "k".into(),
        value: "v".into(),
    });
    request.metadata_mut().insert(
        "tpc-forwarded",
        tonic::metadata::MetadataValue::from_static("1"),
    );
    let refused = raw.put(request).await.expect_err("a second forward");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");

    // `tpc status --leader A,B,C` goes to the active leader.
    let output = std::process::Command::new(support::tpc_binary())
        .args(["status", "--json", "--leader", &addrs.join(",")])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["role"], "active", "{json}");
    assert_eq!(json["active_leader"], addrs[active].as_str(), "{json}");
}

/// `tpc client` with no command: the interactive shell, fed line by line.
struct Shell {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Shell {
    fn start(leaders: &[String]) -> Shell {
        use std::io::BufRead;
        let mut child = std::process::Command::new(support::tpc_binary())
            .args(["client", "--timeout", "2s", "--leader", &leaders.join(",")])
            .env("HOME", std::env::temp_dir())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        let banner = lines.recv_timeout(CALL_TIMEOUT).unwrap();
        assert!(banner.starts_with("tpc shell"), "{banner}");
        Shell { child, lines }
    }

    /// Sends one command; its answer's first line. The shell's notes ("(...)", after
    /// an error) are skipped.
    fn say(&mut self, command: &str) -> String {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{command}").unwrap();
        loop {
            let line = self.lines.recv_timeout(Duration::from_secs(10)).unwrap();
            if !line.starts_with('(') {
                return line;
            }
        }
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the writers learned, for the checker.
#[derive(Default)]
struct History {
    ops: Vec<Operation>,
    /// When each successful write was called and returned.
    acked: Vec<(Instant, Instant)>,
}

/// How the active leader fails.
#[derive(Clone, Copy, PartialEq)]
enum Failure {
    /// kill -9, and a restart once another leader is active.
    Kill,
    /// SIGSTOP until another leader is active, then SIGCONT: a zombie that still
    /// believes it leads, with its streams to the followers and its committed writes.
    Pause,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_active_leader_under_load_fails_over_and_loses_no_acknowledged_write() {
    fail_over_under_load(Failure::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_active_leader_that_wakes_up_stands_down_and_serves_nothing_stale() {
    fail_over_under_load(Failure::Pause).await;
}

/// Clients write and read through every leader while the active one fails; another
/// takes over, the old one returns as a standby, and the history (with a final read of
/// every key through each leader) is linearizable: no acknowledged write is lost and no
/// read is stale.
async fn fail_over_under_load(failure: Failure) {
    let mut cluster = Cluster::start().await;
    let addrs = cluster.addrs();
    let active = cluster.active().await;
    let started = Instant::now();
    let since = move |t: Instant| t.duration_since(started).as_nanos() as u64;
    let history = Arc::new(Mutex::new(History::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for c in 0..4usize {
        let (history, stop, addrs) = (history.clone(), stop.clone(), addrs.clone());
        writers.push(tokio::spawn(async move {
            // Each writer talks to every leader in turn, standbys included.
            let mut clients: Vec<Client> = addrs
                .iter()
                .map(|a| Client::new(a, Duration::from_secs(2)).unwrap())
                .collect();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let key = format!("k{}", n % 3);
                let client = &mut clients[n % LEADERS];
                let call = Instant::now();
                let (kind, known) = if n % 2 == 0 {
                    let value = format!("{c}-{n}");
                    match client.put(&key, &value).await {
                        Ok(()) => (Some(OpKind::Put(value)), true),
                        // Not applied: left out of the history.
                        Err(s) if matches!(s.code(), Code::Unavailable | Code::Aborted) => {
                            (None, false)
                        }
                        Err(_) => (Some(OpKind::Put(value)), false),
                    }
                } else {
                    match client.get(&key).await {
                        Ok(v) => (Some(OpKind::Get(Some(v))), true),
                        Err(s) if s.code() == Code::NotFound => (Some(OpKind::Get(None)), true),
                        Err(_) => (None, false),
                    }
                };
                let ret = Instant::now();
                {
                    let mut h = history.lock().unwrap();
                    if known && matches!(kind, Some(OpKind::Put(_))) {
                        h.acked.push((call, ret));
                    }
                    if let Some(kind) = kind {
                        h.ops.push(Operation {
                            client: c,
                            key,
                            kind,
                            call: since(call),
                            ret: known.then(|| since(ret)),
                        });
                    }
                }
                if !known {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    let acked = || history.lock().unwrap().acked.len();
    poll("writes to be acknowledged", POLL_TIMEOUT, || async {
        (acked() >= 20).then_some(()).ok_or("too few".to_string())
    })
    .await;

    // A user's shell, given every leader, connected before the failure.
    let mut shell = Shell::start(&addrs);
    assert_eq!(shell.say("put shell before"), "OK");
    let killed = Instant::now();
    let new_active = match failure {
        Failure::Kill => {
            cluster.leaders[active].as_mut().unwrap().kill();
            cluster.leaders[active] = None;
            cluster.active().await
        }
        Failure::Pause => {
            cluster.leaders[active].as_ref().unwrap().signal("STOP");
            cluster.active_among(&[active]).await
        }
    };
    assert_ne!(new_active, active);
    if failure == Failure::Kill {
        // The tools take every leader's address and go to the active one, also with
        // one of them down.
        let output = std::process::Command::new(support::tpc_binary())
            .args([
                "client",
                "--leader",
                &addrs.join(","),
                "put",
                "tools",
                "yes",
            ])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
    }
    // The shell finds the new active leader by itself: a command may fail while the
    // leaders change (and is not applied), the next ones work.
    let mut answers = Vec::new();
    for _ in 0..20 {
        let answer = shell.say("put shell after");
        if answer == "OK" {
            break;
        }
        let gone = [
            "error: UNAVAILABLE",
            "error: DEADLINE_EXCEEDED",
            "error: CANCELLED",
        ];
        assert!(gone.iter().any(|g| answer.starts_with(g)), "{answer}");
        answers.push(answer);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        answers.len() < 20,
        "the shell never wrote again: {answers:?}"
    );
    drop(shell);
    poll(
        "a write acknowledged after the failure",
        POLL_TIMEOUT,
        || async {
            let h = history.lock().unwrap();
            h.acked
                .iter()
                .any(|&(call, _)| call > killed)
                .then_some(())
                .ok_or("none yet".to_string())
        },
    )
    .await;
    let first = history
        .lock()
        .unwrap()
        .acked
        .iter()
        .filter(|&&(call, _)| call > killed)
        .map(|&(_, ret)| ret)
        .min()
        .unwrap();
    eprintln!(
        "first acknowledged write called after the failure returned {:?} after it",
        first.duration_since(killed)
    );
    let status = tpc::client::status::fetch(&addrs[new_active], CALL_TIMEOUT)
        .await
        .unwrap();
    let old_epoch = status.epoch;

    // The old leader comes back as a standby and disturbs nothing.
    match failure {
        Failure::Kill => cluster.start_leader(active),
        Failure::Pause => cluster.leaders[active].as_ref().unwrap().signal("CONT"),
    }
    let again = cluster.active().await;
    assert_eq!(again, new_active, "the old leader took nothing over");
    let status = tpc::client::status::fetch(&addrs[active], CALL_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(status.role, "standby");
    let count = acked();
    poll(
        "writes after the old leader returned",
        POLL_TIMEOUT,
        || async {
            (acked() >= count + 10)
                .then_some(())
                .ok_or("too few".to_string())
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    let status = tpc::client::status::fetch(&addrs[new_active], CALL_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(status.epoch, old_epoch, "no takeover since");

    // Every key read back, through each leader, joins the history: an acknowledged
    // write that was lost makes it not linearizable.
    let mut history = std::mem::take(&mut history.lock().unwrap().ops);
    for (i, addr) in addrs.iter().enumerate() {
        let mut client = support::client(addr);
        for k in 0..3 {
            let key = format!("k{k}");
            let call = since(Instant::now());
            let value = match client.get(&key).await {
                Ok(v) => Some(v),
                Err(s) if s.code() == Code::NotFound => None,
                Err(s) => panic!("final read of {key} through leader {i}: {s:?}"),
            };
            history.push(Operation {
                client: 100 + i,
                key,
                kind: OpKind::Get(value),
                call,
                ret: Some(since(Instant::now())),
            });
        }
    }
    if let Err(violation) = check::check(&history) {
        panic!("{violation}");
    }
}

/// The active leader decides ABORT on a vote that did not come in time (F1's state
/// thread is held right after it journaled its COMMIT vote), commits the ABORT to the
/// leaders, and dies before sending it; the leaders restart. Every follower in fact voted COMMIT, so
/// without that record the next leader would commit by the votes; with it, the next
/// leader aborts everywhere (DESIGN §1.4: the leader's durable ABORT wins, and with
/// standby leaders "durable" means on a majority of them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_the_dead_leader_committed_to_the_leaders_is_delivered_by_the_next() {
    const KEY: &str = "in doubt";
    let release = tempfile::tempdir().unwrap();
    let release = release.path().join("release-the-vote");
    let pause = format!("follower-after-vote-journaled={}", release.display());
    let mut cluster = Cluster::start_with(
        &[("TPC_PAUSE_AT", &pause)],
        &[(support::CRASH_AT, "leader-after-decision-journaled")],
    )
    .await;
    let addrs = cluster.addrs();
    let active = cluster.active().await;
    let answer = support::client(&addrs[active]).put(KEY, "never").await;
    assert!(
        answer.is_err(),
        "the leader died before answering: {answer:?}"
    );
    let dead = cluster.leaders[active].as_mut().unwrap();
    let status = dead.wait_exit(Duration::from_secs(10)).await;
    assert!(!status.success(), "{status:?}");
    cluster.leaders[active] = None;
    // The others restart without the crash point (they would stop at their own first
    // journaled decision): the ABORT is in their files.
    cluster.leader_env.clear();
    for i in 0..LEADERS {
        if let Some(mut leader) = cluster.leaders[i].take() {
            leader.kill();
        }
        cluster.start_leader(i);
    }
    // F1's COMMIT vote goes out now, to a leader that is gone: every follower voted COMMIT.
    std::fs::write(&release, b"").unwrap();

    let next = cluster.active().await;
    for dirs in &cluster.follower_dirs {
        let held = support::settled_get(&dirs.addr(), KEY).await;
        assert_eq!(held, None, "{} applied the ABORT", dirs.addr());
    }
    assert_eq!(support::settled_get(&addrs[next], KEY).await, None);
    let mut client = support::client(&addrs[next]);
    client
        .put(KEY, "after")
        .await
        .expect("the key is free again");
    assert_eq!(cluster.followers.len(), FOLLOWERS);
}

/// The control state lives in each leader's files: every leader killed at once and
/// restarted keeps the cluster (its id, its data), in a newer epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leaders_killed_together_and_restarted_keep_the_cluster() {
    let mut cluster = Cluster::start().await;
    let addrs = cluster.addrs();
    let active = cluster.active().await;
    let before = tpc::client::status::fetch(&addrs[active], CALL_TIMEOUT)
        .await
        .unwrap();
    support::client(&addrs[active])
        .put("kept", "yes")
        .await
        .unwrap();
    for leader in cluster.leaders.iter_mut() {
        leader.as_mut().unwrap().send_kill();
    }
    for i in 0..LEADERS {
        cluster.leaders[i].take().unwrap().kill();
    }
    for i in 0..LEADERS {
        cluster.start_leader(i);
    }
    let active = cluster.active().await;
    let after = tpc::client::status::fetch(&addrs[active], CALL_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(after.cluster_id, before.cluster_id);
    assert!(
        after.epoch > before.epoch,
        "{} after {}",
        after.epoch,
        before.epoch
    );
    let mut client = support::client(&addrs[(active + 1) % LEADERS]);
    assert_eq!(client.get("kept").await.unwrap(), "yes");
}

/// A leader directory that holds a single leader's journal is not silently left
/// behind by a leader started with --peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_leaders_journal_is_refused_by_a_leader_with_peers() {
    let dirs = NodeDirs::new("leader");
    std::fs::create_dir_all(dirs.journal_dir()).unwrap();
    let mut journal = tpc::journal::Journal::open(&dirs.journal_file()).unwrap().0;
    journal
        .append(&["meta".to_string(), "c1".to_string()])
        .unwrap();
    drop(journal);
    let mut node = support::spawn_with_args(
        &dirs,
        Role::leader(vec!["unix:/nonexistent/f.sock".into()]),
        &dirs.addr(),
        &[("--peer", "unix:/nonexistent/l2.sock")],
    );
    let status = node.wait_exit(Duration::from_secs(10)).await;
    assert!(!status.success());
    assert!(
        dirs.log().contains("holds a single leader's journal"),
        "{}",
        dirs.log()
    );
}

/// Each of the first two leaders Raft elects dies at a step of its takeover: before it
/// read anything, or once its new epoch is committed but nothing sent. With them back
/// (and no crash point), a third takes over and serves, in an epoch above every epoch
/// committed so far.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaders_that_die_during_their_takeover_leave_a_cluster_the_next_one_takes_over() {
    for point in ["leader-before-takeover", "leader-after-takeover"] {
        let mut cluster = Cluster::start_with(&[], &[(support::CRASH_AT, point)]).await;
        let mut dead = Vec::new();
        poll("two leaders to die at their takeover", POLL_TIMEOUT, || {
            for i in 0..LEADERS {
                if let Some(status) = cluster.leaders[i].as_mut().and_then(Node::try_exit) {
                    assert!(!status.success(), "{status:?}");
                    cluster.leaders[i] = None;
                    dead.push(i);
                }
            }
            let done = dead.len() >= 2;
            async move { done.then_some(()).ok_or("not yet".to_string()) }
        })
        .await;
        cluster.leader_env.clear();
        for &i in &dead {
            cluster.start_leader(i);
        }
        let addrs = cluster.addrs();
        let active = cluster.active().await;
        let status = tpc::client::status::fetch(&addrs[active], CALL_TIMEOUT)
            .await
            .unwrap();
        let committed_before = if point == "leader-after-takeover" {
            2
        } else {
            0
        };
        assert!(
            status.epoch > committed_before,
            "{point}: epoch {}",
            status.epoch
        );
        let mut client = support::client(&addrs[active]);
        client.put("after", point).await.expect(point);
        assert_eq!(client.get("after").await.unwrap(), point);
    }
}
