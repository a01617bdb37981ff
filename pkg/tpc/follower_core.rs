//! The follower's protocol core: a pure state machine with no I/O.
//!
//! [`FollowerCore::handle`] takes one leader message and returns the [`Effect`]s the
//! runtime must carry out, in write-ahead order: first what to make durable
//! ([`Effect::Persist`]), then what to apply to the key-value store ([`Effect::Apply`]),
//! then [`Effect::Finish`] (which the runtime hands back to [`FollowerCore::finish`] to
//! release the lock), and last the [`Effect::Reply`]. So the vote is durable before it is
//! sent, and a decided value is durable and visible before the key's lock is released and
//! the ACK sent (DESIGN §1.3). Journal replay goes through the same code
//! ([`FollowerCore::replay`]), minus the persisting and the replies.
//!
//! State per transaction: *prepared* (INIT → READY: the key is locked and reads of it are
//! refused) until a decision arrives, then *decided* (remembered only while a late
//! PREPARE of it could still arrive). The rules, each one tested in `follower_core_tests.rs`:
//!
//! - A PREPARE for a key locked by another transaction gets ABORT.
//! - A repeated PREPARE gets the same vote; a PREPARE of a transaction already decided,
//!   or below the low-water mark the leader sent (everything below it that was sent to
//!   this follower is decided and ACKed), or from an older leader epoch, gets ABORT and
//!   takes no lock. That is why decided ids are remembered, and journaled, until the
//!   low-water mark passes them: a checkpoint may drop a decided record only below it.
//! - A repeated decision gets ACK again and changes nothing; a decision for an unknown
//!   transaction is journaled as a marker, so that a late PREPARE of it is refused.
//! - A restarted leader's *fence* (a GLOBAL ABORT of `<epoch>.0`, an id no transaction
//!   has) is made durable before it is answered (the `meta` record's epoch): from then
//!   on every PREPARE of an older epoch gets ABORT, also after a restart. Its answer,
//!   an [`InquiryReport`], tells what this follower knows of the older epochs'
//!   transactions: those it holds prepared (with their participants, journaled with the
//!   vote), those it knows decided, and its low-water mark. A transaction it does not
//!   know at or above the mark never got its vote and now never will; from all the
//!   reports the leader decides by the rule of DESIGN §1.4 (see [`super`]).
//! - Legacy messages (no transaction id, from classic tooling): at most one undecided
//!   legacy transaction; an identical retransmitted PREPARE gets the same vote, a
//!   different one ABORT; a legacy decision that follows, on the same stream, a legacy
//!   PREPARE this follower refused is ACKed and changes nothing; any other legacy
//!   decision decides the pending legacy transaction. Legacy messages never touch a
//!   transaction that has an id.
//! - Every PREPARE's participant list is journaled with its vote.
//! - Cluster id: adopted from the first leader message that carries one (durably), then
//!   a leader with another id is refused, and so is a cluster with committed writes
//!   when this follower is empty (it would serve a partial copy).

use std::collections::{HashMap, HashSet};

use super::membership::ViewRecord;
use super::message::{
    Body, InquiryReport, LeaderMessage, Op, Outcome, Recipient, Reply, ReportedTxn, TxId, TxnId,
};
use super::records::FollowerRecord;
use super::termination::Known;
use crate::kvstore::Versioned;
use crate::placement::{MemberId, View};
use crate::txn::{Evaluation, TxnSpec};

/// Identifies one incoming stream, for the per-stream legacy rule.
pub type StreamId = u64;

/// A transaction that voted COMMIT and waits for its decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreparedTxn {
    /// The transaction: every key it touches is locked.
    pub txn: TxnSpec,
    /// Every participant, as its PREPARE named them.
    pub participants: Vec<String>,
    /// The view the PREPARE ran in (0: it named none). One that ran in a next view
    /// also reached the members in force that a gainer copies from, so its writes
    /// are the gainer's to apply (see `not_applied`).
    pub view_epoch: u64,
    /// Its compares did not hold when it voted (journaled with the vote: once a
    /// decision's writes are applied, the store no longer shows what the vote found).
    pub failed: bool,
    /// What its compares and GETs found, for a repeated PREPARE (kept in memory only:
    /// after a restart the store shows its keys as they were, still locked).
    evaluation: Option<Evaluation>,
    /// Keys whose writes its decision does not apply here: keys this follower did not
    /// hold in the view in force when it took a next view (DESIGN §8), of a PREPARE
    /// that ran in that view or an older one. The copy from the members in force brings
    /// their outcome (a source sends a key only once no prepared transaction holds it);
    /// applied late, an old write could land on a key deleted meanwhile, which no copy
    /// would then correct. A PREPARE that ran in a next view is not of these: it also
    /// went to the members in force, which may have copied the key before it reached
    /// them, so its writes are this follower's to apply. Rebuilt by replay, since the
    /// journal holds the next view after the PREPARE.
    not_applied: HashSet<String>,
}

/// Who takes part in a transaction, as its PREPARE named them: the participants'
/// addresses, and the view it runs in.
type Named = (Vec<String>, u64);

/// What the store holds, as the core may look at it: each key's value and version
/// (`None`: absent). The runtime passes a view of its store; the core only reads it, to
/// evaluate a transaction's compares and GETs while the keys are locked.
pub type StoreView<'a> = &'a dyn Fn(&str) -> Option<Versioned>;

/// A transaction this follower knows is decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Decided {
    outcome: Outcome,
    /// A COMMIT of the failure branch (the transaction's compares did not hold).
    failed: bool,
    /// False for an ABORT vote this follower gave without journaling anything (a lock
    /// conflict, a failed journal write): its decision, when it comes, is journaled as a
    /// marker, so that a restart still refuses a late PREPARE of it.
    journaled: bool,
}

/// What the runtime must do, in order, after a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Append this record to the journal and make it durable before anything after it.
    Persist(FollowerRecord),
    /// Apply this change to the key-value store, durably, with `version`: the
    /// transaction's id (DESIGN §1.8; `0.0` for a legacy or foreign id, which has no
    /// order).
    Apply { key: String, op: Op, version: TxId },
    /// Give this back to [`FollowerCore::finish`]: the transaction is decided and applied
    /// (`failed`: a COMMIT of its failure branch).
    Finish {
        txid: TxnId,
        outcome: Outcome,
        failed: bool,
    },
    /// Send this answer on the stream the message came from.
    Reply(Reply),
    /// Refuse the leader: end the stream with FAILED_PRECONDITION and this message.
    Refuse(String),
    /// A new view in force is durable: delete every key this follower no longer
    /// [keeps](FollowerCore::keeps) (DESIGN §8) from its store.
    DropUnheld,
    /// A next view is durable: delete every key this follower does not
    /// [retain](FollowerCore::retains), the leftovers of an older membership.
    DropLeftovers,
}

/// The follower's protocol state. See the module documentation for the rules.
#[derive(Debug, Default)]
pub struct FollowerCore {
    cluster_id: Option<String>,
    /// This follower's member id, told to a leader in every fence report.
    member_id: Option<String>,
    /// The same, as placement takes it (built once: the views ask per key).
    me: Option<MemberId>,
    /// The newest view epoch a PREPARE has carried (DESIGN §7).
    view_epoch: u64,
    /// The newest view the leader handed this follower, and its placement.
    view: Option<(ViewRecord, View)>,
    /// The next view while the members change (DESIGN §8), and its placement.
    next: Option<(ViewRecord, View)>,
    /// Keys a decision wrote since this follower took the next view: a copy from
    /// another member, read before that decision, must not overwrite it (`copied`).
    written: HashSet<String>,
    /// True if the store holds data (or ever committed here): such a follower may join a
    /// cluster that has data.
    has_data: bool,
    max_epoch: u64,
    low_water: Option<TxId>,
    /// The epoch and mark as last journaled: when they rise, the next journal write
    /// carries a `meta` record too (in the same fsync), so a restart keeps them.
    journaled_marks: (u64, Option<TxId>),
    prepared: HashMap<TxnId, PreparedTxn>,
    /// key -> id of the transaction holding its lock.
    locks: HashMap<String, TxnId>,
    decided: HashMap<TxnId, Decided>,
    /// The cluster id was adopted by the message being handled and is not durable yet
    /// (undone by [`FollowerCore::journal_failed`]).
    adoption_unconfirmed: bool,
    /// Streams whose last legacy PREPARE this follower refused.
    legacy_refused: HashSet<StreamId>,
    /// The views as they were before the message being handled took one, not durable
    /// yet (restored by [`FollowerCore::journal_failed`]).
    views_unconfirmed: Option<Box<HeldViews>>,
}

/// The views a follower holds, and what goes with them.
#[derive(Debug, Clone)]
struct HeldViews {
    view: Option<(ViewRecord, View)>,
    next: Option<(ViewRecord, View)>,
    written: HashSet<String>,
}

impl FollowerCore {
    /// A core for a follower whose key-value store does (`has_data`) or does not hold data.
    pub fn new(has_data: bool) -> Self {
        FollowerCore {
            has_data,
            ..Default::default()
        }
    }

    /// Sets the member id this follower reports (`crate::member`).
    pub fn set_member_id(&mut self, id: String) {
        self.me = Some(MemberId(id.clone()));
        self.member_id = Some(id);
    }

    /// Handles one message from stream `stream`, with `store` a view of the key-value
    /// store as it is now (every effect handed out before carried out); returns the
    /// effects in write-ahead order.
    pub fn handle(
        &mut self,
        stream: StreamId,
        msg: LeaderMessage,
        store: StoreView,
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        let mut adopted_cluster = false;
        self.new_unit();
        if let Some(cluster) = &msg.cluster {
            match &self.cluster_id {
                Some(mine) if *mine != cluster.id => {
                    return vec![Effect::Refuse(format!(
                        "this follower belongs to cluster {mine}, not to the leader's cluster {}; \
                         point the leader at the right followers, or give this follower empty \
                         --journal-dir and --kv-dir",
                        cluster.id
                    ))];
                }
                None if cluster.has_data && !self.has_data => {
                    return vec![Effect::Refuse(format!(
                        "this follower is empty but cluster {} already has committed writes; \
                         seed it first: stop the cluster, copy the --kv-dir and --journal-dir of \
                         a healthy follower into this follower's directories, then restart",
                        cluster.id
                    ))];
                }
                None => {
                    self.cluster_id = Some(cluster.id.clone());
                    adopted_cluster = true;
                }
                Some(_) => {}
            }
        }
        self.max_epoch = self.max_epoch.max(msg.epoch);
        if let Some(mark) = msg.low_water {
            self.raise_low_water(mark);
        }
        let problem = msg.prepare_problem();
        let fence = msg.body == Body::Fence;
        let body = match (msg.is_legacy(), msg.body) {
            (
                false,
                Body::Prepare {
                    txn,
                    participants,
                    recipient,
                },
            ) => {
                let problem = problem.or_else(|| self.misdirected(recipient.as_ref()));
                let view_epoch = recipient.as_ref().map_or(0, |r| r.view_epoch);
                let named = (participants, view_epoch);
                self.prepare(msg.txid, txn, named, problem, store)
            }
            (true, Body::Prepare { txn, .. }) => self.prepare_legacy(stream, txn, problem),
            (false, Body::Decide { outcome, failed }) => self.decide(msg.txid, outcome, failed),
            (_, Body::Fence) => vec![Effect::Reply(Reply::Report(self.report(msg.epoch)))],
            (
                _,
                Body::View {
                    view,
                    next,
                    follows,
                },
            ) => self.take_view(view, next, follows),
            (true, Body::Decide { outcome, failed }) => {
                if self.legacy_refused.remove(&stream)
                    || !self.prepared.contains_key(&TxnId::Legacy)
                {
                    vec![Effect::Reply(Reply::Ack)]
                } else {
                    self.decide(TxnId::Legacy, outcome, failed)
                }
            }
        };
        // A fence is answered only once its epoch is durable: the report's "never
        // voted" must stay true after a restart.
        let journals = fence || body.iter().any(|e| matches!(e, Effect::Persist(_)));
        let marks = (self.max_epoch, self.low_water);
        if adopted_cluster || (journals && marks != self.journaled_marks) {
            effects.push(Effect::Persist(self.meta_record()));
            self.journaled_marks = marks;
            self.adoption_unconfirmed = adopted_cluster;
        }
        effects.extend(body);
        effects
    }

    /// PREPARE of `txid`, whose participants are `named` (their addresses, and the view
    /// it runs in).
    fn prepare(
        &mut self,
        txid: TxnId,
        txn: TxnSpec,
        (participants, view_epoch): Named,
        problem: Option<String>,
        store: StoreView,
    ) -> Vec<Effect> {
        let abort = vec![Effect::Reply(Reply::Vote(Outcome::Abort))];
        if let Some(prepared) = self.prepared.get(&txid) {
            // The same vote.
            let evaluation = prepared.evaluation.clone();
            return vec![Effect::Reply(vote(&prepared.txn, evaluation, store))];
        }
        if self.decided.contains_key(&txid) {
            return abort;
        }
        if let Some(id) = txid.ordered() {
            let below_mark = self.low_water.is_some_and(|mark| id < mark);
            if id.epoch < self.max_epoch || below_mark {
                return abort;
            }
        }
        if problem.is_some() || txn.keys().iter().any(|key| self.locks.contains_key(*key)) {
            // Remembered so that a retransmission gets the same vote; the leader is
            // bound to abort this transaction.
            self.decided.insert(
                txid,
                Decided {
                    outcome: Outcome::Abort,
                    failed: false,
                    journaled: false,
                },
            );
            return abort;
        }
        let reply = vote(&txn, None, store);
        let evaluation = match &reply {
            Reply::Evaluated(evaluation) => Some(evaluation.clone()),
            _ => None,
        };
        let failed = evaluation.as_ref().is_some_and(|e| !e.succeeded);
        let named = (participants.clone(), view_epoch);
        self.lock(&txid, &txn, named, failed, evaluation);
        vec![
            Effect::Persist(FollowerRecord::Prepare {
                txid,
                txn,
                participants,
                view_epoch,
                failed,
            }),
            Effect::Reply(reply),
        ]
    }

    /// Keeps `view` (the next view, if `next`) if it is newer than the one held
    /// (journaled first), and ACKs. A new view drops, after it is durable, the keys this
    /// follower holds in neither the view in force nor the next one
    /// ([`Effect::DropUnheld`]; a follower that missed a view may hold some).
    ///
    /// A new next view is refused unless this follower holds the view in force it
    /// `follows` (0: not said): one that missed that view (its journal write failed,
    /// and the stream still carried the next view) would otherwise judge what it gains,
    /// copies and drops against the wrong members, and drop keys it holds in the view
    /// in force. The leader sends the view in force again, then the next, on its next
    /// stream.
    fn take_view(&mut self, view: ViewRecord, next: bool, follows: u64) -> Vec<Effect> {
        let held = |slot: &Option<(ViewRecord, View)>| slot.as_ref().map_or(0, |(v, _)| v.epoch);
        let in_force = held(&self.view);
        if next
            && follows != 0
            && follows != in_force
            && view.epoch > held(&self.next).max(in_force)
        {
            return vec![Effect::Refuse(format!(
                "the next view {} follows view {follows}, but this follower holds view \
                 {in_force}: the leader must hand it the view in force first",
                view.epoch
            ))];
        }
        let mut effects = Vec::new();
        let before = HeldViews {
            view: self.view.clone(),
            next: self.next.clone(),
            written: self.written.clone(),
        };
        if self.hold_view(&view, next) {
            self.views_unconfirmed = Some(Box::new(before));
            effects.push(Effect::Persist(match next {
                true => FollowerRecord::NextView(view),
                false => FollowerRecord::View(view),
            }));
            effects.push(match next {
                true => Effect::DropLeftovers,
                false => Effect::DropUnheld,
            });
        }
        effects.push(Effect::Reply(Reply::Ack));
        effects
    }

    /// Holds `view` (as the next view, if `next`) if it is newer than the one held;
    /// returns whether it did. A view in force as new as the next one ends the change.
    fn hold_view(&mut self, view: &ViewRecord, next: bool) -> bool {
        let held = |slot: &Option<(ViewRecord, View)>| slot.as_ref().map_or(0, |(v, _)| v.epoch);
        let newer = view.epoch > held(&self.view) && (!next || view.epoch > held(&self.next));
        if !newer {
            return false;
        }
        self.view_epoch = self.view_epoch.max(view.epoch);
        let placement = View::new(
            view.epoch,
            view.replication,
            view.members.iter().map(|(id, _)| id),
        );
        if next {
            self.next = Some((view.clone(), placement));
            self.written.clear();
            let in_force = self.view.as_ref().map_or(0, |(v, _)| v.epoch);
            let unheld: Vec<(TxnId, String)> = self
                .prepared
                .iter()
                // One that runs in a next view (an earlier revision of this change)
                // reached the members in force too, maybe after they copied the key.
                .filter(|(_, p)| p.view_epoch <= in_force)
                .flat_map(|(txid, p)| {
                    p.txn
                        .keys()
                        .into_iter()
                        .map(move |k| (txid.clone(), k.to_string()))
                })
                .filter(|(_, key)| !self.holds_now(key))
                .collect();
            for (txid, key) in unheld {
                if let Some(prepared) = self.prepared.get_mut(&txid) {
                    prepared.not_applied.insert(key);
                }
            }
        } else {
            self.view = Some((view.clone(), placement));
            if held(&self.next) <= view.epoch {
                self.next = None;
                self.written.clear();
            }
        }
        true
    }

    /// Whether this follower holds `key` in the view in force (every key without one).
    fn holds_now(&self, key: &str) -> bool {
        match (&self.view, &self.me) {
            (Some((_, placement)), Some(me)) => placement.holds(me, key),
            _ => true,
        }
    }

    /// The next view's epoch, while the members change.
    pub fn next_view(&self) -> Option<&ViewRecord> {
        self.next.as_ref().map(|(view, _)| view)
    }

    /// Whether this follower gains no key in the next view, so its catch-up has
    /// nothing to copy: it holds every key in the view in force (a member of a view
    /// whose replication covers every member). Copying would only wait on the other
    /// members, among them perhaps an unreachable one on its way out (`catch_up.rs`).
    pub fn holds_every_key_now(&self) -> bool {
        match (&self.view, &self.me) {
            (Some((view, _)), Some(me)) => {
                view.replication >= view.members.len()
                    && view.members.iter().any(|(id, _)| id == me)
            }
            _ => false,
        }
    }

    /// The view in force, if the leader handed one.
    pub fn view(&self) -> Option<&ViewRecord> {
        self.view.as_ref().map(|(view, _)| view)
    }

    /// Whether this follower keeps `key`: it holds no view (classic tooling, or no view
    /// formed yet), or it holds `key` in the view in force or in the next one. A
    /// decision's write to a key it keeps not is not applied: it was a replica when the
    /// transaction began, and has since stopped being one (DESIGN §8).
    pub fn keeps(&self, key: &str) -> bool {
        let Some(me) = &self.me else {
            return true;
        };
        match (&self.view, &self.next) {
            (None, None) => true,
            (view, next) => [view, next]
                .into_iter()
                .flatten()
                .any(|(_, placement)| placement.holds(me, key)),
        }
    }

    /// Whether this follower's copy of `key` may stay in its store when it takes a next
    /// view ([`Effect::DropLeftovers`]): it holds `key` in the view in force, or holds it in the
    /// next view and a decision wrote it since then. A key it only gains in the next
    /// view is otherwise a leftover of an older membership, stale by definition: it is
    /// dropped, and the copy from the members in force fills it (a stale leftover of a
    /// key deleted meanwhile would otherwise come back).
    pub fn retains(&self, key: &str) -> bool {
        self.holds_now(key)
            || self.written.contains(key)
                && self
                    .next
                    .as_ref()
                    .is_some_and(|(_, next)| self.me.as_ref().is_some_and(|me| next.holds(me, key)))
    }

    /// Whether this follower, as a member of the view in force, streams `key` to member
    /// `to` catching up on the next view of epoch `epoch` (DESIGN §8): it holds `key`
    /// now and `to` holds it only in the next view. `Err` if this follower cannot serve
    /// the copy at all (it has not taken that next view, or is not a member in force).
    /// The caller must also wait until no prepared transaction holds the key
    /// ([`FollowerCore::is_locked`]): a copy must include every decision of the view in
    /// force, and after this follower took the next view it prepares no more of them.
    pub fn copies_to(&self, to: &MemberId, epoch: u64, key: &str) -> Result<bool, String> {
        let (Some((_, now)), Some((next_view, next)), Some(me)) =
            (&self.view, &self.next, &self.me)
        else {
            return Err(format!(
                "this follower holds no next view {epoch} yet (the leader hands it over the \
                 stream)"
            ));
        };
        if next_view.epoch != epoch {
            return Err(format!(
                "the next view here is {}, not {epoch}",
                next_view.epoch
            ));
        }
        if !now.members().contains(me) {
            return Err(format!(
                "this follower ({me}) is not a member of the view in force, so it holds no \
                 keys to copy"
            ));
        }
        let gained = next.holds(to, key) && !now.holds(to, key);
        Ok(gained && now.holds(me, key))
    }

    /// Whether this follower is a member of the view in force it holds.
    pub fn is_member_in_force(&self) -> bool {
        match (&self.view, &self.me) {
            (Some((_, placement)), Some(me)) => placement.members().contains(me),
            _ => false,
        }
    }

    /// Whether a prepared transaction holds `key`'s lock.
    pub fn is_locked(&self, key: &str) -> bool {
        self.locks.contains_key(key)
    }

    /// Of `entries` copied from another member for the next view of epoch `epoch`
    /// (`(key, value, version)`), those to write here: a copy never replaces a newer
    /// version, nor a key a decision wrote since this follower took the next view (the
    /// copy may have been read before that decision, and the key may have been
    /// deleted since).
    pub fn copied<'e>(
        &self,
        epoch: u64,
        entries: &'e [(String, String, TxId)],
        store: StoreView,
    ) -> Result<Vec<&'e (String, String, TxId)>, String> {
        match &self.next {
            Some((next, _)) if next.epoch == epoch => {}
            _ => {
                return Err(format!(
                    "this follower is no longer catching up on view {epoch}"
                ))
            }
        }
        Ok(entries
            .iter()
            .filter(|(key, _, version)| {
                !self.written.contains(key)
                    && self.keeps(key)
                    && store(key).is_none_or(|held| held.version < *version)
            })
            .collect())
    }

    /// Whether a client's direct read of `key` may be answered from this follower's
    /// copy (DESIGN §7): not if the view it holds does not place `key` here, since its
    /// copy, if any, is no replica's. A follower that holds no view (classic tooling
    /// drives it, or its leader has formed none yet) answers for every key.
    pub fn check_direct_read(&self, key: &str) -> Result<(), String> {
        let (Some((view, placement)), Some(me)) = (&self.view, &self.me) else {
            return Ok(());
        };
        if let Some((next, next_placement)) = &self.next {
            if placement.holds(me, key) && !next_placement.holds(me, key) {
                // Once the next view is in force the key's writes skip this follower,
                // which may not hear of it at once: stop answering now (DESIGN §8).
                return Err(format!(
                    "key {} moves off this follower in view {} (DESIGN §8): read it through \
                     the leader",
                    crate::limits::quote_key(key),
                    next.epoch
                ));
            }
        }
        if placement.holds(me, key) {
            return Ok(());
        }
        Err(format!(
            "this follower does not hold key {} in view {} (each key lives on {} of the {} \
             followers, DESIGN §7): read it through the leader",
            crate::limits::quote_key(key),
            view.epoch,
            view.replication.min(view.members.len()),
            view.members.len()
        ))
    }

    /// Why a PREPARE meant for `recipient` is not for this follower, if it is not
    /// (DESIGN §7): it names another member (a different process answers at that
    /// member's address), or a view older than one this follower has seen. A PREPARE
    /// that names no member is not refused for it.
    fn misdirected(&mut self, recipient: Option<&Recipient>) -> Option<String> {
        let to = recipient?;
        if let Some(mine) = &self.member_id {
            if to.member_id.0 != *mine {
                let why = format!(
                    "this PREPARE is for member {}, and this follower is member {mine}",
                    to.member_id
                );
                tracing::warn!(reason = %why, "PREPARE refused");
                return Some(why);
            }
        }
        if to.view_epoch < self.view_epoch {
            let why = format!(
                "this PREPARE runs in view {}, and this follower has seen view {}",
                to.view_epoch, self.view_epoch
            );
            tracing::warn!(reason = %why, "PREPARE refused");
            return Some(why);
        }
        self.view_epoch = to.view_epoch;
        None
    }

    /// Locks every key of `txn` for `txid` and remembers it prepared.
    fn lock(
        &mut self,
        txid: &TxnId,
        txn: &TxnSpec,
        (participants, view_epoch): Named,
        failed: bool,
        evaluation: Option<Evaluation>,
    ) {
        for key in txn.keys() {
            self.locks.insert(key.to_string(), txid.clone());
        }
        self.prepared.insert(
            txid.clone(),
            PreparedTxn {
                txn: txn.clone(),
                participants,
                view_epoch,
                failed,
                evaluation,
                not_applied: HashSet::new(),
            },
        );
    }

    fn prepare_legacy(
        &mut self,
        stream: StreamId,
        txn: TxnSpec,
        problem: Option<String>,
    ) -> Vec<Effect> {
        let same_as_pending = self
            .prepared
            .get(&TxnId::Legacy)
            .map(|pending| pending.txn == txn);
        let refuse = match same_as_pending {
            Some(true) => {
                self.legacy_refused.remove(&stream);
                return vec![Effect::Reply(Reply::Vote(Outcome::Commit))];
            }
            Some(false) => true,
            None => problem.is_some() || txn.keys().iter().any(|key| self.locks.contains_key(*key)),
        };
        if refuse {
            self.legacy_refused.insert(stream);
            return vec![Effect::Reply(Reply::Vote(Outcome::Abort))];
        }
        self.legacy_refused.remove(&stream);
        self.lock(&TxnId::Legacy, &txn, Default::default(), false, None);
        vec![
            Effect::Persist(FollowerRecord::Prepare {
                txid: TxnId::Legacy,
                txn,
                participants: Vec::new(),
                view_epoch: 0,
                failed: false,
            }),
            Effect::Reply(Reply::Vote(Outcome::Commit)),
        ]
    }

    /// The decision path, shared by live messages and journal replay.
    fn decide(&mut self, txid: TxnId, outcome: Outcome, failed: bool) -> Vec<Effect> {
        let mut effects = Vec::new();
        if let Some(prepared) = self.prepared.get(&txid) {
            effects.push(Effect::Persist(FollowerRecord::Decide {
                txid: txid.clone(),
                outcome,
                failed,
            }));
            if outcome == Outcome::Commit {
                let version = txid.ordered().unwrap_or_default();
                let applies: Vec<Effect> = prepared
                    .txn
                    .writes(!failed)
                    .into_iter()
                    .filter(|(key, _)| self.keeps(key) && !prepared.not_applied.contains(*key))
                    .map(|(key, value)| Effect::Apply {
                        key: key.to_string(),
                        op: match value {
                            Some(value) => Op::Put(value.to_string()),
                            None => Op::Delete,
                        },
                        version,
                    })
                    .collect();
                if self.next.is_some() {
                    for apply in &applies {
                        if let Effect::Apply { key, .. } = apply {
                            self.written.insert(key.clone());
                        }
                    }
                }
                effects.extend(applies);
            }
            effects.push(Effect::Finish {
                txid,
                outcome,
                failed,
            });
        } else if let Some(&known) = self.decided.get(&txid) {
            if known.outcome != outcome {
                tracing::error!(%txid, ?known, ?outcome, "leader sent a decision that contradicts an earlier one; keeping the earlier");
            }
            if !known.journaled && !self.is_below_low_water(&txid) {
                let outcome = known.outcome;
                effects.push(Effect::Persist(FollowerRecord::Decide {
                    txid: txid.clone(),
                    outcome,
                    failed,
                }));
                effects.push(Effect::Finish {
                    txid,
                    outcome,
                    failed: known.failed,
                });
            }
        } else if !self.is_below_low_water(&txid) {
            // Unknown: remember it, durably, so a late PREPARE of it is refused.
            effects.push(Effect::Persist(FollowerRecord::Decide {
                txid: txid.clone(),
                outcome,
                failed,
            }));
            effects.push(Effect::Finish {
                txid,
                outcome,
                failed,
            });
        }
        effects.push(Effect::Reply(Reply::Ack));
        effects
    }

    /// What this follower knows of the transactions of epochs before `epoch` (a fence's
    /// answer): sorted, so the answer is a function of the state.
    fn report(&self, epoch: u64) -> InquiryReport {
        let older = |txid: &TxnId| txid.ordered().filter(|id| id.epoch < epoch);
        let mut report = InquiryReport {
            low_water: self.low_water,
            member_id: self.member_id.clone(),
            ..InquiryReport::default()
        };
        for (txid, txn) in &self.prepared {
            if let Some(id) = older(txid) {
                report.prepared.push(ReportedTxn {
                    txid: id,
                    key: txn
                        .txn
                        .keys()
                        .first()
                        .map_or_else(String::new, |k| k.to_string()),
                    participants: txn.participants.clone(),
                    failed: txn.failed,
                });
            }
        }
        for (txid, decided) in &self.decided {
            if let Some(id) = older(txid) {
                match decided.outcome {
                    Outcome::Commit => report.committed.push(id),
                    Outcome::Abort => report.aborted.push(id),
                }
                if decided.outcome == Outcome::Commit && decided.failed {
                    report.committed_failed.push(id);
                }
            }
        }
        report.prepared.sort_by_key(|t| t.txid);
        report.committed.sort();
        report.committed_failed.sort();
        report.aborted.sort();
        report
    }

    /// Called by the runtime for [`Effect::Finish`], once the decision is durable and
    /// applied: forgets the prepared state and releases the key's lock.
    /// Returns whether it ended a prepared transaction (not just a marker).
    pub fn finish(&mut self, txid: &TxnId, outcome: Outcome, failed: bool) -> bool {
        let was_prepared = self.prepared.contains_key(txid);
        if let Some(prepared) = self.prepared.remove(txid) {
            self.unlock(txid, &prepared.txn);
            if outcome == Outcome::Commit {
                self.has_data = true;
            }
        }
        if *txid != TxnId::Legacy && !self.is_below_low_water(txid) {
            self.decided.insert(
                txid.clone(),
                Decided {
                    outcome,
                    failed,
                    journaled: true,
                },
            );
        }
        was_prepared
    }

    /// Releases the locks `txid` holds on the keys of `txn`.
    fn unlock(&mut self, txid: &TxnId, txn: &TxnSpec) {
        for key in txn.keys() {
            if self.locks.get(key).is_some_and(|owner| owner == txid) {
                self.locks.remove(key);
            }
        }
    }

    /// Called by the runtime when the journal could not make a PREPARE durable: the
    /// transaction is dropped and the vote becomes ABORT.
    pub fn prepare_failed(&mut self, txid: &TxnId) -> Reply {
        self.journal_failed();
        if let Some(prepared) = self.prepared.remove(txid) {
            self.unlock(txid, &prepared.txn);
        }
        if *txid != TxnId::Legacy {
            self.decided.insert(
                txid.clone(),
                Decided {
                    outcome: Outcome::Abort,
                    failed: false,
                    journaled: false,
                },
            );
        }
        Reply::Vote(Outcome::Abort)
    }

    /// Called by the runtime when a journal write of this message's records failed: what
    /// the core believed durable is not. An adopted cluster id is dropped (the next
    /// message adopts it again), so is a view taken (the leader sends it again, and it
    /// is taken, journaled and its keys dropped then), and the next write carries the
    /// metadata again.
    pub fn journal_failed(&mut self) {
        if std::mem::take(&mut self.adoption_unconfirmed) {
            self.cluster_id = None;
        }
        if let Some(before) = self.views_unconfirmed.take() {
            self.view = before.view;
            self.next = before.next;
            self.written = before.written;
        }
        self.journaled_marks = (0, None);
    }

    /// Rebuilds state from one journal record; returns the effects to carry out (only
    /// [`Effect::Apply`] and [`Effect::Finish`]: a replayed decision is re-applied, which
    /// is idempotent; and [`Effect::DropUnheld`] for a view in force: the replayed
    /// writes so far of keys it took away are not to be re-applied).
    pub fn replay(&mut self, record: FollowerRecord) -> Vec<Effect> {
        match record {
            FollowerRecord::Meta {
                cluster_id,
                max_epoch,
                low_water,
            } => {
                if cluster_id.is_some() {
                    self.cluster_id = cluster_id;
                }
                self.max_epoch = self.max_epoch.max(max_epoch);
                if let Some(mark) = low_water {
                    self.raise_low_water(mark);
                }
                self.journaled_marks = (self.max_epoch, self.low_water);
                Vec::new()
            }
            FollowerRecord::Prepare {
                txid,
                txn,
                participants,
                view_epoch,
                failed,
            } => {
                let named = (participants, view_epoch);
                self.lock(&txid, &txn, named, failed, None);
                Vec::new()
            }
            FollowerRecord::Decide {
                txid,
                outcome,
                failed,
            } => self
                .decide(txid, outcome, failed)
                .into_iter()
                .filter(|e| matches!(e, Effect::Apply { .. } | Effect::Finish { .. }))
                .collect(),
            FollowerRecord::View(view) => match self.hold_view(&view, false) {
                // The keys it no longer held were dropped then: a decision replayed
                // before this record must not bring one back.
                true => vec![Effect::DropUnheld],
                false => Vec::new(),
            },
            FollowerRecord::NextView(view) => match self.hold_view(&view, true) {
                true => vec![Effect::DropLeftovers],
                false => Vec::new(),
            },
        }
    }

    /// Ends the per-stream state of a closed stream.
    pub fn stream_closed(&mut self, stream: StreamId) {
        self.legacy_refused.remove(&stream);
    }

    /// Whether a read the leader forwards for `member` (empty: for any) may be answered
    /// here: not if this follower is another member (DESIGN §7), since its copy is not
    /// the one the leader means to read.
    pub fn check_read_for(&self, member: &str) -> Result<(), String> {
        match &self.member_id {
            Some(mine) if !member.is_empty() && member != mine => Err(format!(
                "this read is for member {member}, and this follower is member {mine}"
            )),
            _ => Ok(()),
        }
    }

    /// Whether a direct read of `key` may be answered now; if not, why (the key has an
    /// undecided transaction: answering with the old value could be stale).
    pub fn check_readable(&self, key: &str) -> Result<(), String> {
        match self.locks.get(key) {
            None => Ok(()),
            Some(TxnId::Legacy) => Err("key has an undecided legacy transaction".to_string()),
            Some(txid) => Err(format!("key has an undecided transaction {txid}")),
        }
    }

    /// The records a checkpoint must keep: the metadata, the decided ids a late PREPARE
    /// could still name, and every undecided transaction.
    pub fn live_records(&self) -> Vec<FollowerRecord> {
        let mut records = vec![self.meta_record()];
        records.extend(
            self.view
                .iter()
                .map(|(view, _)| FollowerRecord::View(view.clone())),
        );
        records.extend(
            self.next
                .iter()
                .map(|(view, _)| FollowerRecord::NextView(view.clone())),
        );
        let mut decided: Vec<_> = self.decided.iter().collect();
        decided.sort_by(|a, b| a.0.cmp(b.0));
        records.extend(decided.into_iter().map(|(txid, d)| FollowerRecord::Decide {
            txid: txid.clone(),
            outcome: d.outcome,
            failed: d.failed,
        }));
        let mut prepared: Vec<_> = self.prepared.iter().collect();
        prepared.sort_by(|a, b| a.0.cmp(b.0));
        records.extend(
            prepared
                .into_iter()
                .map(|(txid, prepared)| FollowerRecord::Prepare {
                    txid: txid.clone(),
                    txn: prepared.txn.clone(),
                    participants: prepared.participants.clone(),
                    view_epoch: prepared.view_epoch,
                    failed: prepared.failed,
                }),
        );
        records
    }

    /// The undecided transactions, for status and tests.
    pub fn prepared(&self) -> &HashMap<TxnId, PreparedTxn> {
        &self.prepared
    }

    /// The newest leader epoch this follower has seen.
    pub fn max_epoch(&self) -> u64 {
        self.max_epoch
    }

    /// This follower's member id, once set.
    pub fn member_id(&self) -> Option<&str> {
        self.member_id.as_deref()
    }

    /// The cluster this follower belongs to, if it joined one.
    pub fn cluster_id(&self) -> Option<&str> {
        self.cluster_id.as_deref()
    }

    fn meta_record(&self) -> FollowerRecord {
        FollowerRecord::Meta {
            cluster_id: self.cluster_id.clone(),
            max_epoch: self.max_epoch,
            low_water: self.low_water,
        }
    }

    fn raise_low_water(&mut self, mark: TxId) {
        if self.low_water.is_some_and(|current| current >= mark) {
            return;
        }
        self.low_water = Some(mark);
        self.decided
            .retain(|txid, _| txid.ordered().is_none_or(|id| id >= mark));
    }

    /// What this follower answers a participant asking about `txid` (cooperative
    /// termination, DESIGN §9; the rule is `termination.rs`'s), asked as member
    /// `member` (`""`: the asker knows no id). Refusing a transaction it never voted on
    /// is recording it aborted, as a decision for a transaction it never prepared is:
    /// the effects make that durable, and the answer goes out where their
    /// [`Effect::Reply`] stands (after them).
    pub fn answer_termination(&mut self, txid: TxId, member: &str) -> (Known, Vec<Effect>) {
        self.new_unit();
        let as_itself = !member.is_empty() && self.member_id.as_deref() == Some(member);
        if !member.is_empty() && !as_itself {
            return (Known::Unknown, Vec::new());
        }
        let txid = TxnId::from(txid);
        if self.prepared.contains_key(&txid) {
            return (Known::Voted, Vec::new());
        }
        match self.decided.get(&txid).copied() {
            Some(Decided {
                outcome: Outcome::Commit,
                failed,
                ..
            }) => (Known::Committed { failed }, Vec::new()),
            Some(Decided {
                journaled: true, ..
            }) => (Known::Aborted, Vec::new()),
            // Its own ABORT vote, not journaled yet: made durable first.
            Some(_) => (Known::Aborted, self.decide(txid, Outcome::Abort, false)),
            None if self.is_below_low_water(&txid) || !as_itself => (Known::Unknown, Vec::new()),
            // Never voted: refused durably, so it never will.
            None => (Known::Aborted, self.decide(txid, Outcome::Abort, false)),
        }
    }

    /// The member id of each participant of `prepared`, in its order, as the view it
    /// ran in names them, if this follower still holds that view (in force or next):
    /// whom to ask for its decision (`termination.rs`). `""` where it cannot tell (no
    /// such view any more, or a classic PREPARE): asked as no member, a participant
    /// refuses nothing.
    pub fn participant_ids(&self, prepared: &PreparedTxn) -> Vec<String> {
        let view = [&self.view, &self.next]
            .into_iter()
            .flatten()
            .map(|(view, _)| view)
            .find(|view| prepared.view_epoch != 0 && view.epoch == prepared.view_epoch);
        prepared
            .participants
            .iter()
            .map(|address| {
                let member = view.and_then(|v| v.members.iter().find(|(_, a)| a == address));
                member.map(|(id, _)| id.0.clone()).unwrap_or_default()
            })
            .collect()
    }

    /// Starts a new unit of effects: what [`FollowerCore::journal_failed`] undoes is
    /// only what the unit handed out last changed (an earlier unit's view, long
    /// durable, must stay).
    fn new_unit(&mut self) {
        self.adoption_unconfirmed = false;
        self.views_unconfirmed = None;
    }

    fn is_below_low_water(&self, txid: &TxnId) -> bool {
        match (txid.ordered(), self.low_water) {
            (Some(id), Some(mark)) => id < mark,
            _ => false,
        }
    }
}

/// The vote on `txn`, whose keys `store` shows as they are under its locks: COMMIT, with
/// what the compares and GETs found (`evaluation`, if already known) for a transaction
/// that has any.
fn vote(txn: &TxnSpec, evaluation: Option<Evaluation>, store: StoreView) -> Reply {
    if txn.single_write().is_some() {
        Reply::Vote(Outcome::Commit)
    } else {
        Reply::Evaluated(evaluation.unwrap_or_else(|| txn.evaluate(store)))
    }
}

#[cfg(test)]
#[path = "follower_core_tests.rs"]
mod tests;
