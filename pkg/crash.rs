//! Named crash points, for tests of recovery: with `TPC_CRASH_AT=<point>` in its
//! environment a node kills itself (abort: no destructors, no flushing, like `kill -9`)
//! when it reaches that step of the protocol. Unset, a crash point costs one load of a
//! cached value.
//!
//! Points:
//! - `follower-before-decision`: a decision for a prepared transaction arrived, before
//!   it is journaled (the follower voted; the decision is lost with the crash).
//! - `follower-after-vote-journaled`: the vote is durable, not yet sent.
//! - `leader-after-decision-journaled`: the decision is durable, not yet sent.

use std::sync::OnceLock;

/// The environment variable naming the crash point.
pub const CRASH_AT_VAR: &str = "TPC_CRASH_AT";

/// Crashes the process if `point` is the configured crash point.
pub fn crash_point(point: &str) {
    static CONFIGURED: OnceLock<Option<String>> = OnceLock::new();
    let configured = CONFIGURED.get_or_init(|| std::env::var(CRASH_AT_VAR).ok());
    if configured.as_deref() == Some(point) {
        eprintln!("tpc: crash point {point} reached ({CRASH_AT_VAR}); aborting");
        std::process::abort();
    }
}
