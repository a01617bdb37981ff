//! How many keys a follower holds, for operators (`tpc status`, `tpc members list`, the
//! live view): DESIGN §7's keys per member.
//!
//! Counting reads the store's directory (file names only, no file), which for hundreds of
//! thousands of keys takes a noticeable fraction of a second; so a follower counts at
//! most every [`COUNT_EVERY`], in the background, when asked (the leader's lease grant
//! asks twice a second, `lease.rs`), and answers with its last count. A count is thus up
//! to [`COUNT_EVERY`] old, plus the time the count takes.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The longest a follower's count goes without a new one, while it is asked.
pub const COUNT_EVERY: Duration = Duration::from_secs(10);

/// A follower's last key count, and whether a new one is due.
#[derive(Debug, Default)]
pub struct KeyCount {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    count: Option<u64>,
    counted_at: Option<Instant>,
    counting: bool,
}

impl KeyCount {
    /// The last count (`None`: none yet), and whether the caller must start a new one
    /// now (it is then under way until [`KeyCount::counted`]).
    pub fn last(&self, now: Instant) -> (Option<u64>, bool) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let stale = state
            .counted_at
            .is_none_or(|at| now.saturating_duration_since(at) >= COUNT_EVERY);
        let due = stale && !state.counting;
        state.counting |= due;
        (state.count, due)
    }

    /// A count ended at `now` (`None`: it failed; the last one stands, and the next is
    /// due after [`COUNT_EVERY`] as well).
    pub fn counted(&self, count: Option<u64>, now: Instant) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.counting = false;
        state.counted_at = Some(now);
        state.count = count.or(state.count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_is_due_at_first_then_once_every_period_and_never_twice_at_once() {
        let counts = KeyCount::default();
        let t0 = Instant::now();
        assert_eq!(counts.last(t0), (None, true), "none yet: count");
        assert_eq!(counts.last(t0), (None, false), "one under way");
        counts.counted(Some(7), t0);
        assert_eq!(counts.last(t0 + COUNT_EVERY / 2), (Some(7), false));
        assert_eq!(counts.last(t0 + COUNT_EVERY), (Some(7), true), "stale");
        counts.counted(None, t0 + COUNT_EVERY);
        assert_eq!(
            counts.last(t0 + COUNT_EVERY + Duration::from_secs(1)),
            (Some(7), false),
            "a failed count keeps the last and waits its period too"
        );
    }
}
