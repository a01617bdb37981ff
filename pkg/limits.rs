//! Input limits (DESIGN §1.6), checked in one place by every node.

/// The longest key, in bytes (64 KiB). Keys are 1 byte or longer.
pub const MAX_KEY_BYTES: usize = 64 * 1024;
/// The longest value, in bytes (3 MiB). The empty value is a value.
pub const MAX_VALUE_BYTES: usize = 3 * 1024 * 1024;
/// gRPC message size limit on every server and client: well above the largest valid
/// request, so an oversized key or value reaches validation and gets an error naming the
/// limit instead of a transport error.
pub const MAX_GRPC_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// What a tpc server reads of one request before refusing it unread. A request between
/// [`MAX_GRPC_MESSAGE_BYTES`] and this is read and refused with `INVALID_ARGUMENT` naming
/// the 16 MiB limit ([`crate::wire`]); a longer one gets tonic's `OUT_OF_RANGE` from its
/// length prefix alone, so no client makes a server buffer more than this per call.
pub const MAX_GRPC_REQUEST_READ_BYTES: usize = 4 * MAX_GRPC_MESSAGE_BYTES;

/// Checks a key against the limits; the error names the limit.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("key is empty; keys are 1 byte to 64 KiB".to_string());
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(format!(
            "key is {} bytes; the limit is 64 KiB ({MAX_KEY_BYTES} bytes)",
            key.len()
        ));
    }
    Ok(())
}

/// Checks a value against the limits; the error names the limit.
pub fn check_value(value: &str) -> Result<(), String> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(format!(
            "value is {} bytes; the limit is 3 MiB ({MAX_VALUE_BYTES} bytes)",
            value.len()
        ));
    }
    Ok(())
}

/// A key quoted for a message, shortened if long: error messages travel in gRPC
/// headers, which must stay small.
pub fn quote_key(key: &str) -> String {
    const SHOWN: usize = 64;
    if key.len() <= SHOWN {
        return format!("{key:?}");
    }
    let mut end = SHOWN;
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}… ({} bytes)", &key[..end], key.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_inclusive_and_errors_name_them() {
        assert!(check_key("k").is_ok());
        assert!(check_key(&"k".repeat(MAX_KEY_BYTES)).is_ok());
        assert!(check_key("").unwrap_err().contains("empty"));
        assert!(check_key(&"k".repeat(MAX_KEY_BYTES + 1))
            .unwrap_err()
            .contains("64 KiB"));
        assert!(check_value("").is_ok());
        assert!(check_value(&"v".repeat(MAX_VALUE_BYTES)).is_ok());
        assert!(check_value(&"v".repeat(MAX_VALUE_BYTES + 1))
            .unwrap_err()
            .contains("3 MiB"));
    }

    #[test]
    fn long_keys_are_shortened_in_messages() {
        assert_eq!(quote_key("a\nb"), "\"a\\nb\"");
        let long = "é".repeat(1000);
        let quoted = quote_key(&long);
        assert!(quoted.len() < 150, "{quoted}");
        assert!(quoted.ends_with("(2000 bytes)"), "{quoted}");
    }
}
