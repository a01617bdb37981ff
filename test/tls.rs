//! Mutual TLS (DESIGN §10) with real processes: certificates from `tpc certs`, nodes
//! and tools given `--tls-cert`, `--tls-key` and `--tls-ca`. A cluster with TLS works
//! on every connection (clients, followers, standby leaders' Raft and forwarding);
//! plaintext peers and peers of another CA are refused, and both ends say why.
//!
//! This test process itself talks TLS (with the `client` certificate) to check on the
//! nodes, so every helper of `e2e_support` goes through TLS too.

#[path = "e2e_support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use support::{poll, Node, NodeDirs, Role, CALL_TIMEOUT, POLL_TIMEOUT};

/// The CA of these tests' clusters, and another CA, made once by `tpc certs`.
struct Certificates {
    dir: tempfile::TempDir,
}

impl Certificates {
    fn ours(&self) -> PathBuf {
        self.dir.path().join("ours")
    }

    fn theirs(&self) -> PathBuf {
        self.dir.path().join("theirs")
    }
}

fn certificates() -> &'static Certificates {
    static CERTIFICATES: OnceLock<Certificates> = OnceLock::new();
    CERTIFICATES.get_or_init(|| {
        let certificates = Certificates {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        let names = ["leader1", "leader2", "leader3", "f1", "f2", "f3", "client"];
        tpc_certs(&certificates.ours(), &names);
        tpc_certs(&certificates.theirs(), &["f2", "client"]);
        tpc::net::tls::install(&files(&certificates.ours(), "client")).expect("TLS for the test");
        certificates
    })
}

fn tpc_certs(dir: &Path, names: &[&str]) {
    let output = Command::new(support::tpc_binary())
        .arg("certs")
        .arg("--dir")
        .arg(dir)
        .args(names)
        .output()
        .expect("run tpc certs");
    assert!(
        output.status.success(),
        "tpc certs: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn files(dir: &Path, name: &str) -> tpc::net::tls::TlsFiles {
    tpc::net::tls::TlsFiles {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}-key.pem")),
        ca: dir.join("ca.pem"),
    }
}

/// The TLS flags for `name`'s certificate in `dir`, with `ca_dir`'s CA.
fn flags(dir: &Path, name: &str, ca_dir: &Path) -> Vec<String> {
    let files = files(dir, name);
    vec![
        "--tls-cert".into(),
        files.cert.display().to_string(),
        "--tls-key".into(),
        files.key.display().to_string(),
        "--tls-ca".into(),
        ca_dir.join("ca.pem").display().to_string(),
    ]
}

fn pairs(flags: &[String]) -> Vec<(&str, &str)> {
    flags
        .chunks(2)
        .map(|pair| (pair[0].as_str(), pair[1].as_str()))
        .collect()
}

/// `tpc client ARGS` with `tls` flags: exit code, stdout, stderr.
fn tpc_client(tls: &[String], leader: &str, args: &[&str]) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(support::tpc_binary())
        .arg("client")
        .args(tls)
        .args(["--leader", leader])
        .args(args)
        .output()
        .expect("run tpc client");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn spawn_follower(dirs: &NodeDirs, tls: &[String]) -> Node {
    support::spawn_with_env_and_args(dirs, Role::Follower, &dirs.addr(), &[], &pairs(tls))
}

/// Polls until `dirs`'s log holds `text`.
async fn logged(dirs: &NodeDirs, text: &str) {
    poll(
        &format!("{} to log {text:?}", dirs.name),
        POLL_TIMEOUT,
        || async {
            if dirs.log().contains(text) {
                Ok(())
            } else {
                Err("not yet".to_string())
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_with_standby_leaders_serves_and_refuses_strangers_with_the_reason() {
    let certs = certificates();
    let ours = certs.ours();
    let follower_dirs: Vec<NodeDirs> = (1..=3).map(|i| NodeDirs::new(&format!("f{i}"))).collect();
    let _followers: Vec<Node> = follower_dirs
        .iter()
        .map(|dirs| spawn_follower(dirs, &flags(&ours, &dirs.name, &ours)))
        .collect();
    let leader_dirs: Vec<NodeDirs> = (1..=3)
        .map(|i| NodeDirs::new(&format!("leader{i}")))
        .collect();
    let addrs: Vec<String> = leader_dirs.iter().map(NodeDirs::addr).collect();
    let followers: Vec<String> = follower_dirs.iter().map(NodeDirs::addr).collect();
    let start_leader = |i: usize| {
        let peers: Vec<String> = (0..3)
            .filter(|&j| j != i)
            .map(|j| addrs[j].clone())
            .collect();
        let mut args = flags(&ours, &leader_dirs[i].name, &ours);
        args.extend(["--peer".to_string(), peers.join(",")]);
        let dirs = &leader_dirs[i];
        support::spawn_with_env_and_args(
            dirs,
            Role::leader(followers.clone()),
            &dirs.addr(),
            &[],
            &pairs(&args),
        )
    };
    let mut leaders: Vec<Option<Node>> = (0..3).map(|i| Some(start_leader(i))).collect();

    // Raft over TLS elected one; the client's write and a read through a standby
    // (forwarded over TLS) work.
    let active = support::agreed_active("tls", &addrs, &[0, 1, 2], POLL_TIMEOUT).await;
    let standby = (active + 1) % 3;
    let client_tls = flags(&ours, "client", &ours);
    let all = addrs.join(",");
    let (code, _, stderr) = tpc_client(&client_tls, &all, &["put", "greeting", "hello"]);
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, stderr) = tpc_client(&client_tls, &addrs[standby], &["get", "greeting"]);
    assert_eq!((code, stdout.trim()), (0, "hello"), "{stderr}");

    // A plaintext client: refused, and told why; the node logs it.
    let (code, _, stderr) = tpc_client(&[], &addrs[standby], &["get", "greeting"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("UNAUTHENTICATED") && stderr.contains("requires mutual TLS"),
        "{stderr}"
    );
    logged(&leader_dirs[standby], "refused a plaintext connection").await;

    // A client of another CA: it refuses the node's certificate, and the node logs
    // that the client refused it.
    let theirs = certs.theirs();
    let (code, _, stderr) = tpc_client(
        &flags(&theirs, "client", &theirs),
        &addrs[standby],
        &["get", "greeting"],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("not signed by this cluster's CA"),
        "{stderr}"
    );
    logged(
        &leader_dirs[standby],
        "the client refused the TLS handshake",
    )
    .await;

    // Another CA's certificate with our CA: refused before it dials anything.
    let (code, _, stderr) = tpc_client(
        &flags(&theirs, "client", &ours),
        &addrs[standby],
        &["get", "greeting"],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--tls-cert") && stderr.contains("not signed by this cluster's CA"),
        "{stderr}"
    );

    // The active leader dies; the others elect a new one over TLS, which serves.
    leaders[active].take();
    let running: Vec<usize> = (0..3).filter(|&i| i != active).collect();
    let next = support::agreed_active("tls", &addrs, &running, POLL_TIMEOUT).await;
    assert_ne!(next, active);
    poll("a write after the failover", POLL_TIMEOUT, || async {
        match tpc_client(&client_tls, &all, &["put", "greeting", "again"]) {
            (0, _, _) => Ok(()),
            (_, _, stderr) => Err(stderr),
        }
    })
    .await;
    assert_eq!(
        support::settled_get(&addrs[next], "greeting")
            .await
            .as_deref(),
        Some("again")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_of_another_ca_or_without_tls_is_refused_and_both_ends_say_why() {
    let certs = certificates();
    let (ours, theirs) = (certs.ours(), certs.theirs());
    let dirs: Vec<NodeDirs> = (1..=3).map(|i| NodeDirs::new(&format!("f{i}"))).collect();
    let _followers = [
        spawn_follower(&dirs[0], &flags(&ours, "f1", &ours)),
        spawn_follower(&dirs[1], &flags(&theirs, "f2", &theirs)),
        spawn_follower(&dirs[2], &[]),
    ];
    let leader_dirs = NodeDirs::new("leader1");
    let followers: Vec<String> = dirs.iter().map(NodeDirs::addr).collect();
    let _leader = support::spawn_with_env_and_args(
        &leader_dirs,
        Role::leader(followers.clone()),
        &leader_dirs.addr(),
        &[],
        &pairs(&flags(&ours, "leader1", &ours)),
    );

    poll(
        "the leader to report why it cannot reach f2 (another CA) and f3 (no TLS)",
        POLL_TIMEOUT,
        || async {
            let status = tpc::client::status::fetch(&leader_dirs.addr(), CALL_TIMEOUT).await?;
            let error_of = |address: &str| {
                status
                    .followers
                    .iter()
                    .find(|f| f.address == address)
                    .map(|f| f.last_error.clone())
                    .unwrap_or_default()
            };
            // Until the followers listen, the errors say they cannot be reached.
            let (f2, f3) = (error_of(&followers[1]), error_of(&followers[2]));
            if f2.contains("not signed by this cluster's CA")
                && f3.contains("seems to run without TLS")
            {
                Ok(())
            } else {
                Err(format!("last errors: f2 {f2:?}, f3 {f3:?}"))
            }
        },
    )
    .await;
    logged(&dirs[1], "the client refused the TLS handshake").await;
    logged(&dirs[2], "this node runs without TLS").await;
    assert!(
        !dirs[0].log().contains("refused"),
        "f1 was never refused: {}",
        dirs[0].log()
    );
}
