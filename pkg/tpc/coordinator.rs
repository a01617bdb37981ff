//! The leader's coordinator: runs every write as a two-phase-commit transaction, many
//! at once.
//!
//! Each write becomes a task of its own, independent of the gRPC handler that asked for
//! it, so a transaction runs to its decision even if its client cancels or times out
//! (tonic drops a handler's future on cancellation; nothing of 2PC runs inside it).
//!
//! **Concurrency.** Transactions on different keys run in parallel: they share the
//! journal's fsyncs (group commit, [`GroupJournal`]) and the follower streams
//! (pipelined by the [`Link`]s). Writes to the same key queue here, first come first
//! served, instead of racing for the followers' locks: the next one starts only after
//! its predecessor's decision is queued on every follower's stream, and a stream carries
//! decisions before later PREPAREs, so every follower applies the first write and
//! unlocks the key before it sees the second. The followers' locks stay as the safety
//! net (a follower that still holds the key votes ABORT).
//!
//! **Order of the journal.** The [`LeaderCore`] sits behind one short-held mutex, and
//! every record is handed to the journal while that mutex is held, so the journal's
//! order is the core's order: a checkpoint, computed and handed in under the mutex,
//! stands for everything handed in before it.
//!
//! **One transaction**: hand `begin` to the journal and send PREPARE to every follower
//! at once; collect the votes (no answer within the vote timeout counts as ABORT) and
//! wait for `begin` to be durable; journal the decision durably; answer the client (the
//! commit point); queue the decision on the links, which deliver it until every follower
//! ACKs.
//!
//! **Why PREPARE need not wait for `begin`** (DESIGN §1.4 asks that it does; this saves
//! one fsync of the three a write waits for). `begin` exists so that a restarted leader
//! can abort what it had under way. If the leader crashes before `begin` is durable, its
//! decision can't be durable either (the journal is written in order, and the decision
//! comes after the votes), so nobody was told COMMIT and ABORT is the only possible
//! outcome. The restarted leader tells every follower so without knowing the id: after
//! the decisions its journal holds, it sends an *end of recovery* (an ABORT of
//! `<epoch>.0`) listing the transactions it has unfinished for that follower, and the
//! follower aborts every other transaction of an older epoch it still has prepared
//! (`follower_core.rs`). This is presumed abort, with the followers' inquiry replaced
//! by the leader's announcement. If `begin` fails cleanly, the write is aborted, and
//! that ABORT is delivered without a record of its own (nothing of the transaction is
//! durable, so a restart can only abort it too); if the journal broke, the leader stops
//! and its restart sends the end of recovery.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, oneshot, watch};
use tonic::Status;
use tracing::Instrument;

use super::admin::LeaderView;
use super::leader_core::LeaderCore;
use super::link::{Ack, Link, VoteResult};
use super::message::{Body, Op, Outcome, TxId};
use super::trace::Trace;
use crate::crash::crash_point;
use crate::journal::{CommitError, GroupJournal, Record};
use crate::metrics;

/// After this many journal records the leader's journal is checkpointed.
pub const CHECKPOINT_RECORDS: u64 = 10_000;

/// What a client gets for its write.
pub type WriteAnswer = std::result::Result<(), Status>;

/// One client write, waiting for its transaction.
pub struct WriteRequest {
    /// The key.
    pub key: String,
    /// Put or delete.
    pub op: Op,
    /// Where the answer goes.
    pub reply: oneshot::Sender<WriteAnswer>,
}

/// The coordinator: shared by the client handlers (who submit writes), the write tasks
/// and the ACK task.
pub struct Coordinator {
    core: Mutex<LeaderCore>,
    journal: GroupJournal,
    links: Vec<Link>,
    /// Keys with a transaction under way, and the writes queued behind it.
    busy_keys: Mutex<HashMap<String, VecDeque<WriteRequest>>>,
    /// Counts ACKs, for reads waiting for a decision to reach a follower.
    progress: watch::Sender<u64>,
    /// Set (with the reason) once the journal failed in a way that forces a restart.
    fatal: watch::Sender<Option<String>>,
    checkpointing: AtomicBool,
    /// `done` records not written yet: they ride along with the next append instead of
    /// costing a write of their own (losing them in a crash only means the decisions
    /// are delivered again). Locked after `core`.
    unwritten_done: Mutex<Vec<Record>>,
    trace: Arc<Trace>,
}

impl Coordinator {
    /// A coordinator over `core` and `journal`; starts the task that handles ACKs.
    pub fn start(
        core: LeaderCore,
        journal: GroupJournal,
        links: Vec<Link>,
        acks: mpsc::UnboundedReceiver<Ack>,
        trace: Arc<Trace>,
    ) -> Arc<Coordinator> {
        let coordinator = Arc::new(Coordinator {
            core: Mutex::new(core),
            journal,
            links,
            busy_keys: Mutex::new(HashMap::new()),
            progress: watch::Sender::new(0),
            fatal: watch::Sender::new(None),
            checkpointing: AtomicBool::new(false),
            unwritten_done: Mutex::new(Vec::new()),
            trace,
        });
        tokio::spawn(coordinator.clone().handle_acks(acks).in_current_span());
        coordinator
    }

    /// Runs `request` as a transaction once the writes to its key queued before it are
    /// decided.
    pub fn submit(self: &Arc<Self>, request: WriteRequest) {
        {
            let mut busy = lock(&self.busy_keys);
            if let Some(queue) = busy.get_mut(&request.key) {
                queue.push_back(request);
                return;
            }
            busy.insert(request.key.clone(), VecDeque::new());
        }
        tokio::spawn(self.clone().run_key(request).in_current_span());
    }

    /// Queues a recovered decision for `follower`.
    pub fn deliver(&self, txid: TxId, outcome: Outcome, follower: &str) {
        self.deliver_locked(&self.core(), txid, outcome, follower);
    }

    /// Queues this run's end of recovery on every link, after the recovered decisions
    /// (`LeaderCore::end_of_recovery`); called once, at a restart.
    pub fn end_recovery(&self) {
        let core = self.core();
        for link in &self.links {
            link.decide(core.end_of_recovery(link.name()).into());
        }
    }

    /// Resolves with the reason once the leader must stop (its journal failed).
    pub fn fatal(&self) -> watch::Receiver<Option<String>> {
        self.fatal.subscribe()
    }

    /// Changes whenever a follower ACKs a decision.
    pub fn progress(&self) -> watch::Receiver<u64> {
        self.progress.subscribe()
    }

    /// The unfinished transactions and the journal's size, now.
    pub fn view(&self) -> LeaderView {
        LeaderView::of(
            &self.core(),
            self.journal.byte_len(),
            self.journal.record_count(),
        )
    }

    fn core(&self) -> MutexGuard<'_, LeaderCore> {
        lock(&self.core)
    }

    /// Runs the writes to one key, one after the other, until its queue is empty.
    async fn run_key(self: Arc<Self>, first: WriteRequest) {
        let key = first.key.clone();
        let mut next = Some(first);
        while let Some(request) = next {
            if let Err(why) = self.transaction(request).await {
                self.fatal.send_replace(Some(why));
            }
            self.checkpoint_if_due();
            let mut busy = lock(&self.busy_keys);
            next = busy.get_mut(&key).and_then(VecDeque::pop_front);
            if next.is_none() {
                busy.remove(&key);
            }
        }
    }

    /// Runs one transaction to its decision and answers the client. An `Err` means the
    /// journal failed in a way that forces the leader to stop.
    async fn transaction(&self, request: WriteRequest) -> std::result::Result<(), String> {
        let followers: Vec<String> = self.links.iter().map(|l| l.name().to_string()).collect();
        let (txid, begun) = {
            let mut core = self.core();
            let (txid, begin) = core.begin(&request.key, followers);
            let mut records = std::mem::take(&mut *lock(&self.unwritten_done));
            records.push(Record::from(&begin));
            (txid, self.journal.append(records))
        };
        self.trace
            .emit(&txid.to_string(), "begin", None, request.key.as_str());
        // The PREPAREs go out while `begin` is being made durable (see the module docs).
        let answers: Vec<_> = {
            let core = self.core();
            self.links
                .iter()
                .map(|link| {
                    let body = Body::Prepare {
                        key: request.key.clone(),
                        op: request.op.clone(),
                    };
                    link.prepare(core.message(txid, body, link.name()).into())
                })
                .collect()
        };
        let begun = durable(begun).await;
        crash_point("leader-after-begin-journaled");
        if let Err(e) = &begun {
            tracing::error!(%txid, error = %e, "leader journal write failed; aborting the write");
            if e.broken {
                // The restart aborts what the followers prepared (its end of recovery).
                let _ = request.reply.send(Err(Status::unavailable(format!(
                    "write not applied: leader journal write failed: {e}"
                ))));
                return Err(e.message.clone());
            }
        }
        let mut votes = Vec::with_capacity(answers.len());
        for answer in answers {
            votes.push(
                answer
                    .await
                    .unwrap_or_else(|_| VoteResult::NoAnswer("link stopped".into())),
            );
        }
        let sent_to: Vec<String> = self
            .links
            .iter()
            .zip(&votes)
            .filter(|(_, v)| v.was_sent())
            .map(|(l, _)| l.name().to_string())
            .collect();
        if let Err(e) = begun {
            // Nothing of this transaction is durable and nobody was told COMMIT: its
            // ABORT needs no record (presumed abort; a restart knows nothing of it, or
            // finds a checkpoint's `begin` and aborts it), so a full disk does not make
            // the leader stop here.
            let _ = self.core().decide(txid, Outcome::Abort, sent_to.clone());
            let _ = request.reply.send(Err(Status::unavailable(format!(
                "write not applied: leader journal write failed: {e}"
            ))));
            self.finish(txid, Outcome::Abort, &sent_to);
            return Ok(());
        }
        let outcome = if votes
            .iter()
            .all(|v| *v == VoteResult::Vote(Outcome::Commit))
        {
            Outcome::Commit
        } else {
            Outcome::Abort
        };
        let decided = {
            let mut core = self.core();
            let records = core.decide(txid, outcome, sent_to.clone());
            self.journal
                .append(records.iter().map(Record::from).collect())
        };
        let (outcome, answer) = match durable(decided).await {
            Ok(()) => (outcome, self.client_answer(outcome, &votes)),
            Err(e) if e.broken => {
                // The decision may or may not be on disk: sending either one could
                // contradict what a restart finds. Stop; the restart decides.
                let _ = request.reply.send(Err(Status::unavailable(format!(
                    "leader journal failed; outcome unknown until the leader restarts: {e}"
                ))));
                return Err(e.message);
            }
            Err(e) => {
                // Cleanly not written, so no decision went out. But a checkpoint handed
                // in since `decide` may have written this decision (it writes what the
                // core holds), so ABORT is journaled too, and sent only once durable.
                // The checkpoint, if any, was handed in before (under the same lock):
                // a restart reads ABORT last. If even that fails, stop.
                tracing::error!(%txid, error = %e, "leader journal write failed; aborting the write");
                let aborted = {
                    let mut core = self.core();
                    let records = core.decide(txid, Outcome::Abort, sent_to.clone());
                    self.journal
                        .append(records.iter().map(Record::from).collect())
                };
                if let Err(again) = durable(aborted).await {
                    let _ = request.reply.send(Err(Status::unavailable(format!(
                        "leader journal failed; outcome unknown until the leader restarts: {again}"
                    ))));
                    return Err(format!(
                        "could not journal a decision ({e}), nor then ABORT ({again})"
                    ));
                }
                let answer = Err(Status::unavailable(format!(
                    "write not applied: leader journal write failed: {e}"
                )));
                (Outcome::Abort, answer)
            }
        };
        crash_point("leader-after-decision-journaled");
        tracing::debug!(%txid, key = ?request.key, ?outcome, "decided");
        let _ = request.reply.send(answer);
        self.finish(txid, outcome, &sent_to);
        Ok(())
    }

    /// The end of a decided transaction: counted, traced, its decision queued on the
    /// links of the followers that got its PREPARE.
    fn finish(&self, txid: TxId, outcome: Outcome, sent_to: &[String]) {
        self.trace
            .emit(&txid.to_string(), "decide", None, outcome.as_str());
        metrics::TRANSACTIONS
            .with_label_values(&[outcome.as_str()])
            .inc();
        let core = self.core();
        for follower in sent_to {
            self.deliver_locked(&core, txid, outcome, follower);
        }
    }

    fn client_answer(&self, outcome: Outcome, votes: &[VoteResult]) -> WriteAnswer {
        if outcome == Outcome::Commit {
            return Ok(());
        }
        let named = |pick: &dyn Fn(&VoteResult) -> Option<String>| {
            self.links
                .iter()
                .zip(votes)
                .find_map(|(l, v)| pick(v).map(|why| format!("follower {}: {why}", l.name())))
        };
        if let Some(why) = named(&|v| {
            (*v == VoteResult::Vote(Outcome::Abort)).then(|| {
                "voted ABORT (the key is locked by an undecided transaction there, \
                 or it could not journal its vote: see its log)"
                    .to_string()
            })
        }) {
            return Err(Status::aborted(format!(
                "write aborted, not applied: {why}"
            )));
        }
        let why = named(&|v| match v {
            VoteResult::NotSent(why) | VoteResult::NoAnswer(why) => Some(why.clone()),
            VoteResult::Vote(_) => None,
        })
        .unwrap_or_default();
        Err(Status::unavailable(format!("write not applied: {why}")))
    }

    fn deliver_locked(&self, core: &LeaderCore, txid: TxId, outcome: Outcome, follower: &str) {
        if let Some(link) = self.links.iter().find(|l| l.name() == follower) {
            link.decide(core.message(txid, Body::Decide(outcome), follower).into());
        } else {
            // The follower was removed from the command line since the decision: nobody
            // can deliver it. Its lock stays until it is added back.
            tracing::warn!(%txid, %follower, "decision for a follower that is no longer configured");
        }
    }

    async fn handle_acks(self: Arc<Self>, mut acks: mpsc::UnboundedReceiver<Ack>) {
        while let Some(ack) = acks.recv().await {
            self.acked(ack);
        }
    }

    fn acked(&self, ack: Ack) {
        let Ok(txid) = ack.txid.parse::<TxId>() else {
            return;
        };
        {
            let mut core = self.core();
            match core.acked(txid, &ack.follower) {
                // Losing a `done` in a crash only means the decision is delivered again.
                Some(done) => {
                    lock(&self.unwritten_done).push(Record::from(&done));
                    self.trace.emit(&ack.txid, "done", None, "");
                }
                None if core.txns().contains_key(&txid) => crash_point("leader-after-first-ack"),
                // A repeated ACK, or the end of recovery's: no transaction ends.
                None => {}
            }
        }
        self.progress.send_modify(|n| *n += 1);
    }

    /// Rewrites the journal with only the live records once it has grown past
    /// [`CHECKPOINT_RECORDS`]; one checkpoint at a time, off the transactions' path.
    fn checkpoint_if_due(self: &Arc<Self>) {
        if self.journal.record_count() < CHECKPOINT_RECORDS
            || self.checkpointing.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let done = {
            let core = self.core();
            let live: Vec<Record> = core.live_records().iter().map(Record::from).collect();
            // The finished transactions are not in `live`: their `done` is moot.
            lock(&self.unwritten_done).clear();
            self.journal.rewrite(live)
        };
        let me = self.clone();
        let timer = metrics::CHECKPOINT_DURATION.start_timer();
        tokio::spawn(async move {
            let written = durable(done).await;
            timer.observe_duration();
            match written {
                Ok(()) => tracing::debug!("journal checkpointed"),
                Err(e) if e.broken => {
                    me.fatal.send_replace(Some(e.message));
                }
                Err(e) => tracing::warn!(error = %e, "journal checkpoint failed; will retry"),
            }
            me.checkpointing.store(false, Ordering::Release);
        });
    }
}

/// Waits for the journal's answer; a journal thread that went away is a broken journal.
async fn durable(answer: crate::journal::Durable) -> std::result::Result<(), CommitError> {
    answer.await.unwrap_or_else(|_| {
        Err(CommitError {
            message: "the journal thread stopped".into(),
            broken: true,
        })
    })
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock would be a bug; the state is still the best we have.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
