//! Group commit: many concurrent appenders share one write and one fdatasync.
//!
//! A [`GroupJournal`] moves a [`Journal`] onto a thread of its own. Appenders hand it
//! records and get a [`Durable`] back, which resolves only once *their* records are on
//! disk. The thread takes every job that is waiting, writes all their records with one
//! `write` and one fdatasync, and then resolves them all. While that fsync runs, new jobs
//! queue up and become the next group, so the number of fsyncs per second stays at what
//! the disk can do while the records per fsync grow with the load: with one appender it
//! costs one fsync per append, as before; with sixty-four it costs one fsync per group.
//!
//! Jobs are carried out in the order they were handed in, so an appender that must keep
//! records in some order (the leader journals a transaction's decision after its begin,
//! and a checkpoint after the records it replaces) only has to hand them in that order.
//!
//! Errors follow [`Journal`]'s rules: a write that cleanly failed (disk full) fails every
//! job of its group and leaves the journal usable; a failed fdatasync makes the journal
//! unusable ([`CommitError::broken`]) and its owner must stop and reopen it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use super::{Journal, Record};

/// At most this many jobs share one write (a bound on one group's memory).
const MAX_GROUP: usize = 1024;

/// Why a job's records are not (known to be) durable.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct CommitError {
    /// What went wrong, naming the journal file.
    pub message: String,
    /// True if the journal's state on disk is unknown: stop and reopen it.
    pub broken: bool,
}

/// Resolves once a job is carried out: `Ok` when its records are durable.
pub type Durable = tokio::sync::oneshot::Receiver<Result<(), CommitError>>;

enum Job {
    Append {
        records: Vec<Record>,
        sync: bool,
        done: Option<tokio::sync::oneshot::Sender<Result<(), CommitError>>>,
    },
    Rewrite {
        live: Vec<Record>,
        done: tokio::sync::oneshot::Sender<Result<(), CommitError>>,
    },
}

#[derive(Debug, Default)]
struct Stats {
    records: AtomicU64,
    bytes: AtomicU64,
    broken: AtomicBool,
    syncs: AtomicU64,
}

/// A journal owned by a group-commit thread. Cheap to clone; the thread stops once
/// every clone is dropped and the jobs handed in are done.
#[derive(Clone, Debug)]
pub struct GroupJournal {
    jobs: mpsc::Sender<Job>,
    stats: Arc<Stats>,
}

impl GroupJournal {
    /// Starts the thread that owns `journal`.
    pub fn start(journal: Journal) -> std::io::Result<GroupJournal> {
        let stats = Arc::new(Stats::default());
        stats.publish(&journal);
        let (jobs, queue) = mpsc::channel();
        let owner_stats = stats.clone();
        let span = tracing::Span::current();
        std::thread::Builder::new()
            .name("journal-group".into())
            .spawn(move || {
                let _entered = span.enter();
                run(journal, queue, &owner_stats)
            })?;
        Ok(GroupJournal { jobs, stats })
    }

    /// Appends `records` (one write); the answer resolves once they are durable.
    pub fn append(&self, records: Vec<Record>) -> Durable {
        let (done, durable) = tokio::sync::oneshot::channel();
        self.send(Job::Append {
            records,
            sync: true,
            done: Some(done),
        });
        durable
    }

    /// Appends `records` without waiting for an fsync of their own, for records whose
    /// loss in a crash is harmless; the next group's fsync makes them durable too.
    pub fn append_unsynced(&self, records: Vec<Record>) {
        self.send(Job::Append {
            records,
            sync: false,
            done: None,
        });
    }

    /// Checkpoint: after every job handed in before it, replaces the journal's content
    /// with `live` ([`Journal::rewrite`]). `live` must stand for everything handed in
    /// before it, which holds if the caller computes it and calls this under the same
    /// lock as its appends.
    pub fn rewrite(&self, live: Vec<Record>) -> Durable {
        let (done, durable) = tokio::sync::oneshot::channel();
        self.send(Job::Rewrite { live, done });
        durable
    }

    /// Records in the journal file (appended ones included once written).
    pub fn record_count(&self) -> u64 {
        self.stats.records.load(Ordering::Relaxed)
    }

    /// The journal file's size in bytes.
    pub fn byte_len(&self) -> u64 {
        self.stats.bytes.load(Ordering::Relaxed)
    }

    /// How many groups were written with an fdatasync so far.
    pub fn syncs(&self) -> u64 {
        self.stats.syncs.load(Ordering::Relaxed)
    }

    /// True once the journal failed in a way that leaves its content unknown.
    pub fn is_broken(&self) -> bool {
        self.stats.broken.load(Ordering::Relaxed)
    }

    fn send(&self, job: Job) {
        // The thread only stops when every sender is gone, so this cannot fail while
        // `self` exists; if it ever did, the job's `done` is dropped and its waiter
        // sees a closed channel, which callers treat as a failure.
        let _ = self.jobs.send(job);
    }
}

impl Stats {
    fn publish(&self, journal: &Journal) {
        self.records
            .store(journal.record_count() as u64, Ordering::Relaxed);
        self.bytes.store(journal.byte_len(), Ordering::Relaxed);
        self.broken.store(journal.is_broken(), Ordering::Relaxed);
    }
}

/// The group-commit loop: take what is waiting, write it with one fsync, answer.
fn run(mut journal: Journal, queue: mpsc::Receiver<Job>, stats: &Stats) {
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let mut appends = Vec::new();
        for job in group {
            match job {
                Job::Append { .. } => appends.push(job),
                Job::Rewrite { live, done } => {
                    flush(&mut journal, std::mem::take(&mut appends), stats);
                    let result = journal.rewrite(&live).map_err(|e| failure(&journal, e));
                    stats.publish(&journal);
                    let _ = done.send(result);
                }
            }
        }
        flush(&mut journal, appends, stats);
    }
}

/// Writes the records of `appends` with one write (and one fdatasync if any of them
/// waits for durability), updates `stats`, then answers each (so a waiter that is
/// answered sees its records counted).
fn flush(journal: &mut Journal, appends: Vec<Job>, stats: &Stats) {
    let mut records = Vec::new();
    let mut sync = false;
    let mut waiting = Vec::new();
    for job in appends {
        if let Job::Append {
            records: mut these,
            sync: wants_sync,
            done,
        } = job
        {
            records.append(&mut these);
            sync |= wants_sync;
            waiting.extend(done);
        }
    }
    if records.is_empty() {
        for done in waiting {
            let _ = done.send(Ok(()));
        }
        return;
    }
    crate::crash::pause_point("leader-journal-before-write");
    let result = if sync {
        journal.append_batch(&records)
    } else {
        journal.append_batch_unsynced(&records)
    }
    .map_err(|e| failure(journal, e));
    if sync {
        stats.syncs.fetch_add(1, Ordering::Relaxed);
    }
    stats.publish(journal);
    for done in waiting {
        let _ = done.send(result.clone());
    }
}

fn failure(journal: &Journal, error: super::Error) -> CommitError {
    CommitError {
        message: error.to_string(),
        broken: journal.is_broken(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: usize) -> Record {
        vec!["put".to_string(), format!("key {i}")]
    }

    fn block_on(durable: Durable) -> Result<(), CommitError> {
        durable.blocking_recv().expect("the group thread answers")
    }

    #[test]
    fn concurrent_appends_are_all_durable_in_one_journal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let (journal, _) = Journal::open(&path).unwrap();
        let group = GroupJournal::start(journal).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let group = group.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let record = vec![t.to_string(), i.to_string()];
                        block_on(group.append(vec![record])).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(group.record_count(), 400);
        drop(group);
        let (_, records) = Journal::open(&path).unwrap();
        assert_eq!(records.len(), 400);
        for t in 0..8 {
            // Each appender's records are there, in its own order.
            let mine: Vec<&String> = records
                .iter()
                .filter(|r| r[0] == t.to_string())
                .map(|r| &r[1])
                .collect();
            let expected: Vec<String> = (0..50).map(|i| i.to_string()).collect();
            assert_eq!(mine, expected.iter().collect::<Vec<_>>());
        }
    }

    #[test]
    fn jobs_waiting_together_share_one_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let (journal, _) = Journal::open(&path).unwrap();
        // Queue the jobs before the thread exists, so they are all waiting at once.
        let (jobs, queue) = mpsc::channel();
        let stats = Arc::new(Stats::default());
        let group = GroupJournal {
            jobs,
            stats: stats.clone(),
        };
        let waiting: Vec<_> = (0..100).map(|i| group.append(vec![record(i)])).collect();
        let owner = std::thread::spawn(move || run(journal, queue, &stats));
        for durable in waiting {
            block_on(durable).unwrap();
        }
        assert_eq!(group.syncs(), 1, "100 waiting appends, one fdatasync");
        drop(group);
        owner.join().unwrap();
        assert_eq!(Journal::open(&path).unwrap().1.len(), 100);
    }

    #[test]
    fn a_rewrite_comes_after_the_appends_handed_in_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let (journal, _) = Journal::open(&path).unwrap();
        let group = GroupJournal::start(journal).unwrap();
        let first = group.append(vec![record(1), record(2)]);
        let rewrite = group.rewrite(vec![record(2)]);
        let after = group.append(vec![record(3)]);
        block_on(first).unwrap();
        block_on(rewrite).unwrap();
        block_on(after).unwrap();
        group.append_unsynced(vec![record(4)]);
        block_on(group.append(vec![record(5)])).unwrap();
        drop(group);
        let (_, records) = Journal::open(&path).unwrap();
        assert_eq!(records, vec![record(2), record(3), record(4), record(5)]);
    }

    /// The leader's journal on a disk that fills and empties: a group whose write the
    /// full disk refused fails cleanly, and every group written before and after it is
    /// in the file a restart reads (groups written without preallocated room used to
    /// be cut by the next one, leaving NUL bytes where they had been).
    #[test]
    fn groups_refused_by_a_full_disk_leave_every_other_group_readable() {
        let Some(disk) = crate::test_disk::SmallDisk::mount("512k", "group journal: full disk")
        else {
            return;
        };
        let path = disk.path().join("journal");
        let (journal, _) = Journal::open(&path).unwrap();
        let group = GroupJournal::start(journal).unwrap();
        let mut expected = Vec::new();
        for round in 0..3 {
            let written = vec![record(2 * round), record(2 * round + 1)];
            block_on(group.append(written.clone())).unwrap();
            expected.extend(written);

            let ballast = disk.fill();
            let refused = vec![vec!["begin".to_string(), "k".repeat(64 * 1024)]];
            let error = block_on(group.append(refused)).expect_err("the disk is full");
            assert!(!error.broken, "{error}");
            assert_eq!(group.record_count(), expected.len() as u64);
            std::fs::remove_file(ballast).unwrap();
        }
        let last = vec![record(100)];
        block_on(group.append(last.clone())).unwrap();
        expected.extend(last);
        drop(group);
        let (_, records) = Journal::open(&path).unwrap();
        assert_eq!(records, expected);
    }
}
