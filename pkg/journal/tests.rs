use super::*;

fn rec(fields: &[&str]) -> Record {
    fields.iter().map(|f| f.to_string()).collect()
}

/// A line with a correct checksum over `payload` (without the '\n').
fn with_crc(payload: &[u8]) -> Vec<u8> {
    let mut line = format!("{:08x} ", crc32fast::hash(payload)).into_bytes();
    line.extend_from_slice(payload);
    line
}

fn tricky_records() -> Vec<Record> {
    vec![
        rec(&["put", "key", "value"]),
        rec(&["a b", "  leading and trailing  "]),
        rec(&["line1\nline2\n", "\r\n", "\r"]),
        rec(&["100%", "%_", "%", "%%41", "%2", "_"]),
        rec(&[
            "héllo wörld",
            "日本語",
            "🦀 crab",
            "\u{7f}del",
            "\u{80}\u{85}",
        ]),
        rec(&["nul\0byte", "\0", "\0\0\0"]),
        rec(&[""]),
        rec(&["", "", ""]),
        rec(&["x", "", "y", ""]),
        rec(&["tab\there", "\x01\x1f"]),
        vec!["z".repeat(1 << 20), "a b\n%".repeat(1 << 18)],
    ]
}

fn open(path: &Path) -> (Journal, Vec<Record>) {
    match Journal::open(path) {
        Ok(opened) => opened,
        Err(e) => panic!("open {}: {e}", path.display()),
    }
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// Where the records in the file end: just after its last '\n' (the rest is
/// preallocated space).
fn records_len(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    bytes
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i as u64 + 1)
}

/// Writes `bytes` at `offset` of the file at `path`.
fn write_at(path: &Path, bytes: &[u8], offset: u64) {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, offset).unwrap();
}

#[test]
fn encode_decode_round_trip() {
    for record in tricky_records() {
        let line = encode_line(&record);
        assert!(line.ends_with('\n'));
        let body = &line[..line.len() - 1];
        assert!(!body.contains('\n'), "line break inside encoded line");
        assert!(!body.bytes().any(|b| b < 0x20 || b == 0x7f));
        assert_eq!(
            body.matches(' ').count(),
            record.len(),
            "one space after the checksum and between fields"
        );
        assert_eq!(decode_line(body).unwrap(), record);
    }
}

#[test]
fn encoding_is_as_documented() {
    let payload = |r: &[&str]| {
        let line = encode_line(&rec(r));
        let (crc, rest) = line.split_at(8);
        assert!(crc
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        let payload = rest.strip_prefix(' ').unwrap().strip_suffix('\n').unwrap();
        assert_eq!(crc, format!("{:08x}", crc32fast::hash(payload.as_bytes())));
        payload.to_string()
    };
    assert_eq!(payload(&["put", "k", "hello world"]), "put k hello%20world");
    assert_eq!(payload(&["", "100%"]), "%_ 100%25");
    assert_eq!(payload(&["%_"]), "%25_");
    assert_eq!(payload(&["a\nb\rc\0d\u{7f}"]), "a%0Ab%0Dc%00d%7F");
    assert_eq!(payload(&["\x1b"]), "%1B");
    assert_eq!(payload(&["é 🦀"]), "é%20🦀");
    assert_eq!(payload(&["", ""]), "%_ %_");
}

#[test]
fn decode_rejects_bad_lines() {
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("empty line", Vec::new()),
        ("too short", b"0000".to_vec()),
        ("no payload", b"00000000 ".to_vec()),
        ("uppercase crc", {
            let mut l = with_crc(b"abc");
            l[..8].make_ascii_uppercase();
            if l == with_crc(b"abc") {
                // crc had no letters; force a non-hex digit instead
                l[0] = b'G';
            }
            l
        }),
        ("non-hex crc", {
            let mut l = with_crc(b"abc");
            l[3] = b'x';
            l
        }),
        ("missing space", {
            let mut l = with_crc(b"abc");
            l[8] = b'_';
            l
        }),
        ("crc mismatch", {
            let mut l = with_crc(b"abc");
            l[9] = b'x';
            l
        }),
        ("bad hex", with_crc(b"a%G1")),
        ("lowercase escape", with_crc(b"a%0a")),
        ("percent at end", with_crc(b"abc%")),
        ("percent one digit", with_crc(b"abc%2")),
        ("%_ inside a field", with_crc(b"a%_")),
        ("empty field between spaces", with_crc(b"a  b")),
        ("trailing space", with_crc(b"a ")),
        ("leading space", with_crc(b" a")),
        ("raw control byte", with_crc(b"a\rb")),
        ("raw NUL", with_crc(b"a\0b")),
        ("raw DEL", with_crc(b"a\x7fb")),
        ("invalid utf-8 after unescaping", with_crc(b"%FF")),
        ("truncated utf-8 after unescaping", with_crc(b"%C3")),
        ("raw invalid utf-8", with_crc(b"a\xffb")),
    ];
    for (what, line) in bad {
        assert!(decode_bytes(&line).is_err(), "{what}: accepted {line:?}");
        if let Ok(s) = std::str::from_utf8(&line) {
            assert!(decode_line(s).is_err(), "{what}: decode_line accepted");
        }
    }
    // Sanity: the helper does produce valid lines.
    assert_eq!(
        decode_bytes(&with_crc(b"a %_ %25")).unwrap(),
        rec(&["a", "", "%"])
    );
}

#[test]
fn open_creates_only_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal");
    let (journal, records) = open(&path);
    assert!(records.is_empty());
    assert_eq!(journal.record_count(), 0);
    assert_eq!(journal.byte_len(), 0);
    assert_eq!(journal.path(), path.as_path());
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("wal")]);
    assert_eq!(file_len(&path), 0);
}

#[test]
fn open_fails_if_parent_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing").join("wal");
    match Journal::open(&path) {
        Err(Error::Io { .. }) => {}
        other => panic!("expected Io error, got {other:?}"),
    }
    assert!(!dir.path().join("missing").exists());
}

#[test]
fn append_then_reopen_returns_records_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal");
    let records = tricky_records();
    {
        let (mut journal, _) = open(&path);
        for record in &records {
            journal.append(record).unwrap();
        }
        assert_eq!(journal.record_count(), records.len());
    }
    let (journal, replayed) = open(&path);
    assert_eq!(replayed, records);
    assert_eq!(journal.record_count(), records.len());
    assert_eq!(journal.byte_len(), records_len(&path));
}

#[test]
fn record_count_and_byte_len() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal");
    let (mut journal, _) = open(&path);
    let a = rec(&["a", "one"]);
    let b = rec(&["b", "two two"]);
    journal.append(&a).unwrap();
    assert_eq!(journal.record_count(), 1);
    assert_eq!(journal.byte_len(), encode_line(&a).len() as u64);
    assert_eq!(journal.byte_len(), records_len(&path));
    journal.append_unsynced(&b).unwrap();
    assert_eq!(journal.record_count(), 2);
    let expected = (encode_line(&a).len() + encode_line(&b).len()) as u64;
    assert_eq!(journal.byte_len(), expected);
    assert_eq!(records_len(&path), expected);
    drop(journal);
    let (journal, _) = open(&path);
    assert_eq!(journal.record_count(), 2);
    assert_eq!(journal.byte_len(), expected);
}

#[test]
fn append_batch_writes_all_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal");
    let (mut journal, _) = open(&path);
    journal.append(&rec(&["first"])).unwrap();
    let len = journal.byte_len();
    journal.append_batch(&[]).unwrap();
    assert_eq!(journal.byte_len(), len);
    assert_eq!(journal.record_count(), 1);
    assert_eq!(records_len(&path), len);

    let batch = vec![rec(&["b1", "x y"]), rec(&[""]), rec(&["b3", "\n"])];
    journal.append_batch(&batch).unwrap();
    assert_eq!(journal.record_count(), 4);
    let mut expected = vec![rec(&["first"])];
    expected.extend(batch.iter().cloned());
    let bytes: usize = expected.iter().map(|r| encode_line(r).len()).sum();
    assert_eq!(journal.byte_len(), bytes as u64);
    drop(journal);
    let (_, replayed) = open(&path);
    assert_eq!(replayed, expected);
}

#[test]
fn unsynced_appends_are_kept_and_sync_works() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal");
    let (mut journal, _) = open(&path);
    journal.append_unsynced(&rec(&["u1"])).unwrap();
    journal.sync().unwrap();
    journal.sync().unwrap();
    journal.append_unsynced(&rec(&["u2"])).unwrap();
    journal.append(&rec(&["s3"])).unwrap();
    drop(journal);
    let (_, replayed) = open(&path);
    assert_eq!(replayed, vec![rec(&["u1"]), rec(&["u2"]), rec(&["s3"])]);
}

#[test]
fn empty_record_is_rejected_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal");
    let (mut journal, _) = open(&path);
    journal.append(&rec(&["ok"])).unwrap();
    let len = journal.byte_len();
    assert!(journal.append(&[]).is_err());
    assert!(journal.append_unsynced(&[]).is_err());
    assert!(journal.append_batch(&[rec(&["fine"]), Vec::new()]).is_err());
    assert!(journal.rewrite(&[Vec::new()]).is_err());
    assert_eq!(journal.byte_len(), len);
    assert_eq!(journal.record_count(), 1);
    assert_eq!(records_len(&path), len);
    // Still usable afterwards.
    journal.append(&rec(&["after"])).unwrap();
    drop(journal);
    let (_, replayed) = open(&path);
    assert_eq!(replayed, vec![rec(&["ok"]), rec(&["after"])]);
}

fn torn_tail_case(tail: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal");
    let records = vec![rec(&["one"]), rec(&["two", "2"])];
    {
        let (mut journal, _) = open(&path);
        journal.append_batch(&records).unwrap();
    }
    let good_len = records_len(&path);
    // The crash left `tail` where the next records were being written.
    write_at(&path, tail, good_len);

    let (mut journal, replayed) = open(&path);
    assert_eq!(replayed, records);
    assert_eq!(file_len(&path), good_len, "torn tail not truncated");
    assert_eq!(journal.byte_len(), good_len);
    assert_eq!(journal.record_count(), 2);

    journal.append(&rec(&["three"])).unwrap();
    drop(journal);
    let (_, replayed) = open(&path);
    assert_eq!(
        replayed,
        vec![rec(&["one"]), rec(&["two", "2"]), rec(&["three"])]
    );
}

#[test]
fn torn_tail_partial_line_is_dropped() {
    let line = encode_line(&rec(&["three-but-torn", "value"]));
    torn_tail_case(&line.as_bytes()[..line.len() - 1]);
    torn_tail_case(&line.as_bytes()[..5]);
}

#[test]
fn torn_tail_with_nul_bytes_is_dropped() {
    torn_tail_case(b"deadbeef par\0\0\0\0");
    torn_tail_case(b"\0\0\0\0 torn");
}

/// NUL bytes after the last record are preallocated space: kept, and written over.
#[test]
fn a_tail_of_nul_bytes_is_kept_as_room_for_the_next_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal");
    let records = vec![rec(&["one"]), rec(&["two", "2"])];
    let good_len = {
        let (mut journal, _) = open(&path);
        journal.append_batch(&records).unwrap();
        journal.byte_len()
    };
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(good_len + 4096)
        .unwrap();

    let (mut journal, replayed) = open(&path);
    assert_eq!(replayed, records);
    assert_eq!(journal.byte_len(), good_len);
    assert_eq!(file_len(&path), good_len + 4096, "the room was cut");
    journal.append(&rec(&["three"])).unwrap();
    assert_eq!(file_len(&path), good_len + 4096, "the append grew the file");
    drop(journal);
    let (journal, replayed) = open(&path);
    assert_eq!(
        replayed,
        vec![rec(&["one"]), rec(&["two", "2"]), rec(&["three"])]
    );
    assert_eq!(records_len(&path), journal.byte_len());
}

/// Appends grow the file in whole preallocation steps, so most appends don't change
/// its size; the records replay as written.
#[test]
fn appends_grow_the_file_in_preallocated_steps() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal");
    let (mut journal, _) = open(&path);
    let big = rec(&["big", &"v".repeat(700 * 1024)]);
    journal.append(&rec(&["first"])).unwrap();
    assert_eq!(file_len(&path), PREALLOCATE_BYTES);
    journal.append(&big).unwrap();
    assert_eq!(file_len(&path), PREALLOCATE_BYTES);
    journal.append(&big).unwrap();
    assert_eq!(file_len(&path), 2 * PREALLOCATE_BYTES);
    assert_eq!(journal.byte_len(), records_len(&path));
    drop(journal);
    assert_eq!(open(&path).1, vec![rec(&["first"]), big.clone(), big]);
}

#[test]
fn torn_tail_with_invalid_utf8_is_dropped() {
    torn_tail_case(b"\xff\xfe\x80");
}

#[test]
fn file_with_only_a_torn_line_becomes_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal");
    std::fs::write(&path, b"0123abcd half a rec").unwrap();
    let (mut journal, replayed) = open(&path);
    assert!(replayed.is_empty());
    assert_eq!(file_len(&path), 0);
    assert_eq!(journal.byte_len(), 0);
    journal.append(&rec(&["fresh"])).unwrap();
    drop(journal);
    assert_eq!(open(&path).1, vec![rec(&["fresh"])]);
}

/// Writes three records, lets `damage` change the file's bytes, and checks
/// that open reports `Corrupt` on `line` and leaves the file unchanged.
fn corrupt_case(damage: impl FnOnce(&mut Vec<u8>), line: usize) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal");
    {
        let (mut journal, _) = open(&path);
        journal.append(&rec(&["first", "1"])).unwrap();
        journal.append(&rec(&["second", "2"])).unwrap();
        journal.append(&rec(&["third", "3"])).unwrap();
    }
    let mut bytes = std::fs::read(&path).unwrap();
    damage(&mut bytes);
    std::fs::write(&path, &bytes).unwrap();

    match Journal::open(&path) {
        Err(e @ Error::Corrupt { .. }) => {
            let Error::Corrupt {
                path: p, line: l, ..
            } = &e
            else {
                unreachable!()
            };
            assert_eq!(*l, line, "{e}");
            assert_eq!(p, &path);
            let msg = e.to_string();
            assert!(msg.contains(&format!("line {line}")), "{msg}");
            assert!(msg.contains("refusing to start"), "{msg}");
        }
        other => panic!("expected Corrupt on line {line}, got {other:?}"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "file was modified");
    // Opening again gives the same answer (nothing was "repaired").
    assert!(matches!(
        Journal::open(&path),
        Err(Error::Corrupt { line: l, .. }) if l == line
    ));
}

/// Offset of the first byte of the `n`-th (1-based) line's payload.
fn payload_offset(bytes: &[u8], n: usize) -> usize {
    let mut start = 0;
    for _ in 1..n {
        start += bytes[start..].iter().position(|&b| b == b'\n').unwrap() + 1;
    }
    start + 9
}

#[test]
fn corrupt_middle_line_is_reported_and_file_untouched() {
    corrupt_case(
        |b| {
            let i = payload_offset(b, 2);
            b[i] ^= 0x01;
        },
        2,
    );
}

#[test]
fn corrupt_checksum_digit_is_reported() {
    corrupt_case(
        |b| {
            let i = payload_offset(b, 2) - 9;
            b[i] = if b[i] == b'0' { b'1' } else { b'0' };
        },
        2,
    );
}

#[test]
fn corrupt_first_line_is_reported() {
    corrupt_case(
        |b| {
            let i = payload_offset(b, 1);
            b[i] = b'F';
        },
        1,
    );
}

#[test]
fn corrupt_last_complete_line_is_reported() {
    corrupt_case(
        |b| {
            let i = payload_offset(b, 3) + 2;
            b[i] ^= 0x20;
        },
        3,
    );
}

#[test]
fn corrupt_last_line_with_torn_tail_is_reported_and_tail_kept() {
    corrupt_case(
        |b| {
            let i = payload_offset(b, 3);
            b[i] ^= 0x04;
            b.extend_from_slice(b"0000 torn\0\0");
        },
        3,
    );
}

#[test]
fn invalid_utf8_line_is_corrupt_not_panic() {
    corrupt_case(
        |b| {
            let i = payload_offset(b, 2) + 1;
            b[i] = 0xff;
        },
        2,
    );
}

#[test]
fn empty_line_is_corrupt() {
    corrupt_case(
        |b| {
            let i = payload_offset(b, 2) - 9;
            b.insert(i, b'\n');
        },
        2,
    );
}

#[test]
fn rewrite_replaces_contents_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal");
    let (mut journal, _) = open(&path);
    for i in 0..5 {
        journal.append(&rec(&["old", &i.to_string()])).unwrap();
    }
    journal.append_unsynced(&rec(&["old", "unsynced"])).unwrap();
    let live = vec![rec(&["live", "a b"]), rec(&["live", ""])];
    journal.rewrite(&live).unwrap();

    let expected: String = live.iter().map(|r| encode_line(r)).collect();
    assert_eq!(std::fs::read(&path).unwrap(), expected.as_bytes());
    assert_eq!(journal.record_count(), 2);
    assert_eq!(journal.byte_len(), expected.len() as u64);
    assert!(!dir.path().join("wal.tmp").exists());

    journal.append(&rec(&["new", "1"])).unwrap();
    journal.append_batch(&[rec(&["new", "2"])]).unwrap();
    assert_eq!(journal.record_count(), 4);
    assert_eq!(journal.byte_len(), records_len(&path));
    drop(journal);

    let (journal, replayed) = open(&path);
    let mut all = live.clone();
    all.push(rec(&["new", "1"]));
    all.push(rec(&["new", "2"]));
    assert_eq!(replayed, all);
    assert_eq!(journal.record_count(), 4);
}

#[test]
fn rewrite_to_empty_and_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal");
    let (mut journal, _) = open(&path);
    journal.append(&rec(&["x"])).unwrap();
    journal.rewrite(&[]).unwrap();
    assert_eq!(file_len(&path), 0);
    assert_eq!(journal.record_count(), 0);
    assert_eq!(journal.byte_len(), 0);
    journal.append(&rec(&["y"])).unwrap();
    journal.rewrite(&[rec(&["z"])]).unwrap();
    journal.append(&rec(&["w"])).unwrap();
    drop(journal);
    assert_eq!(open(&path).1, vec![rec(&["z"]), rec(&["w"])]);
}

#[test]
fn rewrite_overwrites_a_stale_tmp() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal");
    let (mut journal, _) = open(&path);
    journal.append(&rec(&["x"])).unwrap();
    std::fs::write(dir.path().join("wal.tmp"), b"garbage without newline").unwrap();
    journal.rewrite(&[rec(&["kept"])]).unwrap();
    assert!(!dir.path().join("wal.tmp").exists());
    drop(journal);
    assert_eq!(open(&path).1, vec![rec(&["kept"])]);
}

#[test]
fn leftover_tmp_is_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal.log");
    {
        let (mut journal, _) = open(&path);
        journal.append(&rec(&["real"])).unwrap();
    }
    let tmp = dir.path().join("wal.log.tmp");
    let mut stale = encode_line(&rec(&["from", "tmp"])).into_bytes();
    stale.extend_from_slice(b"torn\0");
    std::fs::write(&tmp, &stale).unwrap();

    let (journal, replayed) = open(&path);
    assert_eq!(replayed, vec![rec(&["real"])]);
    assert!(!tmp.exists(), "leftover tmp not removed");
    assert_eq!(journal.record_count(), 1);
}

#[test]
fn relative_path_without_directory_component() {
    // `sync_dir` must cope with a bare file name (parent is "").
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal");
    assert_eq!(tmp_path(&path).unwrap(), dir.path().join("wal.tmp"));
    assert_eq!(
        tmp_path(Path::new("wal")).unwrap(),
        PathBuf::from("wal.tmp")
    );
    assert!(tmp_path(Path::new("/")).is_err());
    sync_dir(Path::new("wal")).unwrap();
}

// Failed writes. After any failed write the journal's offsets must agree with its file:
// the records up to `byte_len`, only zeros after them, every record there readable. The
// disks are tmpfs mounts smaller than a preallocation step unless said otherwise, so
// the journal runs without preallocated room there, as on a nearly full disk.

/// What a fresh [`Journal::open`] finds in a copy of the file at `path` (the journal
/// under test stays open and untouched).
fn replay_copy(path: &Path) -> Vec<Record> {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy");
    std::fs::copy(path, &copy).unwrap();
    open(&copy).1
}

/// The journal and its file agree: `expected` is what the file holds (and what a
/// restart would replay), it ends where the journal will write next, and only zeros
/// follow it.
fn assert_agrees(journal: &Journal, expected: &[Record]) {
    let path = journal.path();
    let bytes = std::fs::read(path).unwrap();
    let expected_bytes: String = expected.iter().map(|r| encode_line(r)).collect();
    assert!(
        bytes.starts_with(expected_bytes.as_bytes()),
        "the file does not start with the {} records (its first bytes: {:?})",
        expected.len(),
        String::from_utf8_lossy(&bytes[..bytes.len().min(40)])
    );
    assert!(
        bytes[expected_bytes.len()..].iter().all(|&b| b == 0),
        "more than zeros after the records"
    );
    assert_eq!(journal.byte_len(), expected_bytes.len() as u64, "byte_len");
    assert_eq!(journal.record_count(), expected.len(), "record_count");
    assert_eq!(replay_copy(path), expected);
}

/// A record of about `len` bytes that needs new pages of a full disk.
fn big(name: &str, len: usize) -> Record {
    rec(&["big", name, &"v".repeat(len)])
}

/// Regression: on a disk without room for a preallocation step, each append used to
/// truncate the file to where the room had last ended (`allocated`, which appends past
/// it did not move) before writing at the end of the records, leaving a hole of NUL
/// bytes where the earlier records had been: the next start found "line 1: corrupt
/// record".
#[test]
fn appends_without_room_to_preallocate_keep_every_record() {
    let Some(disk) = crate::test_disk::SmallDisk::mount("512k", "journal: appends without room")
    else {
        return;
    };
    let path = disk.path().join("journal");
    let (mut journal, _) = open(&path);
    let mut expected = Vec::new();
    for i in 0..3 {
        let r = rec(&["prepare", &format!("1.{i}"), "k", "v"]);
        journal.append(&r).unwrap();
        expected.push(r);
        assert_agrees(&journal, &expected);
    }
    let r = rec(&["unsynced"]);
    journal.append_unsynced(&r).unwrap();
    expected.push(r);
    let batch = vec![rec(&["decide", "1.0", "commit"]), rec(&["decide", "1.1"])];
    journal.append_batch(&batch).unwrap();
    expected.extend(batch);
    assert_agrees(&journal, &expected);
    assert!(
        file_len(&path) < PREALLOCATE_BYTES,
        "no room was preallocated"
    );

    // A checkpoint starts a new file without room; appends after it are kept too.
    expected = vec![rec(&["meta"]), rec(&["prepare", "1.2", "k", "v"])];
    journal.rewrite(&expected).unwrap();
    for i in 3..5 {
        let r = rec(&["decide", &format!("1.{i}"), "commit"]);
        journal.append(&r).unwrap();
        expected.push(r);
        assert_agrees(&journal, &expected);
    }
    drop(journal);
    assert_eq!(open(&path).1, expected);
}

/// The outside tester's sequence, at the journal: a 200 KB record refused on a full
/// disk, the space freed, then appends that succeed and a restart that reads them all.
#[test]
fn a_write_refused_by_a_full_disk_leaves_the_journal_as_it_was() {
    let Some(disk) = crate::test_disk::SmallDisk::mount("512k", "journal: full disk") else {
        return;
    };
    let path = disk.path().join("journal");
    let (mut journal, _) = open(&path);
    let mut expected = vec![
        rec(&["meta", "cluster"]),
        rec(&["prepare", "1.1", "k", "old"]),
    ];
    journal.append_batch(&expected).unwrap();

    let ballast = disk.fill();
    let refused = big("1.2", 200 * 1024);
    assert!(journal.append(&refused).is_err(), "the disk is full");
    assert!(
        !journal.is_broken(),
        "a refused write leaves the journal usable"
    );
    assert_agrees(&journal, &expected);

    std::fs::remove_file(ballast).unwrap();
    for r in [rec(&["decide", "1.1", "commit"]), big("1.3", 100 * 1024)] {
        journal.append(&r).unwrap();
        expected.push(r);
        assert_agrees(&journal, &expected);
    }
    drop(journal);
    assert_eq!(open(&path).1, expected);
}

/// A write that starts in the preallocated room and runs past it into a full disk: the
/// part in the room is zeroed again, the part past it cut, and the room is kept.
#[test]
fn a_write_past_the_preallocated_room_into_a_full_disk_is_undone() {
    let Some(disk) = crate::test_disk::SmallDisk::mount("1536k", "journal: past the room") else {
        return;
    };
    let path = disk.path().join("journal");
    let (mut journal, _) = open(&path);
    let mut expected = vec![rec(&["first"])];
    journal.append(&expected[0]).unwrap();
    assert_eq!(
        file_len(&path),
        PREALLOCATE_BYTES,
        "a step was preallocated"
    );

    let ballast = disk.fill();
    let across = big("across", PREALLOCATE_BYTES as usize);
    assert!(journal.append(&across).is_err(), "the disk is full");
    assert!(!journal.is_broken());
    assert_agrees(&journal, &expected);
    assert_eq!(file_len(&path), PREALLOCATE_BYTES, "the room is kept");

    std::fs::remove_file(ballast).unwrap();
    for r in [rec(&["second"]), big("after", 300 * 1024)] {
        journal.append(&r).unwrap();
        expected.push(r);
        assert_agrees(&journal, &expected);
    }
    drop(journal);
    assert_eq!(open(&path).1, expected);
}

/// A disk that fills and empties again and again, under appends and checkpoints: every
/// refused write and every refused rewrite leaves the journal as it was, and everything
/// that succeeded is there, in order, at every step.
#[test]
fn a_disk_that_fills_and_empties_again_and_again() {
    let Some(disk) = crate::test_disk::SmallDisk::mount("512k", "journal: fill and empty") else {
        return;
    };
    let path = disk.path().join("journal");
    let (mut journal, _) = open(&path);
    let mut expected = Vec::new();
    for round in 0..6 {
        let r = rec(&["before", &round.to_string()]);
        journal.append(&r).unwrap();
        expected.push(r);

        let ballast = disk.fill();
        assert!(journal.append(&big("refused", 64 * 1024)).is_err());
        assert!(journal
            .append_batch_unsynced(&[rec(&["small"]), big("refused", 32 * 1024)])
            .is_err());
        let mut live = expected.clone();
        live.push(big("refused rewrite", 64 * 1024));
        assert!(journal.rewrite(&live).is_err(), "no room for the new file");
        assert!(!path.with_file_name("journal.tmp").exists());
        assert!(!journal.is_broken());
        assert_agrees(&journal, &expected);

        std::fs::remove_file(ballast).unwrap();
        let r = big(&format!("after {round}"), 40 * 1024);
        journal.append(&r).unwrap();
        expected.push(r);
        assert_agrees(&journal, &expected);
        if round % 2 == 1 {
            // A checkpoint keeps the last two.
            expected.drain(..expected.len() - 2);
            journal.rewrite(&expected).unwrap();
            assert_agrees(&journal, &expected);
        }
    }
    drop(journal);
    assert_eq!(open(&path).1, expected);
}
