//! The follower's state owner: the one thread that changes a follower's protocol state,
//! journal and store.
//!
//! It replays the journal, then takes the leader's messages in arrival order, runs each
//! through [`FollowerCore`] and carries out the effects in the order the core gives
//! them: journal, then key-value store, then lock release, then reply. File I/O and
//! fsync block, so it is a plain thread, not an async task.
//!
//! **Batches.** The leader keeps many transactions in flight on one stream, so messages
//! queue up while the thread waits for the disk. It takes every message that is waiting
//! (up to [`MAX_BATCH`]), hands them to the core one by one, and then carries out their
//! effects together: one journal write and one fdatasync for all their records, then
//! all their store changes, then all lock releases, then all replies. Every reply still
//! leaves only after everything it depends on is durable; which messages may share a
//! batch is `follower_batch.rs`'s rule.
//!
//! **Decided writes are applied without fsync** ([`KvStore::apply_unsynced`]): visible
//! at once, and durable through the journal, which keeps every decision until a
//! checkpoint has synced the store ([`KvStore::sync`], one `syncfs` for all of them).
//! After a crash, replay re-applies whatever the journal still holds.
//!
//! **Checkpoints don't stop the thread.** The store sync takes tens of milliseconds
//! under load, so it runs on a thread of its own while this one goes on. The journal
//! is then rewritten with the live records as they were when the sync started, followed
//! by every record journaled since: what the sync covers is dropped, and what it may
//! not cover stays for replay.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tonic::Status;

use super::catch_up::{apply_copied, CatchUp};
use super::follower_batch::{handled_alone, Batch, Pending};
use super::follower_core::{Effect, FollowerCore, StreamId};
use super::key_count::KeyCount;
use super::lease::Lease;
use super::message::{LeaderMessage, Op, TxId, TxnId};
use super::records::FollowerRecord;
use super::termination::Known;
use crate::crash::crash_point;
use crate::journal::{Journal, Record};
use crate::kvstore::{Change, KvStore, Versioned};
use crate::metrics;
use crate::placement::MemberId;
use crate::{Error, Result};

/// After this many journal records, the store is synced and the journal checkpointed
/// (rewritten with only its live records), so start-up time does not grow with the
/// number of writes.
pub const CHECKPOINT_RECORDS: usize = 10_000;

/// At most this many messages share one journal write.
pub const MAX_BATCH: usize = 256;

/// A follower's answer to one message: a wire response, or an error that ends the stream.
pub type Answer = std::result::Result<crate::proto::rpc::Response, Status>;

/// State shared between the gRPC handlers and the state owner.
pub struct Shared {
    core: Mutex<FollowerCore>,
    /// The key-value store (the state owner writes it; handlers read it).
    pub kv: KvStore,
    /// True once the journal is replayed.
    pub ready: AtomicBool,
    /// Also `ready`, for those who wait for it (the health report).
    pub ready_signal: watch::Sender<bool>,
    /// Set when the node starts shutting down: open leader streams are ended (they
    /// would otherwise hold the graceful shutdown up forever).
    pub stopping: watch::Sender<bool>,
    /// Numbers the incoming streams.
    pub next_stream: AtomicU64,
    /// The epoch of the next view while the members change (DESIGN §8): the catch-up
    /// task (`catch_up.rs`) watches it.
    pub next_view: watch::Sender<Option<u64>>,
    /// Where the catch-up on the next view stands.
    pub catch_up: CatchUp,
    /// The leader's lease for direct reads (`lease.rs`).
    pub lease: Lease,
    /// How many keys the store holds, as last counted (`key_count.rs`).
    pub key_count: KeyCount,
}

impl Shared {
    /// State for a follower whose store is `kv`; `has_data` if it holds data or took part
    /// in a transaction; `member_id` names its data.
    pub fn new(kv: KvStore, has_data: bool, member_id: MemberId) -> Shared {
        let mut core = FollowerCore::new(has_data);
        core.set_member_id(member_id.0);
        Shared {
            core: Mutex::new(core),
            kv,
            ready: AtomicBool::new(false),
            ready_signal: watch::Sender::new(false),
            stopping: watch::Sender::new(false),
            next_stream: AtomicU64::new(1),
            next_view: watch::Sender::new(None),
            catch_up: CatchUp::default(),
            lease: Lease::default(),
            key_count: KeyCount::default(),
        }
    }

    /// What the store holds for `key`, for the core's evaluation of a transaction. A file
    /// that can't be read is taken as absent, loudly: the leader then sees this
    /// replica disagree with the others and aborts the transaction.
    pub fn read(&self, key: &str) -> Option<Versioned> {
        self.kv.get(key).unwrap_or_else(|e| {
            tracing::error!(error = %e, "a key file can't be read; taken as absent");
            None
        })
    }

    /// The protocol core, held briefly.
    pub fn core(&self) -> MutexGuard<'_, FollowerCore> {
        // A panic while holding the lock would be a bug; the state is still the best we have.
        self.core
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Deletes, durably, every key of `kv` that `core` no longer keeps (a view moved it
/// elsewhere), or with `leftovers` does not retain (also a leftover of an older
/// membership: [`FollowerCore::retains`]), DESIGN §8. Run by the state owner, the
/// store's one writer, when it takes a view, and at every start for the keys it no
/// longer keeps (a crash may have interrupted it).
fn drop_unheld_keys(kv: &KvStore, core: &FollowerCore, leftovers: bool) -> Result<()> {
    if core.view().is_none() {
        return Ok(());
    }
    let keys = kv.keys()?;
    let unheld: Vec<Change<'_>> = keys
        .iter()
        .filter(|key| match leftovers {
            true => !core.retains(key),
            false => !core.keeps(key),
        })
        .map(|key| (key.as_str(), None))
        .collect();
    if !unheld.is_empty() {
        kv.apply_batch(&unheld)?;
        tracing::info!(
            keys = unheld.len(),
            "dropped the keys this follower no longer holds"
        );
    }
    Ok(())
}

/// What the streams hand the state owner, in arrival order.
pub enum Command {
    /// A leader message from stream `stream`; its answer goes to `reply`.
    Message {
        stream: StreamId,
        msg: Box<LeaderMessage>,
        reply: oneshot::Sender<Answer>,
    },
    /// A stream ended.
    StreamClosed(StreamId),
    /// Keys copied from another member for the next view of `epoch` (`catch_up.rs`):
    /// the answer says how many were written.
    Copied {
        epoch: u64,
        entries: Vec<(String, String, TxId)>,
        reply: oneshot::Sender<std::result::Result<usize, String>>,
    },
    /// Another participant asks what this follower knows of `txid`, as member `member`
    /// (cooperative termination, `termination.rs`): answered once any refusal is durable.
    AskDecision {
        txid: TxId,
        member: String,
        reply: oneshot::Sender<std::result::Result<Known, Status>>,
    },
}

/// One handled message whose effects wait for the batch to be carried out.
struct Handled {
    txid: TxnId,
    effects: Vec<Effect>,
    reply: oneshot::Sender<Answer>,
}

impl Pending for Handled {
    fn effects(&self) -> &[Effect] {
        &self.effects
    }
}

/// The thread that owns the journal and carries out the core's effects.
pub struct StateOwner {
    shared: Arc<Shared>,
    journal: Journal,
    /// The checkpoint under way, if any.
    checkpoint: Option<Checkpoint>,
}

/// A checkpoint whose store sync runs on another thread.
struct Checkpoint {
    /// The live records when the sync started.
    live: Vec<Record>,
    /// Every record journaled since then: the sync may not cover their changes.
    since: Vec<Record>,
    /// The sync's outcome, and how long it took.
    synced: std_mpsc::Receiver<(crate::kvstore::Result<()>, Duration)>,
}

impl StateOwner {
    /// The state owner of `shared`, writing `journal`.
    pub fn new(shared: Arc<Shared>, journal: Journal) -> StateOwner {
        StateOwner {
            shared,
            journal,
            checkpoint: None,
        }
    }

    /// Replays `records`, then handles `commands` until they end; an `Err` stops the node.
    pub fn run(
        mut self,
        records: Vec<FollowerRecord>,
        mut commands: mpsc::Receiver<Command>,
    ) -> Result<()> {
        let count = records.len();
        crate::crash::pause_point("follower-before-replay");
        self.replay(records)?;
        drop_unheld_keys(&self.shared.kv, &self.shared.core(), false)?;
        let next = self.shared.core().next_view().map(|v| v.epoch);
        self.shared.next_view.send_replace(next);
        let prepared = self.shared.core().prepared().len();
        metrics::PREPARED_TRANSACTIONS.set(prepared as i64);
        self.shared.ready.store(true, Ordering::Release);
        self.shared.ready_signal.send_replace(true);
        tracing::info!(
            records = count,
            prepared,
            "journal replayed; follower ready"
        );
        while let Some(first) = commands.blocking_recv() {
            let mut batch = Batch::default();
            let mut next = Some(first);
            while let Some(command) = next {
                match command {
                    Command::Message { stream, msg, reply } => {
                        crate::crash::pause_point("follower-before-message");
                        let alone = handled_alone(&self.shared.core(), &msg);
                        if alone || batch.must_precede(&msg) {
                            self.carry_out(std::mem::take(&mut batch))?;
                        }
                        self.handle(&mut batch, stream, *msg, reply);
                        if alone {
                            self.carry_out(std::mem::take(&mut batch))?;
                        }
                    }
                    Command::StreamClosed(stream) => {
                        self.carry_out(std::mem::take(&mut batch))?;
                        self.shared.core().stream_closed(stream);
                    }
                    Command::Copied {
                        epoch,
                        entries,
                        reply,
                    } => {
                        self.carry_out(std::mem::take(&mut batch))?;
                        let core = self.shared.core();
                        let _ = reply.send(apply_copied(&self.shared, &core, epoch, &entries));
                    }
                    Command::AskDecision {
                        txid,
                        member,
                        reply,
                    } => {
                        self.carry_out(std::mem::take(&mut batch))?;
                        let _ = reply.send(self.answer_termination(txid, &member)?);
                    }
                }
                next = if batch.handled.len() < MAX_BATCH {
                    commands.try_recv().ok()
                } else {
                    None
                };
            }
            self.carry_out(batch)?;
        }
        Ok(())
    }

    /// Rebuilds the core from the journal and brings the store up to date. Replayed
    /// decisions may or may not have reached the store before the crash (they are
    /// applied without fsync); re-applying is idempotent, but each key is written at
    /// most once, and only if its file differs (or is torn), so a restart costs reads,
    /// not thousands of writes (and no fsync: the journal still holds them).
    fn replay(&mut self, records: Vec<FollowerRecord>) -> Result<()> {
        let mut changes: HashMap<String, (Op, TxId)> = HashMap::new();
        for record in records {
            let effects = self.shared.core().replay(record);
            for effect in effects {
                match effect {
                    Effect::Apply { key, op, version } => {
                        changes.insert(key, (op, version));
                    }
                    Effect::Finish {
                        txid,
                        outcome,
                        failed,
                    } => {
                        self.shared.core().finish(&txid, outcome, failed);
                    }
                    Effect::DropUnheld => {
                        let core = self.shared.core();
                        changes.retain(|key, _| core.keeps(key));
                    }
                    Effect::DropLeftovers => {
                        let core = self.shared.core();
                        changes.retain(|key, _| core.retains(key));
                    }
                    _ => {}
                }
            }
        }
        let mut stale = Vec::new();
        for (key, (op, version)) in &changes {
            let wanted = op.value().map(|value| (value, *version));
            // A file the crash left torn reads as corrupt: it is rewritten like a stale one.
            // A newer version than the journal's is kept: a copy from another member
            // wrote it (`catch_up.rs`) after this follower had lost and regained the key.
            let up_to_date = match (self.shared.kv.get(key), wanted) {
                (Ok(Some(held)), _) if *version != TxId::default() && held.version > *version => {
                    true
                }
                (Ok(Some(held)), Some((value, version))) => {
                    held.value == value && held.version == version
                }
                (Ok(None), None) => true,
                _ => false,
            };
            if !up_to_date {
                stale.push((key.as_str(), wanted));
            }
        }
        // Like live applies: no fsync per key; the journal keeps these records until a
        // checkpoint has synced the store.
        self.shared.kv.apply_unsynced(&stale)?;
        if !stale.is_empty() {
            tracing::info!(
                keys = stale.len(),
                "re-applied decided writes from the journal"
            );
        }
        Ok(())
    }

    /// Runs one message through the core and adds its effects to `batch`.
    fn handle(
        &self,
        batch: &mut Batch<Handled>,
        stream: StreamId,
        msg: LeaderMessage,
        reply: oneshot::Sender<Answer>,
    ) {
        let txid = msg.txid.clone();
        let mut core = self.shared.core();
        let effects = core.handle(stream, msg, &|key| self.shared.read(key));
        batch.push(
            &core,
            Handled {
                txid,
                effects,
                reply,
            },
        );
    }

    /// What this follower answers about `txid`, asked as `member`, once the effects
    /// of the answer (a refusal) are durable.
    fn answer_termination(
        &mut self,
        txid: TxId,
        member: &str,
    ) -> Result<std::result::Result<Known, Status>> {
        let (known, effects) = self.shared.core().answer_termination(txid, member);
        if effects.is_empty() {
            return Ok(Ok(known));
        }
        let (durable, answered) = oneshot::channel();
        let mut alone = Batch::default();
        alone.push(
            &self.shared.core(),
            Handled {
                txid: txid.into(),
                effects,
                reply: durable,
            },
        );
        self.carry_out(alone)?;
        Ok(match answered.blocking_recv() {
            Ok(Ok(_)) => Ok(known),
            Ok(Err(status)) => Err(status),
            Err(_) => Err(Status::unavailable("the refusal could not be journaled")),
        })
    }

    /// Carries out a batch's effects: journal (one fsync), store, lock releases,
    /// replies. An `Err` means the journal is in an unknown state: the node stops.
    fn carry_out(&mut self, batch: Batch<Handled>) -> Result<()> {
        let handled = batch.handled;
        if handled.is_empty() {
            return Ok(());
        }
        if let Err(error) = self.journal_batch(&handled) {
            self.answer_journal_failure(handled, &error);
            return self.stop_if_broken();
        }
        let apply_error = self.apply_changes(&handled);
        let mut core = self.shared.core();
        // A store that cannot delete stops the node: a start drops them again.
        for drop in [Effect::DropUnheld, Effect::DropLeftovers] {
            if handled.iter().any(|h| h.effects.contains(&drop)) {
                drop_unheld_keys(&self.shared.kv, &core, drop == Effect::DropLeftovers)?;
            }
        }
        for handled in handled {
            let applies = handled
                .effects
                .iter()
                .any(|e| matches!(e, Effect::Apply { .. }));
            if let (Some(error), true) = (&apply_error, applies) {
                // Not finished: the key stays locked and the leader retransmits.
                let _ = handled.reply.send(Err(Status::unavailable(format!(
                    "follower store write failed: {error}"
                ))));
                continue;
            }
            let mut answer = Err(Status::internal("no reply produced"));
            for effect in handled.effects {
                match effect {
                    Effect::Finish {
                        txid,
                        outcome,
                        failed,
                    } => {
                        if core.finish(&txid, outcome, failed) {
                            metrics::TRANSACTIONS
                                .with_label_values(&[outcome.as_str()])
                                .inc();
                        }
                    }
                    Effect::Reply(reply) => {
                        answer = Ok(reply.to_wire(&handled.txid, core.cluster_id()));
                    }
                    Effect::Refuse(why) => {
                        tracing::error!(reason = %why, "refusing the leader");
                        answer = Err(Status::failed_precondition(why));
                    }
                    Effect::Persist(_)
                    | Effect::Apply { .. }
                    | Effect::DropUnheld
                    | Effect::DropLeftovers => {}
                }
            }
            let _ = handled.reply.send(answer);
        }
        self.shared.next_view.send_if_modified(|epoch| {
            let next = core.next_view().map(|v| v.epoch);
            std::mem::replace(epoch, next) != next
        });
        metrics::PREPARED_TRANSACTIONS.set(core.prepared().len() as i64);
        drop(core);
        self.checkpoint_if_due();
        self.stop_if_broken()
    }

    /// Journals every record of the batch with one write and one fdatasync.
    fn journal_batch(&mut self, handled: &[Handled]) -> std::result::Result<(), String> {
        let records: Vec<&FollowerRecord> = handled
            .iter()
            .flat_map(|h| &h.effects)
            .filter_map(|e| match e {
                Effect::Persist(record) => Some(record),
                _ => None,
            })
            .collect();
        if records.is_empty() {
            return Ok(());
        }
        let has = |pick: fn(&FollowerRecord) -> bool| records.iter().any(|r| pick(r));
        if has(|r| matches!(r, FollowerRecord::Decide { .. })) {
            crash_point("follower-before-decision");
        }
        let lines: Vec<Record> = records.iter().map(|r| Record::from(*r)).collect();
        if let Err(e) = self.journal.append_batch(&lines) {
            tracing::error!(error = %e, messages = handled.len(), "journal write failed");
            return Err(e.to_string());
        }
        if let Some(checkpoint) = self.checkpoint.as_mut() {
            checkpoint.since.extend(lines);
        }
        if has(|r| matches!(r, FollowerRecord::Prepare { .. })) {
            crash_point("follower-after-vote-journaled");
            crate::crash::pause_point("follower-after-vote-journaled");
        }
        Ok(())
    }

    /// Answers a batch whose records could not be journaled: a PREPARE that needed a
    /// record gets an ABORT vote; anything else fails its stream, and the leader
    /// retransmits (no decision was finished, so the core is as it was).
    fn answer_journal_failure(&self, handled: Vec<Handled>, error: &str) {
        let mut core = self.shared.core();
        core.journal_failed();
        for handled in handled {
            let prepared = handled.effects.iter().find_map(|e| match e {
                Effect::Persist(FollowerRecord::Prepare { txid, .. }) => Some(txid),
                _ => None,
            });
            let answer = match prepared {
                Some(txid) => {
                    let vote = core.prepare_failed(txid);
                    Ok(vote.to_wire(txid, core.cluster_id()))
                }
                None => Err(Status::unavailable(format!(
                    "follower journal write failed: {error}"
                ))),
            };
            let _ = handled.reply.send(answer);
        }
    }

    /// Applies the batch's decided writes to the store (visible now, durable at the
    /// next checkpoint). On failure, the error.
    fn apply_changes(&self, handled: &[Handled]) -> Option<String> {
        let changes: Vec<Change<'_>> = handled
            .iter()
            .flat_map(|h| &h.effects)
            .filter_map(|e| match e {
                Effect::Apply { key, op, version } => {
                    Some((key.as_str(), op.value().map(|value| (value, *version))))
                }
                _ => None,
            })
            .collect();
        if changes.is_empty() {
            return None;
        }
        if let Err(e) = self.shared.kv.apply_unsynced(&changes) {
            tracing::error!(error = %e, "applying decided writes failed");
            return Some(e.to_string());
        }
        crash_point("follower-after-apply");
        None
    }

    /// Stops the node if the journal is in an unknown state.
    fn stop_if_broken(&self) -> Result<()> {
        if self.journal.is_broken() {
            return Err(Error::Config(format!(
                "journal {} failed to sync: what it holds on disk is unknown; \
                 stopping so that a restart reads it back",
                self.journal.path().display()
            )));
        }
        Ok(())
    }

    /// Once the journal has grown past [`CHECKPOINT_RECORDS`]: starts syncing the store
    /// on another thread; once that is done, rewrites the journal with the live records
    /// of that moment and the records journaled since (see the module documentation).
    fn checkpoint_if_due(&mut self) {
        if let Some(checkpoint) = &self.checkpoint {
            let synced = match checkpoint.synced.try_recv() {
                Err(std_mpsc::TryRecvError::Empty) => return,
                Ok((synced, took)) => synced.map(|()| took).map_err(|e| e.to_string()),
                Err(std_mpsc::TryRecvError::Disconnected) => Err("the sync thread stopped".into()),
            };
            let Some(checkpoint) = self.checkpoint.take() else {
                return;
            };
            match synced {
                Ok(took) => self.rewrite_journal(checkpoint, took),
                Err(e) => {
                    tracing::warn!(error = %e, "store sync before a checkpoint failed; will retry")
                }
            }
            return;
        }
        if self.journal.record_count() < CHECKPOINT_RECORDS {
            return;
        }
        let live: Vec<Record> = self
            .shared
            .core()
            .live_records()
            .iter()
            .map(Record::from)
            .collect();
        let (done, synced) = std_mpsc::channel();
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name("tpc-store-sync".into())
            .spawn(move || {
                crate::crash::pause_point("follower-before-store-sync");
                let started = Instant::now();
                let synced = shared.kv.sync();
                let _ = done.send((synced, started.elapsed()));
            });
        match spawned {
            Ok(_) => {
                self.checkpoint = Some(Checkpoint {
                    live,
                    since: Vec::new(),
                    synced,
                });
            }
            Err(e) => tracing::warn!(error = %e, "could not start the store sync; will retry"),
        }
    }

    /// The second half of a checkpoint, once the store sync (which took `sync_took`)
    /// is done.
    fn rewrite_journal(&mut self, checkpoint: Checkpoint, sync_took: Duration) {
        let Checkpoint {
            mut live, since, ..
        } = checkpoint;
        live.extend(since);
        let started = Instant::now();
        match self.journal.rewrite(&live) {
            Ok(()) => {
                let took = sync_took + started.elapsed();
                metrics::CHECKPOINT_DURATION.observe(took.as_secs_f64());
                tracing::debug!(records = live.len(), "journal checkpointed");
            }
            Err(e) => tracing::warn!(error = %e, "journal checkpoint failed; will retry"),
        }
    }
}
