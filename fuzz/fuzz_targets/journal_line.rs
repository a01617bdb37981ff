//! A journal line, as a restart reads it back: decoded, then parsed as the leader's
//! and the follower's records. Never a panic; a record decoded reads back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tpc::journal::{decode_line, encode_line};
use tpc::tpc::records::{FollowerRecord, LeaderRecord};

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(record) = decode_line(line) {
        let again = encode_line(&record);
        assert_eq!(decode_line(again.trim_end_matches('\n')), Ok(record.clone()));
        let _ = LeaderRecord::try_from(record.clone());
        let _ = FollowerRecord::try_from(record);
    }
});
