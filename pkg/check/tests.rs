use super::*;

fn op(client: usize, kind: OpKind, call: u64, ret: Option<u64>) -> Operation {
    Operation {
        client,
        key: "k".into(),
        kind,
        call,
        ret,
    }
}
fn put(v: &str) -> OpKind {
    OpKind::Put(v.into())
}
fn get(v: Option<&str>) -> OpKind {
    OpKind::Get(v.map(String::from))
}

#[test]
fn sequential_history_is_linearizable() {
    let h = [
        op(0, get(None), 0, Some(1)),
        op(0, put("a"), 2, Some(3)),
        op(0, get(Some("a")), 4, Some(5)),
        op(0, OpKind::Delete, 6, Some(7)),
        op(0, get(None), 8, Some(9)),
    ];
    assert!(check(&h).is_ok());
}

#[test]
fn stale_read_after_a_completed_write_is_caught() {
    let h = [
        op(0, put("a"), 0, Some(1)),
        op(0, put("b"), 2, Some(3)),
        op(1, get(Some("a")), 4, Some(5)),
    ];
    let violation = check(&h).unwrap_err();
    assert_eq!(violation.key, "k");
    assert!(violation.to_string().contains("not linearizable"));
}

#[test]
fn concurrent_read_may_see_either_value() {
    let old = [
        op(0, put("a"), 0, Some(1)),
        op(0, put("b"), 2, Some(6)),
        op(1, get(Some("a")), 3, Some(5)),
    ];
    let new = [
        op(0, put("a"), 0, Some(1)),
        op(0, put("b"), 2, Some(6)),
        op(1, get(Some("b")), 3, Some(5)),
    ];
    assert!(check(&old).is_ok());
    assert!(check(&new).is_ok());
}

#[test]
fn reads_must_agree_on_an_order() {
    // Two writes concurrent with each other; one reader sees b then a, another a then b,
    // all after both writes completed: impossible.
    let h = [
        op(0, put("a"), 0, Some(10)),
        op(1, put("b"), 0, Some(10)),
        op(2, get(Some("a")), 11, Some(12)),
        op(3, get(Some("b")), 13, Some(14)),
    ];
    assert!(check(&h).is_err());
}

#[test]
fn unknown_write_may_take_effect_or_not() {
    let took = [
        op(0, put("a"), 0, Some(1)),
        op(1, put("b"), 2, None),
        op(2, get(Some("b")), 10, Some(11)),
    ];
    let did_not = [
        op(0, put("a"), 0, Some(1)),
        op(1, put("b"), 2, None),
        op(2, get(Some("a")), 10, Some(11)),
    ];
    assert!(check(&took).is_ok());
    assert!(check(&did_not).is_ok());
    // But once it is seen, it can't be un-seen.
    let flip = [
        op(0, put("a"), 0, Some(1)),
        op(1, put("b"), 2, None),
        op(2, get(Some("b")), 10, Some(11)),
        op(2, get(Some("a")), 12, Some(13)),
    ];
    assert!(check(&flip).is_err());
}

#[test]
fn value_from_nowhere_is_caught() {
    assert!(check(&[op(0, get(Some("z")), 0, Some(1))]).is_err());
}

#[test]
fn lost_acknowledged_write_is_caught() {
    let h = [op(0, put("a"), 0, Some(1)), op(1, get(None), 2, Some(3))];
    assert!(check(&h).is_err());
}

#[test]
fn keys_are_checked_independently() {
    let mut h = vec![op(0, put("a"), 0, Some(1))];
    h.push(Operation {
        client: 1,
        key: "other".into(),
        kind: get(None),
        call: 2,
        ret: Some(3),
    });
    h.push(op(1, get(Some("a")), 4, Some(5)));
    assert!(check(&h).is_ok());
}

#[test]
fn long_concurrent_history_is_checked_quickly() {
    // 4 clients, 2000 operations, each client alternating writes of unique values and
    // reads of the value a model register holds at the read's (overlapping) time.
    let mut h = Vec::new();
    let mut register: Option<String> = None;
    let mut t = 0;
    for i in 0..500 {
        for c in 0..4 {
            t += 3;
            if (i + c) % 2 == 0 {
                let v = format!("{c}-{i}");
                h.push(op(c, put(&v), t, Some(t + 5)));
                register = Some(v);
            } else {
                h.push(op(c, OpKind::Get(register.clone()), t, Some(t + 5)));
            }
        }
    }
    assert!(check(&h).is_ok());
}

#[test]
fn many_unknown_writes_nobody_saw_are_cheap() {
    // 200 writes with unknown outcome interleaved with reads of one known value: without
    // the pruning this would be 2^200 states.
    let mut h = vec![op(0, put("a"), 0, Some(1))];
    for i in 0..200u64 {
        h.push(op(1, put(&format!("lost{i}")), 10 + i * 10, None));
        h.push(op(2, get(Some("a")), 12 + i * 10, Some(13 + i * 10)));
    }
    assert!(check(&h).is_ok());
    // But an unknown write that was seen still has to fit.
    h.push(op(2, get(Some("lost7")), 5000, Some(5001)));
    h.push(op(2, get(Some("a")), 5002, Some(5003)));
    assert!(check(&h).is_err());
}
