//! The leader's runtime, re-stated: `coordinator.rs` (transactions, the key queues, the
//! ACK task, checkpoints), the group-commit journal (`journal/group.rs`), `link.rs`, and
//! the start in `leader.rs`.

use super::*;

impl Sim {
    // ---------------------------------------------------------------- the coordinator

    /// `Coordinator::submit`: runs the write now, or queues it behind the transaction
    /// under way on its key.
    pub(super) fn submit(&mut self, op: usize) {
        let key = self.ops[op].key.clone();
        let leader = self.leader.as_mut().expect("writes go to an up leader");
        if let Some(queue) = leader.busy.get_mut(&key) {
            queue.push_back(op);
            self.stats.queued += 1;
            self.log(|| format!("leader: write {op} queues behind the transaction on {key:?}"));
            return;
        }
        leader.busy.insert(key, VecDeque::new());
        self.begin_txn(op);
    }

    /// `Coordinator::transaction`, first part: `begin` handed to the journal.
    fn begin_txn(&mut self, op: usize) {
        let key = self.ops[op].key.clone();
        let body = match &self.ops[op].kind {
            OpKind::Put(v) => Op::Put(v.clone()),
            OpKind::Delete => Op::Delete,
            OpKind::Get(_) => unreachable!("reads are not submitted"),
        };
        let leader = self.leader.as_mut().expect("up");
        if !leader.txns.is_empty() {
            self.stats.overlapping += 1;
        }
        let (txid, begin) = leader.core.begin(&key, (0..FOLLOWERS).map(name).collect());
        // The `done` records buffered since the last append ride along.
        let mut records = std::mem::take(&mut leader.unwritten_done);
        records.push(begin);
        leader.jobs.push_back(Job::Append {
            records,
            waiter: txid,
        });
        self.log(|| format!("leader: begin {txid} {key:?} {body:?} (handed to the journal)"));
        self.ops[op].txid = Some(txid);
        // The PREPAREs go out at once, while `begin` is being made durable.
        let mut votes = Vec::with_capacity(FOLLOWERS);
        for f in 0..FOLLOWERS {
            let leader = self.leader.as_ref().expect("up");
            let prepare = Body::Prepare {
                key: key.clone(),
                op: body.clone(),
            };
            let msg = leader.core.message(txid, prepare, &name(f));
            votes.push(self.link_prepare(f, msg));
        }
        let leader = self.leader.as_mut().expect("up");
        leader.txns.insert(
            txid,
            Txn {
                op,
                key,
                stage: Stage::Voting(votes),
                begun: None,
            },
        );
    }

    /// `run_key`: the transaction ended (its decision, if any, is queued on every link);
    /// maybe a checkpoint; then the next write queued on its key starts.
    fn end_txn(&mut self, txid: TxId) {
        let leader = self.leader.as_mut().expect("up");
        let key = leader.txns.remove(&txid).expect("under way").key;
        if self.rng.random_ratio(1, 6) {
            self.checkpoint_leader();
        }
        let leader = self.leader.as_mut().expect("up");
        let queue = leader.busy.get_mut(&key).expect("the key is busy");
        match queue.pop_front() {
            Some(next) => self.begin_txn(next),
            None => {
                leader.busy.remove(&key);
            }
        }
    }

    /// `checkpoint_if_due`: the live records, computed now, handed to the journal as a
    /// rewrite behind everything handed in before; one checkpoint at a time. The
    /// buffered `done` records are dropped: their transactions are not in `live`.
    fn checkpoint_leader(&mut self) {
        let leader = self.leader.as_mut().expect("up");
        if leader.checkpointing {
            return;
        }
        leader.checkpointing = true;
        let live = leader.core.live_records();
        leader.unwritten_done.clear();
        let n = live.len();
        leader.jobs.push_back(Job::Rewrite(live));
        self.log(|| format!("leader: checkpoint of {n} records handed to the journal"));
    }

    /// Decides every transaction whose votes are all in (the coordinator's tasks resume).
    pub(super) fn leader_pump(&mut self) {
        loop {
            let Some(leader) = &self.leader else {
                return;
            };
            let ready = leader.txns.iter().find_map(|(txid, t)| match &t.stage {
                Stage::Voting(votes) if t.begun.is_some() && votes.iter().all(Option::is_some) => {
                    Some(*txid)
                }
                _ => None,
            });
            match ready {
                Some(txid) => self.decide(txid),
                None => return,
            }
        }
    }

    /// `Coordinator::transaction`, middle part: the votes are in; the decision is handed
    /// to the journal.
    fn decide(&mut self, txid: TxId) {
        let bugs = self.cfg.bugs;
        let leader = self.leader.as_mut().expect("up");
        let txn = leader.txns.get_mut(&txid).expect("voting");
        let Stage::Voting(votes) = &txn.stage else {
            unreachable!("only voting transactions decide")
        };
        let votes: Vec<VoteResult> = votes.iter().map(|v| v.clone().expect("all in")).collect();
        let yes = |v: &VoteResult| {
            *v == VoteResult::Vote(Outcome::Commit)
                || (bugs.commit_without_votes && matches!(v, VoteResult::NoAnswer(_)))
        };
        let outcome = if txn.begun == Some(Ok(())) && votes.iter().all(yes) {
            Outcome::Commit
        } else {
            Outcome::Abort
        };
        let sent_to: Vec<usize> = (0..FOLLOWERS)
            .filter(|&f| {
                if bugs.decide_only_voters {
                    matches!(votes[f], VoteResult::Vote(_))
                } else {
                    votes[f].was_sent()
                }
            })
            .collect();
        txn.stage = Stage::Deciding {
            outcome,
            sent_to: sent_to.clone(),
            again: false,
        };
        let begun = txn.begun;
        let records = leader
            .core
            .decide(txid, outcome, sent_to.iter().map(|&f| name(f)).collect());
        if begun != Some(Ok(())) {
            // `begin` failed cleanly: the ABORT goes out without a record of its own.
            self.log(|| {
                format!("leader: {txid} decided Abort (its begin failed); votes {votes:?}")
            });
            self.journaled(txid, Ok(()));
            return;
        }
        leader.jobs.push_back(Job::Append {
            records,
            waiter: txid,
        });
        self.log(|| {
            format!("leader: {txid} decided {outcome:?} (handed to the journal); votes {votes:?}")
        });
    }

    /// The journal answered the write `txid` was waiting for: the rest of
    /// `Coordinator::transaction`.
    fn journaled(&mut self, txid: TxId, result: Result<(), Fault>) {
        let Some(txn) = self.leader.as_ref().and_then(|l| l.txns.get(&txid)) else {
            return;
        };
        let op = txn.op;
        let deciding = match &txn.stage {
            Stage::Deciding {
                outcome,
                sent_to,
                again,
            } => Some((*outcome, sent_to.clone(), *again)),
            Stage::Voting(_) => None,
        };
        let Some((outcome, sent_to, again)) = deciding else {
            // The write of `begin`.
            self.leader
                .as_mut()
                .expect("up")
                .txns
                .get_mut(&txid)
                .expect("voting")
                .begun = Some(result);
            match result {
                Ok(()) if self.chance(150) => self.crash_leader("after begin journaled"),
                Ok(()) => {}
                Err(Fault::Clean) => {
                    // Aborted like any other write (its PREPAREs are out).
                    self.log(|| format!("leader: begin {txid} not journaled; it will abort"));
                }
                Err(Fault::Broken) => {
                    // The leader stops (`flush`); its restart ends what the PREPAREs began.
                    self.answer_client(op, Status::Failed);
                }
            }
            return;
        };
        let outcome = match result {
            Ok(()) => {
                if self.chance(150) {
                    self.crash_leader("after decision journaled");
                    return;
                }
                let status = match outcome {
                    Outcome::Commit => Status::Ok,
                    Outcome::Abort => Status::Failed,
                };
                self.answer_client(op, status);
                outcome
            }
            Err(Fault::Broken) => {
                // The decision may or may not be on disk: the leader stops.
                self.answer_client(op, Status::Unknown);
                return;
            }
            Err(Fault::Clean) if again => {
                // The ABORT could not be journaled either: the leader stops, and what a
                // checkpoint may have written decides after the restart.
                self.answer_client(op, Status::Unknown);
                self.crash_leader("its ABORT could not be journaled: the leader stops");
                return;
            }
            Err(Fault::Clean) if self.cfg.bugs.abort_unjournaled => {
                // The rule before the fix of bug C: ABORT in memory, sent at once.
                let names = sent_to.iter().map(|&f| name(f)).collect();
                let leader = self.leader.as_mut().expect("up");
                let _ = leader.core.decide(txid, Outcome::Abort, names);
                self.log(|| format!("leader: decision of {txid} not journaled; ABORT in memory"));
                self.answer_client(op, Status::Failed);
                Outcome::Abort
            }
            Err(Fault::Clean) => {
                // A checkpoint handed in since `decide` may hold the decision that
                // failed: the ABORT is journaled (after it, under the core mutex) and
                // sent only once durable; the client hears "not applied" then.
                let names = sent_to.iter().map(|&f| name(f)).collect();
                let leader = self.leader.as_mut().expect("up");
                let records = leader.core.decide(txid, Outcome::Abort, names);
                leader.jobs.push_back(Job::Append {
                    records,
                    waiter: txid,
                });
                let txn = leader.txns.get_mut(&txid).expect("under way");
                txn.stage = Stage::Deciding {
                    outcome: Outcome::Abort,
                    sent_to,
                    again: true,
                };
                self.log(|| {
                    format!("leader: decision of {txid} not journaled; ABORT handed to the journal")
                });
                return;
            }
        };
        for f in sent_to {
            let leader = self.leader.as_ref().expect("up");
            let msg = leader.core.message(txid, Body::Decide(outcome), &name(f));
            self.link_decide(f, msg);
        }
        self.end_txn(txid);
    }

    /// The ACK task (`Coordinator::acked`): handles some of the ACKs the links reported.
    pub(super) fn leader_acks(&mut self) {
        let Some(leader) = self.leader.as_mut() else {
            return;
        };
        let n = if self.healing {
            leader.acks.len()
        } else {
            self.rng.random_range(1..=leader.acks.len())
        };
        for _ in 0..n {
            let leader = self.leader.as_mut().expect("up");
            let (f, txid) = leader.acks.pop_front().expect("n ACKs waiting");
            let txid: TxId = txid.parse().expect("our ids parse");
            if let Some(done) = leader.core.acked(txid, &name(f)) {
                // Buffered until the next `begin` append: a crash may lose it.
                leader.unwritten_done.push(done);
                self.log(|| format!("leader: {txid} done (ACK of follower {f}); buffered"));
            }
        }
    }

    /// Times out the links on which one voting transaction waits for a vote.
    pub(super) fn timeout_vote(&mut self) {
        let Some(leader) = &self.leader else {
            return;
        };
        let voting: Vec<TxId> = leader
            .txns
            .iter()
            .filter(|(_, t)| matches!(&t.stage, Stage::Voting(v) if v.iter().any(Option::is_none)))
            .map(|(txid, _)| *txid)
            .collect();
        if voting.is_empty() {
            return;
        }
        let txid = voting[self.rng.random_range(0..voting.len())].to_string();
        let leader = self.leader.as_ref().expect("up");
        let waiting: Vec<usize> = (0..FOLLOWERS)
            .filter(|&f| {
                leader.links[f]
                    .outstanding
                    .iter()
                    .any(|o| o.vote && o.txid == txid)
            })
            .collect();
        self.log(|| format!("vote {txid} times out on links {waiting:?}"));
        for f in waiting {
            self.link_reset(f);
        }
    }

    // ---------------------------------------------------------------- the journal

    /// The group-commit thread: takes the first jobs waiting (the adversary picks how
    /// many) and carries them out in order; the waiting transactions then resume.
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
                Job::Append { .. } => appends.push(job),
                Job::Rewrite(live) => {
                    if !self.flush(std::mem::take(&mut appends)) || !self.rewrite(live) {
                        return;
                    }
                }
            }
        }
        self.flush(appends);
    }

    /// Writes the appends of a group with one write and one fdatasync, then answers
    /// their waiters. False if the leader stopped.
    fn flush(&mut self, appends: Vec<Job>) -> bool {
        let mut records = Vec::new();
        let mut waiters = Vec::new();
        for job in appends {
            if let Job::Append {
                records: these,
                waiter,
            } = job
            {
                records.extend(these);
                waiters.push(waiter);
            }
        }
        if waiters.is_empty() {
            return self.leader.is_some();
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
        self.log(|| format!("leader journal: {count} records for {waiters:?}: {result:?}"));
        for txid in waiters {
            self.journaled(txid, result);
        }
        if result == Err(Fault::Broken) {
            self.crash_leader("its journal is broken: the leader stops");
        }
        self.leader.is_some()
    }

    /// A checkpoint's rewrite (`Journal::rewrite`). False if the leader stopped.
    fn rewrite(&mut self, live: Vec<LeaderRecord>) -> bool {
        let fault = self.leader_disk_fault.take();
        if fault.is_none() || (fault == Some(Fault::Broken) && self.rng.random_bool(0.5)) {
            self.leader_journal = live;
            self.leader_synced = self.leader_journal.len();
        }
        let n = self.leader_journal.len();
        self.log(|| format!("leader journal: checkpoint ({fault:?}); {n} records"));
        if let Some(leader) = self.leader.as_mut() {
            leader.checkpointing = false;
        }
        if fault.is_some() {
            self.stats.journal_failures += 1;
        }
        if fault == Some(Fault::Broken) {
            self.crash_leader("its journal is broken after a checkpoint: the leader stops");
        }
        self.leader.is_some()
    }

    pub(super) fn crash_leader(&mut self, why: &str) {
        let Some(leader) = self.leader.take() else {
            return;
        };
        self.stats.crashes += 1;
        let waiting = leader.txns.values().map(|t| t.op);
        let queued = leader.busy.values().flatten().copied();
        for op in waiting.chain(queued).collect::<Vec<_>>() {
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
                Job::Rewrite(_) => break,
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

    /// `Leader::start`: recovery, its records journaled, its deliveries queued.
    pub(super) fn restart_leader(&mut self) {
        let recovery = LeaderCore::recover(self.leader_journal.clone(), || CLUSTER.to_string());
        // A `done` without a decision beside it: a decided transaction awaiting nobody,
        // finished by `recover` (bug D).
        let decided: HashSet<TxId> = recovery
            .persist
            .iter()
            .filter_map(|r| match r {
                LeaderRecord::Decide { txid, .. } => Some(*txid),
                _ => None,
            })
            .collect();
        let finished = recovery
            .persist
            .iter()
            .filter(|r| matches!(r, LeaderRecord::Done { txid } if !decided.contains(txid)))
            .count();
        self.stats.finished_on_recovery += finished;
        self.leader_journal.extend(recovery.persist);
        self.leader_synced = self.leader_journal.len();
        let core = recovery.core;
        self.log(|| {
            format!(
                "leader starts: epoch {}, {} unfinished, {} deliveries",
                core.epoch(),
                core.txns().len(),
                recovery.deliveries.len()
            )
        });
        self.leader = Some(LeaderNode {
            core,
            links: (0..FOLLOWERS).map(|_| Link::default()).collect(),
            acks: VecDeque::new(),
            txns: BTreeMap::new(),
            busy: BTreeMap::new(),
            jobs: VecDeque::new(),
            checkpointing: false,
            unwritten_done: Vec::new(),
        });
        for d in recovery.deliveries {
            let f = index_of(&d.follower);
            let leader = self.leader.as_ref().expect("up");
            let msg = leader
                .core
                .message(d.txid, Body::Decide(d.outcome), &d.follower);
            self.link_decide(f, msg);
        }
        if recovery.restarted && !self.cfg.bugs.no_end_of_recovery {
            for f in 0..FOLLOWERS {
                let msg = self
                    .leader
                    .as_ref()
                    .expect("up")
                    .core
                    .end_of_recovery(&name(f));
                self.link_decide(f, msg);
            }
        }
    }

    // ---------------------------------------------------------------- links

    /// Opens a stream on link `f`: the pending decisions first, then `extra`.
    pub(super) fn open_stream(&mut self, f: usize, extra: Option<LeaderMessage>) {
        let id = self.next_stream;
        self.next_stream += 1;
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
        let leader = self.leader.as_mut().expect("links belong to an up leader");
        let link = &mut leader.links[f];
        link.stream = Some(id);
        link.outstanding.clear();
        let decisions: Vec<LeaderMessage> = link.pending.iter().cloned().collect();
        self.log(|| {
            format!(
                "link {f} opens s{id} with {} pending decisions",
                decisions.len()
            )
        });
        for m in decisions {
            self.link_send(f, m, false);
        }
        if let Some(m) = extra {
            self.link_send(f, m, true);
        }
    }

    fn link_send(&mut self, f: usize, msg: LeaderMessage, vote: bool) {
        let leader = self.leader.as_mut().expect("up");
        let link = &mut leader.links[f];
        let id = link.stream.expect("a stream is open");
        link.outstanding.push_back(Outstanding {
            txid: msg.txid.clone(),
            vote,
        });
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

    /// `Link::prepare`: `Some` if the answer is known at once (not sent).
    fn link_prepare(&mut self, f: usize, msg: LeaderMessage) -> Option<VoteResult> {
        let has_stream = self.leader.as_ref().expect("up").links[f].stream.is_some();
        if has_stream {
            self.link_send(f, msg, true);
            return None;
        }
        if self.reachable(f) && (self.healing || self.rng.random_bool(0.9)) {
            self.open_stream(f, Some(msg));
            None
        } else {
            self.log(|| format!("link {f}: not connected, PREPARE {} not sent", msg.txid));
            Some(VoteResult::NotSent("unreachable".into()))
        }
    }

    /// `Link::decide`: pending until ACKed; sent now if a stream is open.
    fn link_decide(&mut self, f: usize, msg: LeaderMessage) {
        let link = &mut self.leader.as_mut().expect("up").links[f];
        link.pending.push_back(msg.clone());
        if link.stream.is_some() {
            self.link_send(f, msg, false);
        }
    }

    /// `LinkTask::reset`: the stream is dropped, unanswered votes count as no answer.
    pub(super) fn link_reset(&mut self, f: usize) {
        let Some(leader) = self.leader.as_mut() else {
            return;
        };
        let link = &mut leader.links[f];
        let Some(id) = link.stream.take() else {
            return;
        };
        let outstanding = std::mem::take(&mut link.outstanding);
        if let Some(s) = self.streams.get_mut(&id) {
            s.leader_open = false;
            s.to_leader.clear();
        }
        for o in outstanding.iter().filter(|o| o.vote) {
            let txid: TxId = o.txid.parse().expect("our ids parse");
            if let Some(Txn {
                stage: Stage::Voting(votes),
                ..
            }) = leader.txns.get_mut(&txid)
            {
                votes[f] = Some(VoteResult::NoAnswer("stream ended".into()));
            }
        }
        self.log(|| format!("link {f} drops s{id}"));
    }

    pub(super) fn deliver_to_leader(&mut self, id: u64) {
        let s = self.streams.get_mut(&id).expect("chosen stream exists");
        let f = s.follower;
        let Some((txid, reply)) = s.to_leader.pop_front() else {
            self.log(|| format!("link {f}: s{id} ended by the follower"));
            self.link_reset(f);
            return;
        };
        self.stats.delivered += 1;
        let leader = self
            .leader
            .as_mut()
            .expect("open stream means an up leader");
        let link = &mut leader.links[f];
        debug_assert_eq!(link.stream, Some(id));
        // Matched by id and kind (link.rs): a duplicated vote answers no decision.
        let is_vote = matches!(reply, Reply::Vote(_));
        let Some(pos) = link
            .outstanding
            .iter()
            .position(|o| o.txid == txid && o.vote == is_vote)
        else {
            self.log(|| format!("link {f}: reply {reply:?} to {txid} matches nothing; ignored"));
            return;
        };
        let entry = link.outstanding.remove(pos).expect("found");
        if entry.vote {
            let vote = match reply {
                Reply::Vote(o) => o,
                Reply::Ack => Outcome::Abort,
            };
            let parsed: TxId = txid.parse().expect("our ids parse");
            if let Some(Txn {
                stage: Stage::Voting(votes),
                ..
            }) = leader.txns.get_mut(&parsed)
            {
                votes[f] = Some(VoteResult::Vote(vote));
            }
            self.log(|| format!("link {f}: vote {vote:?} for {txid}"));
        } else if reply != Reply::Ack {
            self.log(|| format!("link {f}: decision {txid} answered {reply:?}; reset"));
            self.link_reset(f);
        } else {
            link.pending.retain(|m| m.txid != txid);
            leader.acks.push_back((f, txid.clone()));
            self.log(|| format!("link {f}: ACK {txid}"));
        }
    }
}
