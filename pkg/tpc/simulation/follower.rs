//! The follower's runtime, re-stated: the state owner of `follower_state.rs`
//! (`StateOwner::run`, `handle`, `carry_out`, `answer_journal_failure`, `replay`,
//! `checkpoint_if_due`) and the stream tasks of `follower.rs` (an error answer ends the
//! stream; messages already read from it are still handled).

use super::*;
use crate::tpc::follower_batch::{self, handled_alone, Pending};
use crate::tpc::follower_state::MAX_BATCH;
use crate::tpc::message::Op;

/// Where a follower's message came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Source {
    Stream(u64),
    /// The adversary's replay of an old message: its answer goes nowhere.
    Replay,
}

/// One handled message whose effects wait for the batch to be carried out.
pub(super) struct Handled {
    pub(super) source: Source,
    pub(super) txid: TxnId,
    pub(super) is_decision: bool,
    pub(super) effects: Vec<Effect>,
}

impl Pending for Handled {
    fn effects(&self) -> &[Effect] {
        &self.effects
    }
}

/// The runtime's own batch bookkeeping and `must_precede` rule.
pub(super) type Batch = follower_batch::Batch<Handled>;

impl Sim {
    /// Messages waiting for follower `f`'s state owner, on all its streams.
    pub(super) fn inbox_len(&self, f: usize) -> usize {
        self.streams
            .values()
            .filter(|s| s.follower == f)
            .map(|s| s.to_follower.len())
            .sum::<usize>()
            + self.followers[f].replays.len()
    }

    /// The next message in arrival order: the head of one of the follower's streams (or
    /// of the replays), the adversary picks which.
    fn next_message(&mut self, f: usize) -> Option<(Source, LeaderMessage)> {
        let mut sources: Vec<Source> = self
            .streams
            .iter()
            .filter(|(_, s)| s.follower == f && !s.to_follower.is_empty())
            .map(|(&id, _)| Source::Stream(id))
            .collect();
        if !self.followers[f].replays.is_empty() {
            sources.push(Source::Replay);
        }
        if sources.is_empty() {
            return None;
        }
        let source = sources[self.rng.random_range(0..sources.len())];
        let msg = match source {
            Source::Stream(id) => self.streams.get_mut(&id)?.to_follower.pop_front()?,
            Source::Replay => self.followers[f].replays.pop_front()?,
        };
        Some((source, msg))
    }

    /// One turn of `StateOwner::run`'s loop: takes the messages that are waiting (some
    /// of them: the rest arrive later), hands them to the core one by one into a batch,
    /// and carries batches out as the runtime does.
    pub(super) fn follower_run(&mut self, f: usize) -> Checked {
        let available = self.inbox_len(f);
        if available == 0 || self.followers[f].core.is_none() {
            return Ok(());
        }
        let take = if self.healing || self.rng.random_bool(0.5) {
            available
        } else {
            self.rng.random_range(1..=available)
        };
        let mut batch = Batch::default();
        for _ in 0..take {
            let Some((source, msg)) = self.next_message(f) else {
                break;
            };
            let core = self.followers[f].core.as_ref().expect("up");
            let alone = handled_alone(core, &msg);
            let precede = !self.cfg.bugs.ignore_must_precede && batch.must_precede(&msg);
            let full = batch.handled.len() >= MAX_BATCH;
            if (alone || precede || full) && !self.carry_out(f, std::mem::take(&mut batch))? {
                return Ok(());
            }
            self.handle(f, &mut batch, source, msg);
            if alone && !self.carry_out(f, std::mem::take(&mut batch))? {
                return Ok(());
            }
        }
        self.carry_out(f, batch)?;
        Ok(())
    }

    /// `StateOwner::handle`: one message through the core, its effects into `batch`.
    fn handle(&mut self, f: usize, batch: &mut Batch, source: Source, msg: LeaderMessage) {
        let stream_id = match source {
            Source::Stream(id) => id,
            Source::Replay => u64::MAX,
        };
        let txid = msg.txid.clone();
        let is_decision = matches!(msg.body, Body::Decide { .. });
        let description = brief(&msg);
        self.stats.delivered += 1;
        let node = &mut self.followers[f];
        let kv = &node.kv;
        // Versions are not modelled (see the module documentation).
        let store = |key: &str| {
            kv.get(key).map(|value| Versioned {
                value: value.clone(),
                version: TxId::default(),
            })
        };
        let core = node.core.as_mut().expect("up");
        let mut effects = core.handle(stream_id, msg, &store);
        if self.cfg.bugs.skip_prepare_persist {
            effects.retain(|e| !matches!(e, Effect::Persist(FollowerRecord::Prepare { .. })));
        }
        if self.cfg.bugs.apply_first_write_only {
            let mut first = true;
            effects.retain(|e| !matches!(e, Effect::Apply { .. }) || std::mem::take(&mut first));
        }
        let via = match source {
            Source::Stream(id) => format!("s{id}"),
            Source::Replay => "replay".into(),
        };
        let position = batch.handled.len();
        self.log(|| format!("follower {f} <- {via} {description} (#{position}): {effects:?}"));
        let core = self.followers[f].core.as_ref().expect("up");
        batch.push(
            core,
            Handled {
                source,
                txid,
                is_decision,
                effects,
            },
        );
    }

    /// `StateOwner::carry_out`: journal (one write), store, `finish`es, replies, with the
    /// crash points and disk faults in between. False if the follower crashed (stopped).
    pub(super) fn carry_out(&mut self, f: usize, batch: Batch) -> Result<bool, Failure> {
        let handled = batch.handled;
        if handled.is_empty() {
            return Ok(true);
        }
        self.stats.batches += 1;
        if handled.len() > 1 {
            self.stats.batched += handled.len();
        }
        self.stats.max_batch = self.stats.max_batch.max(handled.len());
        let records: Vec<FollowerRecord> = handled
            .iter()
            .flat_map(|h| &h.effects)
            .filter_map(|e| match e {
                Effect::Persist(record) => Some(record.clone()),
                _ => None,
            })
            .collect();
        let count = handled.len();
        if !records.is_empty() {
            if self.chance(300) {
                self.log(|| format!("follower {f} crashes before journaling a batch of {count}"));
                self.crash_follower(f);
                return Ok(false);
            }
            if let Some(fault) = self.followers[f].disk_fault.take() {
                self.stats.journal_failures += 1;
                let mut kept = 0;
                if fault == Fault::Broken {
                    kept = self.rng.random_range(0..=records.len());
                    self.followers[f]
                        .journal
                        .extend(records[..kept].iter().cloned());
                }
                self.log(|| {
                    format!(
                        "follower {f}: journal write of a batch of {count} failed ({fault:?}; \
                         {kept} of {} records on disk)",
                        records.len()
                    )
                });
                self.answer_journal_failure(f, handled);
                if fault == Fault::Broken {
                    self.log(|| format!("follower {f} stops: its journal is broken"));
                    self.crash_follower(f);
                    return Ok(false);
                }
                return Ok(true);
            }
            if self.chance(300) {
                let kept = self.rng.random_range(0..records.len());
                self.followers[f]
                    .journal
                    .extend(records[..kept].iter().cloned());
                self.log(|| {
                    format!(
                        "follower {f} crashes while journaling: {kept} of {} records written",
                        records.len()
                    )
                });
                self.crash_follower(f);
                return Ok(false);
            }
            let node = &mut self.followers[f];
            if let Some(checkpoint) = node.checkpoint.as_mut() {
                checkpoint.since.extend(records.iter().cloned());
            }
            node.journal.extend(records);
            if self.chance(200) {
                self.log(|| format!("follower {f} crashes after journaling a batch of {count}"));
                self.crash_follower(f);
                return Ok(false);
            }
        }
        let apply_failed = self.apply_changes(f, &handled);
        // `drop_unheld_keys`, after the applies: durable deletes (`KvStore::apply_batch`).
        for drop in [Effect::DropUnheld, Effect::DropLeftovers] {
            if handled.iter().any(|h| h.effects.contains(&drop)) {
                let node = &mut self.followers[f];
                let core = node.core.as_ref().expect("up");
                let stays = |key: &String| match drop {
                    Effect::DropLeftovers => core.retains(key),
                    _ => core.keeps(key),
                };
                node.kv.retain(|key, _| stays(key));
                node.unsynced.retain(|key, _| stays(key));
            }
        }
        if self.chance(400) {
            self.log(|| format!("follower {f} crashes after the store changes of a batch"));
            self.crash_follower(f);
            return Ok(false);
        }
        // Reads run concurrently with the state owner: the applied, still locked state
        // must agree too.
        self.check_agreement()?;
        for (i, h) in handled.into_iter().enumerate() {
            if i > 0 && self.chance(500) {
                self.log(|| format!("follower {f} crashes after {i} of {count} replies"));
                self.crash_follower(f);
                return Ok(false);
            }
            let applies = h.effects.iter().any(|e| matches!(e, Effect::Apply { .. }));
            if apply_failed && applies {
                // Not finished: the key stays locked and the leader retransmits.
                self.answer(f, h.source, &h.txid, Err("store write failed".into()));
                continue;
            }
            let mut answer = Err("no reply produced".to_string());
            let core = self.followers[f].core.as_mut().expect("up");
            for effect in h.effects {
                match effect {
                    Effect::Finish {
                        txid,
                        outcome,
                        failed,
                    } => {
                        core.finish(&txid, outcome, failed);
                    }
                    Effect::Reply(reply) => answer = Ok(reply),
                    Effect::Refuse(why) => answer = Err(format!("refuses the leader: {why}")),
                    Effect::Persist(_)
                    | Effect::Apply { .. }
                    | Effect::DropUnheld
                    | Effect::DropLeftovers => {}
                }
            }
            let finished = answer.is_ok();
            self.answer(f, h.source, &h.txid, answer);
            if finished && h.is_decision {
                self.told[f].insert(h.txid);
            }
        }
        Ok(true)
    }

    /// `StateOwner::answer_journal_failure`: a message whose effects included a PREPARE
    /// record gets `prepare_failed` and an ABORT vote; every other one fails its stream.
    fn answer_journal_failure(&mut self, f: usize, handled: Vec<Handled>) {
        let core = self.followers[f].core.as_mut().expect("up");
        core.journal_failed();
        let mut answers = Vec::new();
        for h in handled {
            let prepared = h.effects.iter().find_map(|e| match e {
                Effect::Persist(FollowerRecord::Prepare { txid, .. }) => Some(txid.clone()),
                _ => None,
            });
            let answer = match prepared {
                Some(txid) => Ok(core.prepare_failed(&txid)),
                None => Err("follower journal write failed".to_string()),
            };
            answers.push((h.source, h.txid, answer));
        }
        for (source, txid, answer) in answers {
            self.answer(f, source, &txid, answer);
        }
    }

    /// `StateOwner::apply_changes`: the last change to each key, in order, unsynced
    /// (`KvStore::apply_unsynced`). True if the store write failed (after a prefix).
    fn apply_changes(&mut self, f: usize, handled: &[Handled]) -> bool {
        let changes: Vec<(&String, Option<&String>)> = handled
            .iter()
            .flat_map(|h| &h.effects)
            .filter_map(|e| match e {
                Effect::Apply { key, op, .. } => Some((
                    key,
                    match op {
                        Op::Put(value) => Some(value),
                        Op::Delete => None,
                    },
                )),
                _ => None,
            })
            .collect();
        if changes.is_empty() {
            return false;
        }
        let mut last: BTreeMap<&String, usize> = BTreeMap::new();
        for (i, (key, _)) in changes.iter().enumerate() {
            last.insert(key, i);
        }
        let effective: Vec<(String, Option<String>)> = changes
            .iter()
            .enumerate()
            .filter(|(i, (key, _))| last[key] == *i)
            .map(|(_, (key, value))| ((*key).clone(), value.cloned()))
            .collect();
        let failed = std::mem::take(&mut self.followers[f].store_fault);
        let upto = if failed {
            self.rng.random_range(0..effective.len())
        } else {
            effective.len()
        };
        for (key, value) in &effective[..upto] {
            self.kv_write_unsynced(f, key, value.clone());
        }
        if failed {
            self.log(|| {
                format!(
                    "follower {f}: store write failed after {upto} of {} changes",
                    effective.len()
                )
            });
        }
        failed
    }

    /// Sends an answer on the stream the message came from, in message order. An error
    /// ends the stream (the answer task stops); the messages the stream task had already
    /// read from it (a prefix of what is in flight) are still handled, their replies lost.
    fn answer(&mut self, f: usize, source: Source, txid: &TxnId, answer: Result<Reply, String>) {
        let Source::Stream(id) = source else {
            return;
        };
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if !s.follower_open {
            return;
        }
        match answer {
            Ok(reply) => {
                if s.leader_open {
                    s.to_leader.push_back((txid.clone(), reply));
                }
            }
            Err(why) => {
                s.follower_open = false;
                let read = self.rng.random_range(0..=s.to_follower.len());
                s.to_follower.truncate(read);
                self.log(|| {
                    format!(
                        "follower {f} ends s{id} at {txid}: {why} ({read} messages already read)"
                    )
                });
            }
        }
    }

    /// `KvStore::apply_unsynced`: visible now, durable at the next store sync.
    pub(super) fn kv_write_unsynced(&mut self, f: usize, key: &str, value: Option<String>) {
        let node = &mut self.followers[f];
        let before = node.kv.get(key).cloned();
        node.unsynced
            .entry(key.to_string())
            .or_default()
            .push(before);
        match value {
            Some(v) => node.kv.insert(key.to_string(), v),
            None => node.kv.remove(key),
        };
    }

    /// A message sent to `f` earlier, queued to reach it again (its reply goes nowhere).
    pub(super) fn replay(&mut self, f: usize) {
        let incarnation = self.followers[f].incarnation;
        let across = self.cfg.profile == Profile::Amnesia;
        let candidates: Vec<usize> = self.followers[f]
            .sent
            .iter()
            .enumerate()
            .filter(|(_, (inc, _))| across || *inc == incarnation)
            .map(|(i, _)| i)
            .collect();
        if candidates.is_empty() {
            return;
        }
        let pick = candidates[self.rng.random_range(0..candidates.len())];
        let msg = self.followers[f].sent[pick].1.clone();
        self.stats.replays += 1;
        self.log(|| format!("replay to follower {f}: {}", brief(&msg)));
        self.followers[f].replays.push_back(msg);
    }

    /// `checkpoint_if_due`, between batches: the first call starts the store sync (the
    /// live records of this moment are kept, and the records journaled from now on);
    /// the next one finds the sync done and rewrites the journal with both.
    pub(super) fn checkpoint_follower(&mut self, f: usize) {
        let node = &mut self.followers[f];
        let Some(checkpoint) = node.checkpoint.take() else {
            let core = node.core.as_ref().expect("checkpoint of an up follower");
            let covers = node
                .unsynced
                .iter()
                .map(|(key, values)| (key.clone(), values.len()))
                .collect();
            node.checkpoint = Some(SimCheckpoint {
                live: core.live_records(),
                since: Vec::new(),
                covers,
            });
            self.log(|| format!("follower {f} starts syncing its store"));
            return;
        };
        // The sync made each key's value at its start durable (or a later one).
        for (key, covered) in checkpoint.covers {
            if let Some(values) = node.unsynced.get_mut(&key) {
                values.drain(..covered.min(values.len()));
                if values.is_empty() {
                    node.unsynced.remove(&key);
                }
            }
        }
        if self.chance(20) {
            self.log(|| format!("follower {f} crashes between store sync and checkpoint"));
            self.crash_follower(f);
            return;
        }
        let node = &mut self.followers[f];
        let SimCheckpoint {
            mut live, since, ..
        } = checkpoint;
        live.extend(since);
        node.journal = live;
        let n = node.journal.len();
        self.log(|| format!("follower {f} has synced its store and checkpoints: {n} records"));
    }

    pub(super) fn crash_follower(&mut self, f: usize) {
        self.stats.crashes += 1;
        self.forget_catch_up(f);
        let node = &mut self.followers[f];
        node.core = None;
        node.checkpoint = None;
        node.disk_fault = None;
        node.store_fault = false;
        node.replays.clear();
        // Each unsynced key file holds any value it had since the last sync, or is torn.
        let mut lost = Vec::new();
        for (key, mut values) in std::mem::take(&mut node.unsynced) {
            let now = node.kv.get(&key).cloned();
            let wrote_a_file = values[1..].iter().chain([&now]).any(Option::is_some);
            values.push(now.clone());
            let left = if wrote_a_file && self.rng.random_ratio(1, 5) {
                Some(TORN.to_string())
            } else {
                values[self.rng.random_range(0..values.len())].clone()
            };
            if left != now {
                lost.push((key.clone(), left.clone()));
            }
            match left {
                Some(v) => node.kv.insert(key, v),
                None => node.kv.remove(&key),
            };
        }
        self.stats.lost_applies += lost.len();
        for s in self.streams.values_mut().filter(|s| s.follower == f) {
            s.follower_open = false;
            s.to_follower.clear();
        }
        self.log(|| format!("follower {f} crashes; unsynced store changes undone: {lost:?}"));
    }

    /// `Follower::open` and `StateOwner::replay`.
    pub(super) fn restart_follower(&mut self, f: usize) {
        let skip_applies = self.cfg.bugs.replay_skips_applies;
        let node = &mut self.followers[f];
        let mut core = follower_core(f, !node.kv.is_empty() || !node.journal.is_empty());
        let mut changes: BTreeMap<String, Op> = BTreeMap::new();
        for record in node.journal.clone() {
            for effect in core.replay(record) {
                match effect {
                    Effect::Apply { key, op, .. } if !skip_applies => {
                        changes.insert(key, op);
                    }
                    Effect::Finish {
                        txid,
                        outcome,
                        failed,
                    } => {
                        core.finish(&txid, outcome, failed);
                    }
                    Effect::DropUnheld => changes.retain(|key, _| core.keeps(key)),
                    Effect::DropLeftovers => changes.retain(|key, _| core.retains(key)),
                    _ => {}
                }
            }
        }
        let prepared = core.prepared().len();
        node.core = Some(core);
        node.incarnation += 1;
        let records = node.journal.len();
        // `apply_unsynced` of the keys whose file differs (or is torn): the journal keeps
        // their records until a checkpoint has synced the store.
        let mut rewritten = Vec::new();
        for (key, op) in changes {
            let wanted = match op {
                Op::Put(v) => Some(v),
                Op::Delete => None,
            };
            if self.followers[f].kv.get(&key) != wanted.as_ref() {
                self.kv_write_unsynced(f, &key, wanted);
                rewritten.push(key);
            }
        }
        self.drop_unheld_at_start(f);
        self.forget_catch_up(f);
        self.log(|| {
            format!(
                "follower {f} restarts: {records} records replayed, {prepared} prepared, \
                 keys rewritten: {rewritten:?}"
            )
        });
    }
}
