//! The chaos test: concurrent clients read, write and delete a small key space through
//! the leader while a seeded nemesis kills -9 and restarts any node and the links between
//! the leader and its followers drop, duplicate, delay, replay and cut messages (through
//! `tpc proxy`). Afterwards the network is healed and every node restarted, and:
//!
//! - the client history is linearizable (checked per key by `tpc::check`; writes whose
//!   outcome a client could not learn may take effect or not; a transaction of several
//!   keys is one write per key);
//! - no read sees a transaction in part (DESIGN §6): the workload has transactions that
//!   write one unique value to 2-4 keys, and read-only `Txn`s of several keys; in each
//!   such read, a key holding a transaction's value at version V means every other key
//!   of that transaction is at a version after V, or at V with the same value;
//! - every acknowledged write is there (the final reads are part of the history);
//! - every replica of a key holds the same value and version, and no other follower
//!   holds the key (their key-value directories are compared after the nodes stop; with
//!   every follower a replica of every key, all are identical).
//!
//! Odd seeds run 3 followers that each hold every key; even seeds 4 followers with 3
//! replicas per key (`--replication 3`, DESIGN §7), so a transaction's participants are
//! some of the followers and a transaction of several keys spans followers none of which
//! holds all its keys.
//!
//! The same seed gives the same nemesis schedule and the same client operations (their
//! interleaving with real processes is up to the machine). A failure prints the seed and
//! the offending key's history.
//!
//! CI runs a bounded version. For a soak: `TPC_CHAOS_SEEDS=1,2,3,4 TPC_CHAOS_SECONDS=600
//! cargo test --release --test chaos -- --nocapture` (also `TPC_CHAOS_CLIENTS`,
//! `TPC_CHAOS_KEYS`, `TPC_CHAOS_FOLLOWERS` and `TPC_CHAOS_REPLICATION` for every seed,
//! and `TPC_CHAOS_LINK_FAULTS=0` to kill nodes only).

#[path = "e2e_support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::Code;

use support::{spawn, spawn_with_args, Node, NodeDirs, Role};
use tpc::check::{self, OpKind, Operation};
use tpc::client::{Client, Txn};
use tpc::kvstore::{KvStore, Versioned};
use tpc::placement::{MemberId, View};
use tpc::proto::api;
use tpc::txid::TxId;

/// What one read-only transaction saw: each key, its value and version (`None`: absent).
type Snapshot = Vec<(String, Option<(String, TxId)>)>;

/// The keys each transaction of several keys wrote, by the unique value it wrote.
type Written = BTreeMap<String, Vec<String>>;

/// What the clients did: the per-key history, the snapshots their read-only
/// transactions saw, and the keys of every transaction of several keys they sent.
#[derive(Default)]
struct Observed {
    history: Vec<Operation>,
    snapshots: Vec<Snapshot>,
    written: Written,
}

/// One chaos run's parameters.
#[derive(Clone, Debug)]
struct Config {
    seed: u64,
    duration: Duration,
    clients: usize,
    keys: usize,
    followers: usize,
    /// The leader's `--replication`.
    replication: usize,
    link_faults: bool,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn configs() -> Vec<Config> {
    let seeds = std::env::var("TPC_CHAOS_SEEDS").unwrap_or_else(|_| "1,2,3".into());
    let seconds: f64 = env_or("TPC_CHAOS_SECONDS", 15.0);
    seeds
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .map(|seed| Config {
            seed,
            duration: Duration::from_secs_f64(seconds),
            clients: env_or("TPC_CHAOS_CLIENTS", 6),
            keys: env_or("TPC_CHAOS_KEYS", 4),
            followers: env_or("TPC_CHAOS_FOLLOWERS", 3 + (seed % 2 == 0) as usize),
            replication: env_or("TPC_CHAOS_REPLICATION", 3),
            link_faults: env_or("TPC_CHAOS_LINK_FAULTS", 1u8) != 0,
        })
        .collect()
}

/// What the nemesis does next.
#[derive(Clone, Debug)]
enum Fault {
    /// kill -9 a follower, restart it after the pause.
    KillFollower(usize),
    /// kill -9 the leader, restart it after the pause.
    KillLeader,
    /// Cut every stream of one link (restart its proxy), with new fault rates.
    CutLink(usize),
}

/// The nemesis schedule: (wait before, fault, pause before the restart).
fn schedule(config: &Config) -> Vec<(Duration, Fault, Duration)> {
    let mut rng = StdRng::seed_from_u64(config.seed ^ 0x6e656d65);
    let mut plan = Vec::new();
    let mut at = Duration::ZERO;
    while at < config.duration {
        let wait = Duration::from_millis(rng.random_range(400..1600));
        let fault = match rng.random_range(0..10) {
            0..=4 => Fault::KillFollower(rng.random_range(0..config.followers)),
            5..=7 => Fault::KillLeader,
            _ if config.link_faults => Fault::CutLink(rng.random_range(0..config.followers)),
            _ => Fault::KillFollower(rng.random_range(0..config.followers)),
        };
        let pause = Duration::from_millis(rng.random_range(20..400));
        at += wait + pause;
        plan.push((wait, fault, pause));
    }
    plan
}

/// The link fault rates of a proxy, by flag.
fn link_fault_flags(rng: &mut StdRng) -> Vec<String> {
    let p = |rng: &mut StdRng, max: f64| format!("{:.3}", rng.random_range(0.0..max));
    // Rates per message. A lost message costs its stream a vote timeout and a reset,
    // which aborts every transaction then in flight on that link, so rates stay in the
    // low percents: a run still sees hundreds of such faults.
    vec![
        "--drop".into(),
        p(rng, 0.01),
        "--drop-reply".into(),
        p(rng, 0.01),
        "--dup".into(),
        p(rng, 0.02),
        "--dup-reply".into(),
        p(rng, 0.02),
        "--replay".into(),
        p(rng, 0.02),
        "--cut".into(),
        p(rng, 0.002),
        "--delay-ms".into(),
        format!("0-{}", rng.random_range(1..3)),
    ]
}

/// A `tpc proxy` process between the leader and one follower.
struct Proxy {
    child: Option<Child>,
    listen: String,
    target: String,
}

impl Proxy {
    fn start(dirs: &NodeDirs, listen: &str, target: &str, flags: &[String], seed: u64) -> Proxy {
        let mut proxy = Proxy {
            child: None,
            listen: listen.into(),
            target: target.into(),
        };
        proxy.restart(dirs, flags, seed);
        proxy
    }

    fn restart(&mut self, dirs: &NodeDirs, flags: &[String], seed: u64) {
        self.stop();
        let child = Command::new(support::tpc_binary())
            .args(["proxy", "--listen", &self.listen, "--target", &self.target])
            .args(flags)
            .args(["--seed", &seed.to_string()])
            .current_dir(dirs.cwd())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(dirs.open_log("proxy"))
            .spawn()
            .expect("spawn tpc proxy");
        self.child = Some(child);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The processes of one run, and how to restart each.
struct Nodes {
    // Processes first: they must die before their directories go.
    leader: Node,
    followers: Vec<Node>,
    proxies: Vec<Proxy>,
    leader_dirs: NodeDirs,
    follower_dirs: Vec<NodeDirs>,
    vote_timeout: String,
    /// The leader's `--replication`.
    replication: String,
}

impl Nodes {
    fn start(config: &Config) -> Nodes {
        let follower_dirs: Vec<NodeDirs> = (0..config.followers)
            .map(|i| NodeDirs::new(&format!("chaos-f{}", i + 1)))
            .collect();
        let leader_dirs = NodeDirs::new("chaos-leader");
        let followers = follower_dirs
            .iter()
            .map(|d| spawn(d, Role::Follower, &d.addr(), &[]))
            .collect();
        let mut rng = StdRng::seed_from_u64(config.seed ^ 0x70726f78);
        let proxies: Vec<Proxy> = if config.link_faults {
            follower_dirs
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    let flags = link_fault_flags(&mut rng);
                    Proxy::start(
                        d,
                        &d.socket("proxy.sock"),
                        &d.addr(),
                        &flags,
                        config.seed + i as u64,
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        let vote_timeout = "150ms".to_string();
        let targets = follower_targets(&follower_dirs, &proxies);
        let role = Role::Leader {
            followers: targets,
            vote_timeout: vote_timeout.clone(),
        };
        let replication = config.replication.to_string();
        let leader = spawn_with_args(
            &leader_dirs,
            role,
            &leader_dirs.addr(),
            &[("--replication", &replication)],
        );
        Nodes {
            leader,
            followers,
            proxies,
            leader_dirs,
            follower_dirs,
            vote_timeout,
            replication,
        }
    }

    fn leader_addr(&self) -> String {
        self.leader_dirs.addr()
    }

    fn restart_leader(&mut self) {
        self.leader.kill();
        let role = Role::Leader {
            followers: follower_targets(&self.follower_dirs, &self.proxies),
            vote_timeout: self.vote_timeout.clone(),
        };
        self.leader = spawn_with_args(
            &self.leader_dirs,
            role,
            &self.leader_dirs.addr(),
            &[("--replication", &self.replication)],
        );
    }

    fn restart_follower(&mut self, i: usize) {
        self.followers[i].kill();
        let d = &self.follower_dirs[i];
        self.followers[i] = spawn(d, Role::Follower, &d.addr(), &[]);
    }

    /// Restarts every proxy without faults.
    fn heal_links(&mut self, seed: u64) {
        for (i, proxy) in self.proxies.iter_mut().enumerate() {
            proxy.restart(&self.follower_dirs[i], &[], seed);
        }
    }

    fn stop_all(&mut self) {
        self.leader.kill();
        for f in &mut self.followers {
            f.kill();
        }
        for p in &mut self.proxies {
            p.stop();
        }
    }
}

/// The addresses the leader knows its followers by (the proxies, if any).
fn follower_targets(follower_dirs: &[NodeDirs], proxies: &[Proxy]) -> Vec<String> {
    if proxies.is_empty() {
        follower_dirs.iter().map(|d| d.addr()).collect()
    } else {
        proxies.iter().map(|p| p.listen.clone()).collect()
    }
}

/// How a client's operation ended, for the history.
fn record(client: usize, key: &str, kind: OpKind, call: u64, ret: Option<u64>) -> Operation {
    Operation {
        client,
        key: key.to_string(),
        kind,
        call,
        ret,
    }
}

/// Whether a failed write is known not to have been applied: ABORTED, or UNAVAILABLE
/// from the leader's own refusal. Anything else (a crash, a timeout) is unknown.
fn surely_not_applied(status: &tonic::Status) -> bool {
    status.code() == Code::Aborted
        || (status.code() == Code::Unavailable && status.message().starts_with("write not applied"))
        || never_sent(status)
}

/// What a write's answer (got at `now`) says: acknowledged (`Some(Some(now))`), of
/// unknown outcome (`Some(None)`), or surely not applied (`None`).
fn write_outcome<T>(answer: &Result<T, tonic::Status>, seed: u64, now: u64) -> Option<Option<u64>> {
    match answer {
        Ok(_) => Some(Some(now)),
        Err(s) if surely_not_applied(s) => None,
        Err(s) => {
            assert_ne!(s.code(), Code::InvalidArgument, "seed {seed}: {s:?}");
            Some(None)
        }
    }
}

/// The client could not connect to the leader, so the request never left it.
fn never_sent(status: &tonic::Status) -> bool {
    const CONNECT_FAILURES: [&str; 4] = [
        "tcp connect error",
        "Connection refused",
        "No such file or directory",
        "error trying to connect",
    ];
    status.code() == Code::Unavailable
        && CONNECT_FAILURES
            .iter()
            .any(|m| status.message().contains(m))
}

/// One client: a seeded sequence of operations until `stop`.
async fn client_loop(
    id: usize,
    config: Config,
    leader: String,
    start: Instant,
    stop: Arc<AtomicBool>,
) -> (Observed, usize) {
    let mut rng = StdRng::seed_from_u64(config.seed.wrapping_mul(1000) + id as u64);
    let mut client = Client::new(&leader, Duration::from_secs(3)).expect("client");
    let now = || start.elapsed().as_nanos() as u64;
    let mut observed = Observed::default();
    let history = &mut observed.history;
    let mut attempts = 0;
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        attempts += 1;
        let key = format!("key{}", rng.random_range(0..config.keys));
        let choice = rng.random_range(0..100);
        let mut failed = false;
        let call = now();
        // 2-4 distinct keys, for a transaction.
        let mut several = || {
            let mut keys: Vec<String> = (0..config.keys).map(|k| format!("key{k}")).collect();
            let count = rng.random_range(2..=config.keys.clamp(2, 4));
            for i in 0..count {
                let j = rng.random_range(i..keys.len());
                keys.swap(i, j);
            }
            keys.truncate(count);
            keys
        };
        if choice < 15 && config.keys >= 2 {
            n += 1;
            let value = format!("t{id}-{n}");
            let keys = several();
            let txn = keys.iter().fold(Txn::new(), |t, k| t.then_put(k, &value));
            observed.written.insert(value.clone(), keys.clone());
            let answer = client.txn(txn).await;
            match write_outcome(&answer, config.seed, now()) {
                Some(ret) => {
                    for k in &keys {
                        history.push(record(id, k, OpKind::Put(value.clone()), call, ret));
                    }
                }
                None => failed = true,
            }
        } else if choice < 25 && config.keys >= 2 {
            let keys = several();
            let txn = keys.iter().fold(Txn::new(), |t, k| t.then_get(k));
            match client.txn(txn).await {
                Ok(answer) => {
                    let ret = now();
                    let snapshot = snapshot_of(&answer, config.seed);
                    for (k, held) in &snapshot {
                        let value = held.as_ref().map(|(v, _)| v.clone());
                        history.push(record(id, k, OpKind::Get(value), call, Some(ret)));
                    }
                    observed.snapshots.push(snapshot);
                }
                Err(_) => failed = true,
            }
        } else if choice < 55 {
            n += 1;
            let value = format!("c{id}-{n}");
            let answer = client.put(&key, &value).await;
            match write_outcome(&answer, config.seed, now()) {
                Some(ret) => history.push(record(id, &key, OpKind::Put(value), call, ret)),
                None => failed = true,
            }
        } else if choice < 65 {
            match client.delete(&key).await {
                Ok(()) => history.push(record(id, &key, OpKind::Delete, call, Some(now()))),
                Err(s) if surely_not_applied(&s) => failed = true,
                Err(_) => history.push(record(id, &key, OpKind::Delete, call, None)),
            }
        } else {
            match client.get(&key).await {
                Ok(v) => history.push(record(id, &key, OpKind::Get(Some(v)), call, Some(now()))),
                Err(s) if s.code() == Code::NotFound => {
                    history.push(record(id, &key, OpKind::Get(None), call, Some(now())))
                }
                Err(_) => failed = true,
            }
        }
        if failed || history.last().is_some_and(|op| op.ret.is_none()) {
            // The leader or a follower is probably down: don't spin.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    (observed, attempts)
}

/// A read-only transaction's answer, as keys, values and versions.
fn snapshot_of(answer: &api::TxnResponse, seed: u64) -> Snapshot {
    answer
        .results
        .iter()
        .map(|r| {
            let held = r.found.then(|| {
                let version = r
                    .version
                    .parse()
                    .unwrap_or_else(|e| panic!("seed {seed}: bad version {:?}: {e}", r.version));
                (r.value.clone(), version)
            });
            (r.key.clone(), held)
        })
        .collect()
}

/// No snapshot sees a transaction of several keys in part: if a key holds the value
/// such a transaction wrote, at version V (its id), every other key it wrote that the
/// snapshot read is at a version after V (a later transaction wrote it), or at V with
/// the same value.
///
/// An absent key is accepted only if some client deleted it (a delete leaves no version
/// to order it by).
fn check_atomic_visibility(
    snapshots: &[Snapshot],
    written: &Written,
    deleted: &std::collections::BTreeSet<String>,
) -> Result<(), String> {
    for snapshot in snapshots {
        let held = |key: &str| snapshot.iter().find(|(k, _)| k == key).map(|(_, h)| h);
        for (key, state) in snapshot {
            let Some((value, version)) = state else {
                continue;
            };
            let Some(keys) = written.get(value) else {
                continue;
            };
            for other in keys.iter().filter(|k| *k != key) {
                let Some(other_state) = held(other) else {
                    continue;
                };
                let whole = match other_state {
                    Some((v, w)) => w > version || (w == version && v == value),
                    None => false,
                };
                let deleted_later = other_state.is_none() && deleted.contains(other);
                if !whole && !deleted_later {
                    return Err(format!(
                        "a read saw {key:?} = {value:?} at {version} (a transaction that also \
                         wrote {other:?}), but {other:?} = {other_state:?}: {snapshot:?}"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Reads `key` through the leader until it answers (the cluster is healed).
async fn final_read(leader: &str, key: &str, client_id: usize, start: Instant) -> Operation {
    let mut client = Client::new(leader, Duration::from_secs(3)).expect("client");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let call = start.elapsed().as_nanos() as u64;
        let answer = match client.get(key).await {
            Ok(v) => Some(Some(v)),
            Err(s) if s.code() == Code::NotFound => Some(None),
            Err(_) => None,
        };
        if let Some(value) = answer {
            return record(
                client_id,
                key,
                OpKind::Get(value),
                call,
                Some(start.elapsed().as_nanos() as u64),
            );
        }
        assert!(
            Instant::now() < deadline,
            "the healed cluster did not answer Get({key:?}) within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads every key in one read-only transaction through the healed cluster.
async fn final_snapshot(leader: &str, keys: usize, seed: u64) -> Snapshot {
    let mut client = Client::new(leader, Duration::from_secs(3)).expect("client");
    let txn = (0..keys).fold(Txn::new(), |t, k| t.then_get(&format!("key{k}")));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match client.txn(txn.clone()).await {
            Ok(answer) => return snapshot_of(&answer, seed),
            Err(s) => assert!(
                Instant::now() < deadline,
                "seed {seed}: the healed cluster did not answer a read of every key: {s:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One chaos run; returns the number of operations in its history.
/// A follower's member id, from its journal directory.
fn member_id(dirs: &NodeDirs) -> MemberId {
    let id = std::fs::read_to_string(dirs.journal_dir().join(tpc::member::FILE))
        .expect("a started follower has a member id");
    MemberId(id.trim().to_string())
}

/// Where the cluster's keys live: its first (and only) view.
fn placement_of(follower_dirs: &[NodeDirs], replication: usize) -> View {
    let ids: Vec<MemberId> = follower_dirs.iter().map(member_id).collect();
    View::new(1, replication, &ids)
}

async fn run(config: Config) -> usize {
    let plan = schedule(&config);
    let mut nodes = Nodes::start(&config);
    let leader = nodes.leader_addr();
    support::wait_leader_ready(&leader).await;

    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..config.clients)
        .map(|id| {
            tokio::spawn(client_loop(
                id,
                config.clone(),
                leader.clone(),
                start,
                stop.clone(),
            ))
        })
        .collect();

    // The nemesis, on this task.
    let mut rng = StdRng::seed_from_u64(config.seed ^ 0x6c696e6b);
    let mut kills = 0;
    let mut cuts = 0;
    for (wait, fault, pause) in &plan {
        if start.elapsed() + *wait >= config.duration {
            break;
        }
        tokio::time::sleep(*wait).await;
        match fault {
            Fault::KillFollower(i) => {
                nodes.followers[*i].kill();
                tokio::time::sleep(*pause).await;
                nodes.restart_follower(*i);
                kills += 1;
            }
            Fault::KillLeader => {
                nodes.leader.kill();
                tokio::time::sleep(*pause).await;
                nodes.restart_leader();
                kills += 1;
            }
            Fault::CutLink(i) => {
                let flags = link_fault_flags(&mut rng);
                let seed = rng.random();
                nodes.proxies[*i].restart(&nodes.follower_dirs[*i], &flags, seed);
                cuts += 1;
            }
        }
    }
    let remaining = config.duration.saturating_sub(start.elapsed());
    tokio::time::sleep(remaining).await;
    stop.store(true, Ordering::Relaxed);

    let mut history = Vec::new();
    let mut snapshots = Vec::new();
    let mut written = Written::new();
    let mut attempts = 0;
    for client in clients {
        let (observed, tried) = client.await.expect("client task");
        history.extend(observed.history);
        snapshots.extend(observed.snapshots);
        written.extend(observed.written);
        attempts += tried;
    }

    // Heal: every node up, links without faults; then read every key.
    nodes.heal_links(config.seed);
    for i in 0..config.followers {
        nodes.restart_follower(i);
    }
    nodes.restart_leader();
    for k in 0..config.keys {
        history.push(final_read(&leader, &format!("key{k}"), config.clients, start).await);
    }
    // And every key at once: what the nodes hold is all-or-nothing for every transaction.
    snapshots.push(final_snapshot(&leader, config.keys, config.seed).await);

    let acked = history
        .iter()
        .filter(|op| op.ret.is_some() && !matches!(op.kind, OpKind::Get(_)))
        .count();
    let unknown = history.iter().filter(|op| op.ret.is_none()).count();
    eprintln!(
        "chaos seed {}: {} operations attempted, {} in the history ({acked} acknowledged writes, {unknown} unknown), {} transactions of several keys, {} snapshot reads, {kills} kills, {cuts} link cuts, {:.1} s",
        config.seed,
        attempts,
        history.len(),
        written.len(),
        snapshots.len(),
        start.elapsed().as_secs_f64()
    );
    if let Err(violation) = check::check(&history) {
        panic!("chaos seed {}: {violation}", config.seed);
    }
    let deleted = history
        .iter()
        .filter(|op| op.kind == OpKind::Delete)
        .map(|op| op.key.clone())
        .collect();
    if let Err(torn) = check_atomic_visibility(&snapshots, &written, &deleted) {
        panic!("chaos seed {}: {torn}", config.seed);
    }

    // Every replica answers every key it holds (no lock left), then the replicas of each
    // key hold the same value and version (DESIGN §1.8), and no other follower holds it.
    let placement = placement_of(&nodes.follower_dirs, config.replication);
    let ids: Vec<MemberId> = nodes.follower_dirs.iter().map(member_id).collect();
    let holds = |f: usize, key: &str| placement.holds(&ids[f], key);
    for (f, dirs) in nodes.follower_dirs.iter().enumerate() {
        for k in 0..config.keys {
            let key = format!("key{k}");
            if holds(f, &key) {
                support::settled_get(&dirs.addr(), &key).await;
            }
        }
    }
    nodes.stop_all();
    let dumps: Vec<BTreeMap<String, Versioned>> = nodes
        .follower_dirs
        .iter()
        .map(|d| {
            KvStore::open(&d.kv_dir())
                .and_then(|kv| kv.dump())
                .expect("read a follower's kv dir")
        })
        .collect();
    for k in 0..config.keys {
        let key = format!("key{k}");
        let copies: Vec<(usize, Option<&Versioned>)> = (0..dumps.len())
            .filter(|&f| holds(f, &key))
            .map(|f| (f + 1, dumps[f].get(&key)))
            .collect();
        assert!(
            copies.iter().all(|(_, copy)| *copy == copies[0].1),
            "chaos seed {}: the replicas of {key} differ: {copies:?}",
            config.seed
        );
        for (f, dump) in dumps.iter().enumerate() {
            assert!(
                holds(f, &key) || !dump.contains_key(&key),
                "chaos seed {}: follower {} holds {key}, which it is no replica of",
                config.seed,
                f + 1
            );
        }
    }
    history.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_stays_linearizable_and_followers_identical_under_kills_and_link_faults() {
    let configs = configs();
    let mut operations = 0;
    for config in &configs {
        operations += run(config.clone()).await;
    }
    eprintln!(
        "chaos: {operations} operations checked over {} seeds",
        configs.len()
    );
}

#[test]
fn the_same_seed_gives_the_same_schedule() {
    let config = configs().remove(0);
    let describe = |c: &Config| format!("{:?}", schedule(c));
    assert_eq!(describe(&config), describe(&config.clone()));
    let other = Config {
        seed: config.seed + 1,
        ..config.clone()
    };
    assert_ne!(describe(&config), describe(&other));
}

#[test]
fn the_atomic_visibility_check_catches_a_transaction_seen_in_part() {
    let v = |s: &str| s.parse::<TxId>().unwrap();
    let written: Written = [("t1".to_string(), vec!["a".to_string(), "b".to_string()])].into();
    let deleted = std::collections::BTreeSet::from(["c".to_string()]);
    let snapshot = |b: Option<(&str, &str)>| -> Snapshot {
        vec![
            ("a".into(), Some(("t1".into(), v("2.5")))),
            ("b".into(), b.map(|(value, at)| (value.to_string(), v(at)))),
        ]
    };
    let check = |b| check_atomic_visibility(&[snapshot(b)], &written, &deleted);
    assert!(check(Some(("t1", "2.5"))).is_ok(), "whole");
    assert!(check(Some(("later", "2.9"))).is_ok(), "b overwritten later");
    assert!(check(Some(("before", "2.1"))).is_err(), "b from before t1");
    assert!(
        check(Some(("other", "2.5"))).is_err(),
        "same version, other value"
    );
    assert!(check(None).is_err(), "b absent, and nobody deleted it");
}
