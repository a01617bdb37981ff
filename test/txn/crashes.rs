//! kill -9 of any node mid-transaction leaves every transaction all or nothing on every
//! replica: a workload of multi-key transactions, the checker, and its own test.

use super::*;

// ---------------------------------------------------------------------------------------
// 9. kill -9 mid-transaction: all or nothing on every replica.
// ---------------------------------------------------------------------------------------

/// The keys the workload writes.
const WORKLOAD_KEYS: [&str; 6] = ["w0", "w1", "w2", "w3", "w4", "w5"];

/// One transaction a workload client sent: the keys it wrote (one value, unique to it,
/// on each) and what the leader answered.
#[derive(Clone, Debug)]
struct Attempt {
    keys: Vec<String>,
    answer: Result<TxId, Code>,
    /// When the answer arrived.
    answered: Instant,
}

/// Workload progress counters.
#[derive(Default)]
struct Progress {
    acked: AtomicUsize,
    failed: AtomicUsize,
}

/// Two to four distinct workload keys, chosen by `seed`.
fn pick_keys(seed: u64) -> Vec<String> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let count = 2 + (next() % 3) as usize;
    let mut keys: Vec<&str> = WORKLOAD_KEYS.to_vec();
    for i in (1..keys.len()).rev() {
        keys.swap(i, (next() % (i as u64 + 1)) as usize);
    }
    keys[..count].iter().map(|k| k.to_string()).collect()
}

/// Starts `clients` loops, each writing one unique value (`txn-<phase>-<client>-<n>`)
/// to two to four keys in one transaction, until `stop`: with a compare that holds, in
/// the success branch, or (every third) with one that fails, in the failure branch; the
/// other branch writes another key.
fn start_workload(
    leader: &str,
    phase: u64,
    clients: usize,
    stop: &Arc<AtomicBool>,
    progress: &Arc<Progress>,
) -> Vec<tokio::task::JoinHandle<Vec<(String, Attempt)>>> {
    (0..clients)
        .map(|client_no| {
            let leader = leader.to_string();
            let (stop, progress) = (stop.clone(), progress.clone());
            tokio::spawn(async move {
                let mut c = support::client(&leader);
                let mut log = Vec::new();
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let value = format!("txn-{phase}-{client_no}-{n}");
                    let keys = pick_keys((phase << 40) + (n << 8) + client_no as u64);
                    // A key the transaction must not write: the other branch's.
                    let other = WORKLOAD_KEYS
                        .iter()
                        .find(|k| !keys.iter().any(|key| key == *k))
                        .expect("at most four of six keys");
                    // Every third transaction's compare fails: its failure branch
                    // writes the keys. The other branch writes `other`.
                    let fails = n % 3 == 2;
                    let writes = |t: Txn, then: bool| {
                        if then {
                            keys.iter()
                                .fold(t, |t, k| t.then_put(k, &value))
                                .else_put(other, &value)
                        } else {
                            keys.iter()
                                .fold(t, |t, k| t.else_put(k, &value))
                                .then_put(other, &value)
                        }
                    };
                    let txn = if fails {
                        writes(Txn::new().if_value(&keys[0], "never"), false)
                    } else {
                        writes(Txn::new().if_value_not(&keys[0], "never"), true)
                    };
                    let answer = match c.txn(txn).await {
                        Ok(answer) => {
                            assert_eq!(answer.succeeded, !fails, "{value}: {answer:?}");
                            progress.acked.fetch_add(1, Ordering::SeqCst);
                            Ok(version(&answer.version, "an acknowledged txn"))
                        }
                        Err(s) => {
                            progress.failed.fetch_add(1, Ordering::SeqCst);
                            Err(s.code())
                        }
                    };
                    let failed = answer.is_err();
                    log.push((
                        value,
                        Attempt {
                            keys,
                            answer,
                            answered: Instant::now(),
                        },
                    ));
                    n += 1;
                    if failed {
                        // A node is down: back off instead of spinning.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                log
            })
        })
        .collect()
}

/// Stops a workload and collects what it sent.
async fn stop_workload(
    stop: &Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<(String, Attempt)>>>,
    attempts: &mut BTreeMap<String, Attempt>,
) {
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        for (value, attempt) in task.await.expect("a workload client") {
            attempts.insert(value, attempt);
        }
    }
}

/// A key's state with its version parsed.
type Parsed = Option<(String, TxId)>;

/// Polls until every follower answers every workload key (no UNAVAILABLE left) and all
/// of them answer the same; returns that state.
async fn settled_agreement(cluster: &Cluster) -> BTreeMap<String, Parsed> {
    let followers: Vec<Client> = cluster
        .follower_addrs()
        .iter()
        .map(|a| support::client(a))
        .collect();
    poll(
        "every follower to answer every key, all alike",
        Duration::from_secs(30),
        || {
            let followers = followers.clone();
            async move {
                let mut copies = Vec::new();
                for (i, mut c) in followers.into_iter().enumerate() {
                    let mut copy = BTreeMap::new();
                    for key in WORKLOAD_KEYS {
                        let held = match c.get_versioned(key).await {
                            Ok((value, v)) => Some((value, version(&v, "a key's version"))),
                            Err(s) if s.code() == Code::NotFound => None,
                            Err(s) => return Err(format!("follower {i}, {key}: {}", describe(&s))),
                        };
                        copy.insert(key.to_string(), held);
                    }
                    copies.push(copy);
                }
                if copies.windows(2).all(|w| w[0] == w[1]) {
                    Ok(copies.swap_remove(0))
                } else {
                    Err(format!("followers disagree: {copies:#?}"))
                }
            }
        },
    )
    .await
}

/// The all-or-nothing check of a state (settled, or one snapshot) against every
/// transaction attempted; returns every violation. A transaction T whose value a key
/// holds at version V wrote all its keys at V: each of them holds V (and T's value) or
/// a later version; T wrote only its keys (of the branch that ran), at the version it
/// was acknowledged with, if it was; one the leader refused (`refusals_are_final`:
/// ABORTED or UNAVAILABLE from a live leader) is nowhere.
fn torn_transactions(
    state: &BTreeMap<String, Parsed>,
    attempts: &BTreeMap<String, Attempt>,
    refusals_are_final: bool,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (key, held) in state {
        let Some((value, at)) = held else {
            continue;
        };
        let Some(attempt) = attempts.get(value) else {
            problems.push(format!("{key} holds {value:?}, which no transaction wrote"));
            continue;
        };
        if !attempt.keys.contains(key) {
            problems.push(format!(
                "{key} holds {value:?}, whose transaction did not write {key} (in the branch \
                 that should run)"
            ));
        }
        match attempt.answer {
            Ok(acked) if acked != *at => problems.push(format!(
                "{key} holds {value:?} at {at}, but the transaction was acknowledged as {acked}"
            )),
            Err(code @ (Code::Aborted | Code::Unavailable)) if refusals_are_final => {
                problems.push(format!(
                    "{key} holds {value:?} at {at}, whose transaction the leader answered {code:?}"
                ))
            }
            _ => {}
        }
        for other in &attempt.keys {
            match &state[other] {
                None => problems.push(format!(
                    "{key} holds {value:?} at {at}, but {other}, which the same transaction \
                     wrote, is absent"
                )),
                Some((other_value, other_at)) if other_at < at => problems.push(format!(
                    "{key} holds {value:?} at {at}, but {other}, which the same transaction \
                     wrote, holds the older {other_value:?} at {other_at}"
                )),
                Some((other_value, other_at)) if other_at == at && other_value != value => problems
                    .push(format!(
                        "{key} holds {value:?} at {at}, but {other} holds {other_value:?} at \
                         the same version"
                    )),
                Some(_) => {}
            }
        }
    }
    problems
}

/// Every acknowledged transaction's keys hold its version (and value) or a later one.
fn lost_acknowledged(
    state: &BTreeMap<String, Parsed>,
    attempts: &BTreeMap<String, Attempt>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (value, attempt) in attempts {
        let Ok(acked) = attempt.answer else {
            continue;
        };
        for key in &attempt.keys {
            match &state[key] {
                Some((held, at)) if *at > acked || (*at == acked && held == value) => {}
                other => problems.push(format!(
                    "acknowledged {value:?} at {acked} is lost on {key}, which holds {other:?}"
                )),
            }
        }
    }
    problems
}

/// Both checks, for a settled state.
fn all_or_nothing_violations(
    state: &BTreeMap<String, Parsed>,
    attempts: &BTreeMap<String, Attempt>,
    refusals_are_final: bool,
) -> Vec<String> {
    let mut problems = torn_transactions(state, attempts, refusals_are_final);
    problems.extend(lost_acknowledged(state, attempts));
    problems
}

/// What a read-only transaction of every workload key answered, and when it was sent.
struct Snapshot {
    sent: Instant,
    state: BTreeMap<String, Parsed>,
}

/// Reads every workload key in one read-only transaction (one follower's snapshot),
/// again and again until `stop`; returns the snapshots it got.
fn start_snapshot_reader(
    leader: &str,
    stop: &Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Snapshot>> {
    let leader = leader.to_string();
    let stop = stop.clone();
    tokio::spawn(async move {
        let mut c = support::client(&leader);
        let txn = WORKLOAD_KEYS.iter().fold(Txn::new(), |t, k| t.then_get(k));
        let mut snapshots = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let sent = Instant::now();
            match c.txn(txn.clone()).await {
                Ok(answer) => {
                    assert!(answer.succeeded && answer.version.is_empty(), "{answer:?}");
                    let keys: Vec<&str> = answer.results.iter().map(|r| r.key.as_str()).collect();
                    assert_eq!(keys, WORKLOAD_KEYS, "one result per GET, in order");
                    let state = answer
                        .results
                        .into_iter()
                        .map(|r| {
                            let held = r
                                .found
                                .then(|| (r.value, version(&r.version, "a GET's version")));
                            (r.key, held)
                        })
                        .collect();
                    snapshots.push(Snapshot { sent, state });
                }
                // A node is down: back off instead of spinning.
                // A node is down, or (see the ignored test of read-only transactions
                // under writes) it starved: try again.
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
        snapshots
    })
}

/// Which node dies.
#[derive(Clone, Copy, Debug)]
enum Victim {
    Leader,
    Follower(usize),
}

/// Settles the cluster (every follower answers every workload key, all alike) and
/// checks that state against every transaction sent so far, and that the leader
/// answers the same.
async fn check_all_or_nothing(
    cluster: &Cluster,
    attempts: &BTreeMap<String, Attempt>,
    snapshots: &[Snapshot],
    refusals_are_final: bool,
    what: &str,
) {
    // Each snapshot is all or nothing too, and (linearizable) shows every transaction
    // acknowledged before it was sent.
    for Snapshot { sent, state } in snapshots {
        let mut problems = torn_transactions(state, attempts, refusals_are_final);
        let before: BTreeMap<String, Attempt> = attempts
            .iter()
            .filter(|(_, a)| a.answered < *sent)
            .map(|(v, a)| (v.clone(), a.clone()))
            .collect();
        problems.extend(lost_acknowledged(state, &before));
        assert!(
            problems.is_empty(),
            "{what}: a read-only transaction saw {problems:#?}\nsnapshot: {state:#?}"
        );
    }
    let state = settled_agreement(cluster).await;
    let acked = attempts.values().filter(|a| a.answer.is_ok()).count();
    let failed: BTreeSet<String> = attempts
        .values()
        .filter_map(|a| a.answer.err().map(|c| format!("{c:?}")))
        .collect();
    eprintln!(
        "{what}: {} transactions, {acked} acknowledged, failures {failed:?}; {} snapshots",
        attempts.len(),
        snapshots.len()
    );
    let problems = all_or_nothing_violations(&state, attempts, refusals_are_final);
    assert!(
        problems.is_empty(),
        "{what}: {problems:#?}\nstate: {state:#?}"
    );
    let mut c = cluster.client();
    for (key, held) in &state {
        let through_leader = match c.get_versioned(key).await {
            Ok((value, v)) => Some((value, version(&v, "leader's version"))),
            Err(s) if s.code() == Code::NotFound => None,
            Err(s) => panic!("{what}: Get({key}) through the leader: {}", describe(&s)),
        };
        assert_eq!(&through_leader, held, "{what}: {key} through the leader");
    }
}

/// Runs the multi-key workload and `kill -9`s `victim` while transactions are in
/// flight, restarts it and checks, once the cluster has settled, that every follower
/// holds the same and every transaction is all or nothing; several rounds, then a last
/// workload on the restarted cluster.
async fn kill_mid_transaction(victim: Victim) {
    const CLIENTS: usize = 4;
    const ROUNDS: u64 = 3;
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader_addr();
    let mut attempts = BTreeMap::new();
    let mut snapshots = Vec::new();
    // Only while the leader lives is its every answer its own (a killed leader's
    // clients see their connection fail, as UNAVAILABLE too).
    let refusals_are_final = matches!(victim, Victim::Follower(_));

    for round in 0..ROUNDS {
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(Progress::default());
        let tasks = start_workload(&leader, round, CLIENTS, &stop, &progress);
        let reader = start_snapshot_reader(&leader, &stop);
        wait_count("acknowledged transactions", &progress.acked, 25).await;
        match victim {
            Victim::Leader => cluster.kill_leader(),
            Victim::Follower(i) => {
                cluster.kill_follower(i);
                // Transactions go on (and fail) while it is down.
                let failed = progress.failed.load(Ordering::SeqCst);
                wait_count("refused transactions", &progress.failed, failed + CLIENTS).await;
            }
        }
        stop_workload(&stop, tasks, &mut attempts).await;
        snapshots.extend(reader.await.expect("the snapshot reader"));
        match victim {
            Victim::Leader => cluster.start_leader(&[]),
            Victim::Follower(i) => {
                cluster.start_follower(i, &[]);
                wait_follower_ready(&cluster.follower_addr(i)).await;
            }
        }
        wait_leader_ready(&leader).await;
        let what = format!("{victim:?} killed, round {round}");
        check_all_or_nothing(&cluster, &attempts, &snapshots, refusals_are_final, &what).await;
    }

    // The restarted cluster takes transactions on every key again.
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(Progress::default());
    let tasks = start_workload(&leader, ROUNDS, CLIENTS, &stop, &progress);
    let reader = start_snapshot_reader(&leader, &stop);
    wait_count(
        "acknowledged transactions after the restarts",
        &progress.acked,
        8,
    )
    .await;
    stop_workload(&stop, tasks, &mut attempts).await;
    snapshots.extend(reader.await.expect("the snapshot reader"));
    let what = format!("{victim:?}, after the restarts");
    check_all_or_nothing(&cluster, &attempts, &snapshots, refusals_are_final, &what).await;
}

/// The check itself catches a torn transaction, a lost acknowledged one and a refused
/// one that was applied (so the tests below can fail).
#[test]
fn the_all_or_nothing_check_catches_torn_lost_and_refused_transactions() {
    let v = |s: &str| version(s, "test");
    let attempt = |keys: &[&str], answer: Result<TxId, Code>| Attempt {
        keys: keys.iter().map(|k| k.to_string()).collect(),
        answer,
        answered: Instant::now(),
    };
    let attempts: BTreeMap<String, Attempt> = [
        ("t1", attempt(&["w0", "w1"], Ok(v("1.1")))),
        ("t2", attempt(&["w1", "w2"], Err(Code::Unknown))),
        ("t3", attempt(&["w0", "w2"], Err(Code::Aborted))),
    ]
    .into_iter()
    .map(|(k, a)| (k.to_string(), a))
    .collect();
    let state = |cells: &[(&str, Option<(&str, &str)>)]| -> BTreeMap<String, Parsed> {
        let mut state: BTreeMap<String, Parsed> = WORKLOAD_KEYS
            .iter()
            .map(|k| (k.to_string(), None))
            .collect();
        for (key, held) in cells {
            state.insert(
                key.to_string(),
                held.map(|(val, at)| (val.to_string(), v(at))),
            );
        }
        state
    };
    let good = state(&[
        ("w0", Some(("t1", "1.1"))),
        ("w1", Some(("t2", "1.2"))),
        ("w2", Some(("t2", "1.2"))),
    ]);
    assert_eq!(
        all_or_nothing_violations(&good, &attempts, true),
        Vec::<String>::new()
    );
    let nothing_of_t2 = state(&[("w0", Some(("t1", "1.1"))), ("w1", Some(("t1", "1.1")))]);
    assert!(all_or_nothing_violations(&nothing_of_t2, &attempts, true).is_empty());
    let t3_applied = state(&[
        ("w0", Some(("t3", "1.3"))),
        ("w1", Some(("t1", "1.1"))),
        ("w2", Some(("t3", "1.3"))),
    ]);
    assert!(
        all_or_nothing_violations(&t3_applied, &attempts, false).is_empty(),
        "a refusal seen by a client whose leader died may be a lost answer"
    );
    // (what, state, refusals are final, caught as torn (else as lost))
    let bad = [
        (
            "t2 torn",
            state(&[("w0", Some(("t1", "1.1"))), ("w1", Some(("t2", "1.2")))]),
            true,
            true,
        ),
        (
            "t1 lost",
            state(&[("w1", Some(("t2", "1.2"))), ("w2", Some(("t2", "1.2")))]),
            true,
            false,
        ),
        (
            "t1 at another version",
            state(&[("w0", Some(("t1", "1.3"))), ("w1", Some(("t1", "1.3")))]),
            true,
            true,
        ),
        (
            "t1 on a key of its other branch",
            state(&[
                ("w0", Some(("t1", "1.1"))),
                ("w1", Some(("t1", "1.1"))),
                ("w4", Some(("t1", "1.1"))),
            ]),
            false,
            true,
        ),
        ("t3 applied though refused", t3_applied, true, true),
        (
            "same version, another value",
            state(&[("w0", Some(("t1", "1.1"))), ("w1", Some(("t2", "1.1")))]),
            false,
            true,
        ),
        (
            "an unknown value",
            state(&[
                ("w0", Some(("t1", "1.1"))),
                ("w1", Some(("t1", "1.1"))),
                ("w3", Some(("zz", "1.1"))),
            ]),
            false,
            true,
        ),
    ];
    for (what, state, final_refusals, torn) in bad {
        let caught = if torn {
            torn_transactions(&state, &attempts, final_refusals)
        } else {
            lost_acknowledged(&state, &attempts)
        };
        assert!(!caught.is_empty(), "{what} not caught");
    }
}

/// `kill -9` of the leader while multi-key transactions are in flight: once restarted
/// and settled, every follower holds the same, and every transaction is all or nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_leader_mid_transaction_leaves_every_transaction_all_or_nothing() {
    kill_mid_transaction(Victim::Leader).await;
}

/// `kill -9` of a follower while multi-key transactions are in flight: the same, and
/// every transaction the leader refused (ABORTED, UNAVAILABLE) is applied nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_follower_mid_transaction_leaves_every_transaction_all_or_nothing() {
    kill_mid_transaction(Victim::Follower(1)).await;
}
