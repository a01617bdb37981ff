//! `tpc bench` end to end: the built binary loads a real leader and follower (processes
//! over Unix sockets in temporary directories) and reports JSON; and an address nobody
//! serves is a setup failure, exit status 2, named in the message.
//!
//! Nothing here depends on speed: a run must do some requests, all of them successful,
//! and leave every key it preloaded behind with a value of the asked size.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_run_against_a_real_cluster_reports_json_with_ops_and_no_errors() {
    let cluster = Cluster::start(1).await;
    let leader = cluster.leader_addr();
    let args = [
        "--leader",
        &leader,
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
        "--json",
    ]
    .map(String::from);
    let output = tokio::task::spawn_blocking(move || {
        bench(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .expect("the bench thread");
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(
        output.status.success(),
        "tpc bench failed ({}): {stderr}",
        output.status
    );
    let report: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {stdout:?}"));

    assert_eq!(report["op"], "mixed", "{report}");
    assert_eq!(report["clients"], 4, "{report}");
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
