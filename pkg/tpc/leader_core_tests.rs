//! The leader's rules (DESIGN §1.4–1.5), one test each.

use super::*;
use crate::tpc::message::{Body, Op};

fn fresh() -> LeaderCore {
    LeaderCore::recover(Vec::new(), || "C".into()).core
}
fn fs(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}
fn id(epoch: u64, seq: u64) -> TxId {
    TxId { epoch, seq }
}

#[test]
fn first_start_creates_a_cluster_and_epoch_one() {
    let recovery = LeaderCore::recover(Vec::new(), || "C".into());
    assert_eq!(
        recovery.persist,
        vec![LeaderRecord::Meta {
            cluster_id: "C".into(),
            epoch: 1,
            has_data: false
        }]
    );
    assert!(recovery.deliveries.is_empty());
}

#[test]
fn every_start_increments_the_epoch_and_keeps_the_cluster() {
    let old = vec![LeaderRecord::Meta {
        cluster_id: "C".into(),
        epoch: 4,
        has_data: true,
    }];
    let mut recovery = LeaderCore::recover(old, || panic!("must keep the cluster id"));
    assert_eq!(
        recovery.persist,
        vec![LeaderRecord::Meta {
            cluster_id: "C".into(),
            epoch: 5,
            has_data: true
        }]
    );
    assert_eq!(recovery.core.begin("k", fs(&["a"])).0.epoch, 5);
}

#[test]
fn transaction_ids_increase_and_begin_names_key_and_followers() {
    let mut core = fresh();
    let (a, rec) = core.begin("k", fs(&["f1", "f2"]));
    assert_eq!(
        rec,
        LeaderRecord::Begin {
            txid: a,
            key: "k".into(),
            followers: fs(&["f1", "f2"])
        }
    );
    let (b, _) = core.begin("k", fs(&["f1"]));
    assert!(b > a);
}

#[test]
fn first_commit_records_that_the_cluster_has_data() {
    let mut core = fresh();
    let (t, _) = core.begin("k", fs(&["f"]));
    let records = core.decide(t, Outcome::Commit, fs(&["f"]));
    assert_eq!(
        records[1],
        LeaderRecord::Meta {
            cluster_id: "C".into(),
            epoch: 1,
            has_data: true
        }
    );
    assert!(
        core.message(t, Body::Decide(Outcome::Commit), "f")
            .cluster
            .unwrap()
            .has_data
    );
}

#[test]
fn done_only_after_every_follower_that_got_the_prepare_acked() {
    let mut core = fresh();
    let (t, _) = core.begin("k", fs(&["f1", "f2", "f3"]));
    core.decide(t, Outcome::Abort, fs(&["f1", "f2"])); // f3 was unreachable
    assert_eq!(core.acked(t, "f1"), None);
    assert_eq!(core.acked(t, "f1"), None, "a duplicate ACK changes nothing");
    assert_eq!(core.acked(t, "f2"), Some(LeaderRecord::Done { txid: t }));
    assert!(core.txns().is_empty());
}

#[test]
fn decision_sent_to_nobody_is_done_at_once() {
    let mut core = fresh();
    let (t, _) = core.begin("k", fs(&["f1"]));
    let records = core.decide(t, Outcome::Abort, Vec::new());
    assert_eq!(records.last(), Some(&LeaderRecord::Done { txid: t }));
    assert!(core.txns().is_empty());
}

/// Found by the simulation (`tcp` seed 10351): a decision for nobody was journaled, the
/// `done` beside it was torn off by a crash; the restart must finish it, not keep it
/// in its table (and status, and every checkpoint) forever.
#[test]
fn restart_finishes_a_decision_that_nobody_awaits() {
    let mut core = fresh();
    let (txid, begin) = core.begin("k", fs(&["f1"]));
    let decided = core.decide(txid, Outcome::Abort, Vec::new());
    assert!(matches!(decided.last(), Some(LeaderRecord::Done { .. })));
    let journal = vec![
        LeaderRecord::Meta {
            cluster_id: "C".into(),
            epoch: 1,
            has_data: false,
        },
        begin,
        decided[0].clone(),
    ];
    let recovery = LeaderCore::recover(journal, || panic!("must keep the cluster id"));
    assert!(
        recovery.core.txns().is_empty(),
        "{:?}",
        recovery.core.txns()
    );
    assert!(recovery.deliveries.is_empty());
    assert!(recovery.persist.contains(&LeaderRecord::Done { txid }));
}

/// A journal of epoch 1: 1.1 (key a, f1 and f2) committed, 1.2 (key b) begun only.
fn committed_then_undecided() -> Vec<LeaderRecord> {
    vec![
        LeaderRecord::Meta {
            cluster_id: "C".into(),
            epoch: 1,
            has_data: false,
        },
        LeaderRecord::Begin {
            txid: id(1, 1),
            key: "a".into(),
            followers: fs(&["f1", "f2"]),
        },
        LeaderRecord::Decide {
            txid: id(1, 1),
            outcome: Outcome::Commit,
            followers: fs(&["f1", "f2"]),
        },
        LeaderRecord::Begin {
            txid: id(1, 2),
            key: "b".into(),
            followers: fs(&["f1", "f2"]),
        },
    ]
}

#[test]
fn restart_aborts_undecided_and_redelivers_decided() {
    let mut records = committed_then_undecided();
    records.extend([
        LeaderRecord::Begin {
            txid: id(1, 3),
            key: "c".into(),
            followers: fs(&["f1"]),
        },
        LeaderRecord::Decide {
            txid: id(1, 3),
            outcome: Outcome::Abort,
            followers: fs(&["f1"]),
        },
        LeaderRecord::Done { txid: id(1, 3) },
    ]);
    let recovery = LeaderCore::recover(records, || unreachable!());
    assert_eq!(
        recovery.persist[1],
        LeaderRecord::Decide {
            txid: id(1, 2),
            outcome: Outcome::Abort,
            followers: fs(&["f1", "f2"])
        },
        "the abort is journaled before it is sent"
    );
    let d = |f: &str, seq, outcome| Delivery {
        follower: f.into(),
        txid: id(1, seq),
        outcome,
    };
    assert_eq!(
        recovery.deliveries,
        vec![
            d("f1", 1, Outcome::Commit),
            d("f2", 1, Outcome::Commit),
            d("f1", 2, Outcome::Abort),
            d("f2", 2, Outcome::Abort)
        ]
    );
}

#[test]
fn end_of_recovery_lists_what_the_restart_still_has_for_each_follower() {
    let mut recovery = LeaderCore::recover(committed_then_undecided(), || unreachable!());
    assert!(recovery.restarted);
    // f2 ACKs 1.1 before the end of recovery is built: nothing of 1.1 is left for it.
    recovery.core.acked(id(1, 1), "f2");
    let end = |f: &str| recovery.core.end_of_recovery(f);
    assert_eq!(end("f1").txid, "2.0", "an id no transaction has");
    assert_eq!(
        end("f1").body,
        Body::EndOfRecovery {
            known: vec![id(1, 1), id(1, 2)]
        }
    );
    assert_eq!(
        end("f2").body,
        Body::EndOfRecovery {
            known: vec![id(1, 2)]
        }
    );
    assert!(!LeaderCore::recover(Vec::new(), || "C".into()).restarted);
}

#[test]
fn low_water_mark_is_per_follower_and_never_passes_an_unacked_decision() {
    let mut core = fresh();
    let (t1, _) = core.begin("a", fs(&["f1", "f2"]));
    assert_eq!(core.low_water("f1"), t1, "undecided: may still be prepared");
    core.decide(t1, Outcome::Commit, fs(&["f1", "f2"]));
    core.acked(t1, "f1");
    let (t2, _) = core.begin("b", fs(&["f1", "f2"]));
    assert_eq!(core.low_water("f1"), t2);
    assert_eq!(core.low_water("f2"), t1, "f2 has not ACKed t1");
    core.decide(t2, Outcome::Commit, fs(&["f1", "f2"]));
    core.acked(t2, "f1");
    assert_eq!(
        core.low_water("f1"),
        id(1, 3),
        "nothing pending: the next id"
    );
    let msg = core.message(
        t2,
        Body::Prepare {
            key: "b".into(),
            op: Op::Delete,
        },
        "f2",
    );
    assert_eq!(msg.low_water, Some(t1));
    assert_eq!(msg.epoch, 1);
}

#[test]
fn checkpoint_keeps_unfinished_transactions_only() {
    let mut core = fresh();
    let (t1, _) = core.begin("a", fs(&["f1"]));
    core.decide(t1, Outcome::Commit, fs(&["f1"]));
    core.acked(t1, "f1");
    let (t2, _) = core.begin("b", fs(&["f1"]));
    core.decide(t2, Outcome::Commit, fs(&["f1"]));
    let (t3, _) = core.begin("c", fs(&["f1"]));
    let live = core.live_records();
    let recovery = LeaderCore::recover(live, || unreachable!());
    let remaining: Vec<TxId> = recovery.core.txns().keys().copied().collect();
    assert_eq!(remaining, vec![t2, t3]);
    assert_eq!(recovery.core.epoch(), 2);
}
