//! One test per follower rule (DESIGN §1.3–1.5): each drives the core with messages and
//! checks the exact effects, in order.

use super::*;
use crate::tpc::message::ClusterInfo;
use crate::txn::{Compare, Evaluation, Target, TxnOp};

fn msg(txid: &str, body: Body) -> LeaderMessage {
    let epoch = txid.parse::<TxId>().map(|t| t.epoch).unwrap_or(0);
    LeaderMessage {
        txid: txid.into(),
        body,
        epoch,
        low_water: None,
        cluster: None,
        protocol: crate::tpc::message::PROTOCOL,
    }
}
/// The participants every test PREPARE names.
fn participants() -> Vec<String> {
    vec!["f1:1".into(), "f2:1".into()]
}
fn prepare(txid: &str, key: &str, value: &str) -> LeaderMessage {
    let participants = if txid.is_empty() {
        Vec::new()
    } else {
        participants()
    };
    msg(
        txid,
        Body::Prepare {
            txn: TxnSpec::write(key.into(), Some(value.into())),
            participants,
            recipient: None,
        },
    )
}
fn decide(txid: &str, outcome: Outcome) -> LeaderMessage {
    msg(txid, Body::decide(outcome))
}
/// A store that holds nothing (what a write needs; transactions that read get theirs).
fn no_store(_: &str) -> Option<Versioned> {
    None
}
fn vote(outcome: Outcome) -> Effect {
    Effect::Reply(Reply::Vote(outcome))
}
const ACK: Effect = Effect::Reply(Reply::Ack);
use Outcome::{Abort, Commit};

/// Runs effects the way the runtime does: Finish goes back to the core.
fn run(core: &mut FollowerCore, stream: StreamId, m: LeaderMessage) -> Vec<Effect> {
    let effects = core.handle(stream, m, &no_store);
    for e in &effects {
        if let Effect::Finish {
            txid,
            outcome,
            failed,
        } = e
        {
            core.finish(txid, *outcome, *failed);
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
        txn: TxnSpec::write(key.into(), Some(value.into())),
        participants: if txid.is_empty() {
            Vec::new()
        } else {
            participants()
        },
        view_epoch: 0,
        failed: false,
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
    let effects = core.handle(1, decide("1.1", Commit), &no_store);
    assert_eq!(
        effects,
        vec![
            Effect::Persist(FollowerRecord::Decide {
                txid: "1.1".into(),
                outcome: Commit,
                failed: false,
            }),
            Effect::Apply {
                key: "k".into(),
                op: Op::Put("v".into()),
                version: TxId { epoch: 1, seq: 1 },
            },
            Effect::Finish {
                txid: "1.1".into(),
                outcome: Commit,
                failed: false,
            },
            ACK,
        ]
    );
    assert!(
        core.check_readable("k").is_err(),
        "lock held until Finish is carried out"
    );
    core.finish(&"1.1".into(), Commit, false);
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
                outcome: Abort,
                failed: false,
            }),
            Effect::Finish {
                txid: "1.5".into(),
                outcome: Abort,
                failed: false,
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
    assert!(matches!(&records[1], FollowerRecord::Prepare { txid, .. } if *txid == "1.2".into()));
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
    assert_eq!(core.prepare_failed(&"1.1".into()), Reply::Vote(Abort));
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
        op: Op::Put("v".into()),
        version: TxId::default(), // legacy: no order
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
    assert!(core.prepared().contains_key(&"1.1".into()));
    // And a transaction with an id can't take a key a legacy one holds.
    run(&mut core, 3, prepare("", "j", "w"));
    assert_eq!(
        run(&mut core, 1, prepare("1.2", "j", "x")),
        vec![vote(Abort)]
    );
}

/// A decision that ends below the low-water mark is not remembered: no later mark would
/// ever prune it, and a fence report must not name it.
#[test]
fn a_decision_below_the_mark_is_not_remembered() {
    let mut core = FollowerCore::new(false);
    run(&mut core, 1, prepare("1.2", "k", "v"));
    let mut late = decide("1.2", Commit);
    late.low_water = Some(id("1.5"));
    run(&mut core, 1, late);
    let effects = run(&mut core, 2, fence(2));
    let Some(Effect::Reply(Reply::Report(report))) = effects.last() else {
        panic!("{effects:?}")
    };
    assert!(report.committed.is_empty(), "{report:?}");
    assert!(
        !core
            .live_records()
            .iter()
            .any(|r| matches!(r, FollowerRecord::Decide { .. })),
        "no marker kept"
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

/// A follower that committed a classic leader's write is no longer empty: it may then
/// join a cluster that has data (the classic write came from that history).
#[test]
fn a_committed_classic_write_makes_an_empty_follower_one_with_data() {
    let mut core = FollowerCore::new(false);
    run(&mut core, 1, prepare("", "k", "v"));
    run(&mut core, 1, decide("", Commit));
    assert_eq!(
        run(
            &mut core,
            2,
            with_cluster(prepare("1.1", "j", "w"), "A", true)
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
                op: Op::Put("1".into()),
                version: TxId { epoch: 1, seq: 1 },
            },
            Effect::Finish {
                txid: "1.1".into(),
                outcome: Commit,
                failed: false,
            },
            Effect::Finish {
                txid: "1.9".into(),
                outcome: Abort,
                failed: false,
            },
        ]
    );
    for e in &effects {
        if let Effect::Finish {
            txid,
            outcome,
            failed,
        } = e
        {
            restarted.finish(txid, *outcome, *failed);
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
            if let Effect::Finish {
                txid,
                outcome,
                failed,
            } = e
            {
                restarted.finish(&txid, outcome, failed);
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
                outcome: Abort,
                failed: false,
            }),
            Effect::Finish {
                txid: "1.2".into(),
                outcome: Abort,
                failed: false,
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
    assert_eq!(core.prepare_failed(&"1.1".into()), Reply::Vote(Abort));
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

fn fence(epoch: u64) -> LeaderMessage {
    msg(&format!("{epoch}.0"), Body::Fence)
}

fn id(s: &str) -> TxId {
    s.parse().unwrap()
}

#[test]
fn a_fence_is_durable_before_its_report_and_refuses_older_prepares_ever_after() {
    let mut core = FollowerCore::new(false);
    run(&mut core, 1, prepare("2.1", "a", "x"));
    let effects = run(&mut core, 2, fence(3));
    assert!(
        matches!(
            &effects[..],
            [
                Effect::Persist(FollowerRecord::Meta { max_epoch: 3, .. }),
                Effect::Reply(Reply::Report(_))
            ]
        ),
        "{effects:?}"
    );
    // A PREPARE of an older epoch that was on its way gets ABORT, and so it does after
    // a restart from the journal.
    assert_eq!(
        run(&mut core, 1, prepare("2.5", "b", "y")),
        vec![vote(Abort)]
    );
    let mut restarted = FollowerCore::new(true);
    for record in core.live_records() {
        restarted.replay(record);
    }
    assert_eq!(
        run(&mut restarted, 1, prepare("2.6", "c", "z")),
        vec![vote(Abort)]
    );
    // A repeated fence needs no new record.
    assert!(matches!(
        &run(&mut core, 2, fence(3))[..],
        [Effect::Reply(Reply::Report(_))]
    ));
}

#[test]
fn a_fence_reports_the_older_epochs_prepared_decided_and_the_mark() {
    let mut core = FollowerCore::new(false);
    let mut first = prepare("1.4", "a", "x");
    first.low_water = Some(id("1.3"));
    run(&mut core, 1, first);
    run(&mut core, 1, prepare("2.1", "b", "y"));
    run(&mut core, 1, decide("2.1", Commit));
    run(&mut core, 1, prepare("2.2", "c", "z"));
    run(&mut core, 1, prepare("2.3", "c", "w")); // locked: voted ABORT
    run(&mut core, 1, prepare("3.1", "e", "v"));
    run(&mut core, 1, prepare("", "d", "legacy"));
    let effects = run(&mut core, 2, fence(3));
    let Some(Effect::Reply(Reply::Report(report))) = effects.last() else {
        panic!("{effects:?}")
    };
    let prepared: Vec<_> = report.prepared.iter().map(|t| t.txid).collect();
    assert_eq!(
        prepared,
        vec![id("1.4"), id("2.2")],
        "epoch 3's own and legacy are not reported"
    );
    assert_eq!(report.prepared[0].participants, participants());
    assert_eq!(report.prepared[0].key, "a");
    assert_eq!(report.committed, vec![id("2.1")]);
    assert_eq!(report.aborted, vec![id("2.3")]);
    assert_eq!(report.low_water, Some(id("1.3")));
    assert_eq!(report.member_id, None, "this core was given none");
    core.set_member_id("m-1".into());
    let effects = run(&mut core, 2, fence(3));
    let Some(Effect::Reply(Reply::Report(report))) = effects.last() else {
        panic!("{effects:?}")
    };
    assert_eq!(report.member_id.as_deref(), Some("m-1"));
    // Nothing changes: what is prepared stays prepared until the leader decides it.
    assert!(core.check_readable("a").is_err() && core.check_readable("c").is_err());
    run(&mut core, 2, decide("1.4", Commit));
    assert!(core.check_readable("a").is_ok());
}

// ---------------------------------------------------------------- transactions (§6)

/// `if a = 1 then get a, put a 2, delete b else put c failed`.
fn cas_and_move() -> TxnSpec {
    TxnSpec {
        compares: vec![Compare {
            key: "a".into(),
            target: Target::Value("1".into()),
            equal: true,
        }],
        success: vec![
            TxnOp::Get("a".into()),
            TxnOp::Put("a".into(), "2".into()),
            TxnOp::Delete("b".into()),
        ],
        failure: vec![TxnOp::Put("c".into(), "failed".into())],
    }
}
fn prepare_txn(txid: &str, txn: TxnSpec) -> LeaderMessage {
    msg(
        txid,
        Body::Prepare {
            txn,
            participants: participants(),
            recipient: None,
        },
    )
}
fn held(value: &str, version: &str) -> Versioned {
    Versioned {
        value: value.into(),
        version: id(version),
    }
}
/// A store where `a` holds `a_value` (at version 1.1) and `b` holds "x".
fn store(a_value: &'static str) -> impl Fn(&str) -> Option<Versioned> {
    move |key: &str| match key {
        "a" => Some(held(a_value, "1.1")),
        "b" => Some(held("x", "1.2")),
        _ => None,
    }
}
fn applies(effects: &[Effect]) -> Vec<(String, Op)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Apply { key, op, .. } => Some((key.clone(), op.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_transaction_locks_every_key_it_touches_and_votes_with_what_it_found() {
    let mut core = FollowerCore::new(false);
    let effects = core.handle(1, prepare_txn("2.1", cas_and_move()), &store("1"));
    assert!(matches!(
        effects[..],
        [
            Effect::Persist(FollowerRecord::Meta { .. }),
            Effect::Persist(FollowerRecord::Prepare { .. }),
            _
        ]
    ));
    assert_eq!(
        effects.last(),
        Some(&Effect::Reply(Reply::Evaluated(Evaluation {
            succeeded: true,
            results: vec![Some(held("1", "1.1"))],
        }))),
        "the compare held; the GET found a's value before the transaction"
    );
    for key in ["a", "b", "c"] {
        assert!(core.check_readable(key).is_err(), "{key} is locked");
    }
    assert_eq!(
        run(&mut core, 1, prepare("2.2", "c", "x")),
        vec![vote(Abort)],
        "a key of its failure branch is locked too"
    );
    assert_eq!(
        core.handle(1, prepare_txn("2.1", cas_and_move()), &store("1"))
            .last(),
        effects.last(),
        "a repeated PREPARE gets the same vote"
    );
}

#[test]
fn a_transaction_whose_key_is_locked_votes_abort_and_locks_nothing() {
    let mut core = FollowerCore::new(false);
    run(&mut core, 1, prepare("2.1", "b", "y"));
    let effects = core.handle(1, prepare_txn("2.2", cas_and_move()), &store("1"));
    assert_eq!(effects.last(), Some(&vote(Abort)));
    assert!(core.check_readable("a").is_ok() && core.check_readable("c").is_ok());
}

#[test]
fn the_decision_says_which_branch_applies() {
    let rows: [(bool, Vec<(String, Op)>); 2] = [
        (
            false,
            vec![("a".into(), Op::Put("2".into())), ("b".into(), Op::Delete)],
        ),
        (true, vec![("c".into(), Op::Put("failed".into()))]),
    ];
    for (failed, expected) in rows {
        let mut core = FollowerCore::new(false);
        core.handle(1, prepare_txn("2.1", cas_and_move()), &store("1"));
        let decision = msg(
            "2.1",
            Body::Decide {
                outcome: Commit,
                failed,
            },
        );
        let effects = run(&mut core, 1, decision);
        assert_eq!(applies(&effects), expected, "failed: {failed}");
        assert!(effects.contains(&Effect::Persist(FollowerRecord::Decide {
            txid: "2.1".into(),
            outcome: Commit,
            failed,
        })));
        for key in ["a", "b", "c"] {
            assert!(core.check_readable(key).is_ok(), "{key} is unlocked");
        }
    }
}

#[test]
fn a_restarted_follower_replays_the_branch_its_journal_decided() {
    let mut live = FollowerCore::new(false);
    let mut journal: Vec<FollowerRecord> = Vec::new();
    let effects = live.handle(1, prepare_txn("2.1", cas_and_move()), &store("9"));
    journal.extend(effects.into_iter().filter_map(|e| match e {
        Effect::Persist(r) => Some(r),
        _ => None,
    }));
    journal.push(FollowerRecord::Decide {
        txid: "2.1".into(),
        outcome: Commit,
        failed: true,
    });
    let mut restarted = FollowerCore::new(true);
    let effects: Vec<Effect> = journal
        .into_iter()
        .flat_map(|r| restarted.replay(r))
        .collect();
    assert_eq!(
        applies(&effects),
        vec![("c".into(), Op::Put("failed".into()))]
    );
}

#[test]
fn a_fence_report_says_whether_a_prepared_transactions_compares_hold() {
    let mut core = FollowerCore::new(false);
    let effects = core.handle(1, prepare_txn("2.1", cas_and_move()), &store("7"));
    assert!(
        effects.contains(&Effect::Persist(FollowerRecord::Prepare {
            txid: "2.1".into(),
            txn: cas_and_move(),
            participants: participants(),
            view_epoch: 0,
            failed: true,
        })),
        "what the vote found is journaled with it"
    );
    // The store may change under a prepared transaction (its decision's writes applied
    // in part, their batch failed): the report says what the vote found.
    let effects = core.handle(2, fence(3), &store("1"));
    let Some(Effect::Reply(Reply::Report(report))) = effects.last() else {
        panic!("{effects:?}")
    };
    assert_eq!(report.prepared[0].key, "a");
    assert!(report.prepared[0].failed, "a was 7, not 1, when it voted");
}

/// A PREPARE of a put of `key`, meant for member `member` in view `view_epoch`.
fn prepare_for(txid: &str, key: &str, member: &str, view_epoch: u64) -> LeaderMessage {
    let mut m = prepare(txid, key, "v");
    if let Body::Prepare { recipient, .. } = &mut m.body {
        *recipient = Some(Recipient {
            view_epoch,
            member_id: crate::placement::MemberId(member.into()),
        });
    }
    m
}

#[test]
fn a_prepare_meant_for_another_member_is_refused() {
    let mut core = FollowerCore::new(false);
    core.set_member_id("m-1".into());
    let effects = run(&mut core, 1, prepare_for("1.1", "k", "m-2", 1));
    assert_eq!(effects, vec![vote(Abort)], "refused, nothing journaled");
    assert!(core.check_readable("k").is_ok(), "nothing locked");
    let effects = run(&mut core, 1, prepare_for("1.2", "k", "m-1", 1));
    assert_eq!(effects.last(), Some(&vote(Commit)), "meant for this member");
}

#[test]
fn a_prepare_of_an_older_view_than_one_seen_is_refused() {
    let mut core = FollowerCore::new(false);
    core.set_member_id("m-1".into());
    run(&mut core, 1, prepare_for("1.1", "a", "m-1", 3));
    let effects = run(&mut core, 1, prepare_for("1.2", "b", "m-1", 2));
    assert_eq!(effects, vec![vote(Abort)], "view 3 was seen");
    let effects = run(&mut core, 1, prepare_for("1.3", "b", "m-1", 3));
    assert_eq!(effects.last(), Some(&vote(Commit)));
    let effects = run(&mut core, 1, prepare_for("1.1", "a", "m-1", 3));
    assert_eq!(
        effects,
        vec![vote(Commit)],
        "a retransmission gets its vote again"
    );
}

#[test]
fn a_prepare_that_names_no_member_is_not_refused_for_it() {
    let mut core = FollowerCore::new(false);
    core.set_member_id("m-1".into());
    run(&mut core, 1, prepare_for("1.1", "a", "m-1", 3));
    let effects = run(&mut core, 1, prepare("1.2", "b", "v"));
    assert_eq!(
        effects.last(),
        Some(&vote(Commit)),
        "classic tooling names none"
    );
}

#[test]
fn a_forwarded_read_meant_for_another_member_is_refused() {
    let mut core = FollowerCore::new(false);
    assert!(
        core.check_read_for("m-2").is_ok(),
        "no id yet: nothing to compare"
    );
    core.set_member_id("m-1".into());
    assert!(core.check_read_for("m-1").is_ok());
    assert!(core.check_read_for("").is_ok(), "meant for whoever answers");
    let why = core.check_read_for("m-2").unwrap_err();
    assert!(why.contains("m-2") && why.contains("m-1"), "{why}");
}

#[test]
fn a_fence_report_tells_which_committed_transactions_took_their_failure_branch() {
    let mut core = FollowerCore::new(false);
    run(&mut core, 1, prepare_txn("1.1", cas_and_move()));
    run(&mut core, 1, prepare("1.2", "elsewhere", "v"));
    let failed = Body::Decide {
        outcome: Commit,
        failed: true,
    };
    run(&mut core, 1, msg("1.1", failed));
    run(&mut core, 1, decide("1.2", Commit));
    let effects = run(&mut core, 1, fence(2));
    let Some(Effect::Reply(Reply::Report(report))) = effects.last() else {
        panic!("a report: {effects:?}");
    };
    assert_eq!(report.committed, vec![id("1.1"), id("1.2")]);
    assert_eq!(
        report.committed_failed,
        vec![id("1.1")],
        "only a decision tells a part's branch (parts.rs)"
    );
    // A checkpoint keeps it: a core rebuilt from the live records reports it too.
    let mut rebuilt = FollowerCore::new(true);
    for record in core.live_records() {
        for effect in rebuilt.replay(record) {
            if let Effect::Finish {
                txid,
                outcome,
                failed,
            } = effect
            {
                rebuilt.finish(&txid, outcome, failed);
            }
        }
    }
    let effects = run(&mut rebuilt, 1, fence(3));
    let Some(Effect::Reply(Reply::Report(again))) = effects.last() else {
        panic!("a report: {effects:?}");
    };
    assert_eq!(again.committed_failed, vec![id("1.1")]);
}

fn view_message(epoch: u64, replication: usize, members: &[&str]) -> LeaderMessage {
    view_message_of(epoch, replication, members, false)
}
fn next_view_message(epoch: u64, replication: usize, members: &[&str]) -> LeaderMessage {
    view_message_of(epoch, replication, members, true)
}
fn view_message_of(epoch: u64, replication: usize, members: &[&str], next: bool) -> LeaderMessage {
    let view = crate::tpc::membership::ViewRecord {
        epoch,
        replication,
        members: members
            .iter()
            .map(|m| (crate::placement::MemberId(m.to_string()), format!("{m}:1")))
            .collect(),
    };
    let follows = 0;
    msg(
        &TxId::view(epoch).to_string(),
        Body::View {
            view,
            next,
            follows,
        },
    )
}

#[test]
fn a_follower_answers_direct_reads_only_for_the_keys_its_view_places_on_it() {
    let mut core = FollowerCore::new(false);
    core.set_member_id("m0".into());
    let members = ["m0", "m1", "m2", "m3"];
    assert!(
        core.check_direct_read("anything").is_ok(),
        "no view: every key"
    );
    let effects = run(&mut core, 1, view_message(2, 1, &members));
    assert!(matches!(
        &effects[..],
        [Effect::Persist(FollowerRecord::View(v)), Effect::DropUnheld, ACK] if v.epoch == 2
    ));
    let placement = crate::placement::View::new(
        2,
        1,
        &members
            .iter()
            .map(|m| crate::placement::MemberId(m.to_string()))
            .collect::<Vec<_>>(),
    );
    let me = crate::placement::MemberId("m0".into());
    let (mut held, mut refused) = (0, 0);
    for k in 0..40 {
        let key = format!("k{k}");
        match core.check_direct_read(&key) {
            Ok(()) => {
                assert!(placement.holds(&me, &key));
                held += 1;
            }
            Err(why) => {
                assert!(!placement.holds(&me, &key));
                assert!(why.contains("view 2"), "{why}");
                refused += 1;
            }
        }
    }
    assert!(held > 0 && refused > 0);
    assert_eq!(
        run(&mut core, 1, view_message(1, 4, &members)),
        vec![ACK],
        "an older view is ACKed and not taken"
    );
    assert!(core.check_direct_read("k0").is_ok() == placement.holds(&me, "k0"));

    // A restart keeps it.
    let mut rebuilt = FollowerCore::new(true);
    rebuilt.set_member_id("m0".into());
    for record in core.live_records() {
        rebuilt.replay(record);
    }
    for k in 0..40 {
        let key = format!("k{k}");
        assert_eq!(
            rebuilt.check_direct_read(&key).is_ok(),
            placement.holds(&me, &key)
        );
    }
}

fn placement_of(epoch: u64, replication: usize, members: &[&str]) -> crate::placement::View {
    crate::placement::View::new(
        epoch,
        replication,
        &members
            .iter()
            .map(|m| crate::placement::MemberId(m.to_string()))
            .collect::<Vec<_>>(),
    )
}

/// A key that `member` holds in `view` and, if `before` is given, not in `before`.
fn key_gained(
    member: &str,
    view: &crate::placement::View,
    before: Option<&crate::placement::View>,
) -> String {
    let me = crate::placement::MemberId(member.into());
    (0..1000)
        .map(|k| format!("k{k}"))
        .find(|k| view.holds(&me, k) && before.is_none_or(|b| !b.holds(&me, k)))
        .expect("some key")
}

#[test]
fn a_next_view_takes_writes_of_gained_keys_and_reads_stay_with_the_view_in_force() {
    let mut core = FollowerCore::new(false);
    core.set_member_id("m3".into());
    run(&mut core, 1, view_message(1, 1, &["m0", "m1", "m2"]));
    assert!(
        !core.keeps("k1") || !core.keeps("k2"),
        "m3 is no member yet"
    );
    let effects = run(
        &mut core,
        1,
        next_view_message(2, 1, &["m0", "m1", "m2", "m3"]),
    );
    assert!(
        matches!(&effects[..], [Effect::Persist(FollowerRecord::NextView(v)), Effect::DropLeftovers, ACK] if v.epoch == 2),
        "journaled, then what is in neither view dropped: {effects:?}"
    );
    assert_eq!(core.next_view().map(|v| v.epoch), Some(2));
    let next = placement_of(2, 1, &["m0", "m1", "m2", "m3"]);
    let gained = key_gained("m3", &next, None);
    assert!(core.keeps(&gained));
    assert!(
        core.check_direct_read(&gained).is_err(),
        "its copy is not filled yet"
    );
    // A decision on a gained key is applied, and remembered as written.
    let mut p = prepare("2.1", &gained, "new");
    if let Body::Prepare { recipient, .. } = &mut p.body {
        *recipient = Some(Recipient {
            view_epoch: 2,
            member_id: crate::placement::MemberId("m3".into()),
        });
    }
    assert_eq!(run(&mut core, 1, p).last(), Some(&vote(Commit)));
    let effects = run(&mut core, 1, decide("2.1", Commit));
    assert!(effects
        .iter()
        .any(|e| matches!(e, Effect::Apply { key, .. } if *key == gained)));
    // A copy read before that decision does not overwrite it; other keys are taken if
    // newer than what is held.
    let other = (0..1000)
        .map(|k| format!("k{k}"))
        .find(|k| *k != gained && next.holds(&crate::placement::MemberId("m3".into()), k))
        .unwrap();
    let old = TxId { epoch: 1, seq: 5 };
    let entries = vec![
        (gained.clone(), "stale".to_string(), old),
        (other.clone(), "copied".to_string(), old),
    ];
    let held = |key: &str| {
        (key == other).then(|| Versioned {
            value: "older".into(),
            version: TxId { epoch: 1, seq: 4 },
        })
    };
    let taken = core.copied(2, &entries, &held).unwrap();
    assert_eq!(taken, vec![&entries[1]]);
    let newer = |_: &str| {
        Some(Versioned {
            value: "newer".into(),
            version: TxId { epoch: 1, seq: 9 },
        })
    };
    assert!(
        core.copied(2, &entries[1..], &newer).unwrap().is_empty(),
        "never older over newer"
    );
    assert!(
        core.copied(3, &entries, &no_store).is_err(),
        "another change"
    );
    // A restart keeps the next view (the catch-up starts over, nothing written yet).
    let mut rebuilt = FollowerCore::new(true);
    rebuilt.set_member_id("m3".into());
    for record in core.live_records() {
        rebuilt.replay(record);
    }
    assert_eq!(rebuilt.next_view().map(|v| v.epoch), Some(2));
    assert_eq!(rebuilt.copied(2, &entries, &no_store).unwrap().len(), 2);
    // The next view in force ends the change: keys not held are dropped.
    let effects = run(&mut core, 1, view_message(2, 1, &["m0", "m1", "m2", "m3"]));
    assert!(matches!(
        &effects[..],
        [Effect::Persist(FollowerRecord::View(v)), Effect::DropUnheld, ACK] if v.epoch == 2
    ));
    assert_eq!(core.next_view(), None);
    assert!(core.check_direct_read(&gained).is_ok());
    assert!(core.copied(2, &entries, &no_store).is_err());
}

#[test]
fn a_member_copies_the_keys_the_next_view_gives_another_and_keeps_only_its_own() {
    let mut core = FollowerCore::new(true);
    core.set_member_id("m0".into());
    let to = crate::placement::MemberId("m3".into());
    assert!(core.copies_to(&to, 2, "k").is_err(), "no next view yet");
    run(&mut core, 1, view_message(1, 2, &["m0", "m1", "m2"]));
    run(
        &mut core,
        1,
        next_view_message(2, 2, &["m0", "m1", "m2", "m3"]),
    );
    assert!(core.copies_to(&to, 3, "k").is_err(), "another next view");
    let now = placement_of(1, 2, &["m0", "m1", "m2"]);
    let next = placement_of(2, 2, &["m0", "m1", "m2", "m3"]);
    let me = crate::placement::MemberId("m0".into());
    let (mut copied, mut lost) = (0, 0);
    for k in 0..300 {
        let key = format!("k{k}");
        let expected = now.holds(&me, &key) && next.holds(&to, &key);
        assert_eq!(core.copies_to(&to, 2, &key), Ok(expected), "{key}");
        copied += usize::from(expected);
        assert_eq!(
            core.keeps(&key),
            now.holds(&me, &key) || next.holds(&me, &key)
        );
        lost += usize::from(now.holds(&me, &key) && !next.holds(&me, &key));
    }
    assert!(copied > 0 && lost > 0);
    // A key that moves off this follower is no longer read here directly: the next
    // view may be in force before this follower hears of it.
    for k in 0..300 {
        let key = format!("k{k}");
        let readable = now.holds(&me, &key) && next.holds(&me, &key);
        assert_eq!(core.check_direct_read(&key).is_ok(), readable, "{key}");
    }
    // A decision of a key this follower no longer keeps is not applied.
    run(&mut core, 1, view_message(2, 2, &["m0", "m1", "m2", "m3"]));
    let gone = (0..300)
        .map(|k| format!("k{k}"))
        .find(|k| now.holds(&me, k) && !next.holds(&me, k))
        .unwrap();
    assert!(!core.keeps(&gone));
    let mut p = prepare("2.1", &gone, "late");
    p.epoch = 2;
    run(&mut core, 1, p);
    let effects = run(&mut core, 1, decide("2.1", Commit));
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Apply { .. })),
        "{effects:?}"
    );
    // Not a member in force: nothing to copy from here.
    let mut outsider = FollowerCore::new(true);
    outsider.set_member_id("m9".into());
    run(&mut outsider, 1, view_message(1, 2, &["m0", "m1", "m2"]));
    run(
        &mut outsider,
        1,
        next_view_message(2, 2, &["m0", "m1", "m2", "m3"]),
    );
    assert!(outsider.copies_to(&to, 2, "k1").is_err());
}

#[test]
fn a_view_whose_journal_write_failed_is_taken_again_when_resent() {
    let mut core = FollowerCore::new(true);
    core.set_member_id("m0".into());
    run(&mut core, 1, view_message(1, 1, &["m0", "m1"]));
    let effects = core.handle(1, view_message(2, 1, &["m1"]), &no_store);
    assert!(effects.contains(&Effect::DropUnheld));
    core.journal_failed();
    assert_eq!(
        core.view().map(|v| v.epoch),
        Some(1),
        "not durable: not taken"
    );
    let again = run(&mut core, 1, view_message(2, 1, &["m1"]));
    assert!(
        matches!(&again[..], [Effect::Persist(FollowerRecord::View(v)), Effect::DropUnheld, ACK] if v.epoch == 2),
        "{again:?}"
    );
}

#[test]
fn a_next_view_is_refused_by_a_follower_that_missed_the_view_in_force_it_follows() {
    let mut core = FollowerCore::new(true);
    core.set_member_id("m0".into());
    run(&mut core, 1, view_message(1, 1, &["m1", "m2"]));
    let next_of = |epoch: u64, members: &[&str], follows: u64| {
        let mut m = next_view_message(epoch, 1, members);
        if let Body::View { follows: f, .. } = &mut m.body {
            *f = follows;
        }
        m
    };
    // The view in force 2 made m0 a member, but its journal write failed; the next
    // view 3 follows view 2, and m0 holds view 1.
    core.handle(1, view_message(2, 1, &["m0", "m1", "m2"]), &no_store);
    core.journal_failed();
    let effects = core.handle(1, next_of(3, &["m0", "m1"], 2), &no_store);
    assert!(
        matches!(&effects[..], [Effect::Refuse(why)] if why.contains("view 2")),
        "no leftovers judged against view 1: {effects:?}"
    );
    assert_eq!(core.next_view(), None);
    // Resent in order, both are taken.
    run(&mut core, 1, view_message(2, 1, &["m0", "m1", "m2"]));
    let effects = run(&mut core, 1, next_of(3, &["m0", "m1"], 2));
    assert!(
        matches!(&effects[..], [Effect::Persist(FollowerRecord::NextView(v)), Effect::DropLeftovers, ACK] if v.epoch == 3),
        "{effects:?}"
    );
    // A stale next view is ACKed, whatever it follows.
    let effects = run(&mut core, 1, next_of(3, &["m0", "m1"], 1));
    assert_eq!(effects, vec![ACK]);
}

/// Cooperative termination (DESIGN §9, `termination.rs`): what a follower answers a
/// participant asking about a transaction, one row per case.
#[test]
fn a_follower_asked_for_a_decision_answers_what_it_knows_and_refuses_what_it_never_voted() {
    let me = "m-1";
    let mut core = FollowerCore::new(false);
    core.set_member_id(me.into());
    run(&mut core, 1, prepare("1.1", "a", "v"));
    run(&mut core, 1, prepare("1.2", "b", "v"));
    run(&mut core, 1, decide("1.2", Commit));
    let mut failed = decide("1.3", Commit);
    failed.body = Body::Decide {
        outcome: Commit,
        failed: true,
    };
    run(&mut core, 1, prepare("1.3", "c", "v"));
    run(&mut core, 1, failed);
    // Locked by 1.1: an ABORT vote, not journaled.
    run(&mut core, 1, prepare("1.4", "a", "w"));
    let refusal = |txid: &str| {
        vec![
            Effect::Persist(FollowerRecord::Decide {
                txid: txid.into(),
                outcome: Abort,
                failed: false,
            }),
            Effect::Finish {
                txid: txid.into(),
                outcome: Abort,
                failed: false,
            },
            ACK,
        ]
    };
    let rows: Vec<(&str, &str, Known, Vec<Effect>, &str)> = vec![
        ("1.1", me, Known::Voted, vec![], "voted COMMIT, undecided"),
        (
            "1.2",
            me,
            Known::Committed { failed: false },
            vec![],
            "knows the COMMIT",
        ),
        (
            "1.3",
            me,
            Known::Committed { failed: true },
            vec![],
            "and its branch",
        ),
        (
            "1.4",
            me,
            Known::Aborted,
            refusal("1.4"),
            "its ABORT vote, made durable",
        ),
        (
            "1.9",
            "m-2",
            Known::Unknown,
            vec![],
            "asked as another member: says nothing",
        ),
        (
            "1.9",
            "",
            Known::Unknown,
            vec![],
            "asked as no member: refuses nothing",
        ),
        (
            "1.9",
            me,
            Known::Aborted,
            refusal("1.9"),
            "never voted: refuses, durably",
        ),
        ("1.9", me, Known::Aborted, vec![], "refused already"),
    ];
    for (txid, member, known, effects, why) in rows {
        let answer = core.answer_termination(id(txid), member);
        for effect in &answer.1 {
            if let Effect::Finish {
                txid,
                outcome,
                failed,
            } = effect
            {
                core.finish(txid, *outcome, *failed);
            }
        }
        assert_eq!(
            answer,
            (known, effects),
            "{txid} asked as {member:?}: {why}"
        );
    }
    assert_eq!(
        run(&mut core, 1, prepare("1.9", "d", "v")),
        vec![vote(Abort)],
        "a refused transaction's late PREPARE gets ABORT"
    );
    let mut marked = decide("1.2", Commit);
    marked.low_water = Some(id("1.8"));
    run(&mut core, 1, marked);
    assert_eq!(
        core.answer_termination(id("1.5"), me),
        (Known::Unknown, vec![]),
        "below the mark: voted and finished, or never asked; cannot tell"
    );
}

/// Found by the change simulation (amnesia 1006959): a PREPARE that runs in the next
/// view reached this gainer before the next view did. It reached the members in force
/// too, maybe after they had copied the key, so the copy may lack its write: the
/// gainer applies it. One that ran in the view in force leaves the key to the copy.
#[test]
fn a_write_of_the_next_view_prepared_before_the_gainer_took_it_is_applied() {
    let members = ["m0", "m1", "m2"];
    let before = placement_of(1, 1, &members);
    let next = placement_of(2, 1, &["m0", "m1", "m2", "m3"]);
    let gained = key_gained("m3", &next, Some(&before));
    for (view_epoch, applied) in [(2, true), (1, false)] {
        let mut core = FollowerCore::new(false);
        core.set_member_id("m3".into());
        run(&mut core, 1, view_message(1, 1, &members));
        let mut prepare = prepare_for("1.1", &gained, "m3", view_epoch);
        if let Body::Prepare { txn, .. } = &mut prepare.body {
            *txn = TxnSpec::write(gained.clone(), Some("new".into()));
        }
        let effects = run(&mut core, 1, prepare);
        assert_eq!(effects.last(), Some(&vote(Commit)), "view {view_epoch}");
        run(
            &mut core,
            1,
            next_view_message(2, 1, &["m0", "m1", "m2", "m3"]),
        );
        let effects = run(&mut core, 1, decide("1.1", Commit));
        let put = Effect::Apply {
            key: gained.clone(),
            op: Op::Put("new".into()),
            version: id("1.1"),
        };
        assert_eq!(
            effects.contains(&put),
            applied,
            "a PREPARE of view {view_epoch}: {effects:?}"
        );
    }
}

/// Found by the change simulation (amnesia 1005507): a refusal whose journal write
/// fails undoes only itself, not the view the message before it made durable.
#[test]
fn a_failed_refusal_leaves_the_views_taken_before_it() {
    let mut core = FollowerCore::new(true);
    core.set_member_id("m0".into());
    run(&mut core, 1, view_message(1, 1, &["m0", "m1"]));
    run(&mut core, 1, next_view_message(2, 1, &["m0", "m1", "m2"]));
    let (known, effects) = core.answer_termination(id("1.5"), "m0");
    assert_eq!(known, Known::Aborted);
    assert!(!effects.is_empty(), "a refusal to journal");
    core.journal_failed();
    assert_eq!(core.view().map(|v| v.epoch), Some(1));
    assert_eq!(
        core.next_view().map(|v| v.epoch),
        Some(2),
        "the next view stays"
    );
}

/// Whom a follower asks about a late decision: the members the view its PREPARE ran in
/// places at the participants' addresses, while it holds that view; no one it can name
/// otherwise (then asked as no member, a participant refuses nothing).
#[test]
fn the_participants_to_ask_are_the_members_of_the_view_the_prepare_ran_in() {
    let mut core = FollowerCore::new(false);
    core.set_member_id("m0".into());
    run(&mut core, 1, view_message(1, 3, &["m0", "m1", "m2"]));
    let mut in_view = prepare_for("1.1", "a", "m0", 1);
    let mut older = prepare_for("1.2", "b", "m0", 1);
    for m in [&mut in_view, &mut older] {
        if let Body::Prepare { participants, .. } = &mut m.body {
            *participants = vec!["m0:1".into(), "m2:1".into(), "elsewhere:1".into()];
        }
    }
    run(&mut core, 1, in_view);
    let prepared = &core.prepared()[&TxnId::from(id("1.1"))];
    assert_eq!(
        core.participant_ids(prepared),
        vec!["m0".to_string(), "m2".to_string(), String::new()]
    );
    run(&mut core, 1, older);
    run(&mut core, 1, view_message(2, 3, &["m0", "m1", "m2", "m3"]));
    let prepared = &core.prepared()[&TxnId::from(id("1.2"))];
    assert_eq!(
        core.participant_ids(prepared),
        vec![String::new(); 3],
        "view 1 is no longer held"
    );
}

#[test]
fn a_member_of_a_full_view_has_nothing_to_catch_up_on() {
    let mut core = FollowerCore::new(false);
    core.set_member_id("m1".into());
    assert!(!core.holds_every_key_now(), "no view yet");
    run(&mut core, 1, view_message(1, 3, &["m0", "m1", "m2"]));
    assert!(core.holds_every_key_now(), "3 replicas over 3 members");
    run(&mut core, 1, next_view_message(2, 3, &["m1", "m2"]));
    assert!(core.holds_every_key_now(), "m0 leaves: m1 gains nothing");

    let mut partial = FollowerCore::new(false);
    partial.set_member_id("m1".into());
    run(&mut partial, 1, view_message(1, 2, &["m0", "m1", "m2"]));
    assert!(!partial.holds_every_key_now(), "2 replicas over 3 members");

    let mut joining = FollowerCore::new(false);
    joining.set_member_id("m3".into());
    run(&mut joining, 1, view_message(1, 3, &["m0", "m1", "m2"]));
    assert!(
        !joining.holds_every_key_now(),
        "not a member of the view in force"
    );
}
