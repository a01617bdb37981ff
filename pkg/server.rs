//! What every node serves besides its role's own services: gRPC health checking
//! (`grpc.health.v1.Health`) and server reflection (v1 and v1alpha), so that load
//! balancers, orchestrators and `grpcurl` work with tpc without its protos.
//!
//! Health is `NOT_SERVING` until the node is ready (a follower: its journal replayed; a
//! leader: its journal recovered) and again once it starts shutting down. It is reported
//! for the whole server (`""`) and for each of its services by name.

use crate::http::LeaderPages;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::Router;
use tonic::transport::Server;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;
use tracing::Instrument;

use crate::proto::FILE_DESCRIPTOR_SET;

/// A node's health, as reported over `grpc.health.v1.Health`.
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    services: &'static [&'static str],
    serving: watch::Sender<bool>,
}

impl Health {
    /// Reports the node (and each of its services) as serving or not.
    pub async fn set_serving(&self, serving: bool) {
        self.serving.send_replace(serving);
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.reporter.set_service_status("", status).await;
        for name in self.services {
            self.reporter.set_service_status(name, status).await;
        }
    }

    /// Whether the node is serving, for other reports (`/healthz`).
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.serving.subscribe()
    }
}

/// Runs the HTTP endpoints on `listener` (if any) beside a gRPC server, until the
/// returned sender is told `true`.
pub fn spawn_http(
    listener: Option<TcpListener>,
    health: &Health,
    leader: Option<LeaderPages>,
) -> watch::Sender<bool> {
    let stop = watch::Sender::new(false);
    let Some(listener) = listener else {
        return stop;
    };
    let ready = health.watch();
    let mut stopped = stop.subscribe();
    tokio::spawn(
        async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|stopped| *stopped).await;
            };
            if let Err(e) = crate::http::serve(listener, ready, leader, shutdown).await {
                tracing::error!(error = %e, "HTTP endpoints failed");
            }
        }
        .in_current_span(),
    );
    stop
}

/// A server builder with health (initially `NOT_SERVING` for the server and each of
/// `services`, the node's own gRPC service names) and reflection added.
pub async fn router_with_admin_services(services: &'static [&'static str]) -> (Router, Health) {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let health = Health {
        reporter,
        services,
        serving: watch::Sender::new(false),
    };
    health.set_serving(false).await;
    let mut router = Server::builder().add_service(health_service);
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    match reflection.build_v1() {
        Ok(service) => router = router.add_service(service),
        Err(e) => tracing::warn!(error = %e, "gRPC reflection (v1) unavailable"),
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    match reflection.build_v1alpha() {
        Ok(service) => router = router.add_service(service),
        Err(e) => tracing::warn!(error = %e, "gRPC reflection (v1alpha) unavailable"),
    }
    (router, health)
}
