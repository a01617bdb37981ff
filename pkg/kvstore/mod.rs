//! The follower's durable data: one file per key in a single directory.
//!
//! # Why one file per key
//!
//! A follower's state is a map from string keys to string values. Storing each
//! key in its own file keeps the store simple and inspectable (`ls` and `cat`
//! show exactly what a follower holds), and gives every write an atomic
//! building block the operating system already provides: `rename(2)` replaces
//! a directory entry in one step, so a reader opening the file sees either the
//! whole old value or the whole new value, never a mixture. There is no index
//! to keep consistent with the data, no compaction and no recovery beyond
//! deleting abandoned temp files. The cost — one inode per key and an fsync
//! per write — is acceptable for a store whose writes are already paced by
//! two-phase commit.
//!
//! # File names, byte by byte
//!
//! A key may be any UTF-8 string: it can contain `/`, `..`, spaces, newlines,
//! NUL bytes or upper-case letters, none of which may reach the file system
//! as-is. A key's file name is `v` followed by the key's bytes encoded one at
//! a time:
//!
//! * `a`–`z` and `0`–`9` are written verbatim;
//! * every other byte — upper-case letters, `_`, `.`, `/`, space, control
//!   bytes and each byte of a multi-byte UTF-8 character — is written as `_`
//!   followed by two lower-case hex digits.
//!
//! | key            | file name                |
//! |----------------|--------------------------|
//! | `user42`       | `vuser42`                |
//! | `Upper`        | `v_55pper`               |
//! | `../x`         | `v_2e_2e_2fx`            |
//! | `a b`          | `va_20b`                 |
//! | `é`            | `v_c3_a9`                |
//! | `k_41`         | `vk_5f41`                |
//!
//! The encoding is a bijection between keys and canonical names, so listing
//! the directory recovers every key ([`key_for_file_name`] rejects any name
//! that is not exactly what [`file_name_for`] would produce). Names consist
//! only of lower-case ASCII letters, digits and `_`, so a case-insensitive file
//! system cannot merge two keys (`UPPER` and `upper` stay distinct), and a name
//! can never contain a path separator nor be `.` or `..`.
//!
//! # Hashed names for long keys
//!
//! Encoding can triple a key's length, and most file systems limit a name to
//! 255 bytes. When the `v` name would be longer than 200 bytes the file is
//! instead named `w` followed by the 64 lower-case hex digits of the SHA-256
//! of the key bytes (65 bytes in all), and since the name no longer spells the
//! key, the key is stored inside the file.
//!
//! # What a key file holds: the version, then the value
//!
//! Every key has a version, the id of the transaction that last wrote it (DESIGN
//! §1.8, [`TxId`]), stored with its value:
//!
//! ```text
//! v file:  <version> '\n' <value bytes>
//! w file:  <version> '\n' <key length in decimal ASCII> '\n' <key bytes> <value bytes>
//! ```
//!
//! where `<version>` is `<epoch>.<seq>` in decimal. Reading a `w` file whose stored
//! key is not the requested key (a hash collision or a tampered file) is
//! reported as [`Error::Corrupt`] rather than returning another key's value.
//!
//! **Upgrade.** Stores written before versions named their files `k…` (the value
//! alone) and `h…` (the key length, key and value). [`KvStore::open`] rewrites each of
//! them under its new name with version `0.0` (older than any transaction: nothing
//! knows which one wrote it), by the atomic replace below, and only then removes the
//! old file; a crash in between leaves both names, and the next open keeps the new one
//! and removes the old. The old names are never read otherwise.
//!
//! Other names in the directory: temp files are `t<random hex>.tmp`, the
//! owning process's lock file is `.lock`; anything else is logged once when
//! the store is opened and otherwise ignored.
//!
//! # Atomic replace and why each fsync is there
//!
//! [`KvStore::put`] performs:
//!
//! 1. write the new content to a fresh temp file `t<random>.tmp` in the same
//!    directory (created exclusively, so it never clobbers anything);
//! 2. `fsync` the temp file — otherwise after a crash the rename below could
//!    be durable while the data it points to is not, leaving an empty or
//!    partial file under the key's name;
//! 3. `rename` the temp file over the key's file — the atomic switch readers
//!    observe;
//! 4. `fsync` the directory — the rename is a change to the directory, and
//!    only syncing the directory makes it survive a power loss. The write is
//!    acknowledged only after this step.
//!
//! [`KvStore::delete`] unlinks the file and fsyncs the directory for the same
//! reason. [`KvStore::apply_batch`] does steps 1–3 for every change and a
//! single directory fsync at the end; it is durable when it returns but not
//! atomic across keys if the machine crashes in the middle — the journal that
//! drives it replays the whole (idempotent) batch after a crash.
//!
//! [`KvStore::apply_unsynced`] instead rewrites each file in place, without
//! fsync, so a follower's decided writes become visible without two fsyncs and
//! a rename each (a rename over an existing file makes ext4 flush it at once);
//! a reader-writer lock keeps readers from seeing a file half-rewritten.
//! [`KvStore::sync`] later makes all of them durable at once with one
//! `syncfs(2)`. This is safe only because the follower's journal keeps every
//! decided write until such a sync (its checkpoint syncs the store before it
//! drops any record) and replays them after a crash, rewriting any key whose
//! file is missing, stale, empty or torn.
//!
//! A crash between steps 1 and 3 leaves a temp file behind; [`KvStore::open`] removes
//! such files (and fsyncs the directory) while the old value stays intact.
//!
//! # Full disks
//!
//! A write that fails, on a full disk above all, leaves its key as it was: the whole
//! old value, or no file. The atomic replace gets this from the rename (the temp file
//! is removed, the key's file was never touched). An overwrite in place has no old
//! file to fall back on, so it reserves the room it needs past the file's end first
//! (`fallocate` with `FALLOC_FL_KEEP_SIZE`, which leaves the size as it was) and
//! writes only once that succeeded: without the reservation, a write that found the
//! disk full part-way left the part of the new value that fitted over the old one,
//! neither value, readable through [`KvStore::get`] and made durable by the next sync
//! (only the follower's lock on the key, held until a retried write succeeds, kept it
//! from being served). A file created for an absent key is removed again (empty, it
//! would read as the empty value). Where the file system can't
//! reserve room (`EOPNOTSUPP`), the key is replaced by a temp file and a rename instead
//! (without the fsyncs: the next sync covers it). Stated limit: a copy-on-write file
//! system (btrfs, ZFS) needs new room even to overwrite bytes that existed, which no
//! reservation guarantees; there a failed overwrite can still leave the file torn, and
//! only the follower's lock on the key (held until its write is applied) keeps it from
//! being read.
//!
//! # Why nothing can escape the directory
//!
//! Every path the store touches is `dir.join(name)` where `name` is built by
//! this module from the characters `[a-z0-9_]` (plus the fixed `v`, `w`, `t` and
//! `.tmp` affixes). Such a name has no separator, is never `.` or `..`, is
//! never empty and never absolute, so whatever the key, the store creates,
//! reads, renames and removes only entries directly inside its directory.
//!
//! # Concurrency
//!
//! All methods take `&self`. Writers are serialised by an internal
//! reader-writer lock so that "later change wins" holds across threads;
//! readers share it, so that they never observe a file that
//! [`KvStore::apply_unsynced`] is rewriting in place.
//!
//! Length limits on keys and values (64 KiB and 3 MiB) are enforced by the
//! request-handling layers; this module stores whatever it is given.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use sha2::{Digest, Sha256};

pub use crate::txid::TxId;

#[cfg(test)]
mod tests;

/// An error from the key-value store, always naming the path involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system I/O call failed.
    #[error("kv store {path}: {source}")]
    Io {
        /// The file or directory the failed call was about.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file's content is not what the store writes (bad header, wrong key,
    /// invalid UTF-8...).
    #[error("kv store {path}: {reason}")]
    Corrupt {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Result type of the key-value store.
pub type Result<T> = std::result::Result<T, Error>;

/// A key's value and version (the id of the transaction that last wrote it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    /// The value.
    pub value: String,
    /// The version.
    pub version: TxId,
}

/// One change to apply to `key`: `Some((value, version))` puts, `None` deletes.
pub type Change<'a> = (&'a str, Option<(&'a str, TxId)>);

/// Names longer than this (in bytes) are replaced by hashed names.
const MAX_PLAIN_NAME: usize = 200;
/// Prefix of a plainly encoded key file.
const PLAIN_PREFIX: char = 'v';
/// Prefix of a hashed key file.
const HASHED_PREFIX: char = 'w';
/// The prefixes of key files written before versions (`k`: the value alone; `h`: the
/// key length, key and value), read only to upgrade them.
const OLD_PLAIN_PREFIX: char = 'k';
const OLD_HASHED_PREFIX: char = 'h';
/// The version of a value upgraded from a store written before versions.
const UPGRADED: TxId = TxId { epoch: 0, seq: 0 };
/// Prefix and suffix of temp files.
const TEMP_PREFIX: &str = "t";
const TEMP_SUFFIX: &str = ".tmp";
/// The owning process's lock file, never a key.
const LOCK_FILE: &str = ".lock";

const HEX: &[u8; 16] = b"0123456789abcdef";

fn io_err(path: &Path, source: io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    s
}

fn hex_digit_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn is_verbatim(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// The plain name of a key with `prefix`, regardless of its length.
fn plain_name(prefix: char, key: &str) -> String {
    let mut name = String::with_capacity(1 + key.len() * 3);
    name.push(prefix);
    for &b in key.as_bytes() {
        if is_verbatim(b) {
            name.push(char::from(b));
        } else {
            name.push('_');
            name.push(char::from(HEX[usize::from(b >> 4)]));
            name.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    name
}

/// Length of the plain name of a key without building it.
fn plain_name_len(key: &str) -> usize {
    1 + key
        .as_bytes()
        .iter()
        .map(|&b| if is_verbatim(b) { 1 } else { 3 })
        .sum::<usize>()
}

fn hashed_name(prefix: char, key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let mut name = String::with_capacity(65);
    name.push(prefix);
    name.push_str(&hex_lower(&digest));
    name
}

/// The file name a key is stored under (public for tests and tools).
///
/// `v` + encoded key bytes when that is at most 200 bytes long, otherwise
/// `w` + hex SHA-256 of the key. See the module documentation.
pub fn file_name_for(key: &str) -> String {
    name_with(PLAIN_PREFIX, HASHED_PREFIX, key)
}

/// The name a key had before versions (`k`/`h`).
fn old_file_name_for(key: &str) -> String {
    name_with(OLD_PLAIN_PREFIX, OLD_HASHED_PREFIX, key)
}

fn name_with(plain: char, hashed: char, key: &str) -> String {
    if plain_name_len(key) > MAX_PLAIN_NAME {
        hashed_name(hashed, key)
    } else {
        plain_name(plain, key)
    }
}

/// The key a `v` file name stands for; `None` for any other name or an
/// invalid encoding.
///
/// Only canonical names are accepted: the result, if any, is a key `k` with
/// `file_name_for(k) == name`. So `v_61` (non-canonical spelling of `va`),
/// upper-case hex digits, truncated escapes, names decoding to invalid UTF-8
/// and names longer than 200 bytes all give `None`.
pub fn key_for_file_name(name: &str) -> Option<String> {
    key_for_name(PLAIN_PREFIX, name)
}

fn key_for_name(prefix: char, name: &str) -> Option<String> {
    let encoded = name.strip_prefix(prefix)?;
    if name.len() > MAX_PLAIN_NAME {
        return None;
    }
    let bytes = encoded.as_bytes();
    let mut key = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if is_verbatim(b) {
            key.push(b);
            i += 1;
        } else if b == b'_' {
            let hi = hex_digit_value(*bytes.get(i + 1)?)?;
            let lo = hex_digit_value(*bytes.get(i + 2)?)?;
            let decoded = (hi << 4) | lo;
            if is_verbatim(decoded) {
                // Would have been written verbatim: not canonical.
                return None;
            }
            key.push(decoded);
            i += 3;
        } else {
            return None;
        }
    }
    String::from_utf8(key).ok()
}

/// Whether `name` is a well-formed hashed key file name with `prefix`.
fn is_hashed_name(prefix: char, name: &str) -> bool {
    match name.strip_prefix(prefix) {
        Some(hex) => hex.len() == 64 && hex.bytes().all(|b| hex_digit_value(b).is_some()),
        None => false,
    }
}

/// Whether `name` is a temp file left by a writer.
fn is_temp_name(name: &str) -> bool {
    name.len() >= TEMP_PREFIX.len() + TEMP_SUFFIX.len()
        && name.starts_with(TEMP_PREFIX)
        && name.ends_with(TEMP_SUFFIX)
}

/// What a directory entry is, judged by its name alone.
enum EntryKind {
    Plain(String),
    Hashed,
    /// A key file written before versions, to upgrade.
    OldPlain(String),
    OldHashed,
    Temp,
    Lock,
    Unknown,
}

fn classify(name: &str) -> EntryKind {
    if name == LOCK_FILE {
        EntryKind::Lock
    } else if is_temp_name(name) {
        EntryKind::Temp
    } else if is_hashed_name(HASHED_PREFIX, name) {
        EntryKind::Hashed
    } else if let Some(key) = key_for_file_name(name) {
        EntryKind::Plain(key)
    } else if is_hashed_name(OLD_HASHED_PREFIX, name) {
        EntryKind::OldHashed
    } else if let Some(key) = key_for_name(OLD_PLAIN_PREFIX, name) {
        EntryKind::OldPlain(key)
    } else {
        EntryKind::Unknown
    }
}

/// Splits a key file's content into its version and the rest.
fn split_version<'a>(path: &Path, content: &'a [u8]) -> Result<(TxId, &'a [u8])> {
    let newline = content
        .iter()
        .take(42)
        .position(|&b| b == b'\n')
        .ok_or_else(|| corrupt(path, "key file has no version header"))?;
    let version = std::str::from_utf8(&content[..newline])
        .ok()
        .and_then(|s| s.parse::<TxId>().ok())
        .ok_or_else(|| corrupt(path, "key file has a malformed version"))?;
    Ok((version, &content[newline + 1..]))
}

/// Reads the content of `key`'s file at `path` (hashed or not): the stored key must be
/// `key`, the value UTF-8.
fn value_of(path: &Path, key: &str, hashed: bool, rest: &[u8]) -> Result<String> {
    if !hashed {
        return value_string(path, rest.to_vec());
    }
    let (stored_key, value) = split_hashed(path, rest)?;
    if stored_key != key.as_bytes() {
        return Err(corrupt(
            path,
            "hashed key file holds a different key than requested",
        ));
    }
    value_string(path, value)
}

/// Splits the content of a hashed key file (after its version) into (key bytes, value
/// bytes).
fn split_hashed(path: &Path, content: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    let newline = content
        .iter()
        .take(21)
        .position(|&b| b == b'\n')
        .ok_or_else(|| corrupt(path, "hashed key file has no key-length header"))?;
    let digits = &content[..newline];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(corrupt(path, "hashed key file has a malformed key length"));
    }
    let key_len = std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .ok_or_else(|| corrupt(path, "hashed key file has a malformed key length"))?;
    let rest = &content[newline + 1..];
    if key_len > rest.len() {
        return Err(corrupt(
            path,
            format!(
                "hashed key file claims a {key_len}-byte key but holds only {} bytes",
                rest.len()
            ),
        ));
    }
    let (key, value) = rest.split_at(key_len);
    Ok((key.to_vec(), value.to_vec()))
}

fn value_string(path: &Path, bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).map_err(|_| corrupt(path, "value is not valid UTF-8"))
}

/// Reads a whole file; `Ok(None)` if it does not exist.
fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path, e)),
    };
    let mut buf = Vec::new();
    file.read_to_end(&mut buf).map_err(|e| io_err(path, e))?;
    Ok(Some(buf))
}

/// The last change to each key, in the order of `changes` (earlier ones to the same
/// key are superseded).
fn last_change_per_key<'a>(changes: &'a [Change<'a>]) -> impl Iterator<Item = &'a Change<'a>> {
    let mut last: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, (key, _)) in changes.iter().enumerate() {
        last.insert(key, i);
    }
    changes
        .iter()
        .enumerate()
        .filter(move |(i, (key, _))| last.get(key) == Some(i))
        .map(|(_, change)| change)
}

/// Flushes the whole file system that holds `file` to disk.
#[cfg(target_os = "linux")]
fn sync_file_system(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: syncfs only reads the descriptor, which `file` keeps open.
    if unsafe { libc::syncfs(file.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Flushes everything to disk (no per-file-system flush on this platform).
#[cfg(not(target_os = "linux"))]
fn sync_file_system(_file: &File) -> io::Result<()> {
    // SAFETY: sync takes no arguments and cannot fail.
    unsafe { libc::sync() };
    Ok(())
}

/// Flushes a directory's entries (creations, renames, unlinks) to disk.
fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err(dir, e))?;
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
    }
    Ok(())
}

/// The follower's key-value store: one file per key under one directory.
///
/// `Send + Sync`; all methods take `&self`. Writes are serialised internally,
/// reads run concurrently with each other and with writes.
#[derive(Debug)]
pub struct KvStore {
    dir: PathBuf,
    /// Serialises writers so that later changes win across threads.
    /// Writers take it exclusively; readers share it, because
    /// [`KvStore::apply_unsynced`] rewrites files in place and a reader must not see
    /// one half-written. (Renamed files need no lock to be read whole.)
    write_lock: RwLock<()>,
}

impl KvStore {
    /// Opens the store in `dir`, creating the directory (`create_dir_all`) if
    /// absent. Removes leftover temp files (`t*.tmp`) from a crash, upgrades key files
    /// written before versions (see the module documentation), and fsyncs the
    /// directory if it changed. Logs a warning once for every name that is neither a
    /// key file, a temp file nor `.lock`.
    pub fn open(dir: &Path) -> Result<KvStore> {
        fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let mut removed_any = false;
        let mut old_files = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
            let entry = entry.map_err(|e| io_err(dir, e))?;
            let os_name = entry.file_name();
            let Some(name) = os_name.to_str() else {
                tracing::warn!(
                    dir = %dir.display(),
                    name = %os_name.to_string_lossy(),
                    "ignoring file with a non-UTF-8 name in kv store directory"
                );
                continue;
            };
            match classify(name) {
                EntryKind::Temp => {
                    let path = dir.join(name);
                    match fs::remove_file(&path) {
                        Ok(()) => removed_any = true,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io_err(&path, e)),
                    }
                    tracing::debug!(path = %path.display(), "removed leftover temp file");
                }
                EntryKind::Unknown => {
                    tracing::warn!(
                        dir = %dir.display(),
                        name,
                        "ignoring unexpected file in kv store directory"
                    );
                }
                EntryKind::OldPlain(_) | EntryKind::OldHashed => old_files.push(name.to_string()),
                EntryKind::Plain(_) | EntryKind::Hashed | EntryKind::Lock => {}
            }
        }
        if removed_any {
            sync_dir(dir)?;
        }
        let store = KvStore {
            dir: dir.to_path_buf(),
            write_lock: RwLock::new(()),
        };
        store.upgrade(&old_files)?;
        Ok(store)
    }

    /// Rewrites key files written before versions under their new names, with version
    /// `0.0`, then removes the old ones (see the module documentation).
    fn upgrade(&self, old_files: &[String]) -> Result<()> {
        if old_files.is_empty() {
            return Ok(());
        }
        let _guard = self.lock_writers();
        for name in old_files {
            let path = self.dir.join(name);
            let Some(content) = read_optional(&path)? else {
                continue;
            };
            let (key, value) = match classify(name) {
                EntryKind::OldPlain(key) => {
                    let value = value_string(&path, content)?;
                    (key, value)
                }
                _ => {
                    let (key, value) = split_hashed(&path, &content)?;
                    let key = String::from_utf8(key)
                        .map_err(|_| corrupt(&path, "stored key is not valid UTF-8"))?;
                    if old_file_name_for(&key) != *name {
                        return Err(corrupt(&path, "stored key does not hash to the file name"));
                    }
                    (key, value_string(&path, value)?)
                }
            };
            let new_name = file_name_for(&key);
            if !self.dir.join(&new_name).exists() {
                self.replace_file(&key, &value, UPGRADED, true)?;
            }
        }
        sync_dir(&self.dir)?;
        for name in old_files {
            let path = self.dir.join(name);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path, e)),
            }
        }
        sync_dir(&self.dir)?;
        tracing::info!(
            dir = %self.dir.display(),
            keys = old_files.len(),
            "upgraded key files written before versions (version 0.0)"
        );
        Ok(())
    }

    /// The directory holding the store.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The value and version of `key`, or `None` if absent. Never sees a half-written
    /// value. A hashed file holding a different key, a bad version header, or a value
    /// that is not UTF-8, is [`Error::Corrupt`].
    pub fn get(&self, key: &str) -> Result<Option<Versioned>> {
        let name = file_name_for(key);
        let path = self.dir.join(&name);
        let content = {
            let _guard = self.lock_readers();
            read_optional(&path)?
        };
        let Some(content) = content else {
            return Ok(None);
        };
        let (version, rest) = split_version(&path, &content)?;
        let value = value_of(&path, key, name.starts_with(HASHED_PREFIX), rest)?;
        Ok(Some(Versioned { value, version }))
    }

    /// Atomically replaces the value (and version): write temp file, fsync it, rename
    /// over the key's file, fsync the directory. Durable when it returns.
    pub fn put(&self, key: &str, value: &str, version: TxId) -> Result<()> {
        let _guard = self.lock_writers();
        self.replace_file(key, value, version, true)?;
        sync_dir(&self.dir)
    }

    /// Removes the key (absent is fine): unlink, fsync the directory.
    pub fn delete(&self, key: &str) -> Result<()> {
        let _guard = self.lock_writers();
        self.remove_file(key)?;
        sync_dir(&self.dir)
    }

    /// Applies several changes with one directory fsync at the end (each file
    /// still written to a temp file, fsynced and renamed). Returns only once
    /// all are durable. Later changes to the same key win.
    ///
    /// Not atomic across keys if the machine crashes midway: after a crash
    /// some changes may be visible and others not; replaying the batch fixes
    /// that. On error, changes before the failing one may have been applied.
    pub fn apply_batch(&self, changes: &[Change<'_>]) -> Result<()> {
        let _guard = self.lock_writers();
        for (key, change) in last_change_per_key(changes) {
            match change {
                Some((value, version)) => self.replace_file(key, value, *version, true)?,
                None => self.remove_file(key)?,
            }
        }
        sync_dir(&self.dir)
    }

    /// Applies several changes, visible to readers when it returns (each file is
    /// rewritten in place under the write lock, so a reader sees the old or the new
    /// value, never a mixture), but **not durable** until the next [`KvStore::sync`]: a
    /// crash may lose them or leave a key's file empty, torn or mixed. The caller must keep a durable record
    /// of the changes (the follower's journal) until `sync` returns, and re-apply them
    /// after a crash. Later changes to the same key win.
    ///
    /// On error (a full disk), the changes before the failing one may have been
    /// applied, and every key holds its old value or its new one, whole (see "Full
    /// disks" in the module documentation).
    pub fn apply_unsynced(&self, changes: &[Change<'_>]) -> Result<()> {
        let _guard = self.lock_writers();
        for (key, change) in last_change_per_key(changes) {
            match change {
                Some((value, version)) => self.overwrite_file(key, value, *version)?,
                None => self.remove_file(key)?,
            }
        }
        Ok(())
    }

    /// Makes every change made so far durable, [`KvStore::apply_unsynced`]'s included:
    /// one `syncfs(2)` of the file system holding the store (data, renames and unlinks
    /// alike), which costs one flush instead of one per file. It takes no lock: a flush
    /// changes nothing readers could see, and it can take tens of milliseconds, during
    /// which reads go on (changes made meanwhile may or may not be included).
    pub fn sync(&self) -> Result<()> {
        let dir = File::open(&self.dir).map_err(|e| io_err(&self.dir, e))?;
        sync_file_system(&dir).map_err(|e| io_err(&self.dir, e))
    }

    /// True if the store holds no key.
    pub fn is_empty(&self) -> Result<bool> {
        for entry in fs::read_dir(&self.dir).map_err(|e| io_err(&self.dir, e))? {
            let entry = entry.map_err(|e| io_err(&self.dir, e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if matches!(
                classify(&name),
                EntryKind::Plain(_)
                    | EntryKind::Hashed
                    | EntryKind::OldPlain(_)
                    | EntryKind::OldHashed
            ) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// How many keys the store holds, from the file names alone (no file is read).
    pub fn count(&self) -> Result<u64> {
        let mut count = 0;
        for entry in fs::read_dir(&self.dir).map_err(|e| io_err(&self.dir, e))? {
            let entry = entry.map_err(|e| io_err(&self.dir, e))?;
            if let Some(name) = entry.file_name().to_str() {
                count += u64::from(matches!(
                    classify(name),
                    EntryKind::Plain(_)
                        | EntryKind::Hashed
                        | EntryKind::OldPlain(_)
                        | EntryKind::OldHashed
                ));
            }
        }
        Ok(count)
    }

    /// Every key, unsorted, read from the file names (and from the files of hashed
    /// names). Files that are not key files are ignored.
    pub fn keys(&self) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| io_err(&self.dir, e))? {
            let entry = entry.map_err(|e| io_err(&self.dir, e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            match classify(&name) {
                EntryKind::Plain(key) => keys.push(key),
                EntryKind::Hashed => {
                    let path = self.dir.join(&name);
                    let Some(content) = read_optional(&path)? else {
                        continue;
                    };
                    let (_, rest) = split_version(&path, &content)?;
                    let (key_bytes, _) = split_hashed(&path, rest)?;
                    let key = String::from_utf8(key_bytes)
                        .map_err(|_| corrupt(&path, "stored key is not valid UTF-8"))?;
                    keys.push(key);
                }
                _ => {}
            }
        }
        Ok(keys)
    }

    /// Every key with its value, sorted by key (for tests and for comparing
    /// followers). Files that are not key files are ignored; a key file whose
    /// content does not match its name is [`Error::Corrupt`].
    pub fn dump(&self) -> Result<BTreeMap<String, Versioned>> {
        let mut out = BTreeMap::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| io_err(&self.dir, e))? {
            let entry = entry.map_err(|e| io_err(&self.dir, e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let path = self.dir.join(&name);
            let key = match classify(&name) {
                EntryKind::Plain(key) => Some(key),
                EntryKind::Hashed => None,
                EntryKind::OldPlain(_)
                | EntryKind::OldHashed
                | EntryKind::Temp
                | EntryKind::Lock
                | EntryKind::Unknown => continue,
            };
            // A concurrent delete may have removed it since listing.
            let Some(content) = read_optional(&path)? else {
                continue;
            };
            let (version, rest) = split_version(&path, &content)?;
            let (key, value) = match key {
                Some(key) => (key, value_string(&path, rest.to_vec())?),
                None => {
                    let (key_bytes, value) = split_hashed(&path, rest)?;
                    let key = String::from_utf8(key_bytes)
                        .map_err(|_| corrupt(&path, "stored key is not valid UTF-8"))?;
                    if file_name_for(&key) != name {
                        return Err(corrupt(
                            &path,
                            "stored key does not hash to the file's name",
                        ));
                    }
                    (key, value_string(&path, value)?)
                }
            };
            out.insert(key, Versioned { value, version });
        }
        Ok(out)
    }

    fn lock_writers(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        // The guarded data is `()`, so a poisoned lock holds nothing broken.
        self.write_lock
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_readers(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.write_lock
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Rewrites the key's file in place (created if absent): no temp file, no rename,
    /// no fsync. On ext4, a rename over an existing file or a truncation to zero makes
    /// the kernel flush the data at once (`auto_da_alloc`), which cost about 1 ms per
    /// key here; an overwrite in place costs about 12 µs. Callers hold the write lock.
    ///
    /// On failure the key is as it was (see "Full disks" in the module documentation):
    /// the room is reserved before a byte changes, and a file created for an absent key
    /// is removed again.
    fn overwrite_file(&self, key: &str, value: &str, version: TxId) -> Result<()> {
        let name = file_name_for(key);
        let path = self.dir.join(&name);
        let content = content_of(key, value, version, name.starts_with(HASHED_PREFIX));
        let (file, created) = match OpenOptions::new().write(true).open(&path) {
            Ok(file) => (file, false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(|e| io_err(&path, e))?;
                (file, true)
            }
            Err(e) => return Err(io_err(&path, e)),
        };
        let written = match write_in_place(&file, &content) {
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                // No way to reserve room here: replace the file whole instead (without
                // fsync, like the rest of an unsynced apply).
                drop(file);
                return self.replace_file(key, value, version, false);
            }
            written => written,
        };
        if written.is_err() && created {
            // An absent key stays absent (best effort: an empty file would read as "").
            let _ = fs::remove_file(&path);
        }
        written.map_err(|e| io_err(&path, e))
    }

    /// Steps 1–3 of the atomic replace (no directory fsync); step 2, the temp file's
    /// fsync, only if `sync`.
    fn replace_file(&self, key: &str, value: &str, version: TxId, sync: bool) -> Result<()> {
        let name = file_name_for(key);
        let target = self.dir.join(&name);
        let content = content_of(key, value, version, name.starts_with(HASHED_PREFIX));
        let (file, temp) = self.create_temp()?;
        let written = write_content(file, &content, sync)
            .map_err(|e| io_err(&temp, e))
            .and_then(|()| fs::rename(&temp, &target).map_err(|e| io_err(&target, e)));
        if written.is_err() {
            // Best effort: open() removes it anyway if this fails.
            let _ = fs::remove_file(&temp);
        }
        written
    }

    fn remove_file(&self, key: &str) -> Result<()> {
        let path = self.dir.join(file_name_for(key));
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path, e)),
        }
    }

    /// Creates a fresh, exclusively created temp file in the directory.
    fn create_temp(&self) -> Result<(File, PathBuf)> {
        let mut attempts = 0;
        loop {
            let suffix: [u8; 16] = rand::random();
            let path = self
                .dir
                .join(format!("{TEMP_PREFIX}{}{TEMP_SUFFIX}", hex_lower(&suffix)));
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => return Ok((file, path)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 8 => {
                    attempts += 1;
                }
                Err(e) => return Err(io_err(&path, e)),
            }
        }
    }
}

/// Writes a key file's content and, if `sync`, fsyncs it.
/// What `key`'s file holds (see the module documentation): the version line, then (in
/// a hashed file) the key's length and bytes, then the value.
fn content_of(key: &str, value: &str, version: TxId, hashed: bool) -> Vec<u8> {
    let mut content = Vec::with_capacity(value.len() + 48);
    content.extend_from_slice(format!("{version}\n").as_bytes());
    if hashed {
        content.extend_from_slice(format!("{}\n", key.len()).as_bytes());
        content.extend_from_slice(key.as_bytes());
    }
    content.extend_from_slice(value.as_bytes());
    content
}

fn write_content(file: File, content: &[u8], sync: bool) -> io::Result<()> {
    file.write_all_at(content, 0)?;
    if sync {
        file.sync_all()?;
    }
    Ok(())
}

/// Overwrites `file` from its start with `content`, cutting what is left of a longer
/// old content. The room for the bytes past the file's end is reserved first
/// (`fallocate`, keeping the size), so that a full disk fails here, before a byte of
/// the old content has changed, rather than part-way through the write (`EOPNOTSUPP`
/// where the file system can't reserve).
fn write_in_place(file: &File, content: &[u8]) -> io::Result<()> {
    let old_len = file.metadata()?.len();
    let len = content.len() as u64;
    if len > old_len {
        reserve_past_end(file, old_len, len - old_len)?;
    }
    file.write_all_at(content, 0)?;
    // Truncating marks the inode dirty even when the length doesn't change, so only a
    // file that was longer than the new content is cut.
    if old_len > len {
        file.set_len(len)?;
    }
    Ok(())
}

/// Reserves `len` bytes of disk space at `offset` of `file` without changing its size
/// (`fallocate` with `FALLOC_FL_KEEP_SIZE`).
#[cfg(target_os = "linux")]
fn reserve_past_end(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    // SAFETY: fallocate only reads its integer arguments; the descriptor is open.
    let status =
        unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, offset, len) };
    if status == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// No reservation on this platform: the caller replaces the file whole instead.
#[cfg(not(target_os = "linux"))]
fn reserve_past_end(_file: &File, _offset: u64, _len: u64) -> io::Result<()> {
    Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
}
