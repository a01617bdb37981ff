//! Real network partitions, made by the kernel rather than by `tpc proxy` (issue 15):
//! three standby leaders (`--peer`) and three followers, each node in a network
//! namespace of its own, joined to a bridge in a hub namespace by a veth pair, with the
//! test's clients in one more namespace. The test creates every namespace itself (names
//! carrying its process id) and deletes them when it ends, also when it fails; nothing is
//! added to the machine's own namespace, and every packet goes to hosts inside these
//! namespaces (`10.213.47.0/24`).
//!
//! Under load (clients putting unique values, deleting and reading a few keys through
//! every leader: a standby forwards to the active one), the test partitions the network:
//!
//! 1. a follower's link is brought down (`ip link set ... down` on the hub's side) for a
//!    few seconds: the active leader lists it down and, after `--member-timeout`, starts
//!    removing it from the members; the link comes back up (the removal under way or
//!    done) and it is a member again;
//! 2. the active leader's link is brought down: the others elect another, which serves,
//!    while the one cut off stands down (asked from inside its own namespace); the link
//!    comes back up and it returns as a standby;
//! 3. the network splits in two: the active leader and one follower are moved to a second
//!    bridge, where they still reach each other but nothing else. The majority side elects
//!    a leader, removes the follower and writes; meanwhile, from the minority side, a
//!    prober reads every key through the old leader and directly from the follower it can
//!    still reach: whatever they answer joins the history (a stale answer is a violation).
//!    The old leader must stand down. Then the bridges are joined again.
//!
//! Afterwards every write works again, the clients stop, every key is read through the
//! active leader, and the whole history is checked for linearizability (`tpc::check`);
//! and the replicas converge: every follower, a member again, answers a direct read of
//! every key with the leader's value and version.
//!
//! About 25 s in a debug build. (It was 40 s, a third of it the removal in step 3,
//! until the others stopped trying to copy from an unreachable leaving member when they
//! gain no key: `FollowerCore::holds_every_key_now`.) `TPC_PARTITION_VERBOSE=1` prints
//! every client call that failed or whose outcome is unknown.
//!
//! Needs root and `ip netns` (CI has both); without them it says "skipped" and passes.

#[path = "e2e_support/mod.rs"]
mod support;

use std::fs::File;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::Code;

use support::outcomes::{record, surely_not_applied};
use support::{poll, NodeDirs, CALL_TIMEOUT};
use tpc::check::{self, OpKind, Operation};
use tpc::client::{members, status, Client};
use tpc::proto::rpc;

/// The private /24 every node's address is in (inside the test's namespaces only).
const SUBNET: &str = "10.213.47";
/// Every node listens on this port (each in its own namespace).
const PORT: u16 = 7400;
const LEADERS: usize = 3;
const FOLLOWERS: usize = 3;
const CLIENTS: usize = 6;
const KEYS: usize = 4;
/// The leaders' `--member-timeout`: the shortest allowed, so a follower cut off leaves
/// the members (and writes go on) soon.
const MEMBER_TIMEOUT: &str = "3s";
/// Each client call's deadline.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// How many writes must be acknowledged to show that the cluster takes writes (again).
const WRITES: usize = 5;
/// The bound of every wait for the cluster to do something (elect a leader, remove or
/// add a member, take writes again): generous, for debug builds on a busy machine. A
/// bound, never a measure: the test asserts no timing.
const SETTLE: Duration = Duration::from_secs(60);

/// A leader's address (`i` from 0), as the other nodes and the clients dial it.
fn leader_addr(i: usize) -> String {
    format!("{SUBNET}.{}:{PORT}", 11 + i)
}

/// A follower's address (`i` from 0).
fn follower_addr(i: usize) -> String {
    format!("{SUBNET}.{}:{PORT}", 21 + i)
}

fn leader_label(i: usize) -> String {
    format!("l{}", i + 1)
}

fn follower_label(i: usize) -> String {
    format!("f{}", i + 1)
}

const CLIENTS_LABEL: &str = "c";
const CLIENTS_HOST: u8 = 100;

fn netns_path(ns: &str) -> String {
    format!("/var/run/netns/{ns}")
}

/// Runs `ip ARGS`; its error output if it fails.
fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run ip: {e}"))?;
    match output.status.success() {
        true => Ok(()),
        false => Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )),
    }
}

/// The namespaces' names, and how to cut and heal their links (cheap to clone into the
/// threads that need it).
#[derive(Clone)]
struct Topology {
    /// Every namespace's name starts with this (it holds the process id).
    prefix: String,
}

impl Topology {
    /// The namespace of the node (or the clients) labelled `label`.
    fn ns(&self, label: &str) -> String {
        format!("{}-{label}", self.prefix)
    }

    /// The namespace that holds the bridges.
    fn hub(&self) -> String {
        self.ns("hub")
    }

    /// The hub's end of `label`'s veth pair.
    fn port(label: &str) -> String {
        format!("v{label}")
    }

    fn hub_ip(&self, args: &[&str]) {
        let hub = self.hub();
        let mut all = vec!["-n", hub.as_str()];
        all.extend_from_slice(args);
        ip(&all).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Brings `label`'s link down on the hub's side: its node keeps its address and
    /// sockets, and nothing it sends arrives, nor anything sent to it.
    fn cut(&self, label: &str) {
        self.hub_ip(&["link", "set", &Topology::port(label), "down"]);
    }

    /// Brings `label`'s link back up.
    fn heal(&self, label: &str) {
        self.hub_ip(&["link", "set", &Topology::port(label), "up"]);
    }

    /// Moves the links of `labels` to the second bridge: they reach one another, and
    /// nothing else.
    fn split(&self, labels: &[String]) {
        for label in labels {
            self.hub_ip(&["link", "set", &Topology::port(label), "master", "br1"]);
        }
    }

    /// Moves the links of `labels` back to the main bridge.
    fn join(&self, labels: &[String]) {
        for label in labels {
            self.hub_ip(&["link", "set", &Topology::port(label), "master", "br0"]);
        }
    }
}

/// The namespaces this process created; deleted on drop (also when the test fails).
struct Net {
    topology: Topology,
    created: Vec<String>,
}

impl Net {
    /// The hub (two bridges) and one namespace per node and for the clients, each joined
    /// to the first bridge. `None`, having said why, if this machine can't (not root, no
    /// network namespaces, bridges or veth pairs).
    fn create() -> Option<Net> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root and network namespaces (not running as root)");
            return None;
        }
        let topology = Topology {
            prefix: format!("tpcpart{}", std::process::id()),
        };
        let hub = topology.hub();
        if let Err(e) = ip(&["netns", "add", &hub]) {
            eprintln!("skipped: needs root and network namespaces ({e})");
            return None;
        }
        let mut net = Net {
            topology,
            created: vec![hub.clone()],
        };
        // A kernel without bridges or veth pairs cannot run this test either.
        if let Err(e) = net.build(&hub) {
            eprintln!(
                "skipped: needs root and network namespaces with bridges and veth pairs ({e})"
            );
            return None; // `net` is dropped: what was made is deleted.
        }
        Some(net)
    }

    /// The bridges of `hub`, and each namespace joined to the first bridge.
    fn build(&mut self, hub: &str) -> Result<(), String> {
        ip(&["-n", hub, "link", "set", "lo", "up"])?;
        for bridge in ["br0", "br1"] {
            ip(&["-n", hub, "link", "add", bridge, "type", "bridge"])?;
            ip(&["-n", hub, "link", "set", bridge, "up"])?;
        }
        let hosts = (0..LEADERS)
            .map(|i| (leader_label(i), 11 + i as u8))
            .chain((0..FOLLOWERS).map(|i| (follower_label(i), 21 + i as u8)))
            .chain([(CLIENTS_LABEL.to_string(), CLIENTS_HOST)]);
        for (label, host) in hosts {
            let ns = self.topology.ns(&label);
            ip(&["netns", "add", &ns])?;
            self.created.push(ns.clone());
            let port = Topology::port(&label);
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n", hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ])?;
            ip(&["-n", hub, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", hub, "link", "set", &port, "up"])?;
            let address = format!("{SUBNET}.{host}/24");
            ip(&["-n", &ns, "addr", "add", &address, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        Ok(())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth ends, and so their peers.
        for ns in self.created.iter().rev() {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("partition test: could not delete namespace {ns}: {e}");
            }
        }
    }
}

/// Moves the calling thread into namespace `ns` (`setns` is per thread).
fn enter_netns(ns: &str) {
    let file = File::open(netns_path(ns)).unwrap_or_else(|e| panic!("open {ns}: {e}"));
    // SAFETY: a valid, open namespace file descriptor; affects this thread only.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "setns into {ns}: {}",
        std::io::Error::last_os_error()
    );
}

/// Runs `f` on a thread of its own inside namespace `ns`, with a tokio runtime of its
/// own, starting now; its result.
fn in_netns<T, F, Fut>(ns: &str, f: F) -> tokio::sync::oneshot::Receiver<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    let ns = ns.to_string();
    let (send, receive) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        enter_netns(&ns);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let _ = send.send(runtime.block_on(f()));
    });
    receive
}

/// A `tpc` process in a namespace; SIGKILLed and reaped on drop.
struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `tpc ARGS` inside namespace `ns`, in `dirs` (journal, working directory, log).
fn spawn_in(ns: &str, dirs: &NodeDirs, args: &[String]) -> Proc {
    let netns = File::open(netns_path(ns)).unwrap_or_else(|e| panic!("open {ns}: {e}"));
    let fd = netns.as_raw_fd();
    let mut command = Command::new(support::tpc_binary());
    command
        .args(args)
        .arg("--journal-dir")
        .arg(dirs.journal_dir())
        .arg("--name")
        .arg(&dirs.name)
        .current_dir(dirs.cwd())
        .env_remove(support::CRASH_AT)
        .env(
            "RUST_LOG",
            std::env::var("TPC_E2E_RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(dirs.open_log(&format!("start {} in {ns}: {args:?}", dirs.name)));
    // SAFETY: between fork and exec the child only makes the setns system call on a
    // descriptor the parent holds open until spawn returns.
    unsafe {
        command.pre_exec(move || match libc::setns(fd, libc::CLONE_NEWNET) {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        });
    }
    let child = command.spawn().expect("spawn the tpc binary");
    drop(netns);
    Proc { child }
}

/// The nodes, each in its namespace.
struct Cluster {
    // Processes first: they die before their directories go.
    leaders: Vec<Proc>,
    followers: Vec<Proc>,
    leader_dirs: Vec<NodeDirs>,
    follower_dirs: Vec<NodeDirs>,
}

impl Cluster {
    fn start(topology: &Topology) -> Cluster {
        let follower_dirs: Vec<NodeDirs> = (0..FOLLOWERS)
            .map(|i| NodeDirs::new(&format!("part-{}", follower_label(i))))
            .collect();
        let leader_dirs: Vec<NodeDirs> = (0..LEADERS)
            .map(|i| NodeDirs::new(&format!("part-{}", leader_label(i))))
            .collect();
        let followers = (0..FOLLOWERS)
            .map(|i| {
                let dirs = &follower_dirs[i];
                let args = [
                    "--tpc-follower".to_string(),
                    "--kv-dir".into(),
                    dirs.kv_dir().display().to_string(),
                    "--port".into(),
                    PORT.to_string(),
                ];
                spawn_in(&topology.ns(&follower_label(i)), dirs, &args)
            })
            .collect();
        let all_followers: Vec<String> = (0..FOLLOWERS).map(follower_addr).collect();
        let leaders = (0..LEADERS)
            .map(|i| {
                let peers: Vec<String> =
                    (0..LEADERS).filter(|&j| j != i).map(leader_addr).collect();
                let args = [
                    "--tpc-leader".to_string(),
                    "--follower".into(),
                    all_followers.join(","),
                    "--vote-timeout".into(),
                    support::VOTE_TIMEOUT.into(),
                    "--member-timeout".into(),
                    MEMBER_TIMEOUT.into(),
                    "--peer".into(),
                    peers.join(","),
                    "--advertise".into(),
                    leader_addr(i),
                    "--port".into(),
                    PORT.to_string(),
                ];
                spawn_in(&topology.ns(&leader_label(i)), &leader_dirs[i], &args)
            })
            .collect();
        Cluster {
            leaders,
            followers,
            leader_dirs,
            follower_dirs,
        }
    }

    /// Panics if a node has exited: partitions must not make any stop.
    fn assert_running(&mut self) {
        let nodes = self.leaders.iter_mut().zip(&self.leader_dirs);
        let nodes = nodes.chain(self.followers.iter_mut().zip(&self.follower_dirs));
        for (node, dirs) in nodes {
            let exited = node.child.try_wait().expect("try_wait");
            assert!(exited.is_none(), "{} exited: {exited:?}", dirs.name);
        }
    }
}

/// What the clients learned, for the checker.
#[derive(Default)]
struct Observed {
    history: Vec<Operation>,
    /// When each acknowledged write was called and returned (ns since the start).
    acked: Vec<(u64, u64)>,
    /// Writes of unknown outcome.
    unknown: usize,
    /// Calls that failed and were left out (not applied, or a read that said nothing).
    failed: usize,
}

/// The clock of the history: nanoseconds since `start` (monotonic, shared by threads).
fn since(start: Instant) -> u64 {
    start.elapsed().as_nanos() as u64
}

fn key(k: usize) -> String {
    format!("k{k}")
}

/// One client: puts of unique values, deletes and reads of the keys, each through a
/// leader picked at random (a standby forwards to the active one), until `stop`. With
/// `TPC_PARTITION_VERBOSE=1`, prints every call that failed or whose outcome is unknown.
async fn client_loop(
    id: usize,
    start: Instant,
    stop: Arc<AtomicBool>,
    observed: Arc<Mutex<Observed>>,
) {
    let verbose = std::env::var("TPC_PARTITION_VERBOSE").is_ok_and(|v| v != "0");
    let mut rng = StdRng::seed_from_u64(0x7061_7274 + id as u64);
    let mut clients: Vec<Client> = (0..LEADERS)
        .map(|i| Client::new(&leader_addr(i), CLIENT_TIMEOUT).expect("client"))
        .collect();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let leader = rng.random_range(0..LEADERS);
        let client = &mut clients[leader];
        let key = key(rng.random_range(0..KEYS));
        let choice = rng.random_range(0..100);
        let call = since(start);
        let (kind, answer) = if choice < 50 {
            n += 1;
            let value = format!("c{id}-{n}");
            (OpKind::Put(value.clone()), client.put(&key, &value).await)
        } else if choice < 60 {
            (OpKind::Delete, client.delete(&key).await)
        } else {
            match client.get(&key).await {
                Ok(v) => (OpKind::Get(Some(v)), Ok(())),
                Err(s) if s.code() == Code::NotFound => (OpKind::Get(None), Ok(())),
                Err(s) => (OpKind::Get(None), Err(s)),
            }
        };
        let write = !matches!(kind, OpKind::Get(_));
        // The operation with its return if known, or None: left out of the history (a
        // write surely not applied, or a read that said nothing).
        let outcome = match &answer {
            Ok(()) => Some((kind, Some(since(start)))),
            Err(s) if !write || surely_not_applied(s) => None,
            Err(_) => Some((kind, None)),
        };
        if let (true, Err(s)) = (verbose, &answer) {
            let what = match outcome {
                Some(_) => "unknown",
                None => "failed",
            };
            eprintln!(
                "partition +{:.2}s: client {id} via leader {}: {key}: {what}: {:?}: {}",
                call as f64 / 1e9,
                leader + 1,
                s.code(),
                s.message()
            );
        }
        let settled = {
            let mut o = observed.lock().unwrap();
            match outcome {
                Some((kind, ret)) => {
                    match (write, ret) {
                        (true, Some(ret)) => o.acked.push((call, ret)),
                        (true, None) => o.unknown += 1,
                        (false, _) => {}
                    }
                    o.history.push(record(id, &key, kind, call, ret));
                    ret.is_some()
                }
                None => {
                    o.failed += 1;
                    false
                }
            }
        };
        if !settled {
            // A node is cut off: don't spin.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The clients under way.
struct Load {
    start: Instant,
    stop: Arc<AtomicBool>,
    observed: Arc<Mutex<Observed>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(start: Instant) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let observed = Arc::new(Mutex::new(Observed::default()));
        let tasks = (0..CLIENTS)
            .map(|id| tokio::spawn(client_loop(id, start, stop.clone(), observed.clone())))
            .collect();
        Load {
            start,
            stop,
            observed,
            tasks,
        }
    }

    fn now(&self) -> u64 {
        since(self.start)
    }

    /// Waits until `n` writes called at or after `after` are acknowledged.
    async fn acked_after(&self, what: &str, after: u64, n: usize) {
        poll(&format!("{n} writes acknowledged {what}"), SETTLE, || {
            let count = {
                let o = self.observed.lock().unwrap();
                o.acked.iter().filter(|&&(c, _)| c >= after).count()
            };
            async move { (count >= n).then_some(()).ok_or(format!("{count} so far")) }
        })
        .await
    }

    async fn stop(self) -> Observed {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("a client task");
        }
        std::mem::take(&mut *self.observed.lock().unwrap())
    }
}

/// The members as the active leader lists them (any leader forwards): each follower's
/// state by follower index (`None`: not listed), the epoch and the keys still moving.
async fn members_of(via: &str) -> Result<(Vec<Option<String>>, rpc::MembersReply), String> {
    let reply = members::fetch(via, CALL_TIMEOUT).await?;
    let states = (0..FOLLOWERS)
        .map(|i| {
            reply
                .members
                .iter()
                .find(|m| m.address == follower_addr(i))
                .map(|m| m.state.clone())
        })
        .collect();
    Ok((states, reply))
}

/// Waits until the members listed by `via`, in an epoch after `before`, are as `wanted`
/// says (given each follower's state); that epoch.
async fn members_until(
    via: &str,
    what: &str,
    before: u64,
    wanted: impl Fn(&[Option<String>], &rpc::MembersReply) -> bool,
) -> u64 {
    let wanted = &wanted;
    poll(what, SETTLE, || async move {
        let (states, reply) = members_of(via).await?;
        match reply.epoch > before && wanted(&states, &reply) {
            true => Ok(reply.epoch),
            false => Err(format!(
                "states {states:?}, epoch {}, moving {}",
                reply.epoch, reply.moving_keys
            )),
        }
    })
    .await
}

/// Waits until follower `f` is out of the members (listed down, the others active, no
/// change under way, in an epoch after `before`); that epoch.
async fn removed(via: &str, f: usize, before: u64) -> u64 {
    let what = format!("follower {} to be removed from the members", f + 1);
    members_until(via, &what, before, |states, reply| {
        let others_active = (0..FOLLOWERS)
            .filter(|&i| i != f)
            .all(|i| states[i].as_deref() == Some("active"));
        states[f].as_deref() == Some("down") && others_active && reply.moving_keys == 0
    })
    .await
}

/// Waits until follower `f` is listed down and leaving the members: a next view
/// without it, after `before`, is journaled (its removal under way, or done); its epoch.
async fn leaving(via: &str, f: usize, before: u64) -> u64 {
    let what = format!("follower {} to be listed down and leaving", f + 1);
    members_until(via, &what, before, |states, _| {
        states[f].as_deref() == Some("down")
    })
    .await
}

/// Waits until every follower is an active member and no change is under way, in an
/// epoch after `before`; that epoch.
async fn all_members(via: &str, before: u64) -> u64 {
    members_until(
        via,
        "every follower to be a member again",
        before,
        |states, reply| {
            states.iter().all(|s| s.as_deref() == Some("active"))
                && reply.members.len() == FOLLOWERS
                && reply.moving_keys == 0
        },
    )
    .await
}

/// Waits until the leaders `running` agree on an active one; its index.
async fn active_among(running: &[usize]) -> usize {
    let addrs: Vec<String> = (0..LEADERS).map(leader_addr).collect();
    support::agreed_active("partition", &addrs, running, SETTLE).await
}

fn all_leaders() -> Vec<usize> {
    (0..LEADERS).collect()
}

fn except(i: usize) -> Vec<usize> {
    (0..LEADERS).filter(|&j| j != i).collect()
}

/// A read with its version: `Some((value, version))`, `None` for NOT_FOUND.
async fn versioned(addr: &str, key: &str) -> Result<Option<(String, String)>, tonic::Status> {
    match support::client(addr).get_versioned(key).await {
        Ok(held) => Ok(Some(held)),
        Err(s) if s.code() == Code::NotFound => Ok(None),
        Err(s) => Err(s),
    }
}

/// What the prober on the minority side saw.
#[derive(Default)]
struct Probed {
    /// Every read that was answered, for the history.
    reads: Vec<Operation>,
    /// The old leader's roles as its status said, in order (deduplicated).
    roles: Vec<String>,
    /// Reads through the old leader answered, and directly from the follower.
    through_leader: usize,
    direct: usize,
    /// When the last of each was answered.
    last_through_leader: Option<u64>,
    last_direct: Option<u64>,
    /// Attempts.
    attempts: usize,
}

/// Sets its flag when dropped: a prober's thread stops also when the test fails.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// From inside the minority side (the old leader `l`'s namespace): until `stop`, asks
/// the old leader its role and reads every key through it and directly from follower
/// `f`, recording every read answered; counts its rounds in `rounds`.
async fn probe_minority(
    l: usize,
    f: usize,
    start: Instant,
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicUsize>,
) -> Probed {
    let timeout = Duration::from_secs(1);
    let own = format!("127.0.0.1:{PORT}");
    let mut through = Client::new(&own, timeout).expect("client");
    let mut direct = Client::new(&follower_addr(f), timeout).expect("client");
    let mut probed = Probed::default();
    while !stop.load(Ordering::Relaxed) {
        if let Ok(status) = status::fetch(&own, timeout).await {
            if probed.roles.last() != Some(&status.role) {
                probed.roles.push(status.role);
            }
        }
        for k in 0..KEYS {
            let key = key(k);
            for (via_leader, client) in [(true, &mut through), (false, &mut direct)] {
                probed.attempts += 1;
                let call = since(start);
                let value = match client.get(&key).await {
                    Ok(v) => Some(v),
                    Err(s) if s.code() == Code::NotFound => None,
                    Err(_) => continue,
                };
                let id = if via_leader { 200 + l } else { 300 + f };
                let ret = Some(since(start));
                probed
                    .reads
                    .push(record(id, &key, OpKind::Get(value), call, ret));
                match via_leader {
                    true => {
                        probed.through_leader += 1;
                        probed.last_through_leader = ret;
                    }
                    false => {
                        probed.direct += 1;
                        probed.last_direct = ret;
                    }
                }
            }
        }
        rounds.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    probed
}

#[test]
fn kernel_partitions_under_load_keep_reads_and_writes_linearizable_and_replicas_converge() {
    let Some(net) = Net::create() else {
        return;
    };
    let topology = net.topology.clone();
    // Everything the test sends goes from the clients' namespace: this thread enters it.
    let clients_ns = topology.ns(CLIENTS_LABEL);
    let result = std::thread::Builder::new()
        .name("partition-clients".into())
        .spawn(move || {
            enter_netns(&clients_ns);
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(run(topology))
        })
        .expect("spawn the clients' thread")
        .join();
    // The processes are gone (the thread dropped them); now the namespaces go.
    drop(net);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

async fn run(topology: Topology) {
    let begun = Instant::now();
    let note = |what: &str| eprintln!("partition +{:.1}s: {what}", begun.elapsed().as_secs_f64());
    let mut cluster = Cluster::start(&topology);
    for i in 0..FOLLOWERS {
        support::wait_follower_ready(&follower_addr(i)).await;
    }
    let first = active_among(&all_leaders()).await;
    note(&format!("cluster up, leader {} active", first + 1));
    let load = Load::start(begun);
    load.acked_after("at the start", 0, 2 * WRITES).await;
    note("load running");

    // 1. A follower cut off for a few seconds: the leader finds it unreachable, and after
    //    --member-timeout starts removing it from the members; then its link comes back
    //    (the removal under way or done), and it is a member again.
    let f = FOLLOWERS - 1;
    let via = leader_addr(first);
    let (_, before) = members_of(&via).await.expect("members");
    topology.cut(&follower_label(f));
    note(&format!("follower {} cut off", f + 1));
    let epoch = leaving(&via, f, before.epoch).await;
    // The active leader's status (a standby's lists no followers).
    let active = leader_addr(active_among(&all_leaders()).await);
    let status = status::fetch(&active, CALL_TIMEOUT).await.expect("status");
    let seen = status
        .followers
        .iter()
        .find(|s| s.address == follower_addr(f))
        .expect("the follower in the status");
    assert!(!seen.connected, "the leader still reaches it: {seen:?}");
    note(&format!(
        "follower {} listed down, leaving the members (view {epoch}); last error: {}",
        f + 1,
        seen.last_error
    ));
    topology.heal(&follower_label(f));
    note(&format!("follower {} link up", f + 1));
    let epoch = all_members(&via, epoch).await;
    note(&format!("follower {} a member again (view {epoch})", f + 1));
    load.acked_after("with the follower back", load.now(), WRITES)
        .await;

    // 2. The active leader cut off: another takes over; the one cut off stands down.
    let old = active_among(&all_leaders()).await;
    let old_epoch = status::fetch(&leader_addr(old), CALL_TIMEOUT)
        .await
        .expect("status")
        .epoch;
    topology.cut(&leader_label(old));
    note(&format!("active leader {} cut off", old + 1));
    let new = active_among(&except(old)).await;
    let new_status = status::fetch(&leader_addr(new), CALL_TIMEOUT)
        .await
        .expect("status");
    assert!(
        new_status.epoch > old_epoch,
        "leader {} took over in epoch {} after {old_epoch}",
        new + 1,
        new_status.epoch
    );
    note(&format!(
        "leader {} took over (epoch {})",
        new + 1,
        new_status.epoch
    ));
    let cut_at = load.now();
    // Asked from inside its namespace, the leader cut off has stood down and serves no
    // read: it reaches no other node.
    let (role, read) = in_netns(&topology.ns(&leader_label(old)), || async {
        let own = format!("127.0.0.1:{PORT}");
        let role = poll("the leader cut off to stand down", SETTLE, || async {
            let status = status::fetch(&own, CALL_TIMEOUT).await?;
            match status.role.as_str() {
                "active" => Err("still active".to_string()),
                role => Ok(role.to_string()),
            }
        })
        .await;
        let read = Client::new(&own, Duration::from_secs(1))
            .expect("client")
            .get(&key(0))
            .await;
        (
            role,
            read.map_err(|s| format!("{:?}: {}", s.code(), s.message())),
        )
    })
    .await
    .expect("the probe in the leader's namespace");
    assert!(
        read.is_err(),
        "the leader cut off answered a read: {read:?}"
    );
    note(&format!(
        "leader {} cut off says it is {role}; a read through it: {}",
        old + 1,
        read.unwrap_err()
    ));
    load.acked_after("by the new leader", cut_at, WRITES).await;
    topology.heal(&leader_label(old));
    note(&format!("leader {} link up", old + 1));
    let after = active_among(&all_leaders()).await;
    let back = poll(
        "the leader that was cut off to answer as a standby",
        SETTLE,
        || async {
            let status = status::fetch(&leader_addr(old), CALL_TIMEOUT).await?;
            match status.role.as_str() {
                "standby" | "active" => Ok(status.role),
                role => Err(role.to_string()),
            }
        },
    )
    .await;
    note(&format!(
        "leader {} back as {back}; leader {} active",
        old + 1,
        after + 1
    ));
    load.acked_after("with every leader back", load.now(), WRITES)
        .await;

    // 3. The network splits: the active leader and a follower on one side, the other
    //    leaders and followers and the clients on the other.
    let old = active_among(&all_leaders()).await;
    let f = 0;
    let (_, before) = members_of(&leader_addr(old)).await.expect("members");
    let minority = [leader_label(old), follower_label(f)];
    topology.split(&minority);
    let split_at = load.now();
    note(&format!(
        "split: leader {} and follower {} apart",
        old + 1,
        f + 1
    ));
    let stop_probe = StopOnDrop(Arc::new(AtomicBool::new(false)));
    let rounds = Arc::new(AtomicUsize::new(0));
    let probe = {
        let (stop, rounds) = (stop_probe.0.clone(), rounds.clone());
        in_netns(&topology.ns(&leader_label(old)), move || {
            probe_minority(old, f, begun, stop, rounds)
        })
    };
    let new = active_among(&except(old)).await;
    note(&format!("leader {} took over", new + 1));
    let epoch = removed(&leader_addr(new), f, before.epoch).await;
    note(&format!("follower {} removed (view {epoch})", f + 1));
    load.acked_after("on the majority side", split_at, WRITES)
        .await;
    // The prober reads every key twice more, after those writes.
    let from = rounds.load(Ordering::Relaxed);
    poll("the prober to read after the writes", SETTLE, || {
        let done = rounds.load(Ordering::Relaxed);
        async move {
            (done >= from + 2)
                .then_some(())
                .ok_or(format!("{} rounds", done - from))
        }
    })
    .await;
    drop(stop_probe);
    let probed = probe.await.expect("the prober");
    let first_write = {
        let o = load.observed.lock().unwrap();
        o.acked
            .iter()
            .filter(|&&(call, _)| call >= split_at)
            .map(|&(_, ret)| ret)
            .min()
    };
    let after_split = |t: Option<u64>| {
        t.map_or("none".to_string(), |t| {
            format!("+{:.1}s", t.saturating_sub(split_at) as f64 / 1e9)
        })
    };
    note(&format!(
        "minority side: leader {} roles {:?}; of {} reads each, {} answered through it (the \
         last: {} after the split) and {} directly by follower {} (the last: {}); the \
         majority's first write acknowledged {} after the split",
        old + 1,
        probed.roles,
        probed.attempts / 2,
        probed.through_leader,
        after_split(probed.last_through_leader),
        probed.direct,
        f + 1,
        after_split(probed.last_direct),
        after_split(first_write),
    ));
    assert!(
        probed.roles.last().is_some_and(|r| r != "active"),
        "the leader on the minority side did not stand down: {:?}",
        probed.roles
    );
    topology.join(&minority);
    note("split healed");
    let after = active_among(&all_leaders()).await;
    let epoch = all_members(&leader_addr(after), epoch).await;
    note(&format!(
        "every follower a member (view {epoch}), leader {} active",
        after + 1
    ));
    load.acked_after("after the split", load.now(), WRITES)
        .await;

    // The end: stop the clients, read every key through the active leader, check.
    let mut observed = load.stop().await;
    note(&format!(
        "{} operations recorded, {} acknowledged writes, {} of unknown outcome, {} failed",
        observed.history.len(),
        observed.acked.len(),
        observed.unknown,
        observed.failed
    ));
    observed.history.extend(probed.reads);
    let active = active_among(&all_leaders()).await;
    let leader = leader_addr(active);
    for k in 0..KEYS {
        let key = key(k);
        let (call, held) = poll(&format!("a final read of {key}"), SETTLE, || async {
            let call = since(begun);
            versioned(&leader, &key)
                .await
                .map(|held| (call, held))
                .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
        })
        .await;
        let value = held.map(|(value, _)| value);
        let ret = Some(since(begun));
        observed
            .history
            .push(record(100, &key, OpKind::Get(value), call, ret));
    }
    if let Err(violation) = check::check(&observed.history) {
        panic!("{violation}");
    }
    note("the history is linearizable");

    // Convergence: every follower holds every key (3 followers, 3 replicas), as the
    // leader reads it, value and version.
    for k in 0..KEYS {
        let key = key(k);
        poll(
            &format!("every follower to hold {key} as the leader reads it"),
            SETTLE,
            || async {
                let want = versioned(&leader, &key)
                    .await
                    .map_err(|s| format!("leader: {s:?}"))?;
                for i in 0..FOLLOWERS {
                    let held = versioned(&follower_addr(i), &key)
                        .await
                        .map_err(|s| format!("follower {}: {s:?}", i + 1))?;
                    if held != want {
                        return Err(format!(
                            "follower {} holds {held:?}, the leader reads {want:?}",
                            i + 1
                        ));
                    }
                }
                Ok(())
            },
        )
        .await;
    }
    note("the followers converged");
    cluster.assert_running();
}
