//! The chaos test: concurrent clients read, write and delete a small key space through
//! the leader while a seeded nemesis kills -9 and restarts any node, the links between
//! the leader and its followers drop, duplicate, delay, replay and cut messages (through
//! `tpc proxy`), and, when there are more followers than replicas per key, the members
//! change (DESIGN §8): the nemesis removes a member with `tpc members remove`, later adds
//! it back with `tpc members add` (the built binary, as an operator runs it), and often
//! kills a node while the keys move: the follower that moves, another follower, or the
//! leader, killed and restarted after a pause, or a follower restarted *empty* (journal
//! and key-value directories deleted: a new member id, which replaces the member at its
//! address and catches up: the follower that moves, one that stays a member, or one out
//! of the members). A change the leader refuses (the follower has not answered
//! since it restarted, another change is under way, the leader is down) is tried again
//! until the leader accepts it or the run ends; a change whose answer was lost is known
//! to have taken effect when the leader later says the follower already is (or is no
//! longer) a member. Followers ask one another for decisions that are late
//! (cooperative termination, DESIGN §9) after a short `--termination-timeout`.
//!
//! Afterwards the network is healed, every node restarted, and the nemesis waits (at most
//! [`SETTLE_TIMEOUT`]) until no change is under way (`moving_keys` 0) and every member
//! of the view is the follower now at its address (a follower restarted empty has
//! replaced its member). The placement is checked against that view; then every follower
//! the view lacks is added back, and once that change is done too, the final checks run
//! against the final view, which holds every follower:
//!
//! - the client history is linearizable (checked per key by `tpc::check`; writes whose
//!   outcome a client could not learn may take effect or not; a transaction of several
//!   keys is one write per key; a write that fails with ABORTED, or UNAVAILABLE from the
//!   leader's own refusal, for example across a change of the members, was not applied);
//! - no read sees a transaction in part (DESIGN §6): the workload has transactions that
//!   write one unique value to 2-4 keys, and read-only `Txn`s of several keys; in each
//!   such read, a key holding a transaction's value at version V means every other key
//!   of that transaction is at a version after V, or at V with the same value;
//! - every acknowledged write is there (the final reads, through the leader once the
//!   members are settled, are part of the history);
//! - replicas converge on the view in force (computed with `tpc::placement::View` from
//!   the member ids the leader lists, each member mapped to its follower by the address
//!   the leader dials it at, a proxy's): every replica of a key answers a direct read
//!   of it with the same value and version, and every other follower answers
//!   FAILED_PRECONDITION naming the view's epoch; after the final view, the nodes are
//!   stopped and their key-value directories compared: the replicas of each key hold
//!   the same value and version, and no other follower holds the key.
//!
//! Odd seeds run 3 followers that each hold every key; even seeds 4 followers with 3
//! replicas per key (`--replication 3`, DESIGN §7), so a transaction's participants are
//! some of the followers and a transaction of several keys spans followers none of which
//! holds all its keys; the nemesis changes the members in these runs only (its first
//! fault is a removal, so even a short run has one), with at most `followers -
//! replication + 1` members out at once (2 of 4: the other 2 then hold every key).
//!
//! Standby leaders (DESIGN §9): some seeds run 3 leaders (`--peer`) that elect an
//! active one. Where a single leader is killed and restarted, the nemesis then kills -9
//! the active leader (found by asking the running leaders' status) and restarts it a
//! while later, as the other faults go on; or kills -9 a standby the same way; or makes
//! the active leader a zombie: SIGSTOP until another leader is active, then SIGCONT,
//! after which it must stand down (its stale writes are fenced by the new epoch, and it
//! must not serve stale reads: the clients send to it too). At most one leader is down
//! or stopped at once, so the other two can always elect one. The clients spread their
//! calls over every leader address (standbys forward), the operator's `tpc members`
//! runs with `--leader A,B,C`, and the final checks go through the active leader once
//! every running leader names it. A standby's refusals (UNAVAILABLE: no leader active,
//! standing down, forwarded to one no longer active, the active leader unreachable) are
//! "not applied" like the leader's own. The summary counts the leader faults and the
//! takeovers (epoch changes) they caused.
//!
//! By default seeds that are a multiple of 3 run a single leader and the others 3
//! (`TPC_CHAOS_LEADERS` for every seed), so the seeds 1,2,3 run 3 leaders of 3
//! followers, 3 leaders of 4 changing members, and a single leader.
//!
//! The same seed gives the same nemesis schedule and the same client operations (their
//! interleaving with real processes is up to the machine, and so is how long a change
//! takes to be accepted). A failure prints the seed, the offending key's history, what
//! the nemesis did and when, and the nodes' logs.
//!
//! CI runs a bounded version. For a soak: `TPC_CHAOS_SEEDS=1,2,3,4 TPC_CHAOS_SECONDS=600
//! cargo test --release --test chaos -- --nocapture` (also `TPC_CHAOS_CLIENTS`,
//! `TPC_CHAOS_KEYS`, `TPC_CHAOS_FOLLOWERS`, `TPC_CHAOS_REPLICATION` and
//! `TPC_CHAOS_LEADERS` for every seed,
//! `TPC_CHAOS_LINK_FAULTS=0` to kill nodes only, `TPC_CHAOS_MEMBERS=0` to leave the
//! members alone, and `TPC_CHAOS_VERBOSE=1` to print the nemesis's actions
//! as they happen).

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

use support::outcomes::{record, surely_not_applied};
use support::{spawn_with_args, Node, NodeDirs, Role};
use tpc::check::{self, OpKind, Operation};
use tpc::client::{members, Client, Txn};
use tpc::kvstore::{KvStore, Versioned};
use tpc::placement::{MemberId, View};
use tpc::proto::{api, rpc};
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
    /// Whether the nemesis may change the members (only with more followers than
    /// replicas per key).
    members: bool,
    /// How many leaders: 1, or 3 or more standby leaders (`--peer`).
    leaders: usize,
}

impl Config {
    /// The nemesis changes the members: there are more followers than replicas per key.
    fn changes_members(&self) -> bool {
        self.members && self.followers > self.replication
    }

    /// How many followers may be out of the members at once: as many as leave every key
    /// on at least `replication - 1` members, and one member at least.
    fn most_out(&self) -> usize {
        (self.followers - self.replication + 1).min(self.followers - 1)
    }
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
            members: env_or("TPC_CHAOS_MEMBERS", 1u8) != 0,
            leaders: env_or("TPC_CHAOS_LEADERS", default_leaders(seed)),
        })
        .inspect(|c| {
            assert!(
                c.leaders == 1 || c.leaders >= 3,
                "TPC_CHAOS_LEADERS: 1, or 3 or more (two leaders cannot fail over)"
            )
        })
        .collect()
}

/// How many leaders a seed runs by default: a single leader for multiples of 3, else
/// 3 (so that 1,2,3 run standby leaders with and without changes of the members, and
/// a single leader).
fn default_leaders(seed: u64) -> usize {
    match seed % 3 {
        0 => 1,
        _ => 3,
    }
}

/// What the nemesis does next.
#[derive(Clone, Debug)]
enum Fault {
    /// kill -9 a follower, restart it after the pause.
    KillFollower(usize),
    /// kill -9 the single leader, restart it after the pause.
    KillLeader,
    /// With standby leaders: a fault of one leader (see [`LeaderFault`]).
    Leader(LeaderFault),
    /// Cut every stream of one link (restart its proxy), with new fault rates.
    CutLink(usize),
    /// `tpc members remove` follower `follower` (`add: false`) or `tpc members add` it,
    /// tried until the leader accepts it or the run ends; once accepted, after `after`,
    /// `then` while its keys move, the pause being how long a killed node stays down.
    Members {
        follower: usize,
        add: bool,
        after: Duration,
        then: Option<InMove>,
    },
}

/// What the nemesis does to one of several leaders. The pause is how long a killed
/// leader stays down (the nemesis goes on meanwhile), or how long a zombie stays
/// stopped once another leader is active.
#[derive(Clone, Debug, PartialEq)]
enum LeaderFault {
    /// kill -9 the active leader, restart it after the pause.
    KillActive,
    /// kill -9 a standby (the `n`th running one, modulo their count), restart it after
    /// the pause.
    KillStandby(usize),
    /// SIGSTOP the active leader until another is active, SIGCONT it after the pause;
    /// it must stand down.
    Zombie,
}

/// What the nemesis does to a node while a change of the members is under way.
#[derive(Clone, Debug, PartialEq)]
enum InMove {
    /// kill -9 follower `i`, restart it after the pause.
    KillFollower(usize),
    /// kill -9 follower `i`, delete its journal and key-value directories, and restart
    /// it after the pause: a new member id, which replaces its member and catches up.
    EmptyFollower(usize),
    /// kill -9 the leader (the active one, with standby leaders), restart it after the
    /// pause (with standby leaders, as the nemesis goes on).
    KillLeader,
}

/// The nemesis schedule: (wait before, fault, pause before the restart).
///
/// With more followers than replicas per key, the first fault and about 3 in 10 of the
/// others change the members ([`members_fault`]), some right after the fault before.
/// With standby leaders, the faults that kill the single leader hit one of the leaders
/// instead ([`LeaderFault`]), down longer (a takeover takes about 2 s), and never while
/// another leader is planned down or stopped ([`plan_step`]): a follower is killed
/// instead.
fn schedule(config: &Config) -> Vec<(Duration, Fault, Duration)> {
    let mut rng = StdRng::seed_from_u64(config.seed ^ 0x6e656d65);
    let mut plan = Vec::new();
    let mut at = Duration::ZERO;
    // The followers out of the members, as planned.
    let mut out = Vec::new();
    // When the last leader fault is planned to be over (its leader back, and ready).
    let mut leaders_whole = Duration::ZERO;
    while at < config.duration {
        let change = config.changes_members() && (plan.is_empty() || rng.random_range(0..10) < 3);
        // A change may come right after the fault before it: the leader may refuse it
        // (the change before still under way, the follower not answered since it
        // restarted), and it is tried again.
        let wait = Duration::from_millis(match change {
            true => rng.random_range(50..1600),
            false => rng.random_range(400..1600),
        });
        let leader_may_fail = at + wait >= leaders_whole;
        let mut fault = if change {
            members_fault(config, &mut rng, &mut out)
        } else {
            match rng.random_range(0..10) {
                0..=4 => Fault::KillFollower(rng.random_range(0..config.followers)),
                5..=7 if config.leaders == 1 => Fault::KillLeader,
                5..=7 if leader_may_fail => Fault::Leader(match rng.random_range(0..3) {
                    0 => LeaderFault::KillActive,
                    1 => LeaderFault::KillStandby(rng.random_range(0..config.leaders - 1)),
                    _ => LeaderFault::Zombie,
                }),
                5..=7 => Fault::KillFollower(rng.random_range(0..config.followers)),
                _ if config.link_faults => Fault::CutLink(rng.random_range(0..config.followers)),
                _ => Fault::KillFollower(rng.random_range(0..config.followers)),
            }
        };
        if let Fault::Members {
            follower,
            then: then @ Some(InMove::KillLeader),
            ..
        } = &mut fault
        {
            if config.leaders > 1 && !leader_may_fail {
                *then = Some(InMove::KillFollower(*follower));
            }
        }
        let pause = Duration::from_millis(match (config.leaders, &fault) {
            (1, _) => rng.random_range(20..400),
            (_, Fault::Leader(LeaderFault::Zombie)) => rng.random_range(0..1000),
            (_, f) if hits_a_leader(f) => rng.random_range(300..4000),
            _ => rng.random_range(20..400),
        });
        let (next, leader_out) = plan_step(config, at, wait, &fault, pause);
        if let Some((_, back)) = leader_out {
            leaders_whole = back + LEADER_READY;
        }
        at = next;
        plan.push((wait, fault, pause));
    }
    plan
}

/// Whether a fault kills, or stops, a leader.
fn hits_a_leader(fault: &Fault) -> bool {
    matches!(
        fault,
        Fault::KillLeader
            | Fault::Leader(_)
            | Fault::Members {
                then: Some(InMove::KillLeader),
                ..
            }
    )
}

/// How long, in the plan, a restarted leader takes to be ready to vote again.
const LEADER_READY: Duration = Duration::from_secs(1);

/// How long, in the plan, a zombie stays stopped before another leader is active.
const PLANNED_TAKEOVER: Duration = Duration::from_secs(3);

/// Where the planned timeline stands after a fault planned at `at`: when the nemesis
/// goes on to the next, and when a leader is down or stopped, if one is (from, to).
/// With standby leaders, a killed leader's restart waits while the nemesis goes on;
/// everything else takes its pause before the nemesis goes on. (The plan only: a change of the members
/// takes as long as the leader refuses it, and a takeover as long as it takes.)
fn plan_step(
    config: &Config,
    at: Duration,
    wait: Duration,
    fault: &Fault,
    pause: Duration,
) -> (Duration, Option<(Duration, Duration)>) {
    let from = match fault {
        Fault::Members { after, .. } => at + wait + *after,
        _ => at + wait,
    };
    match fault {
        Fault::Leader(LeaderFault::Zombie) => {
            let to = from + PLANNED_TAKEOVER + pause;
            (to, Some((from, to)))
        }
        f if hits_a_leader(f) && config.leaders > 1 => (from, Some((from, from + pause))),
        f if hits_a_leader(f) => (at + wait + pause, Some((from, from + pause))),
        _ => (at + wait + pause, None),
    }
}

/// A change of the members: adds back a follower of `out` (the followers out of the
/// members), or removes a member (the first time, or when none is out, or sometimes
/// when fewer than [`Config::most_out`] are out), then maybe hits a node while the
/// keys move.
fn members_fault(config: &Config, rng: &mut StdRng, out: &mut Vec<usize>) -> Fault {
    let add = !out.is_empty() && (out.len() >= config.most_out() || rng.random_bool(0.6));
    let follower = if add {
        out.swap_remove(rng.random_range(0..out.len()))
    } else {
        let members: Vec<usize> = (0..config.followers).filter(|f| !out.contains(f)).collect();
        let f = members[rng.random_range(0..members.len())];
        out.push(f);
        f
    };
    let other = (follower + rng.random_range(1..config.followers)) % config.followers;
    // Another follower to restart empty: any other (a member that stays, or one out of
    // the members), or one in neither view.
    let others_out: Vec<usize> = out.iter().copied().filter(|&f| f != follower).collect();
    let then = match rng.random_range(0..10) {
        0..=1 => None,
        2..=3 => Some(InMove::KillFollower(follower)),
        4..=5 => Some(InMove::EmptyFollower(follower)),
        6 => Some(InMove::KillFollower(other)),
        7 => Some(InMove::EmptyFollower(other)),
        8 if !others_out.is_empty() => Some(InMove::EmptyFollower(
            others_out[rng.random_range(0..others_out.len())],
        )),
        _ => Some(InMove::KillLeader),
    };
    Fault::Members {
        follower,
        add,
        after: Duration::from_millis(rng.random_range(0..250)),
        then,
    }
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
    /// The leader, or the standby leaders (`--peer`).
    leaders: Vec<Node>,
    followers: Vec<Node>,
    proxies: Vec<Proxy>,
    leader_dirs: Vec<NodeDirs>,
    follower_dirs: Vec<NodeDirs>,
    vote_timeout: String,
    /// The leader's `--replication`.
    replication: String,
    /// With standby leaders: the leader killed, and when to restart it.
    leader_down: Option<(usize, Instant)>,
}

/// A follower that asks the other participants soon (cooperative termination, DESIGN
/// §9): with the leader killed for longer than that, or cut off, transactions are
/// decided among the followers, through the proxies and their faults.
fn start_follower(dirs: &NodeDirs) -> Node {
    let args = [("--termination-timeout", FOLLOWER_TERMINATION_TIMEOUT)];
    spawn_with_args(dirs, Role::Follower, &dirs.addr(), &args)
}

/// The followers' `--termination-timeout`: about as long as the nemesis's pauses, so
/// some transactions are decided among the followers while the leader is down, and some
/// are asked about while it is up (which must be as safe).
const FOLLOWER_TERMINATION_TIMEOUT: &str = "300ms";

impl Nodes {
    fn start(config: &Config) -> Nodes {
        let follower_dirs: Vec<NodeDirs> = (0..config.followers)
            .map(|i| NodeDirs::new(&format!("chaos-f{}", i + 1)))
            .collect();
        let leader_dirs = match config.leaders {
            1 => vec![NodeDirs::new("chaos-leader")],
            n => (1..=n)
                .map(|i| NodeDirs::new(&format!("chaos-leader{i}")))
                .collect(),
        };
        let followers = follower_dirs.iter().map(start_follower).collect();
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
        let mut nodes = Nodes {
            leaders: Vec::new(),
            followers,
            proxies,
            leader_dirs,
            follower_dirs,
            vote_timeout: "150ms".to_string(),
            replication: config.replication.to_string(),
            leader_down: None,
        };
        nodes.leaders = (0..config.leaders).map(|i| nodes.spawn_leader(i)).collect();
        nodes
    }

    /// Starts leader `i`: with standby leaders, its `--peer`s are the others' addresses.
    fn spawn_leader(&self, i: usize) -> Node {
        let role = Role::Leader {
            followers: self.targets(),
            vote_timeout: self.vote_timeout.clone(),
        };
        let peers: Vec<String> = (0..self.leader_dirs.len())
            .filter(|&j| j != i)
            .map(|j| self.leader_dirs[j].addr())
            .collect();
        let peers = peers.join(",");
        let mut args = vec![("--replication", self.replication.as_str())];
        if !peers.is_empty() {
            args.push(("--peer", &peers));
        }
        let dirs = &self.leader_dirs[i];
        spawn_with_args(dirs, role, &dirs.addr(), &args)
    }

    /// Every leader's address (clients spread their calls over them).
    fn leader_addrs(&self) -> Vec<String> {
        self.leader_dirs.iter().map(NodeDirs::addr).collect()
    }

    /// Every leader's address, for `tpc ... --leader A,B,C`.
    fn leader_list(&self) -> String {
        self.leader_addrs().join(",")
    }

    /// The leaders the nemesis has not killed.
    fn running_leaders(&self) -> Vec<usize> {
        let down = self.leader_down.map(|(i, _)| i);
        (0..self.leaders.len())
            .filter(|&i| Some(i) != down)
            .collect()
    }

    /// A running leader's address: it serves the call, or forwards it to the active
    /// leader.
    fn some_leader(&self) -> String {
        self.leader_dirs[self.running_leaders()[0]].addr()
    }

    /// kill -9 and restart leader `i` (it is no longer down).
    fn restart_leader(&mut self, i: usize) {
        self.leaders[i].kill();
        self.leaders[i] = self.spawn_leader(i);
        if self.leader_down.is_some_and(|(d, _)| d == i) {
            self.leader_down = None;
        }
    }

    /// kill -9 leader `i`, to be restarted after `down` ([`Nodes::restart_due`]).
    fn kill_leader(&mut self, i: usize, down: Duration) {
        assert!(self.leader_down.is_none(), "one leader down at most");
        self.leaders[i].kill();
        self.leader_down = Some((i, Instant::now() + down));
    }

    /// Restarts the leader that is down if its time has come; says so.
    fn restart_due(&mut self, events: &mut Events) {
        if let Some((i, at)) = self.leader_down {
            if at <= Instant::now() {
                self.restart_leader(i);
                events.note(format!("restart leader {}", i + 1));
            }
        }
    }

    /// Before a leader fault: restarts the leader that is down, if any, now, and waits
    /// until it answers, so that two leaders can always elect one.
    async fn every_leader_up(&mut self, events: &mut Events) {
        let Some((i, _)) = self.leader_down else {
            return;
        };
        self.restart_leader(i);
        events.note(format!(
            "restart leader {} (early, for a leader fault)",
            i + 1
        ));
        let addr = self.leader_dirs[i].addr();
        support::poll(
            &format!("the restarted leader {} to answer", i + 1),
            ACTIVE_TIMEOUT,
            || async { tpc::client::status::fetch(&addr, Duration::from_secs(1)).await },
        )
        .await;
    }

    /// The active leader, as its own status says, of the running leaders `of` (at
    /// most [`ACTIVE_TIMEOUT`]): its index and status.
    async fn active_of(&self, of: &[usize], seed: u64) -> (usize, rpc::StatusReply) {
        let addrs = self.leader_addrs();
        support::poll(
            &format!("chaos seed {seed}: a leader of {of:?} (from 0) to be active"),
            ACTIVE_TIMEOUT,
            || async {
                let mut said = Vec::new();
                for &i in of {
                    match tpc::client::status::fetch(&addrs[i], Duration::from_secs(1)).await {
                        Ok(status) if status.role == "active" || status.role == "leader" => {
                            return Ok((i, status))
                        }
                        Ok(status) => said.push(format!("{i}: {}", status.role)),
                        Err(e) => said.push(format!("{i}: {e}")),
                    }
                }
                Err(said.join("; "))
            },
        )
        .await
    }

    /// The active leader of the running ones.
    async fn active(&self, seed: u64) -> (usize, rpc::StatusReply) {
        self.active_of(&self.running_leaders(), seed).await
    }

    /// Waits (at most [`ACTIVE_TIMEOUT`]) until every running leader names the same
    /// active leader, which has formed its view and serves reads; its address.
    async fn agreed_active(&self, seed: u64) -> String {
        let addrs = self.leader_addrs();
        if addrs.len() == 1 {
            support::wait_leader_ready(&addrs[0]).await;
            return addrs[0].clone();
        }
        let active = support::agreed_active(
            &format!("chaos seed {seed}"),
            &addrs,
            &self.running_leaders(),
            ACTIVE_TIMEOUT,
        )
        .await;
        support::wait_leader_ready(&addrs[active]).await;
        addrs[active].clone()
    }

    fn restart_follower(&mut self, i: usize) {
        self.followers[i].kill();
        let d = &self.follower_dirs[i];
        self.followers[i] = start_follower(d);
    }

    /// Kills follower `i` and deletes its journal and key-value directories (a new
    /// disk): restarted, it has a new member id.
    fn empty_follower(&mut self, i: usize) {
        self.followers[i].kill();
        let d = &self.follower_dirs[i];
        for dir in [d.journal_dir(), d.kv_dir()] {
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    panic!("remove {}: {e}", dir.display())
                }
                _ => {}
            }
        }
    }

    /// The addresses the leader dials its followers at, in follower order.
    fn targets(&self) -> Vec<String> {
        follower_targets(&self.follower_dirs, &self.proxies)
    }

    /// Restarts every proxy without faults.
    fn heal_links(&mut self, seed: u64) {
        for (i, proxy) in self.proxies.iter_mut().enumerate() {
            proxy.restart(&self.follower_dirs[i], &[], seed);
        }
    }

    fn stop_all(&mut self) {
        for l in &mut self.leaders {
            l.kill();
        }
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

/// How long the leaders may take to have an active one (an election and a takeover
/// take about 2 s, more on a busy machine).
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(30);

/// Sleeps `d`, restarting the leader that is down when its time comes.
async fn nap(nodes: &mut Nodes, d: Duration, events: &mut Events) {
    let until = Instant::now() + d;
    loop {
        nodes.restart_due(events);
        let wake = match nodes.leader_down {
            Some((_, at)) => at.min(until),
            None => until,
        };
        let now = Instant::now();
        if now >= until {
            return;
        }
        tokio::time::sleep(wake.saturating_duration_since(now)).await;
    }
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

/// One client: a seeded sequence of operations until `stop`.
///
/// With several leaders, each operation goes to one of them at random: a standby
/// forwards it to the active leader.
async fn client_loop(
    id: usize,
    config: Config,
    leaders: Vec<String>,
    start: Instant,
    stop: Arc<AtomicBool>,
) -> (Observed, usize) {
    let mut rng = StdRng::seed_from_u64(config.seed.wrapping_mul(1000) + id as u64);
    let mut clients: Vec<Client> = leaders
        .iter()
        .map(|l| Client::new(l, Duration::from_secs(3)).expect("client"))
        .collect();
    let now = || start.elapsed().as_nanos() as u64;
    let mut observed = Observed::default();
    let history = &mut observed.history;
    let mut attempts = 0;
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        attempts += 1;
        let client = match clients.len() {
            1 => &mut clients[0],
            n => &mut clients[rng.random_range(0..n)],
        };
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

/// How long the members may take to settle once every node is healed and running: a
/// change under way waits for its new replicas to catch up (and for a leaving member that
/// does not answer to be given up on), a follower restarted empty then replaces its
/// member and catches up, and each follower the final view lacks is added back.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a direct read of a follower may take to give the answer the placement
/// calls for (the follower may not have taken the newest view yet).
const PLACED_TIMEOUT: Duration = Duration::from_secs(30);

/// What the nemesis did, and when: printed if the run fails (and as it goes with
/// `TPC_CHAOS_VERBOSE=1`).
struct Events {
    seed: u64,
    start: Instant,
    verbose: bool,
    lines: Vec<String>,
}

impl Events {
    fn new(seed: u64, start: Instant) -> Events {
        Events {
            seed,
            start,
            verbose: env_or("TPC_CHAOS_VERBOSE", 0u8) != 0,
            lines: Vec::new(),
        }
    }

    fn note(&mut self, what: impl Into<String>) {
        let line = format!(
            "chaos seed {} +{:.3}s: {}",
            self.seed,
            self.start.elapsed().as_secs_f64(),
            what.into()
        );
        if self.verbose {
            eprintln!("{line}");
        }
        self.lines.push(line);
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.verbose {
            eprintln!("---------- what the nemesis did ----------");
            for line in &self.lines {
                eprintln!("{line}");
            }
        }
    }
}

/// How many faults of each kind a run had.
#[derive(Default)]
struct Counts {
    kills: usize,
    cuts: usize,
    /// Changes of the members the leader accepted.
    changes: usize,
    /// Refusals of a change (tried again).
    refusals: usize,
    /// Nodes killed (or emptied) after a change was accepted...
    hits: usize,
    /// ...of which with the change seen still under way just before.
    hits_in_move: usize,
    /// Followers restarted with empty directories.
    emptied: usize,
    /// Leaders killed: the single one, or the active one of several.
    leader_kills: usize,
    /// Standby leaders killed.
    standby_kills: usize,
    /// Active leaders stopped until another took over (zombies).
    zombies: usize,
}

/// `tpc members add|remove FOLLOWER --leader LEADER`, through the built binary as an
/// operator runs it: its standard output, or its standard error if it failed.
async fn members_command(leader: &str, verb: &str, follower: &str) -> Result<String, String> {
    let mut command = Command::new(support::tpc_binary());
    command
        .args(["members", verb, follower, "--leader", leader])
        .args(["--timeout", "5s"])
        .stdin(Stdio::null());
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("the tpc members task")
        .expect("run tpc members");
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
    match out.status.success() {
        true => Ok(text(&out.stdout)),
        false => Err(text(&out.stderr)),
    }
}

/// Asks the leader that `follower` (as the leader dials it) join the members (`add`)
/// or leave them, until it accepts or `until`; `None` if it had not by then. A refusal
/// saying it already is (or no longer is) a member means an earlier try whose answer
/// was lost (the leader was killed, or answered late) took effect: done too.
async fn change_members(
    leader: &str,
    follower: &str,
    add: bool,
    until: Instant,
    refusals: &mut usize,
) -> Option<String> {
    let verb = if add { "add" } else { "remove" };
    let done = if add {
        "already a member"
    } else {
        "is not a member"
    };
    loop {
        match members_command(leader, verb, follower).await {
            Ok(said) => return Some(said),
            Err(why) if why.contains(done) => return Some(format!("done before: {why}")),
            Err(_) => *refusals += 1,
        }
        if Instant::now() >= until {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A follower's member id, from its journal directory (`None`: it has none yet).
fn member_id(dirs: &NodeDirs) -> Option<MemberId> {
    std::fs::read_to_string(dirs.journal_dir().join(tpc::member::FILE))
        .ok()
        .map(|id| MemberId(id.trim().to_string()))
        .filter(|id| !id.0.is_empty())
}

/// Why the view `view` is not settled, if it is not: no view yet, a change under way,
/// or a member the follower at its address no longer is (restarted empty, it has a
/// new id, and replaces the member once the leader hears it).
fn unsettled(view: &rpc::MembersReply, nodes: &Nodes) -> Option<String> {
    if view.epoch == 0 {
        return Some("no view yet".into());
    }
    if view.moving_keys > 0 {
        return Some(format!("the change to view {} is under way", view.epoch));
    }
    let targets = nodes.targets();
    for m in &view.members {
        let f = targets.iter().position(|t| *t == m.address)?;
        let on_disk = member_id(&nodes.follower_dirs[f]);
        if on_disk.as_ref().map(|id| id.0.as_str()) != Some(m.id.as_str()) {
            return Some(format!(
                "view {} names member {} at follower {} ({}), which is {on_disk:?} now",
                view.epoch,
                m.id,
                f + 1,
                m.address
            ));
        }
    }
    None
}

/// Waits, at most [`SETTLE_TIMEOUT`], until the view of the leader at `leader` is
/// settled (see [`unsettled`]), and returns it.
async fn settle(nodes: &Nodes, leader: &str, seed: u64) -> rpc::MembersReply {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let why = match members::fetch(leader, Duration::from_secs(3)).await {
            Ok(view) => match unsettled(&view, nodes) {
                None => return view,
                Some(why) => format!("{why}: {view:?}"),
            },
            Err(e) => format!("the leader does not list its members: {e}"),
        };
        assert!(
            Instant::now() < deadline,
            "chaos seed {seed}: the members did not settle within {SETTLE_TIMEOUT:?} after \
             every node was healed and restarted; last: {why}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Where the keys live in a view the leader listed: each follower's member id in it,
/// by the address the leader dials it at.
struct Placement {
    epoch: u64,
    view: View,
    /// Per follower, its member id in the view (`None`: not a member).
    member_of: Vec<Option<MemberId>>,
}

impl Placement {
    fn of(listed: &rpc::MembersReply, targets: &[String], seed: u64) -> Placement {
        let ids: Vec<MemberId> = listed
            .members
            .iter()
            .map(|m| MemberId(m.id.clone()))
            .collect();
        let mut member_of = vec![None; targets.len()];
        for m in &listed.members {
            let f = targets
                .iter()
                .position(|t| *t == m.address)
                .unwrap_or_else(|| panic!("chaos seed {seed}: a member at no follower: {m:?}"));
            assert!(
                member_of[f].is_none(),
                "chaos seed {seed}: two members at {}: {listed:?}",
                m.address
            );
            member_of[f] = Some(MemberId(m.id.clone()));
        }
        Placement {
            epoch: listed.epoch,
            view: View::new(listed.epoch, listed.replication as usize, &ids),
            member_of,
        }
    }

    /// Whether follower `f` is one of `key`'s replicas.
    fn holds(&self, f: usize, key: &str) -> bool {
        self.member_of[f]
            .as_ref()
            .is_some_and(|id| self.view.holds(id, key))
    }

    fn members(&self) -> usize {
        self.member_of.iter().flatten().count()
    }
}

/// A key's value and version, as a follower holds it (`None`: absent).
type Held = Option<(String, String)>;

/// A direct read of `key` on a replica, once the replica answers it (its lock released,
/// the view taken).
async fn replica_read(addr: &str, key: &str) -> Held {
    support::poll(
        &format!("{addr}, a replica, to answer a direct Get({key:?})"),
        PLACED_TIMEOUT,
        || async {
            let mut client = Client::new(addr, Duration::from_secs(3)).expect("client");
            match client.get_versioned(key).await {
                Ok(held) => Ok(Some(held)),
                Err(s) if s.code() == Code::NotFound => Ok(None),
                Err(s) => Err(format!("{:?}: {}", s.code(), s.message())),
            }
        },
    )
    .await
}

/// Polls a direct read of `key` on a follower that is no replica of it in the view of
/// `epoch` until it answers FAILED_PRECONDITION naming that view.
async fn refused_read(addr: &str, key: &str, epoch: u64) {
    let names_view = format!("in view {epoch} (");
    support::poll(
        &format!("{addr}, no replica, to refuse a direct Get({key:?}) in view {epoch}"),
        PLACED_TIMEOUT,
        || async {
            let mut client = Client::new(addr, Duration::from_secs(3)).expect("client");
            match client.get_versioned(key).await {
                Err(s)
                    if s.code() == Code::FailedPrecondition
                        && s.message().contains(&names_view) =>
                {
                    Ok(())
                }
                Ok(held) => Err(format!("it answered {held:?}")),
                Err(s) => Err(format!("{:?}: {}", s.code(), s.message())),
            }
        },
    )
    .await
}

/// Checks the running followers against `placement`: every replica of every key answers
/// a direct read of it with the same value and version, and every other follower
/// refuses it (FAILED_PRECONDITION naming the view).
async fn check_placement_live(nodes: &Nodes, placement: &Placement, config: &Config) {
    for k in 0..config.keys {
        let key = format!("key{k}");
        let mut copies = Vec::new();
        for (f, dirs) in nodes.follower_dirs.iter().enumerate() {
            if placement.holds(f, &key) {
                copies.push((f + 1, replica_read(&dirs.addr(), &key).await));
            } else {
                refused_read(&dirs.addr(), &key, placement.epoch).await;
            }
        }
        assert_eq!(
            copies.len(),
            config.replication.min(placement.members()),
            "chaos seed {}: {key}'s replicas in view {}",
            config.seed,
            placement.epoch
        );
        assert!(
            copies.iter().all(|(_, copy)| *copy == copies[0].1),
            "chaos seed {}: the replicas of {key} in view {} answer differently (follower, \
             value and version): {copies:?}",
            config.seed,
            placement.epoch
        );
    }
}

/// A fault of one of several leaders (see [`LeaderFault`]), once every leader is up.
async fn leader_fault(
    nodes: &mut Nodes,
    fault: &LeaderFault,
    pause: Duration,
    events: &mut Events,
    counts: &mut Counts,
    seed: u64,
) {
    nodes.every_leader_up(events).await;
    let (active, status) = nodes.active(seed).await;
    match fault {
        LeaderFault::KillActive => {
            events.note(format!(
                "kill the active leader {} (epoch {}), down {pause:?}",
                active + 1,
                status.epoch
            ));
            nodes.kill_leader(active, pause);
            counts.kills += 1;
            counts.leader_kills += 1;
        }
        LeaderFault::KillStandby(n) => {
            let standbys: Vec<usize> = nodes
                .running_leaders()
                .into_iter()
                .filter(|&i| i != active)
                .collect();
            let i = standbys[n % standbys.len()];
            events.note(format!("kill standby leader {}, down {pause:?}", i + 1));
            nodes.kill_leader(i, pause);
            counts.kills += 1;
            counts.standby_kills += 1;
        }
        LeaderFault::Zombie => {
            events.note(format!(
                "stop the active leader {} (epoch {}): a zombie until another is active",
                active + 1,
                status.epoch
            ));
            nodes.leaders[active].signal("STOP");
            counts.zombies += 1;
            let stopped = Instant::now();
            let others: Vec<usize> = nodes
                .running_leaders()
                .into_iter()
                .filter(|&i| i != active)
                .collect();
            let (next, now) = nodes.active_of(&others, seed).await;
            events.note(format!(
                "leader {} took over from the zombie after {:.3} s (epoch {}); the zombie \
                 stays stopped {pause:?} more",
                next + 1,
                stopped.elapsed().as_secs_f64(),
                now.epoch
            ));
            assert!(
                now.epoch > status.epoch,
                "chaos seed {seed}: leader {} took over from leader {} without a new epoch \
                 ({} after {})",
                next + 1,
                active + 1,
                now.epoch,
                status.epoch
            );
            tokio::time::sleep(pause).await;
            nodes.leaders[active].signal("CONT");
            let resumed = Instant::now();
            let addr = nodes.leader_addrs()[active].clone();
            support::poll(
                &format!(
                    "chaos seed {seed}: the zombie leader {} to stand down",
                    active + 1
                ),
                ACTIVE_TIMEOUT,
                || async {
                    let status = tpc::client::status::fetch(&addr, Duration::from_secs(1)).await?;
                    match status.role.as_str() {
                        "standby" => Ok(()),
                        role => Err(format!("it says it is {role}")),
                    }
                },
            )
            .await;
            events.note(format!(
                "resumed, the zombie leader {} stood down within {:.3} s",
                active + 1,
                resumed.elapsed().as_secs_f64()
            ));
        }
    }
}

/// One chaos run; returns the number of operations in its history.
async fn run(config: Config) -> usize {
    let plan = schedule(&config);
    let mut nodes = Nodes::start(&config);
    let leaders = nodes.leader_addrs();
    // `tpc members ... --leader A,B,C` goes to the active leader.
    let all_leaders = nodes.leader_list();
    let first = nodes.agreed_active(config.seed).await;
    support::wait_leader_ready(&first).await;
    let first_epoch = nodes.active(config.seed).await.1.epoch;

    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..config.clients)
        .map(|id| {
            tokio::spawn(client_loop(
                id,
                config.clone(),
                leaders.clone(),
                start,
                stop.clone(),
            ))
        })
        .collect();

    // The nemesis, on this task.
    let mut rng = StdRng::seed_from_u64(config.seed ^ 0x6c696e6b);
    let mut events = Events::new(config.seed, start);
    let mut counts = Counts::default();
    for (wait, fault, pause) in &plan {
        if start.elapsed() + *wait >= config.duration {
            break;
        }
        nap(&mut nodes, *wait, &mut events).await;
        match fault {
            Fault::KillFollower(i) => {
                events.note(format!("kill follower {}", i + 1));
                nodes.followers[*i].kill();
                nap(&mut nodes, *pause, &mut events).await;
                nodes.restart_follower(*i);
                counts.kills += 1;
            }
            Fault::KillLeader => {
                events.note("kill the leader");
                nodes.leaders[0].kill();
                tokio::time::sleep(*pause).await;
                nodes.restart_leader(0);
                counts.kills += 1;
                counts.leader_kills += 1;
            }
            Fault::Leader(what) => {
                leader_fault(
                    &mut nodes,
                    what,
                    *pause,
                    &mut events,
                    &mut counts,
                    config.seed,
                )
                .await;
            }
            Fault::CutLink(i) => {
                events.note(format!("cut the link to follower {}", i + 1));
                let flags = link_fault_flags(&mut rng);
                let seed = rng.random();
                nodes.proxies[*i].restart(&nodes.follower_dirs[*i], &flags, seed);
                counts.cuts += 1;
            }
            Fault::Members {
                follower,
                add,
                after,
                then,
            } => {
                let verb = if *add { "add" } else { "remove" };
                let target = nodes.targets()[*follower].clone();
                let until = start + config.duration;
                let tried = counts.refusals;
                let accepted =
                    change_members(&all_leaders, &target, *add, until, &mut counts.refusals).await;
                let refused = counts.refusals - tried;
                let Some(said) = accepted else {
                    events.note(format!(
                        "members {verb} follower {}: refused {refused} times, the run ended",
                        follower + 1
                    ));
                    break;
                };
                events.note(format!(
                    "members {verb} follower {} (refused {refused} times first): {said}",
                    follower + 1
                ));
                counts.changes += 1;
                let Some(then) = then else {
                    continue;
                };
                nap(&mut nodes, *after, &mut events).await;
                let moving = members::fetch(&nodes.some_leader(), Duration::from_secs(1))
                    .await
                    .is_ok_and(|view| view.moving_keys > 0);
                let hit = match then {
                    InMove::KillFollower(i) => format!("kill follower {}", i + 1),
                    InMove::EmptyFollower(i) => format!("empty follower {}", i + 1),
                    InMove::KillLeader => "kill the leader".to_string(),
                };
                events.note(format!(
                    "{hit}, down {pause:?} ({})",
                    match moving {
                        true => "the change under way",
                        false => "the change not seen under way",
                    }
                ));
                counts.hits += 1;
                counts.hits_in_move += moving as usize;
                match then {
                    InMove::KillFollower(i) => {
                        nodes.followers[*i].kill();
                        nap(&mut nodes, *pause, &mut events).await;
                        nodes.restart_follower(*i);
                        counts.kills += 1;
                    }
                    InMove::EmptyFollower(i) => {
                        nodes.empty_follower(*i);
                        nap(&mut nodes, *pause, &mut events).await;
                        nodes.restart_follower(*i);
                        counts.emptied += 1;
                        counts.kills += 1;
                    }
                    InMove::KillLeader if config.leaders == 1 => {
                        nodes.leaders[0].kill();
                        tokio::time::sleep(*pause).await;
                        nodes.restart_leader(0);
                        counts.kills += 1;
                        counts.leader_kills += 1;
                    }
                    InMove::KillLeader => {
                        let kill = LeaderFault::KillActive;
                        leader_fault(
                            &mut nodes,
                            &kill,
                            *pause,
                            &mut events,
                            &mut counts,
                            config.seed,
                        )
                        .await;
                    }
                }
            }
        }
    }
    let remaining = config.duration.saturating_sub(start.elapsed());
    nap(&mut nodes, remaining, &mut events).await;
    // The epoch now, once a leader is active: how many takeovers the faults caused.
    let last_epoch = nodes.active(config.seed).await.1.epoch;
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

    // Heal: every node up, links without faults; wait until the members settle, and
    // check where the keys are in that view.
    events.note("heal: links without faults, every node restarted");
    nodes.heal_links(config.seed);
    for i in 0..config.followers {
        nodes.restart_follower(i);
    }
    for i in 0..config.leaders {
        nodes.restart_leader(i);
    }
    // The final checks go through the active leader.
    let leader = match config.leaders {
        1 => nodes.leader_addrs().remove(0),
        _ => nodes.agreed_active(config.seed).await,
    };
    events.note(format!("the active leader: {leader}"));
    let targets = nodes.targets();
    let mut view = settle(&nodes, &leader, config.seed).await;
    events.note(format!("settled on view {}", view.epoch));
    let mut placement = Placement::of(&view, &targets, config.seed);
    assert_eq!(view.replication as usize, config.replication);
    check_placement_live(&nodes, &placement, &config).await;
    // Then add back every follower the view lacks, so that the final checks see every
    // follower a member.
    let mut settled_views = vec![view.epoch];
    let missing: Vec<usize> = (0..config.followers)
        .filter(|&f| placement.member_of[f].is_none())
        .collect();
    for &f in &missing {
        let until = Instant::now() + SETTLE_TIMEOUT;
        let said = change_members(&all_leaders, &targets[f], true, until, &mut counts.refusals)
            .await
            .unwrap_or_else(|| {
                panic!(
                    "chaos seed {}: the leader did not add follower {} back within \
                     {SETTLE_TIMEOUT:?}",
                    config.seed,
                    f + 1
                )
            });
        events.note(format!("members add follower {}: {said}", f + 1));
        counts.changes += 1;
    }
    if !missing.is_empty() {
        view = settle(&nodes, &leader, config.seed).await;
        events.note(format!("settled on view {}", view.epoch));
        placement = Placement::of(&view, &targets, config.seed);
        settled_views.push(view.epoch);
    }
    assert_eq!(
        placement.members(),
        config.followers,
        "chaos seed {}: every follower is a member of the final view: {view:?}",
        config.seed
    );

    // Read every key through the leader, one by one and all at once: what the nodes
    // hold is all-or-nothing for every transaction.
    for k in 0..config.keys {
        history.push(final_read(&leader, &format!("key{k}"), config.clients, start).await);
    }
    snapshots.push(final_snapshot(&leader, config.keys, config.seed).await);

    let acked = history
        .iter()
        .filter(|op| op.ret.is_some() && !matches!(op.kind, OpKind::Get(_)))
        .count();
    let unknown = history.iter().filter(|op| op.ret.is_none()).count();
    // Decisions followers learned from one another (their logs say so).
    let learned: usize = nodes
        .follower_dirs
        .iter()
        .map(|d| {
            d.log()
                .matches("decision learned from the other participants")
                .count()
        })
        .sum();
    eprintln!(
        "chaos seed {}: {} operations attempted, {} in the history ({acked} acknowledged writes, {unknown} unknown), {} transactions of several keys, {} snapshot reads, {} kills, {} link cuts, {} member changes ({} refusals retried; {} nodes hit after a change, {} with it seen under way, {} restarted empty), {learned} decisions learned among followers, views settled {settled_views:?}; {} leaders: {} leader kills, {} standby kills, {} zombies, {} takeovers (epoch {first_epoch} to {last_epoch}); {:.1} s",
        config.seed,
        attempts,
        history.len(),
        written.len(),
        snapshots.len(),
        counts.kills,
        counts.cuts,
        counts.changes,
        counts.refusals,
        counts.hits,
        counts.hits_in_move,
        counts.emptied,
        config.leaders,
        counts.leader_kills,
        counts.standby_kills,
        counts.zombies,
        last_epoch.saturating_sub(first_epoch),
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

    // The replicas of each key in the final view hold the same value and version (DESIGN
    // §1.8), and every other follower refuses it; then, in their key-value directories,
    // no other follower holds it. A follower deletes the keys it no longer holds right
    // after it journals the view that says so, which may come just after it answers by
    // that view: give it a moment.
    check_placement_live(&nodes, &placement, &config).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
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
            .filter(|&f| placement.holds(f, &key))
            .map(|f| (f + 1, dumps[f].get(&key)))
            .collect();
        assert!(
            copies.iter().all(|(_, copy)| *copy == copies[0].1),
            "chaos seed {}: the replicas of {key} differ: {copies:?}",
            config.seed
        );
        for (f, dump) in dumps.iter().enumerate() {
            assert!(
                placement.holds(f, &key) || !dump.contains_key(&key),
                "chaos seed {}: follower {} holds {key}, which it is no replica of in view {}",
                config.seed,
                f + 1,
                placement.epoch
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
fn the_schedule_changes_the_members_only_with_more_followers_than_replicas() {
    let config = |seed, followers| Config {
        seed,
        duration: Duration::from_secs(300),
        clients: 1,
        keys: 4,
        followers,
        replication: 3,
        link_faults: true,
        members: true,
        leaders: 1,
    };
    let changes = |c: &Config| -> Vec<(usize, bool, Option<InMove>)> {
        schedule(c)
            .into_iter()
            .filter_map(|(_, fault, _)| match fault {
                Fault::Members {
                    follower,
                    add,
                    then,
                    ..
                } => Some((follower, add, then)),
                _ => None,
            })
            .collect()
    };
    assert!(
        changes(&config(1, 3)).is_empty(),
        "every follower holds every key"
    );
    let mut staying_emptied = 0;
    for seed in [2, 4, 6, 8] {
        let c = config(seed, 4);
        let plan = schedule(&c);
        assert!(
            matches!(plan[0].1, Fault::Members { add: false, .. }),
            "seed {seed}: a removal first: {:?}",
            plan[0]
        );
        // Each removal names a member, each addition a follower out; never more than
        // `most_out` out at once.
        let mut out = Vec::new();
        for (follower, add, then) in changes(&c) {
            match add {
                true => assert!(out.contains(&follower), "seed {seed}: add {follower}"),
                false => assert!(!out.contains(&follower), "seed {seed}: remove {follower}"),
            }
            match add {
                true => out.retain(|&f| f != follower),
                false => out.push(follower),
            }
            assert!(out.len() <= c.most_out(), "seed {seed}: {out:?} out");
            if let Some(InMove::EmptyFollower(f)) = then {
                staying_emptied += usize::from(f != follower && !out.contains(&f));
            }
        }
        let hits = plan
            .iter()
            .filter(|(_, f, _)| matches!(f, Fault::Members { then: Some(_), .. }))
            .count();
        assert!(hits > 0, "seed {seed}: some node is hit while keys move");
    }
    assert!(
        staying_emptied > 0,
        "some member that stays is restarted empty while keys move"
    );
}

#[test]
fn the_schedule_with_standby_leaders_hits_one_leader_at_a_time() {
    let config = |seed, leaders| Config {
        seed,
        duration: Duration::from_secs(300),
        clients: 1,
        keys: 4,
        followers: 3 + (seed % 2 == 0) as usize,
        replication: 3,
        link_faults: true,
        members: true,
        leaders,
    };
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for seed in 1..=6 {
        let c = config(seed, 3);
        let plan = schedule(&c);
        assert!(
            !plan.iter().any(|(_, f, _)| matches!(f, Fault::KillLeader)),
            "seed {seed}: the single leader's fault with standby leaders"
        );
        // Replay the plan: a leader is down or stopped in spans that never overlap, and
        // the next leader fault waits until the leader before is back and ready.
        let (mut at, mut whole) = (Duration::ZERO, Duration::ZERO);
        let mut out = 0;
        for (wait, fault, pause) in &plan {
            let (next, span) = plan_step(&c, at, *wait, fault, *pause);
            assert_eq!(
                span.is_some(),
                hits_a_leader(fault),
                "seed {seed}: {fault:?}"
            );
            if let Some((from, to)) = span {
                assert!(
                    from >= whole,
                    "seed {seed}: {fault:?} at {from:?}, while a leader is out until {whole:?}"
                );
                assert!(to > from, "seed {seed}: {fault:?} for {pause:?}");
                whole = to + LEADER_READY;
                out += 1;
                let kind = match fault {
                    Fault::Leader(LeaderFault::KillActive) => "kill active",
                    Fault::Leader(LeaderFault::KillStandby(_)) => "kill standby",
                    Fault::Leader(LeaderFault::Zombie) => "zombie",
                    _ => "kill active while keys move",
                };
                *kinds.entry(kind).or_default() += 1;
            }
            at = next;
        }
        assert!(out >= 10, "seed {seed}: {out} leader faults in 300 s");
    }
    assert_eq!(
        kinds.keys().copied().collect::<Vec<_>>(),
        [
            "kill active",
            "kill active while keys move",
            "kill standby",
            "zombie"
        ],
        "every kind of leader fault: {kinds:?}"
    );
    // A single leader has the faults it always had, and none of several leaders'.
    for seed in 1..=4 {
        let plan = schedule(&config(seed, 1));
        assert!(plan.iter().any(|(_, f, _)| matches!(f, Fault::KillLeader)));
        assert!(!plan.iter().any(|(_, f, _)| matches!(f, Fault::Leader(_))));
    }
    // The default seeds run both, and standby leaders with changes of the members.
    let defaults: Vec<usize> = (1..=3).map(default_leaders).collect();
    assert!(
        defaults.contains(&1) && defaults.contains(&3),
        "{defaults:?}"
    );
    assert_eq!(default_leaders(2), 3, "seed 2 changes the members");
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
