//! The active leader's journal when leaders are replicated: the same jobs as a
//! [`crate::journal::GroupJournal`], carried out as Raft entries.
//!
//! One task proposes the jobs in the order they are handed in, so the order the
//! leader relies on (a checkpoint stands for everything before it) is the log's
//! order. Appends waiting together become one entry, as they would share one fsync;
//! a checkpoint is an entry of its own. A job is durable once its entry is committed,
//! on a majority of the leaders. If the entry is not committed (this leader lost its
//! leadership, or Raft stopped), the job fails as a broken journal would: the
//! leader's core stops, and this leader stands down (`pkg/tpc/standby.rs`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::{ControlEntry, Raft};
use crate::journal::{CommitError, Durable, Record};

type Done = oneshot::Sender<Result<(), CommitError>>;

struct Job {
    rewrite: bool,
    records: Vec<Record>,
    done: Option<Done>,
}

/// The active leader's journal, replicated; cheap to clone.
#[derive(Clone)]
pub struct ReplicatedJournal {
    jobs: mpsc::UnboundedSender<Job>,
    records: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

impl ReplicatedJournal {
    /// Starts the task that proposes the jobs to `raft` for Raft term `term`, in which
    /// this leader took over; `records` is the state's content then.
    pub fn start(raft: Raft, term: u64, records: &[Record]) -> ReplicatedJournal {
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(propose(raft, term, queue).in_current_span());
        let journal = ReplicatedJournal {
            jobs,
            records: Arc::default(),
            bytes: Arc::default(),
        };
        journal.count(false, records);
        journal
    }

    /// Appends `records`; the answer resolves once they are committed.
    pub fn append(&self, records: Vec<Record>) -> Durable {
        let (done, durable) = oneshot::channel();
        self.send(false, records, Some(done));
        durable
    }

    /// Appends `records` whose loss is harmless, without waiting.
    pub fn append_unsynced(&self, records: Vec<Record>) {
        self.send(false, records, None);
    }

    /// Replaces the content with `live`, after every job handed in before.
    pub fn rewrite(&self, live: Vec<Record>) -> Durable {
        let (done, durable) = oneshot::channel();
        self.send(true, live, Some(done));
        durable
    }

    /// Records in the replicated journal.
    pub fn record_count(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    /// The records' size (their fields), in bytes.
    pub fn byte_len(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn count(&self, rewrite: bool, records: &[Record]) {
        let bytes: usize = records.iter().flatten().map(|f| f.len() + 1).sum();
        if rewrite {
            self.records.store(0, Ordering::Relaxed);
            self.bytes.store(0, Ordering::Relaxed);
        }
        self.records
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn send(&self, rewrite: bool, records: Vec<Record>, done: Option<Done>) {
        self.count(rewrite, &records);
        if let Err(mpsc::error::SendError(job)) = self.jobs.send(Job {
            rewrite,
            records,
            done,
        }) {
            fail(job.done.into_iter().collect(), "the Raft proposer stopped");
        }
    }
}

fn fail(dones: Vec<Done>, why: &str) {
    for done in dones {
        let _ = done.send(Err(CommitError {
            message: format!("not replicated to the leaders: {why}"),
            broken: true,
        }));
    }
}

/// Proposes the jobs in order, appends waiting together as one entry.
async fn propose(raft: Raft, term: u64, mut queue: mpsc::UnboundedReceiver<Job>) {
    let mut next: Option<Job> = None;
    loop {
        let first = match next.take() {
            Some(job) => job,
            None => match queue.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let mut entry = ControlEntry {
            term,
            rewrite: first.rewrite,
            records: first.records,
        };
        let mut dones: Vec<Done> = first.done.into_iter().collect();
        while !entry.rewrite {
            match queue.try_recv() {
                Ok(job) if job.rewrite => {
                    next = Some(job);
                    break;
                }
                Ok(job) => {
                    entry.records.extend(job.records);
                    dones.extend(job.done);
                }
                Err(_) => break,
            }
        }
        match raft.client_write_ff(entry).await {
            Ok(committed) => {
                tokio::spawn(async move {
                    match committed.await {
                        Ok(Ok(written)) if written.data => {
                            for done in dones {
                                let _ = done.send(Ok(()));
                            }
                        }
                        Ok(Ok(_)) => fail(dones, &format!("term {term} is over")),
                        Ok(Err(e)) => fail(dones, &e.to_string()),
                        Err(_) => fail(dones, "Raft stopped"),
                    }
                });
            }
            Err(fatal) => fail(dones, &fatal.to_string()),
        }
    }
}
