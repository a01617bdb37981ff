//! The HTTP side of a node (`--http-port`): `/metrics` in the Prometheus text format and
//! `/healthz` (200 when the node is ready, 503 while it replays its journal or shuts
//! down), for operators, load balancers and scrapers that don't speak gRPC.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::net;

/// Binds `--http-port` (all interfaces), so that a taken port stops the start.
pub fn bind(port: u16) -> std::io::Result<TcpListener> {
    net::bind_all_interfaces(port)
}

/// Serves the HTTP endpoints on `listener` until `shutdown` resolves. `ready` says
/// whether the node is ready.
pub async fn serve(
    listener: TcpListener,
    ready: watch::Receiver<bool>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(ready);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The routes, for tests.
pub fn router(ready: watch::Receiver<bool>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(ready)
}

async fn metrics() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(),
    )
}

async fn healthz(State(ready): State<watch::Receiver<bool>>) -> impl IntoResponse {
    if *ready.borrow() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}
