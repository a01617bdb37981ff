//! Cooperative termination (DESIGN §9): a participant that has waited too long for the
//! decision of a transaction it voted COMMIT on asks the other participants what they
//! know, instead of waiting for a leader. Pure: the follower core answers
//! ([`FollowerCore::answer_termination`](super::follower_core::FollowerCore::answer_termination))
//! and [`decision`] combines the answers; `follower_termination.rs` asks and applies.
//!
//! The rule, by the commit rule of DESIGN §1.4 (committed iff every participant holds a
//! durable COMMIT vote and the leader holds no durable ABORT):
//!
//! - a participant that knows the decision answers it, and a known decision wins;
//! - one that voted ABORT answers ABORT; one that never voted (it does not know the
//!   transaction, at or above its low-water mark) first refuses it durably, as it would
//!   refuse a late PREPARE, so it never will vote, and answers ABORT: without its vote
//!   the transaction cannot have committed, and can never commit;
//! - one that voted COMMIT and knows no decision answers that; if every participant
//!   did, the transaction stays prepared (only a leader can hold an ABORT no participant
//!   has seen, §1.4's stated limit), and the asker asks again later;
//! - one that cannot tell (it finished the transaction and forgot it below its mark, or
//!   it is not the member the PREPARE named: another process now answers at that
//!   address, restarted empty, whose "never voted" says nothing of the member that
//!   voted) answers so, and counts for nothing.
//!
//! A follower refuses only when asked as the member it is: the asker names the member
//! the view its PREPARE ran in places at that participant's address
//! (`FollowerCore::participant_ids`). Asked with no id (the asker no longer holds that
//! view, or the PREPARE named none), it answers only a decision it knows.

use super::message::Outcome;

/// What a participant answers about a transaction another participant asks about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Known {
    /// It knows the transaction committed; `failed`: its failure branch applies.
    Committed { failed: bool },
    /// It knows the transaction aborted, voted ABORT, or never voted and now refuses.
    Aborted,
    /// It voted COMMIT and knows no decision.
    Voted,
    /// It cannot tell.
    Unknown,
}

/// The decision the participants' answers give, if they give one: `(outcome, failed)`.
pub fn decision(answers: impl IntoIterator<Item = Known>) -> Option<(Outcome, bool)> {
    let mut aborted = false;
    for known in answers {
        match known {
            Known::Committed { failed } => return Some((Outcome::Commit, failed)),
            Known::Aborted => aborted = true,
            Known::Voted | Known::Unknown => {}
        }
    }
    aborted.then_some((Outcome::Abort, false))
}

#[cfg(test)]
mod tests {
    use super::Known::*;
    use super::*;

    /// The answers, the decision they give, and why.
    type Row = (&'static [Known], Option<(Outcome, bool)>, &'static str);

    #[test]
    fn the_answers_decide_by_the_commit_rule() {
        let rows: &[Row] = &[
            (
                &[Voted, Voted],
                None,
                "every vote COMMIT, no decision known: stays",
            ),
            (&[Voted, Unknown], None, "one cannot tell: stays"),
            (&[], None, "nobody answered: stays"),
            (
                &[Voted, Aborted],
                Some((Outcome::Abort, false)),
                "an ABORT vote or refusal",
            ),
            (
                &[Aborted, Committed { failed: true }],
                Some((Outcome::Commit, true)),
                "a known decision wins, with its branch",
            ),
            (
                &[Unknown, Committed { failed: false }],
                Some((Outcome::Commit, false)),
                "one that knows it committed",
            ),
        ];
        for (answers, expected, why) in rows {
            assert_eq!(decision(answers.iter().copied()), *expected, "{why}");
        }
    }
}
