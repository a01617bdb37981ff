//! Helpers for the end-to-end tests: real `tpc` processes in temporary directories,
//! talking over Unix sockets, killed when the test ends (also when it fails).

#![allow(dead_code)]

pub mod outcomes;

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use tonic::{Code, Status};
use tpc::client::Client;

/// How long a single client call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The default bound for "poll until ...".
pub const POLL_TIMEOUT: Duration = Duration::from_secs(15);
/// How often to poll.
pub const POLL_EVERY: Duration = Duration::from_millis(15);
/// The leader's vote timeout in these tests.
pub const VOTE_TIMEOUT: &str = "500ms";

/// The environment variable naming a crash point (see `pkg/tpc/crash.rs`).
pub const CRASH_AT: &str = "TPC_CRASH_AT";

/// One node's directories: `ROOT/journal`, `ROOT/kv`, `ROOT/cwd` (the process's working
/// directory, which must stay empty) and `ROOT/stderr.log` (every run's stderr, appended).
/// Sockets live in ROOT too. When a test fails, the log is printed on drop.
pub struct NodeDirs {
    pub name: String,
    root: tempfile::TempDir,
}

impl NodeDirs {
    pub fn new(name: &str) -> NodeDirs {
        let root = tempfile::Builder::new()
            .prefix(&format!("tpc-e2e-{name}-"))
            .tempdir()
            .expect("create a temp dir");
        std::fs::create_dir(root.path().join("cwd")).expect("create cwd");
        NodeDirs {
            name: name.to_string(),
            root,
        }
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    pub fn journal_dir(&self) -> PathBuf {
        self.root().join("journal")
    }

    /// The journal file inside `--journal-dir`.
    pub fn journal_file(&self) -> PathBuf {
        self.journal_dir().join("journal")
    }

    pub fn kv_dir(&self) -> PathBuf {
        self.root().join("kv")
    }

    pub fn cwd(&self) -> PathBuf {
        self.root().join("cwd")
    }

    pub fn log_path(&self) -> PathBuf {
        self.root().join("stderr.log")
    }

    /// `unix:ROOT/<file>`.
    pub fn socket(&self, file: &str) -> String {
        format!("unix:{}", self.root().join(file).display())
    }

    /// The node's default address.
    pub fn addr(&self) -> String {
        self.socket(&format!("{}.sock", self.name))
    }

    /// Everything the node wrote to stderr so far (all runs).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.log_path()).unwrap_or_default()).into_owned()
    }

    pub fn open_log(&self, header: &str) -> File {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the stderr log");
        writeln!(file, "===== {header}").expect("write the stderr log");
        file
    }
}

impl Drop for NodeDirs {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let skip = lines.len().saturating_sub(400);
            eprintln!(
                "\n---------- stderr of {} ({}; last {} lines) ----------",
                self.name,
                self.log_path().display(),
                lines.len() - skip
            );
            for line in &lines[skip..] {
                eprintln!("{line}");
            }
            eprintln!("---------- end of {} ----------", self.name);
        }
    }
}

/// What to start.
pub enum Role {
    Follower,
    Leader {
        followers: Vec<String>,
        vote_timeout: String,
    },
}

impl Role {
    /// A leader of `followers` with the tests' vote timeout.
    pub fn leader(followers: Vec<String>) -> Role {
        Role::Leader {
            followers,
            vote_timeout: VOTE_TIMEOUT.to_string(),
        }
    }
}

/// A running `tpc` process; SIGKILLed and reaped on drop.
pub struct Node {
    pub name: String,
    child: Option<Child>,
}

/// The `tpc` binary to run: `TPC_BIN` if set (e.g. a release build, for a long chaos
/// run), else the one cargo built for these tests.
pub fn tpc_binary() -> PathBuf {
    std::env::var_os("TPC_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_tpc")))
}

/// Starts a process. `listen` is the address to serve on, `env` extra environment.
pub fn spawn(dirs: &NodeDirs, role: Role, listen: &str, env: &[(&str, &str)]) -> Node {
    spawn_with_dirs(dirs, role, listen, env, &dirs.journal_dir(), &dirs.kv_dir())
}

/// Like [`spawn`] but with explicit journal and kv directories (which may be another
/// node's), logging to `dirs`.
pub fn spawn_with_dirs(
    dirs: &NodeDirs,
    role: Role,
    listen: &str,
    env: &[(&str, &str)],
    journal_dir: &Path,
    kv_dir: &Path,
) -> Node {
    spawn_process(dirs, role, listen, env, journal_dir, kv_dir, &[])
}

/// Like [`spawn`] with extra flags (`("--http-port", "0")`).
pub fn spawn_with_args(dirs: &NodeDirs, role: Role, listen: &str, args: &[(&str, &str)]) -> Node {
    spawn_process(
        dirs,
        role,
        listen,
        &[],
        &dirs.journal_dir(),
        &dirs.kv_dir(),
        args,
    )
}

/// Like [`spawn`] with extra flags and environment.
pub fn spawn_with_env_and_args(
    dirs: &NodeDirs,
    role: Role,
    listen: &str,
    env: &[(&str, &str)],
    args: &[(&str, &str)],
) -> Node {
    spawn_process(
        dirs,
        role,
        listen,
        env,
        &dirs.journal_dir(),
        &dirs.kv_dir(),
        args,
    )
}

fn spawn_process(
    dirs: &NodeDirs,
    role: Role,
    listen: &str,
    env: &[(&str, &str)],
    journal_dir: &Path,
    kv_dir: &Path,
    args: &[(&str, &str)],
) -> Node {
    let mut command = Command::new(tpc_binary());
    for (flag, value) in args {
        command.arg(flag).arg(value);
    }
    match &role {
        Role::Follower => {
            command.arg("--tpc-follower").arg("--kv-dir").arg(kv_dir);
        }
        Role::Leader {
            followers,
            vote_timeout,
        } => {
            command.arg("--tpc-leader");
            for f in followers {
                command.arg("--follower").arg(f);
            }
            command.arg("--vote-timeout").arg(vote_timeout);
        }
    }
    command
        .arg("--journal-dir")
        .arg(journal_dir)
        .arg("--listen")
        .arg(listen)
        .arg("--name")
        .arg(&dirs.name)
        .current_dir(dirs.cwd())
        .env_remove(CRASH_AT)
        .env(
            "RUST_LOG",
            std::env::var("TPC_E2E_RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    let header = format!("start {} listen={listen} env={env:?}", dirs.name);
    command.stderr(dirs.open_log(&header));
    let child = command.spawn().expect("spawn the tpc binary");
    Node {
        name: dirs.name.clone(),
        child: Some(child),
    }
}

/// Starts a follower on its default address.
pub fn follower(dirs: &NodeDirs) -> Node {
    spawn(dirs, Role::Follower, &dirs.addr(), &[])
}

/// Starts a leader on its default address.
pub fn leader(dirs: &NodeDirs, followers: &[&NodeDirs]) -> Node {
    let followers = followers.iter().map(|f| f.addr()).collect();
    spawn(dirs, Role::leader(followers), &dirs.addr(), &[])
}

impl Node {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("node is running").id()
    }

    /// Sends SIGKILL without waiting (to kill several nodes at once).
    pub fn send_kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
        }
    }

    /// `kill -9` and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends a signal by name (`STOP`, `CONT`, `TERM`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// The exit status if the process has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("try_wait"))
    }

    /// Waits (bounded) for the process to exit by itself; panics if it doesn't.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(status) = self.try_exit() {
                self.child = None;
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} did not exit within {within:?}",
                self.name
            );
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A client for `addr`.
pub fn client(addr: &str) -> Client {
    Client::new(addr, CALL_TIMEOUT).expect("client")
}

/// One `Get` on `addr` with a fresh client: `Ok(Some(v))`, `Ok(None)` for NOT_FOUND, or the status.
pub async fn get(addr: &str, key: &str) -> Result<Option<String>, Status> {
    match client(addr).get(key).await {
        Ok(v) => Ok(Some(v)),
        Err(s) if s.code() == Code::NotFound => Ok(None),
        Err(s) => Err(s),
    }
}

/// Polls `f` every [`POLL_EVERY`] until it returns `Ok`, for at most `within`; then
/// panics with `what` and the last error.
pub async fn poll<T, F, Fut>(what: &str, within: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let last = match tokio::time::timeout_at(deadline, f()).await {
            Ok(Ok(value)) => return value,
            Ok(Err(e)) => e,
            Err(_) => "the last attempt was still running at the deadline".to_string(),
        };
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting for {what}; last: {last}");
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// A key no test writes, used to probe readiness.
pub const PROBE_KEY: &str = "__e2e_probe__";

fn describe(status: &Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// Waits until a follower at `addr` answers reads (anything but UNAVAILABLE/transport errors).
pub async fn wait_follower_ready(addr: &str) {
    poll(
        &format!("follower {addr} to be ready"),
        POLL_TIMEOUT,
        || async {
            match get(addr, PROBE_KEY).await {
                Ok(_) => Ok(()),
                // Its view places the probe key elsewhere: it answered, so it is ready.
                Err(s) if s.code() == Code::FailedPrecondition => Ok(()),
                // It holds a view and no leader grants it the lease for direct reads
                // (none is running): it answered, so it is ready.
                Err(s) if s.code() == Code::Unavailable && s.message().contains("lease") => Ok(()),
                Err(s)
                    if matches!(
                        s.code(),
                        Code::Unavailable | Code::Unknown | Code::DeadlineExceeded
                    ) =>
                {
                    Err(describe(&s))
                }
                Err(s) => panic!(
                    "follower {addr}: unexpected answer to a probe: {}",
                    describe(&s)
                ),
            }
        },
    )
    .await
}

/// Waits until a leader at `addr` serves reads (NOT_FOUND or a value).
pub async fn wait_leader_ready(addr: &str) {
    poll(
        &format!("leader {addr} to be ready"),
        POLL_TIMEOUT,
        || async {
            get(addr, PROBE_KEY)
                .await
                .map(|_| ())
                .map_err(|s| describe(&s))
        },
    )
    .await
}

/// Waits until the leader at `addr` has a view in force (every follower told its
/// member id, and the view is journaled): its journal writes from then on are the
/// cluster's.
pub async fn wait_view(addr: &str) {
    poll(
        &format!("leader {addr} to form its view"),
        POLL_TIMEOUT,
        || async {
            let status = tpc::client::status::fetch(addr, CALL_TIMEOUT).await?;
            match status.view_epoch {
                0 => Err("no view yet".to_string()),
                _ => Ok(()),
            }
        },
    )
    .await
}

/// Polls a direct read of `key` on `addr` until it is not UNAVAILABLE (or a transport
/// error), and returns what it answered (`None`: NOT_FOUND).
pub async fn settled_get(addr: &str, key: &str) -> Option<String> {
    poll(
        &format!("{addr} to answer Get({key:?}) with something other than UNAVAILABLE"),
        POLL_TIMEOUT,
        || async {
            match get(addr, key).await {
                Ok(v) => Ok(v),
                Err(s) if matches!(s.code(), Code::Unavailable | Code::Unknown) => {
                    Err(describe(&s))
                }
                Err(s) => panic!("Get({key:?}) on {addr}: unexpected {}", describe(&s)),
            }
        },
    )
    .await
}

/// A leader and followers, each in its own directories.
pub struct Cluster {
    // Nodes first: fields drop in order, so processes die before their dirs go.
    pub leader: Option<Node>,
    pub followers: Vec<Option<Node>>,
    pub leader_dirs: NodeDirs,
    pub follower_dirs: Vec<NodeDirs>,
    /// The leader's `--vote-timeout`.
    pub vote_timeout: String,
    /// More flags for the leader (`("--replication", "3")`).
    pub leader_args: Vec<(String, String)>,
}

impl Cluster {
    /// Directories for a leader and `n` followers; nothing started.
    pub fn new(n: usize) -> Cluster {
        Cluster {
            leader: None,
            followers: (0..n).map(|_| None).collect(),
            leader_dirs: NodeDirs::new("leader"),
            follower_dirs: (1..=n).map(|i| NodeDirs::new(&format!("f{i}"))).collect(),
            vote_timeout: VOTE_TIMEOUT.to_string(),
            leader_args: Vec::new(),
        }
    }

    /// Starts every follower, then the leader, and waits until all are ready.
    pub async fn start(n: usize) -> Cluster {
        Cluster::new(n).started().await
    }

    /// Starts every follower, then the leader, and waits until all are ready.
    pub async fn started(self) -> Cluster {
        let mut cluster = self;
        let n = cluster.follower_dirs.len();
        for i in 0..n {
            cluster.start_follower(i, &[]);
        }
        for i in 0..n {
            wait_follower_ready(&cluster.follower_addr(i)).await;
        }
        cluster.start_leader(&[]);
        wait_leader_ready(&cluster.leader_addr()).await;
        cluster
    }

    pub fn leader_addr(&self) -> String {
        self.leader_dirs.addr()
    }

    pub fn follower_addr(&self, i: usize) -> String {
        self.follower_dirs[i].addr()
    }

    pub fn follower_addrs(&self) -> Vec<String> {
        (0..self.follower_dirs.len())
            .map(|i| self.follower_addr(i))
            .collect()
    }

    /// Starts (or restarts) follower `i` on its own address; does not wait.
    pub fn start_follower(&mut self, i: usize, env: &[(&str, &str)]) {
        let dirs = &self.follower_dirs[i];
        self.followers[i] = Some(spawn(dirs, Role::Follower, &dirs.addr(), env));
    }

    /// Starts (or restarts) the leader; does not wait.
    pub fn start_leader(&mut self, env: &[(&str, &str)]) {
        let followers = self.follower_addrs();
        let dirs = &self.leader_dirs;
        let role = Role::Leader {
            followers,
            vote_timeout: self.vote_timeout.clone(),
        };
        let args: Vec<(&str, &str)> = self
            .leader_args
            .iter()
            .map(|(flag, value)| (flag.as_str(), value.as_str()))
            .collect();
        let (journal, kv) = (dirs.journal_dir(), dirs.kv_dir());
        self.leader = Some(spawn_process(
            dirs,
            role,
            &dirs.addr(),
            env,
            &journal,
            &kv,
            &args,
        ));
    }

    pub fn follower(&mut self, i: usize) -> &mut Node {
        self.followers[i].as_mut().expect("follower is running")
    }

    pub fn kill_follower(&mut self, i: usize) {
        if let Some(mut node) = self.followers[i].take() {
            node.kill();
        }
    }

    pub fn kill_leader(&mut self) {
        if let Some(mut node) = self.leader.take() {
            node.kill();
        }
    }

    /// SIGKILLs every node at once, then reaps them.
    pub fn kill_all(&mut self) {
        let mut all: Vec<&mut Node> = Vec::new();
        all.extend(self.leader.iter_mut());
        all.extend(self.followers.iter_mut().flatten());
        for node in all.iter_mut() {
            node.send_kill();
        }
        for node in all.iter_mut() {
            node.kill();
        }
        self.leader = None;
        for f in &mut self.followers {
            *f = None;
        }
    }

    /// A client of the leader.
    pub fn client(&self) -> Client {
        client(&self.leader_addr())
    }
}

/// The `127.0.0.1:PORT` a node logged for its HTTP endpoints.
pub async fn http_address(dirs: &NodeDirs) -> String {
    poll("the HTTP address in the log", POLL_TIMEOUT, || async {
        let log = dirs.log();
        log.lines()
            .filter(|l| l.contains("HTTP endpoints"))
            .filter_map(|l| l.split("address=").nth(1))
            .filter_map(|rest| rest.split_whitespace().next())
            .next_back()
            .map(String::from)
            .ok_or_else(|| "not logged yet".to_string())
    })
    .await
}

/// A plain HTTP/1.1 GET: (status code, body).
pub async fn http_get(address: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect HTTP");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// With standby leaders at `addrs`: waits (at most `within`) until every leader in
/// `running` names the same active leader, one of `running`, which has formed its
/// view; its index in `addrs`. `who` names the cluster in a timeout's message.
pub async fn agreed_active(
    who: &str,
    addrs: &[String],
    running: &[usize],
    within: Duration,
) -> usize {
    poll(
        &format!("{who}: the running leaders to agree on an active one"),
        within,
        || async {
            let mut active = None;
            for &i in running {
                let status = tpc::client::status::fetch(&addrs[i], CALL_TIMEOUT.min(within))
                    .await
                    .map_err(|e| format!("leader {}: {e}", addrs[i]))?;
                let named = addrs.iter().position(|a| *a == status.active_leader);
                let Some(named) = named.filter(|n| running.contains(n)) else {
                    return Err(format!(
                        "leader {} names no running active leader",
                        addrs[i]
                    ));
                };
                if active.is_some_and(|a| a != named) {
                    return Err("the leaders name different active leaders".into());
                }
                if status.role == "active" && status.view_epoch == 0 {
                    return Err("the active leader has no view yet".into());
                }
                active = Some(named);
            }
            active.ok_or_else(|| "no leader is running".to_string())
        },
    )
    .await
}
