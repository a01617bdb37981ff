//! Placement (DESIGN §7): which followers hold a key. Pure: no I/O, no clock.
//!
//! Followers are *members*, each known by a [`MemberId`] it creates at its first start.
//! A [`View`] is an epoch and its members; the leader changes the view (and its epoch)
//! when a member joins, leaves or fails (§8). Every key lives on `R` members, its
//! *replicas*, which any node computes from the key and the view alone, so the leader
//! stores no key-to-member map and a follower can tell by itself whether it holds a key.
//!
//! **The ring.** Each member is hashed to [`POINTS_PER_MEMBER`] points of a 64-bit ring,
//! point `i` of member `m` at `h("m#i")`, and a key to the point `h(key)`, where `h` is
//! the first 8 bytes of SHA-256, big-endian. A key's replicas are the first `R` distinct
//! members met walking clockwise from the key's point (wrapping past the top).
//! [`Ring::replicas`] does it with one binary search and a short walk.
//!
//! **Why a ring, and why 256 points.** Consistent hashing moves few keys when the members
//! change: a joining member takes over only the arcs just before its points, so about
//! `R/N` of the keys gain a replica and no key moves between two members that both
//! stay (a mod-N hash would move almost every key). One point per member would give
//! arcs of very unequal length; with many per member the load of a member is the sum
//! of many arcs and evens out ([`balance`] measures it; the README quotes the numbers).
//!
//! **What moves.** [`Move::between`] compares a key's replicas in two views: the members
//! that gain it must copy it from one that held it, the members that lose it delete it
//! once the new view is durable everywhere (§8).

use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::fmt;

/// Points each member has on the ring. DESIGN §7 says 64; with 64, one set of random
/// member ids in five spreads 100,000 keys over 6 or 12 members with a max/mean above
/// 1.15 (up to 1.19 measured), with 256 none of 20 did (at most 1.11). The ring of 12
/// members is then 3,072 points, built once per view.
pub const POINTS_PER_MEMBER: usize = 256;

/// The default replication factor (`--replication`).
pub const DEFAULT_REPLICATION: usize = 3;

/// A member's identity: created once, at a follower's first start, and kept in its
/// journal directory, so it survives restarts and changes of address, and an empty
/// disk at the same address is a different member.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberId(pub String);

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for MemberId {
    fn from(s: &str) -> Self {
        MemberId(s.to_string())
    }
}

/// The position of `bytes` on the ring: the first 8 bytes of their SHA-256, big-endian.
pub fn point(bytes: &[u8]) -> u64 {
    let digest = Sha256::digest(bytes);
    u64::from_be_bytes(digest[..8].try_into().expect("SHA-256 has 32 bytes"))
}

/// Where point `index` of `member` sits on the ring.
fn member_point(member: &MemberId, index: usize) -> u64 {
    point(format!("{member}#{index}").as_bytes())
}

/// The ring of a set of members: every member's points, sorted.
#[derive(Clone, Debug)]
pub struct Ring {
    /// `(point, index into members)`, sorted by point.
    points: Vec<(u64, usize)>,
    /// The members, sorted and without duplicates.
    members: Vec<MemberId>,
}

impl Ring {
    /// The ring of `members` (duplicates count once; order does not matter).
    pub fn new<'a>(members: impl IntoIterator<Item = &'a MemberId>) -> Ring {
        let members: Vec<MemberId> = members
            .into_iter()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut points: Vec<(u64, usize)> = members
            .iter()
            .enumerate()
            .flat_map(|(i, m)| (0..POINTS_PER_MEMBER).map(move |p| (member_point(m, p), i)))
            .collect();
        // A tie between two members' points (never seen for 64-bit SHA-256 prefixes) is
        // broken by member order, so every node still computes the same ring.
        points.sort_unstable();
        Ring { points, members }
    }

    /// The members of the ring, sorted.
    pub fn members(&self) -> &[MemberId] {
        &self.members
    }

    /// The replicas of `key`: the first `replication` distinct members clockwise from
    /// the key's point (all of them when there are fewer), in ring order: the first is
    /// the key's primary.
    pub fn replicas(&self, key: &str, replication: usize) -> Vec<&MemberId> {
        let wanted = replication.min(self.members.len());
        let mut found: Vec<usize> = Vec::with_capacity(wanted);
        if wanted == 0 {
            return Vec::new();
        }
        let at = point(key.as_bytes());
        let start = self.points.partition_point(|&(p, _)| p < at);
        for &(_, member) in self.points[start..].iter().chain(&self.points[..start]) {
            if !found.contains(&member) {
                found.push(member);
                if found.len() == wanted {
                    break;
                }
            }
        }
        found.into_iter().map(|i| &self.members[i]).collect()
    }

    /// Whether `member` is one of `key`'s replicas.
    pub fn holds(&self, member: &MemberId, key: &str, replication: usize) -> bool {
        self.replicas(key, replication).contains(&member)
    }
}

/// A view: the epoch and the members that hold keys in it (DESIGN §7). Every change of
/// the members is a new view with a higher epoch.
#[derive(Clone, Debug)]
pub struct View {
    /// Rises with every change of the members.
    pub epoch: u64,
    /// Replicas per key (`--replication`).
    pub replication: usize,
    ring: Ring,
}

impl View {
    /// The view of epoch `epoch` whose members hold keys.
    pub fn new<'a>(
        epoch: u64,
        replication: usize,
        members: impl IntoIterator<Item = &'a MemberId>,
    ) -> View {
        View {
            epoch,
            replication,
            ring: Ring::new(members),
        }
    }

    /// The members, sorted.
    pub fn members(&self) -> &[MemberId] {
        self.ring.members()
    }

    /// The replicas of `key` in this view, primary first.
    pub fn replicas(&self, key: &str) -> Vec<&MemberId> {
        self.ring.replicas(key, self.replication)
    }

    /// Whether `member` holds `key` in this view.
    pub fn holds(&self, member: &MemberId, key: &str) -> bool {
        self.ring.holds(member, key, self.replication)
    }

    /// The replicas of every key in `keys`, without duplicates, sorted: the participants
    /// of a transaction on those keys.
    pub fn participants<'k>(&self, keys: impl IntoIterator<Item = &'k str>) -> Vec<&MemberId> {
        let set: BTreeSet<&MemberId> = keys.into_iter().flat_map(|k| self.replicas(k)).collect();
        set.into_iter().collect()
    }
}

/// How a key's replicas change from one view to the next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    /// Replicas in the new view that were not in the old: each copies the key from one
    /// of `sources`.
    pub gained: Vec<MemberId>,
    /// Replicas in the old view that are not in the new: each deletes its copy once the
    /// new view is durable everywhere.
    pub lost: Vec<MemberId>,
    /// Replicas in both views: they hold the key throughout.
    pub kept: Vec<MemberId>,
    /// Where the gaining members copy from: the old replicas, kept ones first (they
    /// stay up to date), primary order otherwise.
    pub sources: Vec<MemberId>,
}

impl Move {
    /// The move of `key` from view `old` to view `new`, or `None` if its replicas are
    /// the same in both (it does not move, and nothing holds it up).
    pub fn between(key: &str, old: &View, new: &View) -> Option<Move> {
        let before = old.replicas(key);
        let after = new.replicas(key);
        let gained: Vec<MemberId> = after
            .iter()
            .filter(|m| !before.contains(m))
            .map(|m| (*m).clone())
            .collect();
        let lost: Vec<MemberId> = before
            .iter()
            .filter(|m| !after.contains(m))
            .map(|m| (*m).clone())
            .collect();
        if gained.is_empty() && lost.is_empty() {
            return None;
        }
        let kept: Vec<MemberId> = after
            .iter()
            .filter(|m| before.contains(m))
            .map(|m| (*m).clone())
            .collect();
        let sources = kept.iter().cloned().chain(lost.iter().cloned()).collect();
        Some(Move {
            gained,
            lost,
            kept,
            sources,
        })
    }
}

/// How evenly a view spreads `keys`: the number of keys each member holds, and the
/// largest divided by the mean (1.0 is perfect).
#[derive(Clone, Debug)]
pub struct Balance {
    /// Keys held, per member, in [`View::members`] order.
    pub per_member: Vec<usize>,
    /// max / mean of `per_member`.
    pub max_over_mean: f64,
}

/// Measures the balance of `view` over `keys`.
pub fn balance<'k>(view: &View, keys: impl IntoIterator<Item = &'k str>) -> Balance {
    let members = view.members();
    let mut per_member = vec![0usize; members.len()];
    for key in keys {
        for replica in view.replicas(key) {
            let i = members
                .binary_search(replica)
                .expect("a replica is a member");
            per_member[i] += 1;
        }
    }
    let total: usize = per_member.iter().sum();
    let mean = total as f64 / members.len().max(1) as f64;
    let max = per_member.iter().copied().max().unwrap_or(0) as f64;
    Balance {
        per_member,
        max_over_mean: if mean > 0.0 { max / mean } else { 1.0 },
    }
}

#[cfg(test)]
mod tests;
