//! One test per follower rule (DESIGN §1.3–1.5): each drives the core with messages and
//! checks the exact effects, in order.

use super::*;
use crate::tpc::message::ClusterInfo;

fn msg(txid: &str, body: Body) -> LeaderMessage {
    let epoch = txid.parse::<TxId>().map(|t| t.epoch).unwrap_or(0);
    LeaderMessage {
        txid: txid.into(),
        body,
        epoch,
        low_water: None,
        cluster: None,
    }
}
fn prepare(txid: &str, key: &str, value: &str) -> LeaderMessage {
    msg(
        txid,
        Body::Prepare {
            key: key.into(),
            op: Op::Put(value.into()),
        },
    )
}
fn decide(txid: &str, outcome: Outcome) -> LeaderMessage {
    msg(txid, Body::Decide(outcome))
}
fn vote(outcome: Outcome) -> Effect {
    Effect::Reply(Reply::Vote(outcome))
}
const ACK: Effect = Effect::Reply(Reply::Ack);
use Outcome::{Abort, Commit};

/// Runs effects the way the runtime does: Finish goes back to the core.
fn run(core: &mut FollowerCore, stream: StreamId, m: LeaderMessage) -> Vec<Effect> {
    let effects = core.handle(stream, m);
    for e in &effects {
        if let Effect::Finish { txid, outcome } = e {
            core.finish(txid, *outcome);
        }
    }
    effects
}

fn meta(max_epoch: u64, low_water: Option<TxId>) -> Effect {
    Effect::Persist(FollowerRecord::Meta {
        cluster_id: None,
        max_epoch,
        low_water,
    })
}

fn persisted_prepare(txid: &str, key: &str, value: &str) -> Effect {
    Effect::Persist(FollowerRecord::Prepare {
        txid: txid.into(),
        key: key.into(),
        op: Op::Put(value.into()),
    })
}

#[test]
fn prepare_journals_the_vote_before_replying_and_locks_the_key() {
    let mut core = FollowerCore::new(false);
    let effects = run(&mut core, 1, prepare("1.1", "k", "v"));
    assert_eq!(
        effects,
        vec![
            meta(1, None),
            persisted_prepare("1.1", "k", "v"),
            vote(Commit)
        ]
    );
    assert!(
        core.check_readable("k").is_err(),
        "lock must be visible to reads"
    );
    assert!(core.check_readable("other").is_ok());
}

#[test]
fn commit_journals_applies_then_releases_then_acks() {
    let mut core = FollowerCore::new(false);
    run(&mut core, 1, prepare("1.1", "k", "v"));
    let effects = core.handle(1, decide("1.1", Commit));
    assert_eq!(
        effects,
        vec![
            Effect::Persist(FollowerRecord::Decide {
                txid: "1.1".into(),
                outcome: Commit
            }),
            Effect::Apply {
                key: "k".into(),
                op: Op::Put("v".into())
            },
            Effect::Finish {
                txid: "1.1".into(),
                outcome: Commit
            },
            ACK,
        ]
    );
    assert!(
        core.check_readable("k").is_err(),
        "lock held until Finish is carried out"
    );
    core.finish("1.1", Commit);
    assert!(core.check_readable("k").is_ok());
}

#[test]
fn abort_releases_without_applying() {
    let mut core = FollowerCore::new(false);
    run(&mut core, 1, prepare("1.1", "k", "v"));
    let effects = run(&mut core, 1, decide("1.1", Abort));
    assert!(!effects.iter().any(|e| matches!(e, Effect::Apply { .. })));
    assert_eq!(effects.last(), Some(&ACK));
    assert!(core.check_readable("k").is_ok());
}

#[test]
fn prepare_of_a_locked_key_gets_abort_and_same_vote_on_retry() {
    let mut core = FollowerCore::new(false);
    run(&mut core, 1, prepare("1.1", "k", "v"));
    assert_eq!(
        run(&mut core, 1, prepare("1.2", "k", "w")),
        vec![vote(Abort)]
    );
    run(&mut core, 1, decide("1.1", Commit));
    // The lock is gone now, but 1.2 was refused: a retransmission gets the same vote.
    assert_eq!(
        run(&mut core, 1, prepare("1.2", "k", "w")),
        vec![vote(Abort)]
    );
}

#[test]
fn repeated_prepare_gets_the_same_commit_vote_without_journaling_again() {
    let mut core = FollowerCore::new(false);
    run(&mut core, 1, prepare("1.1", "k", "v"));
    assert_eq!(
        run(&mut core, 2, prepare("1.1", "k", "v")),
        vec![vote(Commit)]
    );
}

#[test]
fn repeated_decision_gets_ack_and_changes_nothing() {
    let mut core = FollowerCore::new(false);
    run(&mut core, 1, prepare("1.1", "k", "v"));
    run(&mut core, 1, decide("1.1", Commit));
    assert_eq!(run(&mut core, 1, decide("1.1", Commit)), vec![ACK]);
    assert_eq!(
        run(&mut core, 1, decide("1.1", Abort)),
        vec![ACK],
        "a contradicting decision changes nothing"
    );
}

#[test]
fn prepare_of_a_decided_transaction_gets_abort_and_no_lock() {
    let mut core = FollowerCore::new(false);
    run(&mut core, 1, prepare("1.1", "k", "v"));
    run(&mut core, 1, decide("1.1", Commit));
    assert_eq!(
        run(&mut core, 1, prepare("1.1", "k", "v")),
        vec![vote(Abort)]
    );
    assert!(core.check_readable("k").is_ok());
}

#[test]
fn decision_for_an_unknown_transaction_is_journaled_so_a_late_prepare_is_refused() {
    let mut core = FollowerCore::new(false);
    let effects = run(&mut core, 1, decide("1.5", Abort));
    assert_eq!(
        effects,
        vec![
            meta(1, None),
            Effect::Persist(FollowerRecord::Decide {
                txid: "1.5".into(),
                outcome: Abort
            }),
            Effect::Finish {
                txid: "1.5".into(),
                outcome: Abort
            },
            ACK
        ]
    );
    assert_eq!(
        run(&mut core, 1, prepare("1.5", "k", "v")),
        vec![vote(Abort)]
    );
    assert!(core.check_readable("k").is_ok());
}

#[test]
fn prepare_below_the_low_water_mark_gets_abort_and_no_lock() {
    // A PREPARE of a transaction decided long ago, whose records were trimmed.
    let mut core = FollowerCore::new(false);
    let mut m = prepare("1.9", "other", "x");
    m.low_water = Some(TxId { epoch: 1, seq: 9 });
    run(&mut core, 1, m);
    assert_eq!(
        run(&mut core, 1, prepare("1.3", "k", "v")),
        vec![vote(Abort)]
    );
    assert!(core.check_readable("k").is_ok());
    // A decision below the mark needs no marker.
    assert_eq!(run(&mut core, 1, decide("1.3", Abort)), vec![ACK]);
}

#[test]
fn prepare_from_an_older_epoch_gets_abort() {
    let mut core = FollowerCore::new(false);
    run(&mut core, 1, prepare("5.1", "a", "x"));
    assert_eq!(
        run(&mut core, 1, prepare("4.7", "k", "v")),
        vec![vote(Abort)]
    );
    assert!(core.check_readable("k").is_ok());
}

#[test]
fn low_water_mark_prunes_remembered_decisions() {
    let mut core = FollowerCore::new(false);
    run(&mut core, 1, prepare("1.1", "k", "v"));
    run(&mut core, 1, decide("1.1", Commit));
    assert_eq!(core.live_records().len(), 2, "meta + decided marker");
    let mut m = prepare("1.2", "k", "w");
    m.low_water = Some(TxId { epoch: 1, seq: 2 });
    run(&mut core, 1, m);
    let records = core.live_records();
    assert_eq!(records.len(), 2, "meta + the prepared 1.2: {records:?}");
    assert!(matches!(&records[1], FollowerRecord::Prepare { txid, .. } if txid == "1.2"));
}

#[test]
fn invalid_prepare_gets_abort() {
    let mut core = FollowerCore::new(false);
    assert_eq!(
        run(&mut core, 1, prepare("1.1", "", "v")),
        vec![vote(Abort)]
    );
    let huge = "v".repeat(crate::limits::MAX_VALUE_BYTES + 1);
    assert_eq!(
        run(&mut core, 1, prepare("1.2", "k", &huge)),
        vec![vote(Abort)]
    );
}

#[test]
fn failed_journal_write_turns_the_vote_into_abort() {
    let mut core = FollowerCore::new(false);
    run(&mut core, 1, prepare("1.1", "k", "v"));
    assert_eq!(core.prepare_failed("1.1"), Reply::Vote(Abort));
    assert!(core.check_readable("k").is_ok());
    assert_eq!(
        run(&mut core, 1, prepare("1.1", "k", "v")),
        vec![vote(Abort)]
    );
}

#[test]
fn legacy_identical_prepare_gets_same_vote_and_different_one_abort() {
    let mut core = FollowerCore::new(false);
    assert_eq!(
        run(&mut core, 1, prepare("", "k", "v")),
        vec![persisted_prepare("", "k", "v"), vote(Commit)]
    );
    assert_eq!(run(&mut core, 1, prepare("", "k", "v")), vec![vote(Commit)]);
    assert_eq!(run(&mut core, 2, prepare("", "j", "w")), vec![vote(Abort)]);
}

#[test]
fn legacy_decision_after_a_refused_prepare_on_the_same_stream_changes_nothing() {
    let mut core = FollowerCore::new(false);
    run(&mut core, 1, prepare("", "k", "v"));
    assert_eq!(run(&mut core, 2, prepare("", "j", "w")), vec![vote(Abort)]);
    assert_eq!(run(&mut core, 2, decide("", Commit)), vec![ACK]);
    assert!(
        core.check_readable("k").is_err(),
        "stream 1's transaction is untouched"
    );
    // On stream 1 the decision applies to the pending legacy transaction.
    let effects = run(&mut core, 1, decide("", Commit));
    assert!(effects.contains(&Effect::Apply {
        key: "k".into(),
        op: Op::Put("v".into())
    }));
    assert!(core.check_readable("k").is_ok());
}

#[test]
fn legacy_decision_on_another_stream_decides_the_pending_legacy_transaction() {
    let mut core = FollowerCore::new(false);
    run(&mut core, 1, prepare("", "k", "v"));
    let effects = run(&mut core, 7, decide("", Abort));
    assert_eq!(effects.last(), Some(&ACK));
    assert!(core.check_readable("k").is_ok());
    assert_eq!(
        run(&mut core, 7, decide("", Abort)),
        vec![ACK],
        "none pending: just ACK"
    );
}

#[test]
fn legacy_messages_never_touch_transactions_with_ids() {
    let mut core = FollowerCore::new(false);
    run(&mut core, 1, prepare("1.1", "k", "v"));
    assert_eq!(run(&mut core, 2, prepare("", "k", "w")), vec![vote(Abort)]);
    assert_eq!(run(&mut core, 2, decide("", Commit)), vec![ACK]);
    assert!(core.prepared().contains_key("1.1"));
    // And a transaction with an id can't take a key a legacy one holds.
    run(&mut core, 3, prepare("", "j", "w"));
    assert_eq!(
        run(&mut core, 1, prepare("1.2", "j", "x")),
        vec![vote(Abort)]
    );
}

fn with_cluster(mut m: LeaderMessage, id: &str, has_data: bool) -> LeaderMessage {
    m.cluster = Some(ClusterInfo {
        id: id.into(),
        has_data,
    });
    m
}

#[test]
fn cluster_id_is_adopted_durably_then_another_is_refused() {
    let mut core = FollowerCore::new(false);
    let effects = run(
        &mut core,
        1,
        with_cluster(prepare("1.1", "k", "v"), "A", false),
    );
    assert_eq!(
        effects[0],
        Effect::Persist(FollowerRecord::Meta {
            cluster_id: Some("A".into()),
            max_epoch: 1,
            low_water: None
        })
    );
    assert_eq!(core.cluster_id(), Some("A"));
    let effects = run(
        &mut core,
        1,
        with_cluster(prepare("1.2", "j", "v"), "B", false),
    );
    assert!(matches!(&effects[..], [Effect::Refuse(why)] if why.contains("cluster A")));
    assert!(
        core.check_readable("j").is_ok(),
        "a refused leader takes no lock"
    );
    // Classic messages carry no cluster id and are accepted.
    assert_eq!(
        run(&mut core, 1, prepare("", "j", "v")).last(),
        Some(&vote(Commit))
    );
}

#[test]
fn empty_follower_refuses_a_cluster_with_data() {
    let mut core = FollowerCore::new(false);
    let effects = run(
        &mut core,
        1,
        with_cluster(prepare("1.1", "k", "v"), "A", true),
    );
    assert!(matches!(&effects[..], [Effect::Refuse(why)] if why.contains("seed")));
    assert_eq!(core.cluster_id(), None);
    // A follower that has data may join (e.g. one seeded by copying a follower).
    let mut seeded = FollowerCore::new(true);
    assert_eq!(
        run(
            &mut seeded,
            1,
            with_cluster(prepare("1.1", "k", "v"), "A", true)
        )
        .last(),
        Some(&vote(Commit))
    );
}

#[test]
fn replay_restores_prepared_locks_and_applies_decided_ones() {
    let mut live = FollowerCore::new(false);
    let mut journal = Vec::new();
    let mut log = |effects: Vec<Effect>| {
        journal.extend(effects.into_iter().filter_map(|e| match e {
            Effect::Persist(r) => Some(r),
            _ => None,
        }))
    };
    log(run(&mut live, 1, prepare("1.1", "a", "1")));
    log(run(&mut live, 1, prepare("1.2", "b", "2")));
    log(run(&mut live, 1, decide("1.1", Commit)));
    log(run(&mut live, 1, decide("1.9", Abort)));

    // Crash: rebuild from the durable records only.
    let mut restarted = FollowerCore::new(false);
    let mut effects = Vec::new();
    for record in journal {
        effects.extend(restarted.replay(record));
    }
    assert_eq!(
        effects,
        vec![
            Effect::Apply {
                key: "a".into(),
                op: Op::Put("1".into())
            },
            Effect::Finish {
                txid: "1.1".into(),
                outcome: Commit
            },
            Effect::Finish {
                txid: "1.9".into(),
                outcome: Abort
            },
        ]
    );
    for e in &effects {
        if let Effect::Finish { txid, outcome } = e {
            restarted.finish(txid, *outcome);
        }
    }
    assert!(
        restarted.check_readable("b").is_err(),
        "prepared lock comes back"
    );
    assert!(restarted.check_readable("a").is_ok());
    assert_eq!(
        run(&mut restarted, 1, prepare("1.2", "b", "2")),
        vec![vote(Commit)],
        "same vote after restart"
    );
    assert_eq!(
        run(&mut restarted, 1, prepare("1.9", "c", "2")),
        vec![vote(Abort)],
        "decided marker survives"
    );
}

#[test]
fn checkpoint_keeps_what_a_restart_needs() {
    let mut core = FollowerCore::new(false);
    run(
        &mut core,
        1,
        with_cluster(prepare("2.1", "a", "1"), "C", false),
    );
    run(&mut core, 1, decide("2.1", Commit));
    run(&mut core, 1, prepare("2.2", "b", "2"));
    let mut restarted = FollowerCore::new(true);
    for record in core.live_records() {
        for e in restarted.replay(record) {
            if let Effect::Finish { txid, outcome } = e {
                restarted.finish(&txid, outcome);
            }
        }
    }
    assert_eq!(restarted.cluster_id(), Some("C"));
    assert!(restarted.check_readable("b").is_err());
    assert_eq!(
        run(&mut restarted, 1, prepare("2.1", "a", "1")),
        vec![vote(Abort)]
    );
    assert_eq!(
        run(&mut restarted, 1, prepare("1.7", "z", "1")),
        vec![vote(Abort)],
        "epoch survives"
    );
}

#[test]
fn a_rising_epoch_or_mark_is_journaled_with_the_next_record_so_a_restart_keeps_it() {
    let mut core = FollowerCore::new(false);
    run(&mut core, 1, prepare("2.1", "a", "1"));
    let mut m = decide("2.1", Commit);
    m.low_water = Some(TxId { epoch: 2, seq: 1 });
    // The decision is journaled anyway: the new mark rides along, before it.
    let effects = run(&mut core, 1, m);
    assert_eq!(effects[0], meta(2, Some(TxId { epoch: 2, seq: 1 })));
    // Unchanged marks are not journaled again.
    let effects = run(&mut core, 1, prepare("2.2", "b", "1"));
    assert_eq!(effects[0], persisted_prepare("2.2", "b", "1"));
    // A message that journals nothing journals no marks either.
    let mut m = prepare("2.2", "b", "1");
    m.low_water = Some(TxId { epoch: 2, seq: 2 });
    assert_eq!(run(&mut core, 1, m), vec![vote(Commit)]);
}

#[test]
fn an_abort_vote_given_without_journaling_is_journaled_when_its_decision_arrives() {
    let mut core = FollowerCore::new(false);
    run(&mut core, 1, prepare("1.1", "k", "v"));
    assert_eq!(
        run(&mut core, 1, prepare("1.2", "k", "w")),
        vec![vote(Abort)]
    );
    // The decision of 1.2 is journaled as a marker, so a restart still refuses 1.2.
    let effects = run(&mut core, 1, decide("1.2", Abort));
    assert_eq!(
        effects,
        vec![
            Effect::Persist(FollowerRecord::Decide {
                txid: "1.2".into(),
                outcome: Abort
            }),
            Effect::Finish {
                txid: "1.2".into(),
                outcome: Abort
            },
            ACK
        ]
    );
    // Once journaled, a repeat changes nothing.
    assert_eq!(run(&mut core, 1, decide("1.2", Abort)), vec![ACK]);
}

#[test]
fn a_failed_journal_write_undoes_the_cluster_adoption() {
    let mut core = FollowerCore::new(false);
    run(
        &mut core,
        1,
        with_cluster(prepare("1.1", "k", "v"), "A", false),
    );
    // The [meta, prepare] batch could not be written: nothing of it is durable.
    assert_eq!(core.prepare_failed("1.1"), Reply::Vote(Abort));
    assert_eq!(core.cluster_id(), None);
    // The next message adopts (and journals) the cluster id again.
    let effects = run(
        &mut core,
        1,
        with_cluster(prepare("1.2", "k", "v"), "A", false),
    );
    assert!(matches!(
        &effects[0],
        Effect::Persist(FollowerRecord::Meta { cluster_id: Some(id), .. }) if id == "A"
    ));
}

fn end_of_recovery(epoch: u64, known: &[&str]) -> LeaderMessage {
    let known = known.iter().map(|t| t.parse().unwrap()).collect();
    msg(&format!("{epoch}.0"), Body::EndOfRecovery { known })
}

fn aborted(txid: &str) -> [Effect; 2] {
    [
        Effect::Persist(FollowerRecord::Decide {
            txid: txid.into(),
            outcome: Abort,
        }),
        Effect::Finish {
            txid: txid.into(),
            outcome: Abort,
        },
    ]
}

#[test]
fn end_of_recovery_aborts_what_older_epochs_left_prepared_unknown_and_nothing_else() {
    let mut core = FollowerCore::new(false);
    run(&mut core, 1, prepare("1.4", "a", "x"));
    run(&mut core, 1, prepare("2.1", "b", "y"));
    run(&mut core, 1, prepare("2.2", "e", "w"));
    run(&mut core, 1, prepare("3.1", "c", "z"));
    run(&mut core, 1, prepare("", "d", "legacy"));
    // The leader of epoch 3 ends its recovery: it knows 2.2 (its decision is on the
    // way, or was lost in the network); 1.4 and 2.1 were never journaled by it.
    let effects = run(&mut core, 2, end_of_recovery(3, &["2.2"]));
    let mut expected: Vec<Effect> = aborted("1.4").into_iter().chain(aborted("2.1")).collect();
    expected.push(ACK);
    assert_eq!(
        effects[effects.len() - expected.len()..],
        expected[..],
        "{effects:?}"
    );
    assert!(core.check_readable("a").is_ok() && core.check_readable("b").is_ok());
    assert!(
        core.check_readable("e").is_err(),
        "a known transaction stays"
    );
    assert!(
        core.check_readable("c").is_err(),
        "epoch 3's own transaction stays"
    );
    assert!(
        core.check_readable("d").is_err(),
        "a legacy transaction stays"
    );
    // Aborted for good: a late PREPARE of it gets ABORT, a repeated end of recovery
    // changes nothing, and the known one still gets its decision.
    assert_eq!(
        run(&mut core, 2, prepare("2.1", "b", "y")),
        vec![vote(Abort)]
    );
    assert_eq!(run(&mut core, 2, end_of_recovery(3, &["2.2"])), vec![ACK]);
    run(&mut core, 2, decide("2.2", Commit));
    assert!(core.check_readable("e").is_ok());
}
