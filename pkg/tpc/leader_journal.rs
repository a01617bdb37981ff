//! Where the leader's journal records go: its own file, through group commit, or,
//! with standby leaders, the control state the leaders replicate with Raft
//! (`crate::raft`). The coordinator hands both the same jobs and waits for the same
//! answers; only what "durable" means differs (on this disk, or on a majority of the
//! leaders' disks).

use crate::journal::{Durable, GroupJournal, Record};
use crate::raft::ReplicatedJournal;

/// The leader journal: local or replicated.
#[derive(Clone)]
pub enum LeaderJournal {
    Local(GroupJournal),
    Replicated(ReplicatedJournal),
}

impl LeaderJournal {
    /// Appends `records`; the answer resolves once they are durable.
    pub fn append(&self, records: Vec<Record>) -> Durable {
        match self {
            LeaderJournal::Local(j) => j.append(records),
            LeaderJournal::Replicated(j) => j.append(records),
        }
    }

    /// Appends `records` whose loss in a crash is harmless, without waiting.
    pub fn append_unsynced(&self, records: Vec<Record>) {
        match self {
            LeaderJournal::Local(j) => j.append_unsynced(records),
            LeaderJournal::Replicated(j) => j.append_unsynced(records),
        }
    }

    /// A checkpoint: replaces the content with `live`, after every job before it.
    pub fn rewrite(&self, live: Vec<Record>) -> Durable {
        match self {
            LeaderJournal::Local(j) => j.rewrite(live),
            LeaderJournal::Replicated(j) => j.rewrite(live),
        }
    }

    /// The journal's size: bytes and records.
    pub fn size(&self) -> (u64, u64) {
        match self {
            LeaderJournal::Local(j) => (j.byte_len(), j.record_count()),
            LeaderJournal::Replicated(j) => (j.byte_len(), j.record_count()),
        }
    }
}
