//! The leader, simulated around the real [`LeaderCore`]: the coordinator's part is only
//! to carry out the core's effects (`coordinator.rs`), so this is the simulated journal
//! (the group-commit thread of `journal/group.rs`), the links' streams (`link.rs`), the
//! start (`leader.rs`) and the crash of the process. Every protocol rule runs in the core.

use super::*;
use crate::tpc::leader_core::{Effect, JournalFailure, WriteId};
use crate::tpc::link_core::{LinkEffect, StreamId};
use crate::tpc::message::{Answer, FollowerReply, PROTOCOL};

/// The vote timeout the core is given (time only passes when the adversary says so).
pub(super) const VOTE_TIMEOUT: Duration = Duration::from_millis(100);

/// A job handed to the group-commit journal.
pub(super) enum Job {
    /// An append; with a job id, synced and reported to the core.
    Append {
        records: Vec<LeaderRecord>,
        job: Option<JobId>,
    },
    /// A checkpoint's rewrite.
    Rewrite { live: Vec<LeaderRecord>, job: JobId },
}

/// The simulated leader process.
pub(super) struct LeaderNode {
    pub(super) core: LeaderCore,
    /// The core's clock: it moves only when the adversary lets time pass.
    pub(super) now: Duration,
    /// Per link: the core's current stream and the simulated stream carrying it.
    pub(super) streams: Vec<Option<(StreamId, u64)>>,
    /// Jobs handed to the journal, not yet carried out by its thread.
    pub(super) jobs: VecDeque<Job>,
    /// Client writes waiting for their answer: write id -> their ops in `Sim::ops`
    /// (one per key).
    pub(super) writes: BTreeMap<WriteId, Vec<usize>>,
    pub(super) next_write: WriteId,
}

impl Sim {
    /// `Coordinator::submit`: `txn`, whose ops (one per key) are `ops`.
    pub(super) fn submit(&mut self, ops: Vec<usize>, txn: TxnSpec) {
        let leader = self.leader.as_mut().expect("writes go to an up leader");
        if !leader.core.txns().is_empty() {
            self.stats.overlapping += 1;
        }
        let keys = txn.keys();
        if leader
            .core
            .txns()
            .values()
            .any(|t| keys.contains(t.key.as_str()))
        {
            self.stats.queued += 1;
        }
        if ops.len() > 1 {
            self.stats.multi_key += 1;
        }
        let write = leader.next_write;
        leader.next_write += 1;
        leader.writes.insert(write, ops.clone());
        let now = leader.now;
        leader.core.submit(write, txn, now);
        self.log(|| format!("leader: write {ops:?} submitted as write {write}"));
    }

    /// Writes submitted and not answered yet.
    pub(super) fn writes_in_flight(&self) -> usize {
        self.leader.as_ref().map_or(0, |l| l.writes.len())
    }

    /// Carries out the core's effects until it has none left (a stream that fails to
    /// connect is reported at once, which may produce more).
    pub(super) fn leader_pump(&mut self) {
        loop {
            let Some(leader) = self.leader.as_mut() else {
                return;
            };
            let now = leader.now;
            let effects = leader.core.take_effects(now);
            // Which write each new transaction answers (for the durability check).
            for (txid, txn) in leader.core.txns() {
                for &op in txn
                    .write()
                    .and_then(|w| leader.writes.get(&w))
                    .into_iter()
                    .flatten()
                {
                    self.ops[op].txid.get_or_insert(*txid);
                }
            }
            if effects.is_empty() {
                return;
            }
            for effect in effects {
                // The process may die between any two effects.
                if self.chance(400) {
                    self.crash_leader("between two effects");
                    return;
                }
                self.leader_effect(effect);
                if self.leader.is_none() {
                    return;
                }
            }
        }
    }

    fn leader_effect(&mut self, effect: Effect) {
        let leader = self.leader.as_mut().expect("up");
        match effect {
            Effect::Journal { job, records } => leader.jobs.push_back(Job::Append { records, job }),
            Effect::Checkpoint { job, live } => leader.jobs.push_back(Job::Rewrite { live, job }),
            Effect::Link { follower, effect } => self.link_effect(follower, effect),
            Effect::Answer { write, result } => {
                let ops = leader.writes.remove(&write).expect("a waiting write");
                self.log(|| format!("leader: write {ops:?} answered {result:?}"));
                for op in ops {
                    let status = match &result {
                        Ok(c) if c.succeeded || !self.ops[op].conditional => Status::Ok,
                        Ok(_) => {
                            self.stats.cas_not_swapped += 1;
                            Status::Failed
                        }
                        Err(_) => Status::Failed,
                    };
                    self.answer_client(op, status);
                }
            }
            Effect::Trace {
                txid,
                kind: "decide",
                detail,
                ..
            } => {
                if detail.ends_with("(recovered)") {
                    self.stats.recovered += 1;
                }
                self.log(|| format!("leader: {txid} decided {detail}"));
            }
            Effect::Trace { .. } => {}
            Effect::Fatal(why) => self.crash_leader(&format!("fatal: {why}")),
        }
    }

    /// The adversary lets time pass: to the core's next deadline (a vote timeout, a
    /// reconnection, a journal retry).
    pub(super) fn leader_time_passes(&mut self) {
        let Some(leader) = self.leader.as_mut() else {
            return;
        };
        let Some(at) = leader.core.next_deadline() else {
            return;
        };
        leader.now = leader.now.max(at);
        let now = leader.now;
        leader.core.tick(now);
        self.log(|| format!("leader: time passes to {now:?}"));
    }

    /// The leader's link `f` sees its stream end (a cut, or the follower ending it).
    pub(super) fn link_reset(&mut self, f: usize, why: &str) {
        let Some(leader) = self.leader.as_mut() else {
            return;
        };
        let Some((stream, id)) = leader.streams[f].take() else {
            return;
        };
        if let Some(s) = self.streams.get_mut(&id) {
            s.leader_open = false;
            s.to_leader.clear();
        }
        let now = leader.now;
        leader.core.stream_ended(f, stream, why.to_string(), now);
        self.log(|| format!("link {f}: s{id} ended ({why})"));
    }

    fn link_effect(&mut self, f: usize, effect: LinkEffect) {
        match effect {
            LinkEffect::Open { stream } => self.open_stream(f, stream),
            LinkEffect::Send {
                stream, messages, ..
            } => {
                let leader = self.leader.as_ref().expect("up");
                let Some((_, id)) = leader.streams[f].filter(|(s, _)| *s == stream) else {
                    return;
                };
                for msg in messages {
                    self.send(f, id, msg);
                }
            }
            LinkEffect::Close { stream } => {
                let leader = self.leader.as_mut().expect("up");
                if let Some((_, id)) = leader.streams[f].filter(|(s, _)| *s == stream) {
                    leader.streams[f] = None;
                    if let Some(s) = self.streams.get_mut(&id) {
                        s.leader_open = false;
                        s.to_leader.clear();
                    }
                    self.log(|| format!("link {f} closes s{id}"));
                }
            }
        }
    }

    /// `LinkTask::open`: connects, or fails to (nothing sent on it arrives).
    fn open_stream(&mut self, f: usize, stream: StreamId) {
        let leader = self.leader.as_mut().expect("up");
        if let Some((_, old)) = leader.streams[f].take() {
            if let Some(s) = self.streams.get_mut(&old) {
                s.leader_open = false;
                s.to_leader.clear();
            }
        }
        let connects = self.reachable(f) && (self.healing || self.rng.random_bool(0.9));
        let leader = self.leader.as_mut().expect("up");
        if !connects {
            let now = leader.now;
            leader
                .core
                .open_failed(f, stream, "unreachable".into(), now);
            self.log(|| format!("link {f}: stream {stream} could not connect"));
            return;
        }
        let id = self.next_stream;
        self.next_stream += 1;
        leader.streams[f] = Some((stream, id));
        self.streams.insert(
            id,
            Stream {
                follower: f,
                to_follower: VecDeque::new(),
                to_leader: VecDeque::new(),
                leader_open: true,
                follower_open: true,
            },
        );
        self.log(|| format!("link {f} opens s{id}"));
    }

    fn send(&mut self, f: usize, id: u64, msg: LeaderMessage) {
        let node = &mut self.followers[f];
        node.sent.push_back((node.incarnation, msg.clone()));
        if node.sent.len() > REPLAY_POOL {
            node.sent.pop_front();
        }
        let s = self.streams.get_mut(&id).expect("open stream exists");
        // A follower that ended the stream reads no more of it.
        if s.follower_open {
            s.to_follower.push_back(msg);
        }
    }

    /// The link reads some of the replies waiting on stream `id` (one frame), or sees
    /// that the follower ended it.
    pub(super) fn deliver_to_leader(&mut self, id: u64) {
        let s = self.streams.get_mut(&id).expect("chosen stream exists");
        let f = s.follower;
        if s.to_leader.is_empty() {
            self.link_reset(f, "the follower ended the stream");
            return;
        }
        let n = if self.healing {
            s.to_leader.len()
        } else {
            self.rng.random_range(1..=s.to_leader.len())
        };
        let frame: Vec<(TxnId, Reply)> = s.to_leader.drain(..n).collect();
        self.stats.delivered += frame.len();
        let leader = self
            .leader
            .as_mut()
            .expect("an open stream means an up leader");
        let Some((stream, _)) = leader.streams[f].filter(|(_, sim)| *sim == id) else {
            return;
        };
        self.log(|| format!("link {f} <- s{id} {frame:?}"));
        let replies = frame
            .into_iter()
            .map(|(txid, reply)| {
                let answer = match reply {
                    Reply::Vote(outcome) => Answer::Vote(outcome),
                    Reply::Evaluated(evaluation) => Answer::Evaluated(evaluation),
                    Reply::Ack => Answer::Ack,
                    Reply::Report(report) => Answer::Report(Some(report)),
                };
                Ok(FollowerReply {
                    txid,
                    answer,
                    cluster_id: Some(CLUSTER.to_string()),
                    protocol: PROTOCOL,
                })
            })
            .collect();
        let leader = self.leader.as_mut().expect("up");
        let now = leader.now;
        leader.core.replies(f, stream, replies, now);
    }

    // ---------------------------------------------------------------- the journal

    /// The group-commit thread: takes the first jobs waiting (the adversary picks how
    /// many) and carries them out in order, one write for the appends before a rewrite;
    /// the core hears each result.
    pub(super) fn leader_journal_run(&mut self) {
        let Some(leader) = self.leader.as_mut() else {
            return;
        };
        let n = if self.healing {
            leader.jobs.len()
        } else {
            self.rng.random_range(1..=leader.jobs.len())
        };
        let group: Vec<Job> = leader.jobs.drain(..n).collect();
        let mut appends = Vec::new();
        for job in group {
            match job {
                Job::Append { records, job } => appends.push((records, job)),
                Job::Rewrite { live, job } => {
                    if !self.flush(std::mem::take(&mut appends)) || !self.rewrite(live, job) {
                        return;
                    }
                }
            }
        }
        self.flush(appends);
    }

    /// Writes a group of appends with one write and one fdatasync, then reports to the
    /// core. False if the leader stopped.
    fn flush(&mut self, appends: Vec<(Vec<LeaderRecord>, Option<JobId>)>) -> bool {
        if appends.is_empty() {
            return self.leader.is_some();
        }
        let mut records = Vec::new();
        let mut jobs = Vec::new();
        for (these, job) in appends {
            records.extend(these);
            jobs.extend(job);
        }
        let count = records.len();
        let result = match self.leader_disk_fault.take() {
            None => {
                self.leader_journal.extend(records);
                self.leader_synced = self.leader_journal.len();
                Ok(())
            }
            Some(Fault::Clean) => Err(Fault::Clean),
            Some(Fault::Broken) => {
                self.leader_journal.extend(records);
                Err(Fault::Broken)
            }
        };
        if result.is_err() {
            self.stats.journal_failures += 1;
        }
        self.log(|| format!("leader journal: {count} records for jobs {jobs:?}: {result:?}"));
        if result == Err(Fault::Broken) {
            self.crash_leader("its journal is broken: the leader stops");
            return false;
        }
        for job in jobs {
            if result.is_ok() && self.chance(100) {
                self.crash_leader("after a journal write was durable");
                return false;
            }
            self.journaled(job, result);
        }
        self.leader.is_some()
    }

    fn journaled(&mut self, job: JobId, result: Result<(), Fault>) {
        let Some(leader) = self.leader.as_mut() else {
            return;
        };
        let now = leader.now;
        let result = result.map_err(|fault| JournalFailure {
            message: format!("{fault:?}"),
            broken: fault == Fault::Broken,
        });
        leader.core.journaled(job, result, now);
    }

    /// A checkpoint's rewrite (`Journal::rewrite`). False if the leader stopped.
    fn rewrite(&mut self, live: Vec<LeaderRecord>, job: JobId) -> bool {
        let fault = self.leader_disk_fault.take();
        if fault.is_none() || (fault == Some(Fault::Broken) && self.rng.random_bool(0.5)) {
            self.leader_journal = live;
            self.leader_synced = self.leader_journal.len();
        }
        let n = self.leader_journal.len();
        self.log(|| format!("leader journal: checkpoint ({fault:?}); {n} records"));
        if fault.is_some() {
            self.stats.journal_failures += 1;
        }
        if fault == Some(Fault::Broken) {
            self.crash_leader("its journal is broken after a checkpoint: the leader stops");
            return false;
        }
        self.journaled(job, fault.map_or(Ok(()), Err));
        self.leader.is_some()
    }

    pub(super) fn crash_leader(&mut self, why: &str) {
        let Some(leader) = self.leader.take() else {
            return;
        };
        self.stats.crashes += 1;
        for op in leader.writes.into_values().flatten().collect::<Vec<_>>() {
            self.answer_client(op, Status::Unknown);
        }
        for s in self.streams.values_mut() {
            s.leader_open = false;
            s.to_leader.clear();
        }
        // A group being written when the process died may have reached the file in part.
        for job in leader.jobs {
            match job {
                Job::Append { records, .. } => self.leader_journal.extend(records),
                Job::Rewrite { .. } => break,
            }
        }
        let keep = self
            .rng
            .random_range(self.leader_synced..=self.leader_journal.len());
        let lost = self.leader_journal.len() - keep;
        self.leader_journal.truncate(keep);
        self.leader_synced = keep;
        self.leader_disk_fault = None;
        self.log(|| format!("leader crashes ({why}); {lost} unsynced records lost"));
    }

    /// `Leader::start`: recovery; its records journaled before anything is sent.
    pub(super) fn restart_leader(&mut self) {
        let names = (0..FOLLOWERS).map(name).collect();
        let start = LeaderCore::recover_with_bugs(
            self.leader_journal.clone(),
            names,
            self.cfg.replication,
            VOTE_TIMEOUT,
            || CLUSTER.to_string(),
            self.cfg.bugs.leader,
        )
        .expect("the simulation's configuration never changes");
        self.leader_journal.extend(start.persist);
        self.leader_synced = self.leader_journal.len();
        let core = start.core;
        self.log(|| {
            format!(
                "leader starts: epoch {}, {} decisions owed",
                core.epoch(),
                core.txns().len(),
            )
        });
        self.leader = Some(LeaderNode {
            core,
            now: Duration::ZERO,
            streams: vec![None; FOLLOWERS],
            jobs: VecDeque::new(),
            writes: BTreeMap::new(),
            next_write: 1,
        });
    }
}
