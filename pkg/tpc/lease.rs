//! The lease that lets a follower answer direct reads (DESIGN §7).
//!
//! A follower holding a view answers a client's direct read only within [`LEASE`] of
//! the leader's last grant (`rpc.FollowerReads/Lease`, sent to every follower every
//! [`RENEW_EVERY`] by `view_change.rs`). The leader removes a member that has not
//! answered it for `--member-timeout`, which must be longer than the lease
//! ([`MIN_MEMBER_TIMEOUT`]): by the time a removed member's keys take writes without
//! it, it has stopped answering for them, even if clients still reach it. (Clocks on
//! the two machines need only run at about the same rate; the margin is a second.)
//! A follower without a view (classic tooling drives it) needs no lease.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a grant lets a follower answer direct reads.
pub const LEASE: Duration = Duration::from_secs(2);
/// How often the leader grants it.
pub const RENEW_EVERY: Duration = Duration::from_millis(500);
/// The shortest `--member-timeout`: the lease, and a second of margin.
pub const MIN_MEMBER_TIMEOUT: Duration = Duration::from_secs(3);

/// A follower's lease.
#[derive(Default)]
pub struct Lease {
    until: Mutex<Option<Instant>>,
}

impl Lease {
    /// The leader granted it now.
    pub fn grant(&self) {
        *self.until.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + LEASE);
    }

    /// Whether it is held now.
    pub fn holds(&self) -> bool {
        self.until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|until| Instant::now() < until)
    }
}
