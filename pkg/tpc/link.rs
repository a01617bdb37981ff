//! The leader's link to one follower, at runtime: a task that carries out the
//! [`LinkEffect`]s of that follower's [`LinkCore`](super::link_core::LinkCore) on a real
//! `TPCMsg` stream and reports what comes back. What to send, when to give a stream up
//! and which reply answers what are the core's rules; this task connects, encodes and
//! forwards.
//!
//! - **Opening.** A stream is opened by connecting (bounded by the vote timeout) and
//!   calling `TPCMsg`. A connection that fails is reported as such
//!   ([`StreamEvent::OpenFailed`]: nothing sent on it arrived); a call that fails after
//!   it connected as an ended stream.
//! - **Classic peers send response headers only with their first reply**, so messages
//!   are queued on the request stream while the call waits for the headers, which the
//!   task awaits beside everything else: sending is never gated on them.
//! - **Frames.** A send marked batched is one wire frame (the first message carrying
//!   the rest); otherwise every message is a wire message of its own.
//! - **Probes.** While no stream is open, the task checks every second with a
//!   connection only (never a message) whether the follower is up, so that `tpc status`
//!   is current. There are no heartbeats on the stream, and HTTP/2 keepalive pings are
//!   rare (see [`crate::net`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Code, Streaming};
use tracing::Instrument;

use super::coordinator::{Event, StreamEvent};
use super::link_core::{LinkEffect, StreamId};
use super::message::{frame_of_messages, replies_of_frame};
use crate::limits::MAX_GRPC_MESSAGE_BYTES;
use crate::net::{self, Address};
use crate::proto::rpc;

/// How often an idle link without a stream checks that its follower is up.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// What the runtime knows of a follower's reachability (the core knows the rest).
#[derive(Clone, Debug, Default)]
pub struct LinkStatus {
    /// A stream to the follower is connected, or (while none is open) the last
    /// connection probe succeeded.
    pub connected: bool,
    /// Why the last probe failed.
    pub probe_error: Option<String>,
    /// When the last probe succeeded.
    pub probed: Option<SystemTime>,
}

/// The coordinator's handle on one follower's link task.
#[derive(Clone)]
pub struct Link {
    name: String,
    commands: mpsc::UnboundedSender<LinkEffect>,
    status: Arc<Mutex<LinkStatus>>,
}

impl Link {
    /// Starts the link task for follower number `index` at `addr`, named `name` (its
    /// address as written on the command line); it reports on `events`.
    pub fn spawn(
        index: usize,
        name: String,
        addr: Address,
        vote_timeout: Duration,
        events: mpsc::UnboundedSender<Event>,
    ) -> Link {
        let (commands, rx) = mpsc::unbounded_channel();
        let status = Arc::new(Mutex::new(LinkStatus::default()));
        let task = LinkTask {
            index,
            name: name.clone(),
            addr,
            vote_timeout,
            events,
            status: status.clone(),
            stream: None,
            probe_at: Some(Instant::now()),
            probing: None,
            reachable: false,
        };
        tokio::spawn(task.run(rx).in_current_span());
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

    /// Hands the task an effect of the link's core.
    pub fn carry_out(&self, effect: LinkEffect) {
        let _ = self.commands.send(effect);
    }

    /// A snapshot of what the runtime knows.
    pub fn status(&self) -> LinkStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// A connection under way.
type Connecting = Pin<Box<dyn Future<Output = Result<tonic::transport::Channel, String>> + Send>>;
/// A call under way, resolving when the follower sends response headers.
type Calling = Pin<
    Box<
        dyn Future<Output = Result<tonic::Response<Streaming<rpc::Response>>, tonic::Status>>
            + Send,
    >,
>;

/// Where a stream is.
enum Phase {
    /// Connecting; the messages sent meanwhile wait in `requests`' receiver.
    Connecting(Connecting, Option<mpsc::UnboundedReceiver<rpc::LeaderMsg>>),
    /// Connected; the call waits for the follower's response headers.
    Calling(Calling),
    /// Replies flow.
    Open(Box<Streaming<rpc::Response>>),
}

struct OpenStream {
    id: StreamId,
    requests: mpsc::UnboundedSender<rpc::LeaderMsg>,
    phase: Phase,
}

struct LinkTask {
    index: usize,
    name: String,
    addr: Address,
    vote_timeout: Duration,
    events: mpsc::UnboundedSender<Event>,
    status: Arc<Mutex<LinkStatus>>,
    stream: Option<OpenStream>,
    /// While no stream is open: when to check next that the follower can be reached.
    probe_at: Option<Instant>,
    /// A probe under way.
    probing: Option<oneshot::Receiver<Result<(), String>>>,
    /// The last probe connected.
    reachable: bool,
}

enum Wake {
    Command(Option<LinkEffect>),
    Connected(Result<tonic::transport::Channel, String>),
    Opened(Result<tonic::Response<Streaming<rpc::Response>>, tonic::Status>),
    Frame(Option<Result<rpc::Response, tonic::Status>>),
    Probe,
    Probed(Result<(), String>),
}

impl LinkTask {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<LinkEffect>) {
        loop {
            let wake = tokio::select! {
                command = commands.recv() => Wake::Command(command),
                wake = async {
                    match self.stream.as_mut().map(|s| &mut s.phase) {
                        Some(Phase::Connecting(connect, _)) => Wake::Connected(connect.await),
                        Some(Phase::Calling(call)) => Wake::Opened(call.await),
                        Some(Phase::Open(responses)) => {
                            Wake::Frame(responses.message().await.transpose())
                        }
                        None => std::future::pending().await,
                    }
                } => wake,
                _ = sleep_until(self.probe_at) => Wake::Probe,
                probed = async {
                    match self.probing.as_mut() {
                        Some(result) => result.await.unwrap_or_else(|_| Err("probe stopped".into())),
                        None => std::future::pending().await,
                    }
                } => Wake::Probed(probed),
            };
            match wake {
                Wake::Command(None) => return,
                Wake::Command(Some(effect)) => self.command(effect),
                Wake::Connected(Ok(channel)) => self.call(channel),
                Wake::Connected(Err(why)) => {
                    self.lost(StreamEvent::OpenFailed(format!("unreachable: {why}")))
                }
                Wake::Opened(Ok(response)) => {
                    tracing::debug!(follower = %self.name, "stream open");
                    if let Some(stream) = self.stream.as_mut() {
                        stream.phase = Phase::Open(Box::new(response.into_inner()));
                    }
                }
                Wake::Opened(Err(status)) | Wake::Frame(Some(Err(status))) => {
                    self.lost(StreamEvent::Ended(describe_status(&self.name, &status)))
                }
                Wake::Frame(Some(Ok(frame))) => {
                    if let Some(stream) = &self.stream {
                        self.report(stream.id, StreamEvent::Replies(replies_of_frame(frame)));
                    }
                }
                Wake::Frame(None) => {
                    self.lost(StreamEvent::Ended("the follower ended the stream".into()))
                }
                Wake::Probe => self.start_probe(),
                Wake::Probed(result) => self.probed(result),
            }
            self.publish_status();
        }
    }

    fn command(&mut self, effect: LinkEffect) {
        match effect {
            LinkEffect::Open { stream } => self.open(stream),
            LinkEffect::Send {
                stream,
                messages,
                batched,
            } => {
                let Some(open) = self.stream.as_ref().filter(|s| s.id == stream) else {
                    return;
                };
                let frames: Vec<rpc::LeaderMsg> = if batched {
                    frame_of_messages(messages).into_iter().collect()
                } else {
                    messages.into_iter().map(rpc::LeaderMsg::from).collect()
                };
                for frame in frames {
                    if open.requests.send(frame).is_err() {
                        self.lost(StreamEvent::Ended("stream closed".into()));
                        return;
                    }
                }
            }
            LinkEffect::Close { stream } => {
                if self.stream.as_ref().is_some_and(|s| s.id == stream) {
                    self.stream = None;
                }
            }
        }
    }

    /// Starts connecting a new stream (the one before, if any, ends); messages sent
    /// meanwhile queue on it.
    fn open(&mut self, id: StreamId) {
        let (requests, rx) = mpsc::unbounded_channel();
        let addr = self.addr.clone();
        let timeout = self.vote_timeout;
        let connect: Connecting = Box::pin(async move { net::connect(&addr, timeout).await });
        tracing::debug!(follower = %self.name, stream = id, "opening a stream");
        self.stream = Some(OpenStream {
            id,
            requests,
            phase: Phase::Connecting(connect, Some(rx)),
        });
    }

    /// Connected: calls `TPCMsg` with the messages queued so far and those to come. The
    /// call resolves when the follower sends response headers, which the event loop
    /// awaits: the messages go out before that (classic peers answer headers with their
    /// first reply).
    fn call(&mut self, channel: tonic::transport::Channel) {
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        let Phase::Connecting(_, rx) = &mut stream.phase else {
            return;
        };
        let Some(rx) = rx.take() else {
            return;
        };
        let mut client = rpc::two_phase_commit_client::TwoPhaseCommitClient::new(channel)
            .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
        stream.phase = Phase::Calling(Box::pin(async move {
            client.tpc_msg(UnboundedReceiverStream::new(rx)).await
        }));
    }

    /// The current stream is gone; the core hears why.
    fn lost(&mut self, event: StreamEvent) {
        let Some(stream) = self.stream.take() else {
            return;
        };
        let why = match &event {
            StreamEvent::Ended(why) | StreamEvent::OpenFailed(why) => why.as_str(),
            StreamEvent::Replies(_) => "",
        };
        let changed = self
            .status
            .lock()
            .map(|s| s.probe_error.as_deref() != Some(why))
            .unwrap_or(true);
        if changed {
            tracing::warn!(follower = %self.name, reason = %why, "follower link down");
        }
        if let Ok(mut s) = self.status.lock() {
            s.probe_error = Some(why.to_string());
        }
        self.reachable = false;
        self.report(stream.id, event);
    }

    fn report(&self, stream: StreamId, event: StreamEvent) {
        let _ = self.events.send(Event::Stream {
            follower: self.index,
            stream,
            event,
        });
    }

    /// Starts a connection probe (a TCP and HTTP/2 handshake, no stream and no message)
    /// to learn whether an idle follower is up, for status and metrics: every second
    /// while no stream is open. It runs aside, so a slow connect never holds messages up.
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
                        s.probed = Some(SystemTime::now());
                        s.probe_error = None;
                    }
                    Err(e) => s.probe_error = Some(e),
                }
            }
        }
        self.probe_at = Some(Instant::now() + PROBE_EVERY);
    }

    fn publish_status(&mut self) {
        if self.stream.is_some() {
            self.probe_at = None;
        } else if self.probe_at.is_none() && self.probing.is_none() {
            self.probe_at = Some(Instant::now() + PROBE_EVERY);
        }
        let Ok(mut s) = self.status.lock() else {
            return;
        };
        let connected = match &self.stream {
            // Connected once the call is under way: headers may wait for a first reply.
            Some(stream) if !matches!(stream.phase, Phase::Connecting(..)) => true,
            Some(_) => s.connected,
            None => self.reachable,
        };
        if connected != s.connected {
            crate::metrics::FOLLOWERS_CONNECTED.add(if connected { 1 } else { -1 });
        }
        s.connected = connected;
        if connected {
            s.probe_error = None;
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn describe_status(follower: &str, status: &tonic::Status) -> String {
    if status.code() == Code::FailedPrecondition {
        tracing::error!(%follower, reason = %status.message(), "follower refused this leader");
    }
    format!("{:?}: {}", status.code(), status.message())
}
