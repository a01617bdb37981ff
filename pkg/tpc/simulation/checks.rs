//! The invariants, and the healing phase that ends every schedule.

use super::*;

impl Sim {
    /// Invariant 1: readable copies of a key agree, and only its replicas hold it (by
    /// the follower's own views, which change with the members).
    pub(super) fn check_agreement(&self) -> Checked {
        for key in KEYS {
            let mut first: Option<(usize, Option<&String>)> = None;
            for (f, node) in self.followers.iter().enumerate() {
                let Some(core) = &node.core else { continue };
                let replica = match self.cfg.changes {
                    true => core.keeps(key),
                    false => self.holds(f, key),
                };
                if !replica {
                    if let Some(value) = node.kv.get(key) {
                        return Err(self.fail(
                            "1",
                            format!("follower {f} holds {key:?} = {value:?}, not being a replica"),
                        ));
                    }
                    continue;
                }
                if core.check_readable(key).is_err() || !self.may_read(f, key) {
                    continue;
                }
                let value = node.kv.get(key);
                match first {
                    None => first = Some((f, value)),
                    Some((g, other)) if other != value => {
                        return Err(self.fail(
                            "1",
                            format!(
                                "key {key:?} is readable on follower {g} as {other:?} and on \
                                 follower {f} as {value:?} at the same time"
                            ),
                        ))
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }

    /// Invariant 5: a transaction whose decision a follower has handled to the end (in
    /// any incarnation) is never prepared there again.
    pub(super) fn check_idempotence(&self) -> Checked {
        for (f, node) in self.followers.iter().enumerate() {
            let Some(core) = &node.core else { continue };
            let mut again: Vec<&TxnId> = core
                .prepared()
                .keys()
                .filter(|txid| self.told[f].contains(*txid))
                .collect();
            again.sort();
            if let Some(&txid) = again.first() {
                return Err(self.fail(
                    "5",
                    format!(
                        "follower {f} handled the decision of {txid} earlier, yet holds it \
                         prepared again (locking {:?}); prepared again: {again:?}",
                        core.prepared()[txid].txn.keys()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Invariant 6, *atomic visibility*: a snapshot read on follower `f` (`seen`: every
    /// key and its value) sees each transaction of several keys whole. If a key holds the
    /// value a transaction wrote to several keys, each other key it wrote holds that value
    /// too, or the effect of a later transaction on that key (writes to a key take effect
    /// in the order of their ids: a key's transactions run one at a time, in order).
    pub(super) fn check_snapshot(&self, f: usize, seen: &[(String, Option<String>)]) -> Checked {
        let value_of = |key: &str| {
            seen.iter()
                .find(|(k, _)| k == key)
                .and_then(|(_, v)| v.clone())
        };
        // The ops that wrote `value` (one per key of its transaction).
        let writers = |value: &str| -> Vec<&ClientOp> {
            self.ops
                .iter()
                .filter(|op| matches!(&op.kind, OpKind::Put(v) if v == value))
                .collect()
        };
        for (key, value) in seen {
            let Some(value) = value else { continue };
            let written = writers(value);
            let Some(txid) = written.iter().find_map(|op| op.txid) else {
                continue;
            };
            let was_seen = |key: &str| seen.iter().any(|(k, _)| k == key);
            for other in written
                .iter()
                .filter(|op| op.key != *key && was_seen(&op.key))
            {
                let held = value_of(&other.key);
                if held.as_deref() == Some(value.as_str()) {
                    continue;
                }
                let later = match &held {
                    Some(v) => writers(v)
                        .iter()
                        .any(|op| op.key == other.key && op.txid > Some(txid)),
                    None => self.ops.iter().any(|op| {
                        op.key == other.key && op.kind == OpKind::Delete && op.txid > Some(txid)
                    }),
                };
                if !later {
                    return Err(self.fail(
                        "6",
                        format!(
                            "a snapshot read on follower {f} sees {key:?} = {value:?}, written by \
                             {txid} with {:?}, but {:?} = {held:?}, neither that value nor a \
                             later write's: {seen:?}",
                            other.key, other.key
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Ends the faults and runs until nothing is left to do; then kills and restarts
    /// every node once more (the followers lose their unsynced store changes) and runs
    /// until quiet again.
    pub(super) fn heal(&mut self) -> Checked {
        self.healing = true;
        self.log(|| "heal: faults stop, everything restarts".into());
        self.leader_disk_fault = None;
        for f in 0..FOLLOWERS {
            self.followers[f].partitioned = false;
            self.followers[f].disk_fault = None;
            self.followers[f].store_fault = false;
            if self.followers[f].core.is_none() {
                self.restart_follower(f);
            }
        }
        if self.leader.is_none() {
            self.restart_leader();
        }
        self.quiesce()?;
        // Before the final restart: its recovery would decide what a missing decision
        // left prepared, and hide it.
        self.check_nothing_prepared("once quiet")?;
        self.log(|| "heal: quiet; every node is killed and restarted".into());
        for f in 0..FOLLOWERS {
            self.crash_follower(f);
            self.restart_follower(f);
        }
        self.crash_leader("the final restart");
        self.restart_leader();
        self.quiesce()
    }

    /// Delivers everything, in random order, until nothing is in flight.
    fn quiesce(&mut self) -> Checked {
        for _ in 0..100_000 {
            self.after_step()?;
            let mut ready: Vec<Action> = (0..FOLLOWERS)
                .filter(|&f| self.followers[f].core.is_some() && self.inbox_len(f) > 0)
                .map(Action::FollowerRun)
                .collect();
            ready.extend(
                self.streams
                    .iter()
                    .filter(|(_, s)| s.deliverable_to_leader())
                    .map(|(&id, _)| Action::DeliverToLeader(id)),
            );
            let leader = self.leader.as_ref().expect("up while healing");
            if !leader.jobs.is_empty() {
                ready.push(Action::LeaderJournal);
            }
            if !ready.is_empty() {
                let action = ready[self.rng.random_range(0..ready.len())];
                self.perform(action)?;
                continue;
            }
            // Nothing in flight: what is left waits for time (an answer that was
            // dropped, a reconnection, a journal retry).
            if leader.core.next_deadline().is_some() {
                self.leader_time_passes();
                continue;
            }
            // Then a change under way goes on: copies, and the switch.
            let moves = self.change_moves();
            if !moves.is_empty() {
                let action = moves[self.rng.random_range(0..moves.len())];
                self.perform(action)?;
                continue;
            }
            return Ok(());
        }
        Err(self.fail(
            "2",
            "the cluster does not become quiet: messages keep flowing after healing".into(),
        ))
    }

    /// Invariant 2: no follower still holds a prepared transaction.
    fn check_nothing_prepared(&mut self, when: &str) -> Checked {
        for f in 0..FOLLOWERS {
            let core = self.followers[f].core.as_ref().expect("up while healing");
            if !core.prepared().is_empty() {
                let detail = format!(
                    "follower {f} still has prepared transactions {when}: {:?}",
                    core.prepared()
                );
                return Err(self.fail("2", detail));
            }
        }
        Ok(())
    }

    pub(super) fn final_checks(&mut self) -> Checked {
        // Invariant 2.
        let leader = self.leader.as_ref().expect("up after healing");
        if !leader.writes.is_empty() {
            return Err(self.fail("2", "a client write is still running after healing".into()));
        }
        if !leader.core.recovery().is_complete() {
            return Err(self.fail(
                "2",
                format!(
                    "recovery incomplete: in doubt {:?}",
                    leader.core.recovery().in_doubt()
                ),
            ));
        }
        if !leader.core.txns().is_empty() {
            return Err(self.fail(
                "2",
                format!("unfinished leader transactions: {:?}", leader.core.txns()),
            ));
        }
        self.check_nothing_prepared("after healing")?;
        for (f, node) in self.followers.iter().enumerate() {
            if let Some((key, _)) = node.kv.iter().find(|(_, v)| *v == TORN) {
                return Err(self.fail(
                    "2",
                    format!("follower {f}: the key file of {key:?} is torn after its restart"),
                ));
            }
        }
        for key in KEYS {
            let replicas = self.replicas_of(key);
            let copies: Vec<Option<&String>> = replicas
                .iter()
                .map(|&f| self.followers[f].kv.get(key))
                .collect();
            if copies.iter().any(|copy| *copy != copies[0]) {
                return Err(self.fail(
                    "2",
                    format!("replicas {replicas:?} of {key:?} differ after healing: {copies:?}"),
                ));
            }
        }
        // Invariant 3.
        for key in KEYS {
            let value_of = |op: &ClientOp| match &op.kind {
                OpKind::Put(v) => Some(v.clone()),
                _ => None,
            };
            let writes = |status: Status| {
                self.ops
                    .iter()
                    .filter(move |op| op.key == key && op.status == status && op.txid.is_some())
                    .filter(|op| !matches!(op.kind, OpKind::Get(_)))
            };
            let last_acked = writes(Status::Ok).max_by_key(|op| op.txid);
            let since = last_acked.and_then(|op| op.txid);
            let mut allowed: Vec<Option<String>> = vec![last_acked.and_then(value_of)];
            allowed.extend(
                writes(Status::Unknown)
                    .filter(|op| op.txid > since)
                    .map(value_of),
            );
            let actual = self.followers[self.replicas_of(key)[0]]
                .kv
                .get(key)
                .cloned();
            if !allowed.contains(&actual) {
                return Err(self.fail(
                    "3",
                    format!(
                        "key {key:?} ends as {actual:?}; the last acknowledged write ({:?}) or a \
                         later one of unknown outcome would give one of {allowed:?}",
                        last_acked.map(|op| (op.txid, &op.kind))
                    ),
                ));
            }
        }
        // Invariant 4, with a final read of every key.
        for key in KEYS {
            let f = self.random_replica(key);
            if !self.read_on(f, key) {
                return Err(self.fail(
                    "2",
                    format!("key {key:?} still unreadable on follower {f} after healing"),
                ));
            }
        }
        let history: Vec<Operation> = self
            .ops
            .iter()
            .enumerate()
            .filter(|(_, op)| matches!(op.status, Status::Ok | Status::Unknown))
            .map(|(i, op)| Operation {
                client: i,
                key: op.key.clone(),
                kind: op.kind.clone(),
                call: op.call,
                ret: if op.status == Status::Ok {
                    op.ret
                } else {
                    None
                },
            })
            .collect();
        if let Err(violation) = check(&history) {
            return Err(self.fail("4", violation.to_string()));
        }
        Ok(())
    }
}
