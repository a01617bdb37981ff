//! The leader's runtime: the client-facing `KeyValueAPI` and the coordinator task.
//!
//! Writes are handed to the [`Coordinator`], which runs each as a transaction of its
//! own, many at once (transactions that share a key in order), independent of the
//! handler that asked for it. A `Put` or `Delete` is a transaction of one write; a `Txn`
//! that writes (in either branch) runs the same way, its compares and GETs evaluated by
//! the participants while they hold its keys locked (`txn.rs`, DESIGN §6).
//!
//! Reads of a key whose committed write has not reached every follower yet are answered
//! by the leader itself, from the core ([`LeaderCore::committed_value`]): the write is
//! committed, and the followers may still hold the key locked. Other reads go to a
//! random replica of the key (DESIGN §7) over a pooled channel, many at once on one
//! stream (`reads.rs`). A
//! follower answers `UNAVAILABLE` for a key whose decision it has not applied yet; the
//! leader then tries the others and waits for decisions, at most twice the vote
//! timeout, so the reads clients see are linearizable (DESIGN §1.3).
//!
//! A read-only `Txn` needs no 2PC when the leader holds a committed write for each of its
//! keys (it is evaluated on them, as a `Get` is answered), or when some follower that
//! holds every key can evaluate it on one snapshot of its copies of the keys, none of
//! them locked. Every transaction the leader has answered as committed has been voted
//! on by every replica of its keys, so a replica whose copies of the keys are not
//! locked has applied every committed write to them. If no follower holds every key,
//! or each has one of the keys locked (a key written without pause always is,
//! somewhere), the read runs through 2PC like a write that
//! writes nothing, queued first come first served behind the transactions on its keys:
//! it can't starve.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::seq::SliceRandom;
use tokio::sync::{mpsc, oneshot, watch};
use tonic::{Code, Request, Response, Status};
use tracing::Instrument;

use super::admin::AdminService;
use super::coordinator::Coordinator;
use super::leader_core::{Committed, LeaderCore};
use super::leader_journal::LeaderJournal;
use super::link::Link;
use super::membership::Membership;
use super::reads::FollowerReader;
use super::records::{open_journal, LeaderRecord};
use super::trace::Trace;
use super::view_change::{self, Reports};
use crate::dirlock::DirLock;
use crate::http::LeaderPages;
use crate::journal::{GroupJournal, Record};
use crate::kvstore::Versioned;
use crate::limits::{self, MAX_GRPC_MESSAGE_BYTES, MAX_GRPC_REQUEST_READ_BYTES};
use crate::metrics::{self, RequestTimer};
use crate::net::{self, Address, Listener};
use crate::proto::{api, rpc};
use crate::server;
use crate::task::AbortOnDrop;
use crate::txn::{Evaluation, TxnSpec};
use crate::{Error, Result};

/// How a leader runs.
#[derive(Clone, Debug)]
pub struct LeaderConfig {
    /// The journal file.
    pub journal_path: std::path::PathBuf,
    /// The followers, as given on the command line.
    pub followers: Vec<String>,
    /// How many followers hold each key (`--replication`, DESIGN §7).
    pub replication: usize,
    /// How long to wait for each follower's vote (and any answer on a stream).
    pub vote_timeout: Duration,
    /// How long a member may not answer before it is removed from the members
    /// (`--member-timeout`, DESIGN §8); `None`: never.
    pub member_timeout: Option<Duration>,
}

/// What serves while this leader is the active one: the coordinator with its core,
/// the links to the followers, and the client and operator services on them. A
/// single leader is always active; with standby leaders one is built at each takeover
/// and dropped when the leader stands down (`standby.rs`).
pub(crate) struct Active {
    pub(crate) service: LeaderService,
    pub(crate) admin: AdminService,
    pub(crate) coordinator: Arc<Coordinator>,
    _watch: AbortOnDrop,
}

impl Active {
    /// Starts the links, the coordinator (which owns `core`, its fences and owed
    /// decisions queued) and the watch on the members. `core`'s new epoch must be
    /// durable in `journal` already: the fence relies on it.
    pub(crate) fn start(
        core: LeaderCore,
        journal: LeaderJournal,
        config: &LeaderConfig,
        trace: Arc<Trace>,
    ) -> Result<Active> {
        let addresses = follower_addresses(&config.followers)?;
        tracing::info!(
            cluster = core.cluster_id(),
            epoch = core.epoch(),
            owed = core.txns().len(),
            fencing = core.recovery().is_active(),
            "leader journal recovered"
        );
        metrics::FOLLOWERS_CONNECTED.set(0);
        let (events, inbox) = mpsc::unbounded_channel();
        let links: Vec<Link> = addresses
            .iter()
            .enumerate()
            .map(|(index, (name, addr))| {
                Link::spawn(
                    index,
                    name.clone(),
                    addr.clone(),
                    config.vote_timeout,
                    events.clone(),
                )
            })
            .collect();
        let readers = addresses
            .iter()
            .map(|(name, addr)| {
                net::connect_lazy(addr, config.vote_timeout)
                    .map(|channel| (name.clone(), FollowerReader::new(channel)))
                    .map_err(Error::Config)
            })
            .collect::<Result<Vec<_>>>()?;
        let cluster_id = core.cluster_id().to_string();
        let epoch = core.epoch();
        let coordinator = Coordinator::start(core, journal, links.clone(), (events, inbox), trace);
        let admin = AdminService {
            links,
            coordinator: coordinator.clone(),
            cluster_id,
            epoch,
            reports: Arc::new(Reports::default()),
        };
        let service = LeaderService {
            inner: Arc::new(ServiceInner {
                coordinator: coordinator.clone(),
                readers,
                progress: coordinator.progress(),
                vote_timeout: config.vote_timeout,
            }),
        };
        let watch = AbortOnDrop(tokio::spawn(
            view_change::watch(
                coordinator.clone(),
                admin.reports.clone(),
                config.member_timeout,
            )
            .in_current_span(),
        ));
        Ok(Active {
            service,
            admin,
            coordinator,
            _watch: watch,
        })
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.coordinator.stop("this leader stood down".into());
    }
}

/// The leader `config` describes, rebuilt from its journal's `records` in a new epoch
/// (a new cluster id if they are none): `LeaderCore::recover`.
pub(crate) fn recover(
    records: Vec<LeaderRecord>,
    config: &LeaderConfig,
) -> std::result::Result<super::leader_core::Start, String> {
    LeaderCore::recover(
        records,
        config.followers.clone(),
        config.replication,
        config.vote_timeout,
        || uuid::Uuid::new_v4().to_string(),
    )
}

/// The followers' addresses, each as given and parsed; refuses none or one twice.
pub(crate) fn follower_addresses(followers: &[String]) -> Result<Vec<(String, Address)>> {
    if followers.is_empty() {
        return Err(Error::Config(
            "a leader needs at least one --follower".into(),
        ));
    }
    let mut addresses: Vec<(String, Address)> = Vec::new();
    for name in followers {
        let addr: Address = name.parse().map_err(Error::Config)?;
        if addresses.iter().any(|(_, a)| *a == addr) {
            return Err(Error::Config(format!("follower {name} is given twice")));
        }
        addresses.push((name.clone(), addr));
    }
    Ok(addresses)
}

/// A leader with its journal recovered, ready to serve.
pub struct Leader {
    active: Active,
    trace: Arc<Trace>,
    http: Option<tokio::net::TcpListener>,
    _lock: DirLock,
}

impl Leader {
    /// Locks and recovers the journal (a new epoch, unfinished transactions resumed) and
    /// starts the links and the coordinator. Must run inside a multi-threaded runtime.
    pub fn start(config: LeaderConfig) -> Result<Leader> {
        follower_addresses(&config.followers)?;
        let (lock, mut journal, records) = open_journal::<LeaderRecord>(&config.journal_path)?;
        let start = recover(records, &config).map_err(Error::Config)?;
        // The new epoch is durable before anything is sent (the fence relies on it).
        let persist: Vec<Record> = start.persist.iter().map(Record::from).collect();
        journal.append_batch(&persist)?;
        let journal = GroupJournal::start(journal).map_err(|source| Error::Io {
            path: config.journal_path.clone(),
            source,
        })?;
        let trace = Arc::new(Trace::default());
        let active = Active::start(
            start.core,
            LeaderJournal::Local(journal),
            &config,
            trace.clone(),
        )?;
        Ok(Leader {
            active,
            trace,
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
        let admin = self.active.admin.clone();
        let pages = LeaderPages {
            status: Arc::new(move || admin.snapshot()),
            trace: self.trace.clone(),
        };
        let stop_http = server::spawn_http(self.http, &health, Some(pages));
        let shutdown = async move {
            shutdown.await;
            health.set_serving(false).await;
            stop_http.send_replace(true);
        };
        let router = router
            .add_service(api_server(self.active.service.clone()))
            .add_service(rpc::admin_server::AdminServer::new(
                self.active.admin.clone(),
            ));
        let mut fatal = self.active.coordinator.fatal();
        tokio::select! {
            served = listener.serve(router, shutdown) => served.map_err(Error::from),
            failed = fatal.wait_for(Option::is_some) => Err(Error::Config(match failed {
                Ok(why) => format!("stopping: the leader journal failed; a restart reads back what it holds: {}", why.clone().unwrap_or_default()),
                Err(_) => "the coordinator stopped".into(),
            })),
        }
    }
}

/// The `KeyValueAPI` server for `api`, with tpc's message limits.
pub(crate) fn api_server<A: api::key_value_api_server::KeyValueApi>(
    api: A,
) -> api::key_value_api_server::KeyValueApiServer<A> {
    api::key_value_api_server::KeyValueApiServer::new(api)
        .max_decoding_message_size(MAX_GRPC_REQUEST_READ_BYTES)
        .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES)
}

/// The followers `pick` chooses from `core`'s view, each with the member id a read of it
/// names (empty before the view: whoever answers).
fn members(
    core: &LeaderCore,
    pick: impl FnOnce(&Membership) -> Vec<usize>,
) -> Vec<(usize, String)> {
    let membership = core.membership();
    pick(membership)
        .into_iter()
        .map(|f| {
            let member = membership.recipient(f).map(|r| r.member_id.0);
            (f, member.unwrap_or_default())
        })
        .collect()
}

struct ServiceInner {
    coordinator: Arc<Coordinator>,
    readers: Vec<(String, Arc<FollowerReader>)>,
    progress: watch::Receiver<u64>,
    vote_timeout: Duration,
}

/// The leader's `KeyValueAPI`.
#[derive(Clone)]
pub(crate) struct LeaderService {
    inner: Arc<ServiceInner>,
}

impl LeaderService {
    /// Runs a transaction that writes (in some branch); its answer is what it did.
    async fn write(&self, txn: TxnSpec) -> std::result::Result<Committed, Status> {
        let (reply, answer) = oneshot::channel();
        self.inner.coordinator.submit(txn, reply);
        answer
            .await
            .map_err(|_| Status::unknown("leader stopped; the transaction's outcome is unknown"))?
    }

    /// Runs a read-only transaction (see the module documentation): from the leader's
    /// committed writes if it holds one for every key, else on the snapshot of one
    /// follower that holds every key, else (none does, or each has one of the keys
    /// locked: a hot key is always locked somewhere) through 2PC like a write, queued
    /// fairly behind the transactions on its keys.
    async fn read_only(&self, txn: TxnSpec) -> std::result::Result<api::TxnResponse, Status> {
        if txn.keys().is_empty() {
            return Ok(txn.response(true, Vec::new(), None));
        }
        if let Some(evaluation) = self.evaluate_committed(&txn) {
            return Ok(txn.response(evaluation.succeeded, evaluation.results, None));
        }
        let request = api::TxnRequest::from(&txn);
        let inner = &self.inner;
        let mut order = members(&inner.coordinator.core(), |m| m.holders(txn.keys()));
        order.shuffle(&mut rand::rng());
        let mut classic = Vec::new();
        for (i, member) in &order {
            let (name, reader) = &inner.readers[*i];
            match reader
                .txn(request.clone(), member, inner.vote_timeout)
                .await
            {
                Ok(answer) => return Ok(answer),
                Err(status) if status.code() == Code::InvalidArgument => return Err(status),
                Err(status) if status.code() == Code::FailedPrecondition => {
                    classic.push(name.as_str())
                }
                Err(_) => {}
            }
        }
        if !order.is_empty() && classic.len() == order.len() {
            return Err(Status::failed_precondition(format!(
                "no follower can read several keys on one snapshot: {} classic peer(s) (they \
                 do not speak tpc protocol 2): {}",
                classic.len(),
                classic.join(", ")
            )));
        }
        let asked = txn.clone();
        let committed = self.write(txn).await?;
        Ok(asked.response(committed.succeeded, committed.results, None))
    }

    /// `txn` evaluated on the leader's committed writes, if it holds one for each of its
    /// keys: each is then the key's latest committed state, all at this one moment.
    fn evaluate_committed(&self, txn: &TxnSpec) -> Option<Evaluation> {
        let core = self.inner.coordinator.core();
        let mut state = HashMap::new();
        for key in txn.keys() {
            let (value, version) = core.committed_value(key)?;
            let held = value.map(|value| Versioned {
                value: value.to_string(),
                version,
            });
            state.insert(key, held);
        }
        drop(core);
        Some(txn.evaluate(|key| state.get(key).cloned().flatten()))
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
        let mut last_error = String::new();
        let not_found = || Status::not_found(format!("key not found: {}", limits::quote_key(&key)));
        loop {
            progress.borrow_and_update();
            // Committed, and maybe not applied (so locked) on some follower yet; else
            // the key's replicas, to ask.
            let (committed, mut order) = {
                let core = inner.coordinator.core();
                match core.committed_value(&key) {
                    Some((value, version)) => {
                        (Some((value.map(str::to_string), version)), Vec::new())
                    }
                    None => (None, members(&core, |m| m.replicas(&key))),
                }
            };
            if let Some((value, version)) = committed {
                return match value {
                    Some(value) => Ok(Response::new(api::Response {
                        value,
                        version: version.to_string(),
                    })),
                    None => Err(not_found()),
                };
            }
            if order.is_empty() {
                last_error =
                    "the cluster has no view yet, so the key's replicas are unknown".into();
            }
            order.shuffle(&mut rand::rng());
            for (i, member) in &order {
                let (name, reader) = &inner.readers[*i];
                match reader.get(&key, member, inner.vote_timeout).await {
                    Ok(answer) => return Ok(Response::new(answer)),
                    Err(status) if status.code() == Code::NotFound => return Err(not_found()),
                    Err(status) => last_error = format!("follower {name}: {}", status.message()),
                }
            }
            // Every follower refused (the key's decision is on its way) or is down: wait
            // for the next decision or ACK the coordinator sees, briefly, then try again.
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
        limits::check_key(&key).map_err(Status::invalid_argument)?;
        limits::check_value(&value).map_err(Status::invalid_argument)?;
        let committed = self.write(TxnSpec::write(key, Some(value.clone()))).await?;
        Ok(Response::new(api::Response {
            value,
            version: committed.version.map(|v| v.to_string()).unwrap_or_default(),
        }))
    }

    async fn delete(
        &self,
        request: Request<api::DeleteRequest>,
    ) -> std::result::Result<Response<api::Response>, Status> {
        let _timer = RequestTimer::start("delete");
        let key = request.into_inner().key;
        limits::check_key(&key).map_err(Status::invalid_argument)?;
        let committed = self.write(TxnSpec::write(key, None)).await?;
        Ok(Response::new(api::Response {
            value: String::new(),
            version: committed.version.map(|v| v.to_string()).unwrap_or_default(),
        }))
    }

    async fn txn(
        &self,
        request: Request<api::TxnRequest>,
    ) -> std::result::Result<Response<api::TxnResponse>, Status> {
        let _timer = RequestTimer::start("txn");
        let txn = TxnSpec::from_request(request.into_inner()).map_err(Status::invalid_argument)?;
        if txn.is_read_only() {
            return self.read_only(txn).await.map(Response::new);
        }
        // The answer names the GETs of the branch that ran: a copy of the request's shape.
        let asked = txn.clone();
        let committed = self.write(txn).await?;
        Ok(Response::new(asked.response(
            committed.succeeded,
            committed.results,
            committed.version,
        )))
    }
}
