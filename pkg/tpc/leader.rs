//! The leader's runtime: the client-facing `KeyValueAPI` and the coordinator task.
//!
//! Writes are handed to the **coordinator**, a task of its own that owns the
//! [`LeaderCore`] and the journal, so a transaction runs to its decision even if the
//! client that asked for it cancels or times out (tonic drops a handler's future on
//! cancellation; nothing of 2PC runs inside it). For each write the coordinator
//! journals `begin`, sends PREPARE to every follower through its [`Link`] and collects
//! the votes (no answer within the vote timeout counts as ABORT), journals the decision,
//! answers the client, and hands the decision to the links, which deliver it until
//! every follower ACKs. Writes are serialized for now: one transaction votes at a time.
//!
//! Reads go to a random follower over a pooled channel. A follower answers `UNAVAILABLE`
//! for a key whose decision it has not applied yet; the leader then tries the others and
//! waits for decisions to be delivered, at most twice the vote timeout, so the reads
//! clients see are linearizable (DESIGN §1.3).

use std::sync::Arc;
use std::time::Duration;

use rand::seq::SliceRandom;
use tokio::sync::{mpsc, oneshot, watch};
use tonic::{Code, Request, Response, Status};
use tracing::Instrument;

use super::admin::{AdminService, LeaderView};
use super::leader_core::LeaderCore;
use super::link::{Ack, Link, VoteResult};
use super::message::{Body, Op, Outcome, TxId};
use super::records::{open_journal, LeaderRecord};
use super::trace::Trace;
use crate::crash::crash_point;
use crate::dirlock::DirLock;
use crate::http::LeaderPages;
use crate::journal::{Journal, Record};
use crate::limits::{self, MAX_GRPC_MESSAGE_BYTES};
use crate::metrics::{self, RequestTimer};
use crate::net::{self, Address, Listener};
use crate::proto::{api, rpc};
use crate::server;
use crate::{Error, Result};

/// After this many journal records the leader's journal is checkpointed.
pub const CHECKPOINT_RECORDS: usize = 10_000;

/// How a leader runs.
#[derive(Clone, Debug)]
pub struct LeaderConfig {
    /// The journal file.
    pub journal_path: std::path::PathBuf,
    /// The followers, as given on the command line.
    pub followers: Vec<String>,
    /// How long to wait for each follower's vote (and any answer on a stream).
    pub vote_timeout: Duration,
}

struct WriteRequest {
    key: String,
    op: Op,
    reply: oneshot::Sender<std::result::Result<(), Status>>,
}

/// A leader with its journal recovered, ready to serve.
pub struct Leader {
    service: LeaderService,
    admin: AdminService,
    trace: Arc<Trace>,
    coordinator: tokio::task::JoinHandle<Result<()>>,
    http: Option<tokio::net::TcpListener>,
    _lock: DirLock,
}

impl Leader {
    /// Locks and recovers the journal (a new epoch, unfinished transactions resumed) and
    /// starts the links and the coordinator. Must run inside a multi-threaded runtime.
    pub fn start(config: LeaderConfig) -> Result<Leader> {
        if config.followers.is_empty() {
            return Err(Error::Config(
                "a leader needs at least one --follower".into(),
            ));
        }
        let mut addresses = Vec::new();
        for name in &config.followers {
            let addr: Address = name.parse().map_err(Error::Config)?;
            if addresses.iter().any(|(_, a)| *a == addr) {
                return Err(Error::Config(format!("follower {name} is given twice")));
            }
            addresses.push((name.clone(), addr));
        }
        let (lock, mut journal, records) = open_journal::<LeaderRecord>(&config.journal_path)?;
        let recovery = LeaderCore::recover(records, || uuid::Uuid::new_v4().to_string());
        let persist: Vec<Record> = recovery.persist.iter().map(Record::from).collect();
        journal.append_batch(&persist)?;
        let core = recovery.core;
        tracing::info!(
            cluster = core.cluster_id(),
            epoch = core.epoch(),
            unfinished = core.txns().len(),
            "leader journal recovered"
        );

        metrics::FOLLOWERS_CONNECTED.set(0);
        let (acks_tx, acks) = mpsc::unbounded_channel();
        let trace = Arc::new(Trace::default());
        let links: Vec<Link> = addresses
            .iter()
            .map(|(name, addr)| {
                Link::spawn(
                    name.clone(),
                    addr.clone(),
                    config.vote_timeout,
                    core.cluster_id().to_string(),
                    acks_tx.clone(),
                    trace.clone(),
                )
            })
            .collect();
        let readers = addresses
            .iter()
            .map(|(name, addr)| {
                net::connect_lazy(addr, config.vote_timeout)
                    .map(|channel| {
                        (
                            name.clone(),
                            api::key_value_api_client::KeyValueApiClient::new(channel)
                                .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                                .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES),
                        )
                    })
                    .map_err(Error::Config)
            })
            .collect::<Result<Vec<_>>>()?;
        let (progress, progress_rx) = watch::channel(0u64);
        let (writes_tx, writes) = mpsc::channel(1024);
        let view = watch::Sender::new(LeaderView::of(&core, &journal));
        let admin = AdminService {
            links: links.clone(),
            view: view.subscribe(),
            cluster_id: core.cluster_id().to_string(),
            epoch: core.epoch(),
        };
        let coordinator = Coordinator {
            core,
            journal,
            links,
            acks,
            writes,
            progress,
            view,
            trace: trace.clone(),
        };
        for delivery in &recovery.deliveries {
            coordinator.deliver(delivery.txid, delivery.outcome, &delivery.follower);
        }
        let coordinator = tokio::spawn(coordinator.run().in_current_span());
        let service = LeaderService {
            inner: Arc::new(ServiceInner {
                writes: writes_tx,
                readers,
                progress: progress_rx,
                vote_timeout: config.vote_timeout,
            }),
        };
        Ok(Leader {
            service,
            admin,
            trace,
            coordinator,
            http: None,
            _lock: lock,
        })
    }

    /// Also serves the HTTP endpoints (`/metrics`, `/healthz`) on `listener`.
    pub fn with_http(mut self, listener: tokio::net::TcpListener) -> Self {
        self.http = Some(listener);
        self
    }

    /// Serves `KeyValueAPI` on `listener` until `shutdown` resolves or the coordinator fails.
    pub async fn serve(
        self,
        listener: Listener,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<()> {
        let (router, health) =
            server::router_with_admin_services(&["api.KeyValueAPI", "rpc.Admin"]).await;
        // The journal is recovered: ready.
        health.set_serving(true).await;
        let pages = LeaderPages {
            admin: self.admin.clone(),
            trace: self.trace.clone(),
        };
        let stop_http = server::spawn_http(self.http, &health, Some(pages));
        let shutdown = async move {
            shutdown.await;
            health.set_serving(false).await;
            stop_http.send_replace(true);
        };
        let router = router
            .add_service(
                api::key_value_api_server::KeyValueApiServer::new(self.service)
                    .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES),
            )
            .add_service(rpc::admin_server::AdminServer::new(self.admin));
        tokio::select! {
            served = listener.serve(router, shutdown) => served.map_err(Error::from),
            stopped = self.coordinator => match stopped {
                Ok(result) => result,
                Err(e) => Err(Error::Config(format!("the coordinator task failed: {e}"))),
            },
        }
    }
}

/// The task that owns the leader's protocol state and journal.
struct Coordinator {
    core: LeaderCore,
    journal: Journal,
    links: Vec<Link>,
    acks: mpsc::UnboundedReceiver<Ack>,
    writes: mpsc::Receiver<WriteRequest>,
    progress: watch::Sender<u64>,
    view: watch::Sender<LeaderView>,
    trace: Arc<Trace>,
}

impl Coordinator {
    async fn run(mut self) -> Result<()> {
        loop {
            tokio::select! {
                write = self.writes.recv() => match write {
                    Some(write) => self.write(write).await?,
                    None => return Ok(()),
                },
                Some(ack) = self.acks.recv() => self.acked(ack)?,
            }
            self.publish_view();
        }
    }

    /// Runs one transaction to its decision and answers the client.
    async fn write(&mut self, request: WriteRequest) -> Result<()> {
        let followers: Vec<String> = self.links.iter().map(|l| l.name().to_string()).collect();
        let (txid, begin) = self.core.begin(&request.key, followers);
        if let Err(e) = self.persist(&[begin]) {
            tracing::error!(%txid, error = %e, "leader journal write failed; write refused");
            self.core.forget(txid);
            let _ = request.reply.send(Err(Status::unavailable(format!(
                "write not applied: leader journal write failed: {e}"
            ))));
            // A journal in an unknown state can't be written again: stop.
            return if self.journal.is_broken() {
                Err(e)
            } else {
                Ok(())
            };
        }
        self.trace
            .emit(&txid.to_string(), "begin", None, request.key.as_str());
        self.publish_view();
        let answers: Vec<_> = self
            .links
            .iter()
            .map(|link| {
                let body = Body::Prepare {
                    key: request.key.clone(),
                    op: request.op.clone(),
                };
                link.prepare(self.core.message(txid, body, link.name()).into())
            })
            .collect();
        let mut votes = Vec::with_capacity(answers.len());
        for answer in answers {
            votes.push(
                answer
                    .await
                    .unwrap_or_else(|_| VoteResult::NoAnswer("link stopped".into())),
            );
        }
        let outcome = if votes
            .iter()
            .all(|v| *v == VoteResult::Vote(Outcome::Commit))
        {
            Outcome::Commit
        } else {
            Outcome::Abort
        };
        let sent_to: Vec<String> = self
            .links
            .iter()
            .zip(&votes)
            .filter(|(_, v)| v.was_sent())
            .map(|(l, _)| l.name().to_string())
            .collect();
        let records = self.core.decide(txid, outcome, sent_to.clone());
        let (outcome, answer) = match self.persist(&records) {
            Ok(()) => (outcome, self.client_answer(outcome, &votes)),
            Err(e) if self.journal.is_broken() => {
                // The decision may or may not be on disk: sending either one could
                // contradict what a restart finds. Stop; the restart decides.
                let _ = request.reply.send(Err(Status::unavailable(format!(
                    "leader journal failed; outcome unknown until the leader restarts: {e}"
                ))));
                return Err(e);
            }
            Err(e) => {
                // Cleanly not written: no decision is on disk, so ABORT is safe to send
                // without journaling it (a restart would abort this transaction too).
                tracing::error!(%txid, error = %e, "leader journal write failed; aborting the write");
                let _ = self.core.decide(txid, Outcome::Abort, sent_to.clone());
                let answer = Err(Status::unavailable(format!(
                    "write not applied: leader journal write failed: {e}"
                )));
                (Outcome::Abort, answer)
            }
        };
        crash_point("leader-after-decision-journaled");
        self.trace
            .emit(&txid.to_string(), "decide", None, outcome.as_str());
        metrics::TRANSACTIONS
            .with_label_values(&[outcome.as_str()])
            .inc();
        tracing::debug!(%txid, key = ?request.key, ?outcome, "decided");
        let _ = request.reply.send(answer);
        for follower in &sent_to {
            self.deliver(txid, outcome, follower);
        }
        self.checkpoint_if_due();
        Ok(())
    }

    fn client_answer(
        &self,
        outcome: Outcome,
        votes: &[VoteResult],
    ) -> std::result::Result<(), Status> {
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

    fn deliver(&self, txid: TxId, outcome: Outcome, follower: &str) {
        if let Some(link) = self.links.iter().find(|l| l.name() == follower) {
            link.decide(
                self.core
                    .message(txid, Body::Decide(outcome), follower)
                    .into(),
            );
        } else {
            // The follower was removed from the command line since the decision: nobody
            // can deliver it. Its lock stays until it is added back.
            tracing::warn!(%txid, %follower, "decision for a follower that is no longer configured");
        }
    }

    fn acked(&mut self, ack: Ack) -> Result<()> {
        let Ok(txid) = ack.txid.parse::<TxId>() else {
            return Ok(());
        };
        let finished = self.core.acked(txid, &ack.follower);
        if finished.is_none() && self.core.txns().contains_key(&txid) {
            crash_point("leader-after-first-ack");
        }
        if let Some(done) = finished {
            self.trace.emit(&ack.txid, "done", None, "");
            // Losing a `done` in a crash only means the decision is delivered again.
            if let Err(e) = self.journal.append_unsynced(&Record::from(&done)) {
                tracing::warn!(%txid, error = %e, "could not journal that a transaction finished");
                if self.journal.is_broken() {
                    return Err(e.into());
                }
            }
        }
        self.progress.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Lets `tpc status` and the live view see the transaction table as it is now.
    fn publish_view(&self) {
        self.view
            .send_replace(LeaderView::of(&self.core, &self.journal));
    }

    fn persist(&mut self, records: &[LeaderRecord]) -> Result<()> {
        let records: Vec<Record> = records.iter().map(Record::from).collect();
        tokio::task::block_in_place(|| self.journal.append_batch(&records))?;
        Ok(())
    }

    fn checkpoint_if_due(&mut self) {
        if self.journal.record_count() < CHECKPOINT_RECORDS {
            return;
        }
        let live: Vec<Record> = self.core.live_records().iter().map(Record::from).collect();
        match tokio::task::block_in_place(|| self.journal.rewrite(&live)) {
            Ok(()) => tracing::debug!(records = live.len(), "journal checkpointed"),
            Err(e) => tracing::warn!(error = %e, "journal checkpoint failed; will retry"),
        }
    }
}

type Reader = api::key_value_api_client::KeyValueApiClient<tonic::transport::Channel>;

struct ServiceInner {
    writes: mpsc::Sender<WriteRequest>,
    readers: Vec<(String, Reader)>,
    progress: watch::Receiver<u64>,
    vote_timeout: Duration,
}

/// The leader's `KeyValueAPI`.
#[derive(Clone)]
struct LeaderService {
    inner: Arc<ServiceInner>,
}

impl LeaderService {
    async fn write(&self, key: String, op: Op) -> std::result::Result<(), Status> {
        limits::check_key(&key).map_err(Status::invalid_argument)?;
        if let Op::Put(value) = &op {
            limits::check_value(value).map_err(Status::invalid_argument)?;
        }
        let (reply, answer) = oneshot::channel();
        self.inner
            .writes
            .send(WriteRequest { key, op, reply })
            .await
            .map_err(|_| Status::unavailable("leader is shutting down"))?;
        answer
            .await
            .map_err(|_| Status::unavailable("leader is shutting down"))?
    }
}

#[tonic::async_trait]
impl api::key_value_api_server::KeyValueApi for LeaderService {
    async fn get(
        &self,
        request: Request<api::GetRequest>,
    ) -> std::result::Result<Response<api::Response>, Status> {
        let _timer = RequestTimer::start("get");
        let key = request.into_inner().key;
        limits::check_key(&key).map_err(Status::invalid_argument)?;
        let inner = &self.inner;
        let deadline = tokio::time::Instant::now() + 2 * inner.vote_timeout;
        let mut progress = inner.progress.clone();
        let mut order: Vec<usize> = (0..inner.readers.len()).collect();
        let mut last_error = String::new();
        loop {
            progress.borrow_and_update();
            order.shuffle(&mut rand::rng());
            for &i in &order {
                let (name, reader) = &inner.readers[i];
                let mut reader = reader.clone();
                let mut req = Request::new(api::GetRequest { key: key.clone() });
                req.set_timeout(inner.vote_timeout);
                match tokio::time::timeout(inner.vote_timeout, reader.get(req)).await {
                    Ok(Ok(response)) => return Ok(response),
                    Ok(Err(status)) if status.code() == Code::NotFound => {
                        return Err(Status::not_found(format!(
                            "key not found: {}",
                            limits::quote_key(&key)
                        )))
                    }
                    Ok(Err(status)) => {
                        last_error = format!("follower {name}: {}", status.message())
                    }
                    Err(_) => {
                        last_error =
                            format!("follower {name}: no answer within {:?}", inner.vote_timeout)
                    }
                }
            }
            // Every follower refused (the key's decision is on its way) or is down: wait
            // for the next ACK the coordinator sees, briefly, then try again.
            let wait = tokio::time::timeout_at(
                deadline.min(tokio::time::Instant::now() + Duration::from_millis(20)),
                progress.changed(),
            );
            let _ = wait.await;
            if tokio::time::Instant::now() >= deadline {
                return Err(Status::unavailable(format!(
                    "no follower could answer in time; last: {last_error}"
                )));
            }
        }
    }

    async fn put(
        &self,
        request: Request<api::PutRequest>,
    ) -> std::result::Result<Response<api::Response>, Status> {
        let _timer = RequestTimer::start("put");
        let api::PutRequest { key, value } = request.into_inner();
        self.write(key, Op::Put(value.clone())).await?;
        Ok(Response::new(api::Response { value }))
    }

    async fn delete(
        &self,
        request: Request<api::DeleteRequest>,
    ) -> std::result::Result<Response<api::Response>, Status> {
        let _timer = RequestTimer::start("delete");
        let key = request.into_inner().key;
        self.write(key, Op::Delete).await?;
        Ok(Response::new(api::Response {
            value: String::new(),
        }))
    }
}
