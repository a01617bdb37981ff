//! Property tests (proptest) for what decodes outside bytes (issue 15, DESIGN §10): for
//! any input, a decoder answers (a value or an error) and never panics, and what we
//! encode decodes back to itself. They run in `cargo test` with proptest's default
//! 256 cases each; `PROPTEST_CASES=100000 cargo test --release --test properties`
//! runs them longer.

use proptest::prelude::*;
use prost::Message;
use tpc::client::shell;
use tpc::journal::{decode_line, encode_line};
use tpc::kvstore::{file_name_for, key_for_file_name};
use tpc::proto::{api, rpc};
use tpc::tpc::message::{messages_of_frame, replies_of_frame};
use tpc::tpc::records::{FollowerRecord, LeaderRecord};
use tpc::txn::TxnSpec;

/// Any text, control characters, `%`, spaces and non-ASCII included.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,40}",
        "[ %\\n\\r\\t\\x00-\\x1f\\x7f_a-z0-9é中😀]{0,40}",
        Just(String::new()),
    ]
}

fn record() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(text(), 1..8)
}

proptest! {
    /// A journal record is one line, and reads back as itself.
    #[test]
    fn a_journal_record_reads_back_as_itself(record in record()) {
        let line = encode_line(&record);
        let body = line.strip_suffix('\n');
        prop_assert!(body.is_some_and(|b| !b.contains('\n')), "{line:?}");
        prop_assert_eq!(decode_line(body.unwrap_or_default()), Ok(record));
    }

    /// Any line, damaged or made up, decodes or is refused: never a panic.
    #[test]
    fn any_journal_line_decodes_or_is_refused(line in ".{0,200}") {
        let _ = decode_line(&line);
    }

    /// A damaged line is refused, or is another record whose encoding it is: a flipped
    /// character never passes for the original record.
    #[test]
    fn a_damaged_journal_line_is_not_the_original(
        record in record(),
        at in any::<prop::sample::Index>(),
        c in any::<char>(),
    ) {
        let line = encode_line(&record).trim_end_matches('\n').to_string();
        let mut chars: Vec<char> = line.chars().collect();
        let i = at.index(chars.len());
        prop_assume!(chars[i] != c);
        chars[i] = c;
        let damaged: String = chars.into_iter().collect();
        if let Ok(decoded) = decode_line(&damaged) {
            prop_assert_ne!(decoded, record);
        }
    }

    /// What the leader and a follower replay from their journals: any fields give a
    /// record or an error.
    #[test]
    fn any_journal_fields_give_a_record_or_an_error(fields in record()) {
        let _ = LeaderRecord::try_from(fields.clone());
        let _ = FollowerRecord::try_from(fields);
    }

    /// A key's file name is one path component, not `.` or `..`, at most 255 bytes,
    /// and (unless hashed, for long keys) names the key back.
    #[test]
    fn a_key_file_name_is_one_safe_path_component(key in ".{1,300}") {
        let name = file_name_for(&key);
        prop_assert!(!name.contains('/') && !name.contains('\0'), "{name:?}");
        prop_assert!(name != "." && name != "..");
        prop_assert!(name.len() <= 255, "{} bytes", name.len());
        if let Some(back) = key_for_file_name(&name) {
            prop_assert_eq!(back, key);
        }
    }

    /// Any file name found in a store directory names a key or nothing; a key it
    /// names is stored under exactly that name.
    #[test]
    fn any_file_name_names_a_key_or_nothing(name in ".{0,260}") {
        if let Some(key) = key_for_file_name(&name) {
            prop_assert_eq!(file_name_for(&key), name);
        }
    }

    /// Any bytes sent as a leader's stream frame decode to messages or an error.
    #[test]
    fn any_leader_frame_decodes_or_is_refused(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(frame) = rpc::LeaderMsg::decode(bytes.as_slice()) {
            let _ = messages_of_frame(frame);
        }
    }

    /// Any bytes sent as a follower's reply frame decode to replies or errors.
    #[test]
    fn any_follower_frame_decodes_or_is_refused(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(frame) = rpc::Response::decode(bytes.as_slice()) {
            let _ = replies_of_frame(frame);
        }
    }

    /// Any `Txn` request is a valid transaction or refused with a reason; a valid one
    /// names only valid keys.
    #[test]
    fn any_txn_request_is_valid_or_refused(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(request) = api::TxnRequest::decode(bytes.as_slice()) {
            if let Ok(txn) = TxnSpec::from_request(request) {
                for key in txn.keys() {
                    prop_assert!(tpc::limits::check_key(key).is_ok(), "{key:?}");
                }
            }
        }
    }

    /// The shell parses any line into a command or an error.
    #[test]
    fn the_shell_parses_any_line(line in ".{0,200}") {
        let _ = shell::parse(&line);
    }

    /// ... also lines made of its own words.
    #[test]
    fn the_shell_parses_any_line_of_its_words(words in prop::collection::vec(
        prop_oneof![
            Just("txn"), Just("if"), Just("then"), Just("else"), Just("and"), Just("put"),
            Just("get"), Just("del"), Just("="), Just("!="), Just("exists"), Just("missing"),
            Just("version"), Just(","), Just("\""), Just("'"), Just("k"), Just("1.2"),
            Just("cas"), Just("mput"), Just("mdel"), Just("-v"), Just("\\"),
        ],
        0..16,
    )) {
        let _ = shell::parse(&words.join(" "));
    }
}

/// One of a few values, so that generated messages meet each other (the same keys,
/// transaction ids, epochs and clusters) and reach deep into the cores' rules.
fn one_of(values: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::sample::select(values).prop_map(str::to_string)
}

fn view_info() -> impl Strategy<Value = Option<rpc::ViewInfo>> {
    prop::option::of(
        (
            0..4u64,
            0..4u32,
            prop::collection::vec(one_of(&["m1", "m2", "m3", ""]), 0..4),
            prop::collection::vec(one_of(&["f1", "f2", "f3"]), 0..4),
            any::<bool>(),
        )
            .prop_map(
                |(epoch, replication, member_ids, addresses, next)| rpc::ViewInfo {
                    epoch,
                    replication,
                    member_ids,
                    addresses,
                    next,
                    ..Default::default()
                },
            ),
    )
}

/// A leader's message with fields from small domains (or anything).
fn leader_msg() -> impl Strategy<Value = rpc::LeaderMsg> {
    let head = (
        0..3i32,
        0..5i32,
        one_of(&["a", "b", "", "a/../b"]),
        text(),
        one_of(&[
            "1.1",
            "1.2",
            "2.1",
            "2.2",
            "0.1",
            "1.0",
            "",
            "x",
            "1.99999999999999999999",
        ]),
        0..3i32,
        0..4u64,
    );
    let tail = (
        one_of(&["", "1.0", "1.1", "2.0", "9.9"]),
        one_of(&["c", "", "d"]),
        any::<bool>(),
        prop::collection::vec(one_of(&["f1", "f2", "f3", ""]), 0..4),
        0..4u32,
        any::<bool>(),
        0..4u64,
        one_of(&["", "m1", "m2", "not a member id"]),
        view_info(),
    );
    (head, tail).prop_map(
        |(
            (kind, action, key, value, txid, op, epoch),
            (
                low_water,
                cluster_id,
                cluster_has_data,
                participants,
                protocol,
                failed,
                view_epoch,
                member_id,
                view,
            ),
        )| rpc::LeaderMsg {
            r#type: kind,
            action,
            key,
            value,
            txid,
            op,
            epoch,
            low_water,
            cluster_id,
            cluster_has_data,
            participants,
            protocol,
            failed,
            view_epoch,
            member_id,
            view,
            ..Default::default()
        },
    )
}

proptest! {
    /// Whatever a leader (or anyone) sends, in any order on any stream, the follower's
    /// core answers with effects, never a panic.
    #[test]
    fn a_follower_core_takes_any_sequence_of_leader_messages(
        frames in prop::collection::vec((0..3u64, leader_msg(), prop::collection::vec(leader_msg(), 0..3)), 1..24),
        has_data in any::<bool>(),
    ) {
        let mut core = tpc::tpc::follower_core::FollowerCore::new(has_data);
        let store = |_: &str| None;
        for (stream, mut frame, batch) in frames {
            frame.batch = batch;
            if let Ok(messages) = messages_of_frame(frame) {
                for message in messages {
                    let _ = core.handle(stream, message, &store);
                }
            }
        }
    }
}

/// A follower's reply with fields from small domains.
fn follower_reply() -> impl Strategy<Value = rpc::Response> {
    (
        0..5i32,
        one_of(&["1.1", "1.2", "2.1", "0.2", "2.0", "", "x"]),
        one_of(&["c", "", "d"]),
        0..4u32,
        any::<bool>(),
        prop::option::of(
            (
                prop::collection::vec(one_of(&["2.1", "1.1", "x"]), 0..3),
                prop::collection::vec(one_of(&["2.1", "1.1", "x"]), 0..3),
                one_of(&["", "1.0", "2.0", "x"]),
                one_of(&["", "m1", "m2"]),
            )
                .prop_map(|(committed, aborted, low_water, member_id)| {
                    rpc::InquiryReport {
                        committed,
                        aborted,
                        low_water,
                        member_id,
                        ..Default::default()
                    }
                }),
        ),
    )
        .prop_map(
            |(action, txid, cluster_id, protocol, failed, report)| rpc::Response {
                action,
                txid,
                cluster_id,
                protocol,
                failed,
                report,
                ..Default::default()
            },
        )
}

/// What reaches the leader's core: a reply frame on a follower's stream, a stream that
/// ends, a client write, time passing.
#[derive(Clone, Debug)]
enum ToLeader {
    Replies(usize, u64, Box<rpc::Response>, Vec<rpc::Response>),
    Ended(usize, u64),
    Write(String),
    Time(u64),
}

fn to_leader() -> impl Strategy<Value = ToLeader> {
    prop_oneof![
        4 => (0..3usize, 0..6u64, follower_reply(), prop::collection::vec(follower_reply(), 0..3))
            .prop_map(|(f, s, r, b)| ToLeader::Replies(f, s, Box::new(r), b)),
        1 => (0..3usize, 0..6u64).prop_map(|(f, s)| ToLeader::Ended(f, s)),
        2 => one_of(&["a", "b"]).prop_map(ToLeader::Write),
        1 => (0..500u64).prop_map(ToLeader::Time),
    ]
}

proptest! {
    /// Whatever the followers (or anyone on their streams) answer, the leader's core
    /// carries on: never a panic.
    #[test]
    fn a_leader_core_takes_any_sequence_of_follower_replies(events in prop::collection::vec(to_leader(), 1..40)) {
        use std::time::Duration;
        use tpc::tpc::leader_core::LeaderCore;
        let followers = vec!["f1".to_string(), "f2".to_string(), "f3".to_string()];
        let start = LeaderCore::recover(Vec::new(), followers, 3, Duration::from_millis(100), || "c".to_string());
        let mut core = start.expect("a first start").core;
        let mut now = Duration::ZERO;
        let mut write = 0;
        for event in events {
            match event {
                ToLeader::Replies(f, stream, mut frame, batch) => {
                    frame.batch = batch;
                    core.replies(f, stream, replies_of_frame(*frame), now);
                }
                ToLeader::Ended(f, stream) => core.stream_ended(f, stream, "ended".into(), now),
                ToLeader::Write(key) => {
                    write += 1;
                    core.submit(write, TxnSpec::write(key, Some("v".into())), now);
                }
                ToLeader::Time(ms) => {
                    now += Duration::from_millis(ms);
                    core.tick(now);
                }
            }
            let _ = core.take_effects(now);
        }
    }
}
