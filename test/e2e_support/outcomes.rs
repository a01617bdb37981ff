//! What a failed call says about whether it was applied, for the histories that the
//! linearizability checker reads (`test/chaos.rs`, `test/partition.rs`).

use tonic::{Code, Status};
use tpc::check::{OpKind, Operation};

/// Whether a failed write is known not to have been applied: ABORTED, or UNAVAILABLE
/// from the leader's own refusal or a standby leader's, or a call that never left the
/// client. Anything else (a crash, a timeout, a lost connection) is unknown.
pub fn surely_not_applied(status: &Status) -> bool {
    status.code() == Code::Aborted
        || (status.code() == Code::Unavailable && status.message().starts_with("write not applied"))
        || standby_refused(status)
        || never_sent(status)
}

/// A standby leader's refusal, or a leader's that stands down (DESIGN §9): no leader is
/// active, this one stands down, the call was forwarded to one no longer active, or
/// the active leader could not be reached. UNAVAILABLE: not applied.
pub fn standby_refused(status: &Status) -> bool {
    const REFUSALS: [&str; 4] = [
        "no leader is active yet",
        "is standing down; retry",
        "to a leader that is no longer active; retry",
        "is unreachable; retry",
    ];
    status.code() == Code::Unavailable && REFUSALS.iter().any(|m| status.message().contains(m))
}

/// The client could not connect to the leader, so the request never left it.
pub fn never_sent(status: &Status) -> bool {
    const CONNECT_FAILURES: [&str; 4] = [
        "tcp connect error",
        "Connection refused",
        "No such file or directory",
        "error trying to connect",
    ];
    status.code() == Code::Unavailable
        && CONNECT_FAILURES
            .iter()
            .any(|m| status.message().contains(m))
}

/// How a client's operation ended, for the history.
pub fn record(client: usize, key: &str, kind: OpKind, call: u64, ret: Option<u64>) -> Operation {
    Operation {
        client,
        key: key.to_string(),
        kind,
        call,
        ret,
    }
}
