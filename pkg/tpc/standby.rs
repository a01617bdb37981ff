//! Standby leaders (DESIGN §9): several leader processes, one active.
//!
//! The leaders replicate the leader journal with Raft (`crate::raft`), and the Raft
//! leader is the active 2PC leader. This module is the runtime around that: it takes
//! over when Raft elects this leader, stands down when it may no longer act alone,
//! and routes every client call.
//!
//! **Taking over** is a single leader's restart, with the replicated journal as its
//! file: once every entry of earlier terms is applied (`ensure_linearizable`), the
//! journal's records go through `LeaderCore::recover` (a new epoch, the fences, the
//! owed decisions, in-doubt transactions asked about by §1.4), the new epoch is
//! committed to the leaders, and only then does the coordinator start and send. Two
//! leaders can never share an epoch: the second would have read the first's.
//!
//! **Standing down.** The active leader's heartbeats to the other leaders confirm its
//! leadership all the time, and it stands down when no round that a quorum
//! acknowledged started within [`READ_LEASE_MS`](crate::raft::READ_LEASE_MS), when Raft says it is no
//! longer leader, or when a journal job could not be committed. Standing down stops
//! the coordinator (waiting writes get UNKNOWN: the next leader settles them) and
//! closes its streams. A voter that acknowledged a heartbeat refuses to elect anyone
//! for openraft's lease (`election_timeout_max`), longer than that window, so a
//! leader that stopped hearing from the others stops answering before another can
//! be elected: its reads from the writes it committed are never stale. Writes never
//! depend on timing: a new leader's epoch fences the followers (§1.4).
//!
//! **Routing**: every call is served by the active leader; a standby forwards it
//! (`routing.rs`).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ServerState;
use tokio::sync::watch;
use tracing::Instrument;

use super::leader::{api_server, follower_addresses, recover, Active, LeaderConfig};
use super::leader_journal::LeaderJournal;
use super::records::LeaderRecord;
use super::routing::Dispatch;
use super::trace::Trace;
use crate::crash::crash_point;
use crate::dirlock::DirLock;
use crate::http::LeaderPages;
use crate::journal::Record;
use crate::limits::MAX_GRPC_MESSAGE_BYTES;
use crate::metrics;
use crate::net::{Address, Listener};
use crate::proto::rpc;
use crate::raft::{
    self, ControlEntry, Group, LogStore, Network, NodeId, Raft, RaftService, ReplicatedJournal,
    StateMachine, READ_LEASE_MS,
};
use crate::server;
use crate::task::AbortOnDrop;
use crate::{Error, Result};

/// How often the active leader checks that its leadership is confirmed.
const CONFIRM_EVERY: Duration = Duration::from_millis(100);

/// How a leader with standbys runs.
#[derive(Clone, Debug)]
pub struct StandbyConfig {
    pub leader: LeaderConfig,
    /// This leader's client address as the others name it (`--advertise`).
    pub advertise: String,
    /// The other leaders (`--peer`).
    pub peers: Vec<String>,
}

/// What this leader is now.
#[derive(Clone)]
pub(super) enum Role {
    Active(Arc<Active>),
    Standby { active: Option<NodeId> },
}

/// What the services and the role manager share.
pub(super) struct Shared {
    pub(super) group: Arc<Group>,
    pub(super) raft: Raft,
    pub(super) state: StateMachine,
    pub(super) network: Network,
    pub(super) role: watch::Receiver<Role>,
    /// When the active leader's last confirmed heartbeat round started, in ms since
    /// `base` (0: none).
    confirmed_ms: AtomicU64,
    base: Instant,
    /// The messages of the transactions, for the live view (kept across takeovers).
    trace: Arc<Trace>,
}

/// A leader with standbys, its Raft node started.
pub struct StandbyLeader {
    shared: Arc<Shared>,
    http: Option<tokio::net::TcpListener>,
    _manager: AbortOnDrop,
    _lock: DirLock,
}

impl StandbyLeader {
    /// Opens the Raft files in the journal's directory, starts the Raft node (joining
    /// the group on a first start) and the role manager.
    pub async fn start(config: StandbyConfig) -> Result<StandbyLeader> {
        let leader = &config.leader;
        follower_addresses(&leader.followers)?;
        for peer in &config.peers {
            peer.parse::<Address>()
                .map_err(|e| Error::Config(format!("--peer {peer}: {e}")))?;
        }
        let group = Arc::new(
            Group::new(
                &config.advertise,
                &config.peers,
                &leader.followers,
                leader.replication,
            )
            .map_err(Error::Config)?,
        );
        let dir = leader
            .journal_path
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_default();
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        let lock = DirLock::acquire(&dir.join("raft.lock"))?;
        refuse_single_leader_journal(&leader.journal_path)?;
        let log = LogStore::open(&dir.join("raft"))?;
        let pristine = log.is_pristine();
        let state = StateMachine::open(&dir.join("raft-snapshot"))?;
        let network = Network::new(group.clone());
        let raft_config = raft::config()
            .validate()
            .map_err(|e| Error::Config(format!("Raft configuration: {e}")))?;
        let raft = Raft::new(
            group.me,
            Arc::new(raft_config),
            network.clone(),
            log,
            state.clone(),
        )
        .await
        .map_err(|e| Error::Config(format!("cannot start Raft: {e}")))?;
        if pristine {
            // Every leader of a new group does this with the same members: safe.
            if let Err(e) = raft.initialize(group.members()).await {
                tracing::debug!(error = %e, "Raft group already formed");
            }
        }
        if group.leaders.len() == 2 {
            tracing::warn!("two leaders cannot fail over: a majority of two is both; run three");
        }
        tracing::info!(
            me = %config.advertise,
            leaders = ?group.leaders,
            "leader started as a standby; Raft elects the active one"
        );
        let (role_sender, role) = watch::channel(Role::Standby { active: None });
        let shared = Arc::new(Shared {
            group,
            raft,
            state,
            network,
            role,
            confirmed_ms: AtomicU64::new(0),
            base: Instant::now(),
            trace: Arc::new(Trace::default()),
        });
        let manager = AbortOnDrop(tokio::spawn(
            manage(shared.clone(), role_sender, config.leader.clone()).in_current_span(),
        ));
        Ok(StandbyLeader {
            shared,
            http: None,
            _manager: manager,
            _lock: lock,
        })
    }

    /// Also serves the HTTP endpoints (`/metrics`, `/healthz`) on `listener`.
    pub fn with_http(mut self, listener: tokio::net::TcpListener) -> Self {
        self.http = Some(listener);
        self
    }

    /// Serves clients and the other leaders on `listener` until `shutdown` resolves.
    pub async fn serve(self, listener: Listener, shutdown: impl Future<Output = ()>) -> Result<()> {
        let (router, health) =
            server::router_with_admin_services(&["api.KeyValueAPI", "rpc.Admin", "rpc.LeaderRaft"])
                .await;
        // Serving while some leader is active (this one, or one to forward to).
        let mut role = self.shared.role.clone();
        let reporter = health.clone();
        let _health = AbortOnDrop(tokio::spawn(async move {
            loop {
                let serving = match &*role.borrow_and_update() {
                    Role::Active(_) => true,
                    Role::Standby { active } => active.is_some(),
                };
                reporter.set_serving(serving).await;
                if role.changed().await.is_err() {
                    return;
                }
            }
        }));
        let dispatch = Dispatch::new(self.shared.clone());
        let status = dispatch.clone();
        let pages = LeaderPages {
            status: Arc::new(move || status.status()),
            trace: self.shared.trace.clone(),
        };
        let stop_http = server::spawn_http(self.http, &health, Some(pages));
        let shutdown = async move {
            shutdown.await;
            health.set_serving(false).await;
            stop_http.send_replace(true);
        };
        let raft_service = RaftService::new(self.shared.raft.clone(), self.shared.group.clone());
        let router = router
            .add_service(api_server(dispatch.clone()))
            .add_service(rpc::admin_server::AdminServer::new(dispatch))
            .add_service(
                rpc::leader_raft_server::LeaderRaftServer::new(raft_service)
                    .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES),
            );
        let served = listener.serve(router, shutdown).await;
        let _ = self.shared.raft.shutdown().await;
        served.map_err(Error::from)
    }
}

/// A leader started alone keeps its journal in `path`; a leader with standbys keeps
/// it in Raft. Refuses to start over a single leader's journal that holds records,
/// rather than leave them behind.
fn refuse_single_leader_journal(path: &std::path::Path) -> Result<()> {
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if len == 0 {
        return Ok(());
    }
    let holds_records = std::fs::read(path)
        .map(|bytes| bytes.iter().any(|&b| b != 0))
        .unwrap_or(true);
    if holds_records {
        return Err(Error::Config(format!(
            "{} holds a single leader's journal; a leader with --peer keeps its state with \
             the other leaders instead. Start the standby leaders with new --journal-dir \
             directories (the followers keep their data), or run this one without --peer",
            path.display()
        )));
    }
    Ok(())
}

/// Runs the roles: standby until Raft elects this leader, then takes over, then
/// stands down when it must, and so on.
async fn manage(shared: Arc<Shared>, role: watch::Sender<Role>, config: LeaderConfig) {
    let me = shared.group.me;
    metrics::LEADER_ACTIVE.set(0);
    let mut raft_metrics = shared.raft.metrics();
    loop {
        // Standby: say who is active, until it is this leader.
        loop {
            let (state, leader) = {
                let m = raft_metrics.borrow_and_update();
                (m.state, m.current_leader)
            };
            if state == ServerState::Leader && leader == Some(me) {
                break;
            }
            role.send_if_modified(|r| match r {
                Role::Standby { active } if *active == leader => false,
                _ => {
                    *r = Role::Standby { active: leader };
                    true
                }
            });
            if raft_metrics.changed().await.is_err() {
                return;
            }
        }
        let active = match take_over(&shared, &config).await {
            Ok(active) => Arc::new(active),
            Err(why) => {
                tracing::warn!(reason = %why, "could not take over; trying again");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let mut fatal = active.coordinator.fatal();
        role.send_replace(Role::Active(active.clone()));
        metrics::LEADER_ACTIVE.set(1);
        metrics::LEADER_CHANGES
            .with_label_values(&["took_over"])
            .inc();
        let confirm = AbortOnDrop(tokio::spawn(confirm(shared.clone()).in_current_span()));
        let why = hold(&shared, &mut raft_metrics, &mut fatal).await;
        tracing::warn!(reason = %why, "standing down");
        role.send_replace(Role::Standby { active: None });
        metrics::LEADER_ACTIVE.set(0);
        metrics::LEADER_CHANGES
            .with_label_values(&["stood_down"])
            .inc();
        shared.confirmed_ms.store(0, Ordering::Relaxed);
        drop(confirm);
        active.coordinator.stop(why);
    }
}

/// Takes over as the active leader (see the module documentation).
async fn take_over(shared: &Shared, config: &LeaderConfig) -> std::result::Result<Active, String> {
    crash_point("leader-before-takeover");
    let raft = &shared.raft;
    // The heartbeat round that confirms the leadership starts after this.
    let started = Instant::now();
    raft.ensure_linearizable()
        .await
        .map_err(|e| format!("not confirmed as the Raft leader: {e}"))?;
    let term = {
        let m = raft.metrics().borrow().clone();
        if m.state != ServerState::Leader || m.current_leader != Some(shared.group.me) {
            return Err("no longer the Raft leader".into());
        }
        m.current_term
    };
    let state = shared.state.state();
    let records = state
        .records
        .iter()
        .cloned()
        .map(LeaderRecord::try_from)
        .collect::<std::result::Result<Vec<_>, String>>()
        .map_err(|e| format!("the replicated journal holds a bad record: {e}"))?;
    let start = recover(records, config)?;
    // The new epoch is committed before anything is sent (the fence relies on it).
    let persist: Vec<Record> = start.persist.iter().map(Record::from).collect();
    let written = raft
        .client_write(ControlEntry {
            term,
            rewrite: false,
            records: persist.clone(),
        })
        .await
        .map_err(|e| format!("the new epoch was not committed: {e}"))?;
    if !written.data {
        return Err(format!("term {term} ended during the takeover"));
    }
    shared.confirm(started);
    crash_point("leader-after-takeover");
    let mut journal = state.records;
    journal.extend(persist);
    let journal = ReplicatedJournal::start(raft.clone(), term, &journal);
    tracing::info!(
        term,
        epoch = start.core.epoch(),
        "taking over as the active leader"
    );
    Active::start(
        start.core,
        LeaderJournal::Replicated(journal),
        config,
        shared.trace.clone(),
    )
    .map_err(|e| e.to_string())
}

/// Follows the start of the last heartbeat round a quorum of leaders acknowledged:
/// openraft reports how long ago that was with each of its metrics, at least once per
/// heartbeat while this leader leads. Reported late (the metrics are not read at
/// once), it only looks fresher by that delay, which the lease's margin covers.
async fn confirm(shared: Arc<Shared>) {
    let mut raft_metrics = shared.raft.metrics();
    loop {
        let acked = raft_metrics.borrow_and_update().millis_since_quorum_ack;
        if let Some(ago) = acked {
            if let Some(at) = Instant::now().checked_sub(Duration::from_millis(ago)) {
                shared.confirm(at);
            }
        }
        if raft_metrics.changed().await.is_err() {
            return;
        }
    }
}

/// Waits until this leader must stand down, and says why.
async fn hold(
    shared: &Shared,
    raft_metrics: &mut watch::Receiver<openraft::RaftMetrics<NodeId, openraft::BasicNode>>,
    fatal: &mut watch::Receiver<Option<String>>,
) -> String {
    let me = shared.group.me;
    let mut check = tokio::time::interval(CONFIRM_EVERY);
    loop {
        tokio::select! {
            changed = raft_metrics.changed() => {
                if changed.is_err() {
                    return "Raft stopped".into();
                }
                let m = raft_metrics.borrow_and_update();
                if m.state != ServerState::Leader || m.current_leader != Some(me) {
                    return format!("Raft term {} has another leader", m.current_term);
                }
            }
            failed = fatal.wait_for(Option::is_some) => {
                return match failed {
                    Ok(why) => format!("the coordinator stopped: {}", why.clone().unwrap_or_default()),
                    Err(_) => "the coordinator stopped".into(),
                };
            }
            _ = check.tick() => {
                if !shared.holds_lease() {
                    return format!(
                        "no quorum of leaders confirmed this one within {READ_LEASE_MS} ms"
                    );
                }
            }
        }
    }
}

impl Shared {
    fn confirm(&self, started: Instant) {
        let ms = started.duration_since(self.base).as_millis() as u64 + 1;
        self.confirmed_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Whether this leader's last confirmed heartbeat round started within the lease.
    pub(super) fn holds_lease(&self) -> bool {
        let confirmed = self.confirmed_ms.load(Ordering::Relaxed);
        let now = self.base.elapsed().as_millis() as u64 + 1;
        confirmed > 0 && now.saturating_sub(confirmed) < READ_LEASE_MS
    }

    /// The client address of the active leader, as the leaders name it.
    pub(super) fn active_address(&self) -> Option<String> {
        match &*self.role.borrow() {
            Role::Active(_) => Some(self.group.address(self.group.me)?.to_string()),
            Role::Standby { active } => Some(self.group.address((*active)?)?.to_string()),
        }
    }
}
