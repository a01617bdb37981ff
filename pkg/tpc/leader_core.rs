//! The leader's protocol core: the transaction table, with no I/O.
//!
//! The leader's journal is its memory of every transaction that is not finished yet:
//! `begin` (id, key, follower set) is handed to the journal before the first PREPARE
//! (and is durable before the decision), `decide` is durable before the decision is
//! sent, and `done` is written once every follower that got the PREPARE ACKed the
//! decision, aborts included (DESIGN §1.4). [`LeaderCore::recover`] rebuilds
//! the table from those records at start: a transaction without a decision is aborted
//! (its decision journaled first), and every decided one is delivered again. A
//! transaction whose `begin` was lost in the crash is aborted by the followers when the
//! restarted leader's end of recovery reaches them ([`LeaderCore::end_of_recovery`]).
//!
//! Transaction ids are `<epoch>.<seq>`: the epoch is incremented and journaled at every
//! start, so ids are never reused. Every message also carries a per-follower *low-water
//! mark*: the smallest id that this follower may still hear about (undecided, or decided
//! but not yet ACKed by it). Everything below it that was sent to the follower is decided
//! and ACKed, so the follower may forget it and refuse any late PREPARE of it.

use std::collections::{BTreeMap, BTreeSet};

use super::message::{Body, ClusterInfo, LeaderMessage, Outcome, TxId};
use super::records::LeaderRecord;

/// Where a transaction is in the protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// PREPAREs sent, waiting for votes.
    Voting,
    /// Decided; the followers that have not ACKed the decision yet.
    Decided {
        outcome: Outcome,
        awaiting: BTreeSet<String>,
    },
}

/// An unfinished transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderTxn {
    /// The key it writes.
    pub key: String,
    /// The followers it was planned for (all of them at its start).
    pub followers: Vec<String>,
    /// Its phase.
    pub phase: Phase,
}

/// A decision that must reach a follower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The follower.
    pub follower: String,
    /// The transaction.
    pub txid: TxId,
    /// The decision.
    pub outcome: Outcome,
}

/// The leader's protocol state.
#[derive(Debug)]
pub struct LeaderCore {
    cluster_id: String,
    epoch: u64,
    has_data: bool,
    next_seq: u64,
    txns: BTreeMap<TxId, LeaderTxn>,
}

/// What a start needs: the core, the records to make durable before serving, and the
/// decisions to deliver.
pub struct Recovery {
    /// The rebuilt core, in its new epoch.
    pub core: LeaderCore,
    /// Records to journal (durably) before anything is sent.
    pub persist: Vec<LeaderRecord>,
    /// Decisions to deliver to followers.
    pub deliveries: Vec<Delivery>,
    /// True if an earlier run of this leader left records: then every follower gets the
    /// end of recovery ([`LeaderCore::end_of_recovery`]) after its deliveries.
    pub restarted: bool,
}

impl LeaderCore {
    /// Rebuilds the leader from its journal. `new_cluster_id` is used on a first start.
    pub fn recover(
        records: Vec<LeaderRecord>,
        new_cluster_id: impl FnOnce() -> String,
    ) -> Recovery {
        let mut cluster_id = None;
        let mut epoch = 0;
        let mut has_data = false;
        let mut txns = BTreeMap::new();
        for record in records {
            match record {
                LeaderRecord::Meta {
                    cluster_id: id,
                    epoch: e,
                    has_data: d,
                } => {
                    cluster_id = Some(id);
                    epoch = epoch.max(e);
                    has_data |= d;
                }
                LeaderRecord::Begin {
                    txid,
                    key,
                    followers,
                } => {
                    txns.insert(
                        txid,
                        LeaderTxn {
                            key,
                            followers,
                            phase: Phase::Voting,
                        },
                    );
                }
                LeaderRecord::Decide {
                    txid,
                    outcome,
                    followers,
                } => {
                    if let Some(txn) = txns.get_mut(&txid) {
                        txn.phase = Phase::Decided {
                            outcome,
                            awaiting: followers.into_iter().collect(),
                        };
                    }
                }
                LeaderRecord::Done { txid } => {
                    txns.remove(&txid);
                }
            }
        }
        let restarted = cluster_id.is_some();
        let mut core = LeaderCore {
            cluster_id: cluster_id.unwrap_or_else(new_cluster_id),
            epoch: epoch + 1,
            has_data,
            next_seq: 1,
            txns,
        };
        let mut persist = vec![core.meta_record()];
        // Decided for nobody (no follower got the PREPARE), but the `done` written with
        // the decision was lost in a crash: finished.
        let finished: Vec<TxId> = core
            .txns
            .iter()
            .filter(
                |(_, t)| matches!(&t.phase, Phase::Decided { awaiting, .. } if awaiting.is_empty()),
            )
            .map(|(id, _)| *id)
            .collect();
        for txid in finished {
            core.txns.remove(&txid);
            persist.push(LeaderRecord::Done { txid });
        }
        let undecided: Vec<TxId> = core
            .txns
            .iter()
            .filter(|(_, t)| t.phase == Phase::Voting)
            .map(|(id, _)| *id)
            .collect();
        for txid in undecided {
            // Never decided: nobody can have been told COMMIT, so ABORT is safe. The
            // PREPARE may have reached any planned follower, so all of them are told.
            let followers = core.txns[&txid].followers.clone();
            persist.extend(core.decide(txid, Outcome::Abort, followers));
        }
        let deliveries = core
            .txns
            .iter()
            .flat_map(|(txid, txn)| match &txn.phase {
                Phase::Decided { outcome, awaiting } => awaiting
                    .iter()
                    .map(|f| Delivery {
                        follower: f.clone(),
                        txid: *txid,
                        outcome: *outcome,
                    })
                    .collect(),
                Phase::Voting => Vec::new(),
            })
            .collect();
        Recovery {
            core,
            persist,
            deliveries,
            restarted,
        }
    }

    /// Starts a transaction on `key` planned for `followers`; returns its id and the
    /// record to make durable before the first PREPARE.
    pub fn begin(&mut self, key: &str, followers: Vec<String>) -> (TxId, LeaderRecord) {
        let txid = TxId {
            epoch: self.epoch,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        self.txns.insert(
            txid,
            LeaderTxn {
                key: key.to_string(),
                followers: followers.clone(),
                phase: Phase::Voting,
            },
        );
        (
            txid,
            LeaderRecord::Begin {
                txid,
                key: key.to_string(),
                followers,
            },
        )
    }

    /// Decides `txid`; `sent_to` are the followers that got its PREPARE and must get the
    /// decision. Returns the records to make durable before sending it.
    pub fn decide(
        &mut self,
        txid: TxId,
        outcome: Outcome,
        sent_to: Vec<String>,
    ) -> Vec<LeaderRecord> {
        let mut records = vec![LeaderRecord::Decide {
            txid,
            outcome,
            followers: sent_to.clone(),
        }];
        if outcome == Outcome::Commit && !self.has_data {
            self.has_data = true;
            records.push(self.meta_record());
        }
        match self.txns.get_mut(&txid) {
            Some(txn) if !sent_to.is_empty() => {
                txn.phase = Phase::Decided {
                    outcome,
                    awaiting: sent_to.into_iter().collect(),
                };
            }
            _ => {
                self.txns.remove(&txid);
                records.push(LeaderRecord::Done { txid });
            }
        }
        records
    }

    /// This run's *end of recovery* for `follower`, queued after the decisions recovered
    /// for it (id `<epoch>.0`, which no transaction has): it lists the transactions this
    /// leader has unfinished for `follower`, and the follower aborts every other one of
    /// an older epoch it holds prepared: PREPAREs an earlier run sent before their
    /// `begin` was durable, and crashed, so never decided.
    pub fn end_of_recovery(&self, follower: &str) -> LeaderMessage {
        let known = self
            .txns
            .iter()
            .filter(|(_, txn)| match &txn.phase {
                Phase::Voting => txn.followers.iter().any(|f| f == follower),
                Phase::Decided { awaiting, .. } => awaiting.contains(follower),
            })
            .map(|(txid, _)| *txid)
            .collect();
        let id = TxId {
            epoch: self.epoch,
            seq: 0,
        };
        self.message(id, Body::EndOfRecovery { known }, follower)
    }

    /// A follower ACKed the decision of `txid`; returns the `done` record when it was the last.
    pub fn acked(&mut self, txid: TxId, follower: &str) -> Option<LeaderRecord> {
        let txn = self.txns.get_mut(&txid)?;
        let Phase::Decided { awaiting, .. } = &mut txn.phase else {
            return None;
        };
        awaiting.remove(follower);
        if awaiting.is_empty() {
            self.txns.remove(&txid);
            return Some(LeaderRecord::Done { txid });
        }
        None
    }

    /// The low-water mark for `follower`: the smallest id it may still hear about.
    pub fn low_water(&self, follower: &str) -> TxId {
        self.txns
            .iter()
            .find(|(_, txn)| match &txn.phase {
                Phase::Voting => txn.followers.iter().any(|f| f == follower),
                Phase::Decided { awaiting, .. } => awaiting.contains(follower),
            })
            .map(|(txid, _)| *txid)
            .unwrap_or(TxId {
                epoch: self.epoch,
                seq: self.next_seq,
            })
    }

    /// The message carrying `body` of `txid` to `follower`.
    pub fn message(&self, txid: TxId, body: Body, follower: &str) -> LeaderMessage {
        LeaderMessage {
            txid: txid.to_string(),
            body,
            epoch: self.epoch,
            low_water: Some(self.low_water(follower)),
            cluster: Some(ClusterInfo {
                id: self.cluster_id.clone(),
                has_data: self.has_data,
            }),
        }
    }

    /// What a checkpoint keeps: the metadata and every unfinished transaction.
    pub fn live_records(&self) -> Vec<LeaderRecord> {
        let mut records = vec![self.meta_record()];
        for (txid, txn) in &self.txns {
            records.push(LeaderRecord::Begin {
                txid: *txid,
                key: txn.key.clone(),
                followers: txn.followers.clone(),
            });
            if let Phase::Decided { outcome, awaiting } = &txn.phase {
                records.push(LeaderRecord::Decide {
                    txid: *txid,
                    outcome: *outcome,
                    followers: awaiting.iter().cloned().collect(),
                });
            }
        }
        records
    }

    /// The unfinished transactions.
    pub fn txns(&self) -> &BTreeMap<TxId, LeaderTxn> {
        &self.txns
    }

    /// This leader's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The cluster id.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    fn meta_record(&self) -> LeaderRecord {
        LeaderRecord::Meta {
            cluster_id: self.cluster_id.clone(),
            epoch: self.epoch,
            has_data: self.has_data,
        }
    }
}

#[cfg(test)]
#[path = "leader_core_tests.rs"]
mod tests;
