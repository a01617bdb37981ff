//! Routing with standby leaders (DESIGN §9): every call is served by the active
//! leader.
//!
//! A standby forwards it over a pooled channel, marked `tpc-forwarded`, so a classic
//! client pointed at any leader works; a forwarded call that reaches a leader that is
//! not active is answered UNAVAILABLE (retry), never forwarded twice. UNAVAILABLE
//! keeps its meaning, "not applied": a write whose forward broke after it was sent is
//! answered UNKNOWN. The active leader serves a call only while it holds its lease
//! (`standby.rs`). `Status` is answered by every leader itself: the active one's view
//! of the cluster, or a standby's of the leaders.

use std::sync::Arc;
use std::time::Duration;

use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::leader::Active;
use super::records::LeaderRecord;
use super::standby::{Role, Shared};
use crate::journal::Record;
use crate::limits::MAX_GRPC_MESSAGE_BYTES;
use crate::proto::{api, rpc};
use crate::raft::NodeId;

/// The header a standby marks a forwarded call with.
const FORWARDED: &str = "tpc-forwarded";

/// Where a call goes.
enum Route {
    Here(Arc<Active>),
    There { channel: Channel, address: String },
}

/// The services every leader serves: here when active, else forwarded.
#[derive(Clone)]
pub(super) struct Dispatch {
    shared: Arc<Shared>,
}

impl Dispatch {
    pub(super) fn new(shared: Arc<Shared>) -> Dispatch {
        Dispatch { shared }
    }

    fn route<T>(&self, request: &Request<T>) -> std::result::Result<Route, Status> {
        let role = self.shared.role.borrow().clone();
        match role {
            Role::Active(active) if self.shared.holds_lease() => Ok(Route::Here(active)),
            Role::Active(_) => Err(Status::unavailable(
                "this leader could not confirm its leadership lately and is standing down; retry",
            )),
            Role::Standby { .. } if request.metadata().contains_key(FORWARDED) => {
                Err(Status::unavailable(
                    "a standby forwarded this call to a leader that is no longer active; retry",
                ))
            }
            Role::Standby { active: Some(id) } if id != self.shared.group.me => Ok(Route::There {
                channel: self.shared.network.channel(id).map_err(Status::internal)?,
                address: self.shared.group.address(id).unwrap_or_default().into(),
            }),
            Role::Standby { .. } => Err(Status::unavailable(
                "no leader is active yet (the leaders are electing one, or this one cannot reach a majority of them); retry",
            )),
        }
    }

    /// This leader's status: the active one's view of the cluster, or a standby's of
    /// the leaders; with each leader's role either way.
    pub(super) fn status(&self) -> rpc::StatusReply {
        let shared = &self.shared;
        let role = shared.role.borrow().clone();
        let mut status = match &role {
            Role::Active(active) => active.admin.snapshot(),
            Role::Standby { .. } => standby_status(&shared.state.state().records),
        };
        let active_id = match &role {
            Role::Active(_) => Some(shared.group.me),
            Role::Standby { active } => *active,
        };
        status.role = match role {
            Role::Active(_) => "active".into(),
            Role::Standby { .. } => "standby".into(),
        };
        status.active_leader = shared.active_address().unwrap_or_default();
        status.raft_term = shared.raft.metrics().borrow().current_term;
        status.leaders = shared
            .group
            .leaders
            .iter()
            .enumerate()
            .map(|(i, address)| {
                let id = i as NodeId + 1;
                let role = if Some(id) == active_id {
                    "active"
                } else if id == shared.group.me
                    || shared
                        .network
                        .heard_from(id)
                        .is_some_and(|ago| ago < Duration::from_secs(2))
                {
                    "standby"
                } else {
                    "unknown"
                };
                rpc::LeaderStatus {
                    address: address.clone(),
                    role: role.into(),
                }
            })
            .collect();
        status
    }
}

/// What a standby knows of the cluster: the id and epoch its replicated journal holds.
fn standby_status(records: &[Record]) -> rpc::StatusReply {
    let mut status = rpc::StatusReply {
        version: env!("CARGO_PKG_VERSION").to_string(),
        ..Default::default()
    };
    for record in records {
        if let Ok(LeaderRecord::Meta {
            cluster_id, epoch, ..
        }) = LeaderRecord::try_from(record.clone())
        {
            status.cluster_id = cluster_id;
            status.epoch = status.epoch.max(epoch);
        }
    }
    status
}

/// `request`, marked as forwarded, for the active leader.
fn forwarded<T>(request: Request<T>) -> Request<T> {
    let (mut metadata, _, message) = request.into_parts();
    metadata.insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    Request::from_parts(metadata, Default::default(), message)
}

/// The answer to a forwarded call whose transport failed: for a write that may have
/// been sent, UNKNOWN, since UNAVAILABLE promises it was not applied.
fn forward_failed(status: Status, address: &str, write: bool) -> Status {
    use std::error::Error as _;
    let Some(source) = status.source() else {
        return status; // The active leader's own answer.
    };
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source);
    let mut never_connected = false;
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            never_connected |= matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
            );
        }
        cause = e.source();
    }
    if write && !never_connected {
        Status::unknown(format!(
            "the active leader {address} stopped answering while this standby forwarded \
             the write; its outcome is unknown: {}",
            status.message()
        ))
    } else {
        Status::unavailable(format!(
            "the active leader {address} is unreachable; retry: {}",
            status.message()
        ))
    }
}

/// Serves a call here, on the active leader's `$service`, or forwards it with a
/// `$client` of the active leader.
macro_rules! dispatch {
    ($self:ident, $request:ident, $write:expr, $trait:ident :: $service:ident, $client:ident, $method:ident) => {{
        match $self.route(&$request)? {
            Route::Here(active) => $trait::$method(&active.$service, $request).await,
            Route::There { channel, address } => {
                let mut client = $client::new(channel)
                    .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
                client
                    .$method(forwarded($request))
                    .await
                    .map_err(|status| forward_failed(status, &address, $write))
            }
        }
    }};
}

use api::key_value_api_client::KeyValueApiClient;
use api::key_value_api_server::KeyValueApi;
use rpc::admin_client::AdminClient;
use rpc::admin_server::Admin;

#[tonic::async_trait]
impl KeyValueApi for Dispatch {
    async fn get(
        &self,
        request: Request<api::GetRequest>,
    ) -> std::result::Result<Response<api::Response>, Status> {
        dispatch!(
            self,
            request,
            false,
            KeyValueApi::service,
            KeyValueApiClient,
            get
        )
    }

    async fn put(
        &self,
        request: Request<api::PutRequest>,
    ) -> std::result::Result<Response<api::Response>, Status> {
        dispatch!(
            self,
            request,
            true,
            KeyValueApi::service,
            KeyValueApiClient,
            put
        )
    }

    async fn delete(
        &self,
        request: Request<api::DeleteRequest>,
    ) -> std::result::Result<Response<api::Response>, Status> {
        dispatch!(
            self,
            request,
            true,
            KeyValueApi::service,
            KeyValueApiClient,
            delete
        )
    }

    async fn txn(
        &self,
        request: Request<api::TxnRequest>,
    ) -> std::result::Result<Response<api::TxnResponse>, Status> {
        dispatch!(
            self,
            request,
            true,
            KeyValueApi::service,
            KeyValueApiClient,
            txn
        )
    }
}

#[tonic::async_trait]
impl Admin for Dispatch {
    async fn status(
        &self,
        _: Request<rpc::StatusRequest>,
    ) -> std::result::Result<Response<rpc::StatusReply>, Status> {
        Ok(Response::new(Dispatch::status(self)))
    }

    async fn members(
        &self,
        request: Request<rpc::MembersRequest>,
    ) -> std::result::Result<Response<rpc::MembersReply>, Status> {
        dispatch!(self, request, false, Admin::admin, AdminClient, members)
    }

    async fn change_members(
        &self,
        request: Request<rpc::ChangeMembersRequest>,
    ) -> std::result::Result<Response<rpc::ChangeMembersReply>, Status> {
        dispatch!(
            self,
            request,
            true,
            Admin::admin,
            AdminClient,
            change_members
        )
    }
}
