//! The Raft log and vote, durable in one journal file (`pkg/journal`: checksummed
//! lines, a torn tail dropped, atomic rewrites), held in memory as well: the control
//! state's log is short, since snapshots purge it (`super::config`).
//!
//! Each change is one record, appended and synced before openraft is told it is done:
//! `vote JSON`, `entry JSON`, `truncate INDEX` (drops that entry and those after it),
//! `purge JSON` (drops the entries up to that log id), and `committed JSON` (not
//! synced: a restart re-applies up to it, and losing it only means applying later).
//! Replaying the records in order rebuilds the same state. When the file holds many
//! more records than the state needs, it is rewritten with just those.
//!
//! The file is written on the calling task, synchronously: only aborts, views and
//! epochs reach the control state, so its writes are rare and small.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    Entry, ErrorSubject, ErrorVerb, LogId, LogState, OptionalSend, RaftLogReader, StorageError,
    Vote,
};

use super::{io_error, NodeId, TypeConfig};
use crate::journal::{Journal, Record};

/// Rewrite the file once it holds this many records more than the state needs.
const REWRITE_SLACK: usize = 1000;

#[derive(Debug, Default)]
struct State {
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    purged: Option<LogId<NodeId>>,
    entries: BTreeMap<u64, Entry<TypeConfig>>,
}

impl State {
    /// Folds one record of the file into the state.
    fn replay(&mut self, record: &Record) -> Result<(), String> {
        let field = |i: usize| record.get(i).map(String::as_str).unwrap_or_default();
        let json = |i| field(i).to_string();
        match (field(0), record.len()) {
            ("vote", 2) => self.vote = Some(parse(&json(1))?),
            ("committed", 2) => self.committed = parse(&json(1))?,
            ("entry", 2) => {
                let entry: Entry<TypeConfig> = parse(&json(1))?;
                self.entries.insert(entry.log_id.index, entry);
            }
            ("truncate", 2) => {
                let index: u64 = field(1).parse().map_err(|e| format!("truncate: {e}"))?;
                self.entries.split_off(&index);
            }
            ("purge", 2) => {
                let upto: LogId<NodeId> = parse(&json(1))?;
                self.entries = self.entries.split_off(&(upto.index + 1));
                self.purged = Some(upto);
            }
            _ => return Err(format!("unknown Raft log record {record:?}")),
        }
        Ok(())
    }

    /// The fewest records that rebuild this state.
    fn live(&self) -> Vec<Record> {
        let mut live = Vec::new();
        if let Some(vote) = &self.vote {
            live.push(record("vote", vote));
        }
        if let Some(purged) = &self.purged {
            live.push(record("purge", purged));
        }
        live.extend(self.entries.values().map(|e| record("entry", e)));
        if self.committed.is_some() {
            live.push(record("committed", &self.committed));
        }
        live
    }
}

fn parse<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, String> {
    serde_json::from_str(json).map_err(|e| format!("bad Raft log record: {e}"))
}

fn record<T: serde::Serialize>(kind: &str, value: &T) -> Record {
    // Serializing openraft's plain data types cannot fail.
    let json = serde_json::to_string(value).unwrap_or_default();
    vec![kind.to_string(), json]
}

struct Inner {
    journal: Journal,
    state: State,
}

impl Inner {
    fn write(&mut self, records: &[Record], sync: bool) -> std::io::Result<()> {
        let written = if sync {
            self.journal.append_batch(records)
        } else {
            self.journal.append_batch_unsynced(records)
        };
        written.map_err(std::io::Error::other)?;
        let live = self.state.entries.len() + 3;
        if self.journal.record_count() > live + REWRITE_SLACK {
            self.journal
                .rewrite(&self.state.live())
                .map_err(std::io::Error::other)?;
        }
        Ok(())
    }
}

/// The Raft log store (and, cloned, its reader).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
}

impl LogStore {
    /// Opens (or creates) the log at `path`.
    pub fn open(path: &Path) -> crate::Result<LogStore> {
        let (journal, records) = Journal::open(path)?;
        let mut state = State::default();
        for (index, r) in records.iter().enumerate() {
            state.replay(r).map_err(|reason| crate::Error::BadRecord {
                path: path.to_path_buf(),
                index: index + 1,
                reason,
            })?;
        }
        Ok(LogStore {
            inner: Arc::new(Mutex::new(Inner { journal, state })),
        })
    }

    /// Whether this leader has never been part of a Raft group.
    pub fn is_pristine(&self) -> bool {
        let inner = self.lock();
        inner.state.vote.is_none() && inner.state.entries.is_empty() && inner.state.purged.is_none()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `record` to the state and writes it.
    fn change(&self, record: Record, sync: bool) -> std::io::Result<()> {
        let mut inner = self.lock();
        inner.state.replay(&record).map_err(std::io::Error::other)?;
        inner.write(&[record], sync)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let inner = self.lock();
        Ok(inner
            .state
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let inner = self.lock();
        let purged = inner.state.purged;
        let last = inner
            .state
            .entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(purged);
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.change(record("vote", vote), true)
            .map_err(|e| io_error(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.lock().state.vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        self.change(record("committed", &committed), false)
            .map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Write, e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.lock().state.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let written = {
            let mut inner = self.lock();
            let records: Vec<Record> = entries
                .into_iter()
                .map(|entry| {
                    let r = record("entry", &entry);
                    inner.state.entries.insert(entry.log_id.index, entry);
                    r
                })
                .collect();
            inner.write(&records, true)
        };
        let failed = written.as_ref().err().map(|e| e.to_string());
        callback.log_io_completed(written);
        match failed {
            Some(e) => Err(io_error(ErrorSubject::Logs, ErrorVerb::Write, e)),
            None => Ok(()),
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.change(vec!["truncate".into(), log_id.index.to_string()], true)
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.change(record("purge", &log_id), true)
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}
