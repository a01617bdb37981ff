//! Frames as a leader (or anyone) sends them on a `TPCMsg` stream, decoded and handed
//! to a follower's core in order: effects or a refusal, never a panic. The input is a
//! sequence of length-prefixed frames (one byte of length, one of stream id).
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tpc::proto::rpc;
use tpc::tpc::follower_core::FollowerCore;
use tpc::tpc::message::messages_of_frame;

fuzz_target!(|data: &[u8]| {
    let mut core = FollowerCore::new(data.first().is_some_and(|b| b & 1 == 1));
    let store = |_: &str| None;
    let mut rest = data.get(1..).unwrap_or_default();
    while rest.len() >= 2 {
        let (len, stream) = (rest[0] as usize, u64::from(rest[1] % 4));
        let end = (2 + len).min(rest.len());
        let bytes = &rest[2..end];
        rest = &rest[end..];
        let Ok(frame) = rpc::LeaderMsg::decode(bytes) else {
            continue;
        };
        if let Ok(messages) = messages_of_frame(frame) {
            for message in messages {
                let _ = core.handle(stream, message, &store);
            }
        }
    }
});
