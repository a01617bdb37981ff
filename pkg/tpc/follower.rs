//! The follower's runtime: the gRPC services and the thread that owns the protocol state.
//!
//! One thread, the *state owner* (`follower_state.rs`), replays the journal, then takes
//! the leader messages of every stream, runs them through the
//! [`FollowerCore`](super::follower_core::FollowerCore) and carries out the effects in
//! write-ahead order, in batches that share one fsync. Each incoming stream has a task
//! that forwards its messages in arrival order without waiting for their answers (the
//! leader keeps many in flight), and a task that sends the answers back in that same
//! order; an error answer ends the stream. A frame from a leader of protocol 2 may carry
//! many messages; to such a leader the answers that are ready together go back as one
//! frame too.
//!
//! `Get` runs in the gRPC handler: it asks the core (behind a short-held mutex) whether
//! the key is locked and otherwise reads the file. The leader's forwarded reads take the
//! same path, many in flight on one `rpc.FollowerReads/Reads` stream, answered in the
//! order they come. The core makes a lock visible before
//! the vote is sent, and releases it only after the decided value is applied, so a direct
//! read of a follower is never stale (DESIGN §1.3). Until replay is done `Get` answers
//! `UNAVAILABLE`, and incoming streams are held: their messages wait in the queue.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::catch_up;
pub use super::follower_state::CHECKPOINT_RECORDS;
use super::follower_state::{Answer, Command, Shared, StateOwner};
use super::follower_termination;
use super::message::{check_member_id, TxId};
use super::message::{frame_of_responses, messages_of_frame, PROTOCOL};
use super::records::{open_journal, FollowerRecord};
use super::termination::Known;
use crate::dirlock::DirLock;
use crate::kvstore::{KvStore, Versioned};
use crate::limits::{self, MAX_GRPC_MESSAGE_BYTES, MAX_GRPC_REQUEST_READ_BYTES};
use crate::member;
use crate::metrics::RequestTimer;
use crate::net::Listener;
use crate::proto::{api, rpc};
use crate::server;
use crate::txn::TxnSpec;
use crate::{Error, Result};

/// Where a follower keeps its data.
#[derive(Clone, Debug)]
pub struct FollowerConfig {
    /// The journal file.
    pub journal_path: PathBuf,
    /// The key-value directory.
    pub kv_dir: PathBuf,
}

pub use super::follower_termination::DEFAULT_TIMEOUT as DEFAULT_TERMINATION_TIMEOUT;

/// How many of one stream's messages may wait for their answers at once.
const PIPELINE_DEPTH: usize = 1024;
/// At most this many answers share one frame.
const MAX_ANSWERS_PER_FRAME: usize = 1024;

/// A follower with its directories locked and its journal read, ready to serve.
pub struct Follower {
    shared: Arc<Shared>,
    inbox: mpsc::Sender<Command>,
    /// Resolves when the state owner stops (with its error, if it failed).
    owner_done: oneshot::Receiver<Result<()>>,
    http: Option<tokio::net::TcpListener>,
    /// How long a prepared transaction waits for its decision before this follower
    /// asks the other participants (`follower_termination.rs`); `None`: never.
    termination_timeout: Option<Duration>,
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
        let journal_dir = match config.journal_path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let member_id = member::load_or_create(journal_dir)?;
        tracing::info!(%member_id, "member id (file {})", journal_dir.join(member::FILE).display());
        let shared = Arc::new(Shared::new(kv, has_data, member_id));
        let (inbox, commands) = mpsc::channel(1024);
        let owner_shared = shared.clone();
        let (done, owner_done) = oneshot::channel();
        let span = tracing::Span::current();
        std::thread::Builder::new()
            .name("follower-state".into())
            .spawn(move || {
                let _entered = span.enter();
                let _ = done.send(StateOwner::new(owner_shared, journal).run(records, commands));
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
            termination_timeout: Some(DEFAULT_TERMINATION_TIMEOUT),
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
        let catch_up =
            tokio::spawn(catch_up::run(self.shared.clone(), self.inbox.clone()).in_current_span());
        let termination = self.termination_timeout.map(|timeout| {
            let asking =
                follower_termination::run(self.shared.clone(), self.inbox.clone(), timeout);
            tokio::spawn(asking.in_current_span())
        });
        let router = router
            .add_service(
                rpc::two_phase_commit_server::TwoPhaseCommitServer::new(service.clone())
                    .max_decoding_message_size(MAX_GRPC_REQUEST_READ_BYTES)
                    .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES),
            )
            .add_service(
                rpc::follower_reads_server::FollowerReadsServer::new(service.clone())
                    .max_decoding_message_size(MAX_GRPC_REQUEST_READ_BYTES)
                    .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES),
            )
            .add_service(
                api::key_value_api_server::KeyValueApiServer::new(service)
                    .max_decoding_message_size(MAX_GRPC_REQUEST_READ_BYTES)
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
                // Every stream has ended; with the catch-up stopped too, the state
                // owner's queue is closed: it finishes what it was given and stops.
                catch_up.abort();
                let _ = catch_up.await;
                if let Some(termination) = termination {
                    termination.abort();
                    let _ = termination.await;
                }
                served?;
                owner_result(owner_done.await)
            }
            stopped = &mut owner_done => owner_result(stopped),
        }
    }

    /// Asks the other participants for a decision that has not come within `timeout`
    /// (`None`: never; DESIGN §9).
    pub fn with_termination_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.termination_timeout = timeout;
        self
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
    fn read(&self, key: &str) -> std::result::Result<Versioned, Status> {
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
            Ok(Some(held)) => Ok(held),
            Ok(None) => Err(Status::not_found("key not found")),
            Err(e) => {
                tracing::error!(error = %e, "read failed");
                Err(Status::internal(format!("read failed: {e}")))
            }
        }
    }
}

impl FollowerService {
    /// Whether a client's direct read of `keys` may be answered here: only for keys
    /// this follower holds in its view (else FAILED_PRECONDITION naming the view), and,
    /// once a tpc leader drives it (it holds a view or a cluster id), only under that
    /// leader's lease (else UNAVAILABLE): one that has not taken the view in force gets
    /// none, so it never answers for keys it does not hold. Classic tooling needs none.
    fn check_direct(&self, keys: &[&str]) -> std::result::Result<(), Status> {
        let core = self.shared.core();
        for key in keys {
            core.check_direct_read(key)
                .map_err(Status::failed_precondition)?;
        }
        let driven_by_tpc = core.view().is_some() || core.cluster_id().is_some();
        if driven_by_tpc && !self.shared.lease.holds() {
            return Err(Status::unavailable(format!(
                "this follower has not heard from its leader within {:?} (its lease, DESIGN \
                 §7), so it may have been removed from the members: read through the leader",
                super::lease::LEASE
            )));
        }
        Ok(())
    }

    /// A read-only transaction the leader forwards, evaluated on one snapshot of this
    /// follower's copies of its keys: refused if any of them has an undecided
    /// transaction. The core stays locked while the keys are read, so no decision is
    /// applied to them meanwhile (one is applied only while its keys are locked).
    fn read_txn(&self, request: api::TxnRequest) -> std::result::Result<api::TxnResponse, Status> {
        let _timer = RequestTimer::start("txn");
        let txn = TxnSpec::from_request(request).map_err(Status::invalid_argument)?;
        if !txn.is_read_only() {
            return Err(Status::invalid_argument(
                "only a read-only transaction can be read from a follower",
            ));
        }
        if !self.shared.ready.load(Ordering::Acquire) {
            return Err(Status::unavailable("follower is replaying its journal"));
        }
        let core = self.shared.core();
        for key in txn.keys() {
            core.check_direct_read(key).map_err(Status::unavailable)?;
            core.check_readable(key).map_err(Status::unavailable)?;
        }
        let evaluation = txn.evaluate(|key| self.shared.read(key));
        drop(core);
        Ok(txn.response(evaluation.succeeded, evaluation.results, None))
    }
}

/// How many forwarded reads' answers may wait to be sent on one stream.
const READ_STREAM_DEPTH: usize = 256;

#[tonic::async_trait]
impl rpc::follower_reads_server::FollowerReads for FollowerService {
    type ReadsStream = ReceiverStream<std::result::Result<rpc::ReadReply, Status>>;
    type CopyStream = catch_up::CopyStream;

    async fn copy(
        &self,
        request: Request<rpc::CopyRequest>,
    ) -> std::result::Result<Response<Self::CopyStream>, Status> {
        let request = request.into_inner();
        check_member_id(&request.member_id).map_err(Status::invalid_argument)?;
        if request.view_epoch == 0 {
            return Err(Status::invalid_argument("a view epoch starts at 1"));
        }
        catch_up::copy_stream(self.shared.clone(), request.member_id, request.view_epoch)
            .map(Response::new)
    }

    async fn catch_up(
        &self,
        request: Request<rpc::CatchUpRequest>,
    ) -> std::result::Result<Response<rpc::CatchUpReply>, Status> {
        let epoch = request.into_inner().view_epoch;
        Ok(Response::new(self.shared.catch_up.reply(epoch)))
    }

    async fn lease(
        &self,
        request: Request<rpc::LeaseRequest>,
    ) -> std::result::Result<Response<rpc::LeaseReply>, Status> {
        let request = request.into_inner();
        let core = self.shared.core();
        match core.cluster_id() {
            Some(mine) if mine == request.cluster_id => {}
            Some(mine) => {
                return Err(Status::failed_precondition(format!(
                    "this follower belongs to cluster {mine}, not {}",
                    request.cluster_id
                )))
            }
            None => {
                return Err(Status::failed_precondition(
                    "this follower has joined no cluster yet",
                ))
            }
        }
        let held = core.view().map_or(0, |v| v.epoch);
        if held < request.view_epoch {
            return Err(Status::failed_precondition(format!(
                "this follower holds view {held}, older than the view in force {}: no lease \
                 until it has taken it",
                request.view_epoch
            )));
        }
        if request.epoch < core.max_epoch() {
            return Err(Status::failed_precondition(format!(
                "this follower has seen leader epoch {}, newer than {}",
                core.max_epoch(),
                request.epoch
            )));
        }
        drop(core);
        self.shared.lease.grant();
        let (keys, due) = self.shared.key_count.last(Instant::now());
        if due {
            let shared = self.shared.clone();
            tokio::task::spawn_blocking(move || {
                let started = Instant::now();
                let count = shared.kv.count();
                if let Err(e) = &count {
                    tracing::warn!(error = %e, "counting the store's keys failed");
                }
                let now = Instant::now();
                shared.key_count.counted(count.ok(), now, now - started);
            });
        }
        Ok(Response::new(rpc::LeaseReply {
            keys: keys.unwrap_or_default(),
            keys_counted: keys.is_some(),
        }))
    }

    async fn ask_decision(
        &self,
        request: Request<rpc::DecisionRequest>,
    ) -> std::result::Result<Response<rpc::DecisionReply>, Status> {
        let request = request.into_inner();
        let txid: TxId = request
            .txid
            .parse()
            .map_err(|e| Status::invalid_argument(format!("transaction id: {e}")))?;
        if txid.seq == 0 {
            return Err(Status::invalid_argument(
                "transaction id: <epoch>.0 names no transaction",
            ));
        }
        if !request.member_id.is_empty() {
            check_member_id(&request.member_id).map_err(Status::invalid_argument)?;
        }
        match self.shared.core().cluster_id() {
            Some(mine) if mine == request.cluster_id => {}
            mine => {
                return Err(Status::failed_precondition(format!(
                    "this follower belongs to cluster {}, not {}",
                    mine.unwrap_or("(none yet)"),
                    request.cluster_id
                )))
            }
        }
        let (reply, answer) = oneshot::channel();
        let command = Command::AskDecision {
            txid,
            member: request.member_id,
            reply,
        };
        if self.inbox.send(command).await.is_err() {
            return Err(Status::unavailable("the follower is stopping"));
        }
        let known = answer
            .await
            .map_err(|_| Status::unavailable("the follower is stopping"))??;
        let (known, failed) = match known {
            Known::Unknown => (rpc::decision_reply::Known::Unknown, false),
            Known::Voted => (rpc::decision_reply::Known::Voted, false),
            Known::Committed { failed } => (rpc::decision_reply::Known::Committed, failed),
            Known::Aborted => (rpc::decision_reply::Known::Aborted, false),
        };
        Ok(Response::new(rpc::DecisionReply {
            known: known as i32,
            failed,
        }))
    }

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
                let meant_for_me = {
                    let core = service.shared.core();
                    core.check_read_for(&request.member_id)
                        .and_then(|()| match &request.txn {
                            Some(_) => Ok(()),
                            None => core.check_direct_read(&request.key),
                        })
                        .map_err(Status::unavailable)
                };
                let answer = match (meant_for_me, request.txn) {
                    (Err(status), _) => Err(status),
                    (Ok(()), Some(txn)) => service.read_txn(txn).map(|txn| rpc::ReadReply {
                        txn: Some(txn),
                        ..Default::default()
                    }),
                    (Ok(()), None) => service.read(&request.key).map(|held| rpc::ReadReply {
                        value: held.value,
                        version: held.version.to_string(),
                        ..Default::default()
                    }),
                };
                let reply = match answer {
                    Ok(reply) => rpc::ReadReply {
                        id: request.id,
                        ..reply
                    },
                    Err(status) => rpc::ReadReply {
                        id: request.id,
                        code: status.code() as u32,
                        message: status.message().to_string(),
                        ..Default::default()
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
        let (answers, in_order) = mpsc::channel::<oneshot::Receiver<Answer>>(PIPELINE_DEPTH);
        let stream = self.shared.next_stream.fetch_add(1, Ordering::Relaxed);
        let inbox = self.inbox.clone();
        let mut stopping = self.shared.stopping.subscribe();
        // Set once the leader speaks protocol 2: it reads answers in frames.
        let frames = Arc::new(AtomicBool::new(false));
        let leader_reads_frames = frames.clone();
        // Reads the leader's messages and queues them for the state owner without
        // waiting for their answers (the leader pipelines).
        tokio::spawn(async move {
            tracing::debug!(stream, "leader stream opened");
            let refuse = |status: Status| {
                let (tx, rx) = oneshot::channel();
                let _ = tx.send(Err(status));
                rx
            };
            'stream: loop {
                // Between frames only: those already queued are answered first.
                let item = tokio::select! {
                    item = inbound.next() => item,
                    _ = async { stopping.wait_for(|stopping| *stopping).await.is_ok() } => {
                        let _ = answers.send(refuse(Status::unavailable("follower is shutting down"))).await;
                        break;
                    }
                };
                let Some(item) = item else { break };
                let frame = match item {
                    Ok(frame) => frame,
                    Err(status) => {
                        tracing::debug!(stream, %status, "leader stream ended");
                        break;
                    }
                };
                let messages = match messages_of_frame(frame) {
                    Ok(messages) => messages,
                    Err(why) => {
                        tracing::warn!(stream, reason = %why, "refusing a malformed leader message");
                        let _ = answers.send(refuse(Status::invalid_argument(why))).await;
                        break;
                    }
                };
                for msg in messages {
                    if msg.protocol >= PROTOCOL {
                        frames.store(true, Ordering::Relaxed);
                    }
                    let (reply, answer) = oneshot::channel();
                    if inbox.send(Command::Message { stream, msg: Box::new(msg), reply }).await.is_err() {
                        let _ = answers.send(refuse(Status::unavailable("follower is shutting down"))).await;
                        break 'stream;
                    }
                    if answers.send(answer).await.is_err() {
                        // The writer stopped: the stream failed.
                        break 'stream;
                    }
                }
            }
            let _ = inbox.send(Command::StreamClosed(stream)).await;
        }.in_current_span());
        tokio::spawn(send_answers(in_order, out, leader_reads_frames).in_current_span());
        Ok(Response::new(ReceiverStream::new(out_rx)))
    }
}

/// Sends a stream's answers in the order its messages came; an error ends the stream.
/// To a leader that reads frames, the answers ready together go as one frame.
async fn send_answers(
    mut in_order: mpsc::Receiver<oneshot::Receiver<Answer>>,
    out: mpsc::Sender<std::result::Result<rpc::Response, Status>>,
    frames: Arc<AtomicBool>,
) {
    let mut waiting: VecDeque<oneshot::Receiver<Answer>> = VecDeque::new();
    loop {
        let mut head = match waiting.pop_front() {
            Some(head) => head,
            None => match in_order.recv().await {
                Some(head) => head,
                None => return,
            },
        };
        let mut ready = Vec::new();
        let mut end = match (&mut head).await {
            Ok(Ok(response)) => {
                ready.push(response);
                None
            }
            Ok(Err(status)) => Some(Some(status)),
            Err(_) => Some(None),
        };
        if end.is_none() && frames.load(Ordering::Relaxed) {
            while ready.len() < MAX_ANSWERS_PER_FRAME {
                while let Ok(next) = in_order.try_recv() {
                    waiting.push_back(next);
                }
                let Some(next) = waiting.front_mut() else {
                    break;
                };
                match next.try_recv() {
                    Ok(Ok(response)) => ready.push(response),
                    Ok(Err(status)) => end = Some(Some(status)),
                    Err(oneshot::error::TryRecvError::Empty) => break,
                    Err(oneshot::error::TryRecvError::Closed) => end = Some(None),
                }
                waiting.pop_front();
                if end.is_some() {
                    break;
                }
            }
        }
        let sent = if frames.load(Ordering::Relaxed) {
            match frame_of_responses(ready) {
                Some(frame) => out.send(Ok(frame)).await.is_ok(),
                None => true,
            }
        } else {
            let mut sent = true;
            for response in ready {
                sent = sent && out.send(Ok(response)).await.is_ok();
            }
            sent
        };
        match end {
            _ if !sent => return,
            Some(Some(status)) => {
                let _ = out.send(Err(status)).await;
                return;
            }
            Some(None) => return,
            None => {}
        }
    }
}

#[tonic::async_trait]
impl api::key_value_api_server::KeyValueApi for FollowerService {
    async fn get(
        &self,
        request: Request<api::GetRequest>,
    ) -> std::result::Result<Response<api::Response>, Status> {
        let key = request.into_inner().key;
        limits::check_key(&key).map_err(Status::invalid_argument)?;
        // A client's read: only of a key this follower holds in its view, and only
        // under the leader's lease (DESIGN §7).
        self.check_direct(&[key.as_str()])?;
        self.read(&key).map(|held| {
            Response::new(api::Response {
                value: held.value,
                version: held.version.to_string(),
            })
        })
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

    async fn txn(
        &self,
        _: Request<api::TxnRequest>,
    ) -> std::result::Result<Response<api::TxnResponse>, Status> {
        Err(Status::failed_precondition(
            "this node is a follower: transactions go to the leader",
        ))
    }
}
