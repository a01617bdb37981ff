//! The leader's message trace: every step of every transaction (its start, each PREPARE and
//! vote, the decision, each delivery and ACK, done) as an event, for the live view's
//! sequence diagram. The latest events are kept in a bounded buffer that viewers poll:
//! recording an event is a short-held lock and never waits for a viewer.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// How many recent events are kept for late viewers.
const KEPT: usize = 400;

/// One step of a transaction.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TraceEvent {
    /// Increasing number of the event.
    pub seq: u64,
    /// When it happened, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The transaction.
    pub txid: String,
    /// `begin`, `prepare`, `vote`, `decide`, `decision`, `ack` or `done`.
    pub kind: &'static str,
    /// The follower a message went to or came from (none for the leader's own steps).
    pub follower: Option<String>,
    /// The key (on `begin`), the vote or decision (`commit`/`abort`), or why a vote is
    /// missing.
    pub detail: String,
}

/// The trace of one leader.
pub struct Trace {
    recent: Mutex<VecDeque<TraceEvent>>,
    seq: AtomicU64,
}

impl Default for Trace {
    fn default() -> Self {
        Trace {
            recent: Mutex::new(VecDeque::with_capacity(KEPT)),
            seq: AtomicU64::new(1),
        }
    }
}

impl Trace {
    /// Records one step.
    pub fn emit(
        &self,
        txid: &str,
        kind: &'static str,
        follower: Option<&str>,
        detail: impl Into<String>,
    ) {
        let event = TraceEvent {
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            txid: txid.to_string(),
            kind,
            follower: follower.map(String::from),
            detail: detail.into(),
        };
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() == KEPT {
                recent.pop_front();
            }
            recent.push_back(event);
        }
    }

    /// The latest events, oldest first.
    pub fn recent(&self) -> Vec<TraceEvent> {
        self.recent
            .lock()
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_numbered_and_the_latest_kept() {
        let trace = Trace::default();
        trace.emit("1.1", "begin", None, "k");
        trace.emit("1.1", "prepare", Some("f1"), "");
        let recent = trace.recent();
        assert_eq!(recent.len(), 2);
        assert_eq!(recent[0].kind, "begin");
        assert_eq!(recent[1].follower.as_deref(), Some("f1"));
        assert!(recent[0].seq < recent[1].seq);
        for i in 0..KEPT + 10 {
            trace.emit(&format!("1.{i}"), "done", None, "");
        }
        assert_eq!(trace.recent().len(), KEPT, "bounded");
    }
}
