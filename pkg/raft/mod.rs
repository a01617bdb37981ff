//! Standby leaders (DESIGN §9): the leader's control state, replicated with Raft.
//!
//! **What Raft carries.** Exactly what a single leader journals (`pkg/tpc/records.rs`):
//! the cluster id and epoch, the views, the decisions the leader must remember (ABORTs,
//! and the few COMMITs of §1.4 it journals) and their `done`. The state machine is that
//! journal's content, [`ControlState`]: an entry appends records or, for a checkpoint,
//! replaces them, just as the file would. A leader that takes over therefore recovers
//! from the state machine exactly as a restarted single leader recovers from its file
//! (`LeaderCore::recover`). A commit every participant voted for is not journaled, so
//! it costs no Raft round: the control state is not on a commit's path.
//!
//! **Why openraft.** It is maintained, runs on tokio and logs through tracing; we write
//! its storage and transport, not consensus. raft-rs would have us hand-write the
//! persist-before-send order of its `Ready` loop, and its last release (0.7, 2023)
//! brings protobuf 2 (an advisory) and a second prost. We pin the stable 0.9 line; its
//! types stay inside this module.
//!
//! **Who is who.** The leaders are named by their client addresses: this leader's
//! `--advertise` (by default its `--listen` address, or `127.0.0.1:PORT`) and its
//! `--peer`s. Sorted, they give each leader its Raft node id (its place, from 1), so
//! every leader builds the same membership and the first start needs no handshake
//! ([`Group`]). Every leader must name the leaders, the followers and the replication
//! the same way: a Raft message carries a fingerprint of all three, and one of another
//! group is refused (`network.rs`).
//!
//! Files, in the leader's `--journal-dir`: `raft` (votes and log, `log_store.rs`),
//! `raft-snapshot` (the state machine's snapshot, `state_machine.rs`).

use std::collections::BTreeMap;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

mod journal;
mod log_store;
mod network;
mod state_machine;
#[cfg(test)]
mod tests;
// Public only for the fuzz target `raft_message` (fuzz/): not an API.
#[doc(hidden)]
pub mod validate;

pub use journal::ReplicatedJournal;
pub use log_store::LogStore;
pub use network::{Network, RaftService};
pub use state_machine::{ControlState, StateMachine};

/// A Raft node id: a leader's place among the sorted leader addresses, from 1.
pub type NodeId = u64;

/// One entry of the control state: records of the leader journal, as journal fields.
///
/// `term` is the Raft term of the leader that proposed it, when it became active: an
/// entry that ends up in another term's place in the log (its proposer stood down and
/// was elected again while it was queued) is not applied. So a leader's journal jobs
/// count only while the leadership they were made under lasts, whatever is still
/// queued when it ends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlEntry {
    pub term: u64,
    /// True: the records replace the state (a checkpoint); false: they are appended.
    pub rewrite: bool,
    pub records: Vec<Vec<String>>,
}

openraft::declare_raft_types!(
    /// openraft's types for tpc's control state.
    pub TypeConfig:
        D = ControlEntry,
        // Whether the entry was applied (see `ControlEntry::term`).
        R = bool,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

/// A Raft handle on the control state.
pub type Raft = openraft::Raft<TypeConfig>;

/// The leaders and what they must agree on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// Every leader's client address, sorted; node id `i + 1` is `leaders[i]`.
    pub leaders: Vec<String>,
    /// This leader's node id.
    pub me: NodeId,
    /// Names the leaders, followers and replication; equal on every leader of a group.
    pub fingerprint: String,
}

impl Group {
    /// The group of the leader at `advertise` with `peers`, for `followers` each key on
    /// `replication` of them.
    pub fn new(
        advertise: &str,
        peers: &[String],
        followers: &[String],
        replication: usize,
    ) -> Result<Group, String> {
        let mut leaders: Vec<String> = peers.to_vec();
        leaders.push(advertise.to_string());
        leaders.sort();
        if let Some(twice) = leaders.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!(
                "leader {} is named twice (--peer names the other leaders; this one is \
                 --advertise, by default its --listen address)",
                twice[0]
            ));
        }
        let me = leaders.iter().position(|l| l == advertise).unwrap_or(0) as NodeId + 1;
        let fingerprint = format!(
            "leaders={} followers={} replication={replication}",
            leaders.join(","),
            followers.join(",")
        );
        Ok(Group {
            leaders,
            me,
            fingerprint,
        })
    }

    /// The Raft membership: every leader, by id.
    pub fn members(&self) -> BTreeMap<NodeId, openraft::BasicNode> {
        self.leaders
            .iter()
            .enumerate()
            .map(|(i, addr)| (i as NodeId + 1, openraft::BasicNode::new(addr)))
            .collect()
    }

    /// The address of leader `id`.
    pub fn address(&self, id: NodeId) -> Option<&str> {
        let index = usize::try_from(id).ok()?.checked_sub(1)?;
        self.leaders.get(index).map(String::as_str)
    }
}

/// Raft's timing. A leader that hears no heartbeat for an election timeout stands;
/// a voter that heard one within `election_timeout_max` (openraft's leader lease)
/// refuses to vote, which is what lets the active leader answer reads from what it
/// holds until [`READ_LEASE_MS`] after its last confirmed heartbeat round.
pub fn config() -> openraft::Config {
    openraft::Config {
        cluster_name: "tpc-leaders".into(),
        heartbeat_interval: 150,
        election_timeout_min: 600,
        election_timeout_max: 1200,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(500),
        max_in_snapshot_log_to_keep: 100,
        // A chunk's bytes travel as a JSON array of numbers, up to 4 characters a
        // byte: 512 KiB stays well under the 4 MiB gRPC message limit.
        snapshot_max_chunk_size: 512 * 1024,
        // A leader journal checkpoint is one entry; 64 of them fit in a message.
        max_payload_entries: 64,
        ..Default::default()
    }
}

/// How long after the start of its last heartbeat round that a quorum confirmed the
/// active leader may still act as the only one: well under the lease every voter
/// grants (`election_timeout_max`, see [`config`]), a margin for clocks that drift
/// and for a leader that reads its own metrics late.
pub const READ_LEASE_MS: u64 = 500;

/// Turns any error into openraft's storage error for `verb`.
pub(crate) fn io_error<E: std::fmt::Display>(
    subject: openraft::ErrorSubject<NodeId>,
    verb: openraft::ErrorVerb,
    error: E,
) -> openraft::StorageError<NodeId> {
    openraft::StorageIOError::new(subject, verb, openraft::AnyError::error(error.to_string()))
        .into()
}
