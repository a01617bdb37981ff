//! An append-only, line-oriented, checksummed, durable journal (write-ahead log).
//!
//! # Why one record per line
//!
//! The leader and the followers of the two-phase-commit protocol must remember
//! what they promised before they answer anybody, and must find it again after a
//! crash. The journal is the smallest thing that does this: one file, one record
//! per line, appended at the end and replayed from the start when the node
//! starts. A record is a list of string fields; the journal gives them no
//! meaning.
//!
//! A line is self-delimiting, so a reader needs no length prefixes or framing
//! state: everything up to the last `'\n'` is a sequence of complete records, and
//! whatever follows it is the remains of a write that a crash interrupted. The
//! file also stays readable with `less`, `grep` and `tail -f`, which matters when
//! an operator has to inspect a node that refused to start.
//!
//! # The line format, byte by byte
//!
//! ```text
//! <CRC> <SP> <PAYLOAD> <LF>
//! ```
//!
//! * `CRC`: exactly 8 lowercase hexadecimal digits (`0-9a-f`), the CRC-32
//!   (IEEE, as computed by `crc32fast::hash`) of the bytes of `PAYLOAD` exactly
//!   as they appear in the file, i.e. after escaping.
//! * `SP`: one space (0x20).
//! * `PAYLOAD`: the escaped fields joined by single spaces (0x20). A record has
//!   at least one field, so `PAYLOAD` is never empty.
//! * `LF`: one `'\n'` (0x0a), which ends the record.
//!
//! Each field is escaped so that it contains no space, no line break and no
//! control byte:
//!
//! * the bytes `%` (0x25), space (0x20), every byte below 0x20 (including `'\n'`,
//!   `'\r'` and NUL) and DEL (0x7f) are written as `%XX`, where `XX` is the
//!   byte's value as two *uppercase* hexadecimal digits (`%` becomes `%25`,
//!   space `%20`, `'\n'` `%0A`);
//! * every other character, including non-ASCII UTF-8, is written verbatim;
//! * an empty field is written as `%_` (so that two adjacent separators or a
//!   trailing separator never occur); `%_` is only valid as a whole field.
//!
//! Examples: the record `["put", "k", "hello world"]` is the payload
//! `put k hello%20world`; the record `["", "100%"]` is `%_ 100%25`.
//!
//! Decoding is strict, so every record has exactly one encoding: it rejects a
//! CRC that is not 8 lowercase hex digits, a missing separator, a CRC mismatch,
//! an empty field that is not written `%_`, a `%` not followed by two uppercase
//! hex digits or by `_` forming the whole field, a raw control byte, and bytes
//! that are not valid UTF-8 once unescaped. The file is read as bytes, so a line
//! damaged into invalid UTF-8 is reported as corruption, never a panic.
//!
//! # Torn tail versus corruption
//!
//! A crash in the middle of an append can leave a prefix of the last line on
//! disk (and, on some file systems, a run of NUL bytes where the data had not
//! been written yet). Such bytes come after the last `'\n'`, and the append that
//! wrote them never returned, so nobody was told it succeeded: [`Journal::open`]
//! drops them, truncates the file to just after the last `'\n'`, fsyncs it and
//! logs a warning. (A tail of NUL bytes alone is preallocated space, kept without
//! a warning.)
//!
//! A *complete* line whose checksum or encoding is wrong is different: it was
//! once acknowledged as durable, and the data it held is lost. Guessing would
//! be wrong for a commit protocol, so [`Journal::open`] returns
//! [`Error::Corrupt`] with the 1-based line number and leaves the file exactly as
//! it was (it does not even drop a torn tail), so that an operator can inspect
//! or restore it.
//!
//! Stated limit: a bit flip in the *last* complete line is indistinguishable
//! from a bit flip anywhere else and is reported as corruption, not dropped as a
//! torn tail, even though that line might be the one a crash interrupted (for
//! example if the file system persisted the `'\n'` before the bytes before it).
//! We prefer a node that refuses to start over one that silently forgets a vote
//! it may already have reported.
//!
//! # Preallocated space
//!
//! The file is grown ahead of the records in steps of [`PREALLOCATE_BYTES`], by
//! reserving the space (`fallocate`) and writing zeros into it, and the records are
//! then written over the zeros. So an append does not change the file's size, and its
//! fdatasync writes the data block alone, not the inode as well: about a fifth less
//! time per fsync on this project's disks, and on a journaling file system it also
//! spares a metadata commit. Only the append that crosses into a new step pays for
//! the reservation. A run of NUL bytes after the last `'\n'` is therefore the normal
//! end of a journal, and [`Journal::open`] keeps it as room for the next records. If
//! the disk has no room for a step, the records are appended without one (and the
//! write fails only when their own bytes don't fit); see "Failed writes".
//!
//! # Durability
//!
//! [`Journal::append`] and [`Journal::append_batch`] return only after `write`
//! and `fdatasync` ([`File::sync_data`]); a batch uses one write and one
//! fdatasync for all its records (group commit). [`Journal::append_unsynced`]
//! skips the fdatasync, for records whose loss is harmless; the next synced
//! append or [`Journal::sync`] makes it durable as well. A newly created
//! journal file is made durable by fsyncing its directory.
//!
//! [`GroupJournal`] moves a journal onto a thread of its own, where everything
//! handed in while an fsync runs shares the next one (group commit, `group.rs`).
//!
//! [`Journal::rewrite`] (a checkpoint) replaces the whole journal atomically:
//! it writes the live records to `<name>.tmp` in the same directory, fsyncs
//! it, renames it over the journal and fsyncs the directory. A crash at any
//! point leaves either the old or the new journal under the journal's name; a
//! leftover `<name>.tmp` is always garbage and [`Journal::open`] removes it.
//!
//! # Failed writes
//!
//! A journal keeps two offsets: `len`, where its records end and the next line is
//! written, and `allocated`, where the file ends. Every operation keeps one rule: **the
//! file holds the records up to `len`, then zeros up to `allocated`, and `len <=
//! allocated`**. So a line is always written at the end of the records, inside the
//! file or right at its end, never past a hole, and NUL bytes before a record can't
//! happen. (If `allocated` fell behind `len`, the next failed preallocation, which cuts
//! the file back to `allocated`, would cut records, and the next line would land past a
//! hole of NUL bytes: a journal that a restart refuses as corrupt on line 1.) Each step
//! that can fail keeps the rule:
//!
//! * a preallocation without room (`fallocate`, or the zeros after it, failing) cuts
//!   the file back to `allocated`, which drops only what it added. Lines then written
//!   without room grow the file, and `allocated` moves to their end with them;
//! * a write that fails part-way (the disk filled after some of its bytes landed) is
//!   undone: zeros over what landed in the room, the file cut back to `allocated` (or,
//!   if the zeros can't be written, to `len`: a file that ends with its last record is
//!   as good), then an fdatasync, so that no line of a write reported as failed (a vote
//!   that became ABORT) can come back after a crash. `len` is as before, and so is
//!   `allocated` unless the room was cut;
//! * a rewrite that fails before its rename leaves the old file and both offsets as
//!   they were; after the rename both are the new file's length.
//!
//! After a failed fdatasync the kernel may have dropped the unwritten data and
//! forgotten the error, so the journal refuses every further operation and the
//! node has to reopen it (replay tells what survived). So does a failed write that
//! could not be undone.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

mod group;
#[cfg(test)]
mod tests;

pub use group::{CommitError, Durable, GroupJournal};

/// A record: one or more string fields (may contain any chars: spaces,
/// newlines, `%`, unicode, NUL, or be empty).
pub type Record = Vec<String>;

/// Errors of the journal.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation on the journal (or its directory or temp file) failed,
    /// or the journal was misused (empty record, unusable after an fsync error).
    #[error("journal {path}: {source}")]
    Io {
        /// The file or directory the operation was about.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A complete line (terminated by '\n') whose checksum or encoding is wrong: the node must stop.
    #[error("journal {path}, line {line}: corrupt record ({reason}); refusing to start. The file was not changed: inspect or restore it, then restart")]
    Corrupt {
        /// The journal file.
        path: PathBuf,
        /// The 1-based number of the corrupt line.
        line: usize,
        /// What is wrong with the line.
        reason: String,
    },
}

/// The result type of the journal.
pub type Result<T> = std::result::Result<T, Error>;

/// The journal file grows ahead of its records in steps of this many bytes (see the
/// module documentation, "Preallocated space").
pub const PREALLOCATE_BYTES: u64 = 1 << 20;

/// An open journal file, positioned at its end.
#[derive(Debug)]
pub struct Journal {
    /// The journal's path, as given to [`Journal::open`].
    path: PathBuf,
    /// The journal file, opened for reading and writing (records are written at `len`).
    file: File,
    /// Records in the file (replayed or appended since open/last rewrite).
    records: usize,
    /// Where the records end (the next one is written here), including unsynced appends.
    len: u64,
    /// Where the file ends: `len` plus the zeroed room preallocated after it. Never
    /// below `len` (see "Failed writes" in the module documentation).
    allocated: u64,
    /// Whether some bytes were written without fdatasync since the last sync.
    unsynced: bool,
    /// Set after an error that leaves the file's durable state unknown.
    broken: bool,
}

impl Journal {
    /// Opens the journal file at `path` (creating it, and nothing else, if
    /// absent; the parent directory must exist), replays it and returns the
    /// journal positioned at its end plus every record in order.
    ///
    /// A leftover `<name>.tmp` from an interrupted [`Journal::rewrite`] is
    /// removed. NUL bytes after the last `'\n'` are preallocated space, kept. Other
    /// bytes after it (a torn tail) are dropped: the file is truncated to just after
    /// the last `'\n'` and fsynced, and a warning is logged. A complete line with a
    /// bad checksum or encoding is [`Error::Corrupt`] naming its 1-based line number,
    /// and the file is left untouched.
    pub fn open(path: &Path) -> Result<(Journal, Vec<Record>)> {
        let tmp = tmp_path(path)?;
        match std::fs::remove_file(&tmp) {
            Ok(()) => tracing::warn!(
                path = %tmp.display(),
                "journal: removed leftover temporary file of an interrupted rewrite"
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&tmp, e)),
        }

        let (mut file, created) = match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
        {
            Ok(file) => (file, true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                    .map_err(|e| io_err(path, e))?;
                (file, false)
            }
            Err(e) => return Err(io_err(path, e)),
        };
        if created {
            sync_dir(path)?;
        }

        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| io_err(path, e))?;
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);

        let mut records = Vec::new();
        for (index, line) in bytes[..complete]
            .split_inclusive(|&b| b == b'\n')
            .enumerate()
        {
            let line = line.strip_suffix(b"\n").unwrap_or(line);
            match decode_bytes(line) {
                Ok(record) => records.push(record),
                Err(reason) => {
                    return Err(Error::Corrupt {
                        path: path.to_path_buf(),
                        line: index + 1,
                        reason,
                    })
                }
            }
        }

        let len = complete as u64;
        let mut allocated = bytes.len() as u64;
        if bytes[complete..].iter().any(|&b| b != 0) {
            tracing::warn!(
                path = %path.display(),
                dropped_bytes = bytes.len() - complete,
                kept_records = records.len(),
                "journal: dropping torn tail (an incomplete last line left by a crash)"
            );
            file.set_len(len).map_err(|e| io_err(path, e))?;
            file.sync_all().map_err(|e| io_err(path, e))?;
            allocated = len;
        }

        let journal = Journal {
            path: path.to_path_buf(),
            file,
            records: records.len(),
            len,
            allocated,
            unsynced: false,
            broken: false,
        };
        Ok((journal, records))
    }

    /// Appends one record; returns only once it is durable (write + fdatasync
    /// via [`File::sync_data`]). A record must have at least one field.
    pub fn append(&mut self, record: &[String]) -> Result<()> {
        self.check_record(record)?;
        let mut buf = String::new();
        encode_into(record, &mut buf);
        self.write_lines(buf.as_bytes(), 1, true)
    }

    /// Appends several records with one write and a single fdatasync (group
    /// commit). An empty slice is a no-op. If any record has no field, nothing
    /// is written.
    pub fn append_batch(&mut self, records: &[Record]) -> Result<()> {
        self.write_records(records, true)
    }

    /// Appends several records with one write and no fdatasync (see
    /// [`Journal::append_unsynced`]).
    pub fn append_batch_unsynced(&mut self, records: &[Record]) -> Result<()> {
        self.write_records(records, false)
    }

    /// Appends one record without fsync (for records whose loss after a crash
    /// is harmless); a later [`Journal::append`], [`Journal::append_batch`] or
    /// [`Journal::sync`] makes it durable too.
    pub fn append_unsynced(&mut self, record: &[String]) -> Result<()> {
        self.check_record(record)?;
        let mut buf = String::new();
        encode_into(record, &mut buf);
        self.write_lines(buf.as_bytes(), 1, false)
    }

    /// Makes every record appended so far durable (fdatasync), if some were
    /// appended with [`Journal::append_unsynced`] since the last sync.
    pub fn sync(&mut self) -> Result<()> {
        self.check_usable()?;
        if !self.unsynced {
            return Ok(());
        }
        let _timer = crate::metrics::JOURNAL_FSYNC_DURATION.start_timer();
        if let Err(e) = self.file.sync_data() {
            self.broken = true;
            return Err(io_err(&self.path, e));
        }
        self.unsynced = false;
        Ok(())
    }

    /// Checkpoint: atomically replaces the whole journal with the `live`
    /// records: writes them to `<name>.tmp` in the same directory, fsyncs it,
    /// renames it over the journal and fsyncs the directory; later appends go
    /// to the new file.
    ///
    /// If it fails before the rename, the temp file is removed and the journal
    /// is unchanged and still usable. If the directory fsync after the rename
    /// fails, the journal refuses further use (reopen it).
    pub fn rewrite(&mut self, live: &[Record]) -> Result<()> {
        self.check_usable()?;
        for record in live {
            self.check_record(record)?;
        }
        let mut buf = String::new();
        for record in live {
            encode_into(record, &mut buf);
        }
        let tmp = tmp_path(&self.path)?;
        let file = match write_temp(&tmp, buf.as_bytes()) {
            Ok(file) => file,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        if let Err(e) = std::fs::rename(&tmp, &self.path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(io_err(&self.path, e));
        }
        // From here on the journal's name refers to the new file, whose handle
        // we keep (it was opened for appending): no reopen that could fail.
        self.file = file;
        self.records = live.len();
        self.len = buf.len() as u64;
        self.allocated = self.len;
        self.unsynced = false;
        if let Err(e) = sync_dir(&self.path) {
            self.broken = true;
            return Err(e);
        }
        Ok(())
    }

    /// The number of records in the journal: those replayed by
    /// [`Journal::open`] (or written by the last [`Journal::rewrite`]) plus
    /// those appended since.
    pub fn record_count(&self) -> usize {
        self.records
    }

    /// The bytes of records in the journal file (including unsynced appends; not the
    /// preallocated space after them).
    pub fn byte_len(&self) -> u64 {
        self.len
    }

    /// The journal file's path, as given to [`Journal::open`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Encodes `records` and writes them with one write (see [`Journal::write_lines`]).
    fn write_records(&mut self, records: &[Record], sync: bool) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        for record in records {
            self.check_record(record)?;
        }
        let mut buf = String::new();
        for record in records {
            encode_into(record, &mut buf);
        }
        self.write_lines(buf.as_bytes(), records.len(), sync)
    }

    /// Writes `buf` (holding `count` encoded lines) after the last record and,
    /// if `sync`, fdatasyncs it.
    fn write_lines(&mut self, buf: &[u8], count: usize, sync: bool) -> Result<()> {
        self.check_usable()?;
        let end = self.len + buf.len() as u64;
        if end > self.allocated {
            self.preallocate(end);
        }
        if crate::crash::should_crash("journal-torn-write") {
            // A crash mid-write: half the bytes reach the file.
            let _ = self.file.write_all_at(&buf[..buf.len() / 2], self.len);
            let _ = self.file.sync_data();
            crate::crash::crash_now("journal-torn-write");
        }
        if let Err(e) = self.file.write_all_at(buf, self.len) {
            // Remove whatever part of the lines reached the file, so that the
            // next append does not glue a complete line onto a fragment.
            if let Err(undo) = self.undo_write(end) {
                tracing::error!(path = %self.path.display(), error = %undo, "journal: could not undo a failed write");
                self.broken = true;
            }
            return Err(io_err(&self.path, e));
        }
        self.len = end;
        // Without room (none could be preallocated), the lines grew the file: it ends
        // with them now, and so does the room.
        self.allocated = self.allocated.max(end);
        self.records += count;
        self.unsynced = true;
        if sync {
            self.sync()?;
        }
        Ok(())
    }

    /// Grows the file with zeroed space to hold at least `end` bytes, in whole steps of
    /// [`PREALLOCATE_BYTES`]. Best effort: without room for the step, the records are
    /// written without it, and the file is left as it was (cut back to `allocated`,
    /// which is never below `len`, so no record is cut).
    fn preallocate(&mut self, end: u64) {
        debug_assert!(self.len <= self.allocated, "records past the file's end");
        let target = end.div_ceil(PREALLOCATE_BYTES) * PREALLOCATE_BYTES;
        let grow = target - self.allocated;
        // Reserve first, so that a full disk fails here at once instead of part-way
        // through writing the zeros; then write the zeros, so that later writes land on
        // initialised blocks and need no metadata update when they are synced.
        let reserved = reserve(&self.file, self.allocated, grow);
        let zeroed = reserved.and_then(|()| {
            self.file
                .write_all_at(&vec![0; grow as usize], self.allocated)
        });
        match zeroed {
            Ok(()) => self.allocated = target,
            Err(e) => {
                tracing::debug!(path = %self.path.display(), error = %e, "journal: no room to preallocate");
                if self.file.set_len(self.allocated).is_err() {
                    // Zeros past `allocated` are harmless (read back as free space);
                    // count them, so that nothing is written beyond them unseen.
                    if let Ok(meta) = self.file.metadata() {
                        self.allocated = meta.len().max(self.allocated);
                    }
                }
            }
        }
    }

    /// Undoes a failed write of the bytes from `len` to `end`: zeroes what landed in
    /// the preallocated room and cuts what grew the file beyond it (or, if the zeros
    /// can't be written, cuts the room as well: a file that ends with its last record
    /// is as good), then makes that durable, so that no fragment of lines whose write
    /// was reported failed can come back after a crash. Only if this fails is the file's
    /// content unknown.
    fn undo_write(&mut self, end: u64) -> io::Result<()> {
        let zeroed_end = end.min(self.allocated);
        if zeroed_end > self.len {
            let zeros = vec![0; (zeroed_end - self.len) as usize];
            if self.file.write_all_at(&zeros, self.len).is_err() {
                self.allocated = self.len;
            }
        }
        self.file.set_len(self.allocated)?;
        self.file.sync_data()?;
        self.unsynced = false;
        Ok(())
    }

    /// True once a failed fsync (or a failed write that could not be undone) left the
    /// file in an unknown state: what it holds on disk can only be learned by reopening
    /// it, so its owner must stop (and restart) rather than go on.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Fails if an earlier error left the journal in an unknown state.
    fn check_usable(&self) -> Result<()> {
        if self.broken {
            return Err(io_err(
                &self.path,
                io::Error::other(
                    "journal unusable after an earlier failed fsync or write; reopen it",
                ),
            ));
        }
        Ok(())
    }

    /// Fails if `record` has no field (it would encode to an invalid line).
    fn check_record(&self, record: &[String]) -> Result<()> {
        if record.is_empty() {
            return Err(io_err(
                &self.path,
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a journal record needs at least one field",
                ),
            ));
        }
        Ok(())
    }
}

/// Encodes one record as one line including the trailing '\n' (public for
/// tests and tools). See the module documentation for the format. A record
/// must have at least one field: an empty record encodes to a line that
/// [`decode_line`] rejects.
pub fn encode_line(record: &[String]) -> String {
    let mut line = String::new();
    encode_into(record, &mut line);
    line
}

/// Decodes one line (without its '\n'); Err(reason) if the checksum or
/// encoding is bad.
pub fn decode_line(line: &str) -> std::result::Result<Record, String> {
    decode_bytes(line.as_bytes())
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Appends the line encoding `record` (with its '\n') to `out`.
fn encode_into(record: &[String], out: &mut String) {
    let crc_at = out.len();
    out.push_str("00000000 ");
    let payload_at = out.len();
    for (i, field) in record.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if field.is_empty() {
            out.push_str("%_");
            continue;
        }
        for c in field.chars() {
            if needs_escape(c) {
                // `c` is ASCII here, so it is a single byte.
                let b = c as u8;
                out.push('%');
                out.push(char::from(HEX_UPPER[usize::from(b >> 4)]));
                out.push(char::from(HEX_UPPER[usize::from(b & 0x0f)]));
            } else {
                out.push(c);
            }
        }
    }
    let crc = crc32fast::hash(&out.as_bytes()[payload_at..]);
    out.replace_range(crc_at..crc_at + 8, &format!("{crc:08x}"));
    out.push('\n');
}

/// Whether `c` must be written as `%XX`.
fn needs_escape(c: char) -> bool {
    c == '%' || c == ' ' || c < '\u{20}' || c == '\u{7f}'
}

/// Decodes one line given as bytes (without its '\n').
fn decode_bytes(line: &[u8]) -> std::result::Result<Record, String> {
    if line.len() < 10 {
        return Err(format!("line too short ({} bytes)", line.len()));
    }
    let (crc_hex, rest) = line.split_at(8);
    let mut expected: u32 = 0;
    for &b in crc_hex {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return Err("checksum is not 8 lowercase hex digits".to_string()),
        };
        expected = (expected << 4) | u32::from(digit);
    }
    let payload = match rest.split_first() {
        Some((b' ', payload)) => payload,
        _ => return Err("missing space after checksum".to_string()),
    };
    let actual = crc32fast::hash(payload);
    if actual != expected {
        return Err(format!(
            "checksum mismatch (stored {expected:08x}, computed {actual:08x})"
        ));
    }
    payload
        .split(|&b| b == b' ')
        .enumerate()
        .map(|(i, field)| {
            decode_field(field).map_err(|reason| format!("field {}: {reason}", i + 1))
        })
        .collect()
}

/// Unescapes one field.
fn decode_field(field: &[u8]) -> std::result::Result<String, String> {
    if field.is_empty() {
        return Err("empty field not written as %_".to_string());
    }
    if field == b"%_" {
        return Ok(String::new());
    }
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let b = field[i];
        if b == b'%' {
            let (hi, lo) = match (field.get(i + 1), field.get(i + 2)) {
                (Some(&hi), Some(&lo)) => (hex_upper(hi), hex_upper(lo)),
                _ => (None, None),
            };
            match (hi, lo) {
                (Some(hi), Some(lo)) => out.push((hi << 4) | lo),
                _ => {
                    return Err(format!(
                        "'%' at byte {} not followed by two uppercase hex digits",
                        i + 1
                    ))
                }
            }
            i += 3;
        } else if b < 0x20 || b == 0x7f {
            return Err(format!("unescaped control byte 0x{b:02x}"));
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "invalid UTF-8".to_string())
}

/// The value of an uppercase hex digit.
fn hex_upper(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `<path>.tmp`: the temp file of a rewrite, next to the journal.
fn tmp_path(path: &Path) -> Result<PathBuf> {
    let Some(name) = path.file_name() else {
        return Err(io_err(
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "journal path has no file name"),
        ));
    };
    let mut name = name.to_os_string();
    name.push(".tmp");
    Ok(path.with_file_name(name))
}

/// Reserves `len` bytes of disk space at `offset` of `file`, growing it (`fallocate`).
fn reserve(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    // SAFETY: fallocate only reads its integer arguments; the descriptor is open.
    let status = unsafe { libc::fallocate(file.as_raw_fd(), 0, offset, len) };
    if status == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Creates `tmp` afresh holding `bytes`, fsynced, opened for reading and writing.
fn write_temp(tmp: &Path, bytes: &[u8]) -> Result<File> {
    match std::fs::remove_file(tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(tmp, e)),
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(tmp)
        .map_err(|e| io_err(tmp, e))?;
    file.write_all_at(bytes, 0).map_err(|e| io_err(tmp, e))?;
    file.sync_all().map_err(|e| io_err(tmp, e))?;
    Ok(file)
}

/// Fsyncs the directory holding `path`, making its creation or renaming durable.
fn sync_dir(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn io_err(path: &Path, source: io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}
