//! The leader's protocol core: every rule of the leader, with no I/O and no clock.
//!
//! It takes the client's writes, the followers' replies (through each follower's
//! [`LinkCore`]), the journal's answers and the passing of time, and returns
//! [`Effect`]s for the runtime (`coordinator.rs`) or the simulation to carry out:
//! journal these records, open or send on these streams, answer this client. The
//! protocol it follows is the essay in [`super`]; here is how the core keeps it:
//!
//! - **Writes to one key queue**, first come first served: a transaction starts once
//!   the one before it on its key is decided and its decision queued on every link
//!   (each stream carries decisions before later PREPAREs, so a follower applies the
//!   first and unlocks the key before it sees the second). Transactions on other keys
//!   run at once, many in flight on each stream.
//! - **Votes.** A transaction's participants are the replicas of its keys
//!   (`membership.rs`; with fewer replicas than followers nothing starts before the
//!   view is in force, and each runs its part of it, `parts.rs`). An ABORT vote, a
//!   PREPARE that could not be sent or a missing answer decides ABORT at once; the last
//!   COMMIT vote decides COMMIT.
//! - **Commit at the last vote.** A COMMIT every participant voted for with protocol 2
//!   is answered at once and journaled nowhere: the votes are its durable record (DESIGN
//!   §1.4). Every other decision, an ABORT, the decision of a transaction with a
//!   classic voter, or a COMMIT of the failure branch of a transaction split in parts
//!   (a part that did not evaluate the compares that failed cannot tell its branch at
//!   recovery), is journaled first and sent and answered only once durable; a
//!   journal write that fails cleanly is retried, and one that breaks stops the leader.
//! - **Delivery.** A decision goes to every participant that may have got the PREPARE
//!   and is pending on its link until that follower ACKs it (once durable there); when
//!   every one has, the transaction is finished (`done` is journaled, unsynced, for a
//!   journaled decision).
//! - **Reads** of a key whose committed write has not reached every follower yet are
//!   answered from the leader ([`LeaderCore::committed_value`]): it is committed, and
//!   the followers' copies may still be locked.
//! - **Low-water marks.** Every message carries, for its follower, the smallest id that
//!   follower may still hear about, so it can forget what lies below and refuse a late
//!   PREPARE of it; a restarted leader sends none until its recovery is complete
//!   (`recovery.rs`).
//! - **Restart.** [`LeaderCore::recover`] reads the journal (the cluster id, the last
//!   epoch, the journaled decisions still owed), starts a new epoch, queues the owed
//!   decisions and then a fence on every link, and decides the transactions the fence
//!   reports show in doubt by the commit rule (`recovery.rs`).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use super::lease::LEASE;
use super::link_core::{LinkCore, LinkEffect, LinkEvent, LinkView, StreamId, VoteResult};
use super::membership::{Membership, Participants, Views};
use super::message::{
    Body, ClusterInfo, FollowerReply, InquiryReport, LeaderMessage, Outcome, TxId, PROTOCOL,
};
use super::parts::{self, Gathered};
use super::records::LeaderRecord;
use super::recovery::Recovery;
use crate::kvstore::Versioned;
use crate::txn::{Evaluation, TxnSpec};

/// After this many records the leader's journal is checkpointed.
pub const CHECKPOINT_RECORDS: u64 = 10_000;
/// The first pause before a failed journal write is tried again; it doubles up to a
/// second.
const JOURNAL_RETRY: Duration = Duration::from_millis(50);

/// Names a client write, for its answer.
pub type WriteId = u64;
/// Names a journal write, for its result.
pub type JobId = u64;

/// Why a write was not applied (and never will be).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A follower voted ABORT.
    Aborted(String),
    /// A follower could not be reached or did not answer in time.
    Unavailable(String),
    /// The transaction needs what a follower does not speak (a classic peer).
    Precondition(String),
}

/// What a committed transaction answers its client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The version it gave the keys it wrote (its id), if it wrote any.
    pub version: Option<TxId>,
    /// Its compares held: the success branch ran.
    pub succeeded: bool,
    /// One per GET of the branch that ran: the key's state before.
    pub results: Vec<Option<Versioned>>,
}

/// A journal write that failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalFailure {
    /// What went wrong.
    pub message: String,
    /// The journal's state on disk is unknown: the leader must stop.
    pub broken: bool,
}

/// What the runtime must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Append these records; with a `job`, make them durable and report the result
    /// ([`LeaderCore::journaled`]); without one, nobody waits (they ride along with the
    /// next synced write).
    Journal {
        job: Option<JobId>,
        records: Vec<LeaderRecord>,
    },
    /// Replace the journal with these records, after everything handed in before.
    Checkpoint { job: JobId, live: Vec<LeaderRecord> },
    /// Carry out this on follower `follower`'s link.
    Link { follower: usize, effect: LinkEffect },
    /// Answer client write `write`: committed, or refused.
    Answer {
        write: WriteId,
        result: Result<Committed, Refusal>,
    },
    /// A step of a transaction, for the live view.
    Trace {
        txid: TxId,
        kind: &'static str,
        follower: Option<usize>,
        detail: String,
    },
    /// The journal broke: stop (a restart reads back what it holds).
    Fatal(String),
}

/// Where a transaction is in the protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// PREPAREs sent, waiting for votes.
    Voting,
    /// Decided; the decision's record is being made durable before it is sent.
    Journaling { outcome: Outcome },
    /// Decided and sent; the participants that have not ACKed it yet.
    Decided {
        outcome: Outcome,
        awaiting: BTreeSet<usize>,
    },
}

/// A transaction that is not finished.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderTxn {
    /// The client write it answers (none for one recovered from an earlier run).
    write: Option<WriteId>,
    /// Its first key (for operators).
    pub key: String,
    /// The transaction (unknown for one recovered from the followers).
    txn: Option<TxnSpec>,
    /// What its compares and GETs found, as every participant agreed.
    evaluation: Option<Evaluation>,
    /// With partial replication, the part each participant runs (`parts.rs`), and what
    /// their votes found; `None`: each runs the whole transaction.
    parts: Option<(Vec<TxnSpec>, Gathered)>,
    /// Committed, its failure branch applies (its compares did not hold).
    failed: bool,
    /// Why the leader itself aborted it (the participants' evaluations disagreed).
    problem: Option<String>,
    /// Its participants (indices of followers).
    participants: Vec<usize>,
    /// Their votes, as they come.
    votes: Vec<Option<VoteResult>>,
    /// Who gets the decision (the participants that may have got the PREPARE).
    owed: BTreeSet<usize>,
    /// Followers owed the decision by an earlier run's journal that this leader has no
    /// link to: the record stays until they are configured again.
    strangers: Vec<String>,
    /// The decision is (being) journaled.
    journaled: bool,
    /// Its phase.
    pub phase: Phase,
}

impl LeaderTxn {
    /// The client write it answers, if it answers one.
    pub fn write(&self) -> Option<WriteId> {
        self.write
    }

    /// Checks a COMMIT vote's evaluation against those before it: every replica of a
    /// key holds the same value and version, so every participant finds the same; one
    /// that does not means replicas diverged, and the transaction must not commit.
    fn agree(&mut self, i: usize, vote: &VoteResult) -> Result<(), String> {
        let Some(txn) = &self.txn else {
            return Ok(());
        };
        if txn.single_write().is_some() {
            return Ok(());
        }
        let VoteResult::Voted {
            evaluation,
            classic,
            ..
        } = vote
        else {
            return Ok(());
        };
        let found = match (evaluation, classic) {
            (Some(found), _) => found.clone(),
            // On the wire, a COMMIT vote that found the compares holding and read
            // nothing is a plain COMMIT.
            (None, false) => Evaluation {
                succeeded: true,
                results: Vec::new(),
            },
            (None, true) => {
                return Err(
                    "a classic peer voted on a transaction it can't evaluate: aborted".to_string(),
                )
            }
        };
        if let Some((specs, gathered)) = &mut self.parts {
            return gathered.add(&specs[i], &found);
        }
        let gets = txn
            .branch(found.succeeded)
            .iter()
            .filter(|op| matches!(op, crate::txn::TxnOp::Get(_)))
            .count();
        if found.results.len() != gets {
            return Err(format!(
                "a participant answered {} GET results for a branch of {gets} GETs: aborted",
                found.results.len()
            ));
        }
        match (found, &self.evaluation) {
            (found, None) => {
                self.evaluation = Some(found);
                Ok(())
            }
            (found, Some(agreed)) if found == *agreed => Ok(()),
            (_, Some(_)) => Err(
                "replicas disagree: participants found different values or versions for \
                 the transaction's keys (they should never); aborted, see the followers' \
                 stores"
                    .to_string(),
            ),
        }
    }
}

/// A client transaction not started yet: waiting for those ahead of it on its keys, or
/// parked until every participant is known to speak protocol 2, or until the first
/// view is in force.
#[derive(Clone, Debug)]
struct Waiting {
    txn: TxnSpec,
    /// Parked: refused as unavailable if still parked at this time.
    parked_until: Option<Duration>,
}

/// Whether a client transaction may start ([`LeaderCore::readiness`]).
enum Readiness {
    /// Yes.
    Start,
    /// Not yet: another is ahead of it on a key, or it is parked.
    Wait,
    /// Not until some follower says whether it speaks protocol 2, or this time passes.
    Park(Duration),
    /// Never.
    Refuse(Refusal),
}

/// A journal write in flight, by what it is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Job {
    Decision(TxId),
    /// The meta record, with the views of this generation (`membership.rs`) if it
    /// holds any.
    Meta {
        views: Option<u64>,
    },
    Checkpoint,
}

/// Faults the simulation plants in the rules, to show that its checks catch them.
#[cfg(test)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Bugs {
    /// Commit once every vote that came is COMMIT, counting no answer as yes.
    pub commit_without_votes: bool,
    /// Send the decision only to the followers that voted.
    pub decide_only_voters: bool,
    /// A restarted leader sends no fence.
    pub no_fence: bool,
    /// Send low-water marks while recovery is incomplete.
    pub marks_during_recovery: bool,
    /// Send an ABORT before it is durable.
    pub abort_before_durable: bool,
}

/// The leader's protocol state. See the module documentation for its rules.
#[derive(Debug)]
pub struct LeaderCore {
    cluster_id: String,
    epoch: u64,
    has_data: bool,
    next_seq: u64,
    followers: Vec<String>,
    /// Which follower is which member, and the view (`membership.rs`).
    membership: Membership,
    /// Per follower, the newest view epoch it ACKed (it took that view).
    views_taken: Vec<u64>,
    /// Per follower, how long it had not answered the runtime's lease probes when last
    /// reported (`None`: it answered).
    silent: Vec<Option<Duration>>,
    links: Vec<LinkCore>,
    txns: BTreeMap<TxId, LeaderTxn>,
    /// Per key, the client transactions that touch it, in arrival order: the first one
    /// holds the key (it runs, or is parked).
    busy: HashMap<String, VecDeque<WriteId>>,
    /// Client transactions not started yet.
    waiting: HashMap<WriteId, Waiting>,
    /// Those of them parked (see [`Waiting`]).
    parked: BTreeSet<WriteId>,
    /// The time of the latest input.
    now: Duration,
    vote_timeout: Duration,
    /// Per key, the last committed write some follower may not have applied yet.
    committed: HashMap<String, (TxId, Option<String>)>,
    recovery: Recovery,
    next_job: JobId,
    jobs: HashMap<JobId, Job>,
    /// Journal writes that failed cleanly, to try again at `retry_at`.
    retry: BTreeSet<TxId>,
    retry_meta: bool,
    retry_at: Option<Duration>,
    retry_backoff: Duration,
    records_since_checkpoint: u64,
    checkpointing: bool,
    stopped: bool,
    /// Decisions made and ACKs received, counted.
    progress: u64,
    effects: Vec<Effect>,
    #[cfg(test)]
    pub(crate) bugs: Bugs,
}

/// The start of a leader: the core, and the records to make durable before it runs.
pub struct Start {
    /// The core, in its new epoch, with the owed decisions and the fences queued.
    pub core: LeaderCore,
    /// Records to journal, durably, before anything is sent.
    pub persist: Vec<LeaderRecord>,
}

impl LeaderCore {
    /// Rebuilds the leader from its journal for `followers` (their addresses as given),
    /// each key on `replication` of them; `new_cluster_id` names the cluster on a first
    /// start. Refuses a configuration the journaled view rules out (`membership.rs`).
    pub fn recover(
        records: Vec<LeaderRecord>,
        followers: Vec<String>,
        replication: usize,
        vote_timeout: Duration,
        new_cluster_id: impl FnOnce() -> String,
    ) -> Result<Start, String> {
        let mut start = Self::rebuild(
            records,
            followers,
            replication,
            vote_timeout,
            new_cluster_id,
        )?;
        start.core.resume();
        Ok(start)
    }

    /// [`LeaderCore::recover`], with faults planted in its rules.
    #[cfg(test)]
    pub(crate) fn recover_with_bugs(
        records: Vec<LeaderRecord>,
        followers: Vec<String>,
        replication: usize,
        vote_timeout: Duration,
        new_cluster_id: impl FnOnce() -> String,
        bugs: Bugs,
    ) -> Result<Start, String> {
        let mut start = Self::rebuild(
            records,
            followers,
            replication,
            vote_timeout,
            new_cluster_id,
        )?;
        start.core.bugs = bugs;
        start.core.resume();
        Ok(start)
    }

    /// The core as the journal leaves it, in its new epoch, nothing queued yet.
    fn rebuild(
        records: Vec<LeaderRecord>,
        followers: Vec<String>,
        replication: usize,
        vote_timeout: Duration,
        new_cluster_id: impl FnOnce() -> String,
    ) -> Result<Start, String> {
        let mut cluster_id = None;
        let mut epoch = 0;
        let mut has_data = false;
        let mut views = None;
        let mut decided: BTreeMap<TxId, (Outcome, bool, Vec<String>)> = BTreeMap::new();
        let restarted = !records.is_empty();
        let count = records.len() as u64;
        for record in records {
            match record {
                LeaderRecord::Meta {
                    cluster_id: id,
                    epoch: e,
                    has_data: d,
                    views: v,
                } => {
                    cluster_id = Some(id);
                    epoch = epoch.max(e);
                    has_data |= d;
                    views = v.or(views);
                }
                LeaderRecord::Decide {
                    txid,
                    outcome,
                    failed,
                    followers,
                } => {
                    decided.insert(txid, (outcome, failed, followers));
                }
                LeaderRecord::Done { txid } => {
                    decided.remove(&txid);
                }
                LeaderRecord::Begin { .. } => {}
            }
        }
        let membership = Membership::new(followers.clone(), replication, views)?;
        let cluster_id = cluster_id.unwrap_or_else(new_cluster_id);
        let links: Vec<LinkCore> = followers
            .iter()
            .map(|_| LinkCore::new(cluster_id.clone(), vote_timeout))
            .collect();
        let mut core = LeaderCore {
            recovery: Recovery::new(followers.len(), restarted, !membership.is_full()),
            cluster_id,
            epoch: epoch + 1,
            has_data,
            next_seq: 1,
            followers,
            membership,
            views_taken: vec![0; links.len()],
            silent: vec![None; links.len()],
            links,
            txns: BTreeMap::new(),
            busy: HashMap::new(),
            waiting: HashMap::new(),
            parked: BTreeSet::new(),
            now: Duration::ZERO,
            vote_timeout,
            committed: HashMap::new(),
            next_job: 1,
            jobs: HashMap::new(),
            retry: BTreeSet::new(),
            retry_meta: false,
            retry_at: None,
            retry_backoff: JOURNAL_RETRY,
            records_since_checkpoint: count + 1,
            checkpointing: false,
            stopped: false,
            progress: 0,
            effects: Vec::new(),
            #[cfg(test)]
            bugs: Bugs::default(),
        };
        let mut persist = vec![core.meta_record()];
        for (txid, (outcome, failed, names)) in decided {
            let mut owed = BTreeSet::new();
            let mut strangers = Vec::new();
            for name in names {
                match core.followers.iter().position(|f| *f == name) {
                    Some(f) => {
                        owed.insert(f);
                    }
                    None => {
                        tracing::warn!(%txid, follower = %name, "a decision is owed to a follower that is no longer configured; it is kept until the follower is added back");
                        strangers.push(name);
                    }
                }
            }
            if owed.is_empty() && strangers.is_empty() {
                // Its `done` was lost in a crash: finished.
                persist.push(LeaderRecord::Done { txid });
                continue;
            }
            core.txns.insert(
                txid,
                LeaderTxn {
                    write: None,
                    key: String::new(),
                    txn: None,
                    evaluation: None,
                    parts: None,
                    failed,
                    problem: None,
                    participants: owed.iter().copied().collect(),
                    votes: vec![None; owed.len()],
                    owed,
                    strangers,
                    journaled: true,
                    phase: Phase::Journaling { outcome },
                },
            );
        }
        Ok(Start { core, persist })
    }

    /// Queues the decisions the journal owes, then the fence on every link (each stream
    /// carries them in that order). After a restart the fence's reports drive recovery;
    /// at a first start it only tells which followers speak protocol 2.
    fn resume(&mut self) {
        let owed: Vec<(TxId, Outcome)> = self
            .txns
            .iter()
            .filter_map(|(txid, txn)| match txn.phase {
                Phase::Journaling { outcome } => Some((*txid, outcome)),
                _ => None,
            })
            .collect();
        for (txid, outcome) in owed {
            self.deliver(txid, outcome);
        }
        if !self.fence_disabled() {
            for f in 0..self.links.len() {
                let fence = self.message(TxId::fence(self.epoch), Body::Fence, f);
                self.links[f].queue(fence.clone());
                self.links[f].fence_every_stream(fence);
            }
        }
    }

    #[cfg(test)]
    fn fence_disabled(&self) -> bool {
        self.bugs.no_fence
    }
    #[cfg(not(test))]
    fn fence_disabled(&self) -> bool {
        false
    }

    // ------------------------------------------------------------------ inputs

    /// A client asks for `txn` (one that writes: a read-only one needs no 2PC): it runs
    /// once every transaction that arrived before it on any of its keys is decided.
    pub fn submit(&mut self, write: WriteId, txn: TxnSpec, now: Duration) {
        self.now = self.now.max(now);
        if self.stopped {
            return;
        }
        for key in txn.keys() {
            self.busy
                .entry(key.to_string())
                .or_default()
                .push_back(write);
        }
        self.waiting.insert(
            write,
            Waiting {
                txn,
                parked_until: None,
            },
        );
        self.start_ready(vec![write]);
    }

    /// Replies from follower `f` on `stream`, in order.
    pub fn replies(
        &mut self,
        f: usize,
        stream: StreamId,
        replies: Vec<Result<FollowerReply, String>>,
        now: Duration,
    ) {
        self.now = self.now.max(now);
        let events = self.links[f].replies(stream, replies, now);
        self.link_events(f, events);
        self.unpark();
    }

    /// Follower `f`'s `stream` ended.
    pub fn stream_ended(&mut self, f: usize, stream: StreamId, why: String, now: Duration) {
        self.now = self.now.max(now);
        let events = self.links[f].ended(stream, why, now);
        self.link_events(f, events);
    }

    /// Follower `f`'s `stream` could not connect: nothing sent on it arrived.
    pub fn open_failed(&mut self, f: usize, stream: StreamId, why: String, now: Duration) {
        self.now = self.now.max(now);
        let events = self.links[f].open_failed(stream, why, now);
        self.link_events(f, events);
    }

    /// A journal write ended.
    pub fn journaled(&mut self, job: JobId, result: Result<(), JournalFailure>, now: Duration) {
        self.now = self.now.max(now);
        let Some(kind) = self.jobs.remove(&job) else {
            return;
        };
        if let Err(failure) = &result {
            if failure.broken {
                self.stopped = true;
                self.effects.push(Effect::Fatal(failure.message.clone()));
                return;
            }
            tracing::warn!(error = %failure.message, "leader journal write failed; will retry");
        } else {
            self.retry_backoff = JOURNAL_RETRY;
        }
        match (kind, result) {
            (Job::Decision(txid), Ok(())) => self.decision_durable(txid),
            (Job::Decision(txid), Err(_)) => {
                self.retry.insert(txid);
                self.schedule_retry(now);
            }
            (Job::Meta { views }, Ok(())) => {
                if let Some(generation) = views {
                    self.views_durable(generation);
                }
            }
            (Job::Meta { .. }, Err(_)) => {
                self.retry_meta = true;
                self.schedule_retry(now);
            }
            (Job::Checkpoint, result) => {
                self.checkpointing = false;
                if result.is_ok() {
                    self.records_since_checkpoint = self.live_records().len() as u64;
                }
            }
        }
    }

    /// Time passed: streams whose oldest message went unanswered too long are given
    /// up, and journal writes that failed are tried again.
    pub fn tick(&mut self, now: Duration) {
        self.now = self.now.max(now);
        for f in 0..self.links.len() {
            let events = self.links[f].tick(now);
            self.link_events(f, events);
        }
        self.unpark();
        if self.retry_at.is_some_and(|at| at <= now) && !self.stopped {
            self.retry_at = None;
            for txid in std::mem::take(&mut self.retry) {
                self.journal_decision(txid);
            }
            if std::mem::take(&mut self.retry_meta) {
                self.journal_meta();
            }
        }
    }

    /// The effects produced since the last call, with every link's queued messages
    /// flushed (one send per link: the batch).
    pub fn take_effects(&mut self, now: Duration) -> Vec<Effect> {
        for (f, link) in self.links.iter_mut().enumerate() {
            link.flush(now);
            self.effects
                .extend(link.take_effects().into_iter().map(|effect| Effect::Link {
                    follower: f,
                    effect,
                }));
        }
        std::mem::take(&mut self.effects)
    }

    /// When [`LeaderCore::tick`] next has something to do.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.links
            .iter()
            .filter_map(LinkCore::next_deadline)
            .chain(self.retry_at)
            .chain(self.waiting.values().filter_map(|w| w.parked_until))
            .min()
    }

    // ------------------------------------------------------------------ views

    /// Which follower is which member, and the view.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The value (and version) a read of `key` must return if the leader holds a
    /// committed write to it that some follower may not have applied yet (a value of
    /// `None`: deleted).
    pub fn committed_value(&self, key: &str) -> Option<(Option<&str>, TxId)> {
        self.committed
            .get(key)
            .map(|(txid, value)| (value.as_deref(), *txid))
    }

    /// The unfinished transactions.
    pub fn txns(&self) -> &BTreeMap<TxId, LeaderTxn> {
        &self.txns
    }

    /// The follower names, as configured.
    pub fn followers(&self) -> &[String] {
        &self.followers
    }

    /// This leader's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The cluster id.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// Counts decisions made and ACKs received (reads waiting for a decision watch it).
    pub fn progress(&self) -> u64 {
        self.progress
    }

    /// Follower `f`'s link as operators see it.
    pub fn link_view(&self, f: usize) -> LinkView {
        self.links[f].view()
    }

    /// The recovery of this run.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// The participants still owed `txid`'s decision (names).
    pub fn awaiting(&self, txn: &LeaderTxn) -> Vec<String> {
        match &txn.phase {
            Phase::Decided { awaiting, .. } => awaiting
                .iter()
                .map(|&f| self.followers[f].clone())
                .collect(),
            Phase::Voting | Phase::Journaling { .. } => txn
                .participants
                .iter()
                .map(|&f| self.followers[f].clone())
                .collect(),
        }
    }

    /// The names of `owed` and of `txn`'s strangers: who a record says needs the decision.
    fn owed_names(&self, txn: &LeaderTxn, owed: &BTreeSet<usize>) -> Vec<String> {
        owed.iter()
            .map(|&f| self.followers[f].clone())
            .chain(txn.strangers.iter().cloned())
            .collect()
    }

    /// What a checkpoint keeps: the metadata and every decision handed to the journal
    /// and not finished.
    pub fn live_records(&self) -> Vec<LeaderRecord> {
        let mut records = vec![self.meta_record()];
        for (txid, txn) in &self.txns {
            if !txn.journaled {
                continue;
            }
            let (outcome, followers) = match &txn.phase {
                Phase::Voting => continue,
                Phase::Journaling { outcome } => (*outcome, &txn.owed),
                Phase::Decided { outcome, awaiting } => (*outcome, awaiting),
            };
            records.push(LeaderRecord::Decide {
                txid: *txid,
                outcome,
                failed: txn.failed,
                followers: self.owed_names(txn, followers),
            });
        }
        records
    }

    // ------------------------------------------------------------------ transactions

    /// Starts every write in `ready` (and those its refusals free in turn) that may
    /// start now: one at the front of the queue of each of its keys, in a cluster that
    /// can run it.
    fn start_ready(&mut self, mut ready: Vec<WriteId>) {
        while let Some(write) = ready.pop() {
            match self.readiness(write) {
                Readiness::Wait => {}
                Readiness::Park(until) => {
                    if let Some(waiting) = self.waiting.get_mut(&write) {
                        waiting.parked_until = Some(until);
                        self.parked.insert(write);
                    }
                }
                Readiness::Refuse(refusal) => {
                    self.parked.remove(&write);
                    if let Some(waiting) = self.waiting.remove(&write) {
                        self.effects.push(Effect::Answer {
                            write,
                            result: Err(refusal),
                        });
                        ready.extend(self.release(write, &waiting.txn));
                    }
                }
                Readiness::Start => {
                    self.parked.remove(&write);
                    if let Some(waiting) = self.waiting.remove(&write) {
                        self.start(write, waiting.txn);
                    }
                }
            }
        }
    }

    /// Whether client write `write` may start.
    fn readiness(&self, write: WriteId) -> Readiness {
        let Some(waiting) = self.waiting.get(&write) else {
            return Readiness::Wait;
        };
        let first = |key: &str| self.busy.get(key).and_then(VecDeque::front) == Some(&write);
        if !waiting.txn.keys().into_iter().all(first) {
            return Readiness::Wait;
        }
        let participants = match self.membership.participants(waiting.txn.keys()) {
            Participants::Followers(participants) => participants,
            Participants::NoView { waiting_for } => {
                return self.park_or_refuse(waiting, || {
                    format!(
                        "transaction not applied: the cluster has no view yet (which followers \
                         hold which keys, DESIGN §7), and follower {} has not told its member \
                         id since the leader started",
                        self.followers[waiting_for]
                    )
                })
            }
        };
        if waiting.txn.single_write().is_some() {
            // What the classic PREPARE carries: every follower can run it.
            return Readiness::Start;
        }
        let mut unknown = None;
        for f in participants {
            match self.links[f].speaks_protocol_2() {
                Some(true) => {}
                Some(false) => {
                    return Readiness::Refuse(Refusal::Precondition(format!(
                        "follower {} is a classic peer (it does not speak tpc protocol \
                         {PROTOCOL}): in this cluster a transaction can only be a single Put \
                         or Delete, with no compare",
                        self.followers[f]
                    )))
                }
                None => unknown = unknown.or(Some(f)),
            }
        }
        match unknown {
            None => Readiness::Start,
            Some(f) => self.park_or_refuse(waiting, || {
                format!(
                    "transaction not applied: follower {} has not answered since the leader \
                     started, so whether it can run a transaction is unknown",
                    self.followers[f]
                )
            }),
        }
    }

    /// A write that waits for followers to answer: parked for at most a vote timeout,
    /// then refused as UNAVAILABLE, `why`.
    fn park_or_refuse(&self, waiting: &Waiting, why: impl FnOnce() -> String) -> Readiness {
        match waiting.parked_until {
            Some(until) if until <= self.now => Readiness::Refuse(Refusal::Unavailable(why())),
            Some(_) => Readiness::Wait,
            None => Readiness::Park(self.now + self.vote_timeout),
        }
    }

    /// Parked writes whose followers have answered, or that waited too long, go on.
    fn unpark(&mut self) {
        if !self.parked.is_empty() {
            let parked = self.parked.iter().copied().collect();
            self.start_ready(parked);
        }
    }

    /// `write`, which touched the keys of `txn`, no longer holds them: returns the
    /// writes now first on one of them. A write only ever leaves its keys' queues from
    /// the front (it runs, or is refused, once it is first on every one of them); were
    /// it not first, it would stay queued, holding later writes back, rather than let
    /// two transactions on one key run at once.
    fn release(&mut self, write: WriteId, txn: &TxnSpec) -> Vec<WriteId> {
        let mut next = Vec::new();
        for key in txn.keys() {
            let Some(queue) = self.busy.get_mut(key) else {
                continue;
            };
            debug_assert_eq!(queue.front(), Some(&write), "{key:?}");
            if queue.front() == Some(&write) {
                queue.pop_front();
            }
            match queue.front() {
                Some(&first) => next.push(first),
                None => {
                    self.busy.remove(key);
                }
            }
        }
        next
    }

    fn start(&mut self, write: WriteId, txn: TxnSpec) {
        let txid = TxId {
            epoch: self.epoch,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        let participants = match self.membership.participants(txn.keys()) {
            Participants::Followers(participants) => participants,
            // `readiness` starts nothing without a view.
            Participants::NoView { .. } => (0..self.followers.len()).collect(),
        };
        let names: Vec<String> = participants
            .iter()
            .map(|&f| self.followers[f].clone())
            .collect();
        let key = txn
            .keys()
            .first()
            .map_or_else(String::new, |key| key.to_string());
        self.trace(txid, "begin", None, key.clone());
        // Each participant runs the part of it on its keys, unless it holds them all.
        let split = !self.membership.is_full() && txn.single_write().is_none();
        let specs: Vec<TxnSpec> = participants
            .iter()
            .map(|&f| match split {
                true => parts::part_of(
                    &txn,
                    |key| self.membership.evaluates(f, key),
                    |key| self.membership.writes(f, key),
                ),
                false => txn.clone(),
            })
            .collect();
        // In the table first: each PREPARE's low-water mark counts it.
        self.txns.insert(
            txid,
            LeaderTxn {
                write: Some(write),
                key,
                txn: Some(txn.clone()),
                evaluation: None,
                parts: split.then(|| (specs.clone(), Gathered::default())),
                failed: false,
                problem: None,
                votes: vec![None; participants.len()],
                owed: participants.iter().copied().collect(),
                strangers: Vec::new(),
                participants: participants.clone(),
                journaled: false,
                phase: Phase::Voting,
            },
        );
        for (f, spec) in participants.into_iter().zip(specs) {
            let body = Body::Prepare {
                txn: spec,
                participants: names.clone(),
                recipient: self.membership.recipient(f),
            };
            let msg = self.message(txid, body, f);
            self.links[f].queue(msg);
            self.trace(txid, "prepare", Some(f), String::new());
        }
    }

    fn link_events(&mut self, f: usize, events: Vec<LinkEvent>) {
        for event in events {
            match event {
                LinkEvent::Vote { txid, vote } => self.vote(f, txid, vote),
                LinkEvent::Acked(txid) => self.acked(f, txid),
                LinkEvent::Reported(report) => self.reported(f, report),
                LinkEvent::Refencing => self.membership.unreachable(f),
            }
        }
    }

    fn vote(&mut self, f: usize, txid: TxId, vote: VoteResult) {
        let detail = match &vote {
            VoteResult::Voted { outcome, .. } => outcome.as_str().to_string(),
            VoteResult::NotSent(why) | VoteResult::NoAnswer(why) => format!("none: {why}"),
        };
        let commit_without_votes = self.commit_without_votes();
        let Some(txn) = self.txns.get_mut(&txid) else {
            return;
        };
        if txn.phase != Phase::Voting {
            // Decided already (an earlier ABORT): a follower the PREPARE never reached
            // needs no decision, but it is queued already, and harmless.
            return;
        }
        let Some(i) = txn.participants.iter().position(|&p| p == f) else {
            return;
        };
        if txn.votes[i].is_some() {
            return;
        }
        if !vote.was_sent() {
            txn.owed.remove(&f);
        }
        let mut yes = matches!(
            vote,
            VoteResult::Voted {
                outcome: Outcome::Commit,
                ..
            }
        ) || (commit_without_votes && matches!(vote, VoteResult::NoAnswer(_)));
        if yes {
            if let Err(problem) = txn.agree(i, &vote) {
                tracing::error!(%txid, follower = %self.followers[f], "{problem}");
                txn.problem = Some(problem);
                yes = false;
            }
        }
        txn.votes[i] = Some(vote);
        let all_in = txn.votes.iter().all(Option::is_some);
        self.trace(txid, "vote", Some(f), detail);
        if !yes {
            self.decide(txid, Outcome::Abort);
        } else if all_in {
            self.decide(txid, Outcome::Commit);
        }
    }

    #[cfg(test)]
    fn commit_without_votes(&self) -> bool {
        self.bugs.commit_without_votes
    }
    #[cfg(not(test))]
    fn commit_without_votes(&self) -> bool {
        false
    }

    /// Decides `txid`: a COMMIT every participant voted with protocol 2 takes effect
    /// now; any other decision once it is journaled.
    fn decide(&mut self, txid: TxId, outcome: Outcome) {
        let txn = self
            .txns
            .get_mut(&txid)
            .expect("deciding a known transaction");
        #[cfg(test)]
        if self.bugs.decide_only_voters {
            let voted: BTreeSet<usize> = txn
                .participants
                .iter()
                .zip(&txn.votes)
                .filter(|(_, v)| matches!(v, Some(VoteResult::Voted { .. })))
                .map(|(&p, _)| p)
                .collect();
            txn.owed.retain(|f| voted.contains(f));
        }
        let classic = txn
            .votes
            .iter()
            .any(|v| matches!(v, Some(VoteResult::Voted { classic: true, .. })));
        if let (Some((_, gathered)), Some(spec)) = (&txn.parts, &txn.txn) {
            txn.evaluation = Some(gathered.evaluation(spec));
        }
        txn.failed =
            outcome == Outcome::Commit && txn.evaluation.as_ref().is_some_and(|e| !e.succeeded);
        txn.phase = Phase::Journaling { outcome };
        let split = txn.parts.is_some();
        let failed = txn.failed;
        self.trace(txid, "decide", None, outcome.as_str().to_string());
        // A COMMIT of the failure branch split in parts is journaled: a part without
        // the compares that failed does not know its branch, and once the parts that
        // do have finished (forgotten below their marks), a recovery could not learn it
        // from the fence reports (`recovery.rs`) and would apply the success branch.
        let branch_known = !(failed && split);
        let durable_now = outcome == Outcome::Commit && !classic && branch_known;
        #[cfg(test)]
        let durable_now = durable_now || self.bugs.abort_before_durable;
        if durable_now {
            self.decision_durable(txid);
        } else {
            self.txns.get_mut(&txid).expect("known").journaled = true;
            self.journal_decision(txid);
        }
    }

    /// Hands `txid`'s decision record to the journal.
    fn journal_decision(&mut self, txid: TxId) {
        let Some(txn) = self.txns.get(&txid) else {
            return;
        };
        let Phase::Journaling { outcome } = txn.phase else {
            return;
        };
        let record = LeaderRecord::Decide {
            txid,
            outcome,
            failed: txn.failed,
            followers: self.owed_names(txn, &txn.owed),
        };
        let mut records = vec![record];
        if outcome == Outcome::Commit && !self.has_data {
            self.has_data = true;
            records.push(self.meta_record());
        }
        self.journal(Some(Job::Decision(txid)), records);
    }

    /// The decision of `txid` may go out: it is durable, or needs no record.
    fn decision_durable(&mut self, txid: TxId) {
        let Some(txn) = self.txns.get_mut(&txid) else {
            return;
        };
        let Phase::Journaling { outcome } = txn.phase else {
            return;
        };
        let write = txn.write.take();
        let spec = txn.txn.clone();
        if let (Some(write), Some(spec)) = (write, &spec) {
            let result = match outcome {
                Outcome::Commit => {
                    let writes = spec.writes(!txn.failed);
                    for (key, value) in &writes {
                        self.committed
                            .insert(key.to_string(), (txid, value.map(str::to_string)));
                    }
                    Ok(Committed {
                        version: (!writes.is_empty()).then_some(txid),
                        succeeded: !txn.failed,
                        results: txn.evaluation.take().map(|e| e.results).unwrap_or_default(),
                    })
                }
                Outcome::Abort => Err(refusal(&self.followers, txn)),
            };
            self.effects.push(Effect::Answer { write, result });
        }
        if outcome == Outcome::Commit && !self.has_data {
            self.has_data = true;
            self.journal_meta();
        }
        self.deliver(txid, outcome);
        if let (Some(write), Some(spec)) = (write, &spec) {
            let next = self.release(write, spec);
            self.start_ready(next);
        }
    }

    /// Hands follower `f` the view in force, if there is one: it answers direct reads by
    /// it (DESIGN §7).
    fn send_view(&mut self, f: usize) {
        let Some(view) = self.membership.current().cloned() else {
            return;
        };
        let epoch = view.epoch;
        let follows = epoch;
        let body = Body::View {
            view,
            next: false,
            follows: 0,
        };
        let msg = self.message(TxId::view(epoch), body, f);
        self.links[f].queue(msg);
        if let Some(view) = self.membership.next().cloned() {
            let epoch = view.epoch;
            let body = Body::View {
                view,
                next: true,
                follows,
            };
            let msg = self.message(TxId::view(epoch), body, f);
            self.links[f].queue(msg);
        }
    }

    // ------------------------------------------------------------------ view changes

    /// An operator asks that follower `address` join the members (`add`) or leave
    /// them (DESIGN §8). Returns the epoch of the next view, which is being journaled,
    /// or why the change cannot start (`membership.rs`).
    pub fn change_members(&mut self, address: &str, add: bool) -> Result<u64, String> {
        let views = self.membership.change(address, add)?;
        self.journal_views(&views);
        Ok(views.next.map_or(views.current.epoch, |next| next.epoch))
    }

    /// How long each follower has been unreachable (`None`: it answers), as the
    /// runtime's lease probes found (`view_change.rs`): a change may be due
    /// ([`Membership::due_change`]).
    pub fn silences(&mut self, silent: &[Option<Duration>], member_timeout: Option<Duration>) {
        if silent.len() != self.followers.len() {
            return;
        }
        self.silent = silent.to_vec();
        let Some(member_timeout) = member_timeout else {
            return;
        };
        if let Some((views, why)) = self.membership.due_change(silent, member_timeout) {
            tracing::warn!("{why}");
            self.journal_views(&views);
        }
    }

    /// Every member of the next view of epoch `epoch` reports that it holds its keys
    /// (the runtime asks them): the next view is journaled as the one in force.
    ///
    /// A member that leaves must first have taken the next view (it then answers no
    /// direct read of the keys it loses) or have been silent longer than its lease
    /// (it answers none): until then the view in force does not change, since the
    /// leaving member's keys would take writes without it while it may still answer
    /// reads of them.
    pub fn caught_up(&mut self, epoch: u64) {
        let waiting = self
            .membership
            .leaving()
            .into_iter()
            .find(|&f| self.views_taken[f] < epoch && self.silent[f].is_none_or(|s| s < LEASE));
        if let Some(f) = waiting {
            tracing::debug!(follower = %self.followers[f], epoch, "waiting for a leaving member to take the next view, or for its lease to run out");
            return;
        }
        if let Some(views) = self.membership.caught_up(epoch) {
            self.journal_views(&views);
        }
    }

    /// Journals new views (`membership.rs`); they are in force once durable.
    fn journal_views(&mut self, views: &Views) {
        let (epoch, change) = match &views.next {
            Some(next) => (next.epoch, "the members change: next view"),
            None => (views.current.epoch, "view in force"),
        };
        let members: Vec<&str> = views
            .next
            .as_ref()
            .unwrap_or(&views.current)
            .members
            .iter()
            .map(|(_, address)| address.as_str())
            .collect();
        tracing::info!(
            epoch,
            replication = views.current.replication,
            ?members,
            "{change}"
        );
        self.journal_meta();
    }

    /// Views of generation `generation` are durable: they are in force, every follower
    /// that speaks protocol 2 is handed them, and writes parked for a view go on. A
    /// change due meanwhile (a member replaced) starts.
    fn views_durable(&mut self, generation: u64) {
        self.membership.durable(generation);
        for f in 0..self.links.len() {
            if self.links[f].speaks_protocol_2() == Some(true) {
                self.send_view(f);
            }
        }
        self.unpark();
        if let Some(views) = self.membership.revisit() {
            self.journal_views(&views);
        }
    }

    /// Queues `txid`'s decision on the link of every follower it is owed to.
    fn deliver(&mut self, txid: TxId, outcome: Outcome) {
        self.progress += 1;
        let txn = self
            .txns
            .get_mut(&txid)
            .expect("delivering a known transaction");
        let owed = txn.owed.clone();
        let failed = txn.failed;
        txn.phase = Phase::Decided {
            outcome,
            awaiting: owed.clone(),
        };
        if owed.is_empty() && txn.strangers.is_empty() {
            self.finish(txid);
            return;
        }
        for f in owed {
            let msg = self.message(txid, Body::Decide { outcome, failed }, f);
            self.links[f].queue(msg);
            self.trace(txid, "decision", Some(f), outcome.as_str().to_string());
        }
    }

    fn acked(&mut self, f: usize, txid: TxId) {
        if txid.epoch == 0 {
            // A view's ACK (`TxId::view`): the follower took it.
            self.views_taken[f] = self.views_taken[f].max(txid.seq);
            return;
        }
        self.progress += 1;
        self.trace(txid, "ack", Some(f), String::new());
        let Some(txn) = self.txns.get_mut(&txid) else {
            return;
        };
        let Phase::Decided { awaiting, .. } = &mut txn.phase else {
            return;
        };
        if awaiting.remove(&f) && awaiting.is_empty() && txn.strangers.is_empty() {
            self.finish(txid);
        }
    }

    /// Every follower owed the decision of `txid` has it: forgotten.
    fn finish(&mut self, txid: TxId) {
        let Some(txn) = self.txns.remove(&txid) else {
            return;
        };
        for (key, _) in txn.txn.iter().flat_map(|spec| spec.writes(!txn.failed)) {
            if self.committed.get(key).is_some_and(|(id, _)| *id == txid) {
                self.committed.remove(key);
            }
        }
        if txn.journaled {
            // Losing it in a crash only means the decision is delivered again.
            self.journal(None, vec![LeaderRecord::Done { txid }]);
        }
        self.trace(txid, "done", None, String::new());
    }

    // ------------------------------------------------------------------ recovery

    fn reported(&mut self, f: usize, report: Option<InquiryReport>) {
        let id = report.as_ref().and_then(|r| r.member_id.as_deref());
        if let Some(views) = self.membership.told(f, id) {
            self.journal_views(&views);
        }
        if report.is_some() {
            // It speaks protocol 2: it takes the view (a classic peer would take the
            // message for a decision).
            self.send_view(f);
        }
        let txns = &self.txns;
        let owed = self
            .recovery
            .report(f, report.as_ref(), &self.followers, |t| {
                txns.contains_key(&t)
            });
        for txid in owed {
            self.owe(txid, f);
        }
        for (txid, outcome, in_doubt) in self.recovery.decide() {
            tracing::info!(%txid, ?outcome, key = ?in_doubt.key, "recovered an in-doubt transaction");
            // Owed to every participant that may hold it prepared: those that said so,
            // and those that have not answered yet.
            let owed: BTreeSet<usize> = in_doubt
                .participants
                .iter()
                .copied()
                .filter(|&p| {
                    matches!(
                        self.recovery.status(p, txid),
                        super::recovery::Status::Prepared | super::recovery::Status::Unreported
                    )
                })
                .collect();
            let failed = in_doubt.failed;
            self.txns.insert(
                txid,
                LeaderTxn {
                    write: None,
                    key: in_doubt.key,
                    txn: None,
                    evaluation: None,
                    parts: None,
                    failed: in_doubt.failed,
                    problem: None,
                    votes: vec![None; in_doubt.participants.len()],
                    participants: in_doubt.participants,
                    owed,
                    strangers: Vec::new(),
                    journaled: false,
                    phase: Phase::Journaling { outcome },
                },
            );
            self.trace(
                txid,
                "decide",
                None,
                format!("{} (recovered)", outcome.as_str()),
            );
            // A COMMIT of the failure branch is journaled, as `decide` does: once the
            // participants that found its compares failing have finished it, the next
            // recovery could not tell its branch from the others' reports.
            if outcome == Outcome::Commit && !failed {
                self.decision_durable(txid);
            } else {
                self.txns.get_mut(&txid).expect("inserted").journaled = true;
                self.journal_decision(txid);
            }
        }
    }

    /// Follower `f` reported `txid` prepared, whose decision this leader holds: make
    /// sure it is delivered there.
    fn owe(&mut self, txid: TxId, f: usize) {
        let Some(txn) = self.txns.get_mut(&txid) else {
            return;
        };
        if !txn.owed.insert(f) {
            return;
        }
        let Phase::Decided { outcome, awaiting } = &mut txn.phase else {
            // Still being journaled: it goes out to every owed follower once durable.
            return;
        };
        let outcome = *outcome;
        awaiting.insert(f);
        let body = Body::Decide {
            outcome,
            failed: txn.failed,
        };
        let msg = self.message(txid, body, f);
        self.links[f].queue(msg);
    }

    // ------------------------------------------------------------------ journal

    fn journal(&mut self, job: Option<Job>, records: Vec<LeaderRecord>) {
        self.records_since_checkpoint += records.len() as u64;
        let job = job.map(|kind| {
            let id = self.next_job;
            self.next_job += 1;
            self.jobs.insert(id, kind);
            id
        });
        self.effects.push(Effect::Journal { job, records });
        if self.records_since_checkpoint >= CHECKPOINT_RECORDS && !self.checkpointing {
            self.checkpointing = true;
            let id = self.next_job;
            self.next_job += 1;
            self.jobs.insert(id, Job::Checkpoint);
            self.effects.push(Effect::Checkpoint {
                job: id,
                live: self.live_records(),
            });
        }
    }

    fn journal_meta(&mut self) {
        let meta = self.meta_record();
        let views = self.membership.record().map(|(generation, _)| generation);
        self.journal(Some(Job::Meta { views }), vec![meta]);
    }

    fn schedule_retry(&mut self, now: Duration) {
        if self.retry_at.is_none() {
            self.retry_at = Some(now + self.retry_backoff);
            self.retry_backoff = (self.retry_backoff * 2).min(Duration::from_secs(1));
        }
    }

    fn meta_record(&self) -> LeaderRecord {
        LeaderRecord::Meta {
            cluster_id: self.cluster_id.clone(),
            epoch: self.epoch,
            has_data: self.has_data,
            views: self.membership.record().map(|(_, views)| views),
        }
    }

    // ------------------------------------------------------------------ messages

    /// The message carrying `body` of `txid` to follower `f`.
    fn message(&self, txid: TxId, body: Body, f: usize) -> LeaderMessage {
        LeaderMessage {
            txid: txid.into(),
            body,
            epoch: self.epoch,
            low_water: self.low_water(f),
            cluster: Some(ClusterInfo {
                id: self.cluster_id.clone(),
                // With a view in force an empty follower is welcome: it is no member, or
                // it replaces one, until it has caught up (DESIGN §8).
                has_data: self.has_data && self.membership.current().is_none(),
            }),
            protocol: PROTOCOL,
        }
    }

    /// The low-water mark for follower `f`: the smallest id it may still hear about;
    /// none while recovery is incomplete (`recovery.rs`).
    pub fn low_water(&self, f: usize) -> Option<TxId> {
        #[cfg(test)]
        let marks = self.recovery.is_complete() || self.bugs.marks_during_recovery;
        #[cfg(not(test))]
        let marks = self.recovery.is_complete();
        if !marks {
            return None;
        }
        let owes = |txn: &LeaderTxn| match &txn.phase {
            Phase::Voting | Phase::Journaling { .. } => txn.participants.contains(&f),
            Phase::Decided { awaiting, .. } => awaiting.contains(&f),
        };
        Some(
            self.txns
                .iter()
                .find(|(_, txn)| owes(txn))
                .map(|(txid, _)| *txid)
                .unwrap_or(TxId {
                    epoch: self.epoch,
                    seq: self.next_seq,
                }),
        )
    }

    fn trace(&mut self, txid: TxId, kind: &'static str, follower: Option<usize>, detail: String) {
        self.effects.push(Effect::Trace {
            txid,
            kind,
            follower,
            detail,
        });
    }
}

/// Why an aborted write was not applied, naming the follower that caused it.
fn refusal(followers: &[String], txn: &LeaderTxn) -> Refusal {
    if let Some(problem) = &txn.problem {
        return Refusal::Aborted(format!("transaction not applied: {problem}"));
    }
    let votes = || txn.participants.iter().zip(&txn.votes);
    if let Some((&f, _)) = votes().find(|(_, v)| {
        matches!(
            v,
            Some(VoteResult::Voted {
                outcome: Outcome::Abort,
                ..
            })
        )
    }) {
        return Refusal::Aborted(format!(
            "write aborted, not applied: follower {}: voted ABORT (the key is locked by an \
             undecided transaction there, it could not journal its vote, or it is not the \
             member the PREPARE was meant for: see its log)",
            followers[f]
        ));
    }
    let why = votes()
        .find_map(|(&f, v)| match v {
            Some(VoteResult::NotSent(why) | VoteResult::NoAnswer(why)) => {
                Some(format!("follower {}: {why}", followers[f]))
            }
            _ => None,
        })
        .unwrap_or_default();
    Refusal::Unavailable(format!("write not applied: {why}"))
}

#[cfg(test)]
#[path = "leader_core_tests.rs"]
mod tests;
