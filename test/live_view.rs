//! The leader's live view, loaded in headless Chromium (Debian's `chromium` package,
//! which `.ci/run` installs; without it these tests say so and pass without running):
//! the page loads, lists the followers, shows a transaction's messages after a Put, and
//! shows a follower going down after it is killed.

#[path = "e2e_support/mod.rs"]
mod support;

use std::path::Path;
use std::process::Command;

use support::{spawn_with_args, wait_follower_ready, wait_leader_ready, NodeDirs, Role};

const CHROMIUM: &str = "/usr/bin/chromium";

/// The page's DOM after its scripts ran (3 s of virtual time: several polls).
fn rendered_dom(url: &str, profile: &Path) -> String {
    let output = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=3000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn card_state(dom: &str, address: &str) -> Option<&'static str> {
    for state in ["up", "down"] {
        if dom.contains(&format!(
            "class=\"node follower {state}\" data-address=\"{address}\""
        )) {
            return Some(state);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_view_shows_followers_transactions_and_a_follower_going_down() {
    if !Path::new(CHROMIUM).exists() {
        eprintln!("SKIPPED the live view test: {CHROMIUM} is not installed (apt-get install chromium; .ci/run does)");
        return;
    }
    let dirs: Vec<NodeDirs> = (1..=3)
        .map(|i| NodeDirs::new(&format!("view-f{i}")))
        .collect();
    let l = NodeDirs::new("view-leader");
    let mut followers: Vec<_> = dirs.iter().map(support::follower).collect();
    let addresses: Vec<String> = dirs.iter().map(|d| d.addr()).collect();
    let _leader = spawn_with_args(
        &l,
        Role::leader(addresses.clone()),
        &l.addr(),
        &[("--http-port", "0")],
    );
    for d in &dirs {
        wait_follower_ready(&d.addr()).await;
    }
    wait_leader_ready(&l.addr()).await;
    let url = format!("http://{}/", support::http_address(&l).await);
    let profile = tempfile::tempdir().expect("a chromium profile dir");

    // The page loads and lists every follower, up (the idle leader probes them).
    let dom = support::poll("every follower shown up", support::POLL_TIMEOUT, || async {
        let dom = rendered_dom(&url, profile.path());
        if addresses.iter().all(|a| card_state(&dom, a) == Some("up")) {
            Ok(dom)
        } else {
            Err(dom)
        }
    })
    .await;
    assert!(dom.contains("tpc live view"));

    // A Put shows up as a transaction with its messages.
    support::client(&l.addr())
        .put("greeting", "hello")
        .await
        .expect("put");
    let dom = rendered_dom(&url, profile.path());
    assert!(
        dom.contains("data-txid=\"1.1\""),
        "no diagram of transaction 1.1:\n{dom}"
    );
    assert!(dom.contains("key greeting"), "{dom}");
    support::wait_view(&l.addr()).await;
    let dom = rendered_dom(&url, profile.path());
    assert!(
        dom.contains("view 1, each key on 3 of 3 followers"),
        "{dom}"
    );
    for label in ["PREPARE", "vote COMMIT", "GLOBAL COMMIT", "ACK"] {
        assert!(dom.contains(label), "no {label} in the diagram:\n{dom}");
    }

    // A killed follower is shown down.
    followers[2].kill();
    let down = &addresses[2];
    support::poll(
        "the killed follower shown down",
        support::POLL_TIMEOUT,
        || async {
            let dom = rendered_dom(&url, profile.path());
            if card_state(&dom, down) == Some("down") {
                Ok(())
            } else {
                Err(dom)
            }
        },
    )
    .await;
}
