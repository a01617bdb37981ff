//! Storage faults: a full disk under a node's journal or key-value directory.
//!
//! Each test mounts a small tmpfs (so this needs root, as CI has; elsewhere the tests
//! say so and pass without running), puts one node's directory on it, fills it, and
//! checks that the write fails cleanly (the follower votes ABORT, or the leader refuses),
//! that nothing partial is left, that the node keeps serving, and that writes work again
//! once space returns. Each ends by killing (SIGKILL) the node whose disk filled and
//! starting it again: it must come up and serve every acknowledged write, read through
//! the leader and directly from each follower (what a full disk did to its files only
//! shows when they are read back). The disks are smaller than one journal
//! preallocation step (`journal::PREALLOCATE_BYTES`), so the journals run without
//! preallocated room, as they do on a nearly full disk.

#[path = "e2e_support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::{wait_follower_ready, wait_leader_ready, Node, NodeDirs, Role};
use tonic::{Code, Status};
use tpc::client::Client;

/// A small tmpfs, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "1m"), or `None` if this process may not mount.
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::Builder::new()
            .prefix("tpc-tmpfs-")
            .tempdir()
            .ok()?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        status.success().then_some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the file system: writes a file until the disk is full. (Files already on
    /// it may still grow into the unused rest of their last page: the tests write
    /// records larger than a page to get past that.)
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).expect("create the filler");
        for size in [65536, 4096, 1] {
            let chunk = vec![0u8; size];
            while file.write_all(&chunk).is_ok() {}
        }
        let _ = file.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn skip(test: &str) {
    eprintln!("SKIPPED {test}: mounting a tmpfs needs root (CI runs this as root)");
}

/// A leader and three followers, `nodes[3]` the leader, and every write the leader
/// acknowledged (made through [`Setup::put`]).
struct Setup {
    nodes: Vec<Node>,
    dirs: Vec<NodeDirs>,
    /// Each node's `--journal-dir` and `--kv-dir` (a tmpfs for the node under test).
    journals: Vec<PathBuf>,
    kvs: Vec<PathBuf>,
    client: Client,
    /// The value of each key's last acknowledged write.
    acknowledged: BTreeMap<String, String>,
}

/// Where a node's directories go: `None` for its own temp dirs.
#[derive(Default)]
struct Disks<'a> {
    leader_journal: Option<&'a Path>,
    f1_journal: Option<&'a Path>,
    f1_kv: Option<&'a Path>,
}

const LEADER: usize = 3;

impl Setup {
    async fn start(disks: Disks<'_>) -> Setup {
        let dirs: Vec<NodeDirs> = ["sf-f1", "sf-f2", "sf-f3", "sf-leader"]
            .iter()
            .map(|n| NodeDirs::new(n))
            .collect();
        let pick = |given: Option<&Path>, own: PathBuf| given.map_or(own, Path::to_path_buf);
        let journals = vec![
            pick(disks.f1_journal, dirs[0].journal_dir()),
            dirs[1].journal_dir(),
            dirs[2].journal_dir(),
            pick(disks.leader_journal, dirs[LEADER].journal_dir()),
        ];
        let kvs = vec![
            pick(disks.f1_kv, dirs[0].kv_dir()),
            dirs[1].kv_dir(),
            dirs[2].kv_dir(),
            dirs[LEADER].kv_dir(),
        ];
        let client = support::client(&dirs[LEADER].addr());
        let mut s = Setup {
            nodes: Vec::new(),
            dirs,
            journals,
            kvs,
            client,
            acknowledged: BTreeMap::new(),
        };
        for i in 0..=LEADER {
            let node = s.spawn(i);
            s.nodes.push(node);
        }
        for i in 0..LEADER {
            wait_follower_ready(&s.follower(i)).await;
        }
        wait_leader_ready(&s.leader()).await;
        s
    }

    fn spawn(&self, i: usize) -> Node {
        let d = &self.dirs[i];
        let role = if i == LEADER {
            Role::leader((0..LEADER).map(|f| self.follower(f)).collect())
        } else {
            Role::Follower
        };
        support::spawn_with_dirs(d, role, &d.addr(), &[], &self.journals[i], &self.kvs[i])
    }

    /// Kills node `i` (SIGKILL), starts it again on the same directories and waits
    /// until it is ready.
    async fn kill_and_restart(&mut self, i: usize) {
        self.nodes[i].kill();
        self.nodes[i] = self.spawn(i);
        if i == LEADER {
            wait_leader_ready(&self.leader()).await;
        } else {
            wait_follower_ready(&self.follower(i)).await;
        }
    }

    fn leader(&self) -> String {
        self.dirs[LEADER].addr()
    }

    fn follower(&self, i: usize) -> String {
        self.dirs[i].addr()
    }

    /// A put through the leader; an acknowledged one is remembered.
    async fn put(&mut self, key: &str, value: &str) -> Result<(), Status> {
        self.client.put(key, value).await?;
        self.acknowledged.insert(key.to_string(), value.to_string());
        Ok(())
    }

    /// Every follower's settled value of `key`.
    async fn follower_values(&self, key: &str) -> Vec<Option<String>> {
        let mut values = Vec::new();
        for i in 0..LEADER {
            values.push(support::settled_get(&self.follower(i), key).await);
        }
        values
    }

    /// Waits until every follower has applied every acknowledged write (decisions
    /// reach followers after the client's answer: one still on its way when a disk
    /// fills would hit the full disk instead of the write under test).
    async fn wait_applied_everywhere(&self) {
        for (key, value) in &self.acknowledged {
            assert_eq!(
                self.follower_values(key).await,
                vec![Some(value.clone()); 3],
                "followers' values of {key:?}"
            );
        }
    }

    /// Every acknowledged write reads back, through the leader and directly from each
    /// follower (once its decision has reached it: reads of a key it holds prepared
    /// are UNAVAILABLE until then).
    async fn assert_serves_every_acknowledged_write(&self) {
        assert!(!self.acknowledged.is_empty());
        let mut addrs = vec![self.leader()];
        addrs.extend((0..LEADER).map(|i| self.follower(i)));
        for (key, value) in &self.acknowledged {
            for addr in &addrs {
                let got = support::settled_get(addr, key).await;
                assert!(
                    got.as_ref() == Some(value),
                    "{addr}: Get({key:?}) answered {}, not the acknowledged {}",
                    describe(got.as_deref()),
                    describe(Some(value)),
                );
            }
        }
    }

    fn assert_running(&mut self) {
        for node in &mut self.nodes {
            assert!(node.try_exit().is_none(), "{} exited", node.name);
        }
    }
}

/// A value for a message: short ones as they are, long ones by length and start.
fn describe(value: Option<&str>) -> String {
    match value {
        None => "NOT_FOUND".to_string(),
        Some(v) if v.len() <= 40 => format!("{v:?}"),
        Some(v) => format!("{} bytes starting {:?}", v.len(), &v[..20]),
    }
}

fn some(v: &str) -> Option<String> {
    Some(v.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_whose_journal_disk_is_full_votes_abort_and_recovers_when_space_returns() {
    let Some(disk) = Tmpfs::mount("512k") else {
        return skip("follower journal disk full");
    };
    let journal = disk.path().join("journal");
    let mut s = Setup::start(Disks {
        f1_journal: Some(&journal),
        ..Disks::default()
    })
    .await;
    s.put("k", "old").await.expect("put before the disk fills");
    s.wait_applied_everywhere().await;

    let filler = disk.fill();
    let big = "n".repeat(16 * 1024);
    let err = s
        .put("k", &big)
        .await
        .expect_err("a follower can't journal its vote");
    assert_eq!(err.code(), Code::Aborted, "{err:?}");
    assert_eq!(
        s.follower_values("k").await,
        vec![some("old"); 3],
        "nothing partial"
    );
    assert_eq!(s.client.get("k").await.expect("reads still work"), "old");
    s.assert_running();
    assert!(
        s.dirs[0].log().contains("journal write failed"),
        "a clear log line"
    );

    std::fs::remove_file(filler).expect("free the space");
    s.put("k", "after")
        .await
        .expect("writes work once space returns");
    s.put("k2", "more").await.expect("and go on");
    assert_eq!(s.follower_values("k").await, vec![some("after"); 3]);

    s.kill_and_restart(0).await;
    s.assert_serves_every_acknowledged_write().await;
}

/// A commit needs nothing of the leader's disk (its votes are its record, DESIGN §1.4),
/// so a full leader journal disk does not stop commits. An ABORT must be durable before
/// it is sent or answered: it waits for room (its keys stay locked, its client gets no
/// answer before its deadline), and is sent once space returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_journal_disk_is_full_still_commits_and_holds_an_abort_until_space_returns()
{
    let Some(disk) = Tmpfs::mount("512k") else {
        return skip("leader journal disk full");
    };
    let journal = disk.path().join("journal");
    let mut s = Setup::start(Disks {
        leader_journal: Some(&journal),
        ..Disks::default()
    })
    .await;
    s.put("k", "old").await.expect("put before the disk fills");
    s.wait_applied_everywhere().await;

    let filler = disk.fill();
    s.put("k", "committed while full")
        .await
        .expect("a commit journals nothing on the leader");
    s.wait_applied_everywhere().await;

    // The third follower is down: writes abort. Their ABORT records fit in the last
    // page of the journal file for a while; the first that does not gets no answer.
    s.nodes[2].kill();
    let mut short = Client::new(&s.leader(), std::time::Duration::from_secs(2)).expect("client");
    let mut held = None;
    for attempt in 0..500 {
        let key = format!("aborting-{attempt}");
        match short.put(&key, "never").await {
            Err(e) if e.code() == Code::Unavailable => {} // journaled: refused at once
            Err(e) if matches!(e.code(), Code::DeadlineExceeded | Code::Cancelled) => {
                held = Some(key);
                break;
            }
            other => panic!("{key}: expected a refusal or no answer, got {other:?}"),
        }
    }
    let aborting = held.expect("an ABORT that does not fit on the full disk is held");
    assert!(
        s.dirs[LEADER]
            .log()
            .contains("leader journal write failed; will retry"),
        "a clear log line"
    );
    for i in 0..2 {
        match support::get(&s.follower(i), &aborting).await {
            Err(e) if e.code() == Code::Unavailable => {}
            other => panic!("f{}: the key stays locked, got {other:?}", i + 1),
        }
    }
    s.assert_running();

    std::fs::remove_file(filler).expect("free the space");
    s.nodes[2] = s.spawn(2);
    wait_follower_ready(&s.follower(2)).await;
    assert_eq!(s.follower_values(&aborting).await, vec![None; 3]);
    s.put("k", "more").await.expect("writes go on");

    s.kill_and_restart(LEADER).await;
    s.assert_serves_every_acknowledged_write().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_whose_data_disk_is_full_applies_the_committed_write_once_space_returns() {
    let Some(disk) = Tmpfs::mount("512k") else {
        return skip("follower data disk full");
    };
    let kv = disk.path().join("kv");
    let mut s = Setup::start(Disks {
        f1_kv: Some(&kv),
        ..Disks::default()
    })
    .await;
    s.put("k", "old").await.expect("put before the disk fills");
    // Decisions reach followers after the client's answer: wait until it is applied.
    assert_eq!(s.follower_values("k").await, vec![some("old"); 3]);

    let filler = disk.fill();
    // The votes only need the journals: the write commits, and the full follower keeps
    // the key locked (never showing the old value) until it can apply it. (A follower
    // rewrites a key's file in place, so the new value must need more room than the
    // old one's page to hit the full disk.)
    let new = "n".repeat(64 * 1024);
    s.put("k", &new)
        .await
        .expect("the decision is durable at the leader");
    match support::get(&s.follower(0), "k").await {
        Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        Ok(value) => {
            panic!("the full follower answered {value:?} while it could not apply the write")
        }
    }
    assert_eq!(
        s.client
            .get("k")
            .await
            .expect("the leader reads from the others"),
        new
    );
    s.assert_running();

    std::fs::remove_file(filler).expect("free the space");
    assert_eq!(s.follower_values("k").await, vec![some(&new); 3]);
    s.put("k", "after").await.expect("and writes go on");
    assert_eq!(s.follower_values("k").await, vec![some("after"); 3]);

    s.kill_and_restart(0).await;
    s.assert_serves_every_acknowledged_write().await;
}

/// The outside tester's report: a follower's journal and data on one small disk, a
/// 200 KB put refused while it is full, a put that succeeds once space returns, then
/// the follower killed. It refused to start ("line 1: corrupt record"): its journal
/// held NUL bytes where its records had been, then the last one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_whose_disk_filled_under_a_200_kb_put_restarts_with_every_acknowledged_write() {
    let Some(disk) = Tmpfs::mount("512k") else {
        return skip("follower disk full, then restarted");
    };
    let (journal, kv) = (disk.path().join("journal"), disk.path().join("kv"));
    let mut s = Setup::start(Disks {
        f1_journal: Some(&journal),
        f1_kv: Some(&kv),
        ..Disks::default()
    })
    .await;
    s.put("a", "1").await.expect("put before the disk fills");
    s.put("b", "2").await.expect("put before the disk fills");
    s.wait_applied_everywhere().await;

    let ballast = disk.fill();
    let err = s
        .put("big", &"x".repeat(200 * 1000))
        .await
        .expect_err("the full follower can't journal its vote");
    assert_eq!(err.code(), Code::Aborted, "{err:?}");

    std::fs::remove_file(ballast).expect("free the space");
    s.put("c", "3")
        .await
        .expect("writes work once space returns");
    assert_eq!(s.follower_values("c").await, vec![some("3"); 3]);

    s.kill_and_restart(0).await;
    s.assert_running();
    s.assert_serves_every_acknowledged_write().await;
    assert_eq!(s.follower_values("big").await, vec![None; 3]);
}

/// Disks that fill and empty again and again, a follower's (its journal and data on
/// one) and the leader's, each refusing writes while full, with restarts in between:
/// each refused write leaves nothing behind, each acknowledged one survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disks_that_fill_and_empty_again_and_again_lose_no_acknowledged_write() {
    let (Some(f1_disk), Some(leader_disk)) = (Tmpfs::mount("512k"), Tmpfs::mount("512k")) else {
        return skip("disks that fill and empty again and again");
    };
    let (journal, kv) = (f1_disk.path().join("journal"), f1_disk.path().join("kv"));
    let leader_journal = leader_disk.path().join("journal");
    let mut s = Setup::start(Disks {
        leader_journal: Some(&leader_journal),
        f1_journal: Some(&journal),
        f1_kv: Some(&kv),
    })
    .await;
    for round in 0..4 {
        s.put(&format!("before-{round}"), &"b".repeat(10_000))
            .await
            .expect("put while there is room");
        s.wait_applied_everywhere().await;

        let ballast = f1_disk.fill();
        let err = s
            .put(&format!("refused-{round}"), &"f".repeat(20_000))
            .await
            .expect_err("the full follower can't journal its vote");
        assert_eq!(err.code(), Code::Aborted, "{err:?}");
        std::fs::remove_file(ballast).expect("free the follower's space");

        let ballast = leader_disk.fill();
        s.put(
            &"l".repeat(16 * 1024),
            &format!("committed while full {round}"),
        )
        .await
        .expect("a commit journals nothing on the leader");
        s.wait_applied_everywhere().await;
        std::fs::remove_file(ballast).expect("free the leader's space");

        s.put(&format!("after-{round}"), &"a".repeat(10_000))
            .await
            .expect("put once space returns");
        s.put("overwritten", &round.to_string())
            .await
            .expect("put once space returns");
        s.assert_running();
        if round % 2 == 1 {
            s.kill_and_restart(0).await;
            s.kill_and_restart(LEADER).await;
            s.assert_serves_every_acknowledged_write().await;
        }
    }
    for round in 0..4 {
        assert_eq!(
            s.follower_values(&format!("refused-{round}")).await,
            vec![None; 3]
        );
    }
    s.assert_serves_every_acknowledged_write().await;
}
