//! What every node serves besides its role's own services: gRPC health checking
//! (`grpc.health.v1.Health`) and server reflection (v1 and v1alpha), so that load
//! balancers, orchestrators and `grpcurl` work with tpc without its protos.
//!
//! Health is `NOT_SERVING` until the node is ready (a follower: its journal replayed; a
//! leader: its journal recovered) and again once it starts shutting down. It is reported
//! for the whole server (`""`) and for each of its services by name.

use tonic::transport::server::Router;
use tonic::transport::Server;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::proto::FILE_DESCRIPTOR_SET;

/// A node's health, as reported over `grpc.health.v1.Health`.
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    services: &'static [&'static str],
}

impl Health {
    /// Reports the node (and each of its services) as serving or not.
    pub async fn set_serving(&self, serving: bool) {
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
}

/// A server builder with health (initially `NOT_SERVING` for the server and each of
/// `services`, the node's own gRPC service names) and reflection added.
pub async fn router_with_admin_services(services: &'static [&'static str]) -> (Router, Health) {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let health = Health { reporter, services };
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
