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
    _followers: Vec<Node>,
    leader_dirs: Vec<NodeDirs>,
    follower_dirs: Vec<NodeDirs>,
}

impl Cluster {
    async fn start() -> Cluster {
        let follower_dirs: Vec<NodeDirs> = (1..=FOLLOWERS)
            .map(|i| NodeDirs::new(&format!("f{i}")))
            .collect();
        let followers: Vec<Node> = follower_dirs.iter().map(support::follower).collect();
        for dirs in &follower_dirs {
            support::wait_follower_ready(&dirs.addr()).await;
        }
        let mut cluster = Cluster {
            leaders: (0..LEADERS).map(|_| None).collect(),
            _followers: followers,
            leader_dirs: (1..=LEADERS)
                .map(|i| NodeDirs::new(&format!("leader{i}")))
                .collect(),
            follower_dirs,
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
        self.leaders[i] = Some(support::spawn_with_args(
            dirs,
            Role::leader(followers),
            &dirs.addr(),
            &[("--peer", &peers)],
        ));
    }

    /// Waits until every running leader agrees on the active one, which serves with
    /// its view formed; its index.
    async fn active(&self) -> usize {
        let addrs = self.addrs();
        let running: Vec<usize> = (0..LEADERS).filter(|&i| self.leaders[i].is_some()).collect();
        poll("the leaders to agree on an active one", POLL_TIMEOUT, || {
            let addrs = addrs.clone();
            let running = running.clone();
            async move {
                let mut active = None;
                for &i in &running {
                    let status = tpc::client::status::fetch(&addrs[i], CALL_TIMEOUT).await?;
                    let named = addrs.iter().position(|a| *a == status.active_leader);
                    let Some(named) = named.filter(|n| running.contains(n)) else {
                        return Err(format!("leader {i} names no running active leader"));
                    };
                    if active.is_some_and(|a| a != named) {
                        return Err("the leaders name different active leaders".into());
                    }
                    if status.role == "active" && status.view_epoch == 0 {
                        return Err("the active leader has no view yet".into());
                    }
                    active = Some(named);
                }
                active.ok_or_else(|| "no leader is running".to_string())
            }
        })
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_is_active_and_the_standbys_forward_every_call_to_it() {
    let cluster = Cluster::start().await;
    let addrs = cluster.addrs();
    let active = cluster.active().await;
    let status = tpc::client::status::fetch(&addrs[active], CALL_TIMEOUT).await.unwrap();
    assert_eq!(status.role, "active");
    let roles: Vec<&str> = status.leaders.iter().map(|l| l.role.as_str()).collect();
    assert_eq!(roles.iter().filter(|r| **r == "active").count(), 1, "{roles:?}");
    assert_eq!(status.leaders.len(), LEADERS);

    for (i, addr) in addrs.iter().enumerate().filter(|(i, _)| *i != active) {
        let status = tpc::client::status::fetch(addr, CALL_TIMEOUT).await.unwrap();
        assert_eq!(status.role, "standby", "leader {i}");
        assert_eq!(status.active_leader, addrs[active], "leader {i}");
        // A client of this standby only: every call is served by the active leader.
        let mut standby = support::client(addr);
        let key = format!("key-{i}");
        standby.put(&key, "one").await.expect("put through a standby");
        assert_eq!(standby.get(&key).await.expect("get through a standby"), "one");
        let swapped = standby.cas(&key, Some("one"), "two").await.expect("txn");
        assert!(matches!(swapped, tpc::client::Swap::Done(_)), "{swapped:?}");
        let mut direct = support::client(&addrs[active]);
        assert_eq!(direct.get(&key).await.unwrap(), "two", "the active leader applied it");
        standby.delete(&key).await.expect("delete through a standby");
        let gone = standby.get(&key).await.expect_err("deleted");
        assert_eq!(gone.code(), Code::NotFound);
        // Operators' calls too.
        let members = tpc::client::members::fetch(addr, CALL_TIMEOUT).await.unwrap();
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
    request
        .metadata_mut()
        .insert("tpc-forwarded", tonic::metadata::MetadataValue::from_static("1"));
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

/// What the writers learned, for the checker.
#[derive(Default)]
struct History {
    ops: Vec<Operation>,
    /// When each successful write returned.
    acked: Vec<Instant>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_active_leader_under_load_fails_over_and_loses_no_acknowledged_write() {
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
                        h.acked.push(ret);
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

    cluster.leaders[active].as_mut().unwrap().kill();
    let killed = Instant::now();
    cluster.leaders[active] = None;
    let new_active = cluster.active().await;
    assert_ne!(new_active, active);
    poll("a write acknowledged after the kill", POLL_TIMEOUT, || async {
        let h = history.lock().unwrap();
        h.acked.iter().any(|&t| t > killed).then_some(()).ok_or("none yet".to_string())
    })
    .await;
    let first = history
        .lock()
        .unwrap()
        .acked
        .iter()
        .filter(|&&t| t > killed)
        .min()
        .copied()
        .unwrap();
    eprintln!(
        "first acknowledged write {:?} after the kill",
        first.duration_since(killed)
    );
    let status = tpc::client::status::fetch(&addrs[new_active], CALL_TIMEOUT).await.unwrap();
    let old_epoch = status.epoch;

    // The killed leader comes back as a standby and disturbs nothing.
    cluster.start_leader(active);
    let again = cluster.active().await;
    assert_eq!(again, new_active, "the restarted leader took nothing over");
    let status = tpc::client::status::fetch(&addrs[active], CALL_TIMEOUT).await.unwrap();
    assert_eq!(status.role, "standby");
    let count = acked();
    poll("writes after the old leader returned", POLL_TIMEOUT, || async {
        (acked() >= count + 10).then_some(()).ok_or("too few".to_string())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    let status = tpc::client::status::fetch(&addrs[new_active], CALL_TIMEOUT).await.unwrap();
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
