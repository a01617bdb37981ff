//! A restarted leader's recovery by inquiry: deciding the transactions of older epochs
//! that some follower still holds prepared, by the commit rule (DESIGN §1.4, and the
//! essay in [`super`]). Pure: the leader core feeds it the followers' fence reports and
//! carries out what it decides.
//!
//! A restarted leader sends every follower a fence. Once a follower has answered it, its
//! report is a snapshot that stays true: it can no longer vote on a transaction of an
//! older epoch, so "never voted" is final, and "voted COMMIT" can only move on to the
//! decision the rule gives. From the snapshots each participant of an in-doubt
//! transaction T has a [`Status`], and [`verdict`] decides:
//!
//! - a participant that knows T committed makes it COMMIT (some leader decided it);
//! - else one that voted ABORT, knows T aborted, never voted (its report does not know
//!   T, which is at or above its low-water mark), or cannot tell (a classic peer, whose
//!   transactions the leader always journals) makes it ABORT;
//! - else, once every participant has reported and each holds a COMMIT vote (prepared,
//!   or finished: below its low-water mark, so it voted and ACKed a decision, and that
//!   decision was COMMIT, since the leader's journal keeps every ABORT until all its
//!   participants ACKed it, and the journal has none for T), COMMIT;
//! - else it waits for more reports: a participant that is down keeps T undecided, its
//!   keys locked on the others (the stated limit of §1.4).
//!
//! The leader's own journal comes first: a transaction it holds a decision for is not
//! in doubt, and its decision is delivered to every follower that reports it prepared.
//!
//! **Low-water marks wait for recovery.** A follower's report reads "below my mark" as
//! "voted and ACKed", which holds only for marks set by leaders that knew the
//! transaction. So a restarted leader sends no mark until every follower has answered
//! its fence and no transaction is in doubt (after that, no follower holds an older
//! transaction prepared, and none can again): [`Recovery::is_complete`].

use std::collections::{BTreeMap, BTreeSet};

use super::message::{InquiryReport, Outcome, TxId};

/// What one follower's fence report said, kept for the verdicts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// A classic peer's plain ACK: it can't tell what it voted.
    Classic,
    /// A report of protocol 2.
    Known {
        prepared: BTreeSet<TxId>,
        committed: BTreeSet<TxId>,
        /// Those of `committed` whose failure branch applied.
        committed_failed: BTreeSet<TxId>,
        aborted: BTreeSet<TxId>,
        low_water: Option<TxId>,
    },
}

impl Report {
    /// Keeps what the verdicts need of a wire report (`None`: a classic peer).
    pub fn of(report: Option<&InquiryReport>) -> Report {
        match report {
            None => Report::Classic,
            Some(r) => Report::Known {
                prepared: r.prepared.iter().map(|t| t.txid).collect(),
                committed: r.committed.iter().copied().collect(),
                committed_failed: r.committed_failed.iter().copied().collect(),
                aborted: r.aborted.iter().copied().collect(),
                low_water: r.low_water,
            },
        }
    }

    /// This participant's status for `txid`.
    pub fn status(&self, txid: TxId) -> Status {
        match self {
            Report::Classic => Status::Classic,
            Report::Known {
                prepared,
                committed,
                aborted,
                low_water,
                ..
            } => {
                if committed.contains(&txid) {
                    Status::Committed
                } else if aborted.contains(&txid) {
                    Status::Aborted
                } else if prepared.contains(&txid) {
                    Status::Prepared
                } else if low_water.is_some_and(|mark| txid < mark) {
                    Status::Finished
                } else {
                    Status::NeverVoted
                }
            }
        }
    }
}

/// What a participant's report says of one transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// No report yet (down, or not configured on this leader).
    Unreported,
    /// A classic peer: unknown.
    Classic,
    /// Voted COMMIT, undecided.
    Prepared,
    /// Knows it committed.
    Committed,
    /// Voted ABORT or knows it aborted.
    Aborted,
    /// Below its low-water mark: voted, and ACKed the decision.
    Finished,
    /// Never voted, and fenced: never will.
    NeverVoted,
}

/// The commit rule over the participants' statuses: `None` while it can't decide yet.
pub fn verdict(statuses: &[Status]) -> Option<Outcome> {
    if statuses.contains(&Status::Committed) {
        if statuses.contains(&Status::Aborted) {
            tracing::error!(
                ?statuses,
                "participants disagree on a decision; keeping COMMIT, which one applied"
            );
        }
        return Some(Outcome::Commit);
    }
    let no = |s: &Status| matches!(s, Status::Aborted | Status::NeverVoted | Status::Classic);
    if statuses.iter().any(no) {
        return Some(Outcome::Abort);
    }
    let yes = |s: &Status| matches!(s, Status::Prepared | Status::Finished);
    statuses.iter().all(yes).then_some(Outcome::Commit)
}

/// A transaction of an older epoch some follower holds prepared, not decided yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InDoubt {
    /// The key it locks.
    pub key: String,
    /// Its participants this leader knows (indices into its followers).
    pub participants: Vec<usize>,
    /// Participants this leader has no link to: they never report, so the transaction
    /// can only be aborted.
    pub strangers: Vec<String>,
    /// Committed, the failure branch applies: a participant that knows the decision
    /// says so; else some participant found its compares not holding (with full
    /// replication every participant evaluates them all, so the first report says it;
    /// with partial replication each evaluates those on its keys, and all must hold).
    pub failed: bool,
    /// Reports disagree on whether its compares held (each follower journals what its
    /// vote found): the votes did not agree, so the leader cannot have committed it
    /// (DESIGN §6); it is aborted.
    pub disagree: bool,
}

/// The recovery state of a leader.
#[derive(Clone, Debug)]
pub struct Recovery {
    /// False for a first start: nothing to recover.
    active: bool,
    /// Participants evaluate only the compares on their own keys (partial
    /// replication, `membership.rs`): their reports' findings differ by right.
    parts: bool,
    /// Per follower, its report once it has answered the fence.
    reports: Vec<Option<Report>>,
    in_doubt: BTreeMap<TxId, InDoubt>,
}

impl Recovery {
    /// The recovery of a leader with `followers` followers; `restarted` if an earlier
    /// run left a journal (else there is nothing to recover); `parts` if each
    /// participant runs only its keys' part of a transaction (partial replication).
    pub fn new(followers: usize, restarted: bool, parts: bool) -> Recovery {
        Recovery {
            active: restarted,
            parts,
            reports: vec![None; followers],
            in_doubt: BTreeMap::new(),
        }
    }

    /// True if this leader must fence its followers.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// True once every follower has answered the fence and nothing is in doubt: from
    /// then on the leader may send low-water marks (see the module documentation).
    pub fn is_complete(&self) -> bool {
        !self.active || (self.in_doubt.is_empty() && self.reports.iter().all(Option::is_some))
    }

    /// Records follower `f`'s answer to the fence. `names` are the leader's followers,
    /// to read participant lists (an empty list: every follower, as before protocol 2);
    /// `decided` says whether the leader holds a decision for a transaction. Returns the
    /// transactions `f` holds prepared that the leader has a decision for: `f` must get it.
    pub fn report(
        &mut self,
        f: usize,
        report: Option<&InquiryReport>,
        names: &[String],
        decided: impl Fn(TxId) -> bool,
    ) -> Vec<TxId> {
        if !self.active || self.reports[f].is_some() {
            return Vec::new();
        }
        self.reports[f] = Some(Report::of(report));
        let mut owed = Vec::new();
        for txn in report.map(|r| r.prepared.as_slice()).unwrap_or_default() {
            if decided(txn.txid) {
                owed.push(txn.txid);
                continue;
            }
            let in_doubt = self.in_doubt.entry(txn.txid).or_insert_with(|| {
                let (participants, strangers) = if txn.participants.is_empty() {
                    ((0..names.len()).collect(), Vec::new())
                } else {
                    let mut known = Vec::new();
                    let mut strangers = Vec::new();
                    for p in &txn.participants {
                        match names.iter().position(|n| n == p) {
                            Some(i) => known.push(i),
                            None => strangers.push(p.clone()),
                        }
                    }
                    (known, strangers)
                };
                if !strangers.is_empty() {
                    tracing::warn!(txid = %txn.txid, ?strangers, "an in-doubt transaction names participants this leader has no link to: it can only be aborted");
                }
                InDoubt {
                    key: txn.key.clone(),
                    participants,
                    strangers,
                    failed: txn.failed,
                    disagree: false,
                }
            });
            if self.parts {
                in_doubt.failed |= txn.failed;
            } else if in_doubt.failed != txn.failed && !in_doubt.disagree {
                tracing::error!(txid = %txn.txid, "replicas disagree on whether an in-doubt transaction's compares hold: their copies of its keys differ; it is aborted");
                in_doubt.disagree = true;
            }
        }
        owed
    }

    /// Decides every in-doubt transaction the reports so far decide, and forgets it.
    pub fn decide(&mut self) -> Vec<(TxId, Outcome, InDoubt)> {
        let decided: Vec<(TxId, Outcome, Option<bool>)> = self
            .in_doubt
            .iter()
            .filter_map(|(txid, txn)| {
                let mut statuses: Vec<Status> = txn
                    .participants
                    .iter()
                    .map(|&p| self.status(p, *txid))
                    .collect();
                statuses.extend(txn.strangers.iter().map(|_| Status::Unreported));
                // Votes that disagree could not have committed it, unless some
                // participant knows it did (then the reports contradict each other, and
                // the known decision stands).
                let known = statuses.contains(&Status::Committed);
                let outcome = match verdict(&statuses)? {
                    Outcome::Commit if txn.disagree && !known => Outcome::Abort,
                    outcome => outcome,
                };
                Some((*txid, outcome, self.known_branch(&txn.participants, *txid)))
            })
            .collect();
        decided
            .into_iter()
            .filter_map(|(txid, outcome, known_branch)| {
                let mut txn = self.in_doubt.remove(&txid)?;
                if let Some(failed) = known_branch {
                    txn.failed = failed;
                }
                Some((txid, outcome, txn))
            })
            .collect()
    }

    /// The branch of `txid`'s COMMIT as a participant that knows the decision reports
    /// it (`true`: the failure branch), if one does.
    fn known_branch(&self, participants: &[usize], txid: TxId) -> Option<bool> {
        participants.iter().find_map(|&p| match &self.reports[p] {
            Some(Report::Known {
                committed,
                committed_failed,
                ..
            }) if committed.contains(&txid) => Some(committed_failed.contains(&txid)),
            _ => None,
        })
    }

    /// Follower `f`'s status for `txid` by its report.
    pub fn status(&self, f: usize, txid: TxId) -> Status {
        self.reports[f]
            .as_ref()
            .map_or(Status::Unreported, |r| r.status(txid))
    }

    /// True if follower `f` has answered the fence (or there is none).
    pub fn has_reported(&self, f: usize) -> bool {
        !self.active || self.reports[f].is_some()
    }

    /// The transactions still in doubt.
    pub fn in_doubt(&self) -> &BTreeMap<TxId, InDoubt> {
        &self.in_doubt
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tpc::message::ReportedTxn;
    use Status::*;

    fn id(seq: u64) -> TxId {
        TxId { epoch: 1, seq }
    }

    /// The commit rule, one row per case: the statuses of the participants and the
    /// verdict.
    #[test]
    fn the_verdict_follows_the_commit_rule() {
        let rows: &[(&[Status], Option<Outcome>, &str)] = &[
            (
                &[Prepared, Prepared, Prepared],
                Some(Outcome::Commit),
                "every participant voted COMMIT",
            ),
            (
                &[Prepared, Finished, Prepared],
                Some(Outcome::Commit),
                "one already ACKed a decision: it was COMMIT",
            ),
            (
                &[Prepared, Committed, Unreported],
                Some(Outcome::Commit),
                "one knows the decision",
            ),
            (
                &[Prepared, NeverVoted, Prepared],
                Some(Outcome::Abort),
                "one never voted, and the fence stops it ever voting",
            ),
            (
                &[Prepared, Aborted, Unreported],
                Some(Outcome::Abort),
                "one voted ABORT",
            ),
            (
                &[Prepared, Classic],
                Some(Outcome::Abort),
                "a classic peer can't say, and its decisions are journaled",
            ),
            (
                &[Prepared, Prepared, Unreported],
                None,
                "one has not answered: wait",
            ),
            (&[Unreported], None, "nobody answered"),
        ];
        for (statuses, expected, why) in rows {
            assert_eq!(verdict(statuses), *expected, "{why}: {statuses:?}");
        }
    }

    #[test]
    fn a_report_gives_each_transaction_a_status() {
        let report = InquiryReport {
            prepared: vec![ReportedTxn {
                txid: id(5),
                key: "k".into(),
                participants: vec![],
                failed: false,
            }],
            committed: vec![id(6)],
            committed_failed: Vec::new(),
            aborted: vec![id(7)],
            low_water: Some(id(4)),
            member_id: None,
        };
        let r = Report::of(Some(&report));
        assert_eq!(r.status(id(5)), Prepared);
        assert_eq!(r.status(id(6)), Committed);
        assert_eq!(r.status(id(7)), Aborted);
        assert_eq!(r.status(id(3)), Finished, "below the mark");
        assert_eq!(r.status(id(4)), NeverVoted, "at the mark, unknown");
        assert_eq!(r.status(id(9)), NeverVoted);
        assert_eq!(Report::of(None).status(id(5)), Classic);
    }

    fn prepared(seq: u64, participants: &[&str]) -> InquiryReport {
        InquiryReport {
            prepared: vec![ReportedTxn {
                txid: id(seq),
                key: format!("k{seq}"),
                participants: participants.iter().map(|p| p.to_string()).collect(),
                failed: false,
            }],
            ..InquiryReport::default()
        }
    }

    #[test]
    fn an_in_doubt_transaction_is_decided_once_the_reports_decide_it() {
        let names: Vec<String> = vec!["a".into(), "b".into()];
        let mut r = Recovery::new(2, true, false);
        assert!(!r.is_complete());
        assert!(r
            .report(0, Some(&prepared(5, &["a", "b"])), &names, |_| false)
            .is_empty());
        assert!(r.decide().is_empty(), "b has not answered");
        assert!(!r.is_complete());
        assert!(r.has_reported(0) && !r.has_reported(1), "status names b");
        r.report(1, Some(&prepared(5, &["a", "b"])), &names, |_| false);
        let decided = r.decide();
        assert_eq!(decided.len(), 1);
        assert_eq!((decided[0].0, decided[0].1), (id(5), Outcome::Commit));
        assert_eq!(decided[0].2.participants, vec![0, 1]);
        assert!(r.is_complete());
    }

    #[test]
    fn with_parts_a_recovered_commit_fails_if_any_part_failed_unless_a_decision_is_known() {
        let names: Vec<String> = vec!["a".into(), "b".into(), "c".into()];
        let with_failed = |failed| {
            let mut report = prepared(5, &["a", "b", "c"]);
            report.prepared[0].failed = failed;
            report
        };
        let mut r = Recovery::new(3, true, true);
        r.report(0, Some(&with_failed(false)), &names, |_| false);
        r.report(1, Some(&with_failed(true)), &names, |_| false);
        r.report(2, Some(&with_failed(false)), &names, |_| false);
        let decided = r.decide();
        assert_eq!(decided[0].1, Outcome::Commit, "parts differ by right");
        assert!(decided[0].2.failed, "b's part failed: the failure branch");

        // c already applied the decision, the success branch: that stands.
        let mut r = Recovery::new(3, true, true);
        r.report(0, Some(&with_failed(false)), &names, |_| false);
        r.report(1, Some(&with_failed(false)), &names, |_| false);
        let knows = |failed: bool| InquiryReport {
            committed: vec![id(5)],
            committed_failed: if failed { vec![id(5)] } else { Vec::new() },
            ..InquiryReport::default()
        };
        r.report(2, Some(&knows(true)), &names, |_| false);
        let decided = r.decide();
        assert_eq!(decided[0].1, Outcome::Commit);
        assert!(
            decided[0].2.failed,
            "as c applied it, though a and b's parts held"
        );
    }

    #[test]
    fn a_recovered_commit_applies_the_branch_the_reports_show_and_disagreement_aborts() {
        let names: Vec<String> = vec!["a".into(), "b".into()];
        let with_failed = |seq, failed| {
            let mut report = prepared(seq, &["a", "b"]);
            report.prepared[0].failed = failed;
            report
        };
        let mut r = Recovery::new(2, true, false);
        r.report(0, Some(&with_failed(5, true)), &names, |_| false);
        r.report(1, Some(&with_failed(5, true)), &names, |_| false);
        let decided = r.decide();
        assert_eq!(decided[0].1, Outcome::Commit);
        assert!(decided[0].2.failed, "the compares failed everywhere");

        let mut r = Recovery::new(2, true, false);
        r.report(0, Some(&with_failed(6, false)), &names, |_| false);
        r.report(1, Some(&with_failed(6, true)), &names, |_| false);
        let decided = r.decide();
        assert_eq!(
            decided[0].1,
            Outcome::Abort,
            "the replicas disagree: no leader could have committed it"
        );
    }

    #[test]
    fn a_participant_that_never_voted_aborts_it_at_once() {
        let names: Vec<String> = vec!["a".into(), "b".into(), "c".into()];
        let mut r = Recovery::new(3, true, false);
        r.report(0, Some(&prepared(5, &["a", "b", "c"])), &names, |_| false);
        r.report(1, Some(&InquiryReport::default()), &names, |_| false);
        let decided = r.decide();
        assert_eq!(decided.len(), 1);
        assert_eq!(
            decided[0].1,
            Outcome::Abort,
            "b never voted; c need not answer"
        );
        assert!(!r.is_complete(), "c has not answered its fence");
    }

    #[test]
    fn an_empty_participant_list_means_every_follower_and_strangers_block_commit() {
        let names: Vec<String> = vec!["a".into(), "b".into()];
        let mut r = Recovery::new(2, true, false);
        r.report(0, Some(&prepared(5, &[])), &names, |_| false);
        assert_eq!(r.in_doubt()[&id(5)].participants, vec![0, 1]);
        r.report(1, Some(&prepared(6, &["b", "gone:1"])), &names, |_| false);
        assert_eq!(r.in_doubt()[&id(6)].strangers, vec!["gone:1".to_string()]);
        let decided = r.decide();
        assert_eq!(decided.len(), 1, "5: a prepared, b never voted");
        assert_eq!((decided[0].0, decided[0].1), (id(5), Outcome::Abort));
        assert!(
            r.decide().is_empty(),
            "6 waits for a participant that never reports"
        );
    }

    #[test]
    fn a_decision_the_leader_holds_is_owed_not_in_doubt() {
        let names: Vec<String> = vec!["a".into()];
        let mut r = Recovery::new(1, true, false);
        let owed = r.report(0, Some(&prepared(5, &["a"])), &names, |t| t == id(5));
        assert_eq!(owed, vec![id(5)]);
        assert!(r.in_doubt().is_empty());
        assert!(r.is_complete());
    }

    /// A follower's first answer to the fence is its snapshot: a later one (which can
    /// no longer show what the first did) changes nothing; and a leader that did not
    /// restart takes no report at all.
    #[test]
    fn a_fence_report_is_taken_once_and_only_by_a_restarted_leader() {
        let names: Vec<String> = vec!["a".into(), "b".into()];
        let mut r = Recovery::new(2, true, false);
        r.report(0, Some(&prepared(5, &["a", "b"])), &names, |_| false);
        let again = r.report(0, Some(&InquiryReport::default()), &names, |_| true);
        assert!(again.is_empty(), "nothing owed by a second report");
        assert_eq!(r.status(0, id(5)), Prepared, "the first report stands");
        r.report(1, Some(&prepared(5, &["a", "b"])), &names, |_| false);
        let decided = r.decide();
        assert_eq!(decided.len(), 1);
        assert_eq!((decided[0].0, decided[0].1), (id(5), Outcome::Commit));

        let mut first_start = Recovery::new(1, false, false);
        let owed = first_start.report(0, Some(&prepared(5, &["a"])), &names, |_| true);
        assert!(owed.is_empty());
        assert_eq!(first_start.status(0, id(5)), Unreported, "no report kept");
        assert!(first_start.in_doubt().is_empty() && first_start.decide().is_empty());
    }

    #[test]
    fn a_first_start_has_nothing_to_recover() {
        let r = Recovery::new(3, false, false);
        assert!(r.is_complete() && !r.is_active() && r.has_reported(2));
    }
}
