//! The cluster console (`scripts/cluster.sh --script FILE`) with real processes: a
//! script kills, starts, cuts off and heals nodes, writing between each step; each
//! failure shows in the writes, each repair ends it, and the script replays the same
//! way each time.

#[path = "e2e_support/mod.rs"]
mod support;

use std::process::Command;

/// Runs `script` with `scripts/cluster.sh` (3 followers, fresh data, ports from
/// `base`) and returns what it printed, stdout and stderr together, in order.
fn run_console(script: &str, base: u16) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let script_path = dir.path().join("script");
    std::fs::write(&script_path, script).expect("write the script");
    let output_path = dir.path().join("output");
    let output = std::fs::File::create(&output_path).expect("output file");
    let status = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster.sh"))
        .arg("3")
        .arg("--data")
        .arg(dir.path().join("data"))
        .arg("--port")
        .arg(base.to_string())
        .arg("--script")
        .arg(&script_path)
        .env("TPC_BIN", support::tpc_binary())
        .env("RUST_LOG", "error")
        .stdin(std::process::Stdio::null())
        .stdout(output.try_clone().expect("clone"))
        .stderr(output)
        .status()
        .expect("run cluster.sh");
    let printed = std::fs::read_to_string(&output_path).expect("read the output");
    assert!(status.success(), "cluster.sh failed: {printed}");
    printed
}

/// What the console printed after `tpc> command` (until the next command).
fn after<'a>(printed: &'a str, command: &str) -> &'a str {
    let marker = format!("tpc> {command}\n");
    let start = printed
        .find(&marker)
        .unwrap_or_else(|| panic!("{command:?} did not run: {printed}"))
        + marker.len();
    let rest = &printed[start..];
    &rest[..rest.find("tpc> ").unwrap_or(rest.len())]
}

#[test]
fn a_script_breaks_and_repairs_the_cluster_and_every_step_shows() {
    let script = "\
client put k 1
kill f1
client put k 2
status
start f1
client put k 3
cut f2
client put k 4
status
heal
client put k 5
client get k
quit
";
    // Ports no other test uses, below Linux's ephemeral range (32768 and up), where an
    // outgoing connection could hold one; HTTP is base+80.
    let base = 20000 + (std::process::id() % 120) as u16 * 100;
    let printed = run_console(script, base);
    let ok = |command: &str| {
        let out = after(&printed, command);
        assert!(
            !out.contains("error"),
            "{command:?} failed: {out}\n\nall: {printed}"
        );
    };
    let unavailable = |command: &str| {
        let out = after(&printed, command);
        assert!(
            out.contains("UNAVAILABLE"),
            "{command:?} was not refused: {out}\n\nall: {printed}"
        );
    };
    ok("client put k 1");
    assert!(after(&printed, "kill f1").contains("f1 killed"));
    unavailable("client put k 2");
    assert!(after(&printed, "status").contains("down"), "{printed}");
    assert!(
        after(&printed, "start f1").contains("f1 started"),
        "{printed}"
    );
    ok("client put k 3");
    assert!(
        after(&printed, "cut f2").contains("f2 cut off"),
        "{printed}"
    );
    unavailable("client put k 4");
    let cut_status = printed
        .split("tpc> status\n")
        .nth(2)
        .expect("a second status");
    assert!(cut_status.contains("up, cut off"), "{cut_status}");
    assert!(after(&printed, "heal").contains("f2 healed"), "{printed}");
    ok("client put k 5");
    assert_eq!(after(&printed, "client get k").trim(), "5", "{printed}");
    assert!(printed.contains("stopping the cluster"), "{printed}");
}
