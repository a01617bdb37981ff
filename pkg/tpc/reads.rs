//! The leader's forwarded reads: many at once on one long-lived stream per follower.
//!
//! A unary `api.Get` per read costs the leader a whole HTTP/2 request (headers to encode
//! and decode, a new stream, a task hop through the channel's buffer), and the follower
//! as much again: more CPU than the read itself. `rpc.FollowerReads/Reads` carries each
//! read as one message on a stream that stays open, with the reply matched by id, so the
//! reads of many clients share a connection's writes. A follower that does not serve it
//! (classic tooling) answers `UNIMPLEMENTED` when the stream opens; that follower is then
//! read with `api.Get`, as the classic leader does, and asked again only after
//! [`REPROBE_AFTER`] (it may have been upgraded meanwhile).
//!
//! A stream that fails or ends fails the reads waiting on it (the caller tries another
//! follower); the next read opens a new one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tracing::Instrument;

use crate::limits::MAX_GRPC_MESSAGE_BYTES;
use crate::proto::{api, rpc};

/// A read's answer: the value and its version, as `api.KeyValueAPI/Get` answers.
type ReadResult = std::result::Result<api::Response, Status>;
/// A read-only transaction's answer, as `api.KeyValueAPI/Txn` answers.
type TxnResult = std::result::Result<api::TxnResponse, Status>;
/// The follower's reply to one request on the stream (a status when it is not OK).
type ReplyResult = std::result::Result<rpc::ReadReply, Status>;

/// How long a follower that does not serve `Reads` is read with `Get` before the leader
/// tries the stream again.
pub const REPROBE_AFTER: Duration = Duration::from_secs(60);

/// Reads one follower's copy for the leader.
pub struct FollowerReader {
    unary: api::key_value_api_client::KeyValueApiClient<Channel>,
    streaming: rpc::follower_reads_client::FollowerReadsClient<Channel>,
    state: Mutex<Mode>,
    /// The switch to unary `Get` was logged.
    said_unary: AtomicBool,
}

enum Mode {
    /// No stream open: the next read opens one.
    Idle,
    Streaming(Arc<ReadStream>),
    /// The follower did not serve `Reads` at this instant: unary `Get` for a while.
    Unary(Instant),
}

/// One open `Reads` stream and the reads waiting for its replies.
struct ReadStream {
    requests: mpsc::UnboundedSender<rpc::ReadRequest>,
    /// `None` once the stream has ended: nothing more will be answered.
    waiting: Mutex<Option<HashMap<u64, oneshot::Sender<ReplyResult>>>>,
    next_id: AtomicU64,
}

impl FollowerReader {
    /// A reader over `channel` (shared with nothing else that needs ordering).
    pub fn new(channel: Channel) -> Arc<FollowerReader> {
        Arc::new(FollowerReader {
            unary: api::key_value_api_client::KeyValueApiClient::new(channel.clone())
                .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES),
            streaming: rpc::follower_reads_client::FollowerReadsClient::new(channel)
                .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES),
            state: Mutex::new(Mode::Idle),
            said_unary: AtomicBool::new(false),
        })
    }

    /// Reads `key` from this follower, answering as its `Get` would, if it is `member`
    /// (empty: whoever it is); a follower that does not answer within `timeout` gets
    /// `DEADLINE_EXCEEDED`.
    pub async fn get(self: &Arc<Self>, key: &str, member: &str, timeout: Duration) -> ReadResult {
        if let Some(stream) = self.stream() {
            let request = rpc::ReadRequest {
                key: key.to_string(),
                member_id: member.to_string(),
                ..Default::default()
            };
            let answer = tokio::time::timeout(timeout, stream.ask(request)).await;
            match answer {
                Ok(Err(status)) if status.code() == Code::Unimplemented => {}
                Ok(result) => {
                    return result.map(|reply| api::Response {
                        value: reply.value,
                        version: reply.version,
                    })
                }
                Err(_) => return Err(no_answer(timeout)),
            }
        }
        let mut unary = self.unary.clone();
        let mut request = Request::new(api::GetRequest {
            key: key.to_string(),
        });
        request.set_timeout(timeout);
        match tokio::time::timeout(timeout, unary.get(request)).await {
            Ok(answer) => answer.map(tonic::Response::into_inner),
            Err(_) => Err(no_answer(timeout)),
        }
    }

    /// Runs the read-only transaction `txn` on one consistent snapshot of this
    /// follower's copies of its keys, if it is `member` (empty: whoever it is). A
    /// follower that does not serve `Reads` (classic tooling) can't:
    /// `FAILED_PRECONDITION`.
    pub async fn txn(
        self: &Arc<Self>,
        txn: api::TxnRequest,
        member: &str,
        timeout: Duration,
    ) -> TxnResult {
        let classic = || {
            Status::failed_precondition(
                "the follower is a classic peer: it can't read several keys on one snapshot",
            )
        };
        let Some(stream) = self.stream() else {
            return Err(classic());
        };
        let request = rpc::ReadRequest {
            txn: Some(txn),
            member_id: member.to_string(),
            ..Default::default()
        };
        match tokio::time::timeout(timeout, stream.ask(request)).await {
            Ok(Err(status)) if status.code() == Code::Unimplemented => Err(classic()),
            Ok(result) => result.and_then(|reply| {
                reply
                    .txn
                    .ok_or_else(|| Status::internal("the follower's answer holds no transaction"))
            }),
            Err(_) => Err(no_answer(timeout)),
        }
    }

    /// The open stream, opened now if there is none; `None` for a unary-only follower.
    fn stream(self: &Arc<Self>) -> Option<Arc<ReadStream>> {
        let mut mode = lock(&self.state);
        match &*mode {
            Mode::Streaming(stream) => Some(stream.clone()),
            Mode::Unary(since) if since.elapsed() < REPROBE_AFTER => None,
            Mode::Idle | Mode::Unary(_) => {
                let stream = self.open();
                *mode = Mode::Streaming(stream.clone());
                Some(stream)
            }
        }
    }

    /// Opens a stream; its task hands each reply to the read waiting for it.
    fn open(self: &Arc<Self>) -> Arc<ReadStream> {
        let (requests, outbound) = mpsc::unbounded_channel();
        let stream = Arc::new(ReadStream {
            requests,
            waiting: Mutex::new(Some(HashMap::new())),
            next_id: AtomicU64::new(1),
        });
        let me = self.clone();
        let replies = stream.clone();
        tokio::spawn(
            async move {
                let mut client = me.streaming.clone();
                let ended = match client.reads(UnboundedReceiverStream::new(outbound)).await {
                    Ok(response) => {
                        let mut inbound = response.into_inner();
                        loop {
                            match inbound.message().await {
                                Ok(Some(reply)) => replies.answer(reply),
                                Ok(None) => break Status::unavailable("read stream ended"),
                                Err(status) => break status,
                            }
                        }
                    }
                    Err(status) => status,
                };
                let mut mode = lock(&me.state);
                if matches!(&*mode, Mode::Streaming(s) if Arc::ptr_eq(s, &replies)) {
                    *mode = if ended.code() == Code::Unimplemented {
                        // Said once; the probes every REPROBE_AFTER are quieter.
                        if !me.said_unary.swap(true, Ordering::Relaxed) {
                            tracing::info!(
                                "follower does not serve rpc.FollowerReads; reading it with Get"
                            );
                        }
                        Mode::Unary(Instant::now())
                    } else {
                        Mode::Idle
                    };
                }
                drop(mode);
                replies.end(ended);
            }
            .in_current_span(),
        );
        stream
    }
}

impl ReadStream {
    /// Sends `request` (its id set here) and waits for its reply.
    async fn ask(&self, mut request: rpc::ReadRequest) -> ReplyResult {
        let (tx, rx) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        request.id = id;
        {
            let mut waiting = lock(&self.waiting);
            let Some(waiting) = waiting.as_mut() else {
                return Err(Status::unavailable("read stream ended"));
            };
            waiting.insert(id, tx);
        }
        let forget = Forget { stream: self, id };
        if self.requests.send(request).is_err() {
            return Err(Status::unavailable("read stream ended"));
        }
        let answer = rx
            .await
            .unwrap_or_else(|_| Err(Status::unavailable("read stream ended")));
        // Answered, or the stream ended: either way the id has left `waiting` already,
        // so the guard (a second lock per read) has nothing to do.
        std::mem::forget(forget);
        answer
    }

    fn answer(&self, reply: rpc::ReadReply) {
        let waiter = lock(&self.waiting)
            .as_mut()
            .and_then(|waiting| waiting.remove(&reply.id));
        // No waiter: the read timed out and left, or the follower sent an id we never did.
        if let Some(waiter) = waiter {
            let result = match reply.code {
                0 => Ok(reply),
                code => Err(Status::new(Code::from(code as i32), reply.message)),
            };
            let _ = waiter.send(result);
        }
    }

    /// The stream is over: every read still waiting gets `status`.
    fn end(&self, status: Status) {
        let waiting = lock(&self.waiting).take().unwrap_or_default();
        for (_, waiter) in waiting {
            let _ = waiter.send(Err(status.clone()));
        }
    }

    fn forget(&self, id: u64) {
        if let Some(waiting) = lock(&self.waiting).as_mut() {
            waiting.remove(&id);
        }
    }
}

/// Removes a read that gave up (timed out, or its client went away) from the waiting.
struct Forget<'a> {
    stream: &'a ReadStream,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.stream.forget(self.id);
    }
}

fn no_answer(timeout: Duration) -> Status {
    Status::deadline_exceeded(format!("no answer within {timeout:?}"))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
