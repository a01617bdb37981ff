//! The state machine: the leader journal's content ([`ControlState`]), rebuilt from
//! the last snapshot and the log on every start.
//!
//! openraft allows a volatile state machine whose snapshots are durable: on start it
//! holds the snapshot's state, and openraft applies the log entries after it again.
//! A snapshot is the journal's records as JSON, written to a temporary file, synced
//! and renamed over `raft-snapshot`, so a crash leaves the old one or the new one.

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use super::{io_error, ControlEntry, NodeId, TypeConfig};
use crate::journal::Record;

type Meta = SnapshotMeta<NodeId, openraft::BasicNode>;

/// The replicated leader journal: its records, as of the last applied entry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ControlState {
    pub records: Vec<Record>,
    pub applied: Option<LogId<NodeId>>,
    pub membership: StoredMembership<NodeId, openraft::BasicNode>,
}

impl ControlState {
    /// Applies one entry, made in Raft term `term`: appends its records, or (a
    /// checkpoint) replaces them. An entry proposed for another term is not applied
    /// (`ControlEntry::term`); the answer says whether it was.
    pub fn apply(&mut self, term: u64, entry: &ControlEntry) -> bool {
        if entry.term != term {
            return false;
        }
        if entry.rewrite {
            self.records = entry.records.clone();
        } else {
            self.records.extend(entry.records.iter().cloned());
        }
        true
    }
}

/// A snapshot file: its meta and the records.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: Meta,
    records: Vec<Record>,
}

/// The state machine (and, cloned, its snapshot builder).
#[derive(Clone)]
pub struct StateMachine {
    state: Arc<Mutex<ControlState>>,
    snapshot_path: PathBuf,
}

impl StateMachine {
    /// Opens the state machine whose snapshot is at `snapshot_path` (none yet: empty).
    pub fn open(snapshot_path: &Path) -> crate::Result<StateMachine> {
        let mut state = ControlState::default();
        if let Some(file) = read_snapshot(snapshot_path)? {
            state.records = file.records;
            state.applied = file.meta.last_log_id;
            state.membership = file.meta.last_membership;
        }
        Ok(StateMachine {
            state: Arc::new(Mutex::new(state)),
            snapshot_path: snapshot_path.to_path_buf(),
        })
    }

    /// The state now (a copy).
    pub fn state(&self) -> ControlState {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, ControlState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write_snapshot(&self, file: &SnapshotFile) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(file).map_err(std::io::Error::other)?;
        write_atomically(&self.snapshot_path, &bytes)
    }
}

fn read_snapshot(path: &Path) -> crate::Result<Option<SnapshotFile>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(crate::Error::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| crate::Error::BadRecord {
            path: path.to_path_buf(),
            index: 1,
            reason: format!("not a Raft snapshot: {e}"),
        })
}

/// Writes `bytes` to `path` so that a crash leaves the old content or the new.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_data()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let state = self.state();
        let id = state.applied.map_or("0-0".to_string(), |l| {
            format!("{}-{}", l.leader_id.term, l.index)
        });
        let meta = Meta {
            last_log_id: state.applied,
            last_membership: state.membership,
            snapshot_id: id,
        };
        let file = SnapshotFile {
            meta: meta.clone(),
            records: state.records,
        };
        self.write_snapshot(&file)
            .map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
        let data = serde_json::to_vec(&file.records)
            .map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<
        (
            Option<LogId<NodeId>>,
            StoredMembership<NodeId, openraft::BasicNode>,
        ),
        StorageError<NodeId>,
    > {
        let state = self.lock();
        Ok((state.applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<bool>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut state = self.lock();
        let mut replies = Vec::new();
        for entry in entries {
            state.applied = Some(entry.log_id);
            let applied = match &entry.payload {
                EntryPayload::Blank => true,
                EntryPayload::Normal(control) => state.apply(entry.log_id.leader_id.term, control),
                EntryPayload::Membership(m) => {
                    state.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    true
                }
            };
            replies.push(applied);
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let subject = || ErrorSubject::Snapshot(Some(meta.signature()));
        let records: Vec<Record> = serde_json::from_slice(snapshot.get_ref())
            .map_err(|e| io_error(subject(), ErrorVerb::Read, e))?;
        let file = SnapshotFile {
            meta: meta.clone(),
            records,
        };
        self.write_snapshot(&file)
            .map_err(|e| io_error(subject(), ErrorVerb::Write, e))?;
        let mut state = self.lock();
        state.records = file.records;
        state.applied = meta.last_log_id;
        state.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let file = read_snapshot(&self.snapshot_path)
            .map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?;
        Ok(file.map(|file| Snapshot {
            meta: file.meta,
            snapshot: Box::new(Cursor::new(
                serde_json::to_vec(&file.records).unwrap_or_default(),
            )),
        }))
    }
}
