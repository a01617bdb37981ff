//! The rules of `membership.rs`, one test each.

use super::*;
use std::time::Duration;

fn addresses(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("f{i}:1")).collect()
}

/// Makes the views being journaled durable.
fn make_durable(m: &mut Membership) {
    let (generation, _) = m.record().expect("views being journaled");
    m.durable(generation);
}

/// A membership of `n` followers that have all told their ids `m0`, `m1`, ... and
/// whose first view is durable.
fn formed(n: usize, replication: usize) -> Membership {
    let mut m = Membership::new(addresses(n), replication, None).unwrap();
    let mut views = None;
    for f in 0..n {
        views = m.told(f, Some(&format!("m{f}")));
    }
    assert_eq!(views.expect("the last id forms the view").current.epoch, 1);
    make_durable(&mut m);
    assert_eq!(m.replication(), replication);
    m
}

/// `views` with no change under way.
fn in_force(view: &ViewRecord) -> Views {
    Views {
        current: view.clone(),
        next: None,
        down: Vec::new(),
    }
}

#[test]
fn with_full_replication_every_follower_takes_part_before_and_after_the_view() {
    let mut m = Membership::new(addresses(3), 3, None).unwrap();
    let all = Participants::Followers(vec![0, 1, 2]);
    assert_eq!(m.participants(["k"]), all);
    assert_eq!(m.recipient(0), None, "no view yet: PREPAREs name no member");
    assert_eq!(m.told(0, Some("m0")), None);
    assert_eq!(m.told(1, Some("m1")), None);
    let views = m.told(2, Some("m2")).expect("every follower told its id");
    assert_eq!((views.current.epoch, views.next), (1, None));
    assert_eq!(m.recipient(1), None, "not in force before it is durable");
    make_durable(&mut m);
    assert_eq!(
        m.recipient(1),
        Some(Recipient {
            view_epoch: 1,
            member_id: MemberId("m1".into())
        })
    );
    assert_eq!(m.participants(["k"]), all);
    assert!(m.is_full());
    assert!(Membership::new(addresses(3), 5, None).unwrap().is_full());
}

#[test]
fn with_partial_replication_nothing_runs_before_the_first_view_is_durable() {
    let mut m = Membership::new(addresses(5), 3, None).unwrap();
    assert_eq!(
        m.participants(["k"]),
        Participants::NoView { waiting_for: 0 }
    );
    for f in 0..4 {
        assert_eq!(m.told(f, Some(&format!("m{f}"))), None);
    }
    assert_eq!(
        m.participants(["k"]),
        Participants::NoView { waiting_for: 4 }
    );
    assert!(m.replicas("k").is_empty());
    m.told(4, Some("m4")).unwrap();
    assert_eq!(
        m.participants(["k"]),
        Participants::NoView { waiting_for: 0 }
    );
    make_durable(&mut m);
    assert!(matches!(m.participants(["k"]), Participants::Followers(_)));
    assert!(!m.is_full());
}

#[test]
fn a_transactions_participants_are_its_keys_replicas() {
    let m = formed(6, 3);
    let placement = View::new(
        1,
        3,
        (0..6)
            .map(|f| MemberId(format!("m{f}")))
            .collect::<Vec<_>>()
            .iter(),
    );
    for key in ["a", "b", "c", "key-17"] {
        let replicas = m.replicas(key);
        assert_eq!(replicas.len(), 3, "{key}");
        for f in 0..6 {
            let member = MemberId(format!("m{f}"));
            assert_eq!(
                replicas.contains(&f),
                placement.holds(&member, key),
                "{key} {f}"
            );
            assert_eq!(m.writes(f, key), m.evaluates(f, key), "no change under way");
        }
    }
    let Participants::Followers(both) = m.participants(["a", "b"]) else {
        panic!("a view is in force");
    };
    let union: BTreeSet<usize> = m.replicas("a").into_iter().chain(m.replicas("b")).collect();
    assert_eq!(both, union.into_iter().collect::<Vec<_>>());
    let holders = m.holders(["a", "b"]);
    let a = m.replicas("a");
    let b = m.replicas("b");
    assert_eq!(
        holders,
        a.into_iter().filter(|f| b.contains(f)).collect::<Vec<_>>()
    );
}

#[test]
fn a_journaled_view_needs_its_members_dialled_and_its_replication() {
    let view = formed(4, 3).current().unwrap().clone();
    assert!(Membership::new(addresses(4), 3, Some(in_force(&view))).is_ok());
    let other_r = Membership::new(addresses(4), 2, Some(in_force(&view))).unwrap_err();
    assert!(other_r.contains("--replication 3"), "{other_r}");
    let fewer = Membership::new(addresses(3), 3, Some(in_force(&view))).unwrap_err();
    assert!(fewer.contains("f3:1"), "{fewer}");
    // More followers than members: the others are not members yet.
    let more = Membership::new(addresses(5), 3, Some(in_force(&view))).unwrap();
    assert_eq!(more.recipient(4), None);
    assert!(!more.replicas("k").contains(&4));
    let now_full = Membership::new(addresses(4), 4, Some(in_force(&view))).unwrap_err();
    assert!(now_full.contains("view 1"), "{now_full}");
    // Full then and full now: every follower holds every key either way.
    let full = formed(3, 3).current().unwrap().clone();
    let m = Membership::new(addresses(4), 4, Some(in_force(&full))).unwrap();
    assert_eq!(
        m.participants(["k"]),
        Participants::Followers(vec![0, 1, 2])
    );
    assert_eq!(m.recipient(3), None, "not a member of the journaled view");
    assert_eq!(m.recipient(0).unwrap().view_epoch, 1);
    assert!(Membership::new(addresses(3), 0, None).is_err());
}

#[test]
fn a_follower_answering_with_another_id_starts_a_change_that_replaces_its_member() {
    let view = formed(4, 3).current().unwrap().clone();
    let mut m = Membership::new(addresses(4), 3, Some(in_force(&view))).unwrap();
    for f in 0..3 {
        assert_eq!(m.told(f, Some(&format!("m{f}"))), None, "the same members");
    }
    let views = m.told(3, Some("fresh")).expect("m3 replaced");
    assert_eq!(views.current, view);
    let next = views.next.clone().unwrap();
    assert_eq!(next.epoch, 2);
    assert_eq!(
        next.members[3],
        (MemberId("fresh".into()), "f3:1".to_string())
    );
    assert_eq!(
        m.recipient(3).unwrap().member_id,
        MemberId("m3".into()),
        "not under way before it is durable"
    );
    make_durable(&mut m);
    assert_eq!(m.next(), Some(&next));
    assert_eq!(
        m.recipient(3),
        Some(Recipient {
            view_epoch: 2,
            member_id: MemberId("fresh".into())
        })
    );
    // The replaced member's data is gone: follower 3 writes its keys but reads none.
    let key = (0..100)
        .map(|i| format!("k{i}"))
        .find(|k| next_holds(&m, 3, k))
        .unwrap();
    assert!(m.writes(3, &key) && !m.evaluates(3, &key));
    assert!(!m.replicas(&key).contains(&3));
    assert_eq!(m.catching_up(), vec![0, 1, 2, 3]);
}

#[test]
fn a_member_replaced_while_a_change_is_under_way_revises_the_change() {
    let mut m = formed(4, 3);
    let view = m.current().unwrap().clone();
    m.change("f3:1", false).unwrap();
    make_durable(&mut m);
    assert_eq!(m.next().unwrap().epoch, 2);
    assert_eq!(
        m.told(0, Some("m0")),
        None,
        "the same member: nothing to do"
    );
    let views = m.told(1, Some("fresh")).expect("m1 replaced in the change");
    assert_eq!(views.current, view, "the view in force stays");
    let next = views.next.clone().unwrap();
    assert_eq!(next.epoch, 3, "newer than the next view it revises");
    assert_eq!(
        next.members,
        vec![
            (MemberId("m0".into()), "f0:1".to_string()),
            (MemberId("fresh".into()), "f1:1".to_string()),
            (MemberId("m2".into()), "f2:1".to_string()),
        ],
        "the change's target, with the new process in the member's place"
    );
    make_durable(&mut m);
    assert_eq!(m.next(), Some(&next));
    assert_eq!(m.catching_up(), vec![0, 1, 2]);
    assert_eq!(m.caught_up(2), None, "the revised change's epoch only");
    assert!(m.caught_up(3).is_some());
    make_durable(&mut m);
    assert_eq!((m.current(), m.next()), (Some(&next), None));
}

fn next_holds(m: &Membership, f: usize, key: &str) -> bool {
    let next = m.next().unwrap();
    let placement = View::new(
        next.epoch,
        next.replication,
        next.members.iter().map(|(id, _)| id),
    );
    placement.holds(&next.members[f].0, key)
}

#[test]
fn adding_a_member_writes_to_old_and_new_replicas_and_reads_the_old_until_caught_up() {
    let mut m = formed(3, 2);
    let view = m.current().unwrap().clone();
    let mut more = Membership::new(addresses(4), 2, Some(in_force(&view))).unwrap();
    assert!(more
        .change("f3:1", true)
        .unwrap_err()
        .contains("not answered"));
    assert_eq!(
        more.told(3, Some("m3")),
        None,
        "not a member: no change by itself"
    );
    assert!(more
        .change("f9:1", true)
        .unwrap_err()
        .contains("--follower f9:1"));
    assert!(more
        .change("f0:1", true)
        .unwrap_err()
        .contains("already a member"));
    let views = more.change("f3:1", true).unwrap();
    assert_eq!(views.next.as_ref().unwrap().epoch, 2);
    assert!(more
        .change("f3:1", false)
        .unwrap_err()
        .contains("being journaled"));
    make_durable(&mut more);
    assert!(more
        .change("f2:1", false)
        .unwrap_err()
        .contains("still under way"));
    let moving: Vec<String> = (0..200)
        .map(|i| format!("k{i}"))
        .filter(|k| next_holds(&more, 3, k))
        .collect();
    assert!(!moving.is_empty());
    for key in &moving {
        let Participants::Followers(participants) = more.participants([key.as_str()]) else {
            panic!()
        };
        let old = more.replicas(key);
        assert_eq!(old.len(), 2);
        assert!(old.iter().all(|f| participants.contains(f)), "old replicas");
        assert!(participants.contains(&3), "and the new one");
        assert!(more.writes(3, key) && !more.evaluates(3, key));
        assert!(!old.contains(&3), "reads stay with the old replicas");
    }
    assert_eq!(more.caught_up(1), None, "not the next view's epoch");
    let done = more.caught_up(2).unwrap();
    assert_eq!((done.current.epoch, done.next), (2, None));
    make_durable(&mut more);
    assert_eq!(more.next(), None);
    for key in &moving {
        assert!(
            more.replicas(key).contains(&3),
            "reads switch after the copy"
        );
        assert_eq!(more.replicas(key).len(), 2);
    }
    let _ = m.told(0, Some("m0"));
}

#[test]
fn removing_a_member_keeps_the_last_and_is_resumed_from_the_journal() {
    let mut m = formed(3, 3);
    let views = m.change("f1:1", false).unwrap();
    let next = views.next.clone().unwrap();
    assert_eq!(next.members.len(), 2);
    assert!(!next.members.iter().any(|(_, a)| a == "f1:1"));
    // A leader restarted before the change was done resumes it.
    let mut resumed = Membership::new(addresses(3), 3, Some(views)).unwrap();
    assert_eq!(resumed.next(), Some(&next));
    assert_eq!(resumed.catching_up(), vec![0, 2]);
    assert!(!resumed.is_full(), "parts while the members change");
    resumed.caught_up(2).unwrap();
    make_durable(&mut resumed);
    assert_eq!(
        resumed.participants(["k"]),
        Participants::Followers(vec![0, 2])
    );
    assert_eq!(resumed.recipient(1), None, "no longer a member");
    assert!(
        resumed.is_full(),
        "3 replicas of 2 members: each holds every key"
    );
    resumed.change("f0:1", false).unwrap();
    make_durable(&mut resumed);
    resumed.caught_up(3).unwrap();
    make_durable(&mut resumed);
    let last = resumed.change("f2:1", false).unwrap_err();
    assert!(last.contains("last member"), "{last}");
}

#[test]
fn two_followers_with_one_id_form_no_view() {
    let mut m = Membership::new(addresses(2), 1, None).unwrap();
    assert_eq!(m.told(0, Some("same")), None);
    assert_eq!(m.told(1, Some("same")), None);
    assert_eq!(m.told(1, Some("other")).map(|v| v.current.epoch), Some(1));
}

#[test]
fn a_classic_follower_is_known_by_its_address() {
    let mut m = Membership::new(addresses(2), 1, None).unwrap();
    assert_eq!(m.told(0, None), None);
    let views = m.told(1, Some("m1")).unwrap();
    assert_eq!(views.current.members[0].0, MemberId("address:f0:1".into()));
    assert_eq!(m.told_id(0), Some(&MemberId("address:f0:1".into())));
}

#[test]
fn only_the_views_being_journaled_become_durable() {
    let mut m = Membership::new(addresses(1), 1, None).unwrap();
    let views = m.told(0, Some("m0")).unwrap();
    let (generation, _) = m.record().unwrap();
    m.durable(generation + 1);
    assert_eq!(m.current(), None);
    assert_eq!(
        m.record().map(|(_, v)| v),
        Some(views.clone()),
        "still being journaled"
    );
    m.durable(generation);
    assert_eq!(m.current(), Some(&views.current));
}

#[test]
fn a_member_silent_past_the_timeout_leaves_and_rejoins_when_it_answers() {
    let timeout = Duration::from_secs(10);
    let mut m = formed(4, 3);
    let quiet = [None, None, None, None];
    assert_eq!(m.due_change(&quiet, timeout), None);
    let short = [None, None, Some(Duration::from_secs(9)), None];
    assert_eq!(m.due_change(&short, timeout), None, "not yet");
    let long = [None, None, Some(Duration::from_secs(10)), None];
    let (views, why) = m.due_change(&long, timeout).expect("removed");
    assert!(why.contains("f2:1"), "{why}");
    let next = views.next.clone().unwrap();
    assert!(!next.members.iter().any(|(_, a)| a == "f2:1"));
    assert_eq!(views.down, vec!["f2:1".to_string()]);
    assert_eq!(m.due_change(&long, timeout), None, "one change at a time");
    make_durable(&mut m);
    m.caught_up(2).unwrap();
    make_durable(&mut m);
    assert_eq!(m.down().collect::<Vec<_>>(), vec!["f2:1"]);
    // Still silent: nothing. It answers, but has not told its id since: nothing yet.
    assert_eq!(m.due_change(&long, timeout), None);
    m.unreachable(2);
    assert_eq!(m.due_change(&quiet, timeout), None, "its id is not known");
    assert_eq!(
        m.told(2, Some("m2-new")),
        None,
        "not a member: no replacement"
    );
    let (views, why) = m.due_change(&quiet, timeout).expect("re-admitted");
    assert!(why.contains("rejoins"), "{why}");
    let next = views.next.unwrap();
    assert!(next
        .members
        .contains(&(MemberId("m2-new".into()), "f2:1".into())));
    assert!(views.down.is_empty());
    make_durable(&mut m);
    m.caught_up(3).unwrap();
    make_durable(&mut m);
    assert_eq!(m.current().unwrap().members.len(), 4);
}

#[test]
fn the_last_member_is_never_removed_for_silence_and_an_operator_ends_a_removal() {
    let timeout = Duration::from_secs(1);
    let mut m = formed(2, 3);
    let silent = Some(Duration::from_secs(5));
    m.due_change(&[None, silent], timeout).expect("removed");
    make_durable(&mut m);
    m.caught_up(2).unwrap();
    make_durable(&mut m);
    assert_eq!(
        m.due_change(&[silent, silent], timeout),
        None,
        "the last member stays"
    );
    // An operator's remove of a member listed down keeps it out for good.
    let views = m.change("f1:1", false).expect("no longer down");
    assert!(views.down.is_empty());
    assert_eq!(views.current.epoch, 2, "no view change");
    make_durable(&mut m);
    m.told(1, Some("m1"));
    assert_eq!(m.due_change(&[None, None], timeout), None, "stays out");
    assert!(m.change("f1:1", true).is_ok(), "until added");
}
