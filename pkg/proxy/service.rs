//! The proxy's gRPC services: `TPCMsg` and `Reads` streams through two lanes each, and
//! unary `KeyValueAPI` calls forwarded as they are.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::lane::{mix, stream_rng, Describe, Direction, Lane, LaneEnd};
use super::{FaultControl, ProxyConfig};
use crate::limits::MAX_GRPC_MESSAGE_BYTES;
use crate::net::{self, Address, Listener};
use crate::proto::api::key_value_api_client::KeyValueApiClient;
use crate::proto::api::{self, key_value_api_server::KeyValueApiServer};
use crate::proto::rpc::follower_reads_client::FollowerReadsClient;
use crate::proto::rpc::follower_reads_server::FollowerReadsServer;
use crate::proto::rpc::two_phase_commit_client::TwoPhaseCommitClient;
use crate::proto::rpc::{self, two_phase_commit_server::TwoPhaseCommitServer};
use crate::{Error, Result};

/// How long the proxy tries to reach its target for a new stream or a unary call.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The status that ends the leader's stream when a cut fault fires.
fn cut_status() -> Status {
    Status::unavailable("proxy cut the stream")
}

fn shutting_down() -> Status {
    Status::unavailable("proxy is shutting down")
}

pub(super) async fn serve(
    config: ProxyConfig,
    control: FaultControl,
    listener: Listener,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let reads = net::connect_lazy(&config.target, CONNECT_TIMEOUT).map_err(Error::Config)?;
    let (stop, stopped) = watch::channel(false);
    let service = ProxyService {
        inner: Arc::new(Inner {
            target: config.target,
            seed: config.seed,
            control,
            next_stream: AtomicU64::new(1),
            unary_rng: Mutex::new(StdRng::seed_from_u64(mix(config.seed ^ 0x0a11_ca11))),
            reads: KeyValueApiClient::new(reads)
                .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES),
            stopped,
        }),
    };
    let router = tonic::transport::Server::builder()
        .add_service(
            TwoPhaseCommitServer::new(service.clone())
                .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES),
        )
        .add_service(
            FollowerReadsServer::new(service.clone())
                .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES),
        )
        .add_service(
            KeyValueApiServer::new(service)
                .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES),
        );
    // Long-lived streams would hold a graceful shutdown open: end them first.
    let shutdown = async move {
        shutdown.await;
        let _ = stop.send(true);
    };
    listener.serve(router, shutdown).await.map_err(Error::from)
}

#[derive(Clone)]
struct ProxyService {
    inner: Arc<Inner>,
}

struct Inner {
    target: Address,
    seed: u64,
    control: FaultControl,
    next_stream: AtomicU64,
    /// Unary calls' fault decisions: one RNG for all of them.
    unary_rng: Mutex<StdRng>,
    reads: KeyValueApiClient<Channel>,
    /// Becomes true when the proxy shuts down.
    stopped: watch::Receiver<bool>,
}

#[tonic::async_trait]
impl rpc::two_phase_commit_server::TwoPhaseCommit for ProxyService {
    type TPCMsgStream = UnboundedReceiverStream<std::result::Result<rpc::Response, Status>>;

    async fn tpc_msg(
        &self,
        request: Request<Streaming<rpc::LeaderMsg>>,
    ) -> std::result::Result<Response<Self::TPCMsgStream>, Status> {
        self.proxy_stream(request.into_inner(), |channel, down| async move {
            TwoPhaseCommitClient::new(channel)
                .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                .tpc_msg(down)
                .await
        })
        .await
    }
}

#[tonic::async_trait]
impl rpc::follower_reads_server::FollowerReads for ProxyService {
    type ReadsStream = UnboundedReceiverStream<std::result::Result<rpc::ReadReply, Status>>;

    /// The leader's forwarded reads go through the same faults as its 2PC stream (a
    /// target that doesn't serve them answers UNIMPLEMENTED, passed on unchanged).
    async fn reads(
        &self,
        request: Request<Streaming<rpc::ReadRequest>>,
    ) -> std::result::Result<Response<Self::ReadsStream>, Status> {
        self.proxy_stream(request.into_inner(), |channel, down| async move {
            FollowerReadsClient::new(channel)
                .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                .reads(down)
                .await
        })
        .await
    }

    type CopyStream = Streaming<rpc::CopyBatch>;

    /// A copy between followers while the members change (their view names the
    /// proxy's address when the leader dials it): passed on without faults.
    async fn copy(
        &self,
        request: Request<rpc::CopyRequest>,
    ) -> std::result::Result<Response<Self::CopyStream>, Status> {
        self.target_reads().await?.copy(request.into_inner()).await
    }

    async fn catch_up(
        &self,
        request: Request<rpc::CatchUpRequest>,
    ) -> std::result::Result<Response<rpc::CatchUpReply>, Status> {
        self.target_reads()
            .await?
            .catch_up(request.into_inner())
            .await
    }

    /// The leader's lease, through the faults of a unary call (dropped or delayed).
    async fn lease(
        &self,
        request: Request<rpc::LeaseRequest>,
    ) -> std::result::Result<Response<rpc::LeaseReply>, Status> {
        let (dropped, delay) = self.unary_faults();
        if dropped {
            return Err(Status::unavailable("proxy dropped the call"));
        }
        tokio::time::sleep(delay).await;
        self.target_reads().await?.lease(request.into_inner()).await
    }

    async fn ask_decision(
        &self,
        request: Request<rpc::DecisionRequest>,
    ) -> std::result::Result<Response<rpc::DecisionReply>, Status> {
        let (dropped, delay) = self.unary_faults();
        if dropped {
            return Err(Status::unavailable("proxy dropped the call"));
        }
        tokio::time::sleep(delay).await;
        self.target_reads()
            .await?
            .ask_decision(request.into_inner())
            .await
    }
}

impl ProxyService {
    /// A `FollowerReads` client of the target.
    async fn target_reads(&self) -> std::result::Result<FollowerReadsClient<Channel>, Status> {
        let channel = net::connect(&self.inner.target, CONNECT_TIMEOUT)
            .await
            .map_err(|e| Status::unavailable(format!("proxy: target unreachable: {e}")))?;
        Ok(FollowerReadsClient::new(channel)
            .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES))
    }
}

impl ProxyService {
    /// Joins the leader's stream `inbound` to a new stream to the target, opened by
    /// `open`; answers the leader once the target's response headers arrive.
    async fn proxy_stream<Req, Resp, Open, Opened>(
        &self,
        inbound: Streaming<Req>,
        open: Open,
    ) -> std::result::Result<
        Response<UnboundedReceiverStream<std::result::Result<Resp, Status>>>,
        Status,
    >
    where
        Req: Clone + Describe + Send + 'static,
        Resp: Clone + Describe + Send + 'static,
        Open: FnOnce(Channel, UnboundedReceiverStream<Req>) -> Opened + Send + 'static,
        Opened: Future<Output = std::result::Result<Response<Streaming<Resp>>, Status>>
            + Send
            + 'static,
    {
        let stream = self.inner.next_stream.fetch_add(1, Ordering::Relaxed);
        let channel = net::connect(&self.inner.target, CONNECT_TIMEOUT)
            .await
            .map_err(|e| {
                tracing::debug!(stream, error = %e, "target unreachable");
                Status::unavailable(format!("proxy: target unreachable: {e}"))
            })?;
        let (up, up_rx) = mpsc::unbounded_channel();
        let (headers, headers_rx) = oneshot::channel();
        let session = Session {
            stream,
            seed: self.inner.seed,
            control: self.inner.control.clone(),
            stopped: self.inner.stopped.clone(),
        };
        let span = tracing::debug_span!("proxy stream", stream);
        let call = move |down| open(channel, down);
        tokio::spawn(session.run(inbound, call, up, headers).instrument(span));
        // The leader gets our headers when the target's arrive (or the target's error).
        match headers_rx.await {
            Ok(Ok(())) => Ok(Response::new(UnboundedReceiverStream::new(up_rx))),
            Ok(Err(status)) => Err(status),
            Err(_) => Err(Status::unavailable("proxy: the stream ended")),
        }
    }
}

/// One proxied stream: the leader's and the target's, joined by two lanes.
struct Session {
    stream: u64,
    seed: u64,
    control: FaultControl,
    stopped: watch::Receiver<bool>,
}

impl Session {
    fn lane(&self, direction: Direction) -> Lane {
        Lane {
            direction,
            stream: self.stream,
            rng: stream_rng(self.seed, self.stream, direction),
            control: self.control.clone(),
        }
    }

    async fn run<Req, Resp, Call, Called>(
        self,
        inbound: Streaming<Req>,
        call: Call,
        up: mpsc::UnboundedSender<std::result::Result<Resp, Status>>,
        headers: oneshot::Sender<std::result::Result<(), Status>>,
    ) where
        Req: Clone + Describe + Send + 'static,
        Resp: Clone + Describe + Send + 'static,
        Call: FnOnce(UnboundedReceiverStream<Req>) -> Called,
        Called: Future<Output = std::result::Result<Response<Streaming<Resp>>, Status>>,
    {
        tracing::debug!("leader stream opened");
        let mut stopped = self.stopped.clone();
        // Downstream starts at once: the first message must be on its way before the
        // target's response headers are awaited (classic peers send them with a reply).
        let (down, down_rx) = mpsc::unbounded_channel();
        let down_lane = self
            .lane(Direction::Down)
            .run(inbound, move |msg| down.send(msg).is_ok());
        tokio::pin!(down_lane);
        let mut down_done = false;
        let call = call(UnboundedReceiverStream::new(down_rx));
        tokio::pin!(call);
        let responses = loop {
            tokio::select! {
                answer = &mut call => match answer {
                    Ok(response) => break response.into_inner(),
                    Err(status) => {
                        tracing::debug!(%status, "target refused the stream");
                        let _ = headers.send(Err(status));
                        return;
                    }
                },
                end = &mut down_lane, if !down_done => match end {
                    // The leader half-closed, or the target stopped reading: its answer decides.
                    LaneEnd::Finished | LaneEnd::Closed => down_done = true,
                    LaneEnd::Cut => {
                        let _ = headers.send(Err(cut_status()));
                        return;
                    }
                    LaneEnd::Failed(status) => {
                        tracing::debug!(%status, "leader stream failed");
                        let _ = headers.send(Err(status));
                        return;
                    }
                },
                _ = stopped.wait_for(|s| *s) => {
                    let _ = headers.send(Err(shutting_down()));
                    return;
                }
            }
        };
        if headers.send(Ok(())).is_err() {
            return;
        }
        let up_out = up.clone();
        let up_lane = self
            .lane(Direction::Up)
            .run(responses, move |r| up_out.send(Ok(r)).is_ok());
        tokio::pin!(up_lane);
        loop {
            tokio::select! {
                end = &mut up_lane => {
                    match end {
                        LaneEnd::Finished => tracing::debug!("target ended the stream"),
                        LaneEnd::Failed(status) => {
                            tracing::debug!(%status, "target stream failed");
                            let _ = up.send(Err(status));
                        }
                        LaneEnd::Cut => {
                            let _ = up.send(Err(cut_status()));
                        }
                        LaneEnd::Closed => {}
                    }
                    return;
                }
                end = &mut down_lane, if !down_done => match end {
                    LaneEnd::Finished | LaneEnd::Closed => down_done = true,
                    LaneEnd::Cut => {
                        let _ = up.send(Err(cut_status()));
                        return;
                    }
                    LaneEnd::Failed(status) => {
                        tracing::debug!(%status, "leader stream failed");
                        return;
                    }
                },
                _ = up.closed() => {
                    tracing::debug!("leader went away");
                    return;
                }
                _ = stopped.wait_for(|s| *s) => {
                    let _ = up.send(Err(shutting_down()));
                    return;
                }
            }
        }
        // Returning drops both lanes: the target's request stream is closed and its
        // response stream cancelled; the leader's response stream ends.
    }
}

impl ProxyService {
    /// Draws a unary call's faults: whether it is dropped, and its delay.
    fn unary_faults(&self) -> (bool, Duration) {
        let faults = self.inner.control.get();
        let mut rng = self
            .inner
            .unary_rng
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let drop_roll: f64 = rng.random();
        let (min, max) = faults.delay_ms;
        let delay = Duration::from_millis(rng.random_range(min..=max.max(min)));
        (drop_roll < faults.drop, delay)
    }

    /// Forwards one unary call with its metadata (and so its deadline); the target's
    /// status code and message come back unchanged.
    async fn forward<Req, Resp, F, Fut>(
        &self,
        method: &'static str,
        request: Request<Req>,
        call: F,
    ) -> std::result::Result<Response<Resp>, Status>
    where
        F: FnOnce(KeyValueApiClient<Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = std::result::Result<Response<Resp>, Status>>,
    {
        let (dropped, delay) = self.unary_faults();
        if dropped {
            tracing::debug!(method, "fault: drop a call");
            return Err(Status::unavailable("proxy dropped the call"));
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let (metadata, _, message) = request.into_parts();
        let request = Request::from_parts(metadata, tonic::Extensions::default(), message);
        match call(self.inner.reads.clone(), request).await {
            Ok(response) => Ok(Response::new(response.into_inner())),
            Err(status) => Err(Status::new(status.code(), status.message())),
        }
    }
}

#[tonic::async_trait]
impl api::key_value_api_server::KeyValueApi for ProxyService {
    async fn get(
        &self,
        request: Request<api::GetRequest>,
    ) -> std::result::Result<Response<api::Response>, Status> {
        self.forward("Get", request, |mut c, r| async move { c.get(r).await })
            .await
    }

    async fn put(
        &self,
        request: Request<api::PutRequest>,
    ) -> std::result::Result<Response<api::Response>, Status> {
        self.forward("Put", request, |mut c, r| async move { c.put(r).await })
            .await
    }

    async fn delete(
        &self,
        request: Request<api::DeleteRequest>,
    ) -> std::result::Result<Response<api::Response>, Status> {
        self.forward(
            "Delete",
            request,
            |mut c, r| async move { c.delete(r).await },
        )
        .await
    }

    async fn txn(
        &self,
        request: Request<api::TxnRequest>,
    ) -> std::result::Result<Response<api::TxnResponse>, Status> {
        self.forward("Txn", request, |mut c, r| async move { c.txn(r).await })
            .await
    }
}
