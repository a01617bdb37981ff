//! One follower's link, as a pure state machine: what the leader's stream to that
//! follower sends next, which reply answers which message, and when a stream is given up
//! and another opened. No I/O and no clock: time comes in as `now` (time since the
//! leader started), and what to do goes out as [`LinkEffect`]s, which `link.rs` carries
//! out on a real gRPC stream and the simulation on a simulated one.
//!
//! The rules (DESIGN §1.4–1.5, §2), each tested in `link_core_tests.rs`:
//!
//! - **Decisions first.** Decisions (and a restarted leader's fence) are *pending*
//!   until answered: kept in the order they were queued, sent on the open stream, and
//!   sent again, before anything else, on every new stream.
//! - **One answer per message.** A reply with a transaction id answers the outstanding
//!   message of that id *and kind* (a vote answers a PREPARE; an ACK a decision or the
//!   fence), so a duplicated vote arriving while the decision waits answers nothing. A
//!   reply without an id (a classic peer) answers the oldest outstanding message.
//! - **Per-message timeouts** find dead or stuck peers: the oldest message unanswered
//!   for the vote timeout ends the stream; its outstanding PREPAREs count as no answer
//!   (their followers get the decision), while PREPAREs on a stream that never connected
//!   count as not sent (nobody got them). With decisions pending, a new stream is opened
//!   after a backoff that doubles up to [`MAX_BACKOFF`]; a new PREPARE opens one at once.
//! - **Batches.** Everything queued between two flushes goes out in one
//!   [`LinkEffect::Send`]; it is one wire frame once the follower has said it speaks
//!   protocol 2, and one wire message per protocol message for classic peers.
//! - **Classic peers** are recognised by replies without a transaction id, or without
//!   protocol 2: their votes are reported as `classic`, and the leader journals the
//!   decision of such a transaction before it answers (DESIGN §1.4).

use std::collections::VecDeque;
use std::time::Duration;

use super::message::{
    Answer, Body, FollowerReply, InquiryReport, LeaderMessage, Outcome, TxId, TxnId, PROTOCOL,
};
use crate::txn::Evaluation;

/// The longest pause between reconnection attempts (DESIGN §2: about 1 s).
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// The first pause after a failed stream.
pub const MIN_BACKOFF: Duration = Duration::from_millis(20);

/// Names one stream of one link; a new stream gets a new id, and events about an old
/// one are ignored.
pub type StreamId = u64;

/// How a follower answered a PREPARE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VoteResult {
    /// It voted; `classic` if it does not speak protocol 2 (its COMMIT vote is not known
    /// to be durable with a participant list, so the decision is journaled); with what
    /// the transaction's compares and GETs found there, if it has any.
    Voted {
        outcome: Outcome,
        classic: bool,
        evaluation: Option<Evaluation>,
    },
    /// The PREPARE was never sent (the connection failed): it needs no decision.
    NotSent(String),
    /// The PREPARE may have arrived but no vote came back: it needs the decision.
    NoAnswer(String),
}

impl VoteResult {
    /// True if the follower may have received the PREPARE, so it must get the decision.
    pub fn was_sent(&self) -> bool {
        !matches!(self, VoteResult::NotSent(_))
    }
}

/// What the link tells the leader core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// The answer to a PREPARE.
    Vote { txid: TxId, vote: VoteResult },
    /// The follower ACKed this decision (durably, DESIGN §1.4).
    Acked(TxId),
    /// The follower answered the fence (`None`: a classic peer's plain ACK).
    Reported(Option<InquiryReport>),
    /// The stream was lost, and the fence is pending again: until it is answered,
    /// which member answers there is not known.
    Refencing,
}

/// What the runtime must do on the link's stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEffect {
    /// Connect and open a new stream (ending the one before, if any).
    Open { stream: StreamId },
    /// Send these messages on `stream`, in order: as one frame if `batched`, else one
    /// wire message each. A stream that is not the current one is ignored.
    Send {
        stream: StreamId,
        messages: Vec<LeaderMessage>,
        batched: bool,
    },
    /// End `stream` (the link gave up on it).
    Close { stream: StreamId },
}

/// What a message on the stream waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Vote,
    Ack,
    Report,
}

impl Expect {
    fn of(body: &Body) -> Expect {
        match body {
            Body::Prepare { .. } => Expect::Vote,
            Body::Decide { .. } | Body::View { .. } => Expect::Ack,
            Body::Fence => Expect::Report,
        }
    }
}

#[derive(Clone, Debug)]
struct Outstanding {
    txid: TxId,
    expect: Expect,
    deadline: Duration,
}

#[derive(Clone, Debug)]
struct Stream {
    id: StreamId,
    outstanding: VecDeque<Outstanding>,
    /// The follower has said it speaks protocol 2: frames may carry batches.
    batches: bool,
    /// No reply has come yet: until one does, the connection may not even exist.
    silent: bool,
}

/// One follower's link state. See the module documentation for its rules.
#[derive(Clone, Debug)]
pub struct LinkCore {
    cluster_id: String,
    vote_timeout: Duration,
    stream: Option<Stream>,
    next_stream: StreamId,
    /// Decisions and the fence not yet answered, in the order they were queued.
    pending: VecDeque<LeaderMessage>,
    /// Messages queued since the last flush.
    outbox: Vec<LeaderMessage>,
    backoff: Duration,
    /// With decisions pending and no stream: when to open one.
    retry_at: Option<Duration>,
    last_error: Option<String>,
    last_contact: Option<Duration>,
    /// Whether the follower speaks protocol 2, as its last reply with an id said.
    modern: Option<bool>,
    /// The member id the follower reported in its answer to the fence.
    member_id: Option<String>,
    /// The fence sent again after every lost stream, if set
    /// ([`LinkCore::fence_every_stream`]).
    fence: Option<LeaderMessage>,
    effects: Vec<LinkEffect>,
}

/// What the link's state looks like from outside (for `tpc status`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkView {
    /// A stream is open (or opening).
    pub stream_open: bool,
    /// Decisions (and the fence) not yet answered.
    pub pending: usize,
    /// Why the last stream ended, if the link has none now.
    pub last_error: Option<String>,
    /// When the follower last answered.
    pub last_contact: Option<Duration>,
    /// Its member id, as it answered this leader's fence (none from a classic peer).
    pub member_id: Option<String>,
}

impl LinkCore {
    /// A link for a follower of cluster `cluster_id`.
    pub fn new(cluster_id: String, vote_timeout: Duration) -> LinkCore {
        LinkCore {
            cluster_id,
            vote_timeout,
            stream: None,
            next_stream: 1,
            pending: VecDeque::new(),
            outbox: Vec::new(),
            backoff: MIN_BACKOFF,
            retry_at: None,
            last_error: None,
            last_contact: None,
            modern: None,
            member_id: None,
            fence: None,
            effects: Vec::new(),
        }
    }

    /// After every lost stream, `fence` is pending again (first, and tried until
    /// answered, like a decision), and the loss is reported ([`LinkEvent::Refencing`]):
    /// the leader hears again which member answers at the follower's address, since a
    /// follower restarted with an empty disk is a new member (DESIGN §8).
    pub fn fence_every_stream(&mut self, fence: LeaderMessage) {
        self.fence = Some(fence);
    }

    /// Queues a message: a PREPARE goes out at the next flush (opening a stream if
    /// needed); a decision or a fence stays pending until the follower answers it.
    pub fn queue(&mut self, msg: LeaderMessage) {
        if Expect::of(&msg.body) != Expect::Vote {
            self.pending.push_back(msg.clone());
            if self.stream.is_none() {
                // Sent with the pending ones when a stream opens.
                return;
            }
        }
        self.outbox.push(msg);
    }

    /// Sends what was queued since the last flush, opening a stream if one is needed
    /// (a stream that then fails to connect is reported by [`LinkCore::open_failed`]).
    pub fn flush(&mut self, now: Duration) {
        if self.stream.is_none() {
            let prepares = self
                .outbox
                .iter()
                .any(|m| Expect::of(&m.body) == Expect::Vote);
            let retry_due = !self.pending.is_empty() && self.retry_at.is_none_or(|at| at <= now);
            if !prepares && !retry_due {
                self.outbox.clear();
                return;
            }
            let id = self.next_stream;
            self.next_stream += 1;
            self.retry_at = None;
            self.stream = Some(Stream {
                id,
                outstanding: VecDeque::new(),
                batches: false,
                silent: true,
            });
            self.effects.push(LinkEffect::Open { stream: id });
            // The pending decisions first; queued ones are among them already.
            let mut first: Vec<LeaderMessage> = self.pending.iter().cloned().collect();
            first.extend(
                self.outbox
                    .drain(..)
                    .filter(|m| Expect::of(&m.body) == Expect::Vote),
            );
            self.outbox = first;
        }
        if self.outbox.is_empty() {
            return;
        }
        let stream = self.stream.as_mut().expect("a stream is open");
        let deadline = now + self.vote_timeout;
        for msg in &self.outbox {
            let txid = msg
                .txid
                .ordered()
                .expect("the leader sends ordered ids only");
            stream.outstanding.push_back(Outstanding {
                txid,
                expect: Expect::of(&msg.body),
                deadline,
            });
        }
        self.effects.push(LinkEffect::Send {
            stream: stream.id,
            messages: std::mem::take(&mut self.outbox),
            batched: stream.batches,
        });
    }

    /// Replies arrived on `stream`, in order.
    pub fn replies(
        &mut self,
        stream: StreamId,
        replies: Vec<Result<FollowerReply, String>>,
        now: Duration,
    ) -> Vec<LinkEvent> {
        let mut events = Vec::new();
        for reply in replies {
            if !self.is_current(stream) {
                break;
            }
            let reply = match reply {
                Ok(reply) => reply,
                Err(why) => {
                    events.extend(self.give_up(format!("unreadable reply: {why}"), now));
                    break;
                }
            };
            if let Some(theirs) = reply.cluster_id.as_ref().filter(|c| **c != self.cluster_id) {
                let why = format!(
                    "the follower belongs to cluster {theirs}, this leader's cluster is {}",
                    self.cluster_id
                );
                events.extend(self.give_up(why, now));
                break;
            }
            events.extend(self.reply(reply, now));
        }
        events
    }

    fn reply(&mut self, reply: FollowerReply, now: Duration) -> Vec<LinkEvent> {
        let stream = self.stream.as_mut().expect("current");
        stream.silent = false;
        if reply.protocol >= PROTOCOL {
            stream.batches = true;
        }
        let position = match &reply.txid {
            // A classic peer: the oldest unanswered message.
            TxnId::Legacy => (!stream.outstanding.is_empty()).then_some(0),
            txid => {
                let is_vote = matches!(reply.answer, Answer::Vote(_) | Answer::Evaluated(_));
                stream.outstanding.iter().position(|o| {
                    TxnId::Ordered(o.txid) == *txid && (o.expect == Expect::Vote) == is_vote
                })
            }
        };
        let Some(entry) = position.and_then(|p| stream.outstanding.remove(p)) else {
            tracing::debug!(txid = %reply.txid, answer = ?reply.answer, "reply to no outstanding message (a duplicate?); ignored");
            return Vec::new();
        };
        self.backoff = MIN_BACKOFF;
        self.last_contact = Some(now);
        self.last_error = None;
        let classic = reply.txid == TxnId::Legacy || reply.protocol < PROTOCOL;
        self.modern = Some(!classic);
        let event = match (entry.expect, reply.answer) {
            (Expect::Vote, Answer::Vote(outcome)) => LinkEvent::Vote {
                txid: entry.txid,
                vote: VoteResult::Voted {
                    outcome,
                    classic,
                    evaluation: None,
                },
            },
            (Expect::Vote, Answer::Evaluated(evaluation)) => LinkEvent::Vote {
                txid: entry.txid,
                vote: VoteResult::Voted {
                    outcome: Outcome::Commit,
                    classic,
                    evaluation: Some(evaluation),
                },
            },
            (Expect::Vote, other) => {
                tracing::warn!(txid = %entry.txid, ?other, "answer to a PREPARE is not a vote; counted as ABORT");
                LinkEvent::Vote {
                    txid: entry.txid,
                    vote: VoteResult::Voted {
                        outcome: Outcome::Abort,
                        classic,
                        evaluation: None,
                    },
                }
            }
            (Expect::Ack, Answer::Ack) => {
                self.answered(entry.txid);
                LinkEvent::Acked(entry.txid)
            }
            (Expect::Report, Answer::Report(report)) => {
                self.answered(entry.txid);
                if let Some(id) = report.as_ref().and_then(|r| r.member_id.clone()) {
                    self.member_id = Some(id);
                }
                LinkEvent::Reported(report)
            }
            (Expect::Report, Answer::Ack) => {
                self.answered(entry.txid);
                LinkEvent::Reported(None)
            }
            (_, other) => {
                let why = format!("{} answered with {other:?}, not ACK; resending", entry.txid);
                tracing::warn!(reason = %why, "follower link");
                return self.give_up(why, now);
            }
        };
        vec![event]
    }

    /// Drops an answered decision or fence from the pending ones.
    fn answered(&mut self, txid: TxId) {
        if let Some(i) = self
            .pending
            .iter()
            .position(|m| m.txid == TxnId::Ordered(txid))
        {
            self.pending.remove(i);
        }
    }

    /// The runtime saw `stream` end (an error, or the follower closed it).
    pub fn ended(&mut self, stream: StreamId, why: String, now: Duration) -> Vec<LinkEvent> {
        if !self.is_current(stream) {
            return Vec::new();
        }
        self.drop_stream(why, now, false)
    }

    /// The runtime could not connect `stream`: nothing sent on it reached the follower.
    pub fn open_failed(&mut self, stream: StreamId, why: String, now: Duration) -> Vec<LinkEvent> {
        if !self.is_current(stream) {
            return Vec::new();
        }
        self.drop_stream(why, now, true)
    }

    /// Gives up a stream whose oldest message is unanswered past its deadline.
    pub fn tick(&mut self, now: Duration) -> Vec<LinkEvent> {
        let expired = self
            .stream
            .as_ref()
            .and_then(|s| s.outstanding.front())
            .is_some_and(|o| o.deadline <= now);
        if !expired {
            return Vec::new();
        }
        self.give_up(format!("no answer within {:?}", self.vote_timeout), now)
    }

    /// When [`LinkCore::tick`] or [`LinkCore::flush`] next has something to do.
    pub fn next_deadline(&self) -> Option<Duration> {
        match &self.stream {
            Some(s) => s.outstanding.front().map(|o| o.deadline),
            None if !self.pending.is_empty() => self.retry_at,
            None => None,
        }
    }

    /// The effects produced since the last call.
    pub fn take_effects(&mut self) -> Vec<LinkEffect> {
        std::mem::take(&mut self.effects)
    }

    /// Whether the follower speaks protocol 2 (`None`: no reply has said yet).
    pub fn speaks_protocol_2(&self) -> Option<bool> {
        self.modern
    }

    /// The status as operators see it.
    pub fn view(&self) -> LinkView {
        LinkView {
            stream_open: self.stream.is_some(),
            pending: self.pending.len(),
            last_error: self.last_error.clone(),
            last_contact: self.last_contact,
            member_id: self.member_id.clone(),
        }
    }

    fn is_current(&self, stream: StreamId) -> bool {
        self.stream.as_ref().is_some_and(|s| s.id == stream)
    }

    /// Ends the current stream on the link's own initiative.
    fn give_up(&mut self, why: String, now: Duration) -> Vec<LinkEvent> {
        if let Some(s) = &self.stream {
            self.effects.push(LinkEffect::Close { stream: s.id });
        }
        self.drop_stream(why, now, false)
    }

    /// Forgets the current stream: its outstanding votes are reported (not sent, if it
    /// never connected; else no answer), its pending decisions wait for the next one.
    fn drop_stream(&mut self, why: String, now: Duration, never_connected: bool) -> Vec<LinkEvent> {
        let Some(stream) = self.stream.take() else {
            return Vec::new();
        };
        let not_sent = never_connected && stream.silent;
        let events = stream
            .outstanding
            .into_iter()
            .filter(|o| o.expect == Expect::Vote)
            .map(|o| LinkEvent::Vote {
                txid: o.txid,
                vote: if not_sent {
                    VoteResult::NotSent(why.clone())
                } else {
                    VoteResult::NoAnswer(why.clone())
                },
            })
            .collect();
        let mut events: Vec<LinkEvent> = events;
        if let Some(fence) = &self.fence {
            if !self.pending.iter().any(|m| m.body == Body::Fence) {
                self.pending.push_front(fence.clone());
            }
            events.push(LinkEvent::Refencing);
        }
        if !self.pending.is_empty() {
            self.retry_at = Some(now + self.backoff);
        }
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.last_error = Some(why);
        events
    }
}

#[cfg(test)]
#[path = "link_core_tests.rs"]
mod tests;
