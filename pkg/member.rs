//! A follower's member id (DESIGN §7): created at its first start, kept in the file
//! `member-id` of its journal directory.
//!
//! The id names the follower's *data*, not its address: it survives restarts and a move
//! to another address, and a follower restarted with an empty journal directory (a new
//! or replaced disk) is a new member with a new id. That is what lets a leader tell a
//! replaced follower from the one it knew at the same address, and what the hash ring
//! of `placement` hashes.
//!
//! The file holds one line, a UUID, written once: to a temporary file, fsynced, renamed
//! into place and the directory fsynced, so a crash leaves either no id (the next start
//! creates one; the follower had not answered anyone with the old one) or a whole one.

use crate::placement::MemberId;
use crate::{Error, Result};
use std::io::Write;
use std::path::Path;

/// The file's name in the journal directory.
pub const FILE: &str = "member-id";

/// The member id kept in `dir`, created (durably) if there is none yet.
pub fn load_or_create(dir: &Path) -> Result<MemberId> {
    let path = dir.join(FILE);
    match std::fs::read(&path) {
        Ok(bytes) => parse(&bytes).map_err(|why| {
            Error::Config(format!(
                "{}: {why}; this file names the follower's data and must not be edited. \
                 If the journal directory was emptied on purpose, remove it too",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(dir),
        Err(source) => Err(Error::Io { path, source }),
    }
}

/// A member id file's content: one UUID and a newline.
fn parse(bytes: &[u8]) -> std::result::Result<MemberId, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    let id = text.strip_suffix('\n').unwrap_or(text);
    uuid::Uuid::parse_str(id)
        .map(|_| MemberId(id.to_string()))
        .map_err(|_| format!("not a member id (a UUID): {:?}", truncate(id)))
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn create(dir: &Path) -> Result<MemberId> {
    let id = uuid::Uuid::new_v4().to_string();
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let temp = dir.join(format!("{FILE}.tmp"));
    let mut file = std::fs::File::create(&temp).map_err(io(&temp))?;
    file.write_all(format!("{id}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io(&temp))?;
    let path = dir.join(FILE);
    std::fs::rename(&temp, &path).map_err(io(&path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(MemberId(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path()).unwrap();
        assert!(uuid::Uuid::parse_str(&first.0).is_ok(), "{first}");
        assert_eq!(
            load_or_create(dir.path()).unwrap(),
            first,
            "a restart keeps it"
        );
        let other = tempfile::tempdir().unwrap();
        assert_ne!(
            load_or_create(other.path()).unwrap(),
            first,
            "an empty dir: a new member"
        );
        assert!(!dir.path().join("member-id.tmp").exists());
    }

    #[test]
    fn a_damaged_id_file_stops_the_start_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        for bad in [&b""[..], b"not-a-uuid\n", b"\xff\xfe", &[0u8; 37][..]] {
            std::fs::write(dir.path().join(FILE), bad).unwrap();
            let err = load_or_create(dir.path()).unwrap_err().to_string();
            assert!(
                err.contains("member-id") && err.contains("not"),
                "{bad:?}: {err}"
            );
        }
    }
}
