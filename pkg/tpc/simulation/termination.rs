//! Cooperative termination (DESIGN §9), as `follower_termination.rs` carries it out
//! around the cores: a follower holding a prepared transaction asks every other
//! participant its PREPARE named ([`FollowerCore::answer_termination`], whose refusal
//! is carried out like any batch, with its disk faults and crashes; an answer counts
//! only once its refusal is durable), combines the answers
//! ([`termination::decision`]) and, if they decide, takes the decision as it would take
//! the leader's. The adversary may ask at any moment, not only after a timeout, with
//! the leader up or down: asking early must be as safe as asking late.

use super::follower::{Batch, Handled, Source};
use super::*;
use crate::tpc::termination::{self, Known};

impl Sim {
    /// The prepared transactions follower `f` may ask about: `(txid, participants,
    /// their ids)`.
    fn waiting(&self, f: usize) -> Vec<(TxId, Vec<String>, Vec<String>)> {
        let Some(core) = &self.followers[f].core else {
            return Vec::new();
        };
        let mut waiting: Vec<_> = core
            .prepared()
            .iter()
            .filter(|(_, p)| !p.participants.is_empty())
            .filter_map(|(txid, p)| {
                Some((
                    txid.ordered()?,
                    p.participants.clone(),
                    core.participant_ids(p),
                ))
            })
            .collect();
        waiting.sort();
        waiting
    }

    /// The adversary's moves that ask for a decision: likelier with no leader.
    pub(super) fn termination_options(&self, options: &mut Vec<(u32, Action)>) {
        let weight = if self.leader.is_none() { 20 } else { 2 };
        for f in 0..FOLLOWERS {
            if !self.waiting(f).is_empty() {
                options.push((weight, Action::Terminate(f)));
            }
        }
    }

    /// Follower `f` asks the other participants about one of its prepared transactions.
    pub(super) fn terminate(&mut self, f: usize) -> Checked {
        let waiting = self.waiting(f);
        if waiting.is_empty() {
            return Ok(());
        }
        let (txid, participants, ids) = waiting[self.rng.random_range(0..waiting.len())].clone();
        let me = member_id(f);
        let mut answers = Vec::new();
        for (i, participant) in participants.iter().enumerate() {
            let id = ids.get(i).cloned().unwrap_or_default();
            if id == me {
                continue;
            }
            let Some(p) = (0..FOLLOWERS).find(|&p| name(p) == *participant) else {
                continue;
            };
            let known = self.answer_asked(p, txid, &id)?;
            answers.push(known);
        }
        let decided = termination::decision(answers.iter().copied());
        self.log(|| format!("follower {f} asks about {txid}: {answers:?} -> {decided:?}"));
        if let Some((outcome, failed)) = decided {
            self.stats.terminated += 1;
            self.followers[f].replays.push_back(LeaderMessage {
                txid: txid.into(),
                body: Body::Decide { outcome, failed },
                epoch: 0,
                low_water: None,
                cluster: None,
                protocol: super::super::message::PROTOCOL,
            });
        }
        Ok(())
    }

    /// What follower `p` answers about `txid`, asked as `id`: `Unknown` if it is down,
    /// or its refusal did not become durable.
    fn answer_asked(&mut self, p: usize, txid: TxId, id: &str) -> Result<Known, Failure> {
        let Some(core) = self.followers[p].core.as_mut() else {
            return Ok(Known::Unknown);
        };
        let (known, effects) = core.answer_termination(txid, id);
        if effects.is_empty() {
            return Ok(known);
        }
        let mut batch = Batch::default();
        let core = self.followers[p].core.as_ref().expect("up");
        batch.push(
            core,
            Handled {
                source: Source::Replay,
                txid: txid.into(),
                is_decision: true,
                effects,
            },
        );
        if !self.carry_out(p, batch)? {
            return Ok(Known::Unknown);
        }
        // Durable if asking again needs nothing more (a failed write left no trace).
        let Some(core) = self.followers[p].core.as_mut() else {
            return Ok(Known::Unknown);
        };
        Ok(match core.answer_termination(txid, id) {
            (again, effects) if effects.is_empty() => again,
            _ => Known::Unknown,
        })
    }
}
