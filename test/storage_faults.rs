//! Storage faults: a full disk under a node's journal or key-value directory.
//!
//! Each test mounts a small tmpfs (so this needs root, as CI has; elsewhere the tests
//! say so and pass without running), puts one node's directory on it, fills it, and
//! checks that the write fails cleanly (the follower votes ABORT, or the leader refuses),
//! that nothing partial is left, that the node keeps serving, and that writes work again
//! once space returns. The disks are smaller than one journal preallocation step
//! (`journal::PREALLOCATE_BYTES`), so the journals run without preallocated room, as
//! they do on a nearly full disk.

#[path = "e2e_support/mod.rs"]
mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::{wait_follower_ready, wait_leader_ready, Node, NodeDirs, Role};
use tonic::Code;

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

/// A leader and three followers; `journal_of` and `kv_of` pick directories per node
/// (None: its own temp dirs). Followers first, then the leader; `nodes[3]` is the leader.
struct Setup {
    nodes: Vec<Node>,
    dirs: Vec<NodeDirs>,
}

impl Setup {
    async fn start(
        leader_journal: Option<&Path>,
        f1_journal: Option<&Path>,
        f1_kv: Option<&Path>,
    ) -> Setup {
        let dirs: Vec<NodeDirs> = ["sf-f1", "sf-f2", "sf-f3", "sf-leader"]
            .iter()
            .map(|n| NodeDirs::new(n))
            .collect();
        let mut nodes = Vec::new();
        for (i, d) in dirs.iter().take(3).enumerate() {
            let journal = match (i, f1_journal) {
                (0, Some(j)) => j.to_path_buf(),
                _ => d.journal_dir(),
            };
            let kv = match (i, f1_kv) {
                (0, Some(k)) => k.to_path_buf(),
                _ => d.kv_dir(),
            };
            nodes.push(support::spawn_with_dirs(
                d,
                Role::Follower,
                &d.addr(),
                &[],
                &journal,
                &kv,
            ));
        }
        let followers = dirs.iter().take(3).map(|d| d.addr()).collect();
        let leader = &dirs[3];
        let journal = leader_journal
            .map(Path::to_path_buf)
            .unwrap_or_else(|| leader.journal_dir());
        nodes.push(support::spawn_with_dirs(
            leader,
            Role::leader(followers),
            &leader.addr(),
            &[],
            &journal,
            &leader.kv_dir(),
        ));
        for d in dirs.iter().take(3) {
            wait_follower_ready(&d.addr()).await;
        }
        wait_leader_ready(&dirs[3].addr()).await;
        Setup { nodes, dirs }
    }

    fn leader(&self) -> String {
        self.dirs[3].addr()
    }

    fn follower(&self, i: usize) -> String {
        self.dirs[i].addr()
    }

    /// Every follower's settled value of `key`.
    async fn follower_values(&self, key: &str) -> Vec<Option<String>> {
        let mut values = Vec::new();
        for i in 0..3 {
            values.push(support::settled_get(&self.follower(i), key).await);
        }
        values
    }

    fn assert_running(&mut self) {
        for node in &mut self.nodes {
            assert!(node.try_exit().is_none(), "{} exited", node.name);
        }
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
    let mut s = Setup::start(None, Some(&journal), None).await;
    let mut c = support::client(&s.leader());
    c.put("k", "old").await.expect("put before the disk fills");

    let filler = disk.fill();
    let big = "n".repeat(16 * 1024);
    let err = c
        .put("k", &big)
        .await
        .expect_err("a follower can't journal its vote");
    assert_eq!(err.code(), Code::Aborted, "{err:?}");
    assert_eq!(
        s.follower_values("k").await,
        vec![some("old"); 3],
        "nothing partial"
    );
    assert_eq!(c.get("k").await.expect("reads still work"), "old");
    s.assert_running();
    assert!(
        s.dirs[0].log().contains("journal write failed"),
        "a clear log line"
    );

    std::fs::remove_file(filler).expect("free the space");
    c.put("k", "after")
        .await
        .expect("writes work once space returns");
    assert_eq!(s.follower_values("k").await, vec![some("after"); 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_journal_disk_is_full_refuses_writes_and_recovers_when_space_returns() {
    let Some(disk) = Tmpfs::mount("512k") else {
        return skip("leader journal disk full");
    };
    let journal = disk.path().join("journal");
    let mut s = Setup::start(Some(&journal), None, None).await;
    let mut c = support::client(&s.leader());
    c.put("k", "old").await.expect("put before the disk fills");

    let filler = disk.fill();
    // The leader journals keys, not values: a long key needs new pages.
    let long_key = "k".repeat(16 * 1024);
    let err = c
        .put(&long_key, "new")
        .await
        .expect_err("the leader can't journal the transaction");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("write not applied"), "{err:?}");
    assert_eq!(s.follower_values(&long_key).await, vec![None; 3]);
    assert_eq!(c.get("k").await.expect("reads still work"), "old");
    s.assert_running();
    assert!(
        s.dirs[3].log().contains("leader journal write failed"),
        "a clear log line"
    );

    std::fs::remove_file(filler).expect("free the space");
    c.put(&long_key, "after")
        .await
        .expect("writes work once space returns");
    assert_eq!(s.follower_values(&long_key).await, vec![some("after"); 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_whose_data_disk_is_full_applies_the_committed_write_once_space_returns() {
    let Some(disk) = Tmpfs::mount("512k") else {
        return skip("follower data disk full");
    };
    let kv = disk.path().join("kv");
    let mut s = Setup::start(None, None, Some(&kv)).await;
    let mut c = support::client(&s.leader());
    c.put("k", "old").await.expect("put before the disk fills");
    // Decisions reach followers after the client's answer: wait until it is applied.
    assert_eq!(s.follower_values("k").await, vec![some("old"); 3]);

    let filler = disk.fill();
    // The votes only need the journals: the write commits, and the full follower keeps
    // the key locked (never showing the old value) until it can apply it. (A follower
    // rewrites a key's file in place, so the new value must need more room than the
    // old one's page to hit the full disk.)
    let new = "n".repeat(64 * 1024);
    c.put("k", &new)
        .await
        .expect("the decision is durable at the leader");
    match support::get(&s.follower(0), "k").await {
        Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        Ok(value) => {
            panic!("the full follower answered {value:?} while it could not apply the write")
        }
    }
    assert_eq!(
        c.get("k").await.expect("the leader reads from the others"),
        new
    );
    s.assert_running();

    std::fs::remove_file(filler).expect("free the space");
    assert_eq!(s.follower_values("k").await, vec![some(&new); 3]);
    c.put("k", "after").await.expect("and writes go on");
    assert_eq!(s.follower_values("k").await, vec![some("after"); 3]);
}
