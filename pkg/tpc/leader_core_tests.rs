//! The leader's rules (DESIGN §1.4–1.5, the essay in `mod.rs`), one test each: each
//! drives the core with events and checks the exact effects.

use super::*;
use crate::placement::MemberId;
use crate::tpc::membership::{Recipient, ViewRecord, Views};
use crate::tpc::message::{Answer, ReportedTxn, TxnId};
use crate::txn::TxnOp;

const TIMEOUT: Duration = Duration::from_millis(100);
use Outcome::{Abort, Commit};

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("f{i}")).collect()
}
fn id(epoch: u64, seq: u64) -> TxId {
    TxId { epoch, seq }
}
/// A leader at its first start, its followers' answers to the first fence (which tells
/// it they speak protocol 2 and their member ids) handled, and the view they form
/// durable (journal job 1: the next journal job is 2) and handed to them.
fn fresh(n: usize) -> LeaderCore {
    let mut core = LeaderCore::recover(Vec::new(), names(n), n, TIMEOUT, || "C".into())
        .unwrap()
        .core;
    core.take_effects(Duration::ZERO);
    for f in 0..n {
        answer(
            &mut core,
            f,
            TxId::fence(1),
            Answer::Report(Some(InquiryReport::default())),
        );
    }
    core.journaled(1, Ok(()), Duration::ZERO);
    assert_eq!(core.membership().current(), Some(&view_of(n)));
    let effects = core.take_effects(Duration::ZERO);
    for f in 0..n {
        assert_eq!(views_sent(&effects, f), vec![1], "once in force");
        answer(&mut core, f, TxId::view(1), Answer::Ack);
    }
    core
}
/// The view `n` followers that tell no member id form (each known by its address), with
/// every follower holding every key.
fn view_of(n: usize) -> ViewRecord {
    ViewRecord {
        epoch: 1,
        replication: n,
        members: names(n)
            .into_iter()
            .map(|name| (MemberId(format!("address:{name}")), name))
            .collect(),
    }
}
/// [`view_of`] `n`, in force, no change under way.
fn views_of(n: usize) -> Views {
    Views {
        current: view_of(n),
        next: None,
        down: Vec::new(),
    }
}
fn put(key: &str, value: &str) -> TxnSpec {
    TxnSpec::write(key.into(), Some(value.into()))
}
fn del(key: &str) -> TxnSpec {
    TxnSpec::write(key.into(), None)
}

/// The messages sent to follower `f`, flattened, in order, but for the views handed to
/// it (`views_sent` has those).
fn sent(effects: &[Effect], f: usize) -> Vec<LeaderMessage> {
    all_sent(effects, f)
        .into_iter()
        .filter(|m| !matches!(m.body, Body::View { .. }))
        .collect()
}
fn all_sent(effects: &[Effect], f: usize) -> Vec<LeaderMessage> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Link {
                follower,
                effect: LinkEffect::Send { messages, .. },
            } if *follower == f => Some(messages.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}
/// The epochs of the views handed to follower `f`.
fn views_sent(effects: &[Effect], f: usize) -> Vec<u64> {
    all_sent(effects, f)
        .into_iter()
        .filter_map(|m| match m.body {
            Body::View { view, .. } => {
                assert_eq!(m.txid, TxId::view(view.epoch).into());
                Some(view.epoch)
            }
            _ => None,
        })
        .collect()
}
fn bodies(effects: &[Effect], f: usize) -> Vec<(TxnId, Body)> {
    sent(effects, f)
        .into_iter()
        .map(|m| (m.txid, m.body))
        .collect()
}
/// The answers, each with the version it gave (that of a write).
fn answers(effects: &[Effect]) -> Vec<(WriteId, Result<TxId, Refusal>)> {
    committed(effects)
        .into_iter()
        .map(|(write, result)| (write, result.map(|c| c.version.expect("a write's version"))))
        .collect()
}
fn committed(effects: &[Effect]) -> Vec<(WriteId, Result<Committed, Refusal>)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Answer { write, result } => Some((*write, result.clone())),
            _ => None,
        })
        .collect()
}
fn journal(effects: &[Effect]) -> Vec<(Option<JobId>, Vec<LeaderRecord>)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Journal { job, records } => Some((*job, records.clone())),
            _ => None,
        })
        .collect()
}
fn reply(txid: TxId, answer: Answer) -> Result<FollowerReply, String> {
    Ok(FollowerReply {
        txid: txid.into(),
        answer,
        cluster_id: Some("C".into()),
        protocol: PROTOCOL,
    })
}
/// Follower `f` answers on its first stream.
fn answer(core: &mut LeaderCore, f: usize, txid: TxId, answer: Answer) -> Vec<Effect> {
    core.replies(f, 1, vec![reply(txid, answer)], Duration::ZERO);
    core.take_effects(Duration::ZERO)
}
fn all_vote(core: &mut LeaderCore, n: usize, txid: TxId, outcome: Outcome) -> Vec<Effect> {
    (0..n)
        .flat_map(|f| answer(core, f, txid, Answer::Vote(outcome)))
        .collect()
}
fn decision(txid: TxId, outcome: Outcome) -> (TxnId, Body) {
    (txid.into(), Body::decide(outcome))
}

#[test]
fn a_first_start_creates_a_cluster_in_epoch_one_and_asks_every_follower_its_protocol() {
    let start = LeaderCore::recover(Vec::new(), names(2), 2, TIMEOUT, || "C".into()).unwrap();
    assert_eq!(
        start.persist,
        vec![LeaderRecord::Meta {
            cluster_id: "C".into(),
            epoch: 1,
            has_data: false,
            views: None,
        }]
    );
    let mut core = start.core;
    let effects = core.take_effects(Duration::ZERO);
    for f in 0..2 {
        assert_eq!(
            bodies(&effects, f),
            vec![(TxId::fence(1).into(), Body::Fence)],
            "the fence's answer says whether the follower speaks protocol 2"
        );
    }
    assert!(core.recovery().is_complete(), "nothing to recover");
}

#[test]
fn a_write_prepares_on_every_follower_with_the_participants_in_one_send_per_link() {
    let mut core = fresh(2);
    core.submit(1, put("a", "1"), Duration::ZERO);
    core.submit(2, put("b", "2"), Duration::ZERO);
    let effects = core.take_effects(Duration::ZERO);
    for f in 0..2 {
        let messages = sent(&effects, f);
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].txid, id(1, 1).into());
        assert_eq!(
            messages[0].body,
            Body::Prepare {
                txn: put("a", "1"),
                participants: names(2),
                recipient: Some(Recipient {
                    view_epoch: 1,
                    member_id: MemberId(format!("address:{}", names(2)[f])),
                }),
            }
        );
        assert_eq!(messages[0].epoch, 1);
        assert_eq!(messages[0].protocol, PROTOCOL);
        assert_eq!(messages[0].low_water, Some(id(1, 1)));
        let sends = effects
            .iter()
            .filter(|e| matches!(e, Effect::Link { follower, effect: LinkEffect::Send { .. } } if *follower == f))
            .count();
        assert_eq!(sends, 1, "both PREPAREs leave in one send");
    }
    assert!(
        journal(&effects).is_empty(),
        "nothing journaled to start a write"
    );
}

#[test]
fn the_last_commit_vote_commits_answers_and_journals_nothing() {
    let mut core = fresh(3);
    core.submit(7, put("k", "v"), Duration::ZERO);
    core.take_effects(Duration::ZERO);
    let t = id(1, 1);
    let mut effects = answer(&mut core, 0, t, Answer::Vote(Commit));
    effects.extend(answer(&mut core, 1, t, Answer::Vote(Commit)));
    assert!(answers(&effects).is_empty(), "not before the last vote");
    let effects = answer(&mut core, 2, t, Answer::Vote(Commit));
    assert_eq!(
        answers(&effects),
        vec![(7, Ok(t))],
        "answered with its version"
    );
    assert!(
        journal(&effects).iter().all(|(_, records)| records
            .iter()
            .all(|r| matches!(r, LeaderRecord::Meta { has_data: true, .. }))),
        "no record of the commit (only the cluster's first data, once): {effects:?}"
    );
    for f in 0..3 {
        assert_eq!(bodies(&effects, f), vec![decision(t, Commit)]);
    }
    assert_eq!(core.committed_value("k"), Some((Some("v"), t)));
}

#[test]
fn a_committed_write_is_read_from_the_leader_until_every_follower_acked_it() {
    let mut core = fresh(2);
    core.submit(1, del("k"), Duration::ZERO);
    core.take_effects(Duration::ZERO);
    all_vote(&mut core, 2, id(1, 1), Commit);
    assert_eq!(core.committed_value("k"), Some((None, id(1, 1))), "deleted");
    answer(&mut core, 0, id(1, 1), Answer::Ack);
    assert_eq!(core.committed_value("k"), Some((None, id(1, 1))));
    let effects = answer(&mut core, 1, id(1, 1), Answer::Ack);
    assert_eq!(core.committed_value("k"), None);
    assert!(core.txns().is_empty(), "finished");
    assert!(
        journal(&effects).is_empty(),
        "an unjournaled commit needs no `done`"
    );
}

#[test]
fn an_abort_vote_decides_at_once_and_the_abort_is_durable_before_it_is_sent_or_answered() {
    let mut core = fresh(3);
    core.submit(1, put("k", "v"), Duration::ZERO);
    core.take_effects(Duration::ZERO);
    let t = id(1, 1);
    answer(&mut core, 0, t, Answer::Vote(Commit));
    let effects = answer(&mut core, 1, t, Answer::Vote(Abort));
    let written = journal(&effects);
    assert_eq!(
        written,
        vec![(
            Some(2),
            vec![LeaderRecord::Decide {
                txid: t,
                outcome: Abort,
                failed: false,
                followers: names(3)
            }]
        )],
        "every follower may hold the PREPARE"
    );
    assert!(answers(&effects).is_empty() && sent(&effects, 0).is_empty());
    core.journaled(2, Ok(()), Duration::ZERO);
    let effects = core.take_effects(Duration::ZERO);
    assert!(
        matches!(&answers(&effects)[..], [(1, Err(Refusal::Aborted(why)))] if why.contains("f1"))
    );
    for f in 0..3 {
        assert_eq!(bodies(&effects, f), vec![decision(t, Abort)]);
    }
    // The third vote, late, changes nothing.
    assert!(answers(&answer(&mut core, 2, t, Answer::Vote(Commit))).is_empty());
    for f in 0..3 {
        answer(&mut core, f, t, Answer::Ack);
    }
    let effects = core.take_effects(Duration::ZERO);
    let _ = effects;
    assert!(core.txns().is_empty());
}

#[test]
fn a_finished_journaled_decision_leaves_a_done_record_that_nobody_waits_for() {
    let mut core = fresh(1);
    core.submit(1, put("k", "v"), Duration::ZERO);
    core.take_effects(Duration::ZERO);
    answer(&mut core, 0, id(1, 1), Answer::Vote(Abort));
    core.journaled(2, Ok(()), Duration::ZERO);
    core.take_effects(Duration::ZERO);
    let effects = answer(&mut core, 0, id(1, 1), Answer::Ack);
    assert_eq!(
        journal(&effects),
        vec![(None, vec![LeaderRecord::Done { txid: id(1, 1) }])]
    );
}

#[test]
fn a_classic_voter_gets_the_classic_flow_a_journaled_commit() {
    let mut core = fresh(2);
    core.submit(1, put("k", "v"), Duration::ZERO);
    core.take_effects(Duration::ZERO);
    let t = id(1, 1);
    answer(&mut core, 0, t, Answer::Vote(Commit));
    let classic = Ok(FollowerReply {
        txid: TxnId::Legacy,
        answer: Answer::Vote(Commit),
        cluster_id: None,
        protocol: 0,
    });
    core.replies(1, 1, vec![classic], Duration::ZERO);
    let effects = core.take_effects(Duration::ZERO);
    assert!(
        answers(&effects).is_empty(),
        "not before the COMMIT is durable"
    );
    let records = &journal(&effects)[0].1;
    assert!(matches!(
        &records[0],
        LeaderRecord::Decide {
            outcome: Commit,
            ..
        }
    ));
    assert!(
        matches!(&records[1..], [LeaderRecord::Meta { has_data: true, .. }]),
        "the cluster's first data is journaled with the decision: {records:?}"
    );
    core.journaled(2, Ok(()), Duration::ZERO);
    let effects = core.take_effects(Duration::ZERO);
    assert_eq!(answers(&effects), vec![(1, Ok(t))]);
    assert_eq!(bodies(&effects, 1), vec![decision(t, Commit)]);
}

#[test]
fn a_follower_the_prepare_never_reached_is_not_owed_the_abort() {
    let mut core = fresh(2);
    // f1's stream ends: the PREPARE opens the next one, which fails to connect.
    core.stream_ended(1, 1, "cut".into(), Duration::ZERO);
    core.submit(1, put("k", "v"), Duration::ZERO);
    let opened = core
        .take_effects(Duration::ZERO)
        .into_iter()
        .find_map(|e| match e {
            Effect::Link {
                follower: 1,
                effect: LinkEffect::Open { stream },
            } => Some(stream),
            _ => None,
        });
    let t = id(1, 1);
    answer(&mut core, 0, t, Answer::Vote(Commit));
    let at = Duration::ZERO;
    core.open_failed(1, opened.expect("f1 reconnects"), "refused".into(), at);
    let effects = core.take_effects(at);
    assert_eq!(
        journal(&effects)[0].1,
        vec![LeaderRecord::Decide {
            txid: t,
            outcome: Abort,
            failed: false,
            followers: vec!["f0".into()]
        }]
    );
    core.journaled(2, Ok(()), at);
    let effects = core.take_effects(at);
    assert!(
        matches!(&answers(&effects)[..], [(1, Err(Refusal::Unavailable(why)))] if why.contains("f1: refused"))
    );
    assert_eq!(bodies(&effects, 0), vec![decision(t, Abort)]);
    assert!(bodies(&effects, 1).is_empty());
}

#[test]
fn a_missing_vote_aborts_and_its_follower_is_owed_the_abort() {
    let mut core = fresh(2);
    core.submit(1, put("k", "v"), Duration::ZERO);
    core.take_effects(Duration::ZERO);
    let t = id(1, 1);
    answer(&mut core, 0, t, Answer::Vote(Commit));
    core.tick(TIMEOUT);
    let effects = core.take_effects(TIMEOUT);
    assert!(effects.iter().any(|e| matches!(
        e,
        Effect::Link {
            follower: 1,
            effect: LinkEffect::Close { stream: 1 }
        }
    )));
    assert_eq!(
        journal(&effects)[0].1,
        vec![LeaderRecord::Decide {
            txid: t,
            outcome: Abort,
            failed: false,
            followers: names(2)
        }]
    );
}

#[test]
fn writes_to_one_key_queue_and_the_next_starts_once_the_decision_is_queued() {
    let mut core = fresh(1);
    core.submit(1, put("k", "1"), Duration::ZERO);
    core.submit(2, put("k", "2"), Duration::ZERO);
    core.submit(3, put("other", "3"), Duration::ZERO);
    let effects = core.take_effects(Duration::ZERO);
    let ids: Vec<TxnId> = sent(&effects, 0).into_iter().map(|m| m.txid).collect();
    assert_eq!(
        ids,
        vec![id(1, 1).into(), id(1, 2).into()],
        "k's second waits; other runs"
    );
    let effects = answer(&mut core, 0, id(1, 1), Answer::Vote(Commit));
    let messages = bodies(&effects, 0);
    assert_eq!(
        messages[0],
        decision(id(1, 1), Commit),
        "the decision first"
    );
    assert!(
        matches!(&messages[1], (txid, Body::Prepare { txn, .. }) if *txid == id(1, 3).into() && *txn == put("k", "2"))
    );
}

#[test]
fn a_journal_write_that_fails_cleanly_is_retried_and_a_broken_one_stops_the_leader() {
    let mut core = fresh(1);
    core.submit(1, put("k", "v"), Duration::ZERO);
    core.take_effects(Duration::ZERO);
    answer(&mut core, 0, id(1, 1), Answer::Vote(Abort));
    let clean = JournalFailure {
        message: "disk full".into(),
        broken: false,
    };
    core.journaled(2, Err(clean), Duration::ZERO);
    let effects = core.take_effects(Duration::ZERO);
    assert!(answers(&effects).is_empty() && sent(&effects, 0).is_empty());
    let at = core.next_deadline().expect("a retry");
    core.tick(at);
    let effects = core.take_effects(at);
    let retried = journal(&effects);
    assert!(
        matches!(&retried[..], [(Some(3), records)] if matches!(records[0], LeaderRecord::Decide { outcome: Abort, .. }))
    );
    let broken = JournalFailure {
        message: "fsync failed".into(),
        broken: true,
    };
    core.journaled(3, Err(broken), at);
    let effects = core.take_effects(at);
    assert!(effects
        .iter()
        .any(|e| matches!(e, Effect::Fatal(why) if why == "fsync failed")));
    assert!(
        answers(&effects).is_empty(),
        "never answered: the restart decides"
    );
}

#[test]
fn low_water_marks_follow_what_each_follower_may_still_hear_about() {
    let mut core = fresh(2);
    core.submit(1, put("a", "1"), Duration::ZERO);
    core.submit(2, put("b", "2"), Duration::ZERO);
    core.take_effects(Duration::ZERO);
    all_vote(&mut core, 2, id(1, 1), Commit);
    all_vote(&mut core, 2, id(1, 2), Commit);
    answer(&mut core, 0, id(1, 1), Answer::Ack);
    assert_eq!(core.low_water(0), Some(id(1, 2)), "f0 still owes 1.2's ACK");
    assert_eq!(core.low_water(1), Some(id(1, 1)), "f1 owes both");
    answer(&mut core, 0, id(1, 2), Answer::Ack);
    assert_eq!(core.low_water(0), Some(id(1, 3)), "nothing: the next id");
}

#[test]
fn a_checkpoint_keeps_the_meta_and_every_unfinished_journaled_decision() {
    let mut core = fresh(1);
    core.submit(1, put("a", "1"), Duration::ZERO);
    core.submit(2, put("b", "2"), Duration::ZERO);
    core.take_effects(Duration::ZERO);
    answer(&mut core, 0, id(1, 1), Answer::Vote(Commit));
    answer(&mut core, 0, id(1, 2), Answer::Vote(Abort));
    assert_eq!(
        core.live_records(),
        vec![
            LeaderRecord::Meta {
                cluster_id: "C".into(),
                epoch: 1,
                has_data: true,
                views: Some(views_of(1)),
            },
            LeaderRecord::Decide {
                txid: id(1, 2),
                outcome: Abort,
                failed: false,
                followers: names(1)
            }
        ],
        "the ABORT being journaled is kept; the unjournaled COMMIT is not a record"
    );
}

/// `record`, if a meta record without a view, with the view of `n` followers.
fn with_view(mut record: LeaderRecord, n: usize) -> LeaderRecord {
    if let LeaderRecord::Meta { views, .. } = &mut record {
        views.get_or_insert_with(|| views_of(n));
    }
    record
}
/// A leader of `n` followers restarted on `records`, their views [`view_of`] `n`.
fn restarted(records: Vec<LeaderRecord>, n: usize) -> Start {
    let records = records.into_iter().map(|r| with_view(r, n)).collect();
    LeaderCore::recover(records, names(n), n, TIMEOUT, || {
        panic!("keeps the cluster id")
    })
    .unwrap()
}
fn meta(epoch: u64) -> LeaderRecord {
    LeaderRecord::Meta {
        cluster_id: "C".into(),
        epoch,
        has_data: true,
        views: None,
    }
}

#[test]
fn a_restart_bumps_the_epoch_delivers_its_journaled_decisions_then_fences() {
    let records = vec![
        meta(4),
        LeaderRecord::Decide {
            txid: id(4, 2),
            outcome: Abort,
            failed: false,
            followers: names(2),
        },
        LeaderRecord::Decide {
            txid: id(4, 3),
            outcome: Abort,
            failed: false,
            followers: names(1),
        },
        LeaderRecord::Done { txid: id(4, 3) },
        LeaderRecord::Begin { txid: id(3, 9) },
    ];
    let start = restarted(records, 2);
    assert_eq!(
        start.persist,
        vec![with_view(meta(5), 2)],
        "the view is kept"
    );
    let mut core = start.core;
    assert_eq!(core.epoch(), 5);
    let effects = core.take_effects(Duration::ZERO);
    for f in 0..2 {
        let messages = sent(&effects, f);
        assert_eq!(
            messages
                .iter()
                .map(|m| (m.txid.clone(), m.body.clone()))
                .collect::<Vec<_>>(),
            vec![decision(id(4, 2), Abort), (id(5, 0).into(), Body::Fence)]
        );
        assert!(
            messages.iter().all(|m| m.low_water.is_none()),
            "no marks until recovered"
        );
    }
}

#[test]
fn a_restart_delivers_a_journaled_commit_with_its_branch() {
    let records = vec![
        meta(4),
        LeaderRecord::Decide {
            txid: id(4, 2),
            outcome: Commit,
            failed: true,
            followers: names(1),
        },
    ];
    let mut core = restarted(records, 2).core;
    let effects = core.take_effects(Duration::ZERO);
    assert_eq!(
        bodies(&effects, 0)[0],
        (
            id(4, 2).into(),
            Body::Decide {
                outcome: Commit,
                failed: true
            }
        )
    );
    assert!(core.live_records().contains(&LeaderRecord::Decide {
        txid: id(4, 2),
        outcome: Commit,
        failed: true,
        followers: names(1),
    }));
}

fn report(prepared: &[(TxId, &[&str])]) -> Answer {
    Answer::Report(Some(InquiryReport {
        prepared: prepared
            .iter()
            .map(|(txid, participants)| ReportedTxn {
                txid: *txid,
                key: "k".into(),
                participants: participants.iter().map(|p| p.to_string()).collect(),
                failed: false,
            })
            .collect(),
        ..InquiryReport::default()
    }))
}

#[test]
fn an_in_doubt_transaction_every_participant_voted_for_commits_without_a_record() {
    let mut core = restarted(vec![meta(1)], 2).core;
    core.take_effects(Duration::ZERO);
    let t = id(1, 7);
    let fence = TxId::fence(2);
    answer(&mut core, 0, fence, report(&[(t, &["f0", "f1"])]));
    assert!(core.low_water(0).is_none());
    let effects = answer(&mut core, 1, fence, report(&[(t, &["f0", "f1"])]));
    assert!(journal(&effects)
        .iter()
        .all(|(_, r)| !r.iter().any(|r| matches!(r, LeaderRecord::Decide { .. }))));
    for f in 0..2 {
        assert_eq!(bodies(&effects, f), vec![decision(t, Commit)]);
    }
    assert!(core.recovery().is_complete());
    assert_eq!(
        core.low_water(0),
        Some(t),
        "marks again once nothing is in doubt"
    );
}

#[test]
fn an_in_doubt_transaction_a_participant_never_voted_for_is_aborted_durably() {
    let mut core = restarted(vec![meta(1)], 2).core;
    core.take_effects(Duration::ZERO);
    let t = id(1, 7);
    let fence = TxId::fence(2);
    answer(&mut core, 0, fence, report(&[(t, &["f0", "f1"])]));
    let effects = answer(&mut core, 1, fence, report(&[]));
    assert_eq!(
        journal(&effects),
        vec![(
            Some(1),
            vec![LeaderRecord::Decide {
                txid: t,
                outcome: Abort,
                failed: false,
                followers: vec!["f0".into()]
            }]
        )]
    );
    assert!(sent(&effects, 0).is_empty(), "not before it is durable");
    core.journaled(1, Ok(()), Duration::ZERO);
    let effects = core.take_effects(Duration::ZERO);
    assert_eq!(bodies(&effects, 0), vec![decision(t, Abort)]);
}

#[test]
fn a_follower_reporting_a_transaction_the_leader_journaled_gets_that_decision() {
    let records = vec![
        meta(1),
        LeaderRecord::Decide {
            txid: id(1, 3),
            outcome: Abort,
            failed: false,
            followers: vec!["f0".into()],
        },
    ];
    let mut core = restarted(records, 2).core;
    core.take_effects(Duration::ZERO);
    let effects = answer(
        &mut core,
        1,
        TxId::fence(2),
        report(&[(id(1, 3), &["f0", "f1"])]),
    );
    assert_eq!(bodies(&effects, 1), vec![decision(id(1, 3), Abort)]);
}

/// Bug D of the earlier journal rules: a decision owed to nobody whose `done` a crash
/// lost must not stay unfinished forever; one owed to a follower no longer configured
/// is kept (that follower may still hold it prepared).
#[test]
fn a_journaled_decision_owed_to_nobody_is_finished_at_a_restart() {
    let records = vec![
        meta(1),
        LeaderRecord::Decide {
            txid: id(1, 4),
            outcome: Abort,
            failed: false,
            followers: Vec::new(),
        },
        LeaderRecord::Decide {
            txid: id(1, 5),
            outcome: Abort,
            failed: false,
            followers: vec!["gone:1".into()],
        },
    ];
    let start = restarted(records, 2);
    assert_eq!(
        &start.persist[1..],
        &[LeaderRecord::Done { txid: id(1, 4) }]
    );
    let core = start.core;
    assert_eq!(core.txns().keys().collect::<Vec<_>>(), vec![&id(1, 5)]);
    assert!(core.live_records().contains(&LeaderRecord::Decide {
        txid: id(1, 5),
        outcome: Abort,
        failed: false,
        followers: vec!["gone:1".into()]
    }));
}

// ---------------------------------------------------------------- transactions (§6)

/// `if a = 1 then get a, put a 2, delete b else get b`.
fn cas() -> TxnSpec {
    TxnSpec {
        compares: vec![crate::txn::Compare {
            key: "a".into(),
            target: crate::txn::Target::Value("1".into()),
            equal: true,
        }],
        success: vec![
            TxnOp::Get("a".into()),
            TxnOp::Put("a".into(), "2".into()),
            TxnOp::Delete("b".into()),
        ],
        failure: vec![TxnOp::Get("b".into())],
    }
}
fn found(value: &str) -> Option<Versioned> {
    Some(Versioned {
        value: value.into(),
        version: id(1, 1),
    })
}
fn evaluated(succeeded: bool, results: Vec<Option<Versioned>>) -> Answer {
    Answer::Evaluated(Evaluation { succeeded, results })
}
fn started(effects: &[Effect]) -> Vec<TxnId> {
    sent(effects, 0)
        .into_iter()
        .filter(|m| matches!(m.body, Body::Prepare { .. }))
        .map(|m| m.txid)
        .collect()
}

#[test]
fn a_transaction_starts_only_when_none_of_its_keys_has_one_ahead_first_come_first_served() {
    let mut core = fresh(1);
    core.submit(1, put("a", "1"), Duration::ZERO);
    core.submit(2, cas(), Duration::ZERO); // a and b: waits for 1 on a
    core.submit(3, put("b", "3"), Duration::ZERO); // b: waits for 2, though b is free
    core.submit(4, put("c", "4"), Duration::ZERO);
    let effects = core.take_effects(Duration::ZERO);
    assert_eq!(started(&effects), vec![id(1, 1).into(), id(1, 2).into()]);
    let effects = answer(&mut core, 0, id(1, 1), Answer::Vote(Commit));
    assert_eq!(
        started(&effects),
        vec![id(1, 3).into()],
        "the transaction on a and b"
    );
    let effects = answer(&mut core, 0, id(1, 3), evaluated(true, vec![found("1")]));
    assert_eq!(
        started(&effects),
        vec![id(1, 4).into()],
        "then the write to b"
    );
}

#[test]
fn the_leader_chooses_the_branch_the_votes_found_and_the_decision_says_which() {
    let mut core = fresh(2);
    core.submit(1, cas(), Duration::ZERO);
    core.take_effects(Duration::ZERO);
    let t = id(1, 1);
    answer(&mut core, 0, t, evaluated(false, vec![found("x")]));
    let effects = answer(&mut core, 1, t, evaluated(false, vec![found("x")]));
    assert_eq!(
        committed(&effects),
        vec![(
            1,
            Ok(Committed {
                version: None,
                succeeded: false,
                results: vec![found("x")],
            })
        )],
        "the failure branch ran: it wrote nothing, so it has no version"
    );
    for f in 0..2 {
        assert_eq!(
            bodies(&effects, f),
            vec![(
                t.into(),
                Body::Decide {
                    outcome: Commit,
                    failed: true
                }
            )]
        );
    }
    assert_eq!(core.committed_value("a"), None, "nothing written");
}

#[test]
fn a_committed_transaction_answers_its_gets_and_the_leader_serves_every_key_it_wrote() {
    let mut core = fresh(2);
    core.submit(1, cas(), Duration::ZERO);
    core.take_effects(Duration::ZERO);
    let t = id(1, 1);
    answer(&mut core, 0, t, evaluated(true, vec![found("1")]));
    let effects = answer(&mut core, 1, t, evaluated(true, vec![found("1")]));
    assert_eq!(
        committed(&effects),
        vec![(
            1,
            Ok(Committed {
                version: Some(t),
                succeeded: true,
                results: vec![found("1")],
            })
        )]
    );
    assert_eq!(core.committed_value("a"), Some((Some("2"), t)));
    assert_eq!(core.committed_value("b"), Some((None, t)));
    for f in 0..2 {
        answer(&mut core, f, t, Answer::Ack);
    }
    assert_eq!(core.committed_value("a"), None, "every follower applied it");
    assert_eq!(core.committed_value("b"), None);
}

#[test]
fn participants_that_found_different_things_abort_the_transaction() {
    let mut core = fresh(2);
    core.submit(1, cas(), Duration::ZERO);
    core.take_effects(Duration::ZERO);
    let t = id(1, 1);
    answer(&mut core, 0, t, evaluated(true, vec![found("1")]));
    let effects = answer(&mut core, 1, t, evaluated(false, vec![found("x")]));
    assert!(
        matches!(&journal(&effects)[..], [(Some(_), records)] if matches!(records[0], LeaderRecord::Decide { outcome: Abort, .. }))
    );
    core.journaled(2, Ok(()), Duration::ZERO);
    let effects = core.take_effects(Duration::ZERO);
    assert!(
        matches!(&answers(&effects)[..], [(1, Err(Refusal::Aborted(why)))] if why.contains("disagree"))
    );
}

#[test]
fn a_classic_follower_refuses_transactions_but_not_single_writes() {
    let mut core = LeaderCore::recover(Vec::new(), names(2), 2, TIMEOUT, || "C".into())
        .unwrap()
        .core;
    core.take_effects(Duration::ZERO);
    answer(
        &mut core,
        0,
        TxId::fence(1),
        Answer::Report(Some(InquiryReport::default())),
    );
    let classic = Ok(FollowerReply {
        txid: TxnId::Legacy,
        answer: Answer::Ack,
        cluster_id: None,
        protocol: 0,
    });
    core.replies(1, 1, vec![classic], Duration::ZERO);
    core.submit(1, cas(), Duration::ZERO);
    core.submit(2, put("a", "v"), Duration::ZERO);
    let effects = core.take_effects(Duration::ZERO);
    assert!(
        matches!(&answers(&effects)[..], [(1, Err(Refusal::Precondition(why)))] if why.contains("f1")),
        "{effects:?}"
    );
    assert_eq!(started(&effects), vec![id(1, 1).into()], "the Put runs");
}

#[test]
fn a_transaction_waits_to_learn_every_followers_protocol_then_runs_or_is_refused() {
    let mut core = LeaderCore::recover(Vec::new(), names(2), 2, TIMEOUT, || "C".into())
        .unwrap()
        .core;
    core.take_effects(Duration::ZERO);
    core.submit(1, cas(), Duration::ZERO);
    core.submit(2, cas(), Duration::ZERO);
    assert!(
        started(&core.take_effects(Duration::ZERO)).is_empty(),
        "parked"
    );
    let report = || Answer::Report(Some(InquiryReport::default()));
    answer(&mut core, 0, TxId::fence(1), report());
    let effects = answer(&mut core, 1, TxId::fence(1), report());
    assert_eq!(
        started(&effects),
        vec![id(1, 1).into()],
        "both speak protocol 2"
    );

    let mut core = LeaderCore::recover(Vec::new(), names(2), 2, TIMEOUT, || "C".into())
        .unwrap()
        .core;
    core.take_effects(Duration::ZERO);
    core.submit(1, cas(), Duration::ZERO);
    answer(&mut core, 0, TxId::fence(1), report());
    assert_eq!(core.next_deadline(), Some(TIMEOUT));
    core.tick(TIMEOUT);
    let effects = core.take_effects(TIMEOUT);
    assert!(
        matches!(&answers(&effects)[..], [(1, Err(Refusal::Unavailable(why)))] if why.contains("f1")),
        "{effects:?}"
    );
}

#[test]
fn a_recovered_commit_applies_the_branch_the_reports_show() {
    let mut core = restarted(vec![meta(1)], 2).core;
    core.take_effects(Duration::ZERO);
    let t = id(1, 7);
    let fence = TxId::fence(2);
    let failed_report = || {
        let Answer::Report(Some(mut report)) = report(&[(t, &["f0", "f1"])]) else {
            unreachable!()
        };
        report.prepared[0].failed = true;
        Answer::Report(Some(report))
    };
    answer(&mut core, 0, fence, failed_report());
    let effects = answer(&mut core, 1, fence, failed_report());
    // The failure branch is journaled first: once the participants that found the
    // compares failing finish it, a later recovery could not tell the branch.
    let [(Some(job), records)] = &journal(&effects)[..] else {
        panic!("journaled: {effects:?}");
    };
    assert!(
        matches!(
            records[..],
            [LeaderRecord::Decide {
                outcome: Commit,
                failed: true,
                ..
            }]
        ),
        "{records:?}"
    );
    core.journaled(*job, Ok(()), Duration::ZERO);
    let effects = core.take_effects(Duration::ZERO);
    assert_eq!(
        bodies(&effects, 0),
        vec![(
            t.into(),
            Body::Decide {
                outcome: Commit,
                failed: true
            }
        )]
    );
}

#[test]
fn a_plain_commit_vote_is_an_evaluation_that_held_and_read_nothing() {
    let mput = TxnSpec {
        success: vec![
            TxnOp::Put("a".into(), "1".into()),
            TxnOp::Put("b".into(), "2".into()),
        ],
        ..TxnSpec::default()
    };
    let mut core = fresh(2);
    core.submit(1, mput, Duration::ZERO);
    core.take_effects(Duration::ZERO);
    let effects = all_vote(&mut core, 2, id(1, 1), Commit);
    assert_eq!(
        committed(&effects),
        vec![(
            1,
            Ok(Committed {
                version: Some(id(1, 1)),
                succeeded: true,
                results: Vec::new(),
            })
        )]
    );

    // A vote whose GET results do not fit the branch is not believed.
    core.submit(2, cas(), Duration::ZERO);
    core.take_effects(Duration::ZERO);
    let effects = answer(&mut core, 0, id(1, 2), Answer::Vote(Commit));
    assert!(
        matches!(&journal(&effects)[..], [(Some(_), records)] if matches!(records[0], LeaderRecord::Decide { outcome: Abort, .. })),
        "the success branch has a GET: {effects:?}"
    );
}

/// A leader of `n` followers with `replication` replicas per key, first start: its
/// followers told ids `m0`, `m1`, ... and the view they formed is durable.
fn partial(n: usize, replication: usize) -> LeaderCore {
    let mut core = LeaderCore::recover(Vec::new(), names(n), replication, TIMEOUT, || "C".into())
        .unwrap()
        .core;
    core.take_effects(Duration::ZERO);
    let mut effects = Vec::new();
    for f in 0..n {
        let told = InquiryReport {
            member_id: Some(format!("m{f}")),
            ..InquiryReport::default()
        };
        effects = answer(&mut core, f, TxId::fence(1), Answer::Report(Some(told)));
    }
    let [(Some(job), records)] = &journal(&effects)[..] else {
        panic!("the last id forms the view, journaled: {effects:?}");
    };
    assert!(
        matches!(&records[..], [LeaderRecord::Meta { views: Some(v), .. }] if v.current.members.len() == n)
    );
    core.journaled(*job, Ok(()), Duration::ZERO);
    core.take_effects(Duration::ZERO);
    core
}

#[test]
fn with_partial_replication_a_write_runs_among_its_keys_replicas_only() {
    let mut core = partial(5, 3);
    let replicas = core.membership().replicas("a");
    assert_eq!(replicas.len(), 3);
    core.submit(1, put("a", "1"), Duration::ZERO);
    let effects = core.take_effects(Duration::ZERO);
    let names = names(5);
    for f in 0..5 {
        let sent = sent(&effects, f);
        if !replicas.contains(&f) {
            assert!(sent.is_empty(), "follower {f} does not hold the key");
            continue;
        }
        assert_eq!(
            sent[0].body,
            Body::Prepare {
                txn: put("a", "1"),
                participants: replicas.iter().map(|&r| names[r].clone()).collect(),
                recipient: Some(Recipient {
                    view_epoch: 1,
                    member_id: MemberId(format!("m{f}")),
                }),
            }
        );
    }
    let mut effects = Vec::new();
    for &f in &replicas {
        effects = answer(&mut core, f, id(1, 1), Answer::Vote(Commit));
    }
    assert_eq!(
        answers(&effects),
        vec![(1, Ok(id(1, 1)))],
        "committed by its replicas"
    );
    for f in 0..5 {
        assert_eq!(
            bodies(&effects, f).len(),
            usize::from(replicas.contains(&f)),
            "the decision goes to the replicas only"
        );
    }
}

#[test]
fn with_partial_replication_a_transaction_runs_among_the_replicas_of_all_its_keys() {
    let mut core = partial(6, 2);
    let keys = ["a", "b", "c"];
    let expected: BTreeSet<usize> = keys
        .iter()
        .flat_map(|k| core.membership().replicas(k))
        .collect();
    let txn = TxnSpec {
        success: keys
            .iter()
            .map(|k| TxnOp::Put(k.to_string(), "v".into()))
            .collect(),
        ..TxnSpec::default()
    };
    core.submit(1, txn, Duration::ZERO);
    let effects = core.take_effects(Duration::ZERO);
    let prepared: BTreeSet<usize> = (0..6).filter(|&f| !sent(&effects, f).is_empty()).collect();
    assert_eq!(prepared, expected);
}

#[test]
fn with_partial_replication_writes_wait_for_the_first_view_and_are_refused_without_it() {
    let mut core = LeaderCore::recover(Vec::new(), names(3), 2, TIMEOUT, || "C".into())
        .unwrap()
        .core;
    core.take_effects(Duration::ZERO);
    assert!(
        core.membership().replicas("a").is_empty(),
        "no view: no replica known"
    );
    core.submit(1, put("a", "1"), Duration::ZERO);
    assert!(
        started(&core.take_effects(Duration::ZERO)).is_empty(),
        "parked"
    );
    core.tick(TIMEOUT);
    let effects = core.take_effects(TIMEOUT);
    assert!(
        matches!(&answers(&effects)[..], [(1, Err(Refusal::Unavailable(why)))] if why.contains("no view") && why.contains("f0")),
        "{effects:?}"
    );

    // Told in time, and durable: the parked write runs.
    let mut core = LeaderCore::recover(Vec::new(), names(2), 1, TIMEOUT, || "C".into())
        .unwrap()
        .core;
    core.take_effects(Duration::ZERO);
    core.submit(1, put("a", "1"), Duration::ZERO);
    let told = |id: &str| {
        Answer::Report(Some(InquiryReport {
            member_id: Some(id.into()),
            ..InquiryReport::default()
        }))
    };
    answer(&mut core, 0, TxId::fence(1), told("m0"));
    let effects = answer(&mut core, 1, TxId::fence(1), told("m1"));
    assert!(
        started(&effects).is_empty(),
        "not before the view is durable"
    );
    core.journaled(1, Ok(()), Duration::ZERO);
    let effects = core.take_effects(Duration::ZERO);
    let replica = core.membership().replicas("a")[0];
    assert_eq!(
        bodies(&effects, replica)[0].0,
        id(1, 1).into(),
        "{effects:?}"
    );
}

#[test]
fn with_partial_replication_each_participant_runs_its_part_and_the_branch_needs_every_part() {
    for a_is_1 in [true, false] {
        let mut core = partial(5, 2);
        let replicas = |key: &str| core.membership().replicas(key);
        let (on_a, on_b) = (replicas("a"), replicas("b"));
        core.submit(1, cas(), Duration::ZERO);
        let effects = core.take_effects(Duration::ZERO);
        let mut votes = Vec::new();
        for f in 0..5 {
            let (holds_a, holds_b) = (on_a.contains(&f), on_b.contains(&f));
            let sent = sent(&effects, f);
            if !holds_a && !holds_b {
                assert!(sent.is_empty(), "follower {f} holds neither key");
                continue;
            }
            let Body::Prepare { txn, .. } = &sent[0].body else {
                panic!("a PREPARE");
            };
            let holds = |key: &str| (key == "a" && holds_a) || (key == "b" && holds_b);
            assert_eq!(
                *txn,
                parts::part(&cas(), holds),
                "follower {f} gets its part"
            );
            // Its part reads a then b (the GETs of both branches, in order); only a
            // has a compare, so a part without a holds.
            let mut results = Vec::new();
            if holds_a {
                results.push(found(if a_is_1 { "1" } else { "9" }));
            }
            if holds_b {
                results.push(found("old"));
            }
            votes.push((f, evaluated(a_is_1 || !holds_a, results)));
        }
        let mut effects = Vec::new();
        for (f, vote) in votes {
            effects = answer(&mut core, f, id(1, 1), vote);
        }
        if !a_is_1 {
            // The parts without a's compare cannot tell the failure branch at a
            // recovery: the decision is journaled, with its branch, before it goes out.
            let [(Some(job), records)] = &journal(&effects)[..] else {
                panic!("the failure branch is journaled: {effects:?}");
            };
            assert!(
                matches!(
                    records[..],
                    [
                        LeaderRecord::Decide {
                            outcome: Commit,
                            failed: true,
                            ..
                        },
                        ..
                    ]
                ),
                "{records:?}"
            );
            assert!(committed(&effects).is_empty(), "answered once durable");
            assert!(
                (0..5).all(|f| sent(&effects, f).is_empty()),
                "sent once durable"
            );
            core.journaled(*job, Ok(()), Duration::ZERO);
            effects = core.take_effects(Duration::ZERO);
            for f in on_a.iter().chain(&on_b) {
                assert_eq!(
                    bodies(&effects, *f),
                    vec![(
                        id(1, 1).into(),
                        Body::Decide {
                            outcome: Commit,
                            failed: true
                        }
                    )]
                );
            }
        } else {
            assert!(
                !journal(&effects)
                    .iter()
                    .flat_map(|(_, records)| records)
                    .any(|r| matches!(r, LeaderRecord::Decide { .. })),
                "a COMMIT that held: no decision record"
            );
        }
        let [(1, Ok(committed))] = &committed(&effects)[..] else {
            panic!("committed: {effects:?}");
        };
        assert_eq!(
            committed.succeeded, a_is_1,
            "a's compare decides the branch"
        );
        let expected = if a_is_1 { found("1") } else { found("old") };
        assert_eq!(
            committed.results,
            vec![expected],
            "the GET, read where its key lives"
        );
    }
}

#[test]
fn the_view_goes_to_every_follower_that_speaks_protocol_2_and_to_no_classic_peer() {
    let mut core = restarted(vec![meta(1)], 2).core;
    core.take_effects(Duration::ZERO);
    let fence = TxId::fence(2);
    let effects = answer(&mut core, 0, fence, report(&[]));
    assert_eq!(
        views_sent(&effects, 0),
        vec![1],
        "the journaled view, once it reported"
    );
    let classic = Ok(FollowerReply {
        txid: TxnId::Legacy,
        answer: Answer::Ack,
        cluster_id: None,
        protocol: 0,
    });
    core.replies(1, 1, vec![classic], Duration::ZERO);
    let effects = core.take_effects(Duration::ZERO);
    assert!(
        views_sent(&effects, 1).is_empty(),
        "a classic peer would take it for a decision"
    );
}

/// Makes the views journaled in `effects` durable.
fn views_durable(core: &mut LeaderCore, effects: &[Effect]) -> Vec<Effect> {
    let [(Some(job), records)] = &journal(effects)[..] else {
        panic!("views journaled: {effects:?}");
    };
    assert!(matches!(
        records[..],
        [LeaderRecord::Meta { views: Some(_), .. }]
    ));
    core.journaled(*job, Ok(()), Duration::ZERO);
    core.take_effects(Duration::ZERO)
}

#[test]
fn a_change_is_in_force_once_every_leaving_member_took_it_or_its_lease_ran_out() {
    let mut core = partial(4, 3);
    assert_eq!(core.change_members("f3", false), Ok(2));
    let effects = core.take_effects(Duration::ZERO);
    let sent = views_durable(&mut core, &effects);
    assert_eq!(core.membership().next().map(|v| v.epoch), Some(2));
    assert!(
        views_sent(&sent, 3).contains(&2),
        "the leaving member is handed the next view"
    );
    // Every member of the next view caught up, but the leaving one neither took the
    // next view nor went silent: it might still answer direct reads of its keys.
    core.caught_up(2);
    assert!(
        journal(&core.take_effects(Duration::ZERO)).is_empty(),
        "not yet"
    );
    let silent_briefly = [None, None, None, Some(LEASE / 2)];
    core.silences(&silent_briefly, None);
    core.caught_up(2);
    assert!(
        journal(&core.take_effects(Duration::ZERO)).is_empty(),
        "not yet"
    );
    // It ACKs the next view: in force.
    let effects = answer(&mut core, 3, TxId::view(2), Answer::Ack);
    assert!(journal(&effects).is_empty());
    core.caught_up(2);
    let effects = core.take_effects(Duration::ZERO);
    views_durable(&mut core, &effects);
    assert_eq!(core.membership().current().map(|v| v.epoch), Some(2));

    // Another change, whose leaving member is silent past its lease: in force without it.
    assert_eq!(core.change_members("f2", false), Ok(3));
    let effects = core.take_effects(Duration::ZERO);
    views_durable(&mut core, &effects);
    core.silences(&[None, None, Some(LEASE), None], None);
    core.caught_up(3);
    let effects = core.take_effects(Duration::ZERO);
    views_durable(&mut core, &effects);
    assert_eq!(
        core.membership().current().map(|v| v.members.len()),
        Some(2)
    );
}
