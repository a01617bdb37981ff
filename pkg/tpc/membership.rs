//! The leader's members (DESIGN §7): which follower is which member, the view in force,
//! and from it a transaction's participants, a read's replicas and what every PREPARE
//! says it is meant for. Pure: the leader core feeds it the followers' member ids and
//! the journal's answers; placement itself is `crate::placement`.
//!
//! - **The first view** is formed once every follower has told its member id (its
//!   answer to the fence every leader sends at start; a classic peer, which has none, is
//!   known by its address) and is in force once durable in the leader's journal; from
//!   then on every PREPARE names its member.
//! - **Full replication** (`--replication` at least the number of followers): every
//!   follower holds every key and is a participant of every transaction, view or not,
//!   exactly as before views existed, so classic tooling keeps working and a write need
//!   not wait for the slowest follower's answer to the fence. A restarted leader with
//!   other followers forms a new view once they have all told their ids.
//! - **Partial replication** (fewer replicas than followers): a transaction's
//!   participants are the replicas of its keys in the view, so nothing is written before
//!   the first view is in force. A restarted leader takes the journaled view as it is;
//!   the followers and the replication factor must then be those of the view
//!   (membership changes are view changes, DESIGN §8).
//! - **Every PREPARE names its member and view** ([`Recipient`]): a follower whose id
//!   differs (a different process answers at the member's address, for example one
//!   restarted with an empty disk) or that has seen a newer view votes ABORT, so such a
//!   commit fails cleanly instead of landing on the wrong copy.

use std::collections::BTreeSet;

pub use super::message::Recipient;
use crate::placement::{MemberId, View};

/// A view as the leader journals it: its epoch, the replication factor and every
/// member with the address the leader dials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewRecord {
    pub epoch: u64,
    pub replication: usize,
    /// `(member id, address)`, in follower order.
    pub members: Vec<(MemberId, String)>,
}

impl ViewRecord {
    fn is_full(&self) -> bool {
        self.replication >= self.members.len()
    }
}

/// Who must take part in a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Participants {
    /// These followers (indices), sorted.
    Followers(Vec<usize>),
    /// Not known until the first view is formed; the follower that has not told its
    /// member id yet is named.
    NoView { waiting_for: usize },
}

/// The view in force, with each member's follower index.
#[derive(Clone, Debug)]
struct Installed {
    record: ViewRecord,
    placement: View,
    /// Per follower, its member id in this view (`None`: not a member).
    member_of: Vec<Option<MemberId>>,
}

/// The leader's members. See the module documentation.
#[derive(Clone, Debug)]
pub struct Membership {
    replication: usize,
    addresses: Vec<String>,
    current: Option<Installed>,
    /// A view being journaled; it is in force once durable.
    pending: Option<ViewRecord>,
    /// Per follower, the member id it told this leader.
    told: Vec<Option<MemberId>>,
}

impl Membership {
    /// The members of a leader of `addresses` replicating each key `replication` times,
    /// from the view its journal holds, if any. Refuses a journaled view of partial
    /// replication that the configuration no longer matches.
    pub fn new(
        addresses: Vec<String>,
        replication: usize,
        journaled: Option<ViewRecord>,
    ) -> Result<Membership, String> {
        if replication == 0 {
            return Err("--replication must be at least 1".into());
        }
        let mut membership = Membership {
            told: vec![None; addresses.len()],
            replication,
            addresses,
            current: None,
            pending: None,
        };
        if let Some(view) = journaled {
            if !(view.is_full() && membership.is_full()) {
                membership.check_matches(&view)?;
            }
            membership.install(view);
        }
        Ok(membership)
    }

    /// A journaled view of partial replication holds each key on some members only: a
    /// leader with other followers or another replication factor would look for keys
    /// where they are not.
    fn check_matches(&self, view: &ViewRecord) -> Result<(), String> {
        let configured: BTreeSet<&str> = self.addresses.iter().map(String::as_str).collect();
        let members: BTreeSet<&str> = view.members.iter().map(|(_, a)| a.as_str()).collect();
        if configured != members || view.replication != self.replication {
            return Err(format!(
                "the leader's journal holds view {} (--replication {}, followers {}); this \
                 start gives --replication {} and followers {}. With fewer replicas than \
                 followers each key lives on some followers only, so start the leader with \
                 the view's followers and replication factor",
                view.epoch,
                view.replication,
                members.into_iter().collect::<Vec<_>>().join(","),
                self.replication,
                configured.into_iter().collect::<Vec<_>>().join(","),
            ));
        }
        Ok(())
    }

    /// True if every follower holds every key.
    pub fn is_full(&self) -> bool {
        self.replication >= self.addresses.len()
    }

    /// The replication factor.
    pub fn replication(&self) -> usize {
        self.replication
    }

    /// Follower `f` told its member id (its answer to the fence; a classic peer, which
    /// has none, is known by its address). Returns a view to journal, if one is now
    /// due: the first, once every follower has told its id, or with full replication a
    /// new one when the members differ from the view's.
    pub fn told(&mut self, f: usize, id: Option<&str>) -> Option<ViewRecord> {
        let id = MemberId(match id {
            Some(id) => id.to_string(),
            None => format!("address:{}", self.addresses[f]),
        });
        self.told[f] = Some(id);
        if self.pending.is_some() {
            return None;
        }
        let told: Option<Vec<MemberId>> = self.told.iter().cloned().collect();
        let told = told?;
        let distinct: BTreeSet<&MemberId> = told.iter().collect();
        if distinct.len() != told.len() {
            tracing::error!(?told, "two followers told the same member id (a copied data directory?); no view is formed until each has its own");
            return None;
        }
        let members: Vec<(MemberId, String)> = told
            .into_iter()
            .zip(self.addresses.iter().cloned())
            .collect();
        let epoch = match &self.current {
            None => 1,
            Some(current) if self.is_full() && current.record.members != members => {
                current.record.epoch + 1
            }
            Some(current) => {
                for (f, (id, address)) in members.iter().enumerate() {
                    if current.member_of[f].as_ref().is_some_and(|m| m != id) {
                        tracing::warn!(follower = %address, member = %id, "this follower is not the member the view has at its address (restarted empty?); PREPAREs meant for that member are refused there until the view changes");
                    }
                }
                return None;
            }
        };
        let view = ViewRecord {
            epoch,
            replication: self.replication,
            members,
        };
        self.pending = Some(view.clone());
        Some(view)
    }

    /// The view of epoch `epoch` is durable: it is in force.
    pub fn durable(&mut self, epoch: u64) {
        if let Some(view) = self.pending.take_if(|v| v.epoch == epoch) {
            self.install(view);
        }
    }

    fn install(&mut self, view: ViewRecord) {
        let member_of = self
            .addresses
            .iter()
            .map(|a| {
                view.members
                    .iter()
                    .find(|(_, address)| address == a)
                    .map(|(id, _)| id.clone())
            })
            .collect();
        let placement = View::new(
            view.epoch,
            view.replication,
            view.members.iter().map(|(id, _)| id),
        );
        self.current = Some(Installed {
            record: view,
            placement,
            member_of,
        });
    }

    /// The view to journal with the leader's meta record: the one being journaled, else
    /// the one in force.
    pub fn record(&self) -> Option<&ViewRecord> {
        self.pending
            .as_ref()
            .or(self.current.as_ref().map(|c| &c.record))
    }

    /// The view in force.
    pub fn current(&self) -> Option<&ViewRecord> {
        self.current.as_ref().map(|c| &c.record)
    }

    /// The participants of a transaction on `keys`.
    pub fn participants<'k>(&self, keys: impl IntoIterator<Item = &'k str>) -> Participants {
        if self.is_full() {
            return Participants::Followers((0..self.addresses.len()).collect());
        }
        match &self.current {
            None => Participants::NoView {
                waiting_for: self.told.iter().position(Option::is_none).unwrap_or(0),
            },
            Some(current) => {
                let members = current.placement.participants(keys);
                Participants::Followers(current.followers_of(members))
            }
        }
    }

    /// The followers a read of `key` may ask, its replicas (none before the first view,
    /// with partial replication).
    pub fn replicas(&self, key: &str) -> Vec<usize> {
        self.holders([key])
    }

    /// The followers that hold every key of `keys`: those a read of them all may ask.
    pub fn holders<'k>(&self, keys: impl IntoIterator<Item = &'k str>) -> Vec<usize> {
        let mut holders = (0..self.addresses.len()).collect::<Vec<_>>();
        for key in keys {
            match self.participants([key]) {
                Participants::Followers(replicas) => holders.retain(|f| replicas.contains(f)),
                Participants::NoView { .. } => return Vec::new(),
            }
        }
        holders
    }

    /// What a PREPARE to follower `f` says it is for, once a view is in force.
    pub fn recipient(&self, f: usize) -> Option<Recipient> {
        let current = self.current.as_ref()?;
        Some(Recipient {
            view_epoch: current.record.epoch,
            member_id: current.member_of[f].clone()?,
        })
    }

    /// The member id follower `f` told, if it has.
    pub fn told_id(&self, f: usize) -> Option<&MemberId> {
        self.told[f].as_ref()
    }
}

impl Installed {
    /// The followers (indices, sorted) that are `members`.
    fn followers_of(&self, members: Vec<&MemberId>) -> Vec<usize> {
        self.member_of
            .iter()
            .enumerate()
            .filter(|(_, m)| m.as_ref().is_some_and(|m| members.contains(&m)))
            .map(|(f, _)| f)
            .collect()
    }
}

#[cfg(test)]
#[path = "membership_tests.rs"]
mod tests;
