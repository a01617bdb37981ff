//! The HTTP side of a node (`--http-port`), for operators, load balancers, scrapers and
//! people with a browser:
//!
//! - `/metrics`: Prometheus text format (see [`crate::metrics`]);
//! - `/healthz`: 200 when the node is ready, 503 while it replays its journal or shuts
//!   down;
//! - on the leader, the **live view** at `/`: the cluster (followers up or down), the
//!   unfinished transactions with their phase, and a sequence diagram of the latest
//!   transactions' messages (PREPARE, votes, decision, ACKs) that updates as they
//!   happen. It is one HTML page with its script inline (`view.html`, embedded in the
//!   binary: no front-end build), polling `/api/status` (the `tpc status --json`
//!   document) and `/api/events?after=SEQ` (the message trace since the last event it
//!   saw). Polling keeps it simple and works the same in every browser and in
//!   headless test runs.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::net;
use crate::tpc::trace::{Trace, TraceEvent};

/// The live view page.
const VIEW: &str = include_str!("view.html");

/// What only a leader serves: its status and its message trace.
#[derive(Clone)]
pub struct LeaderPages {
    /// The source of `/api/status`.
    pub status: Arc<dyn Fn() -> crate::proto::rpc::StatusReply + Send + Sync>,
    /// The source of `/api/events`.
    pub trace: Arc<Trace>,
}

#[derive(Clone)]
struct AppState {
    ready: watch::Receiver<bool>,
    leader: Option<LeaderPages>,
}

/// Binds `--http-port` (all interfaces), so that a taken port stops the start.
pub fn bind(port: u16) -> std::io::Result<TcpListener> {
    net::bind_all_interfaces(port)
}

/// Serves the HTTP endpoints on `listener` until `shutdown` resolves. `ready` says
/// whether the node is ready; `leader` adds the leader's pages.
pub async fn serve(
    listener: TcpListener,
    ready: watch::Receiver<bool>,
    leader: Option<LeaderPages>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(ready, leader))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The routes.
pub fn router(ready: watch::Receiver<bool>, leader: Option<LeaderPages>) -> Router {
    let has_pages = leader.is_some();
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz));
    let router = if has_pages {
        router
            .route("/", get(view))
            .route("/api/status", get(status))
            .route("/api/events", get(events))
    } else {
        router
    };
    router.with_state(AppState { ready, leader })
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

async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    if *state.ready.borrow() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn view() -> Html<&'static str> {
    Html(VIEW)
}

async fn status(State(state): State<AppState>) -> Response {
    match state.leader {
        Some(pages) => {
            let mut json = crate::client::status::render_json(&(pages.status)());
            if crate::net::cut::is_cut() {
                // For the live view's banner (the console's `cut`, `pkg/net/cut.rs`).
                if let Ok(serde_json::Value::Object(mut fields)) = serde_json::from_str(&json) {
                    fields.insert("network_cut".into(), true.into());
                    json = serde_json::Value::Object(fields).to_string();
                }
            }
            ([(header::CONTENT_TYPE, "application/json")], json).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Query of `/api/events`.
#[derive(serde::Deserialize)]
struct After {
    /// Only events with a larger `seq` (default: all that are kept).
    #[serde(default)]
    after: u64,
}

/// The trace as JSON: the kept events with `seq` above `after`, oldest first. The page
/// polls it with the last `seq` it saw.
async fn events(State(state): State<AppState>, Query(query): Query<After>) -> Response {
    let Some(pages) = state.leader else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let events: Vec<TraceEvent> = pages
        .trace
        .recent()
        .into_iter()
        .filter(|e| e.seq > query.after)
        .collect();
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(&events).unwrap_or_else(|_| "[]".into()),
    )
        .into_response()
}
