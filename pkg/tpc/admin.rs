//! The leader's operator view (`rpc.Admin/Status`, what `tpc status` shows): each
//! follower's link, the unfinished transactions with their phase, the journal's size.
//!
//! The view is taken when asked for, under the coordinator's short-held lock, so a
//! transaction shows up from its `begin` on, while it votes.

use std::time::UNIX_EPOCH;

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::leader_core::{LeaderCore, Phase};
use super::link::Link;
use crate::proto::rpc;

/// The coordinator's transactions and journal, as `tpc status` shows them.
#[derive(Clone, Debug, Default)]
pub struct LeaderView {
    /// Unfinished transactions, oldest first.
    pub transactions: Vec<rpc::TransactionStatus>,
    /// The journal file's size.
    pub journal_bytes: u64,
    /// Records in the journal since its last checkpoint.
    pub journal_records: u64,
}

impl LeaderView {
    /// The view of `core` and a journal of that size.
    pub fn of(core: &LeaderCore, journal_bytes: u64, journal_records: u64) -> LeaderView {
        let transactions = core
            .txns()
            .iter()
            .map(|(txid, txn)| {
                let (phase, awaiting) = match &txn.phase {
                    Phase::Voting => ("voting".to_string(), Vec::new()),
                    Phase::Decided { outcome, awaiting } => (
                        outcome.as_str().to_string(),
                        awaiting.iter().cloned().collect(),
                    ),
                };
                rpc::TransactionStatus {
                    txid: txid.to_string(),
                    key: txn.key.clone(),
                    phase,
                    awaiting,
                }
            })
            .collect();
        LeaderView {
            transactions,
            journal_bytes,
            journal_records,
        }
    }
}

/// The leader's `rpc.Admin` service.
#[derive(Clone)]
pub struct AdminService {
    /// The links to the followers.
    pub links: Vec<Link>,
    /// Takes the coordinator's view now.
    pub view: Arc<dyn Fn() -> LeaderView + Send + Sync>,
    /// The cluster id.
    pub cluster_id: String,
    /// This leader's epoch.
    pub epoch: u64,
}

impl AdminService {
    /// The status now.
    pub fn snapshot(&self) -> rpc::StatusReply {
        let view = (self.view)();
        let followers = self
            .links
            .iter()
            .map(|link| {
                let status = link.status();
                rpc::FollowerStatus {
                    address: link.name().to_string(),
                    connected: status.connected,
                    last_contact_unix_ms: status
                        .last_contact
                        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_millis() as i64),
                    last_error: status.last_error.unwrap_or_default(),
                    pending_decisions: status.pending_decisions as u32,
                }
            })
            .collect();
        rpc::StatusReply {
            version: env!("CARGO_PKG_VERSION").to_string(),
            role: "leader".into(),
            cluster_id: self.cluster_id.clone(),
            epoch: self.epoch,
            followers,
            transactions: view.transactions,
            journal_bytes: view.journal_bytes,
            journal_records: view.journal_records,
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
}
