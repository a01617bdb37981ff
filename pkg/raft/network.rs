//! Raft between the leaders, over gRPC on their own port (`rpc.LeaderRaft`).
//!
//! A message carries openraft's request (or its `Result`) as JSON, and the sender's
//! group fingerprint ([`super::Group`]). A leader refuses a message of another group
//! (FAILED_PRECONDITION naming both), and one that does not decode or breaks Raft's
//! rules (INVALID_ARGUMENT, `validate.rs`): openraft trusts its peers, so what reaches
//! it is checked first. Each peer is dialled over one pooled channel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::{validate, Group, NodeId, Raft, TypeConfig};
use crate::limits::MAX_GRPC_MESSAGE_BYTES;
use crate::net::{self, Address};
use crate::proto::rpc;
use crate::proto::rpc::leader_raft_client::LeaderRaftClient;

/// How long to wait for a peer's connection (each call has openraft's own deadline).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// openraft's network: a connection to each other leader.
#[derive(Clone)]
pub struct Network {
    group: Arc<Group>,
    channels: Arc<Mutex<HashMap<NodeId, Channel>>>,
    heard: Heard,
}

/// When each leader last answered this one.
type Heard = Arc<Mutex<HashMap<NodeId, std::time::Instant>>>;

impl Network {
    pub fn new(group: Arc<Group>) -> Network {
        Network {
            group,
            channels: Arc::default(),
            heard: Arc::default(),
        }
    }

    /// How long ago leader `id` last answered this one (`None`: never).
    pub fn heard_from(&self, id: NodeId) -> Option<std::time::Duration> {
        let heard = self.heard.lock().unwrap_or_else(|p| p.into_inner());
        heard.get(&id).map(|at| at.elapsed())
    }

    /// The channel to leader `id`, one per leader, shared by Raft and by the calls a
    /// standby forwards.
    pub fn channel(&self, id: NodeId) -> Result<Channel, String> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(channel) = channels.get(&id) {
            return Ok(channel.clone());
        }
        let name = self.group.address(id).ok_or(format!("no leader {id}"))?;
        let address: Address = name.parse()?;
        let channel = net::connect_lazy(&address, CONNECT_TIMEOUT)?;
        channels.insert(id, channel.clone());
        Ok(channel)
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Connection {
        Connection {
            target,
            heard: self.heard.clone(),
            group: self.group.fingerprint.clone(),
            client: self.channel(target).map(|channel| {
                LeaderRaftClient::new(channel)
                    .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES)
            }),
        }
    }
}

/// A connection to one leader.
pub struct Connection {
    target: NodeId,
    heard: Heard,
    group: String,
    client: Result<LeaderRaftClient<Channel>, String>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failure(String);

impl Connection {
    /// Sends `message` by `call` and decodes the peer's `Result`.
    async fn send<Req, Resp, E, F, Fut>(
        &mut self,
        message: &Req,
        option: &RPCOption,
        call: F,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
        F: FnOnce(LeaderRaftClient<Channel>, Request<rpc::RaftRequest>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<rpc::RaftReply>, Status>>,
    {
        let client = match &self.client {
            Ok(client) => client.clone(),
            Err(why) => {
                return Err(RPCError::Unreachable(Unreachable::new(&Failure(
                    why.clone(),
                ))))
            }
        };
        let json =
            serde_json::to_vec(message).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut request = Request::new(rpc::RaftRequest {
            group: self.group.clone(),
            json,
        });
        request.set_timeout(option.hard_ttl());
        let reply = call(client, request).await.map_err(|status| {
            let failure = Failure(format!("leader {}: {}", self.target, status.message()));
            match status.code() {
                tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&failure)),
                _ => RPCError::Network(NetworkError::new(&failure)),
            }
        })?;
        let answer: Result<Resp, E> = serde_json::from_slice(&reply.into_inner().json)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.heard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(self.target, std::time::Instant::now());
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.send(&rpc, &option, |mut c, r| async move {
            c.append_entries(r).await
        })
        .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.send(&rpc, &option, |mut c, r| async move {
            c.install_snapshot(r).await
        })
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.send(&rpc, &option, |mut c, r| async move { c.vote(r).await })
            .await
    }
}

/// The server side: hands each message to the local Raft node.
#[derive(Clone)]
pub struct RaftService {
    raft: Raft,
    group: Arc<Group>,
}

impl RaftService {
    pub fn new(raft: Raft, group: Arc<Group>) -> RaftService {
        RaftService { raft, group }
    }

    /// The message in `request`, if it is of this group, decodes, and passes `check`
    /// (`validate.rs`).
    fn decode<T: DeserializeOwned>(
        &self,
        request: Request<rpc::RaftRequest>,
        check: impl FnOnce(&Group, &T) -> Result<(), String>,
    ) -> Result<T, Status> {
        let rpc::RaftRequest { group, json } = request.into_inner();
        if group != self.group.fingerprint {
            tracing::warn!(theirs = %group, ours = %self.group.fingerprint, "a leader of another group called; every leader must name the same leaders, followers and replication");
            return Err(Status::failed_precondition(format!(
                "this leader's group is [{}], the caller's is [{group}]: every leader must be \
                 started with the same leaders (--peer and --advertise), --follower list and \
                 --replication",
                self.group.fingerprint
            )));
        }
        let message: T = serde_json::from_slice(&json)
            .map_err(|e| Status::invalid_argument(format!("not a Raft message: {e}")))?;
        check(&self.group, &message).map_err(|why| {
            tracing::warn!(%why, "refused a Raft message that breaks Raft's rules");
            Status::invalid_argument(format!("refused: {why}"))
        })?;
        Ok(message)
    }
}

fn reply<T: Serialize>(answer: &T) -> Result<Response<rpc::RaftReply>, Status> {
    serde_json::to_vec(answer)
        .map(|json| Response::new(rpc::RaftReply { json }))
        .map_err(|e| Status::internal(format!("cannot encode the Raft answer: {e}")))
}

#[tonic::async_trait]
impl rpc::leader_raft_server::LeaderRaft for RaftService {
    async fn append_entries(
        &self,
        request: Request<rpc::RaftRequest>,
    ) -> Result<Response<rpc::RaftReply>, Status> {
        let message: AppendEntriesRequest<TypeConfig> =
            self.decode(request, validate::append_entries)?;
        reply(&self.raft.append_entries(message).await)
    }

    async fn vote(
        &self,
        request: Request<rpc::RaftRequest>,
    ) -> Result<Response<rpc::RaftReply>, Status> {
        let message: VoteRequest<NodeId> = self.decode(request, validate::vote_request)?;
        reply(&self.raft.vote(message).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<rpc::RaftRequest>,
    ) -> Result<Response<rpc::RaftReply>, Status> {
        let message: InstallSnapshotRequest<TypeConfig> =
            self.decode(request, validate::install_snapshot)?;
        reply(&self.raft.install_snapshot(message).await)
    }
}
