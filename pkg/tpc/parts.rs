//! A transaction split among replicas that each hold some of its keys (DESIGN §6, §7).
//! Pure.
//!
//! With full replication every participant holds every key: it evaluates the whole
//! transaction and all find the same. With fewer replicas than followers a participant
//! may hold only some of the keys, so the leader sends each its *part*
//! ([`part`]): the compares on its keys, each branch's writes to its keys, and, in both
//! branches alike, a GET of every key of its that either branch reads. Its vote then
//! says whether *its* compares hold and what its keys held, whichever branch its own
//! compares would choose; the leader gathers the votes ([`Gathered`]): the success
//! branch runs only if every part's compares hold (a conjunction split by key), and the
//! client's GET results come from the states the parts read. The decision names the
//! branch, and each participant applies its part of that branch.
//!
//! Two replicas of a key read it under their locks, in the same committed state, so
//! they must report the same value and version; if they do not, replicas diverged and
//! the transaction must not commit ([`Gathered::add`] refuses it).

use std::collections::BTreeMap;

use crate::kvstore::Versioned;
use crate::txn::{Evaluation, TxnOp, TxnSpec};

/// The part of `txn` that a participant holding exactly the keys `holds` runs.
pub fn part(txn: &TxnSpec, holds: impl Fn(&str) -> bool) -> TxnSpec {
    part_of(txn, &holds, &holds)
}

/// The part of `txn` for a participant that holds the keys `evaluates` with their data
/// and takes the writes of the keys `writes` (a superset: during a view change a new
/// replica takes a key's writes while its copy is still being filled, DESIGN §8). It
/// compares and reads only the keys it evaluates; its vote's compares are then true
/// when it evaluates none.
pub fn part_of(
    txn: &TxnSpec,
    evaluates: impl Fn(&str) -> bool,
    writes: impl Fn(&str) -> bool,
) -> TxnSpec {
    let holds = |key: &str| evaluates(key);
    let mut reads: Vec<&str> = Vec::new();
    for op in txn.success.iter().chain(&txn.failure) {
        if let TxnOp::Get(key) = op {
            if holds(key) && !reads.contains(&key.as_str()) {
                reads.push(key);
            }
        }
    }
    let branch = |ops: &[TxnOp]| -> Vec<TxnOp> {
        let writes = ops
            .iter()
            .filter(|op| !matches!(op, TxnOp::Get(_)) && writes(op.key()))
            .cloned();
        writes
            .chain(reads.iter().map(|key| TxnOp::Get(key.to_string())))
            .collect()
    };
    TxnSpec {
        compares: txn
            .compares
            .iter()
            .filter(|c| holds(&c.key))
            .cloned()
            .collect(),
        success: branch(&txn.success),
        failure: branch(&txn.failure),
    }
}

/// The keys a part reads, in the order of its vote's results (the same in both
/// branches).
fn reads(part: &TxnSpec) -> Vec<&str> {
    part.success
        .iter()
        .filter_map(|op| match op {
            TxnOp::Get(key) => Some(key.as_str()),
            _ => None,
        })
        .collect()
}

/// What the votes on a transaction's parts found, gathered by the leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gathered {
    /// Every part's compares held so far.
    succeeded: bool,
    /// Each key a part read, as read.
    states: BTreeMap<String, Option<Versioned>>,
}

impl Default for Gathered {
    fn default() -> Self {
        Gathered {
            succeeded: true,
            states: BTreeMap::new(),
        }
    }
}

impl Gathered {
    /// Adds the vote on `part`, which found `found`; an error (the transaction must be
    /// aborted) if it does not fit the part or contradicts another replica's reads.
    pub fn add(&mut self, part: &TxnSpec, found: &Evaluation) -> Result<(), String> {
        let reads = reads(part);
        if found.results.len() != reads.len() {
            return Err(format!(
                "a participant answered {} GET results for a part that reads {} keys: aborted",
                found.results.len(),
                reads.len()
            ));
        }
        for (key, state) in reads.into_iter().zip(&found.results) {
            match self.states.get(key) {
                Some(seen) if seen != state => {
                    return Err(format!(
                        "replicas disagree on key {key:?}: one read {seen:?}, another \
                         {state:?} (they should never); aborted, see the followers' stores"
                    ))
                }
                Some(_) => {}
                None => {
                    self.states.insert(key.to_string(), state.clone());
                }
            }
        }
        self.succeeded &= found.succeeded;
        Ok(())
    }

    /// The whole transaction's evaluation: the branch, and its GETs' results.
    pub fn evaluation(&self, txn: &TxnSpec) -> Evaluation {
        let results = txn
            .branch(self.succeeded)
            .iter()
            .filter_map(|op| match op {
                TxnOp::Get(key) => Some(self.states.get(key).cloned().flatten()),
                _ => None,
            })
            .collect();
        Evaluation {
            succeeded: self.succeeded,
            results,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txid::TxId;
    use crate::txn::{Compare, Target};

    fn versioned(value: &str, seq: u64) -> Versioned {
        Versioned {
            value: value.into(),
            version: TxId { epoch: 1, seq },
        }
    }

    /// if a == "1" and b == "2" then put a, put c, get b else get a, get c
    fn txn() -> TxnSpec {
        let compare = |key: &str, value: &str| Compare {
            key: key.into(),
            target: Target::Value(value.into()),
            equal: true,
        };
        TxnSpec {
            compares: vec![compare("a", "1"), compare("b", "2")],
            success: vec![
                TxnOp::Put("a".into(), "x".into()),
                TxnOp::Put("c".into(), "y".into()),
                TxnOp::Get("b".into()),
            ],
            failure: vec![TxnOp::Get("a".into()), TxnOp::Get("c".into())],
        }
    }

    #[test]
    fn a_part_holds_its_keys_compares_and_writes_and_reads_the_same_in_both_branches() {
        let part = part(&txn(), |k| k == "a" || k == "c");
        assert_eq!(part.compares, vec![txn().compares[0].clone()]);
        assert_eq!(
            part.success,
            vec![
                TxnOp::Put("a".into(), "x".into()),
                TxnOp::Put("c".into(), "y".into()),
                TxnOp::Get("a".into()),
                TxnOp::Get("c".into()),
            ]
        );
        assert_eq!(
            part.failure,
            vec![TxnOp::Get("a".into()), TxnOp::Get("c".into())]
        );
        let whole = part_of_all(&txn());
        assert_eq!(whole.compares, txn().compares);
        assert_eq!(reads(&whole), vec!["b", "a", "c"]);
    }

    fn part_of_all(txn: &TxnSpec) -> TxnSpec {
        part(txn, |_| true)
    }

    #[test]
    fn the_success_branch_runs_only_if_every_parts_compares_hold() {
        let whole = txn();
        let on_a = part(&whole, |k| k == "a" || k == "c");
        let on_b = part(&whole, |k| k == "b");
        let mut gathered = Gathered::default();
        let a_found = Evaluation {
            succeeded: true,
            results: vec![Some(versioned("1", 3)), None],
        };
        gathered.add(&on_a, &a_found).unwrap();
        let b_found = Evaluation {
            succeeded: false,
            results: vec![Some(versioned("5", 4))],
        };
        gathered.add(&on_b, &b_found).unwrap();
        assert_eq!(
            gathered.evaluation(&whole),
            Evaluation {
                succeeded: false,
                results: vec![Some(versioned("1", 3)), None],
            },
            "b's compare failed: the failure branch, reading a and c"
        );

        let mut all_hold = Gathered::default();
        all_hold.add(&on_a, &a_found).unwrap();
        let b_holds = Evaluation {
            succeeded: true,
            results: vec![Some(versioned("2", 4))],
        };
        all_hold.add(&on_b, &b_holds).unwrap();
        assert_eq!(
            all_hold.evaluation(&whole),
            Evaluation {
                succeeded: true,
                results: vec![Some(versioned("2", 4))],
            }
        );
    }

    #[test]
    fn replicas_that_read_a_key_differently_or_answer_the_wrong_count_abort() {
        let whole = txn();
        let on_a = part(&whole, |k| k == "a");
        let mut gathered = Gathered::default();
        let found = |seq| Evaluation {
            succeeded: true,
            results: vec![Some(versioned("1", seq))],
        };
        gathered.add(&on_a, &found(3)).unwrap();
        gathered.add(&on_a, &found(3)).unwrap();
        let why = gathered.add(&on_a, &found(4)).unwrap_err();
        assert!(why.contains("disagree"), "{why}");
        let short = Evaluation {
            succeeded: true,
            results: Vec::new(),
        };
        assert!(gathered.add(&on_a, &short).is_err());
    }
}
