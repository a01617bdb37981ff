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
//! - **Views change** (DESIGN §8) one at a time, through a *next* view journaled beside
//!   the one in force: explicitly (`tpc members add|remove`, [`Membership::change`]),
//!   or when a follower at a member's address tells another id (it was replaced, or
//!   restarted with an empty disk: the new process replaces the member). While the next
//!   view is pending, a transaction's participants are its keys' replicas in both views;
//!   a follower that holds a key only in the next view gets that key's writes but not
//!   its compares or reads ([`Membership::evaluates`]), since its copy is still being
//!   filled, and reads go to the replicas in force. Once every member of the next view
//!   has caught up ([`Membership::caught_up`]) the next view is journaled as the one in
//!   force, and followers drop the keys they no longer hold.
//! - **Every PREPARE names its member and view** ([`Recipient`]): a follower whose id
//!   differs (a different process answers at the member's address, for example one
//!   restarted with an empty disk) or that has seen a newer view votes ABORT, so such a
//!   commit fails cleanly instead of landing on the wrong copy.

use std::collections::BTreeSet;
use std::time::Duration;

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

    fn addresses(&self) -> BTreeSet<&str> {
        self.members.iter().map(|(_, a)| a.as_str()).collect()
    }
}

/// The views a leader journals: the one in force and, while the members change, the
/// next one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Views {
    pub current: ViewRecord,
    pub next: Option<ViewRecord>,
    /// Followers (addresses) removed for being unreachable longer than the member
    /// timeout: re-admitted by themselves when they answer again.
    pub down: Vec<String>,
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

/// A view with each member's follower index.
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
    next: Option<Installed>,
    /// Views being journaled, numbered by `generation`; they are in force once durable.
    pending: Option<(u64, Views)>,
    generation: u64,
    /// Per follower, the member id it told this leader.
    told: Vec<Option<MemberId>>,
    /// Followers removed for being unreachable (see [`Views::down`]).
    down: BTreeSet<String>,
}

impl Membership {
    /// The members of a leader of `addresses` replicating each key `replication` times,
    /// from the views its journal holds, if any. Refuses journaled views the
    /// configuration no longer matches.
    pub fn new(
        addresses: Vec<String>,
        replication: usize,
        journaled: Option<Views>,
    ) -> Result<Membership, String> {
        if replication == 0 {
            return Err("--replication must be at least 1".into());
        }
        let mut membership = Membership {
            told: vec![None; addresses.len()],
            replication,
            addresses,
            current: None,
            next: None,
            pending: None,
            generation: 0,
            down: BTreeSet::new(),
        };
        if let Some(views) = journaled {
            if !(views.current.is_full() && views.next.is_none() && membership.full_config()) {
                membership.check_matches(&views.current)?;
                if let Some(next) = &views.next {
                    membership.check_matches(next)?;
                }
            }
            membership.install(views);
        }
        Ok(membership)
    }

    /// A journaled view holds each key on its members only: a leader that does not dial
    /// them all, or replicates another number of times, would look for keys where they
    /// are not. More followers than members is fine: the others are not members yet.
    fn check_matches(&self, view: &ViewRecord) -> Result<(), String> {
        let configured: BTreeSet<&str> = self.addresses.iter().map(String::as_str).collect();
        let members = view.addresses();
        if !members.is_subset(&configured) || view.replication != self.replication {
            return Err(format!(
                "the leader's journal holds view {} (--replication {}, followers {}); this \
                 start gives --replication {} and followers {}. Each key lives on the view's \
                 members only, so start the leader with the view's replication factor and \
                 at least its followers",
                view.epoch,
                view.replication,
                members.into_iter().collect::<Vec<_>>().join(","),
                self.replication,
                configured.into_iter().collect::<Vec<_>>().join(","),
            ));
        }
        Ok(())
    }

    /// Every configured follower would hold every key.
    fn full_config(&self) -> bool {
        self.replication >= self.addresses.len()
    }

    /// True if every participant of every transaction runs all of it, so no transaction
    /// is split in parts (`parts.rs`): full replication with no view change under way.
    pub fn is_full(&self) -> bool {
        self.next.is_none()
            && match &self.current {
                None => self.full_config(),
                Some(current) => current.record.is_full(),
            }
    }

    /// The replication factor.
    pub fn replication(&self) -> usize {
        self.replication
    }

    /// Follower `f` told its member id (its answer to the fence; a classic peer, which
    /// has none, is known by its address). Returns views to journal, if now due: the
    /// first view, once every follower has told its id, or a change that replaces a
    /// member whose address now answers with another id.
    pub fn told(&mut self, f: usize, id: Option<&str>) -> Option<Views> {
        let id = MemberId(match id {
            Some(id) => id.to_string(),
            None => format!("address:{}", self.addresses[f]),
        });
        self.told[f] = Some(id);
        self.revisit()
    }

    /// Views to journal, if a change is now due (see [`Membership::told`]); none while
    /// views are being journaled.
    pub fn revisit(&mut self) -> Option<Views> {
        if self.pending.is_some() {
            return None;
        }
        match &self.current {
            None => self.first_view(),
            Some(_) => self.replacements(),
        }
    }

    /// The first view: every follower, once each has told a distinct id.
    fn first_view(&mut self) -> Option<Views> {
        let told: Vec<MemberId> = self.told.iter().cloned().collect::<Option<_>>()?;
        let members: Vec<(MemberId, String)> = told
            .into_iter()
            .zip(self.addresses.iter().cloned())
            .collect();
        if !distinct(&members) {
            return None;
        }
        self.propose(Views {
            current: ViewRecord {
                epoch: 1,
                replication: self.replication,
                members,
            },
            next: None,
            down: Vec::new(),
        })
    }

    /// A change replacing every member whose address told another id, if any did.
    ///
    /// While a change is under way, it is the change's target that is revised: the
    /// next view is replaced by one a newer epoch with the new process in the member's
    /// place. The gone process cannot serve its copies nor catch up, so the change as
    /// it stood would never end; in the revised one it is a leaving member of the view
    /// in force, whose keys come from their other replicas. Every write of the view in
    /// force still reaches its members, so the copies from them stay complete.
    fn replacements(&mut self) -> Option<Views> {
        let target = &self.next.as_ref().or(self.current.as_ref())?.record;
        let members: Vec<(MemberId, String)> = target
            .members
            .iter()
            .map(|(id, address)| {
                let told = self
                    .addresses
                    .iter()
                    .position(|a| a == address)
                    .and_then(|f| self.told[f].clone());
                (told.unwrap_or_else(|| id.clone()), address.clone())
            })
            .collect();
        if members == target.members || !distinct(&members) {
            return None;
        }
        tracing::warn!(?members, "a follower at a member's address told another id (replaced, or restarted empty): it replaces that member and catches up");
        self.begin(members)
    }

    /// Starts a change to the members `members` (or revises the one under way): the
    /// next view, to journal.
    fn begin(&mut self, members: Vec<(MemberId, String)>) -> Option<Views> {
        let current = self.current.as_ref()?.record.clone();
        let newest = self.next.as_ref().map_or(current.epoch, |n| n.record.epoch);
        let next = ViewRecord {
            epoch: newest + 1,
            replication: self.replication,
            members,
        };
        let down = self.down.iter().cloned().collect();
        self.propose(Views {
            current,
            next: Some(next),
            down,
        })
    }

    fn propose(&mut self, views: Views) -> Option<Views> {
        self.generation += 1;
        self.pending = Some((self.generation, views.clone()));
        Some(views)
    }

    /// An operator's change: follower `address` joins the members (`add`) or leaves
    /// them. Returns the views to journal, or why the change cannot start.
    pub fn change(&mut self, address: &str, add: bool) -> Result<Views, String> {
        // An operator's word ends an automatic removal: an added follower is a member,
        // a removed one stays out until added.
        if !add && self.down.contains(address) && self.pending.is_none() {
            self.down.remove(address);
            let (_, views) = self.record().ok_or("no view in force")?;
            return self
                .propose(views)
                .ok_or_else(|| "no view in force".to_string());
        }
        let views = self.change_members(address, add)?;
        Ok(views)
    }

    /// The members change by `address` joining (`add`) or leaving; see [`Self::change`].
    fn change_members(&mut self, address: &str, add: bool) -> Result<Views, String> {
        let Some(current) = self.current.as_ref().map(|c| c.record.clone()) else {
            return Err(
                "the cluster has no view yet: every follower must answer once first".into(),
            );
        };
        if let Some((_, views)) = &self.pending {
            return Err(format!(
                "view {} is being journaled; try again in a moment",
                views.next.as_ref().unwrap_or(&views.current).epoch
            ));
        }
        if let Some(next) = &self.next {
            return Err(format!(
                "the change to view {} is still under way (its new replicas are catching \
                 up); one change at a time",
                next.record.epoch
            ));
        }
        let member = current.members.iter().position(|(_, a)| a == address);
        let mut members = current.members.clone();
        if add {
            self.down.remove(address);
        }
        match (add, member) {
            (true, Some(_)) => {
                return Err(format!(
                    "{address} is already a member of view {}",
                    current.epoch
                ))
            }
            (false, None) => {
                return Err(format!(
                    "{address} is not a member of view {}",
                    current.epoch
                ))
            }
            (false, Some(_)) if members.len() == 1 => {
                return Err(format!("{address} is the last member; a cluster needs one"))
            }
            (false, Some(i)) => {
                members.remove(i);
            }
            (true, None) => {
                let Some(f) = self.addresses.iter().position(|a| a == address) else {
                    return Err(format!(
                        "{address} is not one of the leader's followers ({}); restart the \
                         leader with --follower {address} added, then add it",
                        self.addresses.join(",")
                    ));
                };
                let Some(id) = self.told[f].clone() else {
                    return Err(format!(
                        "follower {address} has not answered since the leader started; start \
                         it (an empty one is fine: it catches up), then add it"
                    ));
                };
                members.push((id, address.to_string()));
                if !distinct(&members) {
                    return Err(format!(
                        "follower {address} told a member id another member has (a copied \
                         data directory?); give it empty directories"
                    ));
                }
            }
        }
        self.begin(members)
            .ok_or_else(|| "no view in force".to_string())
    }

    /// A change due because of who answers (DESIGN §8), given for each follower how
    /// long it has been unreachable (`None`: it answers): a member silent for at least
    /// `member_timeout` leaves the members (and is listed down), unless it is the last;
    /// a follower listed down that answers again, and has told its id since, joins
    /// them. One change at a time, so none while one is under way. Returns the views to
    /// journal, and what happened, for the log.
    pub fn due_change(
        &mut self,
        silent: &[Option<Duration>],
        member_timeout: Duration,
    ) -> Option<(Views, String)> {
        if self.pending.is_some() || self.next.is_some() {
            return None;
        }
        let current = self.current.as_ref()?.record.clone();
        for (f, address) in self.addresses.clone().iter().enumerate() {
            if self.down.contains(address) && silent[f].is_none() && self.told[f].is_some() {
                let views = self.change_members(address, true).ok()?;
                return Some((
                    views,
                    format!("{address} answers again: it rejoins the members"),
                ));
            }
        }
        if current.members.len() < 2 {
            return None;
        }
        for (f, address) in self.addresses.clone().iter().enumerate() {
            let member = current.members.iter().any(|(_, a)| a == address);
            if member && silent[f].is_some_and(|s| s >= member_timeout) {
                self.down.insert(address.clone());
                let Ok(views) = self.change_members(address, false) else {
                    self.down.remove(address);
                    return None;
                };
                return Some((
                    views,
                    format!(
                        "{address} has not answered for {member_timeout:?}: it leaves the members"
                    ),
                ));
            }
        }
        None
    }

    /// Followers removed for being unreachable, re-admitted when they answer.
    pub fn down(&self) -> impl Iterator<Item = &str> {
        self.down.iter().map(String::as_str)
    }

    /// Every member of the next view of epoch `epoch` holds its keys: returns the views
    /// to journal that put it in force.
    pub fn caught_up(&mut self, epoch: u64) -> Option<Views> {
        let next = self.next.as_ref()?;
        if next.record.epoch != epoch || self.pending.is_some() {
            return None;
        }
        let current = next.record.clone();
        let down = self.down.iter().cloned().collect();
        self.propose(Views {
            current,
            next: None,
            down,
        })
    }

    /// The views of generation `generation` are durable: they are in force.
    pub fn durable(&mut self, generation: u64) {
        if let Some((_, views)) = self.pending.take_if(|(g, _)| *g == generation) {
            self.install(views);
        }
    }

    fn install(&mut self, views: Views) {
        self.current = Some(self.installed(views.current));
        self.next = views.next.map(|next| self.installed(next));
        self.down = views.down.into_iter().collect();
    }

    fn installed(&self, view: ViewRecord) -> Installed {
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
        Installed {
            record: view,
            placement,
            member_of,
        }
    }

    /// The views to journal with the leader's meta record, and their generation: those
    /// being journaled, else those in force.
    pub fn record(&self) -> Option<(u64, Views)> {
        if let Some(pending) = &self.pending {
            return Some(pending.clone());
        }
        let current = self.current.as_ref()?.record.clone();
        let next = self.next.as_ref().map(|n| n.record.clone());
        let down = self.down.iter().cloned().collect();
        Some((
            self.generation,
            Views {
                current,
                next,
                down,
            },
        ))
    }

    /// The view in force.
    pub fn current(&self) -> Option<&ViewRecord> {
        self.current.as_ref().map(|c| &c.record)
    }

    /// The next view, while the members change.
    pub fn next(&self) -> Option<&ViewRecord> {
        self.next.as_ref().map(|n| &n.record)
    }

    /// The followers that are members of the next view: those that must catch up.
    pub fn catching_up(&self) -> Vec<usize> {
        self.next.as_ref().map_or_else(Vec::new, |next| {
            (0..self.addresses.len())
                .filter(|&f| next.member_of[f].is_some())
                .collect()
        })
    }

    /// The followers that are members of the view in force and not of the next one.
    pub fn leaving(&self) -> Vec<usize> {
        match (&self.current, &self.next) {
            (Some(current), Some(next)) => (0..self.addresses.len())
                .filter(|&f| current.member_of[f].is_some() && next.member_of[f].is_none())
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The participants of a transaction on `keys`: its keys' replicas in the view in
    /// force and, during a change, in the next view.
    pub fn participants<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k str> + Clone,
    ) -> Participants {
        let Some(current) = &self.current else {
            if self.full_config() {
                return Participants::Followers((0..self.addresses.len()).collect());
            }
            return Participants::NoView {
                waiting_for: self.told.iter().position(Option::is_none).unwrap_or(0),
            };
        };
        let mut followers: BTreeSet<usize> = current.replicas(keys.clone()).collect();
        if let Some(next) = &self.next {
            followers.extend(next.replicas(keys));
        }
        Participants::Followers(followers.into_iter().collect())
    }

    /// Whether follower `f` holds `key` with its data: it is a replica of `key` in the
    /// view in force and still the member it was then. Such a participant evaluates the
    /// compares and reads on `key`; any other participant only writes it.
    pub fn evaluates(&self, f: usize, key: &str) -> bool {
        let Some(current) = &self.current else {
            return self.full_config();
        };
        let Some(member) = &current.member_of[f] else {
            return false;
        };
        let replaced = self.told[f].as_ref().is_some_and(|told| told != member);
        !replaced && current.placement.holds(member, key)
    }

    /// Whether follower `f` takes `key`'s writes: it [evaluates](Self::evaluates) it,
    /// or it holds `key` in the next view.
    pub fn writes(&self, f: usize, key: &str) -> bool {
        self.evaluates(f, key)
            || self.next.as_ref().is_some_and(|next| {
                next.member_of[f]
                    .as_ref()
                    .is_some_and(|member| next.placement.holds(member, key))
            })
    }

    /// The followers a read of `key` may ask: its replicas that hold it with its data
    /// (none before the first view, with partial replication).
    pub fn replicas(&self, key: &str) -> Vec<usize> {
        self.holders([key])
    }

    /// The followers that hold every key of `keys` with its data: those a read of them
    /// all may ask.
    pub fn holders<'k>(&self, keys: impl IntoIterator<Item = &'k str>) -> Vec<usize> {
        let mut holders: Vec<usize> = (0..self.addresses.len()).collect();
        for key in keys {
            holders.retain(|&f| self.evaluates(f, key));
        }
        holders
    }

    /// What a PREPARE to follower `f` says it is for, once a view is in force: the
    /// newest view, and the member `f` is in it.
    pub fn recipient(&self, f: usize) -> Option<Recipient> {
        let current = self.current.as_ref()?;
        let newest = self.next.as_ref().unwrap_or(current);
        let member_id = newest.member_of[f]
            .clone()
            .or_else(|| current.member_of[f].clone())?;
        Some(Recipient {
            view_epoch: newest.record.epoch,
            member_id,
        })
    }

    /// Follower `f` was lost: until it answers again, which member answers at its
    /// address is not known (an operator may not add it meanwhile).
    pub fn unreachable(&mut self, f: usize) {
        self.told[f] = None;
    }

    /// The member id follower `f` told, if it has.
    pub fn told_id(&self, f: usize) -> Option<&MemberId> {
        self.told[f].as_ref()
    }
}

impl Installed {
    /// The followers that are replicas of a key of `keys`.
    fn replicas<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k str>,
    ) -> impl Iterator<Item = usize> + '_ {
        let members = self.placement.participants(keys);
        let followers: Vec<usize> = self
            .member_of
            .iter()
            .enumerate()
            .filter(|(_, m)| m.as_ref().is_some_and(|m| members.contains(&m)))
            .map(|(f, _)| f)
            .collect();
        followers.into_iter()
    }
}

/// True if no two members share an id; logs it if two do.
fn distinct(members: &[(MemberId, String)]) -> bool {
    let ids: BTreeSet<&MemberId> = members.iter().map(|(id, _)| id).collect();
    if ids.len() != members.len() {
        tracing::error!(?members, "two followers told the same member id (a copied data directory?); no view is formed until each has its own");
        return false;
    }
    true
}

#[cfg(test)]
#[path = "membership_tests.rs"]
mod tests;
