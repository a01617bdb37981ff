//! The `cas` workload's hot key: a decimal counter every client increments by
//! compare-and-swap.
//!
//! A client keeps what its last answer said of the key ([`HotKey`]) and sends one `Txn`
//! per attempt ([`swap`]): `if version = V then put N+1 else get`. The version, not the
//! value, is compared: two swaps from the same value are told apart even if a delete
//! and a re-creation came in between, and the compare is the same few bytes whatever
//! the counter's size. A refused swap's GET reads the key's current counter and
//! version under the transaction's lock, so the retry needs no separate read
//! ([`answered`]). An absent key counts as 0, and its swap is `if missing then put 1`.

use tonic::Status;

use super::worker::within;
use super::Config;
use crate::client::{self, Client, Txn};
use crate::proto::api;

/// The key `cas` increments. Like every bench key it starts with `bench-`, and it is
/// not one of the key space's `bench-<i>`.
pub const HOT_KEY: &str = "bench-cas";

/// What a client knows of the hot key: its last answer's counter and version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HotKey {
    /// Absent: the counter is 0.
    Missing,
    /// Present, holding `counter` since the write of version `version`.
    At { counter: u64, version: String },
}

impl HotKey {
    /// The counter's value (0 if absent).
    pub fn counter(&self) -> u64 {
        match self {
            HotKey::Missing => 0,
            HotKey::At { counter, .. } => *counter,
        }
    }
}

/// What one compare-and-swap did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Swapped {
    /// The counter went up by one; the key is now as said.
    Yes(HotKey),
    /// Refused: the key had changed since the client's last answer; it is now as said.
    Conflict(HotKey),
}

/// The transaction that increments the counter from `seen`, and reads the key instead if
/// it changed since.
pub fn swap(seen: &HotKey) -> Txn {
    let txn = match seen {
        HotKey::Missing => Txn::new().if_missing(HOT_KEY),
        HotKey::At { version, .. } => Txn::new().if_version(HOT_KEY, version),
    };
    let next = (seen.counter() + 1).to_string();
    txn.then_put(HOT_KEY, &next).else_get(HOT_KEY)
}

/// What the answer to [`swap`]`(seen)` says. An error if the answer is not one a
/// correct leader gives, or the key holds something other than a counter (someone
/// else wrote it): the request counts as failed, and the next one, comparing a
/// version the key no longer has, reads it again.
pub fn answered(seen: &HotKey, answer: api::TxnResponse) -> Result<Swapped, Status> {
    if answer.succeeded {
        if answer.version.is_empty() {
            return Err(Status::internal(
                "a compare-and-swap that wrote the hot key answered no version",
            ));
        }
        return Ok(Swapped::Yes(HotKey::At {
            counter: seen.counter() + 1,
            version: answer.version,
        }));
    }
    let Some(read) = answer.results.into_iter().next() else {
        return Err(Status::internal(
            "a refused compare-and-swap answered no read of the hot key",
        ));
    };
    if !read.found {
        return Ok(Swapped::Conflict(HotKey::Missing));
    }
    let counter = parse_counter(&read.value).map_err(Status::failed_precondition)?;
    Ok(Swapped::Conflict(HotKey::At {
        counter,
        version: read.version,
    }))
}

fn parse_counter(value: &str) -> Result<u64, String> {
    value.parse().map_err(|_| {
        format!(
            "the hot key {HOT_KEY} holds {:?}, not a counter (a decimal number)",
            truncated(value)
        )
    })
}

fn truncated(value: &str) -> &str {
    let mut end = value.len().min(40);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

/// Reads the hot key before the run: where the counter starts. A key that holds
/// something else than a counter is a setup error (the bench does not overwrite it).
pub async fn read_hot_key(config: &Config, client: &Client) -> Result<HotKey, String> {
    let mut client = client.clone();
    match within(config.timeout, client.get_versioned(HOT_KEY)).await {
        Ok((value, version)) => {
            let counter = parse_counter(&value)
                .map_err(|e| format!("{e}; delete it to start the counter from 0"))?;
            Ok(HotKey::At { counter, version })
        }
        Err(status) if status.code() == tonic::Code::NotFound => Ok(HotKey::Missing),
        Err(status) => Err(format!(
            "reading the hot key: get {HOT_KEY} on {}: {}",
            config.leader,
            client::describe(&status)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::compare::{Op, Target};
    use api::txn_op::Kind;

    fn at(counter: u64, version: &str) -> HotKey {
        HotKey::At {
            counter,
            version: version.into(),
        }
    }

    fn read(found: bool, value: &str, version: &str) -> api::TxnResult {
        api::TxnResult {
            key: HOT_KEY.into(),
            found,
            value: value.into(),
            version: version.into(),
        }
    }

    #[test]
    fn a_swap_compares_the_version_seen_and_puts_the_next_counter_else_reads() {
        let request = swap(&at(41, "3.17")).into_request();
        assert_eq!(request.compare.len(), 1);
        let compare = &request.compare[0];
        assert_eq!(compare.key, HOT_KEY);
        assert_eq!(
            (compare.target, compare.op),
            (Target::Version as i32, Op::Equal as i32)
        );
        assert_eq!(compare.version, "3.17");
        assert_eq!(request.success.len(), 1);
        assert_eq!(request.success[0].kind, Kind::Put as i32);
        assert_eq!(
            (
                request.success[0].key.as_str(),
                request.success[0].value.as_str()
            ),
            (HOT_KEY, "42")
        );
        assert_eq!(request.failure.len(), 1);
        assert_eq!(request.failure[0].kind, Kind::Get as i32);
        assert_eq!(request.failure[0].key, HOT_KEY);
    }

    #[test]
    fn a_swap_of_an_absent_key_requires_it_absent_and_puts_1() {
        let request = swap(&HotKey::Missing).into_request();
        let compare = &request.compare[0];
        assert_eq!(compare.target, Target::Exists as i32);
        assert_eq!(compare.value, "false");
        assert_eq!(request.success[0].value, "1");
        assert_eq!(request.failure[0].kind, Kind::Get as i32);
    }

    #[test]
    fn a_swap_that_held_knows_the_new_counter_and_version_without_reading() {
        let answer = api::TxnResponse {
            succeeded: true,
            results: vec![],
            version: "3.20".into(),
        };
        assert_eq!(
            answered(&at(41, "3.17"), answer.clone()).ok(),
            Some(Swapped::Yes(at(42, "3.20")))
        );
        assert_eq!(
            answered(&HotKey::Missing, answer).ok(),
            Some(Swapped::Yes(at(1, "3.20")))
        );
    }

    #[test]
    fn a_refused_swap_takes_the_counter_and_version_its_get_read() {
        let refused = |result| api::TxnResponse {
            succeeded: false,
            results: vec![result],
            version: String::new(),
        };
        assert_eq!(
            answered(&at(41, "3.17"), refused(read(true, "57", "3.30"))).ok(),
            Some(Swapped::Conflict(at(57, "3.30")))
        );
        assert_eq!(
            answered(&at(41, "3.17"), refused(read(false, "", ""))).ok(),
            Some(Swapped::Conflict(HotKey::Missing))
        );
        let status = answered(&at(41, "3.17"), refused(read(true, "hello", "3.31")))
            .expect_err("not a counter");
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert!(
            status.message().contains("\"hello\", not a counter"),
            "{status:?}"
        );
    }

    #[test]
    fn answers_no_correct_leader_gives_are_errors() {
        let no_version = api::TxnResponse {
            succeeded: true,
            results: vec![],
            version: String::new(),
        };
        let no_read = api::TxnResponse {
            succeeded: false,
            results: vec![],
            version: String::new(),
        };
        for answer in [no_version, no_read] {
            let status = answered(&at(1, "1.1"), answer).expect_err("malformed");
            assert_eq!(status.code(), tonic::Code::Internal);
        }
    }
}
