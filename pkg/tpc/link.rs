//! The leader's message manager: one task per follower owning one long-lived
//! bidirectional `TPCMsg` stream.
//!
//! The coordinator hands a link PREPAREs (answered with a [`VoteResult`]) and decisions
//! (delivered until ACKed). The rules it keeps (DESIGN §1.4–1.5, §2):
//!
//! - **Decisions first.** Undelivered decisions are kept in order and sent before any new
//!   PREPARE, also on a fresh stream after a reconnect, until the follower ACKs each one.
//! - **One answer per message.** Replies are matched by transaction id; a reply without
//!   one (a classic peer) answers the oldest unanswered message.
//! - **Per-message timeouts** find dead or stuck peers: a message unanswered within the
//!   vote timeout ends the stream (its PREPARE counts as no vote) and the link reconnects,
//!   backing off up to about a second. There are no heartbeats on the stream, and
//!   HTTP/2 keepalive pings are rare (see [`crate::net`]).
//! - **Classic peers send response headers only with their first reply**, so messages
//!   are queued on the request stream while the call waits for the headers, which the
//!   link's event loop awaits beside everything else: sending is never gated on them.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Code, Streaming};
use tracing::Instrument;

use super::message::Outcome;
use super::trace::Trace;
use crate::limits::MAX_GRPC_MESSAGE_BYTES;
use crate::net::{self, Address};
use crate::proto::rpc;

/// The longest pause between reconnection attempts (DESIGN §2: about 1 s).
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);
const MIN_BACKOFF: Duration = Duration::from_millis(20);
/// How often an idle link without a stream checks that its follower is up.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// How a follower answered a PREPARE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VoteResult {
    /// It voted.
    Vote(Outcome),
    /// The PREPARE was never sent: the follower is unreachable or refused. It needs no decision.
    NotSent(String),
    /// The PREPARE was sent but no vote came back in time. It needs the decision.
    NoAnswer(String),
}

impl VoteResult {
    /// True if the follower may have received the PREPARE, so it must get the decision.
    pub fn was_sent(&self) -> bool {
        !matches!(self, VoteResult::NotSent(_))
    }
}

/// What the status of a link looks like from outside.
#[derive(Clone, Debug, Default)]
pub struct LinkStatus {
    /// The follower can be reached: a stream to it is open, or (while none is needed)
    /// the last connection probe succeeded.
    pub connected: bool,
    /// The last error, if the last attempt failed.
    pub last_error: Option<String>,
    /// Decisions not yet ACKed.
    pub pending_decisions: usize,
    /// When the follower last answered a message.
    pub last_contact: Option<std::time::SystemTime>,
}

/// A follower ACKed the decision of a transaction.
#[derive(Clone, Debug)]
pub struct Ack {
    /// The follower (its address as given on the command line).
    pub follower: String,
    /// The transaction id.
    pub txid: String,
}

enum Command {
    Prepare {
        msg: rpc::LeaderMsg,
        reply: oneshot::Sender<VoteResult>,
    },
    Decide {
        msg: rpc::LeaderMsg,
    },
}

/// The coordinator's handle on one follower's link.
#[derive(Clone)]
pub struct Link {
    name: String,
    commands: mpsc::UnboundedSender<Command>,
    status: Arc<Mutex<LinkStatus>>,
}

impl Link {
    /// Starts the link task for the follower at `addr`, named `name` (the address as
    /// written on the command line). ACKs are reported on `acks`.
    pub fn spawn(
        name: String,
        addr: Address,
        vote_timeout: Duration,
        cluster_id: String,
        acks: mpsc::UnboundedSender<Ack>,
        trace: Arc<Trace>,
    ) -> Link {
        let (commands, rx) = mpsc::unbounded_channel();
        let status = Arc::new(Mutex::new(LinkStatus::default()));
        let task = LinkTask {
            name: name.clone(),
            addr,
            vote_timeout,
            cluster_id,
            commands: rx,
            acks,
            status: status.clone(),
            pending: VecDeque::new(),
            stream: None,
            backoff: MIN_BACKOFF,
            retry_at: None,
            probe_at: Some(Instant::now()),
            reachable: false,
            probing: None,
            trace,
        };
        tokio::spawn(task.run().in_current_span());
        Link {
            name,
            commands,
            status,
        }
    }

    /// The follower's name (its address as given).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends a PREPARE; the answer comes within about the vote timeout.
    pub fn prepare(&self, msg: rpc::LeaderMsg) -> oneshot::Receiver<VoteResult> {
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError(Command::Prepare { reply, .. })) =
            self.commands.send(Command::Prepare { msg, reply })
        {
            let _ = reply.send(VoteResult::NotSent("link stopped".into()));
        }
        answer
    }

    /// Queues a decision; it is delivered (and retransmitted) until the follower ACKs it.
    pub fn decide(&self, msg: rpc::LeaderMsg) {
        let _ = self.commands.send(Command::Decide { msg });
    }

    /// A snapshot of the link's status.
    pub fn status(&self) -> LinkStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

enum Waiter {
    Vote(Option<oneshot::Sender<VoteResult>>),
    Decision,
}

struct Outstanding {
    txid: String,
    deadline: Instant,
    waiter: Waiter,
}

/// The call that opens a stream, resolving when the follower sends response headers.
type Opening = Pin<
    Box<
        dyn Future<Output = Result<tonic::Response<Streaming<rpc::Response>>, tonic::Status>>
            + Send,
    >,
>;

struct OpenStream {
    requests: mpsc::UnboundedSender<rpc::LeaderMsg>,
    /// Until the follower's response headers arrive (a classic peer sends them only with
    /// its first reply), the call; messages are queued on `requests` meanwhile.
    opening: Option<Opening>,
    responses: Option<Streaming<rpc::Response>>,
    outstanding: VecDeque<Outstanding>,
}

/// What arrived on the stream.
enum Incoming {
    Opened(Box<Result<tonic::Response<Streaming<rpc::Response>>, tonic::Status>>),
    Response(Option<Result<rpc::Response, tonic::Status>>),
}

struct LinkTask {
    name: String,
    addr: Address,
    vote_timeout: Duration,
    cluster_id: String,
    commands: mpsc::UnboundedReceiver<Command>,
    acks: mpsc::UnboundedSender<Ack>,
    status: Arc<Mutex<LinkStatus>>,
    /// Decisions not yet ACKed, in the order they were decided.
    pending: VecDeque<rpc::LeaderMsg>,
    stream: Option<OpenStream>,
    backoff: Duration,
    retry_at: Option<Instant>,
    /// While no stream is open: when to check next that the follower can be reached.
    probe_at: Option<Instant>,
    /// The last probe connected.
    reachable: bool,
    /// A probe under way.
    probing: Option<oneshot::Receiver<Result<(), String>>>,
    trace: Arc<Trace>,
}

enum Event {
    Command(Option<Command>),
    Incoming(Incoming),
    Timeout,
    Retry,
    Probe,
    Probed(Result<(), String>),
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl LinkTask {
    async fn run(mut self) {
        loop {
            let deadline = self
                .stream
                .as_ref()
                .and_then(|s| s.outstanding.front().map(|o| o.deadline));
            let event = tokio::select! {
                command = self.commands.recv() => Event::Command(command),
                incoming = async {
                    match self.stream.as_mut() {
                        Some(OpenStream { opening: Some(call), .. }) => Incoming::Opened(Box::new(call.await)),
                        Some(OpenStream { responses: Some(r), .. }) => {
                            Incoming::Response(r.message().await.transpose())
                        }
                        _ => std::future::pending().await,
                    }
                } => Event::Incoming(incoming),
                _ = sleep_until(deadline) => Event::Timeout,
                _ = sleep_until(self.retry_at) => Event::Retry,
                _ = sleep_until(self.probe_at) => Event::Probe,
                probed = async {
                    match self.probing.as_mut() {
                        Some(result) => result.await.unwrap_or_else(|_| Err("probe stopped".into())),
                        None => std::future::pending().await,
                    }
                } => Event::Probed(probed),
            };
            match event {
                Event::Command(None) => return,
                Event::Command(Some(Command::Prepare { msg, reply })) => {
                    let txid = msg.txid.clone();
                    self.send(vec![(msg, Waiter::Vote(Some(reply)))], &txid)
                        .await;
                }
                Event::Command(Some(Command::Decide { msg })) => {
                    self.pending.push_back(msg.clone());
                    if self.stream.is_some() {
                        let txid = msg.txid.clone();
                        self.send(vec![(msg, Waiter::Decision)], &txid).await;
                    } else if self.retry_at.is_none() {
                        self.retry_at = Some(Instant::now());
                    }
                }
                Event::Incoming(Incoming::Opened(opened)) => match *opened {
                    Ok(response) => {
                        tracing::debug!(follower = %self.name, "stream open");
                        if let Some(stream) = self.stream.as_mut() {
                            stream.opening = None;
                            stream.responses = Some(response.into_inner());
                        }
                    }
                    Err(status) => self.on_stream_error(&status),
                },
                Event::Incoming(Incoming::Response(Some(Err(status)))) => {
                    self.on_stream_error(&status)
                }
                Event::Incoming(Incoming::Response(Some(Ok(response)))) => {
                    self.on_response(response)
                }
                Event::Incoming(Incoming::Response(None)) => {
                    self.reset("the follower ended the stream".into())
                }
                Event::Timeout => self.reset(format!("no answer within {:?}", self.vote_timeout)),
                Event::Probe => self.start_probe(),
                Event::Probed(result) => self.probed(result),
                Event::Retry => {
                    self.retry_at = None;
                    if self.stream.is_none() && !self.pending.is_empty() {
                        self.send(Vec::new(), "").await;
                    }
                }
            }
            self.publish_status();
        }
    }

    /// Sends messages, opening a stream (with the pending decisions first) if none is open.
    async fn send(&mut self, messages: Vec<(rpc::LeaderMsg, Waiter)>, what: &str) {
        let deadline = Instant::now() + self.vote_timeout;
        if let Some(stream) = self.stream.as_mut() {
            for (msg, waiter) in messages {
                trace_sent(&self.trace, &self.name, &msg, &waiter);
                stream.outstanding.push_back(Outstanding {
                    txid: msg.txid.clone(),
                    deadline,
                    waiter,
                });
                if stream.requests.send(msg).is_err() {
                    self.reset("stream closed".into());
                    return;
                }
            }
            return;
        }
        let channel = match net::connect(&self.addr, self.vote_timeout).await {
            Ok(channel) => channel,
            Err(e) => {
                for (msg, waiter) in messages {
                    if let Waiter::Vote(Some(reply)) = waiter {
                        self.trace
                            .emit(&msg.txid, "vote", Some(&self.name), "none: unreachable");
                        let _ = reply.send(VoteResult::NotSent(format!("unreachable: {e}")));
                    }
                }
                self.failed(e);
                return;
            }
        };
        // Queue the first messages before awaiting response headers (classic peers send
        // headers only with their first reply). Pending decisions go first.
        let (requests, rx) = mpsc::unbounded_channel();
        let mut outstanding = VecDeque::new();
        let decisions: Vec<_> = self
            .pending
            .iter()
            .cloned()
            .map(|m| (m, Waiter::Decision))
            .collect();
        for (msg, waiter) in decisions.into_iter().chain(messages) {
            trace_sent(&self.trace, &self.name, &msg, &waiter);
            outstanding.push_back(Outstanding {
                txid: msg.txid.clone(),
                deadline,
                waiter,
            });
            let _ = requests.send(msg);
        }
        let mut client = rpc::two_phase_commit_client::TwoPhaseCommitClient::new(channel)
            .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
        // The headers are awaited by the event loop, not here, so later messages go on
        // the stream at once too (the vote timeout still bounds the wait).
        let opening: Opening =
            Box::pin(async move { client.tpc_msg(UnboundedReceiverStream::new(rx)).await });
        tracing::debug!(follower = %self.name, %what, "opening a stream");
        self.stream = Some(OpenStream {
            requests,
            opening: Some(opening),
            responses: None,
            outstanding,
        });
    }

    fn on_response(&mut self, response: rpc::Response) {
        if !response.cluster_id.is_empty() && response.cluster_id != self.cluster_id {
            let why = format!(
                "refusing follower {}: it belongs to cluster {}, this leader's cluster is {}",
                self.name, response.cluster_id, self.cluster_id
            );
            tracing::error!("{why}");
            self.reset(why);
            return;
        }
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        let action = rpc::Action::try_from(response.action).ok();
        // A reply with an id answers the message of that id *and kind* (a duplicated
        // vote arriving while the decision waits for its ACK answers nothing); one
        // without answers the oldest unanswered message (a classic peer).
        let position = if response.txid.is_empty() {
            (!stream.outstanding.is_empty()).then_some(0)
        } else {
            let is_vote = matches!(action, Some(rpc::Action::Commit | rpc::Action::Abort));
            stream.outstanding.iter().position(|o| {
                o.txid == response.txid && matches!(o.waiter, Waiter::Vote(_)) == is_vote
            })
        };
        let Some(entry) = position.and_then(|p| stream.outstanding.remove(p)) else {
            tracing::debug!(follower = %self.name, txid = %response.txid, ?action, "reply to no outstanding message (a duplicate?); ignored");
            return;
        };
        self.backoff = MIN_BACKOFF;
        if let Ok(mut s) = self.status.lock() {
            s.last_contact = Some(std::time::SystemTime::now());
        }
        match entry.waiter {
            Waiter::Vote(reply) => {
                let vote = match action {
                    Some(rpc::Action::Commit) => Outcome::Commit,
                    Some(rpc::Action::Abort) => Outcome::Abort,
                    other => {
                        tracing::warn!(follower = %self.name, txid = %entry.txid, ?other, "answer to a PREPARE is not a vote; counted as ABORT");
                        Outcome::Abort
                    }
                };
                self.trace
                    .emit(&entry.txid, "vote", Some(&self.name), vote.as_str());
                if let Some(reply) = reply {
                    let _ = reply.send(VoteResult::Vote(vote));
                }
            }
            Waiter::Decision => {
                if action != Some(rpc::Action::Ack) {
                    tracing::warn!(follower = %self.name, txid = %entry.txid, ?action, "answer to a decision is not ACK; will resend");
                    self.reset("decision not ACKed".into());
                    return;
                }
                self.trace.emit(&entry.txid, "ack", Some(&self.name), "");
                self.pending.retain(|m| m.txid != entry.txid);
                let _ = self.acks.send(Ack {
                    follower: self.name.clone(),
                    txid: entry.txid,
                });
            }
        }
    }

    fn on_stream_error(&mut self, status: &tonic::Status) {
        self.reset(describe_status(&self.name, status));
    }

    /// Drops the stream: unanswered votes count as no answer, undelivered decisions stay
    /// pending and a reconnection is scheduled.
    fn reset(&mut self, why: String) {
        let outstanding = self
            .stream
            .take()
            .map(|s| s.outstanding)
            .unwrap_or_default();
        self.abandon(outstanding, why);
    }

    fn abandon(&mut self, outstanding: VecDeque<Outstanding>, why: String) {
        for entry in outstanding {
            if let Waiter::Vote(Some(reply)) = entry.waiter {
                self.trace.emit(
                    &entry.txid,
                    "vote",
                    Some(&self.name),
                    format!("none: {why}"),
                );
                let _ = reply.send(VoteResult::NoAnswer(why.clone()));
            }
        }
        self.failed(why);
    }

    fn failed(&mut self, why: String) {
        self.reachable = false;
        let changed = self
            .status
            .lock()
            .map(|s| s.last_error.as_deref() != Some(why.as_str()))
            .unwrap_or(true);
        if changed {
            tracing::warn!(follower = %self.name, reason = %why, "follower link down");
        }
        if let Ok(mut s) = self.status.lock() {
            s.last_error = Some(why);
        }
        if !self.pending.is_empty() {
            self.retry_at = Some(Instant::now() + self.backoff);
        }
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// Starts a connection probe (a TCP and HTTP/2 handshake, no stream and no message)
    /// to learn whether an idle follower is up, for status and metrics: every second
    /// while no stream is open. It runs aside, so that a slow connect never holds up
    /// the link's messages.
    fn start_probe(&mut self) {
        self.probe_at = None;
        if self.stream.is_some() || self.probing.is_some() {
            return;
        }
        let (done, result) = oneshot::channel();
        let addr = self.addr.clone();
        let timeout = self.vote_timeout.min(PROBE_EVERY);
        tokio::spawn(async move {
            let _ = done.send(net::connect(&addr, timeout).await.map(|_| ()));
        });
        self.probing = Some(result);
    }

    fn probed(&mut self, result: Result<(), String>) {
        self.probing = None;
        if self.stream.is_none() {
            self.reachable = result.is_ok();
            if let Ok(mut s) = self.status.lock() {
                match result {
                    Ok(()) => {
                        s.last_contact = Some(std::time::SystemTime::now());
                        s.last_error = None;
                    }
                    Err(e) => s.last_error = Some(e),
                }
            }
        }
        self.probe_at = Some(Instant::now() + PROBE_EVERY);
    }

    fn publish_status(&mut self) {
        if self.stream.is_none() && self.probe_at.is_none() && self.probing.is_none() {
            self.probe_at = Some(Instant::now() + PROBE_EVERY);
        }
        if self.stream.is_some() {
            self.probe_at = None;
        }
        if let Ok(mut s) = self.status.lock() {
            let connected = self.stream.is_some() || self.reachable;
            if connected != s.connected {
                crate::metrics::FOLLOWERS_CONNECTED.add(if connected { 1 } else { -1 });
            }
            s.connected = connected;
            s.pending_decisions = self.pending.len();
            if s.connected {
                s.last_error = None;
            }
        }
    }
}

/// Records a message going to a follower.
fn trace_sent(trace: &Trace, follower: &str, msg: &rpc::LeaderMsg, waiter: &Waiter) {
    match waiter {
        Waiter::Vote(_) => trace.emit(&msg.txid, "prepare", Some(follower), ""),
        Waiter::Decision => {
            let outcome = if msg.action == rpc::Action::Commit as i32 {
                "commit"
            } else {
                "abort"
            };
            trace.emit(&msg.txid, "decision", Some(follower), outcome);
        }
    }
}

fn describe_status(follower: &str, status: &tonic::Status) -> String {
    if status.code() == Code::FailedPrecondition {
        tracing::error!(%follower, reason = %status.message(), "follower refused this leader");
    }
    format!("{:?}: {}", status.code(), status.message())
}
