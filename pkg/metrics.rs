//! Prometheus metrics, served as text on `/metrics` (see [`crate::http`]).
//!
//! Metrics are process-wide statics, registered on first use, so each node exposes the
//! ones its role touches: a leader has `tpc_followers_connected`, a follower
//! `tpc_prepared_transactions`. Names follow Prometheus conventions (`_total` counters,
//! `_seconds` histograms).

use std::sync::LazyLock;
use std::time::Instant;

use prometheus::{
    register_histogram, register_histogram_vec, register_int_counter, register_int_counter_vec,
    register_int_gauge, Encoder, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    TextEncoder,
};

/// Latency buckets from 100 µs to 10 s.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

fn checked<T>(metric: prometheus::Result<T>, name: &str) -> T {
    // Registration fails only for a duplicate name or a bad definition: a bug here.
    metric.unwrap_or_else(|e| panic!("metric {name}: {e}"))
}

/// Transactions decided (leader) or whose decision was applied (follower), by outcome.
pub static TRANSACTIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    checked(
        register_int_counter_vec!(
            "tpc_transactions_total",
            "Transactions decided (leader) or whose decision was applied (follower), by outcome.",
            &["outcome"]
        ),
        "tpc_transactions_total",
    )
});

/// Client request latency, by operation (get, put, delete).
pub static REQUEST_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    checked(
        register_histogram_vec!(
            "tpc_request_duration_seconds",
            "Time to answer a KeyValueAPI request, by operation.",
            &["op"],
            BUCKETS.to_vec()
        ),
        "tpc_request_duration_seconds",
    )
});

/// Followers with a working stream (or that answered the last connection probe).
pub static FOLLOWERS_CONNECTED: LazyLock<IntGauge> = LazyLock::new(|| {
    checked(
        register_int_gauge!(
            "tpc_followers_connected",
            "Followers this leader can reach (an open stream, or a successful probe)."
        ),
        "tpc_followers_connected",
    )
});

/// Transactions this follower has prepared and not yet seen decided.
pub static PREPARED_TRANSACTIONS: LazyLock<IntGauge> = LazyLock::new(|| {
    checked(
        register_int_gauge!(
            "tpc_prepared_transactions",
            "Transactions this follower voted COMMIT on and that await their decision."
        ),
        "tpc_prepared_transactions",
    )
});

/// Time spent in the journal's fsync (fdatasync).
pub static JOURNAL_FSYNC_DURATION: LazyLock<Histogram> = LazyLock::new(|| {
    checked(
        register_histogram!(
            "tpc_journal_fsync_duration_seconds",
            "Time of one journal fdatasync.",
            BUCKETS.to_vec()
        ),
        "tpc_journal_fsync_duration_seconds",
    )
});

/// Time of one journal checkpoint: a follower's store sync and the journal rewrite.
pub static CHECKPOINT_DURATION: LazyLock<Histogram> = LazyLock::new(|| {
    checked(
        register_histogram!(
            "tpc_checkpoint_duration_seconds",
            "Time of one journal checkpoint (on a follower, the store sync plus the journal rewrite).",
            BUCKETS.to_vec()
        ),
        "tpc_checkpoint_duration_seconds",
    )
});

/// Keys a follower wrote from copies while catching up on a next view (DESIGN §8).
pub static CATCH_UP_KEYS: LazyLock<IntCounter> = LazyLock::new(|| {
    checked(
        register_int_counter!(
            "tpc_catch_up_keys_total",
            "Keys this follower wrote from other members' copies while catching up on a next view."
        ),
        "tpc_catch_up_keys_total",
    )
});

/// Bytes (keys and values) a follower received in copies while catching up.
pub static CATCH_UP_BYTES: LazyLock<IntCounter> = LazyLock::new(|| {
    checked(
        register_int_counter!(
            "tpc_catch_up_bytes_total",
            "Bytes of keys and values this follower received from other members while catching up."
        ),
        "tpc_catch_up_bytes_total",
    )
});

/// Time of one catch-up on a next view, from taking it to holding every key durably.
pub static CATCH_UP_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    checked(
        register_histogram!(
            "tpc_catch_up_duration_seconds",
            "Time of one catch-up on a next view: from taking it to holding its keys durably.",
            vec![0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0]
        ),
        "tpc_catch_up_duration_seconds",
    )
});

/// Cooperative termination (DESIGN §9): transactions a follower asked the other
/// participants about, by what their answers gave (commit, abort, or none: it stays
/// prepared).
pub static TERMINATIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    checked(
        register_int_counter_vec!(
            "tpc_termination_asks_total",
            "Late decisions asked of the other participants, by what the answers gave \
             (commit, abort, none).",
            &["decision"]
        ),
        "tpc_termination_asks_total",
    )
});

/// With standby leaders: 1 while this leader is the active one, else 0.
pub static LEADER_ACTIVE: LazyLock<IntGauge> = LazyLock::new(|| {
    checked(
        register_int_gauge!(
            "tpc_leader_active",
            "With standby leaders (--peer): 1 while this leader is the active one, else 0."
        ),
        "tpc_leader_active",
    )
});

/// With standby leaders: takeovers by this leader, and times it stood down.
pub static LEADER_CHANGES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    checked(
        register_int_counter_vec!(
            "tpc_leader_changes_total",
            "With standby leaders (--peer): this leader's takeovers (took_over) and the \
             times it stood down (stood_down).",
            &["change"]
        ),
        "tpc_leader_changes_total",
    )
});

/// Times a request for [`REQUEST_DURATION`]: observed when dropped, so also when the
/// client goes away.
pub struct RequestTimer {
    op: &'static str,
    started: Instant,
}

impl RequestTimer {
    /// Starts timing a request of kind `op`.
    pub fn start(op: &'static str) -> RequestTimer {
        RequestTimer {
            op,
            started: Instant::now(),
        }
    }
}

impl Drop for RequestTimer {
    fn drop(&mut self) {
        REQUEST_DURATION
            .with_label_values(&[self.op])
            .observe(self.started.elapsed().as_secs_f64());
    }
}

/// Every registered metric in the Prometheus text format.
pub fn render() -> String {
    // Listed from the start (at 0), though a checkpoint comes only after 10,000 records.
    LazyLock::force(&CHECKPOINT_DURATION);
    let mut buffer = Vec::new();
    let encoder = TextEncoder::new();
    if let Err(e) = encoder.encode(&prometheus::gather(), &mut buffer) {
        return format!("# error encoding metrics: {e}\n");
    }
    String::from_utf8(buffer).unwrap_or_default()
}
