use super::*;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rand::Rng;

/// The version the tests write with, unless a test is about versions.
const V: TxId = TxId { epoch: 1, seq: 1 };

/// The value of `key`, if present (its version aside).
fn stored(store: &KvStore, key: &str) -> Option<String> {
    store.get(key).expect("get").map(|held| held.value)
}

/// Every key's value (versions aside).
fn values(store: &KvStore) -> BTreeMap<String, String> {
    store
        .dump()
        .expect("dump")
        .into_iter()
        .map(|(key, held)| (key, held.value))
        .collect()
}

/// A temp parent directory and a store in its "store" subdirectory.
fn new_store() -> (tempfile::TempDir, KvStore) {
    let parent = tempfile::tempdir().expect("tempdir");
    let store = KvStore::open(&parent.path().join("store")).expect("open");
    (parent, store)
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| {
            e.expect("entry")
                .file_name()
                .into_string()
                .expect("utf-8 name")
        })
        .collect();
    names.sort();
    names
}

/// The directory holds only regular files, and the parent only the store dir.
fn assert_contained(parent: &Path, store: &KvStore) {
    assert_eq!(names_in(parent), vec!["store".to_string()]);
    for entry in fs::read_dir(store.dir()).expect("read_dir") {
        let entry = entry.expect("entry");
        let ty = entry.file_type().expect("file_type");
        assert!(ty.is_file(), "not a regular file: {:?}", entry.path());
        let name = entry.file_name().into_string().expect("utf-8 name");
        assert!(name.len() <= 255, "name too long: {}", name.len());
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "unexpected character in {name:?}"
        );
    }
}

fn hostile_keys() -> Vec<String> {
    let mut keys: Vec<String> = [
        "../x",
        "a/b",
        ".",
        "..",
        "/etc/passwd",
        "a b\nc",
        "UPPER",
        "upper",
        "Upper",
        "\0",
        "a\0b",
        "k_41",
        "_41",
        "k",
        "h",
        "ka",
        ".lock",
        "t0.tmp",
        "tabc.tmp",
        "..\\..\\windows",
        "C:\\x",
        "~",
        "-rf",
        "日本語",
        "é",
        "e\u{301}",
        "🦀 crab",
        "\u{10FFFF}",
        "\t\r\n",
        "%2e%2e%2f",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Looks like a hashed name.
    keys.push(format!("h{}", "0".repeat(64)));
    keys.push("x".repeat(10 * 1024));
    keys.push("/".repeat(64 * 1024));
    keys.push("é".repeat(32 * 1024));
    // Right at the threshold: 199 verbatim bytes -> 200-byte name (plain),
    // 200 bytes -> 201 (hashed).
    keys.push("a".repeat(199));
    keys.push("a".repeat(200));
    keys
}

#[test]
fn hostile_keys_round_trip_and_stay_inside() {
    let (parent, store) = new_store();
    let keys = hostile_keys();
    let mut expected = BTreeMap::new();
    for (i, key) in keys.iter().enumerate() {
        let value = format!("value {i} for {}", key.len());
        store.put(key, &value, V).expect("put");
        expected.insert(key.clone(), value);
    }
    for (key, value) in &expected {
        assert_eq!(stored(&store, key).as_deref(), Some(value.as_str()));
    }
    assert_eq!(values(&store), expected);
    assert_eq!(names_in(store.dir()).len(), expected.len());
    assert_contained(parent.path(), &store);

    // Reopening sees the same data.
    let reopened = KvStore::open(store.dir()).expect("reopen");
    assert_eq!(values(&reopened), expected);

    for key in &keys {
        store.delete(key).expect("delete");
    }
    assert!(store.is_empty().expect("is_empty"));
    assert!(names_in(store.dir()).is_empty());
    assert_contained(parent.path(), &store);
}

#[test]
fn specific_names() {
    assert_eq!(file_name_for("user42"), "vuser42");
    assert_eq!(file_name_for("Upper"), "v_55pper");
    assert_eq!(file_name_for("../x"), "v_2e_2e_2fx");
    assert_eq!(file_name_for("."), "v_2e");
    assert_eq!(file_name_for(".."), "v_2e_2e");
    assert_eq!(file_name_for("a/b"), "va_2fb");
    assert_eq!(file_name_for("a b\nc"), "va_20b_0ac");
    assert_eq!(file_name_for("é"), "v_c3_a9");
    assert_eq!(file_name_for("k_41"), "vk_5f41");
    assert_eq!(file_name_for("a\0b"), "va_00b");
    assert_eq!(key_for_file_name("vk_5f41").as_deref(), Some("k_41"));
    assert_eq!(key_for_file_name("v_41").as_deref(), Some("A"));
}

#[test]
fn upper_and_lower_case_are_distinct_files() {
    let (_parent, store) = new_store();
    store.put("UPPER", "big", V).expect("put");
    store.put("upper", "small", V).expect("put");
    assert_ne!(file_name_for("UPPER"), file_name_for("upper"));
    assert_ne!(
        file_name_for("UPPER").to_lowercase(),
        file_name_for("upper").to_lowercase()
    );
    assert_eq!(stored(&store, "UPPER").as_deref(), Some("big"));
    assert_eq!(stored(&store, "upper").as_deref(), Some("small"));
    assert_eq!(names_in(store.dir()).len(), 2);
}

#[test]
fn long_keys_use_hashed_names() {
    let (parent, store) = new_store();
    let key10k: String = (0..10_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let key64k = "Z".repeat(64 * 1024);
    for key in [&key10k, &key64k] {
        let name = file_name_for(key);
        assert!(name.starts_with('w'), "{name}");
        assert_eq!(name.len(), 65);
        assert!(name.len() <= 255);
        assert_eq!(key_for_file_name(&name), None);
    }
    store.put(&key10k, "ten", V).expect("put");
    store.put(&key64k, "sixty-four", V).expect("put");
    assert_eq!(stored(&store, &key10k).as_deref(), Some("ten"));
    assert_eq!(stored(&store, &key64k).as_deref(), Some("sixty-four"));
    // A key sharing a long prefix but not stored is absent.
    let other = format!("{key64k}!");
    assert_eq!(stored(&store, &other), None);
    // Hashed files also hold empty values.
    store.put(&other, "", V).expect("put");
    assert_eq!(stored(&store, &other).as_deref(), Some(""));

    let dump = values(&store);
    assert_eq!(dump.len(), 3);
    assert_eq!(dump.get(&key10k).map(String::as_str), Some("ten"));
    assert_eq!(dump.get(&key64k).map(String::as_str), Some("sixty-four"));
    assert_eq!(dump.get(&other).map(String::as_str), Some(""));

    // On-disk layout of a w file: version, key length, key, value.
    let content = fs::read(store.dir().join(file_name_for(&key10k))).expect("read");
    let mut expected = b"1.1\n10000\n".to_vec();
    expected.extend_from_slice(key10k.as_bytes());
    expected.extend_from_slice(b"ten");
    assert!(
        content == expected,
        "the w file's bytes differ from the documented layout"
    );
    // And of a v file: version, value.
    store.put("short", "", V).expect("put");
    let content = fs::read(store.dir().join(file_name_for("short"))).expect("read");
    assert_eq!(content, b"1.1\n", "an empty value after its version");
    assert_contained(parent.path(), &store);
}

#[test]
fn threshold_between_plain_and_hashed() {
    let plain = "a".repeat(199);
    assert_eq!(file_name_for(&plain).len(), 200);
    assert!(file_name_for(&plain).starts_with('v'));
    assert_eq!(key_for_file_name(&file_name_for(&plain)), Some(plain));
    let hashed = "a".repeat(200);
    assert!(file_name_for(&hashed).starts_with('w'));
    // A 201-byte k name is not canonical.
    assert_eq!(key_for_file_name(&format!("v{hashed}")), None);
    // Escapes count three bytes each: k + 66 escapes = 199 bytes, k + 67 = 202.
    let escaped = "A".repeat(66);
    assert!(file_name_for(&escaped).starts_with('v'));
    let escaped = "A".repeat(67);
    assert!(file_name_for(&escaped).starts_with('w'));
}

#[test]
fn unicode_and_nul_keys() {
    let (_parent, store) = new_store();
    let keys = [
        "日本語",
        "Ελληνικά",
        "🦀",
        "a\0b",
        "\0",
        "\u{FEFF}bom",
        "ß",
        "SS",
    ];
    for (i, key) in keys.iter().enumerate() {
        store.put(key, &format!("v{i}"), V).expect("put");
    }
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(stored(&store, key), Some(format!("v{i}")));
    }
    assert_eq!(values(&store).len(), keys.len());
}

#[test]
fn keys_that_look_like_encodings() {
    let (_parent, store) = new_store();
    let keys = ["k_41", "A", "_41", "k", "ka", "a", "_", "__", "_5f"];
    for key in keys {
        store.put(key, key, V).expect("put");
    }
    let dump = values(&store);
    assert_eq!(dump.len(), keys.len());
    for key in keys {
        assert_eq!(dump.get(key).map(String::as_str), Some(key));
    }
}

#[test]
fn empty_value_differs_from_absent() {
    let (_parent, store) = new_store();
    assert_eq!(stored(&store, "k"), None);
    store.put("k", "", V).expect("put");
    assert_eq!(stored(&store, "k"), Some(String::new()));
    assert!(!store.is_empty().expect("is_empty"));
    assert_eq!(
        values(&store),
        BTreeMap::from([("k".to_string(), String::new())])
    );
    store.delete("k").expect("delete");
    assert_eq!(stored(&store, "k"), None);
    assert!(store.is_empty().expect("is_empty"));
}

#[test]
fn put_replaces() {
    let (_parent, store) = new_store();
    store.put("key", "one", V).expect("put");
    store
        .put("key", "a much longer second value", V)
        .expect("put");
    assert_eq!(
        stored(&store, "key").as_deref(),
        Some("a much longer second value")
    );
    store.put("key", "3", V).expect("put");
    assert_eq!(stored(&store, "key").as_deref(), Some("3"));
    assert_eq!(names_in(store.dir()), vec!["vkey".to_string()]);
}

#[test]
fn delete_absent_is_ok() {
    let (_parent, store) = new_store();
    store.delete("nothing").expect("delete absent");
    store
        .delete(&"x".repeat(1000))
        .expect("delete absent hashed");
    store.put("x", "1", V).expect("put");
    store.delete("x").expect("delete");
    store.delete("x").expect("delete again");
    assert_eq!(stored(&store, "x"), None);
}

#[test]
fn large_value_round_trips() {
    let (_parent, store) = new_store();
    let value: String = (0..3 * 1024 * 1024)
        .map(|i| char::from(b' ' + (i % 90) as u8))
        .collect();
    store.put("big", &value, V).expect("put");
    assert_eq!(stored(&store, "big"), Some(value.clone()));
    let long_key = "K".repeat(64 * 1024);
    store.put(&long_key, &value, V).expect("put");
    assert_eq!(stored(&store, &long_key), Some(value));
}

#[test]
fn leftover_temp_file_is_removed_on_open_and_old_value_intact() {
    let parent = tempfile::tempdir().expect("tempdir");
    let dir = parent.path().join("store");
    {
        let store = KvStore::open(&dir).expect("open");
        store.put("a", "old", V).expect("put");
        store.put(&"L".repeat(500), "old long", V).expect("put");
    }
    // Simulate a crash between writing the temp file and renaming it.
    fs::write(dir.join("t0123456789abcdef.tmp"), "new but never renamed").expect("write");
    fs::write(dir.join("tdeadbeef.tmp"), "12\npartial").expect("write");
    // Files the store does not own are left alone and ignored.
    fs::write(dir.join(".lock"), "1234").expect("write");
    fs::write(dir.join("README"), "hello").expect("write");
    fs::write(dir.join("v_4G"), "bad encoding").expect("write");

    let store = KvStore::open(&dir).expect("reopen");
    let names = names_in(&dir);
    assert!(
        !names.iter().any(|n| n.ends_with(".tmp")),
        "temp files survived: {names:?}"
    );
    assert!(names.contains(&".lock".to_string()));
    assert!(names.contains(&"README".to_string()));
    assert!(names.contains(&"v_4G".to_string()));
    assert_eq!(stored(&store, "a").as_deref(), Some("old"));
    assert_eq!(
        values(&store),
        BTreeMap::from([
            ("a".to_string(), "old".to_string()),
            ("L".repeat(500), "old long".to_string()),
        ])
    );
}

#[test]
fn lock_and_unknown_files_do_not_count_as_keys() {
    let (_parent, store) = new_store();
    fs::write(store.dir().join(".lock"), "").expect("write");
    fs::write(store.dir().join("notes.txt"), "").expect("write");
    fs::write(store.dir().join("v_61"), "non-canonical").expect("write");
    fs::write(store.dir().join("wxyz"), "").expect("write");
    assert!(store.is_empty().expect("is_empty"));
    assert!(values(&store).is_empty());
}

#[test]
fn apply_batch_puts_and_deletes() {
    let (_parent, store) = new_store();
    store.put("keep", "k", V).expect("put");
    store.put("gone", "g", V).expect("put");
    store.put("revived", "r0", V).expect("put");
    let long = "Q".repeat(300);
    store
        .apply_batch(&[
            ("new", Some(("n", V))),
            ("gone", None),
            ("absent", None),
            ("twice", Some(("first", V))),
            ("twice", Some(("second", V))),
            ("put-then-delete", Some(("x", V))),
            ("put-then-delete", None),
            ("revived", None),
            ("revived", Some(("r1", V))),
            ("empty", Some(("", V))),
            (long.as_str(), Some(("long", V))),
            ("../escape", Some(("no", V))),
        ])
        .expect("apply_batch");
    let expected = BTreeMap::from([
        ("keep".to_string(), "k".to_string()),
        ("new".to_string(), "n".to_string()),
        ("twice".to_string(), "second".to_string()),
        ("revived".to_string(), "r1".to_string()),
        ("empty".to_string(), String::new()),
        (long.clone(), "long".to_string()),
        ("../escape".to_string(), "no".to_string()),
    ]);
    assert_eq!(values(&store), expected);
    assert_eq!(stored(&store, "gone"), None);
    assert_eq!(stored(&store, "put-then-delete"), None);
    assert!(!names_in(store.dir()).iter().any(|n| n.ends_with(".tmp")));
    store.apply_batch(&[]).expect("empty batch");
    assert_eq!(values(&store), expected);
}

#[test]
fn dump_returns_exactly_what_was_put() {
    let (_parent, store) = new_store();
    let mut rng = rand::rng();
    let mut expected = BTreeMap::new();
    for _ in 0..200 {
        let key = random_string(&mut rng, 1, 40);
        let value = random_string(&mut rng, 0, 100);
        store.put(&key, &value, V).expect("put");
        expected.insert(key, value);
    }
    let doomed: Vec<String> = expected.keys().step_by(3).cloned().collect();
    for key in &doomed {
        store.delete(key).expect("delete");
        expected.remove(key);
    }
    assert_eq!(values(&store), expected);
    assert_eq!(store.count().expect("count"), expected.len() as u64);
    std::fs::write(store.dir().join("notes.txt"), "not a key").expect("write");
    assert_eq!(
        store.count().expect("count"),
        expected.len() as u64,
        "other files are not keys"
    );
    assert_eq!(
        values(&KvStore::open(store.dir()).expect("reopen")),
        expected
    );
}

fn random_string(rng: &mut impl Rng, min: usize, max: usize) -> String {
    let len = rng.random_range(min..=max);
    (0..len)
        .map(|_| match rng.random_range(0..4) {
            0 => char::from(rng.random_range(b'a'..=b'z')),
            1 => char::from(rng.random_range(0u8..0x80)),
            2 => char::from_u32(rng.random_range(0x80..0x800)).unwrap_or('x'),
            _ => rng.random::<char>(),
        })
        .collect()
}

#[test]
fn name_round_trip_all_chars() {
    for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
        let key = c.to_string();
        let name = file_name_for(&key);
        assert_eq!(key_for_file_name(&name), Some(key), "{name}");
    }
    for b in 0u8..0x80 {
        let key = char::from(b).to_string();
        let name = file_name_for(&key);
        if b.is_ascii_lowercase() || b.is_ascii_digit() {
            assert_eq!(name, format!("v{key}"));
        } else {
            assert_eq!(name, format!("v_{b:02x}"));
        }
    }
}

#[test]
fn name_round_trip_random_strings() {
    let mut rng = rand::rng();
    for _ in 0..20_000 {
        let key = random_string(&mut rng, 1, 120);
        let name = file_name_for(&key);
        assert!(name.len() <= 255);
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "{name}"
        );
        if name.starts_with('v') {
            assert!(name.len() <= 200);
            assert_eq!(key_for_file_name(&name), Some(key));
        } else {
            assert!(name.starts_with('w'));
            assert_eq!(name.len(), 65);
            assert_eq!(key_for_file_name(&name), None);
        }
    }
}

#[test]
fn invalid_names_decode_to_none() {
    for name in [
        "", "v_61", "v_4", "v_", "v_4G", "v_4A", "vA", "V61", "x", "w", "kuser", ".lock", "t1.tmp",
        "v_ff", "v_c3", "va.b", "v/a", "v_2e/",
    ] {
        assert_eq!(key_for_file_name(name), None, "{name:?}");
    }
    // Decodes fine but "v" alone is the (unused) empty key.
    assert_eq!(key_for_file_name("v").as_deref(), Some(""));
}

#[test]
fn hashed_file_with_mismatching_key_is_corrupt() {
    let (_parent, store) = new_store();
    let key = "m".repeat(1000);
    store.put(&key, "value", V).expect("put");
    let path = store.dir().join(file_name_for(&key));

    // Same length, different key.
    let other = "n".repeat(1000);
    fs::write(&path, format!("1.1\n1000\n{other}value")).expect("write");
    assert!(matches!(store.get(&key), Err(Error::Corrupt { .. })));
    assert!(matches!(store.dump(), Err(Error::Corrupt { .. })));

    // Different length.
    fs::write(&path, "1.1\n3\nabcvalue").expect("write");
    assert!(matches!(store.get(&key), Err(Error::Corrupt { .. })));
    assert!(matches!(store.dump(), Err(Error::Corrupt { .. })));

    // Malformed headers.
    for content in [
        &b""[..],
        b"no header",
        b"\nxyz",
        b"-1\nx",
        b"99999999999999999999999\nx",
        b"2000\nshort",
    ] {
        fs::write(&path, [&b"1.1\n"[..], content].concat()).expect("write");
        assert!(
            matches!(store.get(&key), Err(Error::Corrupt { .. })),
            "{content:?}"
        );
    }

    // Restoring the right content makes it readable again.
    fs::write(&path, format!("1.1\n1000\n{key}value")).expect("write");
    assert_eq!(stored(&store, &key).as_deref(), Some("value"));
}

#[test]
fn invalid_utf8_value_is_corrupt() {
    let (_parent, store) = new_store();
    fs::write(store.dir().join(file_name_for("bad")), b"1.1\n\xff\xfe").expect("write");
    assert!(matches!(store.get("bad"), Err(Error::Corrupt { .. })));
    assert!(matches!(store.dump(), Err(Error::Corrupt { .. })));
}

#[test]
fn open_creates_nested_directories() {
    let parent = tempfile::tempdir().expect("tempdir");
    let dir = parent.path().join("a").join("b").join("c");
    let store = KvStore::open(&dir).expect("open");
    assert!(dir.is_dir());
    assert_eq!(store.dir(), dir.as_path());
    assert!(store.is_empty().expect("is_empty"));
}

#[test]
fn open_on_a_file_fails_with_io_error() {
    let parent = tempfile::tempdir().expect("tempdir");
    let path = parent.path().join("file");
    fs::write(&path, "x").expect("write");
    let err = KvStore::open(&path).expect_err("must fail");
    assert!(matches!(err, Error::Io { .. }));
    assert!(err.to_string().contains("kv store"));
}

#[test]
fn store_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<KvStore>();
    assert_send_sync::<Error>();
}

#[test]
fn readers_never_see_half_written_values() {
    readers_see_only_whole_values(|store, value| store.put("key", value, V).expect("put"));
}

/// Rewriting files in place is hidden from readers by the store's lock.
#[test]
fn readers_never_see_values_half_rewritten_in_place() {
    readers_see_only_whole_values(|store, value| {
        store
            .apply_unsynced(&[("key", Some((value, V)))])
            .expect("apply_unsynced")
    });
}

/// Readers on 4 threads see one of the two values written alternately by `write`.
fn readers_see_only_whole_values(write: impl Fn(&KvStore, &str)) {
    let (_parent, store) = new_store();
    let store = Arc::new(store);
    let a = "A".repeat(256 * 1024);
    let b = "B".repeat(300 * 1024);
    store.put("key", &a, V).expect("put");
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let store = Arc::clone(&store);
            let stop = Arc::clone(&stop);
            let (a, b) = (a.clone(), b.clone());
            std::thread::spawn(move || {
                let mut reads = 0;
                while !stop.load(Ordering::Relaxed) || reads == 0 {
                    let v = stored(&store, "key").expect("present");
                    assert!(v == a || v == b, "torn read of {} bytes", v.len());
                    reads += 1;
                }
            })
        })
        .collect();
    for i in 0..40 {
        let v = if i % 2 == 0 { &b } else { &a };
        write(&store, v);
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().expect("reader panicked");
    }
}

#[test]
fn unsynced_changes_are_visible_at_once_and_kept_after_sync() {
    let (parent, store) = new_store();
    store.put("gone", "g", V).expect("put");
    store
        .put("shrinks", "a much longer old value", V)
        .expect("put");
    let long = "Q".repeat(300);
    store.put(&long, "an older, longer value", V).expect("put");
    store
        .apply_unsynced(&[
            ("shrinks", Some(("short", V))),
            ("new", Some(("n", V))),
            ("gone", None),
            ("twice", Some(("first", V))),
            ("twice", Some(("second", V))),
            (long.as_str(), Some(("long", V))),
        ])
        .expect("apply_unsynced");
    // Visible before any sync: readers see the new values.
    assert_eq!(stored(&store, "new").as_deref(), Some("n"));
    assert_eq!(store.get("gone").unwrap(), None);
    assert_eq!(stored(&store, "twice").as_deref(), Some("second"));
    // Rewritten in place: no leftover bytes of the longer old value.
    assert_eq!(stored(&store, "shrinks").as_deref(), Some("short"));
    assert_eq!(stored(&store, &long).as_deref(), Some("long"));
    store.sync().expect("sync");
    drop(store);
    let reopened = KvStore::open(&parent.path().join("store")).expect("reopen");
    let all = values(&reopened);
    assert_eq!(all.get("new").map(String::as_str), Some("n"));
    assert_eq!(all.get(&long).map(String::as_str), Some("long"));
    assert!(!all.contains_key("gone"));
    assert_contained(parent.path(), &reopened);
}

/// Each key's length and first bytes, and its value's (for messages).
fn summary(map: &BTreeMap<String, String>) -> Vec<String> {
    let short = |s: &str| format!("{} bytes {:?}", s.len(), &s[..s.len().min(8)]);
    map.iter()
        .map(|(k, v)| format!("{} = {}", short(k), short(v)))
        .collect()
}

/// Writes refused by a full disk leave each key as it was: the whole old value, or
/// absent (a key's file rewritten in place used to keep the part of the new value that
/// fitted, over the old one: neither value, and readable as soon as the key's lock
/// went). Once space returns, the same writes succeed.
#[test]
fn writes_refused_by_a_full_disk_leave_every_key_as_it_was() {
    let Some(disk) = crate::test_disk::SmallDisk::mount("512k", "kvstore: full disk") else {
        return;
    };
    let store = KvStore::open(&disk.path().join("kv")).expect("open");
    let hashed = "h".repeat(300);
    let old: Vec<Change<'_>> = vec![
        ("k", Some(("old", V))),
        (&hashed, Some(("old", V))),
        ("empty", Some(("", V))),
    ];
    store
        .apply_unsynced(&old)
        .expect("apply before the disk fills");
    let before = values(&store);

    let new = "n".repeat(64 * 1024);
    for round in 0..3 {
        let ballast = disk.fill();
        for key in ["k", hashed.as_str(), "empty", "absent"] {
            assert!(
                store.apply_unsynced(&[(key, Some((&new, V)))]).is_err(),
                "{key}: the disk is full"
            );
            assert!(store.put(key, &new, V).is_err(), "{key}: the disk is full");
        }
        let now = values(&store);
        assert!(
            now == before,
            "round {round}: {:?}, not {:?}",
            summary(&now),
            summary(&before)
        );
        assert_eq!(stored(&store, "absent"), None);

        fs::remove_file(ballast).expect("free the space");
        let changes: Vec<Change<'_>> = vec![("k", Some((&new, V))), (&hashed, Some((&new, V)))];
        store
            .apply_unsynced(&changes)
            .expect("apply once space returns");
        assert_eq!(stored(&store, "k").as_deref(), Some(new.as_str()));
        assert_eq!(stored(&store, &hashed).as_deref(), Some(new.as_str()));
        store.apply_unsynced(&old).expect("and back");
        assert_eq!(values(&store), before);
    }
    let names = names_in(store.dir());
    assert!(
        names.iter().all(|n| !is_temp_name(n)),
        "temp files left: {names:?}"
    );
}

/// A key's version is stored with its value and read back, by every write path, for
/// plain and hashed names alike, and survives a reopen.
#[test]
fn versions_are_stored_with_their_values() {
    let (_parent, store) = new_store();
    let long = "L".repeat(300);
    let v = |epoch, seq| TxId { epoch, seq };
    store.put("a", "1", v(1, 1)).expect("put");
    store
        .apply_batch(&[("b", Some(("2", v(1, 2))))])
        .expect("apply_batch");
    store
        .apply_unsynced(&[("c", Some(("3", v(2, 7)))), (&long, Some(("4", v(9, 99))))])
        .expect("apply_unsynced");
    store
        .apply_unsynced(&[("a", Some(("1b", v(3, 1))))])
        .expect("rewrite in place");
    let reopened = KvStore::open(store.dir()).expect("reopen");
    for s in [&store, &reopened] {
        let held = |key: &str| s.get(key).expect("get").expect("present");
        assert_eq!(
            held("a"),
            Versioned {
                value: "1b".into(),
                version: v(3, 1)
            }
        );
        assert_eq!(held("b").version, v(1, 2));
        assert_eq!(held("c").version, v(2, 7));
        assert_eq!(
            held(&long),
            Versioned {
                value: "4".into(),
                version: v(9, 99)
            }
        );
        assert_eq!(s.dump().expect("dump")[&long].version, v(9, 99));
    }
}

/// A file whose version header is missing or malformed is corruption, not a value.
#[test]
fn a_bad_version_header_is_corruption() {
    let (_parent, store) = new_store();
    let path = store.dir().join(file_name_for("k"));
    for content in ["no header", "1.x\nvalue", "\nvalue", "1.2"] {
        fs::write(&path, content).expect("write");
        assert!(
            matches!(store.get("k"), Err(Error::Corrupt { .. })),
            "{content:?} read as a value"
        );
    }
}

/// A store written before versions (`k` and `h` files holding the value alone) is
/// upgraded when it is opened: every key keeps its value, with version 0.0, under its
/// new name, and the old files are gone.
#[test]
fn a_store_written_before_versions_is_upgraded_on_open() {
    let parent = tempfile::tempdir().expect("tempdir");
    let dir = parent.path().join("store");
    fs::create_dir_all(&dir).expect("mkdir");
    let long = "L".repeat(300);
    let old_files = [
        (old_file_name_for("plain"), b"value".to_vec()),
        (old_file_name_for(""), b"".to_vec()),
        (
            old_file_name_for(&long),
            format!("{}\n{long}long value", long.len()).into_bytes(),
        ),
    ];
    for (name, content) in &old_files {
        fs::write(dir.join(name), content).expect("write an old file");
    }
    let store = KvStore::open(&dir).expect("open upgrades");
    let expected: BTreeMap<String, Versioned> =
        [("plain", "value"), ("", ""), (&long, "long value")]
            .into_iter()
            .map(|(k, v)| {
                let held = Versioned {
                    value: v.into(),
                    version: UPGRADED,
                };
                (k.to_string(), held)
            })
            .collect();
    assert_eq!(store.dump().expect("dump"), expected);
    let mut names = names_in(&dir);
    names.sort();
    let mut wanted: Vec<String> = expected.keys().map(|k| file_name_for(k)).collect();
    wanted.sort();
    assert_eq!(names, wanted, "only the new files are left");
}

/// A crash in the middle of the upgrade leaves some keys under both names: the next
/// open keeps the new file (which may already have been written again since) and
/// removes the old.
#[test]
fn an_interrupted_upgrade_keeps_the_new_file() {
    let (_parent, store) = new_store();
    let dir = store.dir().to_path_buf();
    store
        .put("k", "newer", TxId { epoch: 5, seq: 1 })
        .expect("put");
    drop(store);
    fs::write(dir.join(old_file_name_for("k")), b"older").expect("an old leftover");
    fs::write(dir.join(old_file_name_for("j")), b"only old").expect("not upgraded yet");
    let store = KvStore::open(&dir).expect("reopen");
    assert_eq!(
        store.get("k").expect("get"),
        Some(Versioned {
            value: "newer".into(),
            version: TxId { epoch: 5, seq: 1 }
        })
    );
    assert_eq!(stored(&store, "j").as_deref(), Some("only old"));
    assert!(!dir.join(old_file_name_for("k")).exists());
    assert!(!dir.join(old_file_name_for("j")).exists());
}
