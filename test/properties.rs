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
