//! A line typed into `tpc client`'s shell: a command or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(line) = std::str::from_utf8(data) {
        let _ = tpc::client::shell::parse(line);
    }
});
