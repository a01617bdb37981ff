//! Checks on what another leader sends, before openraft sees it.
//!
//! openraft trusts its peers: a message whose log ids do not follow each other, or
//! that names a node outside the group, trips its internal assertions and stops the
//! node (we saw a hand-made `AppendEntries` do it). So every message is checked here
//! first, against the rules a correct leader always keeps: every node named is one of
//! the group's; no log id is of a term after the sender's vote; entries follow each
//! other from the previous log id, in non-decreasing terms; the only membership is the
//! group's own, which never changes. A message that breaks one is refused with the
//! rule it broke. (Until mutual TLS, issue 15, a peer that keeps these rules and lies
//! is still believed: Raft is among trusted leaders.)

use std::collections::BTreeSet;

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{EntryPayload, LogId, Membership, Vote};

use super::{Group, NodeId, TypeConfig};

/// The largest snapshot a leader accepts, in bytes.
pub const MAX_SNAPSHOT_BYTES: u64 = 256 << 20;

fn node(group: &Group, id: NodeId, what: &str) -> Result<(), String> {
    match group.address(id) {
        Some(_) => Ok(()),
        None => Err(format!(
            "{what} names node {id}, not one of the {} leaders",
            group.leaders.len()
        )),
    }
}

fn vote(group: &Group, vote: &Vote<NodeId>) -> Result<u64, String> {
    node(group, vote.leader_id.node_id, "the vote")?;
    Ok(vote.leader_id.term)
}

fn log_id(group: &Group, id: &LogId<NodeId>, term: u64, what: &str) -> Result<(), String> {
    // Term 0, node 0: the entry `initialize` writes before any election.
    if id.leader_id.term > 0 || id.leader_id.node_id > 0 {
        node(group, id.leader_id.node_id, what)?;
    }
    if id.leader_id.term > term {
        return Err(format!(
            "{what} is of term {}, after the sender's term {term}",
            id.leader_id.term
        ));
    }
    Ok(())
}

fn membership(group: &Group, m: &Membership<NodeId, openraft::BasicNode>) -> Result<(), String> {
    let ids: BTreeSet<NodeId> = group.members().keys().copied().collect();
    if *m != Membership::new(vec![ids], group.members()) {
        return Err("a membership other than the group's own (the leaders never change)".into());
    }
    Ok(())
}

/// Checks an `AppendEntries` request.
pub fn append_entries(group: &Group, m: &AppendEntriesRequest<TypeConfig>) -> Result<(), String> {
    let term = vote(group, &m.vote)?;
    if let Some(prev) = &m.prev_log_id {
        log_id(group, prev, term, "prev_log_id")?;
    }
    if let Some(commit) = &m.leader_commit {
        log_id(group, commit, term, "leader_commit")?;
    }
    let mut last = m.prev_log_id;
    for entry in &m.entries {
        log_id(group, &entry.log_id, term, "an entry")?;
        let expected = last.map_or(0, |l| l.index + 1);
        if entry.log_id.index != expected {
            return Err(format!(
                "entry {} does not follow {} (expected index {expected})",
                entry.log_id.index,
                last.map_or("the start".to_string(), |l| l.index.to_string())
            ));
        }
        if last.is_some_and(|l| l.leader_id.term > entry.log_id.leader_id.term) {
            return Err(format!("entry {} goes back a term", entry.log_id.index));
        }
        if let EntryPayload::Membership(m) = &entry.payload {
            membership(group, m)?;
        }
        last = Some(entry.log_id);
    }
    Ok(())
}

/// Checks a `Vote` request.
pub fn vote_request(group: &Group, m: &VoteRequest<NodeId>) -> Result<(), String> {
    let term = vote(group, &m.vote)?;
    if let Some(last) = &m.last_log_id {
        log_id(group, last, term, "last_log_id")?;
    }
    Ok(())
}

/// Checks an `InstallSnapshot` request (a chunk).
pub fn install_snapshot(
    group: &Group,
    m: &InstallSnapshotRequest<TypeConfig>,
) -> Result<(), String> {
    let term = vote(group, &m.vote)?;
    if let Some(last) = &m.meta.last_log_id {
        log_id(group, last, term, "the snapshot's last log id")?;
    }
    membership(group, m.meta.last_membership.membership())?;
    let end = m.offset.checked_add(m.data.len() as u64);
    if end.is_none_or(|end| end > MAX_SNAPSHOT_BYTES) {
        return Err(format!(
            "a snapshot chunk past {} MiB",
            MAX_SNAPSHOT_BYTES >> 20
        ));
    }
    Ok(())
}
