//! `tpc bench` end to end: the built binary loads a real leader and follower (processes
//! over Unix sockets in temporary directories) with each workload and reports JSON; and
//! an address nobody serves, or a hot key that holds no counter, is a setup failure,
//! exit status 2, named in the message.
//!
//! Nothing here depends on speed: a run must do some requests, all of them successful,
//! and leave behind what it says it wrote: every key it preloaded or put with a value of
//! the asked size, and the hot key of `cas` at its start plus the swaps.

#[path = "e2e_support/mod.rs"]
mod support;

use std::process::{Command, Output, Stdio};

use support::Cluster;

/// Runs `tpc bench ARGS` to its end.
fn bench(args: &[&str]) -> Output {
    Command::new(support::tpc_binary())
        .arg("bench")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run tpc bench")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `tpc bench --leader LEADER --json ARGS` (off the test's runtime, which serves
/// nothing but waits), checks that it succeeded, and returns its report.
async fn bench_json(leader: &str, args: &[&str]) -> serde_json::Value {
    let mut argv: Vec<String> = vec!["--leader".into(), leader.into(), "--json".into()];
    argv.extend(args.iter().map(|a| a.to_string()));
    let output = tokio::task::spawn_blocking(move || {
        bench(&argv.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .expect("the bench thread");
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(
        output.status.success(),
        "tpc bench {args:?} failed ({}): {stderr}",
        output.status
    );
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {stdout:?}"))
}

/// Checks that a report has some ops, no errors and every latency percentile; returns
/// the ops.
fn assert_clean(report: &serde_json::Value) -> u64 {
    let ops = report["ops"].as_u64().expect("ops is a number");
    assert!(ops > 0, "no successful requests: {report}");
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    assert!(
        report["seconds"].as_f64().is_some_and(|s| s > 0.0),
        "{report}"
    );
    assert!(report["ops_per_sec"].as_f64().is_some(), "{report}");
    for percentile in ["p50", "p90", "p99", "p999", "max"] {
        assert!(
            report["latency_us"][percentile].as_u64().is_some(),
            "latency_us.{percentile} missing: {report}"
        );
    }
    ops
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_run_against_a_real_cluster_reports_json_with_ops_and_no_errors() {
    let cluster = Cluster::start(1).await;
    let args = [
        "--seconds",
        "1",
        "--clients",
        "4",
        "--op",
        "mixed",
        "--keyspace",
        "20",
        "--value-size",
        "33",
    ];
    let report = bench_json(&cluster.leader_addr(), &args).await;
    assert_eq!(report["op"], "mixed", "{report}");
    assert_eq!(report["clients"], 4, "{report}");
    let ops = assert_clean(&report);
    // A mixed run breaks the total down into gets and puts.
    let per_op: u64 = ["get", "put"]
        .iter()
        .map(|kind| {
            assert_eq!(
                report["per_op"][kind]["errors"],
                serde_json::json!({}),
                "{report}"
            );
            report["per_op"][kind]["ops"]
                .as_u64()
                .unwrap_or_else(|| panic!("per_op.{kind}.ops missing: {report}"))
        })
        .sum();
    assert_eq!(per_op, ops, "{report}");

    // The preload wrote every key, and puts keep values of the asked size.
    let mut client = cluster.client();
    for i in 0..20 {
        let key = format!("bench-{i}");
        let value = client
            .get(&key)
            .await
            .unwrap_or_else(|s| panic!("Get({key}) after the bench: {s:?}"));
        assert_eq!(value.len(), 33, "{key} = {value:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_txn_run_commits_transactions_of_distinct_keys_with_no_errors() {
    let cluster = Cluster::start(1).await;
    let args = [
        "--seconds",
        "1",
        "--clients",
        "4",
        "--op",
        "txn",
        "--txn-keys",
        "3",
        "--keyspace",
        "12",
        "--value-size",
        "33",
    ];
    let report = bench_json(&cluster.leader_addr(), &args).await;
    assert_eq!(report["op"], "txn", "{report}");
    assert_eq!(report["txn_keys"], 3, "{report}");
    assert_clean(&report);
    assert!(report.get("per_op").is_none(), "{report}");

    // Nothing was preloaded: what is there, transactions wrote, at least one
    // transaction's three keys, every value of the asked size.
    let mut client = cluster.client();
    let mut written = 0;
    for i in 0..12 {
        let key = format!("bench-{i}");
        match client.get(&key).await {
            Ok(value) => {
                assert_eq!(value.len(), 33, "{key} = {value:?}");
                written += 1;
            }
            Err(status) if status.code() == tonic::Code::NotFound => {}
            Err(status) => panic!("Get({key}) after the bench: {status:?}"),
        }
    }
    assert!(written >= 3, "only {written} keys written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_txn_get_run_reads_preloaded_keys_with_no_errors() {
    let cluster = Cluster::start(1).await;
    let args = [
        "--seconds",
        "1",
        "--clients",
        "4",
        "--op",
        "txn-get",
        "--txn-keys",
        "4",
        "--keyspace",
        "20",
    ];
    let report = bench_json(&cluster.leader_addr(), &args).await;
    assert_eq!(report["op"], "txn-get", "{report}");
    assert_eq!(report["txn_keys"], 4, "{report}");
    // A GET that found nothing would be a NOT_FOUND error: the preload wrote them all.
    assert_clean(&report);
}

/// The hot key's counter, read through the leader.
async fn hot_counter(client: &mut tpc::client::Client) -> u64 {
    let value = client.get("bench-cas").await.expect("Get(bench-cas)");
    value
        .parse()
        .unwrap_or_else(|_| panic!("bench-cas holds {value:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_runs_add_exactly_their_swaps_to_the_hot_key_and_report_conflicts() {
    let cluster = Cluster::start(1).await;
    let leader = cluster.leader_addr();
    let mut client = cluster.client();
    let args = ["--seconds", "1", "--clients", "4", "--op", "cas"];

    // From an absent key (counter 0)...
    let report = bench_json(&leader, &args).await;
    assert_eq!(report["op"], "cas", "{report}");
    let swaps = assert_clean(&report);
    assert_eq!(report["cas"]["key"], "bench-cas", "{report}");
    assert_eq!(report["cas"]["start"], 0, "{report}");
    // Every client's first swap compares the same version: at most one holds.
    let conflicts = report["cas"]["conflicts"].as_u64().expect("conflicts");
    assert!(conflicts >= 1, "4 clients never conflicted: {report}");
    assert_eq!(hot_counter(&mut client).await, swaps, "{report}");

    // ... and from a counter set before the run.
    client
        .put("bench-cas", "1000")
        .await
        .expect("Put(bench-cas)");
    let report = bench_json(&leader, &args).await;
    let swaps = assert_clean(&report);
    assert_eq!(report["cas"]["start"], 1000, "{report}");
    assert_eq!(hot_counter(&mut client).await, 1000 + swaps, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_refuses_to_start_on_a_hot_key_that_holds_no_counter() {
    let cluster = Cluster::start(1).await;
    let mut client = cluster.client();
    client
        .put("bench-cas", "hello")
        .await
        .expect("Put(bench-cas)");
    let leader = cluster.leader_addr();
    let output = tokio::task::spawn_blocking(move || {
        bench(&["--leader", &leader, "--seconds", "1", "--op", "cas"])
    })
    .await
    .expect("the bench thread");
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains("the hot key bench-cas holds \"hello\", not a counter"),
        "{stderr}"
    );
    // It wrote nothing.
    assert_eq!(client.get("bench-cas").await.expect("Get"), "hello");
}

#[test]
fn an_address_nobody_serves_fails_with_exit_2_and_names_it() {
    let output = bench(&["--leader", "unix:/nonexistent", "--seconds", "1"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains("cannot connect to the leader at unix:/nonexistent"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty(), "{}", text(&output.stdout));
}
