//! The leader's operator view (`rpc.Admin/Status`, what `tpc status` shows): each
//! follower's link, the unfinished transactions with their phase (and, after a restart,
//! those still in doubt), the journal's size.
//!
//! The view is taken when asked for, under the coordinator's short-held lock, so a
//! transaction shows up from its start on, while it votes.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use tonic::{Request, Response, Status};

use super::coordinator::Coordinator;
use super::leader_core::{LeaderCore, Phase};
use super::link::Link;
use super::view_change::Reports;
use crate::placement::MemberId;
use crate::proto::rpc;

/// The transactions of `core` as `tpc status` shows them, oldest first.
pub fn transactions(core: &LeaderCore) -> Vec<rpc::TransactionStatus> {
    let mut transactions: Vec<rpc::TransactionStatus> = core
        .txns()
        .iter()
        .map(|(txid, txn)| {
            let phase = match &txn.phase {
                Phase::Voting => "voting".to_string(),
                Phase::Journaling { outcome } => format!("{} (journaling)", outcome.as_str()),
                Phase::Decided { outcome, .. } => outcome.as_str().to_string(),
            };
            rpc::TransactionStatus {
                txid: txid.to_string(),
                key: txn.key.clone(),
                phase,
                awaiting: core.awaiting(txn),
            }
        })
        .collect();
    transactions.extend(core.recovery().in_doubt().iter().map(|(txid, txn)| {
        rpc::TransactionStatus {
            txid: txid.to_string(),
            key: txn.key.clone(),
            phase: "in doubt".into(),
            awaiting: txn
                .participants
                .iter()
                .filter(|&&f| !core.recovery().has_reported(f))
                .map(|&f| core.followers()[f].clone())
                .chain(txn.strangers.iter().cloned())
                .collect(),
        }
    }));
    transactions
}

/// The leader's `rpc.Admin` service.
#[derive(Clone)]
pub struct AdminService {
    /// The links to the followers.
    pub links: Vec<Link>,
    /// The coordinator, whose core holds the protocol state.
    pub coordinator: Arc<Coordinator>,
    /// The cluster id.
    pub cluster_id: String,
    /// This leader's epoch.
    pub epoch: u64,
    /// What the followers report: the change of the members under way, and the keys
    /// each holds.
    pub reports: Arc<Reports>,
}

impl AdminService {
    /// The status now.
    pub fn snapshot(&self) -> rpc::StatusReply {
        let (journal_bytes, journal_records) = self.coordinator.journal_size();
        let started = self.coordinator.started_at();
        let core = self.coordinator.core();
        let followers = self
            .links
            .iter()
            .enumerate()
            .map(|(f, link)| {
                let runtime = link.status();
                let keys = self.reports.keys(link.name());
                let view = core.link_view(f);
                let contact = view.last_contact.map(|d| started + d);
                let last_contact = contact.max(runtime.probed);
                let last_error = if runtime.connected {
                    None
                } else {
                    runtime.probe_error.or(view.last_error)
                };
                rpc::FollowerStatus {
                    address: link.name().to_string(),
                    connected: runtime.connected,
                    last_contact_unix_ms: last_contact
                        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_millis() as i64),
                    last_error: last_error.unwrap_or_default(),
                    pending_decisions: view.pending as u32,
                    member_id: view.member_id.unwrap_or_default(),
                    keys: keys.unwrap_or_default(),
                    keys_counted: keys.is_some(),
                }
            })
            .collect();
        let membership = core.membership();
        let progress = self.reports.progress();
        rpc::StatusReply {
            version: env!("CARGO_PKG_VERSION").to_string(),
            role: "leader".into(),
            cluster_id: self.cluster_id.clone(),
            epoch: self.epoch,
            followers,
            transactions: transactions(&core),
            journal_bytes,
            journal_records,
            view_epoch: membership.current().map_or(0, |v| v.epoch),
            replication: membership.replication() as u32,
            next_view_epoch: membership.next().map_or(0, |v| v.epoch),
            moving_keys: progress.keys,
            moving_bytes: progress.bytes,
            ..Default::default()
        }
    }
}

impl AdminService {
    /// The view, each member with its state.
    pub fn members(&self) -> rpc::MembersReply {
        let core = self.coordinator.core();
        let membership = core.membership();
        let Some(view) = membership.current() else {
            return rpc::MembersReply {
                replication: membership.replication() as u32,
                ..Default::default()
            };
        };
        let next = membership.next();
        let connected = |address: &str| {
            self.links
                .iter()
                .find(|link| link.name() == address)
                .is_some_and(|link| link.status().connected)
        };
        let member = |(id, address): &(MemberId, String), state: &str| {
            let keys = self.reports.keys(address);
            rpc::Member {
                id: id.to_string(),
                address: address.clone(),
                state: match connected(address) {
                    true => state.into(),
                    false => "down".into(),
                },
                keys: keys.unwrap_or_default(),
                keys_counted: keys.is_some(),
            }
        };
        let newest = next.unwrap_or(view);
        let mut members: Vec<rpc::Member> = newest
            .members
            .iter()
            .map(|m| {
                member(
                    m,
                    if view.members.contains(m) {
                        "active"
                    } else {
                        "joining"
                    },
                )
            })
            .collect();
        members.extend(
            view.members
                .iter()
                .filter(|m| !newest.members.contains(m))
                .map(|m| member(m, "leaving")),
        );
        // Removed for being unreachable: listed down until they rejoin.
        for address in membership.down() {
            if !members.iter().any(|m| m.address == address) {
                let f = core.followers().iter().position(|a| a == address);
                let id = f
                    .and_then(|f| membership.told_id(f))
                    .map(|id| id.to_string());
                members.push(rpc::Member {
                    id: id.unwrap_or_default(),
                    address: address.to_string(),
                    state: "down".into(),
                    ..Default::default()
                });
            }
        }
        let progress = self.reports.progress();
        let (moving_keys, moving_bytes) = match next {
            Some(next) if next.epoch == progress.epoch => (progress.keys.max(1), progress.bytes),
            Some(_) => (1, 0),
            None => (0, 0),
        };
        rpc::MembersReply {
            epoch: newest.epoch,
            replication: view.replication as u32,
            members,
            moving_keys,
            moving_bytes,
        }
    }
}

#[tonic::async_trait]
impl rpc::admin_server::Admin for AdminService {
    async fn status(
        &self,
        _: Request<rpc::StatusRequest>,
    ) -> std::result::Result<Response<rpc::StatusReply>, Status> {
        Ok(Response::new(self.snapshot()))
    }

    async fn members(
        &self,
        _: Request<rpc::MembersRequest>,
    ) -> std::result::Result<Response<rpc::MembersReply>, Status> {
        Ok(Response::new(self.members()))
    }

    /// Starts the change, and answers once its next view is durable.
    async fn change_members(
        &self,
        request: Request<rpc::ChangeMembersRequest>,
    ) -> std::result::Result<Response<rpc::ChangeMembersReply>, Status> {
        let rpc::ChangeMembersRequest { address, add } = request.into_inner();
        if address.is_empty() || address.len() > 1024 {
            return Err(Status::invalid_argument(
                "give the follower's address, as the leader dials it (1 to 1024 bytes)",
            ));
        }
        let epoch = self
            .coordinator
            .change_members(address, add)
            .await
            .map_err(Status::failed_precondition)?;
        let durable = || {
            let core = self.coordinator.core();
            let membership = core.membership();
            membership.next().map(|v| v.epoch) == Some(epoch)
                || membership.current().is_some_and(|v| v.epoch >= epoch)
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !durable() {
            if tokio::time::Instant::now() > deadline {
                return Err(Status::unavailable(format!(
                    "view {epoch} is not durable in the leader's journal after 10 s; see \
                     `tpc members list`"
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(Response::new(rpc::ChangeMembersReply { epoch }))
    }
}
