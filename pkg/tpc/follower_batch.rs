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
            Body::Decide { .. } | Body::Fence => false,
        }
    }
}

/// True if `msg` must be handled in a batch of its own: it may adopt the cluster id, or
/// it is legacy.
pub fn handled_alone(core: &FollowerCore, msg: &LeaderMessage) -> bool {
    msg.is_legacy() || core.cluster_id().is_none()
}
