//! The leader's operator view (`rpc.Admin/Status`, what `tpc status` shows): each
//! follower's link, the unfinished transactions with their phase (and, after a restart,
//! those still in doubt), the journal's size.
//!
//! The view is taken when asked for, under the coordinator's short-held lock, so a
//! transaction shows up from its start on, while it votes.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use tonic::{Request, Response, Status};

use super::coordinator::Coordinator;
use super::leader_core::{LeaderCore, Phase};
use super::link::Link;
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
                }
            })
            .collect();
        let membership = core.membership();
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
        let members = view
            .members
            .iter()
            .map(|(id, address)| {
                let connected = self
                    .links
                    .iter()
                    .find(|link| link.name() == address)
                    .is_some_and(|link| link.status().connected);
                rpc::Member {
                    id: id.to_string(),
                    address: address.clone(),
                    state: if connected { "active" } else { "down" }.into(),
                }
            })
            .collect();
        rpc::MembersReply {
            epoch: view.epoch,
            replication: view.replication as u32,
            members,
            moving_keys: 0,
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
}
