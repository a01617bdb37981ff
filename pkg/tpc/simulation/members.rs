//! The members changing (DESIGN §8), as the runtime carries it out around the cores.
//!
//! An operator asks the leader core to add or remove a follower
//! ([`LeaderCore::change_members`]); the core journals the next view and hands it to
//! the followers over their streams, as any message. A follower that holds the next
//! view copies what it gains from each member in force, one source per adversary move,
//! as `catch_up.rs` does: the source names the keys ([`FollowerCore::copies_to`]) and
//! holds back any a prepared transaction locks (the source is then not done); the
//! gainer's core picks what to write ([`FollowerCore::copied`]); the writes are
//! unsynced, like the runtime's, until the catch-up is done, when the store is synced.
//! A crash starts the catch-up over. Once every member of the next view is done, the
//! leader hears it ([`LeaderCore::caught_up`]) and, when its rule allows, puts the next
//! view in force. A follower reads directly only by its own view, and only once it has
//! taken the view in force (the lease, `lease.rs`, is refused to one behind).
//!
//! Versions are not modelled (see the module documentation above): every copy and
//! every held value has version `0.0`, so a copy is written only where the gainer
//! holds nothing, which is what a copy is for (a gainer's own newer write is in its
//! `written` set either way).

use std::collections::BTreeSet;

use super::*;
use crate::kvstore::Versioned;

/// A follower's catch-up on the next view.
#[derive(Clone, Debug, Default)]
pub(super) struct CatchUp {
    /// The next view's epoch it is for.
    epoch: u64,
    /// Sources (followers) that have sent everything.
    done_from: BTreeSet<usize>,
    /// Every source has: the store is synced, and the follower reports itself caught up.
    done: bool,
}

impl Sim {
    /// Tracks the view in force at the leader: reads and the final checks follow it.
    pub(super) fn follow_view_in_force(&mut self) {
        let Some(current) = self
            .leader
            .as_ref()
            .and_then(|l| l.core.membership().current().cloned())
        else {
            return;
        };
        self.view_in_force = current.epoch;
        if current.epoch > self.placement.epoch {
            self.stats.views_in_force += 1;
            self.log(|| format!("view {} in force: {:?}", current.epoch, current.members));
            self.placement = View::new(
                current.epoch,
                current.replication,
                current.members.iter().map(|(id, _)| id),
            );
        }
    }

    /// Whether follower `f` answers a direct read of `key`: by its own view, and, once
    /// it belongs to a cluster, only under the lease, which the leader grants only to a
    /// follower that has taken the view in force (`FollowerService::lease`).
    pub(super) fn may_read(&self, f: usize, key: &str) -> bool {
        let Some(core) = &self.followers[f].core else {
            return false;
        };
        if core.check_direct_read(key).is_err() {
            return false;
        }
        if core.cluster_id().is_none() && core.view().is_none() {
            return true;
        }
        core.view().map_or(0, |v| v.epoch) >= self.view_in_force
    }

    /// The adversary's moves that change the members.
    pub(super) fn change_options(&mut self, options: &mut Vec<(u32, Action)>) {
        if self.leader.is_some() {
            for f in 0..FOLLOWERS {
                options.push((1, Action::ChangeMembers(f)));
            }
        }
        for f in 0..FOLLOWERS {
            if self.copy_due(f) {
                options.push((20, Action::Copy(f)));
            }
        }
        if self.caught_up_due() {
            options.push((20, Action::CaughtUp));
        }
    }

    /// Adds follower `f` if it is no member of the view in force, else removes it;
    /// refused changes (one under way, the last member) change nothing.
    pub(super) fn change_members(&mut self, f: usize) {
        let Some(leader) = self.leader.as_mut() else {
            return;
        };
        let member = leader
            .core
            .membership()
            .current()
            .is_some_and(|v| v.members.iter().any(|(_, a)| *a == name(f)));
        let result = leader.core.change_members(&name(f), !member);
        self.log(|| {
            format!(
                "operator: members {} {}: {result:?}",
                if member { "remove" } else { "add" },
                name(f)
            )
        });
    }

    /// Whether follower `f` has a catch-up to make progress on.
    fn copy_due(&self, f: usize) -> bool {
        let Some(core) = &self.followers[f].core else {
            return false;
        };
        core.next_view().is_some()
            && !(self.catch_up[f].done
                && Some(self.catch_up[f].epoch) == core.next_view().map(|v| v.epoch))
    }

    /// Follower `g` copies from one member in force (any it has not finished with),
    /// or, if none is left, finishes its catch-up.
    pub(super) fn copy_step(&mut self, g: usize) {
        let Some(core) = &self.followers[g].core else {
            return;
        };
        let Some(epoch) = core.next_view().map(|v| v.epoch) else {
            return;
        };
        let Some(view) = core.view().cloned() else {
            return;
        };
        let next: Vec<MemberId> = core
            .next_view()
            .map(|v| v.members.iter().map(|(id, _)| id.clone()).collect())
            .unwrap_or_default();
        if self.catch_up[g].epoch != epoch {
            self.catch_up[g] = CatchUp {
                epoch,
                ..CatchUp::default()
            };
        }
        let me = MemberId(member_id(g));
        let sources: Vec<(usize, bool)> = view
            .members
            .iter()
            .filter(|(id, _)| *id != me)
            .filter_map(|(id, _)| {
                let s = (0..FOLLOWERS).find(|&s| MemberId(member_id(s)) == *id)?;
                Some((s, !next.contains(id)))
            })
            .collect();
        let pending: Vec<(usize, bool)> = sources
            .into_iter()
            .filter(|(s, _)| !self.catch_up[g].done_from.contains(s))
            .collect();
        // A leaving member that is down is given up (its keys have other replicas).
        let waiting: Vec<usize> = pending
            .iter()
            .filter(|(s, leaving)| !(*leaving && self.followers[*s].core.is_none()))
            .map(|(s, _)| *s)
            .collect();
        let Some(&s) = waiting.first() else {
            // Done: the store is synced (`KvStore::sync`), then it reports.
            self.followers[g].unsynced.clear();
            self.catch_up[g].done = true;
            self.log(|| format!("follower {g} caught up on view {epoch}"));
            return;
        };
        let Some(source) = &self.followers[s].core else {
            return;
        };
        let mut entries = Vec::new();
        let mut complete = true;
        for key in KEYS {
            match source.copies_to(&me, epoch, key) {
                Err(_) => {
                    complete = false;
                    break;
                }
                Ok(false) => {}
                Ok(true) if source.is_locked(key) => complete = false,
                Ok(true) => {
                    if let Some(value) = self.followers[s].kv.get(key) {
                        entries.push((key.to_string(), value.clone(), TxId::default()));
                    }
                }
            }
        }
        // A torn file reads as corrupt, which `Shared::read` takes as absent.
        let kv = &self.followers[g].kv;
        let store = |key: &str| {
            kv.get(key)
                .filter(|value| *value != TORN)
                .map(|value| Versioned {
                    value: value.clone(),
                    version: TxId::default(),
                })
        };
        let core = self.followers[g].core.as_ref().expect("up");
        let taken: Vec<(String, String)> = match core.copied(epoch, &entries, &store) {
            Ok(taken) => taken
                .into_iter()
                .map(|(k, v, _)| (k.clone(), v.clone()))
                .collect(),
            Err(_) => return,
        };
        self.log(|| {
            format!(
                "follower {g} copies from {s} for view {epoch}: {taken:?} (complete: {complete})"
            )
        });
        for (key, value) in taken {
            self.kv_write_unsynced(g, &key, Some(value));
        }
        if complete {
            self.catch_up[g].done_from.insert(s);
        }
    }

    /// Whether every member of the leader's next view has caught up on it.
    fn caught_up_due(&self) -> bool {
        let Some(leader) = &self.leader else {
            return false;
        };
        let membership = leader.core.membership();
        let Some(next) = membership.next() else {
            return false;
        };
        membership.catching_up().into_iter().all(|f| {
            self.followers[f].core.is_some()
                && self.catch_up[f].done
                && self.catch_up[f].epoch == next.epoch
        })
    }

    /// The runtime's poll found every member of the next view caught up.
    pub(super) fn report_caught_up(&mut self) {
        if !self.caught_up_due() {
            return;
        }
        let leader = self.leader.as_mut().expect("due");
        let epoch = leader.core.membership().next().expect("due").epoch;
        leader.core.caught_up(epoch);
        self.log(|| format!("leader: every member caught up on view {epoch}"));
    }

    /// A crash or restart of follower `f` starts its catch-up over.
    pub(super) fn forget_catch_up(&mut self, f: usize) {
        self.catch_up[f] = CatchUp::default();
    }

    /// What `Follower::open` does after replay: drop the keys it no longer keeps.
    pub(super) fn drop_unheld_at_start(&mut self, f: usize) {
        let node = &mut self.followers[f];
        let Some(core) = &node.core else {
            return;
        };
        if core.view().is_some() {
            node.kv.retain(|key, _| core.keeps(key));
            node.unsynced.retain(|key, _| core.keeps(key));
        }
    }

    /// While healing: the moves that finish a change under way, if any is due.
    pub(super) fn change_moves(&self) -> Vec<Action> {
        let mut moves: Vec<Action> = (0..FOLLOWERS)
            .filter(|&f| self.copy_due(f))
            .map(Action::Copy)
            .collect();
        if self.caught_up_due() {
            moves.push(Action::CaughtUp);
        }
        moves
    }
}
