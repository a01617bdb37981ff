//! The leader's runtime around its core: one task owns the [`LeaderCore`], feeds it what
//! happens (client writes, the followers' replies, the journal's answers, time) and
//! carries out the effects it returns. It decides nothing: every rule is in the core.
//!
//! **One owner, in batches.** Every event reaches the task through one channel. It takes
//! every event that is waiting (up to [`MAX_EVENTS`]), hands them to the core one by
//! one, and only then asks for the effects: so the messages that many concurrent writes
//! queue on one follower's link leave as one send (one stream frame for a follower that
//! speaks protocol 2), the way the follower's state thread shares one fsync among the
//! messages waiting for it.
//!
//! **Independent of the client.** A write is an event, not a future the client's
//! handler runs: a transaction runs to its decision even if its client cancels or times
//! out (tonic drops a handler's future on cancellation, DESIGN §1.4).
//!
//! **Order.** Effects are carried out in the order the core returns them, by this one
//! task, and each is a hand-off that does not wait: records to the group-commit journal
//! (whose jobs are written in the order handed in, so a checkpoint stands for everything
//! before it), messages to a link's task, answers to the waiting handlers. A journal
//! write's result comes back as an event.
//!
//! The core sits behind a mutex that this task holds only while it handles a batch, so
//! that reads (the committed values the leader answers from) and `tpc status` can look
//! at it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tonic::Status;
use tracing::Instrument;

use super::leader_core::{Committed, Effect, JobId, JournalFailure, LeaderCore, Refusal, WriteId};
use super::leader_journal::LeaderJournal;
use super::link::Link;
use super::link_core::StreamId;
use super::message::{Answer, FollowerReply};
use super::records::LeaderRecord;
use super::trace::Trace;
use crate::crash::crash_point;
use crate::journal::Record;
use crate::metrics;
use crate::txn::TxnSpec;

/// At most this many events are handled before their effects are carried out.
pub const MAX_EVENTS: usize = 1024;

/// What a client gets for its transaction: what it did, or why it was not applied.
pub type WriteAnswer = std::result::Result<Committed, Status>;

/// What happened on a follower's stream, as a link task reports it.
#[derive(Debug)]
pub enum StreamEvent {
    /// Replies arrived, in order.
    Replies(Vec<Result<FollowerReply, String>>),
    /// The stream ended.
    Ended(String),
    /// The stream could not connect: nothing sent on it arrived.
    OpenFailed(String),
}

/// Everything the coordinator task hears about.
#[derive(Debug)]
pub enum Event {
    /// A client transaction that writes (a Put or Delete is one).
    Write {
        txn: TxnSpec,
        reply: oneshot::Sender<WriteAnswer>,
    },
    /// From follower `follower`'s link.
    Stream {
        follower: usize,
        stream: StreamId,
        event: StreamEvent,
    },
    /// An operator's change of the members (`LeaderCore::change_members`).
    ChangeMembers {
        address: String,
        add: bool,
        reply: oneshot::Sender<Result<u64, String>>,
    },
    /// Every follower catching up on the next view of `epoch` has (`view_change.rs`).
    CaughtUp { epoch: u64 },
    /// How long each follower has been unreachable (`LeaderCore::silences`).
    Silences {
        silent: Vec<Option<Duration>>,
        member_timeout: Option<Duration>,
    },
    /// A journal write ended.
    Journaled {
        job: JobId,
        result: Result<(), JournalFailure>,
    },
    /// Stop: this leader stands down (`Coordinator::stop`).
    Stop(String),
}

/// The leader's coordinator: the core, the task that owns it, and what others watch.
pub struct Coordinator {
    core: Mutex<LeaderCore>,
    events: mpsc::UnboundedSender<Event>,
    journal: LeaderJournal,
    /// Changes whenever a decision is made or ACKed, for reads waiting for one.
    progress: watch::Sender<u64>,
    /// Set (with the reason) once the journal failed in a way that forces a restart,
    /// or the leader was told to stop.
    fatal: watch::Sender<Option<String>>,
    /// When the leader started: the core's clock counts from here.
    started: Instant,
    /// The same moment by the wall clock, to show the core's times to operators.
    started_wall: std::time::SystemTime,
}

impl Coordinator {
    /// Starts the task that owns `core` (its fences and owed decisions already queued),
    /// with `events` as its inbox (the links report on the same channel).
    pub fn start(
        core: LeaderCore,
        journal: LeaderJournal,
        links: Vec<Link>,
        events: (mpsc::UnboundedSender<Event>, mpsc::UnboundedReceiver<Event>),
        trace: Arc<Trace>,
    ) -> Arc<Coordinator> {
        let (sender, inbox) = events;
        let coordinator = Arc::new(Coordinator {
            core: Mutex::new(core),
            events: sender,
            journal,
            progress: watch::Sender::new(0),
            fatal: watch::Sender::new(None),
            started: Instant::now(),
            started_wall: std::time::SystemTime::now(),
        });
        let owner = Owner {
            coordinator: coordinator.clone(),
            links,
            trace,
            writes: HashMap::new(),
            next_write: 1,
            stopping: None,
        };
        tokio::spawn(owner.run(inbox).in_current_span());
        coordinator
    }

    /// Runs `txn` (one that may write); the answer comes on `reply`.
    pub fn submit(&self, txn: TxnSpec, reply: oneshot::Sender<WriteAnswer>) {
        if let Err(mpsc::error::SendError(Event::Write { reply, .. })) =
            self.events.send(Event::Write { txn, reply })
        {
            let _ = reply.send(Err(Status::unavailable("leader is shutting down")));
        }
    }

    /// Asks that follower `address` join the members (`add`) or leave them; the
    /// answer is the next view's epoch, or why the change cannot start.
    pub async fn change_members(&self, address: String, add: bool) -> Result<u64, String> {
        let (reply, answer) = oneshot::channel();
        self.events
            .send(Event::ChangeMembers {
                address,
                add,
                reply,
            })
            .map_err(|_| "the leader is shutting down".to_string())?;
        answer
            .await
            .map_err(|_| "the leader is shutting down".to_string())?
    }

    /// Every follower catching up on the next view of `epoch` has.
    pub fn caught_up(&self, epoch: u64) {
        let _ = self.events.send(Event::CaughtUp { epoch });
    }

    /// How long each follower has been unreachable (`None`: it answers).
    pub fn silences(&self, silent: Vec<Option<Duration>>, member_timeout: Option<Duration>) {
        let _ = self.events.send(Event::Silences {
            silent,
            member_timeout,
        });
    }

    /// Stops the leader: every waiting write is answered UNKNOWN (its outcome is for
    /// the next leader to settle), the links close, and [`Coordinator::fatal`] says why.
    pub fn stop(&self, why: String) {
        let _ = self.events.send(Event::Stop(why));
    }

    /// The core, for a look (reads and status); held briefly.
    pub fn core(&self) -> MutexGuard<'_, LeaderCore> {
        lock(&self.core)
    }

    /// Resolves with the reason once the leader must stop (its journal failed).
    pub fn fatal(&self) -> watch::Receiver<Option<String>> {
        self.fatal.subscribe()
    }

    /// Changes whenever a decision is made or a follower ACKs one.
    pub fn progress(&self) -> watch::Receiver<u64> {
        self.progress.subscribe()
    }

    /// The journal's size: bytes and records.
    pub fn journal_size(&self) -> (u64, u64) {
        self.journal.size()
    }

    /// When the leader started, by the wall clock (the core's times count from here).
    pub fn started_at(&self) -> std::time::SystemTime {
        self.started_wall
    }

    /// The core's clock now.
    fn now(&self) -> Duration {
        self.started.elapsed()
    }
}

/// The task that owns the core.
struct Owner {
    coordinator: Arc<Coordinator>,
    links: Vec<Link>,
    trace: Arc<Trace>,
    /// Writes waiting for their answer.
    writes: HashMap<WriteId, oneshot::Sender<WriteAnswer>>,
    next_write: WriteId,
    /// Set by [`Event::Stop`]: stop once the batch is handled.
    stopping: Option<String>,
}

impl Owner {
    async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<Event>) {
        let c = self.coordinator.clone();
        // The fences and owed decisions recovery queued.
        self.carry_out_batch(Vec::new());
        loop {
            let deadline = c.core().next_deadline();
            let first = tokio::select! {
                event = inbox.recv() => match event {
                    Some(event) => Some(event),
                    None => return,
                },
                _ = sleep_until(deadline.map(|d| c.started + d)) => None,
            };
            let mut batch: Vec<Event> = first.into_iter().collect();
            while batch.len() < MAX_EVENTS {
                match inbox.try_recv() {
                    Ok(event) => batch.push(event),
                    Err(_) => break,
                }
            }
            self.carry_out_batch(batch);
            if c.fatal.borrow().is_some() {
                return;
            }
        }
    }

    /// Hands a batch of events to the core, then carries out the effects.
    fn carry_out_batch(&mut self, batch: Vec<Event>) {
        let c = self.coordinator.clone();
        let now = c.now();
        let (effects, progress) = {
            let mut core = c.core();
            for event in batch {
                self.handle(&mut core, event, now);
            }
            core.tick(now);
            (core.take_effects(now), core.progress())
        };
        for effect in effects {
            self.carry_out(effect);
        }
        if let Some(why) = self.stopping.take() {
            self.stop(
                why.clone(),
                format!(
                    "the leader stood down; the outcome is for the next leader to settle: {why}"
                ),
            );
        }
        c.progress.send_if_modified(|seen| {
            let changed = *seen != progress;
            *seen = progress;
            changed
        });
    }

    fn handle(&mut self, core: &mut LeaderCore, event: Event, now: Duration) {
        match event {
            Event::Write { txn, reply } => {
                let write = self.next_write;
                self.next_write += 1;
                self.writes.insert(write, reply);
                core.submit(write, txn, now);
            }
            Event::Stream {
                follower,
                stream,
                event,
            } => match event {
                StreamEvent::Replies(replies) => {
                    // An ACK of a decision (a view's id, `0.<epoch>`, is no decision's).
                    let acks = replies.iter().any(|r| match r {
                        Ok(FollowerReply {
                            answer: Answer::Ack,
                            txid,
                            ..
                        }) => txid.ordered().is_none_or(|t| t.epoch != 0),
                        _ => false,
                    });
                    if acks {
                        crash_point("leader-after-first-ack");
                    }
                    core.replies(follower, stream, replies, now)
                }
                StreamEvent::Ended(why) => core.stream_ended(follower, stream, why, now),
                StreamEvent::OpenFailed(why) => core.open_failed(follower, stream, why, now),
            },
            Event::Journaled { job, result } => core.journaled(job, result, now),
            Event::ChangeMembers {
                address,
                add,
                reply,
            } => {
                let _ = reply.send(core.change_members(&address, add));
            }
            Event::CaughtUp { epoch } => core.caught_up(epoch),
            Event::Silences {
                silent,
                member_timeout,
            } => core.silences(&silent, member_timeout),
            Event::Stop(why) => self.stopping = Some(why),
        }
    }

    fn carry_out(&mut self, effect: Effect) {
        match effect {
            Effect::Journal { job: None, records } => {
                self.coordinator
                    .journal
                    .append_unsynced(records_of(&records));
            }
            Effect::Journal {
                job: Some(job),
                records,
            } => {
                let decision = records
                    .iter()
                    .any(|r| matches!(r, LeaderRecord::Decide { .. }));
                let durable = self.coordinator.journal.append(records_of(&records));
                self.report_journaled(job, durable, decision);
            }
            Effect::Checkpoint { job, live } => {
                let timer = metrics::CHECKPOINT_DURATION.start_timer();
                let durable = self.coordinator.journal.rewrite(records_of(&live));
                let events = self.coordinator.events.clone();
                tokio::spawn(async move {
                    let result = journal_result(durable).await;
                    timer.observe_duration();
                    let _ = events.send(Event::Journaled { job, result });
                });
            }
            Effect::Link { follower, effect } => self.links[follower].carry_out(effect),
            Effect::Answer { write, result } => {
                let Some(reply) = self.writes.remove(&write) else {
                    return;
                };
                if result.is_ok() {
                    crash_point("leader-after-last-vote");
                }
                let _ = reply.send(result.map_err(|refusal| match refusal {
                    Refusal::Aborted(why) => Status::aborted(why),
                    Refusal::Unavailable(why) => Status::unavailable(why),
                    Refusal::Precondition(why) => Status::failed_precondition(why),
                }));
            }
            Effect::Trace {
                txid,
                kind,
                follower,
                detail,
            } => {
                if kind == "decide" {
                    let outcome = detail.split(' ').next().unwrap_or_default();
                    metrics::TRANSACTIONS.with_label_values(&[outcome]).inc();
                    tracing::debug!(%txid, %detail, "decided");
                }
                let name = follower.map(|f| self.links[f].name());
                self.trace.emit(&txid.to_string(), kind, name, detail);
            }
            Effect::Fatal(why) => {
                tracing::error!(reason = %why, "leader journal failed; stopping");
                let answer = format!(
                    "leader journal failed; outcome unknown until the leader restarts: {why}"
                );
                self.stop(why, answer);
            }
        }
    }

    /// Answers every waiting write UNKNOWN with `answer`, and says why the leader stops.
    fn stop(&mut self, why: String, answer: String) {
        for (_, reply) in self.writes.drain() {
            let _ = reply.send(Err(Status::unknown(answer.clone())));
        }
        self.coordinator.fatal.send_replace(Some(why));
    }

    /// Reports a journal write's result back to the core when it is known.
    fn report_journaled(&self, job: JobId, durable: crate::journal::Durable, decision: bool) {
        let events = self.coordinator.events.clone();
        tokio::spawn(async move {
            let result = journal_result(durable).await;
            if decision && result.is_ok() {
                crash_point("leader-after-decision-journaled");
            }
            let _ = events.send(Event::Journaled { job, result });
        });
    }
}

fn records_of(records: &[LeaderRecord]) -> Vec<Record> {
    records.iter().map(Record::from).collect()
}

/// Waits for the journal's answer; a journal thread that went away is a broken journal.
async fn journal_result(answer: crate::journal::Durable) -> Result<(), JournalFailure> {
    match answer.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(JournalFailure {
            message: e.message,
            broken: e.broken,
        }),
        Err(_) => Err(JournalFailure {
            message: "the journal thread stopped".into(),
            broken: true,
        }),
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock would be a bug; the state is still the best we have.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
