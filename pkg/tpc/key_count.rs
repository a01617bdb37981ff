//! How many keys a follower holds, for operators (`tpc status`, `tpc members list`, the
//! live view): DESIGN §7's keys per member.
//!
//! Counting reads the store's directory (file names only, no file), which for hundreds of
//! thousands of keys takes a noticeable fraction of a second; so a follower counts in
//! the background, when asked (the leader's lease grant asks twice a second, `lease.rs`),
//! and answers with its last count. It counts again once [`COST_SHARE`] times as long as
//! the last count took has passed, at least [`MIN_EVERY`] and at most [`MAX_EVERY`]
//! apart: a small store's count is a second old at most, and counting a large one costs
//! at most about 2% of a core.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Counts are at least this far apart.
pub const MIN_EVERY: Duration = Duration::from_secs(1);
/// Counts are at most this far apart, while asked.
pub const MAX_EVERY: Duration = Duration::from_secs(30);
/// The pause after a count, as a multiple of how long it took.
const COST_SHARE: u32 = 50;

/// A follower's last key count, and whether a new one is due.
#[derive(Debug, Default)]
pub struct KeyCount {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    count: Option<u64>,
    /// When the last count ended, and how long it took.
    counted: Option<(Instant, Duration)>,
    counting: bool,
}

impl KeyCount {
    /// The last count (`None`: none yet), and whether the caller must start a new one
    /// now (it is then under way until [`KeyCount::counted`]).
    pub fn last(&self, now: Instant) -> (Option<u64>, bool) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let stale = state.counted.is_none_or(|(at, took)| {
            let every = (took * COST_SHARE).clamp(MIN_EVERY, MAX_EVERY);
            now.saturating_duration_since(at) >= every
        });
        let due = stale && !state.counting;
        state.counting |= due;
        (state.count, due)
    }

    /// A count that took `took` ended at `now` (`None`: it failed; the last one stands,
    /// and the next is due as after a count).
    pub fn counted(&self, count: Option<u64>, now: Instant, took: Duration) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.counting = false;
        state.counted = Some((now, took));
        state.count = count.or(state.count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_is_due_at_first_then_after_a_pause_its_cost_sets_and_never_twice_at_once() {
        let counts = KeyCount::default();
        let t0 = Instant::now();
        assert_eq!(counts.last(t0), (None, true), "none yet: count");
        assert_eq!(counts.last(t0), (None, false), "one under way");
        let quick = Duration::from_millis(1);
        counts.counted(Some(7), t0, quick);
        assert_eq!(counts.last(t0 + MIN_EVERY / 2), (Some(7), false));
        assert_eq!(
            counts.last(t0 + MIN_EVERY),
            (Some(7), true),
            "a quick count: 1 s on"
        );
        let slow = Duration::from_millis(200);
        counts.counted(Some(9), t0, slow);
        assert_eq!(
            counts.last(t0 + slow * 49),
            (Some(9), false),
            "a slow one: 50 times"
        );
        assert_eq!(counts.last(t0 + slow * 50), (Some(9), true));
        counts.counted(None, t0, Duration::from_secs(60));
        assert_eq!(
            counts.last(t0 + MAX_EVERY),
            (Some(9), true),
            "a failed count keeps the last; at most 30 s apart"
        );
    }
}
