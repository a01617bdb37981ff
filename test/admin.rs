//! The operator-facing gRPC services every node serves: health checking and server
//! reflection (so `grpcurl` works without the protos).

#[path = "e2e_support/mod.rs"]
mod support;

use std::time::Duration;

use support::{follower, leader, wait_follower_ready, wait_leader_ready, NodeDirs};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tpc::net::{self, Address};

async fn channel(addr: &str) -> tonic::transport::Channel {
    let addr: Address = addr.parse().expect("address");
    net::connect(&addr, Duration::from_secs(5))
        .await
        .expect("connect")
}

async fn health(addr: &str, service: &str) -> Result<ServingStatus, tonic::Status> {
    let mut client = HealthClient::new(channel(addr).await);
    let request = HealthCheckRequest {
        service: service.into(),
    };
    let status = client.check(request).await?.into_inner().status;
    Ok(ServingStatus::try_from(status).expect("a known status"))
}

async fn listed_services(addr: &str) -> Vec<String> {
    let mut client = ServerReflectionClient::new(channel(addr).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection call")
        .into_inner();
    let response = responses
        .message()
        .await
        .expect("a response")
        .expect("one message");
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
            names.sort();
            names
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_reports_health_and_lists_its_services() {
    let f1 = NodeDirs::new("admin-f1");
    let l = NodeDirs::new("admin-leader");
    let _follower = follower(&f1);
    let _leader = leader(&l, &[&f1]);
    wait_follower_ready(&f1.addr()).await;
    wait_leader_ready(&l.addr()).await;

    // A ready follower serves all of its services; health is reported as soon as
    // replay is done, which happened before reads were answered.
    for service in [
        "",
        "api.KeyValueAPI",
        "rpc.TwoPhaseCommit",
        "rpc.FollowerReads",
    ] {
        assert_eq!(
            health(&f1.addr(), service).await.expect("follower health"),
            ServingStatus::Serving,
            "{service:?}"
        );
    }
    for service in ["", "api.KeyValueAPI"] {
        assert_eq!(
            health(&l.addr(), service).await.expect("leader health"),
            ServingStatus::Serving,
            "{service:?}"
        );
    }
    // The leader does not serve the follower protocol, and says so.
    let unknown = health(&l.addr(), "rpc.TwoPhaseCommit")
        .await
        .expect_err("not a leader service");
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    let follower_services = listed_services(&f1.addr()).await;
    for name in [
        "api.KeyValueAPI",
        "rpc.TwoPhaseCommit",
        "rpc.FollowerReads",
        "grpc.health.v1.Health",
    ] {
        assert!(
            follower_services.iter().any(|s| s == name),
            "{name} in {follower_services:?}"
        );
    }
    let leader_services = listed_services(&l.addr()).await;
    assert!(
        leader_services.iter().any(|s| s == "api.KeyValueAPI"),
        "{leader_services:?}"
    );
    assert!(
        leader_services
            .iter()
            .any(|s| s.starts_with("grpc.reflection.")),
        "{leader_services:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_every_node_cleanly_and_loses_nothing() {
    let f1 = NodeDirs::new("term-f1");
    let f2 = NodeDirs::new("term-f2");
    let l = NodeDirs::new("term-leader");
    let mut followers = [follower(&f1), follower(&f2)];
    let mut the_leader = leader(&l, &[&f1, &f2]);
    wait_follower_ready(&f1.addr()).await;
    wait_follower_ready(&f2.addr()).await;
    wait_leader_ready(&l.addr()).await;
    let mut c = support::client(&l.addr());
    c.put("k", "v").await.expect("put");
    // The leader's streams to the followers are open now; they must not hold a
    // follower's shutdown up.
    for f in followers.iter_mut() {
        f.signal("TERM");
        let status = f.wait_exit(Duration::from_secs(10)).await;
        assert!(status.success(), "{} exited with {status}", f.name);
    }
    the_leader.signal("TERM");
    let status = the_leader.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "leader exited with {status}");
    assert!(l.log().contains("shutting down"));

    // Everything comes back.
    let _followers = [follower(&f1), follower(&f2)];
    let _leader = leader(&l, &[&f1, &f2]);
    wait_leader_ready(&l.addr()).await;
    assert_eq!(
        support::settled_get(&f1.addr(), "k").await.as_deref(),
        Some("v")
    );
    assert_eq!(
        support::settled_get(&f2.addr(), "k").await.as_deref(),
        Some("v")
    );
    assert_eq!(support::client(&l.addr()).get("k").await.expect("get"), "v");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_healthz_are_served_over_http() {
    let f1 = NodeDirs::new("http-f1");
    let l = NodeDirs::new("http-leader");
    let http = [("--http-port", "0")];
    let _follower = support::spawn_with_args(&f1, support::Role::Follower, &f1.addr(), &http);
    let _leader =
        support::spawn_with_args(&l, support::Role::leader(vec![f1.addr()]), &l.addr(), &http);
    wait_follower_ready(&f1.addr()).await;
    wait_leader_ready(&l.addr()).await;
    let mut c = support::client(&l.addr());
    c.put("k", "v").await.expect("put");
    assert_eq!(c.get("k").await.expect("get"), "v");
    support::settled_get(&f1.addr(), "k").await;

    let leader_http = support::http_address(&l).await;
    let follower_http = support::http_address(&f1).await;
    assert_eq!(support::http_get(&leader_http, "/healthz").await.0, 200);
    assert_eq!(support::http_get(&follower_http, "/healthz").await.0, 200);
    assert_eq!(support::http_get(&leader_http, "/nothing").await.0, 404);

    let (status, leader_metrics) = support::http_get(&leader_http, "/metrics").await;
    assert_eq!(status, 200);
    for expected in [
        "tpc_transactions_total{outcome=\"commit\"} 1",
        "tpc_request_duration_seconds_count{op=\"put\"} 1",
        "tpc_request_duration_seconds_count{op=\"get\"}",
        "tpc_followers_connected 1",
        "tpc_journal_fsync_duration_seconds_count",
        "tpc_checkpoint_duration_seconds_count 0",
    ] {
        assert!(
            leader_metrics.contains(expected),
            "leader /metrics lacks {expected}:\n{leader_metrics}"
        );
    }
    let (_, follower_metrics) = support::http_get(&follower_http, "/metrics").await;
    for expected in [
        "tpc_transactions_total{outcome=\"commit\"} 1",
        "tpc_prepared_transactions 0",
        "tpc_journal_fsync_duration_seconds_count",
        "tpc_checkpoint_duration_seconds_count 0",
        "tpc_request_duration_seconds_count{op=\"get\"}",
    ] {
        assert!(
            follower_metrics.contains(expected),
            "follower /metrics lacks {expected}:\n{follower_metrics}"
        );
    }
}

/// Runs `tpc status --leader ADDR --json` and parses its output.
fn status_json(leader: &str) -> serde_json::Value {
    let output = std::process::Command::new(support::tpc_binary())
        .args(["status", "--leader", leader, "--json"])
        .output()
        .expect("run tpc status");
    assert!(
        output.status.success(),
        "tpc status failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("tpc status --json prints JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_followers_up_and_down_and_the_leaders_journal() {
    let f1 = NodeDirs::new("status-f1");
    let f2 = NodeDirs::new("status-f2");
    let l = NodeDirs::new("status-leader");
    let _f1 = follower(&f1);
    let mut f2_node = follower(&f2);
    let _leader = leader(&l, &[&f1, &f2]);
    wait_follower_ready(&f1.addr()).await;
    wait_follower_ready(&f2.addr()).await;
    wait_leader_ready(&l.addr()).await;
    support::wait_view(&l.addr()).await;
    support::client(&l.addr()).put("k", "v").await.expect("put");

    let status = support::poll(
        "both followers connected",
        support::POLL_TIMEOUT,
        || async {
            let status = status_json(&l.addr());
            let connected = status["followers"]
                .as_array()
                .is_some_and(|fs| fs.iter().all(|f| f["connected"] == true));
            if connected {
                Ok(status)
            } else {
                Err(format!("{status}"))
            }
        },
    )
    .await;
    assert_eq!(status["role"], "leader");
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["epoch"], 1);
    assert_eq!(status["view_epoch"], 1, "both told their member ids");
    assert_eq!(
        status["replication"], 3,
        "the default: every one of 2 followers"
    );
    assert!(
        status["journal"]["bytes"].as_u64().unwrap_or(0) > 0,
        "{status}"
    );
    let addresses: Vec<&str> = status["followers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["address"].as_str())
        .collect();
    assert_eq!(addresses, vec![f1.addr(), f2.addr()]);
    assert!(
        status["followers"][0]["last_contact_unix_ms"]
            .as_i64()
            .is_some(),
        "{status}"
    );
    // Each follower's member id, as the file in its journal directory keeps it.
    for (i, dirs) in [&f1, &f2].iter().enumerate() {
        let kept = std::fs::read_to_string(dirs.journal_dir().join("member-id"))
            .expect("a follower keeps its member id");
        assert_eq!(status["followers"][i]["member_id"], kept.trim(), "{status}");
    }
    assert_ne!(
        status["followers"][0]["member_id"],
        status["followers"][1]["member_id"]
    );

    // A follower going down shows as such, with why.
    f2_node.kill();
    let status = support::poll("f2 shown down", support::POLL_TIMEOUT, || async {
        let status = status_json(&l.addr());
        if status["followers"][1]["connected"] == false {
            Ok(status)
        } else {
            Err(format!("{status}"))
        }
    })
    .await;
    assert_eq!(status["followers"][0]["connected"], true, "{status}");
    assert!(
        status["followers"][1]["last_error"].as_str().is_some(),
        "{status}"
    );

    // The text form names the same things.
    let output = std::process::Command::new(support::tpc_binary())
        .args(["status", "--leader", &l.addr()])
        .output()
        .expect("run tpc status");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains(&f2.addr()) && text.contains("not connected"),
        "{text}"
    );
    assert!(text.contains("in-flight transactions"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_an_unfinished_transaction_and_who_it_waits_for() {
    let f1 = NodeDirs::new("inflight-f1");
    let f2 = NodeDirs::new("inflight-f2");
    let l = NodeDirs::new("inflight-leader");
    let _f1 = follower(&f1);
    // f2 dies when the decision reaches it: the leader waits for its ACK.
    let _f2 = support::spawn(
        &f2,
        support::Role::Follower,
        &f2.addr(),
        &[("TPC_CRASH_AT", "follower-before-decision")],
    );
    let _leader = leader(&l, &[&f1, &f2]);
    wait_follower_ready(&f1.addr()).await;
    wait_follower_ready(&f2.addr()).await;
    wait_leader_ready(&l.addr()).await;
    support::client(&l.addr())
        .put("k", "v")
        .await
        .expect("the decision is durable");

    let status = support::poll(
        "the transaction awaiting f2",
        support::POLL_TIMEOUT,
        || async {
            let status = status_json(&l.addr());
            let awaits_f2 = status["transactions"][0]["awaiting"] == serde_json::json!([f2.addr()]);
            if awaits_f2 {
                Ok(status)
            } else {
                Err(format!("{status}"))
            }
        },
    )
    .await;
    let txn = &status["transactions"][0];
    assert_eq!(txn["key"], "k");
    assert_eq!(txn["phase"], "commit");
    assert_eq!(txn["txid"], "1.1");
    assert!(
        status["followers"][1]["pending_decisions"].as_u64() >= Some(1),
        "{status}"
    );
}

/// After a restart, a transaction the fence reports leave undecided shows as "in
/// doubt", waiting for the participant that has not answered; once it is back, the
/// transaction is decided (every follower voted COMMIT: committed) and leaves the list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_a_transaction_in_doubt_until_its_missing_participant_reports() {
    let dirs: Vec<NodeDirs> = ["doubt-f1", "doubt-f2", "doubt-l"]
        .iter()
        .map(|n| NodeDirs::new(n))
        .collect();
    let (f1, f2, l) = (&dirs[0], &dirs[1], &dirs[2]);
    let _f1 = follower(f1);
    let mut f2_node = follower(f2);
    wait_follower_ready(&f1.addr()).await;
    wait_follower_ready(&f2.addr()).await;
    // The leader dies once both COMMIT votes are in, before anything else.
    let mut first = support::spawn(
        l,
        support::Role::leader(vec![f1.addr(), f2.addr()]),
        &l.addr(),
        &[("TPC_CRASH_AT", "leader-after-last-vote")],
    );
    wait_leader_ready(&l.addr()).await;
    let _ = support::client(&l.addr()).put("k", "v").await;
    first.wait_exit(Duration::from_secs(10)).await;
    f2_node.kill();

    let _leader = leader(l, &[f1, f2]);
    wait_leader_ready(&l.addr()).await;
    let status = support::poll(
        "the transaction in doubt",
        support::POLL_TIMEOUT,
        || async {
            let status = status_json(&l.addr());
            let in_doubt = status["transactions"][0]["phase"] == "in doubt";
            if in_doubt {
                Ok(status)
            } else {
                Err(format!("{status}"))
            }
        },
    )
    .await;
    let txn = &status["transactions"][0];
    assert_eq!(txn["txid"], "1.1");
    assert_eq!(txn["key"], "k");
    assert_eq!(txn["awaiting"], serde_json::json!([f2.addr()]));

    let _f2 = follower(f2);
    support::poll(
        "the transaction to be decided",
        support::POLL_TIMEOUT,
        || async {
            let status = status_json(&l.addr());
            match status["transactions"].as_array() {
                Some(list) if list.is_empty() => Ok(()),
                _ => Err(format!("{status}")),
            }
        },
    )
    .await;
    assert_eq!(
        support::client(&l.addr()).get("k").await.expect("get"),
        "v",
        "every participant voted COMMIT"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaying_follower_is_not_serving_refuses_reads_and_holds_streams() {
    let f1 = NodeDirs::new("replay-f1");
    let l = NodeDirs::new("replay-leader");
    let go = f1.root().join("go");
    let pause = format!("follower-before-replay={}", go.display());
    let _f1 = support::spawn(
        &f1,
        support::Role::Follower,
        &f1.addr(),
        &[("TPC_PAUSE_AT", pause.as_str())],
    );
    let _leader = support::spawn(
        &l,
        support::Role::Leader {
            followers: vec![f1.addr()],
            vote_timeout: "10s".into(),
        },
        &l.addr(),
        &[],
    );
    // The server answers while the journal is not replayed yet: NOT_SERVING.
    let status = support::poll(
        "the paused follower to answer health checks",
        support::POLL_TIMEOUT,
        || async {
            // Not connectable yet (the socket is bound just after the journal is read).
            let addr: Address = f1.addr().parse().expect("address");
            net::connect(&addr, Duration::from_secs(1)).await?;
            health(&f1.addr(), "").await.map_err(|e| format!("{e:?}"))
        },
    )
    .await;
    assert_eq!(status, ServingStatus::NotServing);
    // The state thread prints this as it reaches the pause, beside the server's start.
    support::poll(
        "the follower to report its pause",
        support::POLL_TIMEOUT,
        || {
            let paused = f1.log().contains("paused at follower-before-replay");
            async move { paused.then_some(()).ok_or_else(|| "not yet".to_string()) }
        },
    )
    .await;
    let read = support::get(&f1.addr(), "k")
        .await
        .expect_err("no reads before replay");
    assert_eq!(read.code(), tonic::Code::Unavailable, "{read:?}");
    // A write's stream to it is held, not failed: the write waits for the replay. (The
    // leader is up once its health says so; its reads would wait for the follower.)
    support::poll("the leader serving", support::POLL_TIMEOUT, || async {
        let addr: Address = l.addr().parse().expect("address");
        net::connect(&addr, Duration::from_secs(1)).await?;
        match health(&l.addr(), "").await {
            Ok(ServingStatus::Serving) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let leader_addr = l.addr();
    let write = tokio::spawn(async move { support::client(&leader_addr).put("k", "v").await });
    // The PREPARE is on its way and waits: the transaction is voting.
    support::poll("the write voting", support::POLL_TIMEOUT, || async {
        let status = status_json(&l.addr());
        if status["transactions"][0]["phase"] == "voting" {
            Ok(())
        } else {
            Err(format!("{status}"))
        }
    })
    .await;
    std::fs::write(&go, "").expect("let the replay go on");
    write
        .await
        .expect("the write task")
        .expect("the write succeeds once the follower is ready");
    assert_eq!(
        health(&f1.addr(), "").await.expect("health"),
        ServingStatus::Serving
    );
    assert_eq!(
        support::settled_get(&f1.addr(), "k").await.as_deref(),
        Some("v")
    );
}

/// A `tpc` process started by [`spawn_follower_with`]; SIGKILLed and reaped on drop.
struct Process(std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a follower on its default address with extra flags and environment (the
/// support module has one or the other), logging to its `stderr.log`.
fn spawn_follower_with(dirs: &NodeDirs, args: &[&str], env: &[(&str, &str)]) -> Process {
    let mut command = std::process::Command::new(support::tpc_binary());
    command
        .args(args)
        .arg("--tpc-follower")
        .arg("--kv-dir")
        .arg(dirs.kv_dir())
        .arg("--journal-dir")
        .arg(dirs.journal_dir())
        .arg("--listen")
        .arg(dirs.addr())
        .arg("--name")
        .arg(&dirs.name)
        .current_dir(dirs.cwd())
        .env_remove(support::CRASH_AT)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(dirs.open_log(&format!("start {} env={env:?}", dirs.name)));
    Process(command.spawn().expect("spawn the tpc binary"))
}

/// The value of the sample `name` (name and labels, exactly) in a Prometheus text
/// document; 0 if absent (a metric appears on its first use).
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .map(|value| value.trim().parse().expect("a sample value"))
        .next()
        .unwrap_or(0.0)
}

const FSYNCS: &str = "tpc_journal_fsync_duration_seconds_count";
const PREPARED: &str = "tpc_prepared_transactions";

/// A follower journals the messages that queued up while it was busy together: one
/// write and one fsync for the batch, not one per message.
///
/// How the count is made deterministic:
///
/// - **The PREPAREs are all queued before the follower takes any.** f1 is held before
///   its journal replay (`TPC_PAUSE_AT`); its streams are accepted and their messages
///   queue. 32 puts on distinct keys go to the leader at once, and f1 is released only
///   once the leader's trace (`/api/events`) shows all 32 PREPAREs written to f1's
///   stream. (That is the leader's side of the socket: a PREPARE could in principle
///   still be in transit when f1 starts taking messages, hence the small slack below.)
/// - **Every PREPARE gets a vote.** The puts start only once both held followers take
///   connections (their health answers `NOT_SERVING`), so none is aborted as
///   unreachable.
/// - **No decision can reach f1 while it works through them.** The decisions wait for
///   every vote, and the second follower f2 is held (before its replay too) until f1 is
///   done: f1's prepared-transactions gauge reads 32. At that moment f1's fsyncs are
///   exactly those of its PREPAREs: 2 expected — the very first message adopts the
///   cluster id and is handled alone, the other 31 form one batch. (MAX_BATCH is 256.)
///   A follower that syncs once per message shows 32.
/// - The decisions that follow arrive in as many groups as the leader's group commit and
///   the network make: their count is not deterministic, so it is not asserted; that
///   they all commit is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_journals_queued_messages_with_one_fsync() {
    const N: usize = 32;
    let f1 = NodeDirs::new("batch-f1");
    let f2 = NodeDirs::new("batch-f2");
    let l = NodeDirs::new("batch-leader");
    let (go1, go2) = (f1.root().join("go"), f2.root().join("go"));
    let pause1 = format!("follower-before-replay={}", go1.display());
    let pause2 = format!("follower-before-replay={}", go2.display());
    let _f1 = spawn_follower_with(
        &f1,
        &["--http-port", "0"],
        &[("TPC_PAUSE_AT", pause1.as_str())],
    );
    let _f2 = support::spawn(
        &f2,
        support::Role::Follower,
        &f2.addr(),
        &[("TPC_PAUSE_AT", pause2.as_str())],
    );
    // A vote timeout far above the test's own bounds: the PREPAREs wait at the held
    // followers, and must not time out meanwhile.
    let _leader = support::spawn_with_args(
        &l,
        support::Role::Leader {
            followers: vec![f1.addr(), f2.addr()],
            vote_timeout: "60s".into(),
        },
        &l.addr(),
        &[("--http-port", "0")],
    );
    let f1_http = support::http_address(&f1).await;
    let leader_http = support::http_address(&l).await;
    // Both held followers must take connections before the puts: a PREPARE to a
    // follower that isn't listening yet gets no vote, and its write is aborted.
    for follower in [&f1, &f2] {
        support::poll(
            "a held follower listening",
            support::POLL_TIMEOUT,
            || async {
                let addr: Address = follower.addr().parse().expect("address");
                net::connect(&addr, Duration::from_secs(1)).await?;
                match health(&follower.addr(), "").await {
                    Ok(ServingStatus::NotServing) => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
    }
    support::poll("the leader serving", support::POLL_TIMEOUT, || async {
        let addr: Address = l.addr().parse().expect("address");
        net::connect(&addr, Duration::from_secs(1)).await?;
        match health(&l.addr(), "").await {
            Ok(ServingStatus::Serving) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let before = sample(&support::http_get(&f1_http, "/metrics").await.1, FSYNCS);

    let puts: Vec<_> = (0..N)
        .map(|i| {
            let leader = l.addr();
            tokio::spawn(async move {
                tpc::client::Client::new(&leader, Duration::from_secs(60))
                    .expect("client")
                    .put(&format!("key{i}"), "v")
                    .await
            })
        })
        .collect();
    let f1_name = f1.addr();
    support::poll(
        "all PREPAREs written to f1's stream",
        support::POLL_TIMEOUT,
        || async {
            let events: serde_json::Value =
                serde_json::from_str(&support::http_get(&leader_http, "/api/events").await.1)
                    .expect("events are JSON");
            let mut sent: Vec<&str> = events
                .as_array()
                .expect("an array of events")
                .iter()
                .filter(|e| e["kind"] == "prepare" && e["follower"] == f1_name.as_str())
                .filter_map(|e| e["txid"].as_str())
                .collect();
            sent.sort_unstable();
            sent.dedup();
            if sent.len() == N {
                Ok(())
            } else {
                Err(format!("{} of {N}", sent.len()))
            }
        },
    )
    .await;

    std::fs::write(&go1, "").expect("release f1");
    let metrics = support::poll(
        "f1 to hold every transaction prepared",
        support::POLL_TIMEOUT,
        || async {
            let metrics = support::http_get(&f1_http, "/metrics").await.1;
            if sample(&metrics, PREPARED) == N as f64 {
                Ok(metrics)
            } else {
                Err(format!("{PREPARED} = {}", sample(&metrics, PREPARED)))
            }
        },
    )
    .await;
    let prepare_fsyncs = sample(&metrics, FSYNCS) - before;
    assert!(
        (1.0..=4.0).contains(&prepare_fsyncs),
        "f1 journaled {N} queued PREPAREs with {prepare_fsyncs} fsyncs; expected 2 (the \
         first adopts the cluster id alone, the rest share one), at most 4 allowing for \
         PREPAREs still in transit at the release; once per message would be {N}"
    );

    std::fs::write(&go2, "").expect("release f2");
    for (i, put) in puts.into_iter().enumerate() {
        put.await
            .expect("put task")
            .unwrap_or_else(|status| panic!("put key{i}: {status:?}"));
    }
    support::poll(
        "f1 to apply every decision",
        support::POLL_TIMEOUT,
        || async {
            let metrics = support::http_get(&f1_http, "/metrics").await.1;
            let commits = sample(&metrics, "tpc_transactions_total{outcome=\"commit\"}");
            if sample(&metrics, PREPARED) == 0.0 && commits == N as f64 {
                Ok(())
            } else {
                Err(format!(
                    "prepared {}, committed {commits}",
                    sample(&metrics, PREPARED)
                ))
            }
        },
    )
    .await;
}
