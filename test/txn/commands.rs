//! The shell's one-shot commands (`cas`, `mput`, `mdel`, `txn`, `get -v`): output and
//! exit codes; and the interactive shell, its lines given on stdin.

use super::*;

// ---------------------------------------------------------------------------------------
// 8. The shell's one-shot commands.
// ---------------------------------------------------------------------------------------

/// Runs `tpc client --leader LEADER ARGS...`.
fn tpc_client(leader: &str, args: &[&str]) -> Output {
    std::process::Command::new(support::tpc_binary())
        .args(["client", "--leader", leader])
        .args(args)
        .output()
        .expect("run tpc client")
}

/// Runs the interactive shell, `tpc client --leader LEADER`, with `lines` on its stdin
/// (not a terminal: the shell reads them as they come) and a HOME of its own, for its
/// history file.
fn tpc_shell(leader: &str, lines: &str) -> Output {
    use std::io::Write;
    let home = tempfile::tempdir().expect("a HOME for the shell");
    let mut child = std::process::Command::new(support::tpc_binary())
        .args(["client", "--leader", leader])
        .env("HOME", home.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run tpc client");
    let mut stdin = child.stdin.take().expect("the shell's stdin");
    stdin.write_all(lines.as_bytes()).expect("write the lines");
    drop(stdin);
    child.wait_with_output().expect("the shell's output")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts the exit code of a `tpc client` run.
fn assert_exit(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: stdout {:?}, stderr {:?}",
        stdout(out),
        stderr(out)
    );
}

/// `tpc client cas|mput|mdel|txn|get -v`: what they print and their exit codes (0 done,
/// 1 not swapped or not found, 2 a usage error, with the usage on stderr).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_cas_mput_mdel_and_txn_commands_print_and_exit_as_documented() {
    let cluster = Cluster::start(2).await;
    let leader = cluster.leader_addr();
    let run = |args: &[&str]| tpc_client(&leader, args);

    let out = run(&["mput", "a", "1", "b", "2", "my key", "a value"]);
    assert_exit(&out, 0, "mput");
    let (_, v1) = settled_version(&leader, "a").await.expect("a");
    assert_replicas(&cluster, "b", Some(("2", &v1))).await;
    assert_replicas(&cluster, "my key", Some(("a value", &v1))).await;

    for flag in ["-v", "--with-version"] {
        let out = run(&["get", flag, "a"]);
        assert_exit(&out, 0, flag);
        assert_eq!(stdout(&out), format!("1\nversion {v1}\n"), "{flag}");
    }
    // One pair is enough.
    let out = run(&["mput", "one", "1"]);
    assert_exit(&out, 0, "mput of one pair");
    assert!(settled_version(&leader, "one").await.is_some());

    // cas: 0 when swapped; 1 when not, naming the current value and version.
    let out = run(&["cas", "a", "1", "5"]);
    assert_exit(&out, 0, "cas 1 -> 5");
    let (_, v5) = settled_version(&leader, "a").await.expect("a");
    assert_replicas(&cluster, "a", Some(("5", &v5))).await;
    let out = run(&["cas", "a", "1", "6"]);
    assert_exit(&out, 1, "cas 1 -> 6");
    let err = stderr(&out);
    assert!(
        err.contains("not swapped") && err.contains("\"5\"") && err.contains(&v5),
        "{err:?}"
    );
    let out = run(&["cas", "absent", "x", "y"]);
    assert_exit(&out, 1, "cas on an absent key");
    assert!(stderr(&out).contains("absent"), "{out:?}");
    assert_replicas(&cluster, "a", Some(("5", &v5))).await;
    assert_replicas(&cluster, "absent", None).await;

    // txn: the then branch.
    let out = run(&[
        "txn", "if", "a", "=", "5", "then", "put", "a", "2", "else", "get", "a",
    ]);
    assert_exit(&out, 0, "txn that succeeds");
    let (_, v2) = settled_version(&leader, "a").await.expect("a");
    assert_eq!(
        stdout(&out),
        format!("succeeded: the then branch ran\nversion {v2}\n")
    );
    assert_replicas(&cluster, "a", Some(("2", &v2))).await;
    // The else branch: what its GET read, and no version (nothing written).
    let out = run(&[
        "txn", "if", "a", "=", "1", "then", "put", "a", "2", "else", "get", "a",
    ]);
    assert_exit(&out, 0, "txn whose else branch runs");
    assert_eq!(
        stdout(&out),
        format!("compares failed: the else branch ran\nget \"a\": \"2\" (version {v2})\n")
    );
    assert_replicas(&cluster, "a", Some(("2", &v2))).await;
    // Several conditions and ops, a version compare, a missing key's GET.
    let out = run(&[
        "txn", "if", "a", "version", "=", &v2, "and", "zz", "missing", "then", "get", "zz,", "put",
        "c", "3,", "del", "b",
    ]);
    assert_exit(&out, 0, "txn with a version compare");
    let (_, v3) = settled_version(&leader, "c").await.expect("c");
    assert_eq!(
        stdout(&out),
        format!("succeeded: the then branch ran\nget \"zz\": not found\nversion {v3}\n")
    );
    assert_replicas(&cluster, "b", None).await;

    // mdel, then get of a deleted key: 1, NOT_FOUND.
    let out = run(&["mdel", "a", "c", "never"]);
    assert_exit(&out, 0, "mdel");
    for key in ["a", "c"] {
        assert_replicas(&cluster, key, None).await;
        let out = run(&["get", key]);
        assert_exit(&out, 1, "get of a deleted key");
        assert!(stderr(&out).contains("NOT_FOUND"), "{out:?}");
    }

    // Usage errors: 2, the usage on stderr, nothing sent.
    for (args, needle) in [
        (
            vec!["txn", "if", "a", "~", "1", "then", "get", "a"],
            "usage: txn",
        ),
        (
            vec!["txn", "if", "my key", "exists", "put", "x", "1"],
            "usage: txn",
        ),
        (vec!["txn", "then", "put", "x"], "usage: txn"),
        (vec!["mput", "x", "1", "y"], "usage: mput"),
        (vec!["mput", "x", "1", "x", "2"], "key \"x\" appears twice"),
        (vec!["mdel", "x", "y", "x"], "key \"x\" appears twice"),
        (
            vec!["get", "--version", "x"],
            "unexpected argument '--version'",
        ),
        (vec!["mput", "x"], "Usage"),
        (vec!["mdel"], "Usage"),
        (vec!["cas", "x", "1"], "Usage"),
    ] {
        let out = run(&args);
        assert_exit(&out, 2, &format!("{args:?}"));
        assert!(
            stderr(&out).contains(needle),
            "{args:?}: stderr should contain {needle:?}: {:?}",
            stderr(&out)
        );
        assert!(stdout(&out).is_empty(), "{args:?}: {out:?}");
    }
    assert_replicas(&cluster, "x", None).await;
    assert_replicas(&cluster, "my key", Some(("a value", &v1))).await;
}

/// `txn` writes the empty value and values that end with a comma: in the shell with
/// quotes (a comma right after a quoted word ends the op), in one-shot mode with one
/// argument per word (a comma ending an argument separates ops only before the next op).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_writes_empty_values_and_values_that_end_with_a_comma() {
    let cluster = Cluster::start(1).await;
    let leader = cluster.leader_addr();

    let out = tpc_client(
        &leader,
        &[
            "txn", "put", "empty", "", ",", "put", "comma", "x,", ",", "put", "one,", "1,", "put",
            "last", "y,",
        ],
    );
    assert_exit(&out, 0, "one-shot txn");
    let (_, v) = settled_version(&leader, "empty").await.expect("empty");
    for (key, value) in [
        ("empty", ""),
        ("comma", "x,"),
        ("one,", "1"),
        ("last", "y,"),
    ] {
        assert_replicas(&cluster, key, Some((value, &v))).await;
    }

    let out = tpc_shell(
        &leader,
        "txn put a \"x\", put 'b' \"\", put c 'z,', put d w\nget b\nget c\n",
    );
    assert_exit(&out, 0, "the shell");
    assert!(!stdout(&out).contains("error"), "{out:?}");
    let (_, v) = settled_version(&leader, "a").await.expect("a");
    for (key, value) in [("a", "x"), ("b", ""), ("c", "z,"), ("d", "w")] {
        assert_replicas(&cluster, key, Some((value, &v))).await;
    }
}

/// A pipe whose reader is gone: writing to it fails with EPIPE.
fn closed_pipe() -> std::process::Stdio {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    writer.into()
}

/// Runs `tpc client --leader LEADER ARGS...` with `lines` on stdin, stdout or stderr
/// (`closed`) a closed pipe, and the other one captured.
fn tpc_client_into_closed_pipe(leader: &str, args: &[&str], lines: &str, closed: &str) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let home = tempfile::tempdir().expect("a HOME for the shell");
    let mut command = std::process::Command::new(support::tpc_binary());
    command
        .args(["client", "--leader", leader])
        .args(args)
        .env("HOME", home.path())
        .stdin(Stdio::piped());
    match closed {
        "stdout" => command.stdout(closed_pipe()).stderr(Stdio::piped()),
        "stderr" => command.stdout(Stdio::piped()).stderr(closed_pipe()),
        other => panic!("{other}: not stdout or stderr"),
    };
    let mut child = command.spawn().expect("run tpc client");
    let mut stdin = child.stdin.take().expect("the client's stdin");
    stdin.write_all(lines.as_bytes()).expect("write the lines");
    drop(stdin);
    child.wait_with_output().expect("the client's output")
}

/// With stdout or stderr a closed pipe (`tpc client get k | head -c0`), `tpc client`
/// ends with its usual error status, quietly: no panic (status 101), nothing said
/// about the pipe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pipe_on_stdout_or_stderr_ends_the_client_with_an_error_status_not_a_panic() {
    let cluster = Cluster::start(1).await;
    let leader = cluster.leader_addr();
    assert_exit(&tpc_client(&leader, &["put", "k", "v"]), 0, "put");

    for (args, lines, closed, code) in [
        (vec!["get", "k"], "", "stdout", 2),
        (vec!["txn", "get", "k"], "", "stdout", 2),
        (vec!["get", "absent"], "", "stderr", 1),
        (vec!["cas", "k", "x", "y"], "", "stderr", 1),
        (vec!["mput", "k"], "", "stderr", 2),
        (vec![], "get k\nget k\n", "stdout", 2),
        // Not a closed pipe's fault: done, and its own status.
        (vec!["put", "k", "w"], "", "stdout", 0),
        (vec!["put", "k", "w"], "", "stderr", 0),
    ] {
        let out = tpc_client_into_closed_pipe(&leader, &args, lines, closed);
        let what = format!("{args:?} with {closed} closed");
        assert_exit(&out, code, &what);
        assert!(out.stderr.is_empty(), "{what}: {out:?}");
    }
    // `tpc status` too.
    let out = std::process::Command::new(support::tpc_binary())
        .args(["status", "--leader", &leader])
        .stdout(closed_pipe())
        .output()
        .expect("run tpc status");
    assert_exit(&out, 2, "tpc status with stdout closed");
    assert!(out.stderr.is_empty(), "{out:?}");
}

/// `put KEY --value-file PATH` (`-`: stdin) writes a value longer than one argument may
/// be (128 KiB on Linux), byte for byte; a file over the value limit is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_writes_a_value_from_a_file_or_stdin_longer_than_an_argument_may_be() {
    use std::io::Write;
    use std::process::Stdio;
    let cluster = Cluster::start(1).await;
    let leader = cluster.leader_addr();
    let dir = tempfile::tempdir().expect("a temp dir");
    // 300 KiB of lines, ending with a newline, which is part of the value.
    let value: String = (0..300 * KIB / 10)
        .map(|i| format!("{:9}\n", i % 1_000_000_000))
        .collect();
    assert!(value.len() > 128 * KIB);
    let path = dir.path().join("value");
    std::fs::write(&path, &value).expect("write the value file");

    let out = tpc_client(
        &leader,
        &[
            "put",
            "from-file",
            "--value-file",
            path.to_str().expect("a UTF-8 path"),
        ],
    );
    assert_exit(&out, 0, "put --value-file PATH");
    let mut child = std::process::Command::new(support::tpc_binary())
        .args([
            "client",
            "--leader",
            &leader,
            "put",
            "from-stdin",
            "--value-file",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tpc client");
    let mut stdin = child.stdin.take().expect("the client's stdin");
    stdin.write_all(value.as_bytes()).expect("write the value");
    drop(stdin);
    let out = child.wait_with_output().expect("the client's output");
    assert_exit(&out, 0, "put --value-file -");

    for key in ["from-file", "from-stdin"] {
        let out = tpc_client(&leader, &["get", key]);
        assert_exit(&out, 0, key);
        assert!(
            out.stdout == format!("{value}\n").as_bytes(),
            "{key}: not the value"
        );
        let (held, _) = settled_version(&cluster.follower_addr(0), key)
            .await
            .expect(key);
        assert!(held == value, "{key} on the follower: not the value");
    }

    std::fs::write(&path, "v".repeat(3 * MIB + 1)).expect("write the value file");
    let out = tpc_client(
        &leader,
        &[
            "put",
            "too-big",
            "--value-file",
            path.to_str().expect("a UTF-8 path"),
        ],
    );
    assert_exit(&out, 2, "a value over the limit");
    assert!(
        stderr(&out).contains("over the value limit of 3 MiB"),
        "{out:?}"
    );
    assert_replicas(&cluster, "too-big", None).await;
}
