use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;

use super::*;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let log = LogStore::open(&dir.path().join("raft")).expect("open the log");
        let sm = StateMachine::open(&dir.path().join("raft-snapshot")).expect("open the state");
        Ok((dir, log, sm))
    }
}

#[test]
fn the_storage_passes_openrafts_conformance_suite() {
    Suite::test_all(Builder).expect("openraft storage suite");
}

#[test]
fn a_group_numbers_the_leaders_alike_on_every_leader() {
    let followers = vec!["f1".to_string()];
    let a = Group::new("b:2", &["a:1".into(), "c:3".into()], &followers, 3).unwrap();
    let b = Group::new("a:1", &["c:3".into(), "b:2".into()], &followers, 3).unwrap();
    assert_eq!(a.leaders, b.leaders);
    assert_eq!(a.fingerprint, b.fingerprint);
    assert_eq!((a.me, b.me), (2, 1));
    assert_eq!(a.members(), b.members());
    assert_eq!(a.address(3), Some("c:3"));
    assert_eq!(a.address(0), None);
    let other = Group::new("a:1", &["c:3".into(), "b:2".into()], &followers, 2).unwrap();
    assert_ne!(a.fingerprint, other.fingerprint, "replication is part of the group");
    let twice = Group::new("a:1", &["a:1".into()], &followers, 3);
    assert!(twice.unwrap_err().contains("named twice"));
}

#[test]
fn the_control_state_is_the_journal_it_replicates() {
    let mut state = ControlState::default();
    let record = |s: &str| vec![s.to_string()];
    let entry = |rewrite, records| ControlEntry {
        term: 2,
        rewrite,
        records,
    };
    assert!(state.apply(2, &entry(false, vec![record("a"), record("b")])));
    assert!(state.apply(2, &entry(false, vec![record("c")])));
    assert_eq!(state.records, vec![record("a"), record("b"), record("c")]);
    assert!(state.apply(2, &entry(true, vec![record("live")])));
    assert_eq!(state.records, vec![record("live")], "a checkpoint replaces");
}

#[test]
fn an_entry_proposed_for_another_term_is_not_applied() {
    // A leader active in term 2 queued it; it reached the log in term 4, after the
    // leader had stood down and been elected again.
    let mut state = ControlState::default();
    let stale = ControlEntry {
        term: 2,
        rewrite: true,
        records: vec![],
    };
    state.records = vec![vec!["meta".to_string()]];
    assert!(!state.apply(4, &stale));
    assert_eq!(state.records, vec![vec!["meta".to_string()]]);
}
