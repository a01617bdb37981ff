//! Key file names: any key's name is one safe path component, and any name found in
//! a store directory names a key stored under exactly that name, or nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tpc::kvstore::{file_name_for, key_for_file_name};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(key) = key_for_file_name(text) {
        assert_eq!(file_name_for(&key), text);
    }
    if !text.is_empty() {
        let name = file_name_for(text);
        assert!(!name.contains('/') && !name.contains('\0') && name != "." && name != "..");
        assert!(name.len() <= 255);
    }
});
