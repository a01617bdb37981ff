//! The rules of `membership.rs`, one test each.

use super::*;

fn addresses(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("f{i}:1")).collect()
}

/// A membership of `n` followers that have all told their ids `m0`, `m1`, ... and
/// whose first view is durable.
fn formed(n: usize, replication: usize) -> Membership {
    let mut m = Membership::new(addresses(n), replication, None).unwrap();
    let mut view = None;
    for f in 0..n {
        view = m.told(f, Some(&format!("m{f}")));
    }
    m.durable(view.expect("the last id forms the view").epoch);
    m
}

#[test]
fn with_full_replication_every_follower_takes_part_before_and_after_the_view() {
    let mut m = Membership::new(addresses(3), 3, None).unwrap();
    let all = Participants::Followers(vec![0, 1, 2]);
    assert_eq!(m.participants(["k"]), all);
    assert_eq!(m.recipient(0), None, "no view yet: PREPAREs name no member");
    assert_eq!(m.told(0, Some("m0")), None);
    assert_eq!(m.told(1, Some("m1")), None);
    let view = m.told(2, Some("m2")).expect("every follower told its id");
    assert_eq!(view.epoch, 1);
    assert_eq!(m.recipient(1), None, "not in force before it is durable");
    m.durable(1);
    assert_eq!(
        m.recipient(1),
        Some(Recipient {
            view_epoch: 1,
            member_id: MemberId("m1".into())
        })
    );
    assert_eq!(
        m.participants(["k"]),
        Participants::Followers(vec![0, 1, 2])
    );
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
    let view = m.told(4, Some("m4")).unwrap();
    assert_eq!(
        m.participants(["k"]),
        Participants::NoView { waiting_for: 0 }
    );
    m.durable(view.epoch);
    assert!(matches!(m.participants(["k"]), Participants::Followers(_)));
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
fn a_journaled_partial_view_must_match_the_followers_and_replication() {
    let view = formed(4, 3).current().unwrap().clone();
    assert!(Membership::new(addresses(4), 3, Some(view.clone())).is_ok());
    let other_r = Membership::new(addresses(4), 2, Some(view.clone())).unwrap_err();
    assert!(other_r.contains("--replication 3"), "{other_r}");
    let other_followers = Membership::new(addresses(5), 3, Some(view.clone())).unwrap_err();
    assert!(other_followers.contains("f4:1"), "{other_followers}");
    let now_full = Membership::new(addresses(4), 4, Some(view)).unwrap_err();
    assert!(now_full.contains("view 1"), "{now_full}");
    // Full then and full now: every follower holds every key either way.
    let full = formed(3, 3).current().unwrap().clone();
    let m = Membership::new(addresses(4), 4, Some(full)).unwrap();
    let all = Participants::Followers(vec![0, 1, 2, 3]);
    assert_eq!(m.participants(["k"]), all, "writes run before the new view");
    assert_eq!(m.recipient(3), None, "not a member of the journaled view");
    assert_eq!(m.recipient(0).unwrap().view_epoch, 1);
    assert!(Membership::new(addresses(3), 0, None).is_err());
}

#[test]
fn a_restarted_partial_leader_keeps_its_view_whatever_ids_it_is_told() {
    let view = formed(4, 3).current().unwrap().clone();
    let mut m = Membership::new(addresses(4), 3, Some(view)).unwrap();
    for f in 0..3 {
        assert_eq!(m.told(f, Some(&format!("m{f}"))), None);
    }
    assert_eq!(m.told(3, Some("someone-else")), None, "no view change");
    assert_eq!(m.recipient(3).unwrap().member_id, MemberId("m3".into()));
}

#[test]
fn with_full_replication_other_members_make_a_new_view() {
    let view = formed(3, 3).current().unwrap().clone();
    let mut m = Membership::new(addresses(3), 3, Some(view)).unwrap();
    assert_eq!(m.told(0, Some("m0")), None);
    assert_eq!(m.told(1, Some("m1")), None);
    let next = m.told(2, Some("fresh")).expect("the members changed");
    assert_eq!(next.epoch, 2);
    assert_eq!(m.recipient(2).unwrap().member_id, MemberId("m2".into()));
    m.durable(2);
    assert_eq!(
        m.recipient(2),
        Some(Recipient {
            view_epoch: 2,
            member_id: MemberId("fresh".into())
        })
    );
    // The same members again: no new view.
    let mut again = Membership::new(addresses(3), 3, m.current().cloned()).unwrap();
    for (f, id) in ["m0", "m1", "fresh"].into_iter().enumerate() {
        assert_eq!(again.told(f, Some(id)), None);
    }
}

#[test]
fn two_followers_with_one_id_form_no_view() {
    let mut m = Membership::new(addresses(2), 1, None).unwrap();
    assert_eq!(m.told(0, Some("same")), None);
    assert_eq!(m.told(1, Some("same")), None);
    assert_eq!(m.told(1, Some("other")).map(|v| v.epoch), Some(1));
}

#[test]
fn a_classic_follower_is_known_by_its_address() {
    let mut m = Membership::new(addresses(2), 1, None).unwrap();
    assert_eq!(m.told(0, None), None);
    let view = m.told(1, Some("m1")).unwrap();
    assert_eq!(view.members[0].0, MemberId("address:f0:1".into()));
    assert_eq!(m.told_id(0), Some(&MemberId("address:f0:1".into())));
}

#[test]
fn only_the_pending_view_becomes_durable() {
    let mut m = Membership::new(addresses(1), 1, None).unwrap();
    let view = m.told(0, Some("m0")).unwrap();
    m.durable(view.epoch + 1);
    assert_eq!(m.current(), None);
    assert_eq!(m.record(), Some(&view), "still being journaled");
    m.durable(view.epoch);
    assert_eq!(m.current(), Some(&view));
}
