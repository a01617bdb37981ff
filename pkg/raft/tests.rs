use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;

use super::validate;
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
    assert_ne!(
        a.fingerprint, other.fingerprint,
        "replication is part of the group"
    );
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

/// One leader's Raft node serving over gRPC on a Unix socket, from files in `dir`.
struct Node {
    raft: Raft,
    state: StateMachine,
    server: tokio::task::JoinHandle<()>,
}

async fn start_node(dir: &std::path::Path, group: Group) -> Node {
    let group = std::sync::Arc::new(group);
    let log = LogStore::open(&dir.join("raft")).unwrap();
    let pristine = log.is_pristine();
    let state = StateMachine::open(&dir.join("raft-snapshot")).unwrap();
    let mut config = config();
    config.snapshot_policy = openraft::SnapshotPolicy::LogsSinceLast(5);
    config.max_in_snapshot_log_to_keep = 0;
    let config = std::sync::Arc::new(config.validate().unwrap());
    let network = Network::new(group.clone());
    let raft = Raft::new(group.me, config, network, log, state.clone())
        .await
        .unwrap();
    let address: crate::net::Address = group.address(group.me).unwrap().parse().unwrap();
    let listener = crate::net::Listener::bind(&crate::net::ListenAddr::Addr(address))
        .await
        .unwrap();
    let service = crate::proto::rpc::leader_raft_server::LeaderRaftServer::new(RaftService::new(
        raft.clone(),
        group.clone(),
    ));
    let router = tonic::transport::Server::builder().add_service(service);
    let server = tokio::spawn(async move {
        let _ = listener.serve(router, std::future::pending()).await;
    });
    if pristine {
        let _ = raft.initialize(group.members()).await;
    }
    Node {
        raft,
        state,
        server,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_was_away_catches_up_from_a_snapshot_over_grpc() {
    let root = tempfile::tempdir().unwrap();
    let addrs: Vec<String> = (1..=3)
        .map(|i| format!("unix:{}", root.path().join(format!("l{i}.sock")).display()))
        .collect();
    let group = |i: usize| {
        let peers: Vec<String> = (0..3)
            .filter(|&j| j != i)
            .map(|j| addrs[j].clone())
            .collect();
        Group::new(&addrs[i], &peers, &["f".to_string()], 1).unwrap()
    };
    let dirs: Vec<std::path::PathBuf> = (0..3)
        .map(|i| {
            let dir = root.path().join(format!("d{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            dir
        })
        .collect();
    let mut nodes = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        nodes.push(Some(start_node(dir, group(i)).await));
    }
    let wait = std::time::Duration::from_secs(15);
    let metrics = nodes[0]
        .as_ref()
        .unwrap()
        .raft
        .wait(Some(wait))
        .metrics(|m| m.current_leader.is_some(), "a leader")
        .await
        .unwrap();
    let leader = metrics.current_leader.unwrap();
    // Stop a node that is not the leader.
    let away = (0..3).find(|&i| group(i).me != leader).unwrap();
    let node = nodes[away].take().unwrap();
    node.raft.shutdown().await.unwrap();
    node.server.abort();
    // Write through whichever node leads (an election may still be settling).
    let mut written = 0;
    while written < 20 {
        let leading = nodes.iter().flatten().find(|n| {
            let m = n.raft.metrics().borrow().clone();
            m.state == openraft::ServerState::Leader
        });
        let Some(leading) = leading else {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            continue;
        };
        let term = leading.raft.metrics().borrow().current_term;
        let entry = ControlEntry {
            term,
            rewrite: false,
            records: vec![vec!["r".to_string(), written.to_string()]],
        };
        if let Ok(reply) = leading.raft.client_write(entry).await {
            written += reply.data as usize;
        }
    }
    let leading = nodes
        .iter()
        .flatten()
        .find(|n| n.raft.metrics().borrow().state == openraft::ServerState::Leader)
        .unwrap();
    let expected = leading.state.state().records;
    assert_eq!(expected.len(), 20);
    // Back, from its files: the others purged the entries it missed, so it gets them
    // as a snapshot.
    let back = start_node(&dirs[away], group(away)).await;
    back.raft
        .wait(Some(wait))
        .metrics(
            |m| {
                m.snapshot.is_some()
                    && m.last_applied.map(|l| l.index)
                        >= leading
                            .raft
                            .metrics()
                            .borrow()
                            .last_applied
                            .map(|l| l.index)
            },
            "caught up",
        )
        .await
        .unwrap();
    assert_eq!(back.state.state().records, expected);
    // And it kept them: restarted alone (the others stopped), it rebuilds the same
    // state from its files: the snapshot, then the committed entries after it.
    let last = back.raft.metrics().borrow().last_applied.map(|l| l.index);
    back.raft.shutdown().await.unwrap();
    back.server.abort();
    for node in nodes.iter().flatten() {
        node.raft.shutdown().await.unwrap();
        node.server.abort();
    }
    let alone = start_node(&dirs[away], group(away)).await;
    let applied = alone
        .raft
        .wait(Some(wait))
        .metrics(|m| m.last_applied.map(|l| l.index) >= last, "applied")
        .await
        .unwrap();
    assert!(applied.snapshot.is_some());
    assert_eq!(alone.state.state().records, expected);
}

#[test]
fn messages_that_break_rafts_rules_are_refused_before_openraft_sees_them() {
    use openraft::raft::{AppendEntriesRequest, VoteRequest};
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};
    let group = Group::new("a:1", &["b:2".into(), "c:3".into()], &["f".into()], 1).unwrap();
    let id = |t, n, i| LogId::new(CommittedLeaderId::new(t, n), i);
    let blank = |log_id| Entry::<TypeConfig> {
        log_id,
        payload: EntryPayload::Blank,
    };
    let append = |prev, entries, commit| AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(9, 2),
        prev_log_id: prev,
        entries,
        leader_commit: commit,
    };
    // A correct leader's messages pass.
    let fine = append(
        Some(id(8, 1, 3)),
        vec![blank(id(8, 1, 4)), blank(id(9, 2, 5))],
        Some(id(9, 2, 5)),
    );
    assert_eq!(validate::append_entries(&group, &fine), Ok(()));
    // The entry `initialize` writes, before any election, is of term 0 and node 0.
    let membership = Entry::<TypeConfig> {
        log_id: id(0, 0, 0),
        payload: EntryPayload::Membership(openraft::Membership::new(
            vec![group.members().keys().copied().collect()],
            group.members(),
        )),
    };
    assert_eq!(
        validate::append_entries(&group, &append(None, vec![membership], None)),
        Ok(())
    );
    // The one that stopped openraft: an entry that does not follow prev_log_id.
    let gap = append(None, vec![blank(id(9, 2, 7))], Some(id(9, 2, 100)));
    assert!(validate::append_entries(&group, &gap)
        .unwrap_err()
        .contains("does not follow"));
    let back = append(
        Some(id(9, 2, 3)),
        vec![blank(id(9, 2, 4)), blank(id(3, 2, 5))],
        None,
    );
    assert!(validate::append_entries(&group, &back)
        .unwrap_err()
        .contains("goes back a term"));
    let future = append(None, vec![blank(id(12, 2, 0))], None);
    assert!(validate::append_entries(&group, &future)
        .unwrap_err()
        .contains("after the sender's term"));
    let stranger = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(9, 7),
        ..append(None, vec![], None)
    };
    assert!(validate::append_entries(&group, &stranger)
        .unwrap_err()
        .contains("not one of the 3"));
    let mut members = group.members();
    members.insert(4, openraft::BasicNode::new("d:4"));
    let other_membership = Entry::<TypeConfig> {
        log_id: id(9, 2, 0),
        payload: EntryPayload::Membership(openraft::Membership::new(
            vec![members.keys().copied().collect()],
            members,
        )),
    };
    let change = append(None, vec![other_membership], None);
    assert!(validate::append_entries(&group, &change)
        .unwrap_err()
        .contains("membership"));
    let vote = VoteRequest::new(Vote::new(5, 3), Some(id(6, 1, 2)));
    assert!(validate::vote_request(&group, &vote).is_err());
    let vote = VoteRequest::new(Vote::new(6, 3), Some(id(6, 1, 2)));
    assert_eq!(validate::vote_request(&group, &vote), Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_message_leaves_the_node_running() {
    use crate::proto::rpc::leader_raft_server::LeaderRaft;
    let root = tempfile::tempdir().unwrap();
    let addr = format!("unix:{}", root.path().join("l.sock").display());
    let other = format!("unix:{}", root.path().join("m.sock").display());
    let group = Group::new(&addr, &[other], &["f".to_string()], 1).unwrap();
    let fingerprint = group.fingerprint.clone();
    let node = start_node(root.path(), group.clone()).await;
    let service = RaftService::new(node.raft.clone(), std::sync::Arc::new(group));
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};
    let id = |i| LogId::new(CommittedLeaderId::new(9, 2), i);
    let gap = openraft::raft::AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(9, 2),
        prev_log_id: None,
        entries: vec![Entry {
            log_id: id(7),
            payload: EntryPayload::Blank,
        }],
        leader_commit: Some(id(100)),
    };
    for json in [
        serde_json::to_vec(&gap).unwrap(),
        b"{not json".to_vec(),
        vec![0xff; 16],
    ] {
        let request = tonic::Request::new(crate::proto::rpc::RaftRequest {
            group: fingerprint.clone(),
            json,
        });
        let refused = service.append_entries(request).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    }
    let other_group = tonic::Request::new(crate::proto::rpc::RaftRequest {
        group: "leaders=x".into(),
        json: serde_json::to_vec(&gap).unwrap(),
    });
    let refused = service.append_entries(other_group).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(node.raft.metrics().borrow().running_state.is_ok());
    assert!(node.raft.is_initialized().await.unwrap());
}
