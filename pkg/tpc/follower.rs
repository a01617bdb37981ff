//! The follower's runtime: the gRPC services and the thread that owns the protocol state.
//!
//! One thread, the *state owner* (`follower_state.rs`), replays the journal, then takes
//! the leader messages of every stream, runs them through [`FollowerCore`] and carries
//! out the effects in write-ahead order, in batches that share one fsync. Each incoming
//! stream has a task that forwards its messages in arrival order without waiting for
//! their answers (the leader keeps many in flight), and a task that sends the answers
//! back in that same order; an error answer ends the stream.
//!
//! `Get` runs in the gRPC handler: it asks the core (behind a short-held mutex) whether
//! the key is locked and otherwise reads the file. The leader's forwarded reads take the
//! same path, many in flight on one `rpc.FollowerReads/Reads` stream, answered in the
//! order they come. The core makes a lock visible before
//! the vote is sent, and releases it only after the decided value is applied, so a direct
//! read of a follower is never stale (DESIGN §1.3). Until replay is done `Get` answers
//! `UNAVAILABLE`, and incoming streams are held: their messages wait in the queue.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::follower_core::{FollowerCore, StreamId};
use super::follower_state::StateOwner;
pub use super::follower_state::CHECKPOINT_RECORDS;
use super::message::LeaderMessage;
use super::records::{open_journal, FollowerRecord};
use crate::dirlock::DirLock;
use crate::kvstore::KvStore;
use crate::limits::{self, MAX_GRPC_MESSAGE_BYTES};
use crate::metrics::RequestTimer;
use crate::net::Listener;
use crate::proto::{api, rpc};
use crate::server;
use crate::{Error, Result};

/// Where a follower keeps its data.
#[derive(Clone, Debug)]
pub struct FollowerConfig {
    /// The journal file.
    pub journal_path: PathBuf,
    /// The key-value directory.
    pub kv_dir: PathBuf,
}

/// State shared between the gRPC handlers and the state owner.
pub(super) struct Shared {
    core: Mutex<FollowerCore>,
    pub(super) kv: KvStore,
    pub(super) ready: AtomicBool,
    /// Also `ready`, for those who wait for it (the health report).
    pub(super) ready_signal: watch::Sender<bool>,
    /// Set when the node starts shutting down: open leader streams are ended (they
    /// would otherwise hold the graceful shutdown up forever).
    stopping: watch::Sender<bool>,
    next_stream: AtomicU64,
}

impl Shared {
    pub(super) fn core(&self) -> MutexGuard<'_, FollowerCore> {
        // A panic while holding the lock would be a bug; the state is still the best we have.
        self.core
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// How many of one stream's messages may wait for their answers at once.
const PIPELINE_DEPTH: usize = 1024;

type Answer = std::result::Result<rpc::Response, Status>;

/// What the streams hand the state owner, in arrival order.
pub(super) enum Command {
    Message {
        stream: StreamId,
        msg: LeaderMessage,
        reply: oneshot::Sender<Answer>,
    },
    StreamClosed(StreamId),
}

/// A follower with its directories locked and its journal read, ready to serve.
pub struct Follower {
    shared: Arc<Shared>,
    inbox: mpsc::Sender<Command>,
    /// Resolves when the state owner stops (with its error, if it failed).
    owner_done: oneshot::Receiver<Result<()>>,
    http: Option<tokio::net::TcpListener>,
    _locks: (DirLock, DirLock),
}

impl Follower {
    /// Locks the directories, opens the store and the journal (a corrupt journal stops
    /// the start here), and starts the state owner, which replays the journal.
    pub fn open(config: &FollowerConfig) -> Result<Follower> {
        let (journal_lock, journal, records) =
            open_journal::<FollowerRecord>(&config.journal_path)?;
        std::fs::create_dir_all(&config.kv_dir).map_err(|source| Error::Io {
            path: config.kv_dir.clone(),
            source,
        })?;
        let kv_lock = DirLock::acquire(&config.kv_dir.join(".lock"))?;
        let kv = KvStore::open(&config.kv_dir)?;
        // A follower that took part in any transaction, or holds data, is no newcomer.
        let has_data = !kv.is_empty()? || !records.is_empty();
        let shared = Arc::new(Shared {
            core: Mutex::new(FollowerCore::new(has_data)),
            kv,
            ready: AtomicBool::new(false),
            ready_signal: watch::Sender::new(false),
            stopping: watch::Sender::new(false),
            next_stream: AtomicU64::new(1),
        });
        let (inbox, commands) = mpsc::channel(1024);
        let owner_shared = shared.clone();
        let (done, owner_done) = oneshot::channel();
        let span = tracing::Span::current();
        std::thread::Builder::new()
            .name("follower-state".into())
            .spawn(move || {
                let _entered = span.enter();
                let _ = done.send(
                    StateOwner {
                        shared: owner_shared,
                        journal,
                        checkpoint: None,
                    }
                    .run(records, commands),
                );
            })
            .map_err(|source| Error::Io {
                path: config.journal_path.clone(),
                source,
            })?;
        Ok(Follower {
            shared,
            inbox,
            owner_done,
            http: None,
            _locks: (journal_lock, kv_lock),
        })
    }

    /// Serves `TwoPhaseCommit` and `KeyValueAPI` on `listener` until `shutdown` resolves
    /// or the state owner fails.
    pub async fn serve(
        self,
        listener: Listener,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<()> {
        let service = FollowerService {
            shared: self.shared.clone(),
            inbox: self.inbox.clone(),
        };
        let (router, health) = server::router_with_admin_services(&[
            "api.KeyValueAPI",
            "rpc.TwoPhaseCommit",
            "rpc.FollowerReads",
        ])
        .await;
        let stopping = self.shared.stopping.clone();
        let not_serving = health.clone();
        let stop_http = server::spawn_http(self.http, &health, None);
        let shutdown = async move {
            shutdown.await;
            not_serving.set_serving(false).await;
            stopping.send_replace(true);
            stop_http.send_replace(true);
        };
        let mut ready = self.shared.ready_signal.subscribe();
        tokio::spawn(async move {
            if ready.wait_for(|ready| *ready).await.is_ok() {
                health.set_serving(true).await;
            }
        });
        let router = router
            .add_service(
                rpc::two_phase_commit_server::TwoPhaseCommitServer::new(service.clone())
                    .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES),
            )
            .add_service(
                rpc::follower_reads_server::FollowerReadsServer::new(service.clone())
                    .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES),
            )
            .add_service(
                api::key_value_api_server::KeyValueApiServer::new(service)
                    .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES),
            );
        drop(self.inbox);
        let owner_result = |stopped: std::result::Result<Result<()>, _>| match stopped {
            Ok(result) => result,
            Err(_) => Err(Error::Config("the follower state thread panicked".into())),
        };
        let mut owner_done = self.owner_done;
        tokio::select! {
            served = listener.serve(router, shutdown) => {
                served?;
                // Every stream has ended, so the state owner's queue is closed: it
                // finishes what it was given and stops.
                owner_result(owner_done.await)
            }
            stopped = &mut owner_done => owner_result(stopped),
        }
    }

    /// Also serves the HTTP endpoints (`/metrics`, `/healthz`) on `listener`.
    pub fn with_http(mut self, listener: tokio::net::TcpListener) -> Self {
        self.http = Some(listener);
        self
    }

    /// True once the journal is replayed.
    pub fn is_ready(&self) -> bool {
        self.shared.ready.load(Ordering::Acquire)
    }
}

/// The gRPC face of a follower.
#[derive(Clone)]
struct FollowerService {
    shared: Arc<Shared>,
    inbox: mpsc::Sender<Command>,
}

impl FollowerService {
    /// A direct read of this follower's copy: refused while the key has an undecided
    /// transaction (the old value could be stale) or the journal is not replayed yet.
    fn read(&self, key: &str) -> std::result::Result<String, Status> {
        let _timer = RequestTimer::start("get");
        limits::check_key(key).map_err(Status::invalid_argument)?;
        if !self.shared.ready.load(Ordering::Acquire) {
            return Err(Status::unavailable("follower is replaying its journal"));
        }
        self.shared
            .core()
            .check_readable(key)
            .map_err(Status::unavailable)?;
        match self.shared.kv.get(key) {
            Ok(Some(value)) => Ok(value),
            Ok(None) => Err(Status::not_found("key not found")),
            Err(e) => {
                tracing::error!(error = %e, "read failed");
                Err(Status::internal(format!("read failed: {e}")))
            }
        }
    }
}

/// How many forwarded reads' answers may wait to be sent on one stream.
const READ_STREAM_DEPTH: usize = 256;

#[tonic::async_trait]
impl rpc::follower_reads_server::FollowerReads for FollowerService {
    type ReadsStream = ReceiverStream<std::result::Result<rpc::ReadReply, Status>>;

    async fn reads(
        &self,
        request: Request<Streaming<rpc::ReadRequest>>,
    ) -> std::result::Result<Response<Self::ReadsStream>, Status> {
        let mut inbound = request.into_inner();
        let (out, out_rx) = mpsc::channel(READ_STREAM_DEPTH);
        let service = self.clone();
        let mut stopping = self.shared.stopping.subscribe();
        tokio::spawn(async move {
            loop {
                let item = tokio::select! {
                    item = inbound.next() => item,
                    _ = async { stopping.wait_for(|stopping| *stopping).await.is_ok() } => break,
                };
                let Some(Ok(request)) = item else { break };
                let reply = match service.read(&request.key) {
                    Ok(value) => rpc::ReadReply { id: request.id, code: 0, value, message: String::new() },
                    Err(status) => rpc::ReadReply {
                        id: request.id,
                        code: status.code() as u32,
                        value: String::new(),
                        message: status.message().to_string(),
                    },
                };
                if out.send(Ok(reply)).await.is_err() {
                    break;
                }
            }
        }.in_current_span());
        Ok(Response::new(ReceiverStream::new(out_rx)))
    }
}

#[tonic::async_trait]
impl rpc::two_phase_commit_server::TwoPhaseCommit for FollowerService {
    type TPCMsgStream = ReceiverStream<std::result::Result<rpc::Response, Status>>;

    async fn tpc_msg(
        &self,
        request: Request<Streaming<rpc::LeaderMsg>>,
    ) -> std::result::Result<Response<Self::TPCMsgStream>, Status> {
        let mut inbound = request.into_inner();
        let (out, out_rx) = mpsc::channel(PIPELINE_DEPTH);
        let (answers, mut in_order) = mpsc::channel::<oneshot::Receiver<Answer>>(PIPELINE_DEPTH);
        let stream = self.shared.next_stream.fetch_add(1, Ordering::Relaxed);
        let inbox = self.inbox.clone();
        let mut stopping = self.shared.stopping.subscribe();
        // Reads the leader's messages and queues them for the state owner without
        // waiting for their answers (the leader pipelines).
        tokio::spawn(async move {
            tracing::debug!(stream, "leader stream opened");
            let refuse = |status: Status| {
                let (tx, rx) = oneshot::channel();
                let _ = tx.send(Err(status));
                rx
            };
            loop {
                // Between messages only: those already queued are answered first.
                let item = tokio::select! {
                    item = inbound.next() => item,
                    _ = async { stopping.wait_for(|stopping| *stopping).await.is_ok() } => {
                        let _ = answers.send(refuse(Status::unavailable("follower is shutting down"))).await;
                        break;
                    }
                };
                let Some(item) = item else { break };
                let wire = match item {
                    Ok(wire) => wire,
                    Err(status) => {
                        tracing::debug!(stream, %status, "leader stream ended");
                        break;
                    }
                };
                let msg = match LeaderMessage::try_from(wire) {
                    Ok(msg) => msg,
                    Err(why) => {
                        tracing::warn!(stream, reason = %why, "refusing a malformed leader message");
                        let _ = answers.send(refuse(Status::invalid_argument(why))).await;
                        break;
                    }
                };
                let (reply, answer) = oneshot::channel();
                if inbox.send(Command::Message { stream, msg, reply }).await.is_err() {
                    let _ = answers.send(refuse(Status::unavailable("follower is shutting down"))).await;
                    break;
                }
                if answers.send(answer).await.is_err() {
                    // The writer stopped: the stream failed.
                    break;
                }
            }
            let _ = inbox.send(Command::StreamClosed(stream)).await;
        }.in_current_span());
        // Sends the answers in the order the messages came; an error ends the stream.
        tokio::spawn(
            async move {
                while let Some(answer) = in_order.recv().await {
                    match answer.await {
                        Ok(Ok(response)) => {
                            if out.send(Ok(response)).await.is_err() {
                                break;
                            }
                        }
                        Ok(Err(status)) => {
                            let _ = out.send(Err(status)).await;
                            break;
                        }
                        Err(_) => break,
                    }
                }
            }
            .in_current_span(),
        );
        Ok(Response::new(ReceiverStream::new(out_rx)))
    }
}

#[tonic::async_trait]
impl api::key_value_api_server::KeyValueApi for FollowerService {
    async fn get(
        &self,
        request: Request<api::GetRequest>,
    ) -> std::result::Result<Response<api::Response>, Status> {
        let key = request.into_inner().key;
        self.read(&key)
            .map(|value| Response::new(api::Response { value }))
    }

    async fn put(
        &self,
        _: Request<api::PutRequest>,
    ) -> std::result::Result<Response<api::Response>, Status> {
        Err(Status::failed_precondition(
            "this node is a follower: writes go to the leader",
        ))
    }

    async fn delete(
        &self,
        _: Request<api::DeleteRequest>,
    ) -> std::result::Result<Response<api::Response>, Status> {
        Err(Status::failed_precondition(
            "this node is a follower: writes go to the leader",
        ))
    }
}
