//! The follower's runtime: the gRPC services and the thread that owns the protocol state.
//!
//! One thread, the *state owner*, replays the journal, then takes leader messages one at
//! a time from every stream, runs them through [`FollowerCore`] and carries out the
//! effects in the order the core gives them (journal, then key-value store, then lock
//! release, then reply). File I/O and fsync are blocking, so it is a plain thread, not an
//! async task. Each incoming stream has a task that forwards its messages in arrival order
//! and waits for each reply before the next, so one stream's messages are handled in order.
//!
//! `Get` runs in the gRPC handler: it asks the core (behind a short-held mutex) whether
//! the key is locked and otherwise reads the file. The core makes a lock visible before
//! the vote is sent, and releases it only after the decided value is applied, so a direct
//! read of a follower is never stale (DESIGN §1.3). Until replay is done `Get` answers
//! `UNAVAILABLE`, and incoming streams are held: their messages wait in the queue.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::follower_core::{Effect, FollowerCore, StreamId};
use super::message::{LeaderMessage, Op};
use super::records::{open_journal, FollowerRecord};
use crate::crash::crash_point;
use crate::dirlock::DirLock;
use crate::journal::{Journal, Record};
use crate::kvstore::KvStore;
use crate::limits::{self, MAX_GRPC_MESSAGE_BYTES};
use crate::metrics::{self, RequestTimer};
use crate::net::Listener;
use crate::proto::{api, rpc};
use crate::server;
use crate::{Error, Result};

/// After this many journal records, the journal is checkpointed (rewritten with only
/// its live records), so start-up time does not grow with the number of writes.
pub const CHECKPOINT_RECORDS: usize = 10_000;

/// Where a follower keeps its data.
#[derive(Clone, Debug)]
pub struct FollowerConfig {
    /// The journal file.
    pub journal_path: PathBuf,
    /// The key-value directory.
    pub kv_dir: PathBuf,
}

/// State shared between the gRPC handlers and the state owner.
struct Shared {
    core: Mutex<FollowerCore>,
    kv: KvStore,
    ready: AtomicBool,
    /// Also `ready`, for those who wait for it (the health report).
    ready_signal: watch::Sender<bool>,
    /// Set when the node starts shutting down: open leader streams are ended (they
    /// would otherwise hold the graceful shutdown up forever).
    stopping: watch::Sender<bool>,
    next_stream: AtomicU64,
}

impl Shared {
    fn core(&self) -> MutexGuard<'_, FollowerCore> {
        // A panic while holding the lock would be a bug; the state is still the best we have.
        self.core
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

enum Command {
    Message {
        stream: StreamId,
        msg: LeaderMessage,
        reply: oneshot::Sender<std::result::Result<rpc::Response, Status>>,
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
        let (router, health) =
            server::router_with_admin_services(&["api.KeyValueAPI", "rpc.TwoPhaseCommit"]).await;
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

/// The thread that owns the journal and carries out the core's effects.
struct StateOwner {
    shared: Arc<Shared>,
    journal: Journal,
}

impl StateOwner {
    fn run(
        mut self,
        records: Vec<FollowerRecord>,
        mut commands: mpsc::Receiver<Command>,
    ) -> Result<()> {
        let count = records.len();
        crate::crash::pause_point("follower-before-replay");
        self.replay(records)?;
        let prepared = self.shared.core().prepared().len();
        metrics::PREPARED_TRANSACTIONS.set(prepared as i64);
        self.shared.ready.store(true, Ordering::Release);
        self.shared.ready_signal.send_replace(true);
        tracing::info!(
            records = count,
            prepared,
            "journal replayed; follower ready"
        );
        while let Some(command) = commands.blocking_recv() {
            match command {
                Command::Message { stream, msg, reply } => {
                    let txid = msg.txid.clone();
                    let effects = self.shared.core().handle(stream, msg);
                    let _ = reply.send(self.carry_out(&txid, effects));
                    let prepared = self.shared.core().prepared().len();
                    metrics::PREPARED_TRANSACTIONS.set(prepared as i64);
                    self.checkpoint_if_due();
                    if self.journal.is_broken() {
                        return Err(Error::Config(format!(
                            "journal {} failed to sync: what it holds on disk is unknown; \
                             stopping so that a restart reads it back",
                            self.journal.path().display()
                        )));
                    }
                }
                Command::StreamClosed(stream) => self.shared.core().stream_closed(stream),
            }
        }
        Ok(())
    }

    /// Rebuilds the core from the journal and brings the store up to date. Replayed
    /// decisions may or may not have reached the store before the crash; re-applying is
    /// idempotent, but each key is written at most once, and only if its file differs,
    /// so a restart costs reads, not thousands of fsyncs.
    fn replay(&mut self, records: Vec<FollowerRecord>) -> Result<()> {
        let mut changes: HashMap<String, Op> = HashMap::new();
        for record in records {
            let effects = self.shared.core().replay(record);
            for effect in effects {
                match effect {
                    Effect::Apply { key, op } => {
                        changes.insert(key, op);
                    }
                    Effect::Finish { txid, outcome } => {
                        self.shared.core().finish(&txid, outcome);
                    }
                    _ => {}
                }
            }
        }
        let mut stale = Vec::new();
        for (key, op) in &changes {
            let wanted = match op {
                Op::Put(value) => Some(value.as_str()),
                Op::Delete => None,
            };
            if self.shared.kv.get(key)?.as_deref() != wanted {
                stale.push((key.as_str(), wanted));
            }
        }
        self.shared.kv.apply_batch(&stale)?;
        if !stale.is_empty() {
            tracing::info!(
                keys = stale.len(),
                "re-applied decided writes from the journal"
            );
        }
        Ok(())
    }

    fn apply(&self, key: &str, op: &Op) -> Result<()> {
        match op {
            Op::Put(value) => self.shared.kv.put(key, value)?,
            Op::Delete => self.shared.kv.delete(key)?,
        }
        Ok(())
    }

    /// Carries out one message's effects in order; the answer for the stream.
    /// Consecutive records to journal share one write and one fsync.
    fn carry_out(
        &mut self,
        txid: &str,
        effects: Vec<Effect>,
    ) -> std::result::Result<rpc::Response, Status> {
        let mut response = None;
        let mut to_journal = Vec::new();
        let mut effects = effects.into_iter().peekable();
        while let Some(effect) = effects.next() {
            match effect {
                Effect::Persist(record) => {
                    to_journal.push(record);
                    if !matches!(effects.peek(), Some(Effect::Persist(_))) {
                        if let Some(vote) =
                            self.journal_records(txid, std::mem::take(&mut to_journal))?
                        {
                            return Ok(vote);
                        }
                    }
                }
                Effect::Apply { key, op } => {
                    if let Err(e) = self.apply(&key, &op) {
                        tracing::error!(%txid, error = %e, "applying a decided write failed");
                        return Err(Status::unavailable(format!(
                            "follower store write failed: {e}"
                        )));
                    }
                    crash_point("follower-after-apply");
                }
                Effect::Finish { txid, outcome } => {
                    if self.shared.core().finish(&txid, outcome) {
                        metrics::TRANSACTIONS
                            .with_label_values(&[outcome.as_str()])
                            .inc();
                    }
                }
                Effect::Reply(reply) => {
                    response = Some(reply.to_wire(txid, self.shared.core().cluster_id()));
                }
                Effect::Refuse(why) => {
                    tracing::error!(reason = %why, "refusing the leader");
                    return Err(Status::failed_precondition(why));
                }
            }
        }
        response.ok_or_else(|| Status::internal("no reply produced"))
    }

    /// Journals `records` durably. If that fails for a PREPARE, the vote becomes ABORT
    /// (returned as the answer); for anything else the stream fails and the leader
    /// retransmits, the core unchanged.
    fn journal_records(
        &mut self,
        txid: &str,
        records: Vec<FollowerRecord>,
    ) -> std::result::Result<Option<rpc::Response>, Status> {
        if records
            .iter()
            .any(|r| matches!(r, FollowerRecord::Decide { .. }))
        {
            crash_point("follower-before-decision");
        }
        let lines: Vec<Record> = records.iter().map(Record::from).collect();
        if let Err(e) = self.journal.append_batch(&lines) {
            tracing::error!(%txid, error = %e, "journal write failed");
            for record in &records {
                if let FollowerRecord::Prepare { txid, .. } = record {
                    let vote = self.shared.core().prepare_failed(txid);
                    return Ok(Some(vote.to_wire(txid, self.shared.core().cluster_id())));
                }
            }
            self.shared.core().journal_failed();
            return Err(Status::unavailable(format!(
                "follower journal write failed: {e}"
            )));
        }
        if records
            .iter()
            .any(|r| matches!(r, FollowerRecord::Prepare { .. }))
        {
            crash_point("follower-after-vote-journaled");
        }
        Ok(None)
    }

    fn checkpoint_if_due(&mut self) {
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
        match self.journal.rewrite(&live) {
            Ok(()) => tracing::debug!(records = live.len(), "journal checkpointed"),
            Err(e) => tracing::warn!(error = %e, "journal checkpoint failed; will retry"),
        }
    }
}

/// The gRPC face of a follower.
#[derive(Clone)]
struct FollowerService {
    shared: Arc<Shared>,
    inbox: mpsc::Sender<Command>,
}

#[tonic::async_trait]
impl rpc::two_phase_commit_server::TwoPhaseCommit for FollowerService {
    type TPCMsgStream = ReceiverStream<std::result::Result<rpc::Response, Status>>;

    async fn tpc_msg(
        &self,
        request: Request<Streaming<rpc::LeaderMsg>>,
    ) -> std::result::Result<Response<Self::TPCMsgStream>, Status> {
        let mut inbound = request.into_inner();
        let (out, out_rx) = mpsc::channel(64);
        let stream = self.shared.next_stream.fetch_add(1, Ordering::Relaxed);
        let inbox = self.inbox.clone();
        let mut stopping = self.shared.stopping.subscribe();
        tokio::spawn(async move {
            tracing::debug!(stream, "leader stream opened");
            loop {
                // Between messages only: one being handled is finished first.
                let item = tokio::select! {
                    item = inbound.next() => item,
                    _ = async { stopping.wait_for(|stopping| *stopping).await.is_ok() } => {
                        let _ = out.send(Err(Status::unavailable("follower is shutting down"))).await;
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
                        let _ = out.send(Err(Status::invalid_argument(why))).await;
                        break;
                    }
                };
                let (reply, answer) = oneshot::channel();
                if inbox.send(Command::Message { stream, msg, reply }).await.is_err() {
                    let _ = out.send(Err(Status::unavailable("follower is shutting down"))).await;
                    break;
                }
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
            let _ = inbox.send(Command::StreamClosed(stream)).await;
        }.in_current_span());
        Ok(Response::new(ReceiverStream::new(out_rx)))
    }
}

#[tonic::async_trait]
impl api::key_value_api_server::KeyValueApi for FollowerService {
    async fn get(
        &self,
        request: Request<api::GetRequest>,
    ) -> std::result::Result<Response<api::Response>, Status> {
        let _timer = RequestTimer::start("get");
        let key = request.into_inner().key;
        limits::check_key(&key).map_err(Status::invalid_argument)?;
        if !self.shared.ready.load(Ordering::Acquire) {
            return Err(Status::unavailable("follower is replaying its journal"));
        }
        self.shared
            .core()
            .check_readable(&key)
            .map_err(Status::unavailable)?;
        match self.shared.kv.get(&key) {
            Ok(Some(value)) => Ok(Response::new(api::Response { value })),
            Ok(None) => Err(Status::not_found("key not found")),
            Err(e) => {
                tracing::error!(error = %e, "read failed");
                Err(Status::internal(format!("read failed: {e}")))
            }
        }
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
