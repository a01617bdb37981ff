//! The link's rules (`link_core.rs`), one test each: what a stream sends next, which
//! reply answers what, and when a stream is given up.

use super::*;
use crate::tpc::message::ClusterInfo;
use crate::txn::TxnSpec;

const TIMEOUT: Duration = Duration::from_millis(100);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
fn id(seq: u64) -> TxId {
    TxId { epoch: 1, seq }
}
fn message(seq: u64, body: Body) -> LeaderMessage {
    LeaderMessage {
        txid: id(seq).into(),
        body,
        epoch: 1,
        low_water: None,
        cluster: Some(ClusterInfo {
            id: "C".into(),
            has_data: false,
        }),
        protocol: PROTOCOL,
    }
}
fn prepare(seq: u64) -> LeaderMessage {
    message(
        seq,
        Body::Prepare {
            txn: TxnSpec::write(format!("k{seq}"), Some("v".into())),
            participants: vec!["f".into()],
            recipient: None,
        },
    )
}
fn decide(seq: u64) -> LeaderMessage {
    message(seq, Body::decide(Outcome::Commit))
}
fn reply(txid: TxnId, answer: Answer, protocol: u32) -> Result<FollowerReply, String> {
    Ok(FollowerReply {
        txid,
        answer,
        cluster_id: Some("C".into()),
        protocol,
    })
}
fn vote(seq: u64, outcome: Outcome) -> Result<FollowerReply, String> {
    reply(id(seq).into(), Answer::Vote(outcome), PROTOCOL)
}
fn ack(seq: u64) -> Result<FollowerReply, String> {
    reply(id(seq).into(), Answer::Ack, PROTOCOL)
}
fn link() -> LinkCore {
    LinkCore::new("C".into(), TIMEOUT)
}
/// The ids a send carried, per effect: `(stream, ids, batched)` or an open/close.
fn sends(link: &mut LinkCore) -> Vec<String> {
    link.take_effects()
        .into_iter()
        .map(|e| match e {
            LinkEffect::Open { stream } => format!("open {stream}"),
            LinkEffect::Close { stream } => format!("close {stream}"),
            LinkEffect::Send {
                stream,
                messages,
                batched,
            } => {
                let ids: Vec<String> = messages.iter().map(|m| m.txid.to_string()).collect();
                format!(
                    "send {stream} [{}]{}",
                    ids.join(" "),
                    if batched { " batched" } else { "" }
                )
            }
        })
        .collect()
}
fn voted(seq: u64, outcome: Outcome, classic: bool) -> LinkEvent {
    LinkEvent::Vote {
        txid: id(seq),
        vote: VoteResult::Voted {
            outcome,
            classic,
            evaluation: None,
        },
    }
}

#[test]
fn a_prepare_opens_a_stream_at_once_and_what_is_queued_together_goes_out_together() {
    let mut l = link();
    l.queue(prepare(1));
    l.queue(prepare(2));
    l.flush(ms(0));
    assert_eq!(sends(&mut l), vec!["open 1", "send 1 [1.1 1.2]"]);
    l.queue(prepare(3));
    l.flush(ms(1));
    assert_eq!(sends(&mut l), vec!["send 1 [1.3]"]);
    l.flush(ms(2));
    assert!(sends(&mut l).is_empty(), "nothing queued, nothing sent");
}

#[test]
fn frames_are_batched_only_once_the_follower_speaks_protocol_2() {
    let mut l = link();
    l.queue(prepare(1));
    l.flush(ms(0));
    sends(&mut l);
    let classic = reply(id(1).into(), Answer::Vote(Outcome::Commit), 0);
    assert_eq!(
        l.replies(1, vec![classic], ms(1)),
        vec![voted(1, Outcome::Commit, true)]
    );
    l.queue(prepare(2));
    l.queue(prepare(3));
    l.flush(ms(2));
    assert_eq!(
        sends(&mut l),
        vec!["send 1 [1.2 1.3]"],
        "one wire message each"
    );
    l.replies(1, vec![vote(2, Outcome::Commit)], ms(3));
    l.queue(prepare(4));
    l.queue(prepare(5));
    l.flush(ms(4));
    assert_eq!(sends(&mut l), vec!["send 1 [1.4 1.5] batched"]);
}

#[test]
fn replies_are_matched_by_id_and_kind() {
    let mut l = link();
    l.queue(prepare(1));
    l.queue(prepare(2));
    l.flush(ms(0));
    sends(&mut l);
    // Out of order: 1.2 answers first.
    assert_eq!(
        l.replies(
            1,
            vec![vote(2, Outcome::Abort), vote(1, Outcome::Commit)],
            ms(1)
        ),
        vec![
            voted(2, Outcome::Abort, false),
            voted(1, Outcome::Commit, false)
        ]
    );
    l.queue(decide(1));
    l.flush(ms(2));
    sends(&mut l);
    // A duplicated vote of 1.1 answers nothing, not the decision waiting for its ACK.
    assert!(l
        .replies(1, vec![vote(1, Outcome::Commit)], ms(3))
        .is_empty());
    assert_eq!(l.view().pending, 1);
    assert_eq!(
        l.replies(1, vec![ack(1)], ms(4)),
        vec![LinkEvent::Acked(id(1))]
    );
    assert_eq!(l.view().pending, 0);
    assert!(
        l.replies(1, vec![ack(1)], ms(5)).is_empty(),
        "a repeated ACK"
    );
}

#[test]
fn a_reply_without_an_id_answers_the_oldest_message() {
    let mut l = link();
    l.queue(prepare(1));
    l.queue(prepare(2));
    l.flush(ms(0));
    sends(&mut l);
    let classic = || reply(TxnId::Legacy, Answer::Vote(Outcome::Commit), 0);
    assert_eq!(
        l.replies(1, vec![classic(), classic()], ms(1)),
        vec![
            voted(1, Outcome::Commit, true),
            voted(2, Outcome::Commit, true)
        ]
    );
}

#[test]
fn pending_decisions_go_first_on_every_new_stream_until_acked() {
    let mut l = link();
    l.queue(prepare(1));
    l.flush(ms(0));
    sends(&mut l);
    l.replies(1, vec![vote(1, Outcome::Commit)], ms(1));
    l.queue(decide(1));
    l.flush(ms(1));
    assert_eq!(sends(&mut l), vec!["send 1 [1.1] batched"]);
    // The stream ends before the ACK: the decision waits for a backoff, then a new
    // stream carries it first, before the PREPARE that opens it.
    l.ended(1, "reset".into(), ms(2));
    l.flush(ms(2));
    assert!(sends(&mut l).is_empty(), "backing off");
    assert_eq!(l.next_deadline(), Some(ms(2) + MIN_BACKOFF));
    l.queue(prepare(2));
    l.flush(ms(3));
    assert_eq!(sends(&mut l), vec!["open 2", "send 2 [1.1 1.2]"]);
    // Events about the old stream are ignored.
    assert!(l.replies(1, vec![ack(1)], ms(4)).is_empty());
    assert!(l.ended(1, "late".into(), ms(4)).is_empty());
    assert_eq!(
        l.replies(2, vec![ack(1)], ms(4)),
        vec![LinkEvent::Acked(id(1))]
    );
}

#[test]
fn a_pending_decision_reopens_the_stream_after_the_backoff_which_doubles() {
    let mut l = link();
    l.queue(decide(1));
    l.flush(ms(0));
    assert_eq!(sends(&mut l), vec!["open 1", "send 1 [1.1]"]);
    l.open_failed(1, "refused".into(), ms(0));
    l.flush(ms(0) + MIN_BACKOFF / 2);
    assert!(sends(&mut l).is_empty());
    l.flush(MIN_BACKOFF);
    assert_eq!(sends(&mut l), vec!["open 2", "send 2 [1.1]"]);
    l.open_failed(2, "refused".into(), MIN_BACKOFF);
    assert_eq!(l.next_deadline(), Some(MIN_BACKOFF * 3), "twice as long");
    for _ in 0..20 {
        let at = l.next_deadline().expect("retrying");
        l.flush(at);
        let Some(LinkEffect::Open { stream }) = l.take_effects().into_iter().next() else {
            panic!("expected a new stream")
        };
        l.open_failed(stream, "refused".into(), at);
        assert!(l.next_deadline().expect("retrying") - at <= MAX_BACKOFF);
    }
}

#[test]
fn a_stream_that_never_connected_sent_nothing_one_that_did_may_have() {
    let mut l = link();
    l.queue(prepare(1));
    l.flush(ms(0));
    sends(&mut l);
    let not_sent = l.open_failed(1, "refused".into(), ms(1));
    assert_eq!(
        not_sent,
        vec![LinkEvent::Vote {
            txid: id(1),
            vote: VoteResult::NotSent("refused".into())
        }]
    );
    l.queue(prepare(2));
    l.flush(ms(2));
    sends(&mut l);
    let no_answer = l.ended(2, "reset".into(), ms(3));
    assert_eq!(
        no_answer,
        vec![LinkEvent::Vote {
            txid: id(2),
            vote: VoteResult::NoAnswer("reset".into())
        }]
    );
}

#[test]
fn the_oldest_message_unanswered_past_the_timeout_gives_the_stream_up() {
    let mut l = link();
    l.queue(prepare(1));
    l.flush(ms(0));
    l.queue(prepare(2));
    l.flush(ms(50));
    sends(&mut l);
    assert_eq!(l.next_deadline(), Some(TIMEOUT));
    assert!(l.tick(TIMEOUT - ms(1)).is_empty());
    l.replies(1, vec![vote(1, Outcome::Commit)], ms(60));
    assert_eq!(l.next_deadline(), Some(ms(50) + TIMEOUT), "now 1.2's");
    let events = l.tick(ms(50) + TIMEOUT);
    assert!(matches!(
        &events[..],
        [LinkEvent::Vote { txid, vote: VoteResult::NoAnswer(_) }] if *txid == id(2)
    ));
    assert_eq!(sends(&mut l), vec!["close 1"]);
    assert!(!l.view().stream_open);
}

#[test]
fn a_follower_of_another_cluster_is_refused() {
    let mut l = link();
    l.queue(prepare(1));
    l.flush(ms(0));
    sends(&mut l);
    let mut stranger = vote(1, Outcome::Commit).unwrap();
    stranger.cluster_id = Some("other".into());
    let events = l.replies(1, vec![Ok(stranger)], ms(1));
    assert!(
        matches!(&events[..], [LinkEvent::Vote { vote: VoteResult::NoAnswer(why), .. }] if why.contains("cluster other"))
    );
    assert_eq!(sends(&mut l), vec!["close 1"]);
}

#[test]
fn a_decision_answered_with_anything_but_ack_is_sent_again() {
    let mut l = link();
    l.queue(decide(1));
    l.flush(ms(0));
    sends(&mut l);
    let wrong = reply(id(1).into(), Answer::Other(0), PROTOCOL);
    assert!(l.replies(1, vec![wrong], ms(1)).is_empty());
    assert_eq!(sends(&mut l), vec!["close 1"]);
    assert_eq!(l.view().pending, 1, "still pending");
    l.flush(ms(1) + MIN_BACKOFF);
    assert_eq!(sends(&mut l), vec!["open 2", "send 2 [1.1]"]);
}

#[test]
fn a_fence_is_pending_until_reported_and_a_classic_ack_reports_nothing() {
    let mut l = link();
    l.queue(message(0, Body::Fence));
    l.flush(ms(0));
    sends(&mut l);
    let report = InquiryReport {
        member_id: Some("m-1".into()),
        ..InquiryReport::default()
    };
    assert_eq!(l.view().member_id, None, "not reported yet");
    let answered = reply(
        TxId::fence(1).into(),
        Answer::Report(Some(report.clone())),
        PROTOCOL,
    );
    assert_eq!(
        l.replies(1, vec![answered], ms(1)),
        vec![LinkEvent::Reported(Some(report))]
    );
    assert_eq!(l.view().pending, 0);
    assert_eq!(
        l.view().member_id.as_deref(),
        Some("m-1"),
        "operators see it"
    );
    let mut classic = link();
    classic.queue(message(0, Body::Fence));
    classic.flush(ms(0));
    let plain = reply(TxnId::Legacy, Answer::Ack, 0);
    assert_eq!(
        classic.replies(1, vec![plain], ms(1)),
        vec![LinkEvent::Reported(None)]
    );
}

#[test]
fn an_unreadable_reply_gives_the_stream_up() {
    let mut l = link();
    l.queue(prepare(1));
    l.flush(ms(0));
    sends(&mut l);
    let events = l.replies(
        1,
        vec![Err("bad id".into()), vote(1, Outcome::Commit)],
        ms(1),
    );
    assert!(matches!(
        &events[..],
        [LinkEvent::Vote {
            vote: VoteResult::NoAnswer(_),
            ..
        }]
    ));
    assert_eq!(sends(&mut l), vec!["close 1"]);
}
