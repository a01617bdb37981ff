//! A small disk that can be filled, for the unit tests of what happens when a write
//! finds no room: a tmpfs mounted on a temp dir (which needs root, as CI has; elsewhere
//! [`SmallDisk::mount`] says so and the test passes without running).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A tmpfs of a given size, unmounted (lazily) on drop.
pub(crate) struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (`mount -o size=`, e.g. "512k"), or `None` (after saying
    /// so on stderr) if this process may not mount one.
    pub(crate) fn mount(size: &str, test: &str) -> Option<SmallDisk> {
        let mounted = tempfile::Builder::new()
            .prefix("tpc-small-disk-")
            .tempdir()
            .ok()
            .filter(|dir| {
                Command::new("mount")
                    .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                    .arg(dir.path())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|status| status.success())
            })
            .map(|dir| SmallDisk { dir });
        if mounted.is_none() {
            eprintln!("SKIPPED {test}: mounting a tmpfs needs root (CI runs this as root)");
        }
        mounted
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the disk with a file of its own and returns that file's path (remove it to
    /// free the space). Files already on the disk may still grow into the unused rest of
    /// their last page: a write meant to fail must need more than a page.
    pub(crate) fn fill(&self) -> PathBuf {
        let path = self.path().join("ballast");
        let mut file = std::fs::File::create(&path).expect("create the ballast");
        for size in [65536, 4096, 1] {
            let chunk = vec![0u8; size];
            while file.write_all(&chunk).is_ok() {}
        }
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
