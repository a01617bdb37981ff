//! Shared by the benches: where their files go.
//!
//! The benches measure fsync, so they must write to a real disk. A directory on tmpfs
//! (where fsync costs nothing) would make every number meaningless, and some systems
//! mount the temp dir there: set `TPC_BENCH_DIR` to a directory on the disk to measure.

use std::path::{Path, PathBuf};

/// A fresh directory for one bench's files, removed when dropped: under
/// `$TPC_BENCH_DIR` if set, else under the system temp dir. Says where it is and on
/// which file system, and warns if that is a RAM file system.
pub fn bench_dir() -> tempfile::TempDir {
    let parent = std::env::var_os("TPC_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let dir = tempfile::Builder::new()
        .prefix("tpc-bench-")
        .tempdir_in(&parent)
        .unwrap_or_else(|e| panic!("cannot create a bench dir under {}: {e}", parent.display()));
    let fs = fs_type(dir.path()).unwrap_or_else(|| "unknown file system".to_string());
    eprintln!("bench files in {} ({fs})", dir.path().display());
    if fs == "tmpfs" || fs == "ramfs" {
        eprintln!("warning: {fs} makes fsync free; set TPC_BENCH_DIR to a directory on a disk");
    }
    dir
}

/// The type of the file system holding `path` (the longest matching mount point in
/// `/proc/self/mounts`); `None` where that file does not exist (not Linux).
fn fs_type(path: &Path) -> Option<String> {
    let path = path.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ').skip(1);
            Some((fields.next()?, fields.next()?))
        })
        .filter(|(mount_point, _)| path.starts_with(mount_point))
        .max_by_key(|(mount_point, _)| mount_point.len())
        .map(|(_, fs)| fs.to_string())
}
