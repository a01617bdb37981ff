//! Building a `Txn` (DESIGN §6) for [`super::Client::txn`]: compares, then the ops of
//! the branch that runs when they all hold, then those of the one that runs otherwise.
//!
//! ```no_run
//! # async fn example(client: &mut tpc::client::Client) -> Result<(), tonic::Status> {
//! use tpc::client::Txn;
//! // Move a lock from one owner to the next, if it is still the first one's.
//! let answer = client
//!     .txn(
//!         Txn::new()
//!             .if_value("lock", "alice")
//!             .then_put("lock", "bob")
//!             .then_get("queue")
//!             .else_get("lock"),
//!     )
//!     .await?;
//! if !answer.succeeded {
//!     println!("held by {:?}", answer.results[0].value);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The leader checks every rule (limits, a key written twice in a branch...) and
//! answers `INVALID_ARGUMENT` naming it; the builder does not check anything.

use crate::proto::api;
use api::compare::{Op as CmpOp, Target};
use api::txn_op::Kind;

/// A transaction being built.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Txn {
    request: api::TxnRequest,
}

impl Txn {
    /// A transaction with no compare and no op (it succeeds and does nothing).
    pub fn new() -> Txn {
        Txn::default()
    }

    fn compare(mut self, key: &str, target: Target, op: CmpOp, value: &str) -> Txn {
        let (value, version) = match target {
            Target::Version => (String::new(), value.to_string()),
            Target::Value | Target::Exists => (value.to_string(), String::new()),
        };
        self.request.compare.push(api::Compare {
            key: key.to_string(),
            target: target as i32,
            op: op as i32,
            value,
            version,
        });
        self
    }

    /// Holds if `key` is present with value `value`.
    pub fn if_value(self, key: &str, value: &str) -> Txn {
        self.compare(key, Target::Value, CmpOp::Equal, value)
    }

    /// Holds if `key` is absent or has another value than `value`.
    pub fn if_value_not(self, key: &str, value: &str) -> Txn {
        self.compare(key, Target::Value, CmpOp::NotEqual, value)
    }

    /// Holds if `key` is present at version `version` (`<epoch>.<seq>`).
    pub fn if_version(self, key: &str, version: &str) -> Txn {
        self.compare(key, Target::Version, CmpOp::Equal, version)
    }

    /// Holds if `key` is absent or at another version than `version`.
    pub fn if_version_not(self, key: &str, version: &str) -> Txn {
        self.compare(key, Target::Version, CmpOp::NotEqual, version)
    }

    /// Holds if `key` is present.
    pub fn if_exists(self, key: &str) -> Txn {
        self.compare(key, Target::Exists, CmpOp::Equal, "true")
    }

    /// Holds if `key` is absent.
    pub fn if_missing(self, key: &str) -> Txn {
        self.compare(key, Target::Exists, CmpOp::Equal, "false")
    }

    /// Adds a raw compare (as the wire has it).
    pub fn if_compare(mut self, compare: api::Compare) -> Txn {
        self.request.compare.push(compare);
        self
    }

    fn op(kind: Kind, key: &str, value: &str) -> api::TxnOp {
        api::TxnOp {
            kind: kind as i32,
            key: key.to_string(),
            value: value.to_string(),
        }
    }

    /// If the compares hold: read `key` (its state before the transaction).
    pub fn then_get(mut self, key: &str) -> Txn {
        self.request.success.push(Txn::op(Kind::Get, key, ""));
        self
    }

    /// If the compares hold: set `key` to `value`.
    pub fn then_put(mut self, key: &str, value: &str) -> Txn {
        self.request.success.push(Txn::op(Kind::Put, key, value));
        self
    }

    /// If the compares hold: delete `key`.
    pub fn then_delete(mut self, key: &str) -> Txn {
        self.request.success.push(Txn::op(Kind::Delete, key, ""));
        self
    }

    /// If some compare does not hold: read `key`.
    pub fn else_get(mut self, key: &str) -> Txn {
        self.request.failure.push(Txn::op(Kind::Get, key, ""));
        self
    }

    /// If some compare does not hold: set `key` to `value`.
    pub fn else_put(mut self, key: &str, value: &str) -> Txn {
        self.request.failure.push(Txn::op(Kind::Put, key, value));
        self
    }

    /// If some compare does not hold: delete `key`.
    pub fn else_delete(mut self, key: &str) -> Txn {
        self.request.failure.push(Txn::op(Kind::Delete, key, ""));
        self
    }

    /// The request, as the wire has it.
    pub fn into_request(self) -> api::TxnRequest {
        self.request
    }
}

impl From<Txn> for api::TxnRequest {
    fn from(txn: Txn) -> api::TxnRequest {
        txn.request
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builder_fills_the_wire_request() {
        let request = Txn::new()
            .if_value("a", "1")
            .if_version_not("b", "2.3")
            .if_missing("c")
            .then_put("a", "2")
            .then_delete("b")
            .else_get("a")
            .into_request();
        assert_eq!(request.compare.len(), 3);
        assert_eq!(request.compare[0].value, "1");
        assert_eq!(request.compare[1].target, Target::Version as i32);
        assert_eq!(request.compare[1].op, CmpOp::NotEqual as i32);
        assert_eq!(request.compare[1].version, "2.3");
        assert_eq!(
            (request.compare[2].target, request.compare[2].value.as_str()),
            (Target::Exists as i32, "false")
        );
        assert_eq!(
            request.success.iter().map(|op| op.kind).collect::<Vec<_>>(),
            vec![Kind::Put as i32, Kind::Delete as i32]
        );
        assert_eq!(request.failure[0].key, "a");
    }
}
