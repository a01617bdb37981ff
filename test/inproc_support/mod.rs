//! Helpers shared by the in-process tests (`streams.rs`, `proxy.rs`): a real leader
//! served on a Unix socket in a temp dir, and bounded polling.

#![allow(dead_code)]

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use tokio::sync::oneshot;
use tpc::net::{Address, ListenAddr, Listener};
use tpc::tpc::leader::{Leader, LeaderConfig};

/// Starts a real leader of `followers` with its journal under `dir/leader` and its
/// socket at `dir/leader.sock`; returns its address and the sender that stops it.
pub async fn start_leader(
    dir: &Path,
    followers: Vec<String>,
    vote_timeout: Duration,
) -> (String, oneshot::Sender<()>) {
    let leader = Leader::start(LeaderConfig {
        journal_path: dir.join("leader").join("journal"),
        followers,
        replication: tpc::placement::DEFAULT_REPLICATION,
        vote_timeout,
        member_timeout: None,
    })
    .expect("leader starts");
    let path = dir.join("leader.sock");
    let listener = Listener::bind(&ListenAddr::Addr(Address::Unix(path.clone())))
        .await
        .expect("bind leader socket");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(leader.serve(listener, async {
        let _ = stopped.await;
    }));
    (format!("unix:{}", path.display()), stop)
}

/// Waits for `cond` to become true, polling, at most `bound`.
pub async fn eventually<F, Fut>(what: &str, bound: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + bound;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not true within {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
