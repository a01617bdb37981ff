//! A Raft message from another leader (`pkg/raft/network.rs`): the JSON a `RaftRequest`
//! carries, decoded as each of the three requests the way the server decodes it, then
//! checked against Raft's rules (`pkg/raft/validate.rs`) as the server checks it before
//! openraft sees it. Never a panic; a message that passes still passes once encoded and
//! decoded again, and encodes the same.
//!
//! What a message that passes carries then goes where a standby takes it when it takes
//! over (`pkg/tpc/standby.rs`): the entries applied to the control state (or the
//! snapshot's records installed), read as leader records, and the leader rebuilt from
//! them (`LeaderCore::recover`): an error, never a panic.
//!
//! `fuzz/seeds/raft_message/` holds a correct message of each kind, to start from:
//! `cargo +nightly fuzz run raft_message fuzz/corpus/raft_message fuzz/seeds/raft_message`.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::EntryPayload;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tpc::journal::Record;
use tpc::raft::validate;
use tpc::raft::{ControlState, Group, NodeId, TypeConfig};
use tpc::tpc::leader_core::LeaderCore;
use tpc::tpc::records::LeaderRecord;

/// Decodes `json` as the server does and checks it; a message that passes is returned,
/// after checking that it reads back the same.
fn check<T: DeserializeOwned + Serialize>(
    group: &Group,
    json: &[u8],
    rules: impl Fn(&Group, &T) -> Result<(), String>,
) -> Option<T> {
    let message: T = serde_json::from_slice(json).ok()?;
    rules(group, &message).ok()?;
    let again = serde_json::to_vec(&message).expect("a decoded message encodes");
    let back: T = serde_json::from_slice(&again).expect("an encoded message decodes");
    assert_eq!(rules(group, &back), Ok(()), "passed, then refused once re-encoded");
    assert_eq!(serde_json::to_vec(&back).expect("encodes"), again);
    Some(message)
}

/// A standby that takes over with `records` as its control state: each read as a
/// leader record (a bad one refuses the takeover), then the leader rebuilt.
fn take_over(records: Vec<Record>) {
    let Ok(records) = records
        .into_iter()
        .map(LeaderRecord::try_from)
        .collect::<Result<Vec<_>, String>>()
    else {
        return;
    };
    let followers: Vec<String> = ["f1", "f2", "f3"].map(String::from).into();
    for replication in 1..=followers.len() {
        let _ = LeaderCore::recover(
            records.clone(),
            followers.clone(),
            replication,
            Duration::from_millis(100),
            || "c".to_string(),
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let peers = ["b:2".to_string(), "c:3".to_string()];
    let followers = ["f1", "f2", "f3"].map(String::from);
    let group = Group::new("a:1", &peers, &followers, 2).expect("a group");

    if let Some(m) = check::<AppendEntriesRequest<TypeConfig>>(&group, data, |g, m| {
        validate::append_entries(g, m)
    }) {
        let mut state = ControlState::default();
        for entry in &m.entries {
            if let EntryPayload::Normal(control) = &entry.payload {
                state.apply(entry.log_id.leader_id.term, control);
            }
        }
        take_over(state.records);
    }

    let _ = check::<VoteRequest<NodeId>>(&group, data, |g, m| validate::vote_request(g, m));

    if let Some(m) = check::<InstallSnapshotRequest<TypeConfig>>(&group, data, |g, m| {
        validate::install_snapshot(g, m)
    }) {
        // A snapshot in one chunk: what the state machine installs.
        if m.offset == 0 && m.done {
            if let Ok(records) = serde_json::from_slice::<Vec<Record>>(&m.data) {
                take_over(records);
            }
        }
    }
});
