//! The follower's batching rules: which handled messages may share one journal write,
//! and which must wait for the batch before them. Shared by the state owner
//! (`follower_state.rs`) and the simulation, so both follow one rule.
//!
//! The state owner hands every waiting message to the core one by one and carries out
//! their effects together (one journal write and one fdatasync for all their records,
//! then all store changes, lock releases and replies). That is only sound if the core's
//! answer to a message does not depend on an effect still pending in the batch, so:
//!
//! - a PREPARE waits for the batch when a pending decision is about to finish its
//!   transaction (the decision came first) or unlock one of its keys (a predecessor on
//!   that key), or the core would see a lock or an undecided id already on its way
//!   out, and vote ABORT, or evaluate its compares on a value about to change
//!   ([`Batch::must_precede`]);
//! - a message that may adopt the cluster id, and a legacy message, are handled in a
//!   batch of their own, so a failed journal write can't undo more than that message
//!   ([`handled_alone`]).

use std::collections::HashSet;

use super::follower_core::{Effect, FollowerCore};
use super::message::{Body, LeaderMessage, TxnId};

/// Messages handled by the core whose effects are not carried out yet, each with what
/// its owner needs to carry them out (`H`: the state owner's, or the simulation's), and
/// the transactions and keys those effects will settle.
pub struct Batch<H> {
    /// The handled messages, in arrival order.
    pub handled: Vec<H>,
    /// Transactions a pending effect will finish, and the keys it will unlock.
    finishing: HashSet<TxnId>,
    unlocking: HashSet<String>,
}

impl<H> Default for Batch<H> {
    fn default() -> Self {
        Batch {
            handled: Vec::new(),
            finishing: HashSet::new(),
            unlocking: HashSet::new(),
        }
    }
}

/// A handled message in a [`Batch`]: the core's effects for it, not carried out yet.
pub trait Pending {
    /// The core's effects for the message.
    fn effects(&self) -> &[Effect];
}

impl<H: Pending> Batch<H> {
    /// Adds a handled message; `core` is the core that produced its effects (it still
    /// holds the locks they will release).
    pub fn push(&mut self, core: &FollowerCore, handled: H) {
        for effect in handled.effects() {
            if let Effect::Finish { txid, .. } = effect {
                if let Some(prepared) = core.prepared().get(txid) {
                    self.unlocking
                        .extend(prepared.txn.keys().into_iter().map(str::to_string));
                }
                self.finishing.insert(txid.clone());
            }
        }
        self.handled.push(handled);
    }

    /// True if `msg` must wait for this batch's effects before the core sees it: a
    /// PREPARE whose transaction a pending effect finishes or one of whose keys it
    /// unlocks (and may write: the PREPARE's compares and GETs must read the result).
    pub fn must_precede(&self, msg: &LeaderMessage) -> bool {
        match &msg.body {
            Body::Prepare { txn, .. } => {
                self.finishing.contains(&msg.txid)
                    || txn.keys().iter().any(|key| self.unlocking.contains(*key))
            }
            Body::Decide { .. } | Body::Fence | Body::View { .. } => false,
        }
    }
}

/// True if `msg` must be handled in a batch of its own: it may adopt the cluster id, or
/// a view (both undone if their journal write fails, `FollowerCore::journal_failed`),
/// or it is legacy.
pub fn handled_alone(core: &FollowerCore, msg: &LeaderMessage) -> bool {
    msg.is_legacy() || core.cluster_id().is_none() || matches!(msg.body, Body::View { .. })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kvstore::Versioned;
    use crate::tpc::message::{ClusterInfo, Outcome, PROTOCOL};
    use crate::txn::TxnSpec;

    /// A handled message as the tests keep it: just its effects.
    struct Handled(Vec<Effect>);

    impl Pending for Handled {
        fn effects(&self) -> &[Effect] {
            &self.0
        }
    }

    fn msg(txid: &str, body: Body, cluster: Option<&str>) -> LeaderMessage {
        LeaderMessage {
            txid: txid.into(),
            body,
            epoch: 1,
            low_water: None,
            cluster: cluster.map(|id| ClusterInfo {
                id: id.into(),
                has_data: false,
            }),
            protocol: PROTOCOL,
        }
    }
    fn prepare(txid: &str, key: &str) -> LeaderMessage {
        let body = Body::Prepare {
            txn: TxnSpec::write(key.into(), Some("v".into())),
            participants: vec!["f".into()],
            recipient: None,
        };
        msg(txid, body, Some("C"))
    }
    /// A store that holds nothing.
    fn empty(_: &str) -> Option<Versioned> {
        None
    }
    fn decide(txid: &str) -> LeaderMessage {
        msg(txid, Body::decide(Outcome::Commit), Some("C"))
    }

    /// A PREPARE waits for the batch when a pending decision finishes its transaction
    /// or unlocks its key; nothing else waits.
    #[test]
    fn a_prepare_waits_for_a_pending_decision_of_its_transaction_or_its_key() {
        let mut core = FollowerCore::new(false);
        core.handle(1, prepare("1.1", "k"), &empty);
        let mut batch = Batch::default();
        let decided = core.handle(1, decide("1.1"), &empty);
        batch.push(&core, Handled(decided));
        // A decision of a transaction this follower never saw: finishes it, unlocks nothing.
        let marker = core.handle(1, decide("1.5"), &empty);
        batch.push(&core, Handled(marker));
        assert_eq!(batch.handled.len(), 2);
        let rows = [
            (prepare("1.1", "k"), true, "its own decision is pending"),
            (prepare("1.2", "k"), true, "its key's lock is about to go"),
            (
                prepare("1.5", "j"),
                true,
                "its decision (a marker) is pending",
            ),
            (
                prepare("1.6", "j"),
                false,
                "another key, another transaction",
            ),
            (decide("1.1"), false, "a decision never waits"),
            (
                msg("2.0", Body::Fence, Some("C")),
                false,
                "nor does a fence",
            ),
        ];
        for (m, expected, why) in rows {
            assert_eq!(batch.must_precede(&m), expected, "{why}: {m:?}");
        }
        assert!(
            !Batch::<Handled>::default().must_precede(&prepare("1.1", "k")),
            "an empty batch holds nothing back"
        );
    }

    /// A message that may adopt the cluster id (the follower has none yet), and a
    /// legacy message, are handled in a batch of their own: a failed journal write then
    /// undoes only that message (`FollowerCore::journal_failed` undoes the adoption of
    /// the last message handled, and only that one).
    #[test]
    fn a_message_that_may_adopt_the_cluster_id_or_is_legacy_is_handled_alone() {
        let fresh = FollowerCore::new(false);
        let mut member = FollowerCore::new(false);
        member.handle(1, prepare("1.1", "k"), &empty);
        assert_eq!(member.cluster_id(), Some("C"));
        let legacy = msg("", Body::decide(Outcome::Commit), None);
        let rows = [
            (
                &fresh,
                prepare("1.2", "j"),
                true,
                "may adopt the cluster id",
            ),
            (&fresh, decide("1.2"), true, "a decision may adopt it too"),
            (&fresh, legacy.clone(), true, "legacy, and no cluster id"),
            (&member, prepare("1.2", "j"), false, "a member batches"),
            (&member, decide("1.1"), false, "a member batches decisions"),
            (&member, legacy, true, "legacy"),
        ];
        for (core, m, expected, why) in rows {
            assert_eq!(handled_alone(core, &m), expected, "{why}: {m:?}");
        }
    }
}
