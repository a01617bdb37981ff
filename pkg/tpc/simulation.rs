//! Deterministic simulation of the 2PC protocol cores under adversarial schedules.
//!
//! # The model
//!
//! One leader and [`FOLLOWERS`] followers run in a single thread, driven by a seeded
//! random number generator (`StdRng`), so a schedule is a pure function of its seed.
//! The real [`LeaderCore`] and [`FollowerCore`] make every protocol decision; what is
//! simulated around them is a faithful, synchronous re-statement of the runtimes:
//!
//! - **Durable state.** Each node's journal is a `Vec` of its records
//!   ([`FollowerRecord`] / [`LeaderRecord`]); a follower also has a `BTreeMap` standing
//!   for its kv files. Everything else (the cores, links, streams) is volatile. A crash
//!   drops the volatile state; a restart rebuilds it from the durable state exactly as
//!   the runtimes do: `FollowerCore::new(has_data)` plus [`FollowerCore::replay`] of
//!   every record with `Apply`/`Finish` carried out (`follower.rs`), or
//!   [`LeaderCore::recover`] with its `persist` records appended and its `deliveries`
//!   queued on the links (`leader.rs`). The leader's `done` records are written
//!   unsynced (as `Coordinator::acked` does), so a leader crash may lose a suffix of
//!   them; a journal checkpoint (rewrite with `live_records()`) is an adversary move.
//! - **Follower** (`follower.rs`, `StateOwner::carry_out`): effects are carried out in
//!   order (`Persist` appends, consecutive persists form one batch, `Apply` changes the
//!   map, `Finish` calls `core.finish`, `Reply` goes on the stream, `Refuse` ends it). A
//!   crash may hit before any effect of a list (after some persists, before the reply).
//!   A journal write may fail: a failed PREPARE batch becomes `prepare_failed` and an
//!   ABORT vote, any other failed batch ends the stream.
//! - **Leader** (`leader.rs` + `link.rs`): client writes (Put with a unique value, or
//!   Delete, on keys [`KEYS`]) run one at a time: `begin` journaled, PREPARE to every
//!   follower (a link without a stream tries to connect; if the follower is unreachable
//!   or the connect "fails", the vote is `NotSent`), votes collected until every link has
//!   answered (a vote, or `NoAnswer` when its stream ends or times out), decision
//!   journaled, the client answered (success only for COMMIT), the decision queued on
//!   every link that got the PREPARE. A link keeps undelivered decisions in order, sends
//!   them before any new PREPARE, re-sends all of them first on every new stream, matches
//!   replies by transaction id and drops a decision once ACKed (ACK → `LeaderCore::acked`,
//!   processed between writes as the coordinator's `select!` does).
//! - **Streams** are FIFO queues per (leader incarnation, follower incarnation,
//!   connection) in both directions. When the leader side ends (cut, timeout, leader
//!   crash) its unread replies are lost, but messages already sent may still reach the
//!   follower late (buffered in the transport); when the follower side ends (crash,
//!   refusal, failed write) the leader sees the end once it has read what came before.
//!
//! The adversary picks, at each step: deliver the next message of some stream (most
//! likely), drop or duplicate one, replay an old PREPARE/decision to a follower, cut a
//! stream, time a link out (or the whole current vote), reconnect a link, partition a
//! follower, crash/restart a follower or the leader (the leader's unanswered client
//! writes get an unknown outcome), fail a journal write, checkpoint a journal, start a
//! client write, or read a key directly on a follower (UNAVAILABLE if
//! `check_readable` refuses, else the map's value).
//!
//! Invariants (each failure names its number, the seed and the step):
//!
//! 1. *Agreement at all times*: after every step, for every key, all up followers whose
//!    `check_readable` accepts it hold the same value.
//! 2. *Atomicity and termination*: after healing (restart everything, stop faults,
//!    deliver until quiet) no follower has a prepared transaction, the leader's table
//!    is empty, and all followers' maps are identical.
//! 3. *Durability*: each key's final value is that of the last acknowledged write to
//!    it, or of a later write whose outcome the client did not learn.
//! 4. *Linearizability* of the client history (writes, direct follower reads, and a
//!    final read of each key), checked with [`crate::check::check`].
//! 5. *Idempotence*: a PREPARE of a transaction whose decision this follower has
//!    already handled (in any incarnation) never leaves it prepared (DESIGN §1.5).
//!
//! # Fault profiles
//!
//! - [`Profile::Tcp`]: only what the real transport can do: cuts, timeouts, late delivery
//!   of a dead stream's buffered messages, crashes, partitions, disk errors.
//! - [`Profile::Hostile`]: adds per-message drop, duplication and replay of old
//!   messages to the same follower process, as `tpc proxy --drop --dup --replay` does.
//! - [`Profile::Amnesia`]: also replays to a *restarted* follower messages sent to its
//!   previous incarnation. TCP can't do that, but DESIGN §1.5 promises that a PREPARE of
//!   an already decided transaction "gets ABORT and takes no lock" without such a
//!   condition.
//!
//! # Bugs it found
//!
//! Each is now a regression test (a minimal core-level reproduction plus the seed that
//! found it):
//!
//! - [`regression_failed_journal_write_must_not_lose_the_cluster_id`] (`tcp` seed 1144,
//!   `hostile` seed 110): a failed journal write of the batch that adopted the cluster
//!   id left the core believing the id durable; after a crash the follower refused the
//!   leader for good, with a prepared transaction locked. Fixed by
//!   `FollowerCore::journal_failed`.
//! - [`regression_decided_abort_must_survive_a_restart`] (`amnesia` seed 1483): an ABORT
//!   vote given without journaling anything, and the ABORT decision that followed, were
//!   not journaled, so after a restart a late PREPARE of that transaction took a lock
//!   nobody would release. Fixed: such a decision is journaled as a marker.
//!
//! # What is not simulated
//!
//! The tokio/tonic code of the runtimes (tasks, channels, gRPC, the journal and kvstore
//! files, checkpoint triggers, reconnect backoff, the leader's `Get` retry loop) is not
//! run; its rules are mirrored in the driver here. Legacy (id-less) messages and cluster
//! mix-ups are not generated: there is one cluster and one leader lineage. Time is
//! logical: timeouts are adversary moves, not clocks.
//!
//! # Reproducing a failure
//!
//! A failure prints the profile, the seed and the last events of the schedule. Replay it
//! alone, with the whole event log:
//!
//! ```text
//! TPC_SIM_PROFILE=hostile TPC_SIM_SEED=1234 cargo test --lib simulation::replay_one_seed -- --ignored --nocapture
//! ```
//!
//! Long soak, reporting every distinct
//! failure with its first seed (`TPC_SIM_PROFILE` picks one profile, `TPC_SIM_FIRST`
//! the first seed, `TPC_SIM_STEPS` the schedule length):
//!
//! ```text
//! TPC_SIM_SEEDS=200000 cargo test --release --lib simulation::soak -- --ignored --nocapture
//! ```

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::follower_core::{Effect, FollowerCore};
use super::leader_core::LeaderCore;
use super::link::VoteResult;
use super::message::{Body, LeaderMessage, Op, Outcome, Reply, TxId};
use super::records::{FollowerRecord, LeaderRecord};
use crate::check::{check, OpKind, Operation};

/// Number of followers.
const FOLLOWERS: usize = 3;
/// The key space: small, so that transactions collide.
const KEYS: [&str; 3] = ["a", "b", "c"];
const CLUSTER: &str = "sim-cluster";
/// Steps per schedule in the default test.
const STEPS: usize = 300;
/// How many recent events a failure report shows.
const REPORT_EVENTS: usize = 50;
/// Client writes queued at the leader at most.
const MAX_QUEUED_WRITES: usize = 3;
/// Messages remembered per follower for replays.
const REPLAY_POOL: usize = 64;

fn name(f: usize) -> String {
    format!("f{f}")
}

fn index_of(name: &str) -> usize {
    name[1..].parse().expect("follower names are f<index>")
}

/// Which faults the adversary may inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Profile {
    /// What TCP and process crashes can do.
    Tcp,
    /// Plus drop, duplication and replay within one follower process.
    Hostile,
    /// Plus replay of messages sent to an earlier incarnation of the follower.
    Amnesia,
}

impl Profile {
    fn parse(s: &str) -> Profile {
        match s {
            "tcp" => Profile::Tcp,
            "hostile" => Profile::Hostile,
            "amnesia" => Profile::Amnesia,
            other => panic!("unknown TPC_SIM_PROFILE {other:?} (tcp, hostile, amnesia)"),
        }
    }
    fn message_faults(self) -> bool {
        self != Profile::Tcp
    }
}

/// Deliberately broken driver rules, to show that the invariants can fail.
#[derive(Clone, Copy, Debug, Default)]
struct Bugs {
    /// The follower wrapper does not journal PREPARE records (a vote that is not durable).
    skip_prepare_persist: bool,
    /// The leader sends the decision only to followers that voted, not to those whose
    /// vote never came back (they may hold the lock).
    decide_only_voters: bool,
    /// Direct follower reads ignore `check_readable` (answer with the old value).
    reads_ignore_locks: bool,
    /// The leader counts a missing vote as COMMIT.
    commit_without_votes: bool,
}

#[derive(Clone, Copy, Debug)]
struct Config {
    profile: Profile,
    steps: usize,
    bugs: Bugs,
}

impl Config {
    fn new(profile: Profile) -> Config {
        Config {
            profile,
            steps: STEPS,
            bugs: Bugs::default(),
        }
    }
}

/// An invariant that did not hold.
#[derive(Debug)]
struct Failure {
    /// Which invariant (1..=5) or "model" for a driver error.
    invariant: &'static str,
    detail: String,
}

#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    steps: usize,
    delivered: usize,
    commits: usize,
    aborts: usize,
    unknown: usize,
    reads: usize,
    unavailable_reads: usize,
    crashes: usize,
    replays: usize,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.steps += o.steps;
        self.delivered += o.delivered;
        self.commits += o.commits;
        self.aborts += o.aborts;
        self.unknown += o.unknown;
        self.reads += o.reads;
        self.unavailable_reads += o.unavailable_reads;
        self.crashes += o.crashes;
        self.replays += o.replays;
    }
}

/// One connection between the leader and a follower.
#[derive(Debug)]
struct Stream {
    follower: usize,
    to_follower: VecDeque<LeaderMessage>,
    /// Replies, with the transaction id they carry on the wire.
    to_leader: VecDeque<(String, Reply)>,
    /// The leader's link still reads this stream.
    leader_open: bool,
    /// The follower process that accepted it is alive and has not ended it.
    follower_open: bool,
}

impl Stream {
    fn deliverable_to_follower(&self) -> bool {
        self.follower_open && !self.to_follower.is_empty()
    }
    fn deliverable_to_leader(&self) -> bool {
        self.leader_open && (!self.to_leader.is_empty() || !self.follower_open)
    }
    fn finished(&self) -> bool {
        !self.leader_open && !self.deliverable_to_follower()
    }
}

struct FollowerNode {
    /// `None` while crashed.
    core: Option<FollowerCore>,
    journal: Vec<FollowerRecord>,
    kv: BTreeMap<String, String>,
    incarnation: u64,
    partitioned: bool,
    disk_fault: bool,
    /// Messages sent to this follower, with the incarnation they were sent to.
    sent: VecDeque<(u64, LeaderMessage)>,
}

struct Outstanding {
    txid: String,
    vote: bool,
}

#[derive(Default)]
struct Link {
    pending: VecDeque<LeaderMessage>,
    stream: Option<u64>,
    outstanding: VecDeque<Outstanding>,
}

struct Voting {
    txid: TxId,
    op: usize,
    votes: Vec<Option<VoteResult>>,
}

struct LeaderNode {
    core: LeaderCore,
    links: Vec<Link>,
    acks: VecDeque<(usize, String)>,
    voting: Option<Voting>,
    queue: VecDeque<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Pending,
    Ok,
    /// The client was told the write was not applied.
    Failed,
    /// The client never learned the outcome.
    Unknown,
}

struct ClientOp {
    key: String,
    kind: OpKind,
    call: u64,
    ret: Option<u64>,
    status: Status,
    txid: Option<TxId>,
}

#[derive(Clone, Copy, Debug)]
enum Action {
    DeliverToFollower(u64),
    DeliverToLeader(u64),
    Drop(u64),
    Duplicate(u64),
    Replay(usize),
    Cut(usize),
    Timeout(usize),
    TimeoutVote,
    Reconnect(usize),
    Partition(usize),
    CrashFollower(usize),
    RestartFollower(usize),
    CrashLeader,
    RestartLeader,
    DiskFault(Option<usize>),
    Checkpoint(Option<usize>),
    Write,
    Read,
}

type Checked = Result<(), Failure>;

struct Sim {
    seed: u64,
    cfg: Config,
    rng: StdRng,
    step: usize,
    clock: u64,
    healing: bool,
    followers: Vec<FollowerNode>,
    leader: Option<LeaderNode>,
    leader_journal: Vec<LeaderRecord>,
    /// Length of the leader journal known to be fsynced.
    leader_synced: usize,
    leader_disk_fault: bool,
    streams: BTreeMap<u64, Stream>,
    next_stream: u64,
    ops: Vec<ClientOp>,
    next_value: u64,
    /// Per follower: transactions whose decision it has handled to the end (ground truth,
    /// across crashes).
    told: Vec<HashSet<String>>,
    events: Option<Vec<String>>,
    stats: Stats,
}

impl Sim {
    fn new(seed: u64, cfg: Config, trace: bool) -> Sim {
        let followers = (0..FOLLOWERS)
            .map(|_| FollowerNode {
                core: Some(FollowerCore::new(false)),
                journal: Vec::new(),
                kv: BTreeMap::new(),
                incarnation: 0,
                partitioned: false,
                disk_fault: false,
                sent: VecDeque::new(),
            })
            .collect();
        let mut sim = Sim {
            seed,
            cfg,
            rng: StdRng::seed_from_u64(seed),
            step: 0,
            clock: 0,
            healing: false,
            followers,
            leader: None,
            leader_journal: Vec::new(),
            leader_synced: 0,
            leader_disk_fault: false,
            streams: BTreeMap::new(),
            next_stream: 1,
            ops: Vec::new(),
            next_value: 0,
            told: vec![HashSet::new(); FOLLOWERS],
            events: trace.then(Vec::new),
            stats: Stats::default(),
        };
        sim.restart_leader();
        sim
    }

    fn log(&mut self, event: impl FnOnce() -> String) {
        if let Some(events) = &mut self.events {
            events.push(format!("[{:>4}] {}", self.step, event()));
        }
    }

    fn fail(&self, invariant: &'static str, detail: String) -> Failure {
        Failure {
            invariant,
            detail: format!(
                "invariant {invariant} broken (profile {:?}, seed {}, step {}): {detail}",
                self.cfg.profile, self.seed, self.step
            ),
        }
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn chance(&mut self, one_in: u32) -> bool {
        !self.healing && self.rng.random_ratio(1, one_in)
    }

    fn reachable(&self, f: usize) -> bool {
        self.followers[f].core.is_some() && !self.followers[f].partitioned
    }

    // ---------------------------------------------------------------- the schedule

    fn run(&mut self) -> Result<Stats, Failure> {
        for step in 1..=self.cfg.steps {
            self.step = step;
            let action = self.choose();
            self.perform(action)?;
            self.leader_pump()?;
            self.check_agreement()?;
            self.streams.retain(|_, s| !s.finished());
        }
        self.step = self.cfg.steps + 1;
        self.heal()?;
        self.final_checks()?;
        self.stats.steps = self.cfg.steps;
        Ok(self.stats)
    }

    fn choose(&mut self) -> Action {
        let mut options: Vec<(u32, Action)> = Vec::new();
        let hostile = self.cfg.profile.message_faults();
        for (&id, s) in &self.streams {
            if s.deliverable_to_follower() {
                options.push((120, Action::DeliverToFollower(id)));
            }
            if s.deliverable_to_leader() {
                options.push((120, Action::DeliverToLeader(id)));
            }
            if hostile && (!s.to_follower.is_empty() || !s.to_leader.is_empty()) {
                options.push((2, Action::Drop(id)));
                options.push((3, Action::Duplicate(id)));
            }
        }
        for f in 0..FOLLOWERS {
            let up = self.followers[f].core.is_some();
            if hostile && up && !self.followers[f].sent.is_empty() {
                options.push((4, Action::Replay(f)));
            }
            let partitioned = self.followers[f].partitioned;
            options.push((if partitioned { 20 } else { 1 }, Action::Partition(f)));
            if up {
                options.push((2, Action::CrashFollower(f)));
                options.push((2, Action::Checkpoint(Some(f))));
                options.push((1, Action::DiskFault(Some(f))));
            } else {
                options.push((40, Action::RestartFollower(f)));
            }
            if let Some(leader) = &self.leader {
                let link = &leader.links[f];
                if link.stream.is_some() {
                    options.push((2, Action::Cut(f)));
                    if !link.outstanding.is_empty() {
                        options.push((2, Action::Timeout(f)));
                    }
                } else if !link.pending.is_empty() && self.reachable(f) {
                    options.push((40, Action::Reconnect(f)));
                }
            }
        }
        match &self.leader {
            Some(leader) => {
                options.push((2, Action::CrashLeader));
                options.push((1, Action::DiskFault(None)));
                if leader.voting.is_none() {
                    options.push((2, Action::Checkpoint(None)));
                } else {
                    options.push((3, Action::TimeoutVote));
                }
                if leader.queue.len() < MAX_QUEUED_WRITES {
                    options.push((30, Action::Write));
                }
            }
            None => options.push((40, Action::RestartLeader)),
        }
        options.push((30, Action::Read));
        let total: u32 = options.iter().map(|(w, _)| w).sum();
        let mut pick = self.rng.random_range(0..total);
        for (w, action) in options {
            if pick < w {
                return action;
            }
            pick -= w;
        }
        unreachable!("weights add up")
    }

    fn perform(&mut self, action: Action) -> Checked {
        match action {
            Action::DeliverToFollower(id) => self.deliver_to_follower(id)?,
            Action::DeliverToLeader(id) => self.deliver_to_leader(id),
            Action::Drop(id) => {
                let s = self.streams.get_mut(&id).expect("chosen stream exists");
                let to_follower = !s.to_follower.is_empty()
                    && (s.to_leader.is_empty() || self.rng.random_bool(0.5));
                if to_follower {
                    let m = s.to_follower.pop_front();
                    self.log(|| format!("drop s{id} -> follower {m:?}"));
                } else {
                    let m = s.to_leader.pop_front();
                    self.log(|| format!("drop s{id} -> leader {m:?}"));
                }
            }
            Action::Duplicate(id) => {
                let s = self.streams.get_mut(&id).expect("chosen stream exists");
                let to_follower = !s.to_follower.is_empty()
                    && (s.to_leader.is_empty() || self.rng.random_bool(0.5));
                if to_follower {
                    let m = s.to_follower[0].clone();
                    s.to_follower.push_front(m);
                } else {
                    let m = s.to_leader[0].clone();
                    s.to_leader.push_front(m);
                }
                self.log(|| format!("duplicate front of s{id} (to follower: {to_follower})"));
            }
            Action::Replay(f) => self.replay(f)?,
            Action::Cut(f) => {
                self.log(|| format!("cut stream of link {f}"));
                self.link_reset(f);
            }
            Action::Timeout(f) => {
                self.log(|| format!("timeout on link {f}"));
                self.link_reset(f);
            }
            Action::TimeoutVote => {
                let Some(leader) = &self.leader else {
                    return Ok(());
                };
                let Some(voting) = &leader.voting else {
                    return Ok(());
                };
                let txid = voting.txid.to_string();
                let waiting: Vec<usize> = (0..FOLLOWERS)
                    .filter(|&f| {
                        leader.links[f]
                            .outstanding
                            .iter()
                            .any(|o| o.vote && o.txid == txid)
                    })
                    .collect();
                self.log(|| format!("vote {txid} times out on links {waiting:?}"));
                for f in waiting {
                    self.link_reset(f);
                }
            }
            Action::Reconnect(f) => {
                self.log(|| format!("link {f} reconnects"));
                self.open_stream(f, None);
            }
            Action::Partition(f) => {
                let p = !self.followers[f].partitioned;
                self.followers[f].partitioned = p;
                self.log(|| format!("follower {f} partitioned: {p}"));
            }
            Action::CrashFollower(f) => self.crash_follower(f),
            Action::RestartFollower(f) => self.restart_follower(f),
            Action::CrashLeader => self.crash_leader("adversary"),
            Action::RestartLeader => self.restart_leader(),
            Action::DiskFault(Some(f)) => {
                self.followers[f].disk_fault = true;
                self.log(|| format!("follower {f}: next journal write fails"));
            }
            Action::DiskFault(None) => {
                self.leader_disk_fault = true;
                self.log(|| "leader: next journal write fails".into());
            }
            Action::Checkpoint(Some(f)) => {
                let node = &mut self.followers[f];
                let core = node.core.as_ref().expect("checkpoint of an up follower");
                node.journal = core.live_records();
                let n = node.journal.len();
                self.log(|| format!("follower {f} checkpoints: {n} records"));
            }
            Action::Checkpoint(None) => {
                let leader = self.leader.as_ref().expect("checkpoint of an up leader");
                self.leader_journal = leader.core.live_records();
                self.leader_synced = self.leader_journal.len();
                let n = self.leader_synced;
                self.log(|| format!("leader checkpoints: {n} records"));
            }
            Action::Write => self.client_write(),
            Action::Read => self.client_read(),
        }
        Ok(())
    }

    // ---------------------------------------------------------------- followers

    fn deliver_to_follower(&mut self, id: u64) -> Checked {
        let s = self.streams.get_mut(&id).expect("chosen stream exists");
        let msg = s.to_follower.pop_front().expect("deliverable");
        let f = s.follower;
        self.stats.delivered += 1;
        self.follower_handle(f, Some(id), msg)
    }

    /// A message sent to `f` earlier, delivered again now (its reply is lost).
    fn replay(&mut self, f: usize) -> Checked {
        let incarnation = self.followers[f].incarnation;
        let across = self.cfg.profile == Profile::Amnesia;
        let candidates: Vec<usize> = self.followers[f]
            .sent
            .iter()
            .enumerate()
            .filter(|(_, (inc, _))| across || *inc == incarnation)
            .map(|(i, _)| i)
            .collect();
        if candidates.is_empty() {
            return Ok(());
        }
        let pick = candidates[self.rng.random_range(0..candidates.len())];
        let msg = self.followers[f].sent[pick].1.clone();
        self.stats.replays += 1;
        self.log(|| format!("replay to follower {f}: {}", brief(&msg)));
        self.follower_handle(f, None, msg)
    }

    /// The follower runtime: `core.handle` and `carry_out`, with crash and disk faults.
    /// `stream` is `None` for a replay whose reply goes nowhere.
    fn follower_handle(&mut self, f: usize, stream: Option<u64>, msg: LeaderMessage) -> Checked {
        let Some(core) = self.followers[f].core.as_mut() else {
            return Ok(());
        };
        let txid = msg.txid.clone();
        let is_prepare = matches!(msg.body, Body::Prepare { .. });
        let is_decision = matches!(msg.body, Body::Decide(_));
        let description = brief(&msg);
        let stream_id = stream.unwrap_or(u64::MAX);
        let mut effects = core.handle(stream_id, msg);
        if self.cfg.bugs.skip_prepare_persist {
            effects.retain(|e| !matches!(e, Effect::Persist(FollowerRecord::Prepare { .. })));
        }
        let via = stream.map_or("replay".to_string(), |id| format!("s{id}"));
        self.log(|| format!("follower {f} <- {via} {description}: {effects:?}"));
        let crash_at = if self.chance(150) {
            Some(self.rng.random_range(0..effects.len()))
        } else {
            None
        };
        let mut completed = true;
        let mut reply: Option<Reply> = None;
        let mut i = 0;
        while i < effects.len() {
            if crash_at == Some(i) {
                self.log(|| format!("follower {f} crashes before effect {i}"));
                self.crash_follower(f);
                return Ok(());
            }
            let node = &mut self.followers[f];
            let core = node.core.as_mut().expect("up");
            match &effects[i] {
                Effect::Persist(_) => {
                    let batch_end = effects[i..]
                        .iter()
                        .position(|e| !matches!(e, Effect::Persist(_)))
                        .map_or(effects.len(), |p| i + p);
                    if std::mem::take(&mut node.disk_fault) {
                        let prepared = effects[i..batch_end].iter().find_map(|e| match e {
                            Effect::Persist(FollowerRecord::Prepare { txid, .. }) => {
                                Some(txid.clone())
                            }
                            _ => None,
                        });
                        completed = false;
                        match prepared {
                            Some(t) => {
                                reply = Some(core.prepare_failed(&t));
                                self.log(|| {
                                    format!("follower {f}: journal write failed: vote ABORT")
                                });
                            }
                            None => {
                                core.journal_failed();
                                self.log(|| {
                                    format!("follower {f}: journal write failed: stream ends")
                                });
                                if let Some(s) = stream.and_then(|id| self.streams.get_mut(&id)) {
                                    s.follower_open = false;
                                    s.to_follower.clear();
                                }
                            }
                        }
                        break;
                    }
                    // Record by record, so a crash inside the batch keeps a prefix (a torn
                    // tail is dropped on start).
                    if let Effect::Persist(record) = &effects[i] {
                        node.journal.push(record.clone());
                    }
                }
                Effect::Apply { key, op } => match op {
                    Op::Put(v) => {
                        node.kv.insert(key.clone(), v.clone());
                    }
                    Op::Delete => {
                        node.kv.remove(key);
                    }
                },
                Effect::Finish { txid, outcome } => {
                    core.finish(txid, *outcome);
                }
                Effect::Reply(r) => reply = Some(r.clone()),
                Effect::Refuse(why) => {
                    completed = false;
                    let why = why.clone();
                    self.log(|| format!("follower {f} refuses the leader: {why}"));
                    if let Some(s) = stream.and_then(|id| self.streams.get_mut(&id)) {
                        s.follower_open = false;
                        s.to_follower.clear();
                    }
                    break;
                }
            }
            i += 1;
        }
        if let (Some(r), Some(s)) = (reply, stream.and_then(|id| self.streams.get_mut(&id))) {
            if s.leader_open {
                s.to_leader.push_back((txid.clone(), r));
            }
        }
        if completed && is_decision {
            self.told[f].insert(txid.clone());
        }
        // Invariant 5: a PREPARE of a transaction this follower already saw decided
        // takes no lock.
        if is_prepare && self.told[f].contains(&txid) {
            let core = self.followers[f].core.as_ref().expect("up");
            if core.prepared().contains_key(&txid) {
                return Err(self.fail(
                    "5",
                    format!(
                        "follower {f} handled the decision of {txid} earlier, yet a late PREPARE \
                         of it left it prepared (locking {:?}); prepared now: {:?}",
                        core.prepared()[&txid].key,
                        core.prepared()
                    ),
                ));
            }
        }
        Ok(())
    }

    fn crash_follower(&mut self, f: usize) {
        self.stats.crashes += 1;
        let node = &mut self.followers[f];
        node.core = None;
        node.disk_fault = false;
        for s in self.streams.values_mut().filter(|s| s.follower == f) {
            s.follower_open = false;
            s.to_follower.clear();
        }
        self.log(|| format!("follower {f} crashes"));
    }

    fn restart_follower(&mut self, f: usize) {
        let node = &mut self.followers[f];
        let mut core = FollowerCore::new(!node.kv.is_empty());
        for record in node.journal.clone() {
            for effect in core.replay(record) {
                match effect {
                    Effect::Apply { key, op } => match op {
                        Op::Put(v) => {
                            node.kv.insert(key, v);
                        }
                        Op::Delete => {
                            node.kv.remove(&key);
                        }
                    },
                    Effect::Finish { txid, outcome } => {
                        core.finish(&txid, outcome);
                    }
                    _ => {}
                }
            }
        }
        let prepared = core.prepared().len();
        node.core = Some(core);
        node.incarnation += 1;
        let records = node.journal.len();
        self.log(|| {
            format!("follower {f} restarts: {records} records replayed, {prepared} prepared")
        });
    }

    // ---------------------------------------------------------------- leader links

    /// Opens a stream on link `f`: the pending decisions first, then `extra`.
    fn open_stream(&mut self, f: usize, extra: Option<LeaderMessage>) {
        let id = self.next_stream;
        self.next_stream += 1;
        self.streams.insert(
            id,
            Stream {
                follower: f,
                to_follower: VecDeque::new(),
                to_leader: VecDeque::new(),
                leader_open: true,
                follower_open: true,
            },
        );
        let leader = self.leader.as_mut().expect("links belong to an up leader");
        let link = &mut leader.links[f];
        link.stream = Some(id);
        link.outstanding.clear();
        let decisions: Vec<LeaderMessage> = link.pending.iter().cloned().collect();
        self.log(|| {
            format!(
                "link {f} opens s{id} with {} pending decisions",
                decisions.len()
            )
        });
        for m in decisions {
            self.link_send(f, m, false);
        }
        if let Some(m) = extra {
            self.link_send(f, m, true);
        }
    }

    fn link_send(&mut self, f: usize, msg: LeaderMessage, vote: bool) {
        let leader = self.leader.as_mut().expect("up");
        let link = &mut leader.links[f];
        let id = link.stream.expect("a stream is open");
        link.outstanding.push_back(Outstanding {
            txid: msg.txid.clone(),
            vote,
        });
        let node = &mut self.followers[f];
        node.sent.push_back((node.incarnation, msg.clone()));
        if node.sent.len() > REPLAY_POOL {
            node.sent.pop_front();
        }
        let s = self.streams.get_mut(&id).expect("open stream exists");
        // A follower that ended the stream reads no more of it.
        if s.follower_open {
            s.to_follower.push_back(msg);
        }
    }

    /// `Link::prepare`: `Some` if the answer is known at once (not sent).
    fn link_prepare(&mut self, f: usize, msg: LeaderMessage) -> Option<VoteResult> {
        let has_stream = self.leader.as_ref().expect("up").links[f].stream.is_some();
        if has_stream {
            self.link_send(f, msg, true);
            return None;
        }
        if self.reachable(f) && (self.healing || self.rng.random_bool(0.9)) {
            self.open_stream(f, Some(msg));
            None
        } else {
            self.log(|| format!("link {f}: not connected, PREPARE not sent"));
            Some(VoteResult::NotSent("unreachable".into()))
        }
    }

    /// `Link::decide`: pending until ACKed; sent now if a stream is open.
    fn link_decide(&mut self, f: usize, msg: LeaderMessage) {
        let link = &mut self.leader.as_mut().expect("up").links[f];
        link.pending.push_back(msg.clone());
        if link.stream.is_some() {
            self.link_send(f, msg, false);
        }
    }

    /// `LinkTask::reset`: the stream is dropped, unanswered votes count as no answer.
    fn link_reset(&mut self, f: usize) {
        let Some(leader) = self.leader.as_mut() else {
            return;
        };
        let link = &mut leader.links[f];
        let Some(id) = link.stream.take() else {
            return;
        };
        let outstanding = std::mem::take(&mut link.outstanding);
        if let Some(s) = self.streams.get_mut(&id) {
            s.leader_open = false;
            s.to_leader.clear();
        }
        if let Some(voting) = leader.voting.as_mut() {
            let txid = voting.txid.to_string();
            if outstanding.iter().any(|o| o.vote && o.txid == txid) {
                voting.votes[f] = Some(VoteResult::NoAnswer("stream ended".into()));
            }
        }
        self.log(|| format!("link {f} drops s{id}"));
    }

    fn deliver_to_leader(&mut self, id: u64) {
        let s = self.streams.get_mut(&id).expect("chosen stream exists");
        let f = s.follower;
        let Some((txid, reply)) = s.to_leader.pop_front() else {
            self.log(|| format!("link {f}: s{id} ended by the follower"));
            self.link_reset(f);
            return;
        };
        self.stats.delivered += 1;
        let leader = self
            .leader
            .as_mut()
            .expect("open stream means an up leader");
        let link = &mut leader.links[f];
        debug_assert_eq!(link.stream, Some(id));
        // Matched by id and kind (link.rs): a duplicated vote answers no decision.
        let is_vote = matches!(reply, Reply::Vote(_));
        let Some(pos) = link
            .outstanding
            .iter()
            .position(|o| o.txid == txid && o.vote == is_vote)
        else {
            self.log(|| format!("link {f}: reply {reply:?} to {txid} matches nothing; ignored"));
            return;
        };
        let entry = link.outstanding.remove(pos).expect("found");
        if entry.vote {
            let vote = match reply {
                Reply::Vote(o) => o,
                Reply::Ack => Outcome::Abort,
            };
            if let Some(voting) = leader.voting.as_mut() {
                if voting.txid.to_string() == txid {
                    voting.votes[f] = Some(VoteResult::Vote(vote));
                }
            }
            self.log(|| format!("link {f}: vote {vote:?} for {txid}"));
        } else if reply != Reply::Ack {
            self.log(|| format!("link {f}: decision {txid} answered {reply:?}; reset"));
            self.link_reset(f);
        } else {
            link.pending.retain(|m| m.txid != txid);
            leader.acks.push_back((f, txid.clone()));
            self.log(|| format!("link {f}: ACK {txid}"));
        }
    }

    // ---------------------------------------------------------------- the coordinator

    fn leader_pump(&mut self) -> Checked {
        loop {
            let Some(leader) = self.leader.as_mut() else {
                return Ok(());
            };
            if let Some(voting) = &leader.voting {
                if voting.votes.iter().all(Option::is_some) {
                    self.decide();
                    continue;
                }
                return Ok(());
            }
            while let Some((f, txid)) = leader.acks.pop_front() {
                let txid: TxId = txid.parse().expect("our ids parse");
                if let Some(done) = leader.core.acked(txid, &name(f)) {
                    // Unsynced append: a crash may lose it.
                    self.leader_journal.push(done);
                }
            }
            let Some(op) = leader.queue.pop_front() else {
                return Ok(());
            };
            self.begin_write(op);
        }
    }

    fn begin_write(&mut self, op: usize) {
        let key = self.ops[op].key.clone();
        let body_op = match &self.ops[op].kind {
            OpKind::Put(v) => Op::Put(v.clone()),
            OpKind::Delete => Op::Delete,
            OpKind::Get(_) => unreachable!("reads are not queued"),
        };
        let leader = self.leader.as_mut().expect("up");
        let followers: Vec<String> = (0..FOLLOWERS).map(name).collect();
        let (txid, begin) = leader.core.begin(&key, followers);
        if std::mem::take(&mut self.leader_disk_fault) {
            leader.core.forget(txid);
            self.ops[op].status = Status::Failed;
            self.ops[op].ret = Some(self.tick());
            self.log(|| format!("leader: begin {txid} not journaled; write refused"));
            return;
        }
        self.leader_journal.push(begin);
        self.leader_synced = self.leader_journal.len();
        self.ops[op].txid = Some(txid);
        self.log(|| format!("leader: begin {txid} {key:?} {body_op:?}"));
        if self.chance(100) {
            self.crash_leader("after begin journaled");
            return;
        }
        let mut votes = Vec::with_capacity(FOLLOWERS);
        for f in 0..FOLLOWERS {
            let leader = self.leader.as_ref().expect("up");
            let msg = leader.core.message(
                txid,
                Body::Prepare {
                    key: key.clone(),
                    op: body_op.clone(),
                },
                &name(f),
            );
            votes.push(self.link_prepare(f, msg));
        }
        self.leader.as_mut().expect("up").voting = Some(Voting { txid, op, votes });
    }

    fn decide(&mut self) {
        let leader = self.leader.as_mut().expect("up");
        let voting = leader.voting.take().expect("voting");
        let bugs = self.cfg.bugs;
        let yes = |v: &VoteResult| {
            *v == VoteResult::Vote(Outcome::Commit)
                || (bugs.commit_without_votes && matches!(v, VoteResult::NoAnswer(_)))
        };
        let votes: Vec<VoteResult> = voting.votes.into_iter().map(Option::unwrap).collect();
        let outcome = if votes.iter().all(yes) {
            Outcome::Commit
        } else {
            Outcome::Abort
        };
        let sent_to: Vec<String> = (0..FOLLOWERS)
            .filter(|&f| {
                if bugs.decide_only_voters {
                    matches!(votes[f], VoteResult::Vote(_))
                } else {
                    votes[f].was_sent()
                }
            })
            .map(name)
            .collect();
        let txid = voting.txid;
        let records = leader.core.decide(txid, outcome, sent_to.clone());
        if std::mem::take(&mut self.leader_disk_fault) {
            // `Coordinator::write` returns the error: the leader process stops.
            self.log(|| format!("leader: decision of {txid} not journaled; leader stops"));
            self.leader
                .as_mut()
                .expect("up")
                .queue
                .push_front(voting.op);
            self.crash_leader("decision not journaled");
            return;
        }
        self.leader_journal.extend(records);
        self.leader_synced = self.leader_journal.len();
        self.log(|| format!("leader: {txid} decided {outcome:?}; votes {votes:?}"));
        if self.chance(100) {
            // The voting op is marked unknown by the crash.
            self.leader
                .as_mut()
                .expect("up")
                .queue
                .push_front(voting.op);
            self.crash_leader("after decision journaled");
            return;
        }
        let now = self.tick();
        let op = &mut self.ops[voting.op];
        op.ret = Some(now);
        if outcome == Outcome::Commit {
            op.status = Status::Ok;
            self.stats.commits += 1;
        } else {
            op.status = Status::Failed;
            self.stats.aborts += 1;
        }
        for f in sent_to.iter().map(|n| index_of(n)) {
            let leader = self.leader.as_ref().expect("up");
            let msg = leader.core.message(txid, Body::Decide(outcome), &name(f));
            self.link_decide(f, msg);
        }
    }

    fn crash_leader(&mut self, why: &str) {
        self.stats.crashes += 1;
        let Some(leader) = self.leader.take() else {
            return;
        };
        for op in leader.voting.iter().map(|v| v.op).chain(leader.queue) {
            if self.ops[op].status == Status::Pending {
                self.ops[op].status = Status::Unknown;
                self.stats.unknown += 1;
            }
        }
        for s in self.streams.values_mut() {
            s.leader_open = false;
            s.to_leader.clear();
        }
        let keep = self
            .rng
            .random_range(self.leader_synced..=self.leader_journal.len());
        let lost = self.leader_journal.len() - keep;
        self.leader_journal.truncate(keep);
        self.leader_synced = keep;
        self.leader_disk_fault = false;
        self.log(|| format!("leader crashes ({why}); {lost} unsynced records lost"));
    }

    fn restart_leader(&mut self) {
        let recovery = LeaderCore::recover(self.leader_journal.clone(), || CLUSTER.to_string());
        self.leader_journal.extend(recovery.persist);
        self.leader_synced = self.leader_journal.len();
        let core = recovery.core;
        self.log(|| {
            format!(
                "leader starts: epoch {}, {} unfinished, {} deliveries",
                core.epoch(),
                core.txns().len(),
                recovery.deliveries.len()
            )
        });
        self.leader = Some(LeaderNode {
            core,
            links: (0..FOLLOWERS).map(|_| Link::default()).collect(),
            acks: VecDeque::new(),
            voting: None,
            queue: VecDeque::new(),
        });
        for d in recovery.deliveries {
            let f = index_of(&d.follower);
            let leader = self.leader.as_ref().expect("up");
            let msg = leader
                .core
                .message(d.txid, Body::Decide(d.outcome), &d.follower);
            self.link_decide(f, msg);
        }
    }

    // ---------------------------------------------------------------- clients

    fn client_write(&mut self) {
        let key = KEYS[self.rng.random_range(0..KEYS.len())].to_string();
        let kind = if self.rng.random_ratio(3, 4) {
            self.next_value += 1;
            OpKind::Put(format!("v{}", self.next_value))
        } else {
            OpKind::Delete
        };
        let call = self.tick();
        self.log(|| format!("client: write {key:?} {kind:?}"));
        self.ops.push(ClientOp {
            key,
            kind,
            call,
            ret: None,
            status: Status::Pending,
            txid: None,
        });
        let op = self.ops.len() - 1;
        self.leader.as_mut().expect("up").queue.push_back(op);
    }

    fn client_read(&mut self) {
        let f = self.rng.random_range(0..FOLLOWERS);
        let key = KEYS[self.rng.random_range(0..KEYS.len())];
        self.read_on(f, key);
    }

    /// A direct `Get` on follower `f`; recorded in the history if answered.
    fn read_on(&mut self, f: usize, key: &str) -> bool {
        let node = &self.followers[f];
        let Some(core) = &node.core else {
            return false;
        };
        if !self.cfg.bugs.reads_ignore_locks && core.check_readable(key).is_err() {
            self.stats.unavailable_reads += 1;
            self.log(|| format!("client: read {key:?} on follower {f}: UNAVAILABLE"));
            return false;
        }
        let value = node.kv.get(key).cloned();
        self.stats.reads += 1;
        self.log(|| format!("client: read {key:?} on follower {f}: {value:?}"));
        let call = self.tick();
        let ret = self.tick();
        self.ops.push(ClientOp {
            key: key.to_string(),
            kind: OpKind::Get(value),
            call,
            ret: Some(ret),
            status: Status::Ok,
            txid: None,
        });
        true
    }

    // ---------------------------------------------------------------- invariants

    /// Invariant 1: readable copies of a key agree.
    fn check_agreement(&self) -> Checked {
        for key in KEYS {
            let mut first: Option<(usize, Option<&String>)> = None;
            for (f, node) in self.followers.iter().enumerate() {
                let Some(core) = &node.core else { continue };
                if core.check_readable(key).is_err() {
                    continue;
                }
                let value = node.kv.get(key);
                match first {
                    None => first = Some((f, value)),
                    Some((g, other)) if other != value => {
                        return Err(self.fail(
                            "1",
                            format!(
                                "key {key:?} is readable on follower {g} as {other:?} and on \
                                 follower {f} as {value:?} at the same time"
                            ),
                        ))
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }

    /// Ends the faults and runs until nothing is left to do.
    fn heal(&mut self) -> Checked {
        self.healing = true;
        self.log(|| "heal: faults stop, everything restarts".into());
        self.leader_disk_fault = false;
        for f in 0..FOLLOWERS {
            self.followers[f].partitioned = false;
            self.followers[f].disk_fault = false;
            if self.followers[f].core.is_none() {
                self.restart_follower(f);
            }
        }
        if self.leader.is_none() {
            self.restart_leader();
        }
        for _ in 0..100_000 {
            self.leader_pump()?;
            self.check_agreement()?;
            self.streams.retain(|_, s| !s.finished());
            let ready: Vec<(u64, bool)> = self
                .streams
                .iter()
                .flat_map(|(&id, s)| {
                    let mut v = Vec::new();
                    if s.deliverable_to_follower() {
                        v.push((id, true));
                    }
                    if s.deliverable_to_leader() {
                        v.push((id, false));
                    }
                    v
                })
                .collect();
            if !ready.is_empty() {
                let (id, to_follower) = ready[self.rng.random_range(0..ready.len())];
                if to_follower {
                    self.deliver_to_follower(id)?;
                } else {
                    self.deliver_to_leader(id);
                }
                continue;
            }
            let leader = self.leader.as_ref().expect("up while healing");
            if let Some(f) = (0..FOLLOWERS)
                .find(|&f| leader.links[f].stream.is_none() && !leader.links[f].pending.is_empty())
            {
                self.log(|| format!("heal: link {f} reconnects"));
                self.open_stream(f, None);
                continue;
            }
            // Nothing in flight but answers missing: a message was dropped; time out.
            if let Some(f) = (0..FOLLOWERS).find(|&f| !leader.links[f].outstanding.is_empty()) {
                self.log(|| format!("heal: link {f} times out"));
                self.link_reset(f);
                continue;
            }
            return Ok(());
        }
        Err(self.fail(
            "2",
            "the cluster does not become quiet: messages keep flowing after healing".into(),
        ))
    }

    fn final_checks(&mut self) -> Checked {
        // Invariant 2.
        let leader = self.leader.as_ref().expect("up after healing");
        if leader.voting.is_some() || !leader.queue.is_empty() {
            return Err(self.fail("2", "a client write is still running after healing".into()));
        }
        if !leader.core.txns().is_empty() {
            return Err(self.fail(
                "2",
                format!("unfinished leader transactions: {:?}", leader.core.txns()),
            ));
        }
        for (f, node) in self.followers.iter().enumerate() {
            let core = node.core.as_ref().expect("up after healing");
            if !core.prepared().is_empty() {
                return Err(self.fail(
                    "2",
                    format!(
                        "follower {f} still has prepared transactions after healing: {:?}",
                        core.prepared()
                    ),
                ));
            }
        }
        for f in 1..FOLLOWERS {
            if self.followers[f].kv != self.followers[0].kv {
                return Err(self.fail(
                    "2",
                    format!(
                        "followers differ after healing: f0 {:?}, f{f} {:?}",
                        self.followers[0].kv, self.followers[f].kv
                    ),
                ));
            }
        }
        // Invariant 3.
        for key in KEYS {
            let value_of = |op: &ClientOp| match &op.kind {
                OpKind::Put(v) => Some(v.clone()),
                _ => None,
            };
            let writes = |status: Status| {
                self.ops
                    .iter()
                    .filter(move |op| op.key == key && op.status == status && op.txid.is_some())
                    .filter(|op| !matches!(op.kind, OpKind::Get(_)))
            };
            let last_acked = writes(Status::Ok).max_by_key(|op| op.txid);
            let since = last_acked.and_then(|op| op.txid);
            let mut allowed: Vec<Option<String>> = vec![last_acked.and_then(value_of)];
            allowed.extend(
                writes(Status::Unknown)
                    .filter(|op| op.txid > since)
                    .map(value_of),
            );
            let actual = self.followers[0].kv.get(key).cloned();
            if !allowed.contains(&actual) {
                return Err(self.fail(
                    "3",
                    format!(
                        "key {key:?} ends as {actual:?}; the last acknowledged write ({:?}) or a \
                         later one of unknown outcome would give one of {allowed:?}",
                        last_acked.map(|op| (op.txid, &op.kind))
                    ),
                ));
            }
        }
        // Invariant 4, with a final read of every key.
        for key in KEYS {
            let f = self.rng.random_range(0..FOLLOWERS);
            if !self.read_on(f, key) {
                return Err(self.fail(
                    "2",
                    format!("key {key:?} still unreadable on follower {f} after healing"),
                ));
            }
        }
        let history: Vec<Operation> = self
            .ops
            .iter()
            .enumerate()
            .filter(|(_, op)| matches!(op.status, Status::Ok | Status::Unknown))
            .map(|(i, op)| Operation {
                client: i,
                key: op.key.clone(),
                kind: op.kind.clone(),
                call: op.call,
                ret: if op.status == Status::Ok {
                    op.ret
                } else {
                    None
                },
            })
            .collect();
        if let Err(violation) = check(&history) {
            return Err(self.fail("4", violation.to_string()));
        }
        Ok(())
    }
}

fn brief(msg: &LeaderMessage) -> String {
    let body = match &msg.body {
        Body::Prepare { key, op } => format!("PREPARE {key:?} {op:?}"),
        Body::Decide(o) => format!("{o:?}"),
    };
    let mark = msg.low_water.map(|m| m.to_string()).unwrap_or_default();
    format!("{} {body} (epoch {}, mark {mark})", msg.txid, msg.epoch)
}

/// Runs one schedule.
fn run(seed: u64, cfg: Config) -> Result<Stats, Failure> {
    Sim::new(seed, cfg, false).run()
}

/// Runs one schedule again with the event log; the report for a failure.
fn report(seed: u64, cfg: Config, failure: &Failure) -> String {
    let mut sim = Sim::new(seed, cfg, true);
    let again = sim.run();
    let events = sim.events.take().unwrap_or_default();
    let from = events.len().saturating_sub(REPORT_EVENTS);
    let mut out = format!("{}\n", failure.detail);
    if again.is_ok() {
        out.push_str("(the traced rerun did not fail: the simulation is not deterministic!)\n");
    }
    out.push_str(&format!(
        "last {} of {} events:\n",
        events.len() - from,
        events.len()
    ));
    for e in &events[from..] {
        out.push_str(e);
        out.push('\n');
    }
    out.push_str(&format!(
        "reproduce: TPC_SIM_PROFILE={} TPC_SIM_SEED={seed} cargo test --lib \
         simulation::replay_one_seed -- --ignored --nocapture\n",
        format!("{:?}", cfg.profile).to_lowercase(),
    ));
    out
}

/// Runs `seeds` schedules; panics with a report at the first failure.
fn run_many(seeds: std::ops::Range<u64>, cfg: Config) -> Stats {
    let started = Instant::now();
    let mut total = Stats::default();
    let count = seeds.end - seeds.start;
    for seed in seeds {
        match run(seed, cfg) {
            Ok(stats) => total.add(&stats),
            Err(failure) => panic!("{}", report(seed, cfg, &failure)),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "simulation {:?}: {count} schedules, {} steps in {secs:.2} s ({:.0} schedules/s, {:.0} \
         steps/s); {total:?}",
        cfg.profile,
        total.steps,
        count as f64 / secs,
        total.steps as f64 / secs,
    );
    total
}

fn env_u64(var: &str) -> Option<u64> {
    std::env::var(var).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{var} must be a number"))
    })
}

#[cfg(test)]
#[path = "simulation_tests.rs"]
mod tests;
