//! Deterministic simulation of the 2PC protocol cores under concurrency and adversarial
//! schedules.
//!
//! # The model
//!
//! One leader and [`FOLLOWERS`] followers run in a single thread, driven by a seeded
//! random number generator (`StdRng`), so a schedule is a pure function of its seed.
//! Every protocol decision is made by the real cores: the leader's [`LeaderCore`] (with
//! its per-link `LinkCore`s and its `Recovery`) and the followers' [`FollowerCore`]s.
//! What is simulated around them is only what the runtimes do with the cores' effects,
//! split like them: `simulation/leader.rs` carries out the leader core's effects as
//! `coordinator.rs` does, with the group-commit journal (`journal/group.rs`) and the
//! links' streams (`link.rs`); `simulation/follower.rs` carries out the follower core's
//! as `follower_state.rs` does, with the runtime's own batching rules
//! (`follower_batch.rs`); `simulation/checks.rs` holds the invariants and the healing
//! phase.
//!
//! **Leader.** Client transactions that write, on the keys [`KEYS`] (a Put with a
//! unique value or a Delete of one key; one unique value put to two or three keys at
//! once; a compare-and-swap, which puts a unique value if the key holds what some
//! follower shows, else reads it) are submitted to the core while others are under
//! way, up to [`MAX_WRITES_IN_FLIGHT`] at once; the core queues a transaction behind
//! any other on one of its keys and starts the rest. Its effects are carried out in order after every move (`leader_pump`),
//! with a chance of a crash between any two: journal jobs queue for the journal thread,
//! link effects open streams (which may fail to connect: reported to the core at once)
//! and send messages, answers reach the clients. Time is the core's input: it moves
//! only when the adversary lets it pass, to the core's next deadline (a vote timeout, a
//! reconnection after a backoff, a journal retry).
//!
//! **The leader's journal** (`GroupJournal`) is a file (a `Vec` of records with a
//! durable prefix) and a queue of jobs: appends (synced ones, whose result the core
//! waits for, and the unsynced `done`s) and checkpoint rewrites. The adversary runs the
//! group-commit thread: it takes a prefix of the queue and carries it out in order, one
//! write for all appends before a rewrite, then the rewrite, and the core hears each
//! result (a crash may come first). A journal write may fail *cleanly* (nothing
//! written; the core retries after a pause) or *broken* (a failed fsync: the records
//! may or may not be on disk, and the leader stops). A leader crash drops every volatile
//! thing, keeps any prefix of the file beyond its durable part (including part of a
//! group being written), and marks every unanswered client write as of unknown outcome;
//! a restart runs [`LeaderCore::recover`] (the real one), journals its `persist`
//! records and lets the core's queued effects (owed decisions, fences) out.
//!
//! **Follower** (`follower_state.rs`). Each stream's messages wait in order; the
//! adversary runs the state owner on a merge of the follower's streams (and of replayed
//! messages): it takes up to some number of messages and hands them to the core one by
//! one, building a batch. A message is handled only after the pending batch has been
//! carried out when it is legacy or the follower has no cluster id yet (it may adopt
//! one; such a message is also carried out alone), or when `Batch::must_precede` says
//! so (a PREPARE whose id a pending decision finishes, or whose key it unlocks); both
//! rules are the runtime's own code (`handled_alone`, and its `Batch`, which records
//! what pending effects settle), and a test checks that `follower_state.rs` still uses
//! them as [`follower`] does. Carrying
//! out a batch: one journal write for all its records, then all its store changes (the
//! last one per key, applied *unsynced*), then all `finish`es, then the replies, in
//! message order, each on its own stream. Crashes may hit before the journal write, in it (a
//! prefix of the records survives; a torn tail is dropped on start), after it, after
//! the applies, or between replies. A failed journal write of a batch (clean: the node
//! goes on; broken: the same answers, then the node stops) turns every message whose
//! effects included a PREPARE record into `prepare_failed` and an ABORT vote and fails
//! the stream of every other one; a failed store write fails the stream of every
//! message with a store change, which stays prepared. An error answer ends the stream:
//! later replies on it are lost, but messages the follower had already read from it are
//! still handled.
//!
//! **The follower's store**: a map as readers see it (they never see a file being
//! rewritten: the store's lock), plus, per key changed since the last store sync, the
//! values it had since; a crash leaves any of them in the key's file, or, if a value
//! was written in place, a torn, empty or mixed file (a value nobody wrote). A
//! checkpoint takes two adversary moves between batches, as `checkpoint_if_due` runs
//! between batches: the first starts the store sync and keeps `live_records()` of that
//! moment; the batches after it run as usual; the second finds the sync done (each
//! key's value at its start, or a later one, is durable) and rewrites the journal with
//! those live records followed by every record journaled since. A restart
//! is `FollowerCore::new(has_data)` (store or journal not empty) plus
//! [`FollowerCore::replay`] of every record, then the last replayed change of each key
//! written *unsynced* where the file differs (or is torn), like a live apply: the
//! journal still holds its record until a checkpoint has synced the store.
//!
//! **Members** (with `Config::changes`, `simulation/members.rs`): an operator adds and
//! removes followers through the leader core; followers copy what they gain in the
//! next view from the members in force, as `catch_up.rs` does, and the leader hears
//! when all have. Invariant 1 then reads each follower's own views: a follower holds
//! a key only if it keeps it, and answers reads only of keys it holds in the view in
//! force it has taken (the lease is refused to one behind).
//!
//! **Streams** are FIFO queues per connection in both directions. When the leader side
//! ends (cut, timeout, leader crash) its unread replies are lost, but messages already
//! sent may still reach the follower late (buffered in the transport); when the follower
//! side ends (crash, refusal, failed write) the leader sees the end once it has read what
//! came before. The leader reads one or more replies at a time (a frame).
//!
//! The adversary picks, at each step: run a follower's state owner on some of its
//! messages (most likely), deliver replies to the leader, run the leader's journal
//! thread, let time pass, drop or duplicate a message, replay an old message to a
//! follower, cut a stream, partition a follower, crash/restart a follower or the
//! leader, fail a journal write (clean or broken) or a store write, checkpoint a
//! follower, start a client write, read a key directly on a follower (UNAVAILABLE if
//! `check_readable` refuses, else the map's value), or read every key on one follower's
//! snapshot, as a read-only `Txn` does (refused if any key is locked).
//!
//! Invariants (each failure names its number, the seed and the step):
//!
//! 1. *Agreement at all times*: after every step (and inside a batch, after its store
//!    changes), for every key, all up followers whose `check_readable` accepts it hold
//!    the same value.
//! 2. *Atomicity and termination*: after healing (restart everything, stop faults,
//!    deliver until quiet, then kill and restart every node once more, which loses the
//!    followers' unsynced store changes, and deliver until quiet again) no follower has a
//!    prepared transaction, the leader has no transaction and its recovery is complete,
//!    and all followers' maps are identical (and hold no torn file).
//! 3. *Durability*: each key's final value is that of the last acknowledged write to
//!    it, or of a later write whose outcome the client did not learn.
//! 4. *Linearizability* of the client history (writes, direct follower reads, and a
//!    final read of each key), checked with [`crate::check::check`].
//! 5. *Idempotence*: after every step, no follower holds prepared a transaction whose
//!    decision it has already handled to the end (in any incarnation) (DESIGN §1.5).
//! 6. *Atomic visibility* (DESIGN §6): a snapshot read sees each transaction of several
//!    keys whole: a key holding its value means each of its other keys holds that value
//!    or a later transaction's write.
//!
//! A transaction of several keys is one client op per key in the history (the same
//! value, call and answer), so invariants 3 and 4 hold it per key; a compare-and-swap
//! whose compare failed is a write the client was told was not applied.
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
//! Each is now a regression test, a minimal core-level reproduction (and, where they
//! still reach it, the schedules that found it).
//!
//! Found while transactions of several keys were being built (`tcp` seed 4): the
//! leader queued a transaction's PREPAREs before entering it in its table, so each
//! carried a low-water mark just above its own id; a follower took the mark and refused
//! the PREPARE as already decided, and a restarted leader's recovery, trusting the
//! mark, committed the transaction the others held while that follower never would
//! (invariant 1). The core now enters the transaction first
//! (`a_write_prepares_on_every_follower_with_the_participants_in_one_send_per_link`
//! checks the mark).
//!
//! Found by the soak with compare-and-swaps (`tcp` seed 1003156 and four more): a
//! follower's fence report computed whether a prepared transaction's compares held from
//! its store at report time; a decision whose batch failed after writing part of the
//! store leaves the transaction prepared over changed keys, so the reports disagreed,
//! and the restarted leader aborted a transaction an earlier one had committed
//! (invariant 1). What the vote found is now journaled with it (the `txn` record's
//! `held`/`failed`) and reported as such, and a report of the decision overrides a
//! disagreement
//! (`a_fence_report_says_whether_a_prepared_transactions_compares_hold`).
//!
//! Found when the leader journaled `begin` and every decision (before protocol 2), by
//! the concurrent model that drove a hand-written copy of the leader's rules:
//!
//! - C: when the journal write of a decision failed cleanly, the leader aborted in
//!   memory and sent ABORT unjournaled, but a checkpoint computed since could already
//!   hold the COMMIT, and its rewrite could succeed: after a restart, the followers that
//!   had not ACKed the ABORT got COMMIT. The leader core now never changes a decision
//!   whose write failed: it writes the same record again until it is durable
//!   (`a_journal_write_that_fails_cleanly_is_retried_and_a_broken_one_stops_the_leader`
//!   in `leader_core_tests.rs`), so a checkpoint that holds it agrees.
//! - D: a decision owed to nobody (every PREPARE not sent) whose `done` a crash tore
//!   left `recover` with a transaction awaiting nobody, unfinished forever. `recover`
//!   finishes it (`a_journaled_decision_owed_to_nobody_is_finished_at_a_restart`).
//!
//! Found by the sequential model before that one:
//!
//! - `regression_failed_journal_write_must_not_lose_the_cluster_id` (`tcp` seed 1144,
//!   `hostile` seed 110): a failed journal write of the batch that adopted the cluster
//!   id left the core believing the id durable; after a crash the follower refused the
//!   leader for good, with a prepared transaction locked. Fixed by
//!   `FollowerCore::journal_failed`.
//! - `regression_decided_abort_must_survive_a_restart` (`amnesia` seed 1483): an ABORT
//!   vote given without journaling anything, and the ABORT decision that followed, were
//!   not journaled, so after a restart a late PREPARE of that transaction took a lock
//!   nobody would release. Fixed: such a decision is journaled as a marker.
//!
//! # Bugs planted to check the checks
//!
//! Each `the_checks_catch_*` test plants one fault, in the real leader core
//! (`leader_core::Bugs`: commit without every vote, skip the decision for missing
//! votes, no fence, an ABORT sent before it is durable, marks sent while recovery is
//! incomplete) or in how the simulation carries out the follower's effects (a vote not
//! journaled, reads that ignore locks, batches that ignore `must_precede`, a replay that
//! skips applies, a transaction applied in part), and asserts that some schedule breaks
//! an invariant.
//!
//! # What is not simulated
//!
//! The tokio/tonic code of the runtimes (tasks, channels, gRPC, frames, the journal and
//! kvstore files, probes, the leader's `Get`) is not run; what they do with the effects
//! is restated here, and every rule is the cores'. Legacy (id-less) messages, classic
//! peers, `StreamClosed` commands (which only matter to legacy messages, and otherwise
//! only end a batch early, which the adversary does anyway) and cluster mix-ups are not
//! generated: there is one cluster and one leader lineage, and every follower speaks
//! protocol 2. Time is logical. Versions are not modelled: a value's version is its
//! transaction's id, set by the follower core with the decision (`Effect::Apply`); the
//! store view the follower core evaluates compares on gives every key version 0.0, so
//! compares are on values and existence only.
//!
//! # Reproducing a failure
//!
//! A failure prints the profile, the seed and the last events of the schedule. Replay it
//! alone, with the whole event log:
//!
//! ```text
//! TPC_SIM_PROFILE=hostile TPC_SIM_SEED=1234 cargo test --lib simulation::tests::replay_one_seed -- --ignored --nocapture
//! ```
//!
//! Long soak, reporting every distinct failure with its first seed (`TPC_SIM_SEEDS`
//! schedules per profile, default 20,000; `TPC_SIM_PROFILE` picks one profile,
//! `TPC_SIM_FIRST` the first seed, `TPC_SIM_STEPS` the schedule length, short ones
//! find short reproductions). On two cores, 20,000 schedules of 400 steps take about 30 s per profile:
//!
//! ```text
//! TPC_SIM_SEEDS=20000 cargo test --release --lib simulation::tests::soak -- --ignored --nocapture
//! ```

mod checks;
mod follower;
mod leader;
mod members;
mod termination;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::follower_core::{Effect, FollowerCore};
use super::leader_core::{Bugs as LeaderBugs, JobId, LeaderCore};
use super::message::{Body, LeaderMessage, Outcome, Reply, TxId, TxnId};
use super::records::{FollowerRecord, LeaderRecord};
use crate::check::{check, OpKind, Operation};
use crate::kvstore::Versioned;
use crate::placement::{MemberId, View};
use crate::txn::{Compare, Target, TxnOp, TxnSpec};
use leader::LeaderNode;

/// Number of followers.
const FOLLOWERS: usize = 3;
/// The key space: small, so that transactions collide.
const KEYS: [&str; 3] = ["a", "b", "c"];
const CLUSTER: &str = "sim-cluster";
/// Steps per schedule in the default test.
const STEPS: usize = 400;
/// How many recent events a failure report shows.
const REPORT_EVENTS: usize = 80;
/// Client writes under way or queued at the leader at most.
const MAX_WRITES_IN_FLIGHT: usize = 5;
/// Messages remembered per follower for replays.
const REPLAY_POOL: usize = 64;
/// What a key file holds after a crash tore an unsynced write of it.
const TORN: &str = "<torn file>";

fn name(f: usize) -> String {
    format!("f{f}")
}

/// Follower `f`'s member id (as `crate::member` keeps it on disk).
fn member_id(f: usize) -> String {
    format!("m{f}")
}

/// A follower's core as `Follower::open` makes it.
fn follower_core(f: usize, has_data: bool) -> FollowerCore {
    let mut core = FollowerCore::new(has_data);
    core.set_member_id(member_id(f));
    core
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

/// Deliberately broken rules, to show that the invariants can fail: in the real leader
/// core (`leader_core::Bugs`), or in how the simulation carries out the follower's.
#[derive(Clone, Copy, Debug, Default)]
struct Bugs {
    /// Faults planted in the leader core's rules.
    leader: LeaderBugs,
    /// The follower wrapper does not journal PREPARE records (a vote that is not durable).
    skip_prepare_persist: bool,
    /// Direct follower reads ignore `check_readable` (answer with the old value).
    reads_ignore_locks: bool,
    /// The follower's batches ignore `Batch::must_precede`: a late PREPARE is handled
    /// in the same batch as the decision that settles it.
    ignore_must_precede: bool,
    /// A restarted follower does not re-apply the decided writes its journal holds (as
    /// if the store's unsynced changes were durable).
    replay_skips_applies: bool,
    /// A live decision applies only the first write of its transaction.
    apply_first_write_only: bool,
}

#[derive(Clone, Copy, Debug)]
struct Config {
    profile: Profile,
    steps: usize,
    bugs: Bugs,
    /// The leader's `--replication`: below [`FOLLOWERS`], each key lives on some
    /// followers only, and its transactions run among them.
    replication: usize,
    /// The adversary also changes the members (`simulation/members.rs`).
    changes: bool,
}

impl Config {
    fn new(profile: Profile) -> Config {
        Config {
            profile,
            steps: STEPS,
            bugs: Bugs::default(),
            replication: FOLLOWERS,
            changes: false,
        }
    }
}

/// An invariant that did not hold.
#[derive(Debug)]
struct Failure {
    /// Which invariant (1..=5).
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
    /// Decisions a follower learned from the other participants (cooperative
    /// termination).
    terminated: usize,
    /// Transactions begun while another (on another key) was under way.
    overlapping: usize,
    /// Writes that queued behind a transaction on their key.
    queued: usize,
    /// Batches carried out by followers, and the messages in those of two or more.
    batches: usize,
    batched: usize,
    max_batch: usize,
    /// Journal writes that failed (leader and followers).
    journal_failures: usize,
    /// Unsynced store changes a follower crash undid (or tore).
    lost_applies: usize,
    /// Transactions a restarted leader found in doubt and decided from the followers'
    /// fence reports.
    recovered: usize,
    /// Transactions of several keys, and compare-and-swaps that did not swap.
    multi_key: usize,
    cas_not_swapped: usize,
    /// Reads of every key on one follower's snapshot.
    snapshot_reads: usize,
    /// Views that came into force after the first (the members changed).
    views_in_force: usize,
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
        self.terminated += o.terminated;
        self.overlapping += o.overlapping;
        self.queued += o.queued;
        self.batches += o.batches;
        self.batched += o.batched;
        self.max_batch = self.max_batch.max(o.max_batch);
        self.journal_failures += o.journal_failures;
        self.lost_applies += o.lost_applies;
        self.recovered += o.recovered;
        self.multi_key += o.multi_key;
        self.cas_not_swapped += o.cas_not_swapped;
        self.snapshot_reads += o.snapshot_reads;
        self.views_in_force += o.views_in_force;
    }
}

/// How a journal write fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// The write fails and the file is as it was (disk full): the node goes on.
    Clean,
    /// The fsync fails: what reached the file is unknown, and the node stops.
    Broken,
}

/// One connection between the leader and a follower.
#[derive(Debug)]
struct Stream {
    follower: usize,
    /// Sent by the leader, not yet handled by the follower (in the transport, or read
    /// by the follower's stream task and queued for its state owner).
    to_follower: VecDeque<LeaderMessage>,
    /// Replies, with the transaction id they carry on the wire.
    to_leader: VecDeque<(TxnId, Reply)>,
    /// The leader's link still reads this stream.
    leader_open: bool,
    /// The follower still answers on it: its process is alive and has not ended it.
    follower_open: bool,
}

impl Stream {
    fn deliverable_to_leader(&self) -> bool {
        self.leader_open && (!self.to_leader.is_empty() || !self.follower_open)
    }
    fn finished(&self) -> bool {
        !self.leader_open && self.to_follower.is_empty()
    }
}

struct FollowerNode {
    /// `None` while crashed.
    core: Option<FollowerCore>,
    journal: Vec<FollowerRecord>,
    /// The key files as readers see them (unsynced changes included).
    kv: BTreeMap<String, String>,
    /// Per key changed since the last store sync: the values it had since then, the
    /// synced one first. A crash leaves any of them, or the current one, in the file.
    unsynced: BTreeMap<String, Vec<Option<String>>>,
    /// A checkpoint whose store sync is under way (`follower_state::Checkpoint`).
    checkpoint: Option<SimCheckpoint>,
    incarnation: u64,
    partitioned: bool,
    /// The next journal write fails.
    disk_fault: Option<Fault>,
    /// The next store write fails (after a prefix of its changes).
    store_fault: bool,
    /// Messages sent to this follower, with the incarnation they were sent to.
    sent: VecDeque<(u64, LeaderMessage)>,
    /// Old messages the adversary injects (their replies go nowhere).
    replays: VecDeque<LeaderMessage>,
}

/// A follower checkpoint between the start of its store sync and the journal rewrite.
struct SimCheckpoint {
    /// The live records when the sync started.
    live: Vec<FollowerRecord>,
    /// The records journaled since.
    since: Vec<FollowerRecord>,
    /// Per key unsynced when the sync started: how many of its older values the sync
    /// makes moot (the key's value at the start is durable once the sync is done).
    covers: BTreeMap<String, usize>,
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

/// One key's part of a client's transaction (a transaction of several keys is one op
/// per key, with the same value, call and answer), or a read.
struct ClientOp {
    key: String,
    kind: OpKind,
    call: u64,
    ret: Option<u64>,
    status: Status,
    txid: Option<TxId>,
    /// A compare-and-swap: it wrote only if its compare held (else it is `Failed`).
    conditional: bool,
}

#[derive(Clone, Copy, Debug)]
enum Action {
    FollowerRun(usize),
    DeliverToLeader(u64),
    LeaderJournal,
    TimePasses,
    Drop(u64),
    Duplicate(u64),
    Replay(usize),
    Cut(usize),
    Partition(usize),
    CrashFollower(usize),
    RestartFollower(usize),
    CrashLeader,
    RestartLeader,
    DiskFault(Option<usize>),
    StoreFault(usize),
    Checkpoint(usize),
    Write,
    Read,
    /// An operator adds follower `f` to the members, or removes it.
    ChangeMembers(usize),
    /// Follower `f` copies what it gains in the next view from one member in force.
    Copy(usize),
    /// The leader hears that every member of the next view caught up.
    CaughtUp,
    /// Follower `f` asks the other participants of one of its prepared transactions
    /// for its decision (cooperative termination).
    Terminate(usize),
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
    leader_disk_fault: Option<Fault>,
    streams: BTreeMap<u64, Stream>,
    next_stream: u64,
    ops: Vec<ClientOp>,
    next_value: u64,
    /// Per follower: transactions whose decision it has handled to the end (ground truth,
    /// across crashes).
    told: Vec<HashSet<TxnId>>,
    events: Option<Vec<String>>,
    stats: Stats,
    /// Where keys live: the view in force at the leader, as it last was (DESIGN §7).
    placement: View,
    /// Per follower, its catch-up on the next view (`simulation/members.rs`).
    catch_up: Vec<members::CatchUp>,
    /// The epoch of the view in force at the leader (0: none formed yet).
    view_in_force: u64,
}

impl Sim {
    /// Whether follower `f` is one of `key`'s replicas in the view in force.
    fn holds(&self, f: usize, key: &str) -> bool {
        self.placement.holds(&MemberId(member_id(f)), key)
    }

    /// `key`'s replicas.
    fn replicas_of(&self, key: &str) -> Vec<usize> {
        (0..FOLLOWERS).filter(|&f| self.holds(f, key)).collect()
    }

    /// A random replica of `key`.
    fn random_replica(&mut self, key: &str) -> usize {
        let replicas = self.replicas_of(key);
        replicas[self.rng.random_range(0..replicas.len())]
    }

    fn new(seed: u64, cfg: Config, trace: bool) -> Sim {
        let followers = (0..FOLLOWERS)
            .map(|f| FollowerNode {
                core: Some(follower_core(f, false)),
                journal: Vec::new(),
                kv: BTreeMap::new(),
                unsynced: BTreeMap::new(),
                checkpoint: None,
                incarnation: 0,
                partitioned: false,
                disk_fault: None,
                store_fault: false,
                sent: VecDeque::new(),
                replays: VecDeque::new(),
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
            leader_disk_fault: None,
            streams: BTreeMap::new(),
            next_stream: 1,
            ops: Vec::new(),
            next_value: 0,
            told: vec![HashSet::new(); FOLLOWERS],
            events: trace.then(Vec::new),
            stats: Stats::default(),
            placement: View::new(
                1,
                cfg.replication,
                &(0..FOLLOWERS)
                    .map(|f| MemberId(member_id(f)))
                    .collect::<Vec<_>>(),
            ),
            catch_up: vec![members::CatchUp::default(); FOLLOWERS],
            view_in_force: 0,
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

    /// A fault or crash point: never while healing.
    fn chance(&mut self, one_in: u32) -> bool {
        !self.healing && self.rng.random_ratio(1, one_in)
    }

    fn fault_kind(&mut self) -> Fault {
        if self.rng.random_ratio(2, 3) {
            Fault::Clean
        } else {
            Fault::Broken
        }
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
            self.after_step()?;
        }
        self.step = self.cfg.steps + 1;
        self.heal()?;
        self.final_checks()?;
        self.stats.steps = self.cfg.steps;
        Ok(self.stats)
    }

    /// What follows every move: the coordinator decides what it can, the invariants that
    /// hold at all times are checked, and finished streams are forgotten.
    fn after_step(&mut self) -> Checked {
        self.leader_pump();
        self.follow_view_in_force();
        self.check_agreement()?;
        self.check_idempotence()?;
        self.streams.retain(|_, s| !s.finished());
        Ok(())
    }

    fn choose(&mut self) -> Action {
        let mut options: Vec<(u32, Action)> = Vec::new();
        let hostile = self.cfg.profile.message_faults();
        for (&id, s) in &self.streams {
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
            if up && self.inbox_len(f) > 0 {
                options.push((150, Action::FollowerRun(f)));
            }
            if hostile && up && !self.followers[f].sent.is_empty() {
                options.push((4, Action::Replay(f)));
            }
            let partitioned = self.followers[f].partitioned;
            options.push((if partitioned { 20 } else { 1 }, Action::Partition(f)));
            if up {
                options.push((2, Action::CrashFollower(f)));
                options.push((3, Action::Checkpoint(f)));
                options.push((1, Action::DiskFault(Some(f))));
                options.push((1, Action::StoreFault(f)));
            } else {
                options.push((40, Action::RestartFollower(f)));
            }
            if self.leader.as_ref().is_some_and(|l| l.streams[f].is_some()) {
                options.push((2, Action::Cut(f)));
            }
        }
        match &self.leader {
            Some(leader) => {
                options.push((2, Action::CrashLeader));
                options.push((1, Action::DiskFault(None)));
                if !leader.jobs.is_empty() {
                    options.push((100, Action::LeaderJournal));
                }
                if leader.core.next_deadline().is_some() {
                    options.push((4, Action::TimePasses));
                }
                if self.writes_in_flight() < MAX_WRITES_IN_FLIGHT {
                    options.push((30, Action::Write));
                }
            }
            None => options.push((40, Action::RestartLeader)),
        }
        options.push((30, Action::Read));
        if self.cfg.changes {
            self.change_options(&mut options);
        }
        self.termination_options(&mut options);
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
            Action::FollowerRun(f) => self.follower_run(f)?,
            Action::DeliverToLeader(id) => self.deliver_to_leader(id),
            Action::LeaderJournal => self.leader_journal_run(),
            Action::TimePasses => self.leader_time_passes(),
            Action::Drop(id) => {
                let s = self.streams.get_mut(&id).expect("chosen stream exists");
                let to_follower = !s.to_follower.is_empty()
                    && (s.to_leader.is_empty() || self.rng.random_bool(0.5));
                if to_follower {
                    let m = s.to_follower.pop_front().map(|m| brief(&m));
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
            Action::Replay(f) => self.replay(f),
            Action::Cut(f) => {
                // The transport ends the connection: the leader's side sees it at once.
                if let Some((_, id)) = self.leader.as_ref().and_then(|l| l.streams[f]) {
                    if let Some(s) = self.streams.get_mut(&id) {
                        s.follower_open = false;
                    }
                }
                self.link_reset(f, "cut");
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
                let fault = self.fault_kind();
                self.followers[f].disk_fault = Some(fault);
                self.log(|| format!("follower {f}: next journal write fails ({fault:?})"));
            }
            Action::DiskFault(None) => {
                let fault = self.fault_kind();
                self.leader_disk_fault = Some(fault);
                self.log(|| format!("leader: next journal write fails ({fault:?})"));
            }
            Action::StoreFault(f) => {
                self.followers[f].store_fault = true;
                self.log(|| format!("follower {f}: next store write fails"));
            }
            Action::Checkpoint(f) => self.checkpoint_follower(f),
            Action::Write => self.client_write(),
            Action::Read => self.client_read()?,
            Action::ChangeMembers(f) => self.change_members(f),
            Action::Copy(f) => self.copy_step(f),
            Action::CaughtUp => self.report_caught_up(),
            Action::Terminate(f) => self.terminate(f)?,
        }
        Ok(())
    }

    // ---------------------------------------------------------------- clients

    /// A client transaction that writes: a Put with a unique value or a Delete of one
    /// key, a unique value put to two or three keys at once, or a compare-and-swap (put
    /// a unique value if the key holds what some follower shows now, else get it).
    fn client_write(&mut self) {
        let key = KEYS[self.rng.random_range(0..KEYS.len())].to_string();
        self.next_value += 1;
        let value = format!("v{}", self.next_value);
        let call = self.tick();
        let mut keys = vec![key.clone()];
        let mut conditional = false;
        let txn = match self.rng.random_range(0..20) {
            0..=3 => TxnSpec::write(key.clone(), None),
            4..=11 => TxnSpec::write(key.clone(), Some(value.clone())),
            12..=16 => {
                let others = KEYS.iter().filter(|k| **k != key);
                let extra = self.rng.random_range(1..KEYS.len());
                keys.extend(others.take(extra).map(|k| k.to_string()));
                TxnSpec {
                    success: keys
                        .iter()
                        .map(|k| TxnOp::Put(k.clone(), value.clone()))
                        .collect(),
                    ..TxnSpec::default()
                }
            }
            _ => {
                conditional = true;
                let f = self.random_replica(&key);
                let target = match self.followers[f].kv.get(&key) {
                    Some(held) => Target::Value(held.clone()),
                    None => Target::Exists(false),
                };
                TxnSpec {
                    compares: vec![Compare {
                        key: key.clone(),
                        target,
                        equal: true,
                    }],
                    success: vec![TxnOp::Put(key.clone(), value.clone())],
                    failure: vec![TxnOp::Get(key.clone())],
                }
            }
        };
        let kind = match txn.single_write() {
            Some((_, None)) => OpKind::Delete,
            _ => OpKind::Put(value),
        };
        self.log(|| format!("client: write {keys:?} {kind:?} (conditional: {conditional})"));
        let first = self.ops.len();
        for key in keys {
            self.ops.push(ClientOp {
                key,
                kind: kind.clone(),
                call,
                ret: None,
                status: Status::Pending,
                txid: None,
                conditional,
            });
        }
        self.submit((first..self.ops.len()).collect(), txn);
    }

    /// The client learns the outcome of write `op`.
    fn answer_client(&mut self, op: usize, status: Status) {
        let ret = self.tick();
        let op = &mut self.ops[op];
        if op.status != Status::Pending {
            return;
        }
        op.status = status;
        match status {
            Status::Ok => {
                op.ret = Some(ret);
                self.stats.commits += 1;
            }
            Status::Failed => {
                op.ret = Some(ret);
                self.stats.aborts += 1;
            }
            Status::Unknown => self.stats.unknown += 1,
            Status::Pending => unreachable!("an answer"),
        }
    }

    fn client_read(&mut self) -> Checked {
        if self.rng.random_ratio(1, 3) {
            let f = self.rng.random_range(0..FOLLOWERS);
            return self.snapshot_read_on(f);
        }
        let key = KEYS[self.rng.random_range(0..KEYS.len())];
        let f = self.random_replica(key);
        self.read_on(f, key);
        Ok(())
    }

    /// A read-only transaction of every key follower `f` holds, as `FollowerService::
    /// read_txn` does it: refused if any key is locked, else every key read at once.
    fn snapshot_read_on(&mut self, f: usize) -> Checked {
        let held: Vec<&str> = KEYS.into_iter().filter(|k| self.holds(f, k)).collect();
        let node = &self.followers[f];
        let Some(core) = &node.core else {
            return Ok(());
        };
        if held
            .iter()
            .any(|key| core.check_readable(key).is_err() || !self.may_read(f, key))
        {
            self.stats.unavailable_reads += 1;
            return Ok(());
        }
        let seen: Vec<(String, Option<String>)> = held
            .iter()
            .map(|key| (key.to_string(), node.kv.get(*key).cloned()))
            .collect();
        self.stats.snapshot_reads += 1;
        self.log(|| format!("client: snapshot read on follower {f}: {seen:?}"));
        let call = self.tick();
        let ret = self.tick();
        for (key, value) in &seen {
            self.ops.push(ClientOp {
                key: key.clone(),
                kind: OpKind::Get(value.clone()),
                call,
                ret: Some(ret),
                status: Status::Ok,
                txid: None,
                conditional: false,
            });
        }
        self.check_snapshot(f, &seen)
    }

    /// A direct `Get` on follower `f`; recorded in the history if answered.
    fn read_on(&mut self, f: usize, key: &str) -> bool {
        let node = &self.followers[f];
        let Some(core) = &node.core else {
            return false;
        };
        if !self.may_read(f, key) {
            self.stats.unavailable_reads += 1;
            return false;
        }
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
            conditional: false,
        });
        true
    }
}

fn brief(msg: &LeaderMessage) -> String {
    let body = match &msg.body {
        Body::Prepare { txn, .. } => match txn.single_write() {
            Some((key, Some(value))) => format!("PREPARE put {key:?} {value:?}"),
            Some((key, None)) => format!("PREPARE delete {key:?}"),
            None => format!("PREPARE {txn:?}"),
        },
        Body::Decide { outcome, failed } => {
            format!(
                "{outcome:?}{}",
                if *failed { " (failure branch)" } else { "" }
            )
        }
        Body::Fence => "FENCE".to_string(),
        Body::View { view, next, .. } => {
            format!("VIEW {}{}", view.epoch, if *next { " (next)" } else { "" })
        }
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
        "reproduce: TPC_SIM_PROFILE={} TPC_SIM_SEED={seed}{} cargo test --lib \
         simulation::tests::replay_one_seed -- --ignored --nocapture\n",
        format!("{:?}", cfg.profile).to_lowercase(),
        if cfg.steps == STEPS {
            String::new()
        } else {
            format!(" TPC_SIM_STEPS={}", cfg.steps)
        },
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
