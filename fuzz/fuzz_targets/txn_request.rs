//! A client's `Txn` request: a valid transaction naming only valid keys, or refused
//! with a reason. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tpc::proto::api;
use tpc::txn::TxnSpec;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = api::TxnRequest::decode(data) else {
        return;
    };
    if let Ok(txn) = TxnSpec::from_request(request) {
        for key in txn.keys() {
            assert!(tpc::limits::check_key(key).is_ok());
        }
    }
});
