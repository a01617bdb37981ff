//! Named crash points, for tests of recovery: with `TPC_CRASH_AT=<point>` (or
//! `<point>:<n>`, the n-th time the point is reached, counting from 1) in its environment
//! a node kills itself (abort: no destructors, no flushing, like `kill -9`) when it
//! reaches that step. Unset, a crash point costs one load of a cached value.
//!
//! Points:
//! - `follower-after-vote-journaled`: the vote is durable, not yet sent.
//! - `follower-before-decision`: a decision for a prepared transaction arrived, before
//!   it is journaled (the follower voted; the decision is lost with the crash).
//! - `follower-after-apply`: a committed write is journaled and applied, the lock not yet
//!   released and the ACK not sent.
//! - `leader-after-last-vote`: the last COMMIT vote arrived and committed the write;
//!   nothing of it has been answered or sent yet.
//! - `leader-after-decision-journaled`: a decision's record (an ABORT, or a classic
//!   peer's decision) is durable, not yet sent or answered.
//! - `leader-after-first-ack`: a follower ACKed a decision, the leader has not yet
//!   handled the ACK.
//! - `leader-before-takeover`: Raft elected this standby leader, which has read
//!   nothing yet.
//! - `leader-after-takeover`: this standby leader's new epoch is committed to the
//!   leaders; it has sent nothing.
//! - `journal-torn-write`: a journal write stops halfway through its bytes (a torn
//!   record), on whichever node has the variable.
//!
//! Pause points (`TPC_PAUSE_AT=<point>=<file>`, [`pause_point`]) hold a thread instead:
//! `follower-before-replay`, `follower-before-message` (the state thread, before it
//! handles a leader message), `follower-after-vote-journaled` (the state thread, with
//! a vote durable and not sent), `follower-before-store-sync`, and
//! `leader-journal-before-write` (the leader's journal thread).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The environment variable naming the crash point.
pub const CRASH_AT_VAR: &str = "TPC_CRASH_AT";

struct Armed {
    point: String,
    at: u64,
    reached: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var(CRASH_AT_VAR).ok()?;
            let (point, at) = match spec.rsplit_once(':') {
                Some((point, n)) => (point.to_string(), n.parse().unwrap_or(1)),
                None => (spec, 1),
            };
            Some(Armed {
                point,
                at,
                reached: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// True if reaching `point` now must crash the process (counts the visit).
pub fn should_crash(point: &str) -> bool {
    match armed() {
        Some(armed) if armed.point == point => {
            armed.reached.fetch_add(1, Ordering::SeqCst) + 1 == armed.at
        }
        _ => false,
    }
}

/// Aborts the process, saying which crash point did it.
pub fn crash_now(point: &str) -> ! {
    eprintln!("tpc: crash point {point} reached ({CRASH_AT_VAR}); aborting");
    std::process::abort();
}

/// Crashes the process if `point` is the configured crash point (and visit).
pub fn crash_point(point: &str) {
    if should_crash(point) {
        crash_now(point);
    }
}

/// The environment variable naming a pause point: `<point>=<file>`.
pub const PAUSE_AT_VAR: &str = "TPC_PAUSE_AT";

/// With `TPC_PAUSE_AT=<point>=<file>`, holds the calling thread at `point` until `file`
/// exists, so that a test can look at a node stopped at that step (e.g. a follower that
/// has not replayed its journal yet). Unset, it costs one load of a cached value.
pub fn pause_point(point: &str) {
    static PAUSE: OnceLock<Option<(String, std::path::PathBuf)>> = OnceLock::new();
    let pause = PAUSE.get_or_init(|| {
        let spec = std::env::var(PAUSE_AT_VAR).ok()?;
        let (point, file) = spec.split_once('=')?;
        Some((point.to_string(), file.into()))
    });
    if let Some((at, file)) = pause {
        if at == point {
            eprintln!(
                "tpc: paused at {point} until {} exists ({PAUSE_AT_VAR})",
                file.display()
            );
            while !file.exists() {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}
