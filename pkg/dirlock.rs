//! Exclusive directory locks (DESIGN §1.7): two processes must never share a journal or
//! a key-value directory. The lock is an OS `flock` on a lock file, so it disappears
//! with the process, however it dies.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use crate::Error;

/// Holds an exclusive lock until dropped.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Takes the lock on `path` (creating the file), or fails at once if another process holds it.
    pub fn acquire(path: &Path) -> Result<DirLock, Error> {
        let io_error = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io_error)?;
        match file.try_lock() {
            Ok(()) => Ok(DirLock {
                _file: file,
                path: path.to_path_buf(),
            }),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::Config(format!(
                "{} is locked: another tpc process is using this directory; stop it first \
                 or give this node its own directories",
                path.display()
            ))),
            Err(std::fs::TryLockError::Error(e)) => Err(io_error(e)),
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_on_the_same_file_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".lock");
        let first = DirLock::acquire(&path).unwrap();
        let err = DirLock::acquire(&path).unwrap_err().to_string();
        assert!(err.contains("another tpc process"), "{err}");
        drop(first);
        DirLock::acquire(&path).unwrap();
    }
}
