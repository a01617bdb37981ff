//! Multi-key transactions (DESIGN §6): etcd's `Txn` over tpc's keys. *If every compare
//! holds, apply the success ops, else the failure ops*, atomically on every replica of
//! every key it touches.
//!
//! This module is the transaction itself, with no I/O: its domain types, parsed and
//! validated once from the client's request ([`TxnSpec::from_request`], every rule of
//! §6 with an `INVALID_ARGUMENT` message naming it), and its evaluation against a
//! snapshot of its keys ([`TxnSpec::evaluate`]), which each participant runs while it
//! holds every key locked. How the transaction is made atomic is 2PC's business
//! (`tpc/mod.rs`); a `Put` or `Delete` is a transaction of one write and no compare.
//!
//! The rules of evaluation, one row each in the tests below:
//!
//! - VALUE compares the key's value: an absent key is not EQUAL to any value (and is
//!   NOT_EQUAL to every one); VERSION compares its version the same way; EXISTS takes
//!   `true` or `false` and compares whether the key is present.
//! - GET reads the value from before the transaction, even if the branch that runs also
//!   writes that key; the results list one entry per GET of the branch that ran, in order.
//! - A transaction writes the keys of its branch's PUTs and DELETEs, in order (each key
//!   at most once in a branch).

use std::collections::BTreeSet;

use crate::kvstore::Versioned;
use crate::limits;
use crate::proto::api;
use crate::txid::TxId;

/// At most this many ops in each branch.
pub const MAX_OPS: usize = 128;
/// At most this many compares.
pub const MAX_COMPARES: usize = 128;
/// At most this many bytes of keys and values in one request.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// What a compare looks at, and the operand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The key's value.
    Value(String),
    /// The key's version.
    Version(TxId),
    /// Whether the key exists.
    Exists(bool),
}

/// One condition of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    /// The key it looks at.
    pub key: String,
    /// What it compares, with what.
    pub target: Target,
    /// EQUAL (true) or NOT_EQUAL (false).
    pub equal: bool,
}

/// One operation of a branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOp {
    /// Read the key (from before the transaction).
    Get(String),
    /// Set the key to the value.
    Put(String, String),
    /// Remove the key.
    Delete(String),
}

impl TxnOp {
    /// The key it is about.
    pub fn key(&self) -> &str {
        match self {
            TxnOp::Get(key) | TxnOp::Put(key, _) | TxnOp::Delete(key) => key,
        }
    }
}

/// A validated transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnSpec {
    /// Every one must hold for the success branch to run.
    pub compares: Vec<Compare>,
    /// Run if every compare holds.
    pub success: Vec<TxnOp>,
    /// Run otherwise.
    pub failure: Vec<TxnOp>,
}

/// A key's new state: `Some(value)` put, `None` deleted.
pub type Write<'a> = (&'a str, Option<&'a str>);

/// What a transaction found, evaluated on one snapshot of its keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evaluation {
    /// Every compare held: the success branch runs.
    pub succeeded: bool,
    /// One per GET of the branch that runs, in order: the key's state before.
    pub results: Vec<Option<Versioned>>,
}

impl TxnSpec {
    /// Parses and validates a client's request; the error names the rule broken (for
    /// `INVALID_ARGUMENT`).
    pub fn from_request(request: api::TxnRequest) -> Result<TxnSpec, String> {
        if request.compare.len() > MAX_COMPARES {
            return Err(format!(
                "{} compares; the limit is {MAX_COMPARES}",
                request.compare.len()
            ));
        }
        let mut bytes = 0usize;
        let mut compares = Vec::with_capacity(request.compare.len());
        for (i, c) in request.compare.into_iter().enumerate() {
            let what = || format!("compare {}", i + 1);
            limits::check_key(&c.key).map_err(|e| format!("{}: {e}", what()))?;
            bytes += c.key.len() + c.value.len();
            let target = match api::compare::Target::try_from(c.target) {
                Ok(api::compare::Target::Value) => {
                    limits::check_value(&c.value).map_err(|e| format!("{}: {e}", what()))?;
                    Target::Value(c.value)
                }
                Ok(api::compare::Target::Version) => {
                    Target::Version(c.version.parse().map_err(|_| {
                        format!("{}: version {:?} is not <epoch>.<seq>", what(), c.version)
                    })?)
                }
                Ok(api::compare::Target::Exists) => match c.value.as_str() {
                    "true" => Target::Exists(true),
                    "false" => Target::Exists(false),
                    other => {
                        return Err(format!(
                            "{}: EXISTS takes the value \"true\" or \"false\", not {other:?}",
                            what()
                        ))
                    }
                },
                Err(_) => return Err(format!("{}: unknown target {}", what(), c.target)),
            };
            let equal = match api::compare::Op::try_from(c.op) {
                Ok(api::compare::Op::Equal) => true,
                Ok(api::compare::Op::NotEqual) => false,
                Err(_) => return Err(format!("{}: unknown op {}", what(), c.op)),
            };
            compares.push(Compare {
                key: c.key,
                target,
                equal,
            });
        }
        let success = branch("success", request.success, &mut bytes)?;
        let failure = branch("failure", request.failure, &mut bytes)?;
        if bytes > MAX_REQUEST_BYTES {
            return Err(format!(
                "the request holds {bytes} bytes of keys and values; the limit is 4 MiB \
                 ({MAX_REQUEST_BYTES} bytes)"
            ));
        }
        Ok(TxnSpec {
            compares,
            success,
            failure,
        })
    }

    /// A one-op write: a `Put` (`Some(value)`) or `Delete` (`None`) of `key`.
    pub fn write(key: String, value: Option<String>) -> TxnSpec {
        let op = match value {
            Some(value) => TxnOp::Put(key, value),
            None => TxnOp::Delete(key),
        };
        TxnSpec {
            success: vec![op],
            ..TxnSpec::default()
        }
    }

    /// The key and new value of a plain write (one PUT or DELETE, no compare, no other
    /// op): what the classic PREPARE's fields can carry.
    pub fn single_write(&self) -> Option<Write<'_>> {
        match (
            self.compares.as_slice(),
            self.success.as_slice(),
            self.failure.as_slice(),
        ) {
            ([], [TxnOp::Put(key, value)], []) => Some((key, Some(value))),
            ([], [TxnOp::Delete(key)], []) => Some((key, None)),
            _ => None,
        }
    }

    /// Every key it touches (compares, reads and writes of both branches), once each,
    /// sorted: the keys it locks.
    pub fn keys(&self) -> BTreeSet<&str> {
        self.compares
            .iter()
            .map(|c| c.key.as_str())
            .chain(self.success.iter().chain(&self.failure).map(TxnOp::key))
            .collect()
    }

    /// True if neither branch writes: it can be answered from one consistent read.
    pub fn is_read_only(&self) -> bool {
        self.success
            .iter()
            .chain(&self.failure)
            .all(|op| matches!(op, TxnOp::Get(_)))
    }

    /// The branch that runs when the compares hold (`true`) or not.
    pub fn branch(&self, succeeded: bool) -> &[TxnOp] {
        if succeeded {
            &self.success
        } else {
            &self.failure
        }
    }

    /// The writes of the branch that runs, in order.
    pub fn writes(&self, succeeded: bool) -> Vec<Write<'_>> {
        self.branch(succeeded)
            .iter()
            .filter_map(|op| match op {
                TxnOp::Get(_) => None,
                TxnOp::Put(key, value) => Some((key.as_str(), Some(value.as_str()))),
                TxnOp::Delete(key) => Some((key.as_str(), None)),
            })
            .collect()
    }

    /// Evaluates the compares and the GETs of the branch that runs on a snapshot of the
    /// keys (`state` gives each key's value and version, `None` if absent).
    pub fn evaluate(&self, state: impl Fn(&str) -> Option<Versioned>) -> Evaluation {
        let succeeded = self
            .compares
            .iter()
            .all(|c| c.holds(state(&c.key).as_ref()));
        let results = self
            .branch(succeeded)
            .iter()
            .filter_map(|op| match op {
                TxnOp::Get(key) => Some(state(key)),
                TxnOp::Put(..) | TxnOp::Delete(_) => None,
            })
            .collect();
        Evaluation { succeeded, results }
    }
}

impl TxnSpec {
    /// The client's answer: which branch ran, what its GETs found (`results`, in order)
    /// and the version it gave what it wrote (`None`: it wrote nothing).
    pub fn response(
        &self,
        succeeded: bool,
        results: Vec<Option<Versioned>>,
        version: Option<TxId>,
    ) -> api::TxnResponse {
        let gets = self.branch(succeeded).iter().filter_map(|op| match op {
            TxnOp::Get(key) => Some(key),
            TxnOp::Put(..) | TxnOp::Delete(_) => None,
        });
        api::TxnResponse {
            succeeded,
            results: gets
                .zip(results)
                .map(|(key, held)| match held {
                    Some(held) => api::TxnResult {
                        key: key.clone(),
                        found: true,
                        value: held.value,
                        version: held.version.to_string(),
                    },
                    None => api::TxnResult {
                        key: key.clone(),
                        ..Default::default()
                    },
                })
                .collect(),
            version: version.map(|v| v.to_string()).unwrap_or_default(),
        }
    }
}

impl From<&TxnSpec> for api::TxnRequest {
    fn from(spec: &TxnSpec) -> api::TxnRequest {
        let ops = |ops: &[TxnOp]| {
            ops.iter()
                .map(|op| {
                    let (kind, key, value) = match op {
                        TxnOp::Get(key) => (api::txn_op::Kind::Get, key, ""),
                        TxnOp::Put(key, value) => (api::txn_op::Kind::Put, key, value.as_str()),
                        TxnOp::Delete(key) => (api::txn_op::Kind::Delete, key, ""),
                    };
                    api::TxnOp {
                        kind: kind as i32,
                        key: key.clone(),
                        value: value.to_string(),
                    }
                })
                .collect()
        };
        api::TxnRequest {
            compare: spec
                .compares
                .iter()
                .map(|c| {
                    let (target, value, version) = match &c.target {
                        Target::Value(v) => (api::compare::Target::Value, v.clone(), String::new()),
                        Target::Version(v) => {
                            (api::compare::Target::Version, String::new(), v.to_string())
                        }
                        Target::Exists(e) => {
                            (api::compare::Target::Exists, e.to_string(), String::new())
                        }
                    };
                    let op = if c.equal {
                        api::compare::Op::Equal
                    } else {
                        api::compare::Op::NotEqual
                    };
                    api::Compare {
                        key: c.key.clone(),
                        target: target as i32,
                        op: op as i32,
                        value,
                        version,
                    }
                })
                .collect(),
            success: ops(&spec.success),
            failure: ops(&spec.failure),
        }
    }
}

impl Compare {
    /// Whether the compare holds for a key in `state` (`None`: absent).
    pub fn holds(&self, state: Option<&Versioned>) -> bool {
        let same = match (&self.target, state) {
            (Target::Exists(exists), state) => *exists == state.is_some(),
            (_, None) => false,
            (Target::Value(value), Some(held)) => held.value == *value,
            (Target::Version(version), Some(held)) => held.version == *version,
        };
        same == self.equal
    }
}

/// Parses one branch's ops, counting their keys and values into `bytes`.
fn branch(name: &str, ops: Vec<api::TxnOp>, bytes: &mut usize) -> Result<Vec<TxnOp>, String> {
    if ops.len() > MAX_OPS {
        return Err(format!(
            "{} ops in the {name} branch; the limit is {MAX_OPS}",
            ops.len()
        ));
    }
    let mut written = BTreeSet::new();
    let mut parsed = Vec::with_capacity(ops.len());
    for (i, op) in ops.into_iter().enumerate() {
        let what = || format!("{name} op {}", i + 1);
        limits::check_key(&op.key).map_err(|e| format!("{}: {e}", what()))?;
        *bytes += op.key.len() + op.value.len();
        let kind = api::txn_op::Kind::try_from(op.kind)
            .map_err(|_| format!("{}: unknown kind {}", what(), op.kind))?;
        if kind != api::txn_op::Kind::Get && !written.insert(op.key.clone()) {
            return Err(format!(
                "{}: the {name} branch writes {} twice; a key may be written at most once \
                 in a branch",
                what(),
                limits::quote_key(&op.key)
            ));
        }
        parsed.push(match kind {
            api::txn_op::Kind::Get => TxnOp::Get(op.key),
            api::txn_op::Kind::Put => {
                limits::check_value(&op.value).map_err(|e| format!("{}: {e}", what()))?;
                TxnOp::Put(op.key, op.value)
            }
            api::txn_op::Kind::Delete => TxnOp::Delete(op.key),
        });
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::compare::{Op as CmpOp, Target as CmpTarget};
    use api::txn_op::Kind;

    fn held(value: &str, epoch: u64, seq: u64) -> Versioned {
        Versioned {
            value: value.into(),
            version: TxId { epoch, seq },
        }
    }
    fn cmp(key: &str, target: Target, equal: bool) -> Compare {
        Compare {
            key: key.into(),
            target,
            equal,
        }
    }

    /// The compare rules of §6, one row each: (compare, the key's state, holds?).
    #[test]
    fn compares_follow_section_6() {
        let present = Some(held("1", 3, 4));
        let rows: &[(Compare, Option<Versioned>, bool, &str)] = &[
            (
                cmp("k", Target::Value("1".into()), true),
                present.clone(),
                true,
                "VALUE = its value",
            ),
            (
                cmp("k", Target::Value("2".into()), true),
                present.clone(),
                false,
                "VALUE = another value",
            ),
            (
                cmp("k", Target::Value("2".into()), false),
                present.clone(),
                true,
                "VALUE != another value",
            ),
            (
                cmp("k", Target::Value(String::new()), true),
                None,
                false,
                "VALUE = on an absent key is false",
            ),
            (
                cmp("k", Target::Value(String::new()), false),
                None,
                true,
                "VALUE != on an absent key is true",
            ),
            (
                cmp("k", Target::Version(TxId { epoch: 3, seq: 4 }), true),
                present.clone(),
                true,
                "VERSION = its version",
            ),
            (
                cmp("k", Target::Version(TxId { epoch: 3, seq: 5 }), true),
                present.clone(),
                false,
                "VERSION = another",
            ),
            (
                cmp("k", Target::Version(TxId { epoch: 3, seq: 4 }), true),
                None,
                false,
                "an absent key has no version",
            ),
            (
                cmp("k", Target::Version(TxId { epoch: 3, seq: 4 }), false),
                None,
                true,
                "...so NOT_EQUAL holds",
            ),
            (
                cmp("k", Target::Exists(true), true),
                present.clone(),
                true,
                "EXISTS true, present",
            ),
            (
                cmp("k", Target::Exists(true), true),
                None,
                false,
                "EXISTS true, absent",
            ),
            (
                cmp("k", Target::Exists(false), true),
                None,
                true,
                "EXISTS false, absent",
            ),
            (
                cmp("k", Target::Exists(false), false),
                present,
                true,
                "NOT_EQUAL EXISTS false, present",
            ),
        ];
        for (compare, state, expected, why) in rows {
            assert_eq!(compare.holds(state.as_ref()), *expected, "{why}");
        }
    }

    #[test]
    fn the_branch_that_runs_is_chosen_by_every_compare_and_gets_read_the_state_before() {
        let spec = TxnSpec {
            compares: vec![
                cmp("a", Target::Value("1".into()), true),
                cmp("b", Target::Exists(true), true),
            ],
            success: vec![
                TxnOp::Get("a".into()),
                TxnOp::Put("a".into(), "2".into()),
                TxnOp::Get("a".into()),
                TxnOp::Delete("b".into()),
            ],
            failure: vec![TxnOp::Get("b".into()), TxnOp::Put("c".into(), "x".into())],
        };
        let both = |key: &str| match key {
            "a" => Some(held("1", 1, 1)),
            "b" => Some(held("", 1, 2)),
            _ => None,
        };
        let ran = spec.evaluate(both);
        assert!(ran.succeeded);
        assert_eq!(
            ran.results,
            vec![Some(held("1", 1, 1)), Some(held("1", 1, 1))],
            "both GETs see the value from before, though the branch writes it"
        );
        assert_eq!(spec.writes(true), vec![("a", Some("2")), ("b", None)]);
        let only_a = |key: &str| (key == "a").then(|| held("1", 1, 1));
        let ran = spec.evaluate(only_a);
        assert!(!ran.succeeded, "b does not exist");
        assert_eq!(ran.results, vec![None], "the failure branch's GET of b");
        assert_eq!(spec.writes(false), vec![("c", Some("x"))]);
        assert_eq!(
            spec.keys().into_iter().collect::<Vec<_>>(),
            vec!["a", "b", "c"]
        );
        assert!(!spec.is_read_only());
    }

    #[test]
    fn a_transaction_round_trips_through_its_request() {
        let spec = TxnSpec {
            compares: vec![
                cmp("a", Target::Value("1".into()), true),
                cmp("b", Target::Version(TxId { epoch: 2, seq: 3 }), false),
                cmp("c", Target::Exists(false), true),
            ],
            success: vec![TxnOp::Get("a".into()), TxnOp::Put("a".into(), "2".into())],
            failure: vec![TxnOp::Delete("b".into())],
        };
        assert_eq!(TxnSpec::from_request((&spec).into()), Ok(spec.clone()));
        assert_eq!(spec.single_write(), None);
        let put = TxnSpec::write("k".into(), Some("v".into()));
        assert_eq!(put.single_write(), Some(("k", Some("v"))));
        assert_eq!(
            TxnSpec::write("k".into(), None).single_write(),
            Some(("k", None))
        );
    }

    #[test]
    fn an_empty_transaction_succeeds_and_does_nothing() {
        let spec = TxnSpec::from_request(api::TxnRequest::default()).expect("valid");
        let ran = spec.evaluate(|_| None);
        assert!(ran.succeeded && ran.results.is_empty());
        assert!(spec.writes(true).is_empty() && spec.is_read_only());
    }

    fn op(kind: Kind, key: &str, value: &str) -> api::TxnOp {
        api::TxnOp {
            kind: kind as i32,
            key: key.into(),
            value: value.into(),
        }
    }
    fn compare(key: &str, target: CmpTarget, value: &str, version: &str) -> api::Compare {
        api::Compare {
            key: key.into(),
            target: target as i32,
            op: CmpOp::Equal as i32,
            value: value.into(),
            version: version.into(),
        }
    }

    /// The request rules of §6, one row each: the request, and a word the error must
    /// contain (`None`: valid).
    #[test]
    fn requests_are_validated_by_the_rules_of_section_6() {
        let put = |key: &str| op(Kind::Put, key, "v");
        let big = "v".repeat(3 * 1024 * 1024);
        let rows: Vec<(api::TxnRequest, Option<&str>, &str)> = vec![
            (
                api::TxnRequest {
                    success: (0..MAX_OPS).map(|i| put(&i.to_string())).collect(),
                    ..Default::default()
                },
                None,
                "128 ops in a branch",
            ),
            (
                api::TxnRequest {
                    failure: (0..=MAX_OPS).map(|i| put(&i.to_string())).collect(),
                    ..Default::default()
                },
                Some("limit is 128"),
                "129 ops in the failure branch",
            ),
            (
                api::TxnRequest {
                    compare: (0..=MAX_COMPARES)
                        .map(|i| compare(&i.to_string(), CmpTarget::Exists, "true", ""))
                        .collect(),
                    ..Default::default()
                },
                Some("129 compares"),
                "129 compares",
            ),
            (
                api::TxnRequest {
                    success: vec![put("k"), op(Kind::Delete, "k", "")],
                    ..Default::default()
                },
                Some("at most once"),
                "a key written twice in the success branch",
            ),
            (
                api::TxnRequest {
                    failure: vec![put("k"), put("k")],
                    ..Default::default()
                },
                Some("at most once"),
                "checked on the failure branch too",
            ),
            (
                api::TxnRequest {
                    success: vec![op(Kind::Get, "k", ""), put("k"), op(Kind::Get, "k", "")],
                    failure: vec![put("k")],
                    ..Default::default()
                },
                None,
                "reads of a written key, and the same key in each branch",
            ),
            (
                api::TxnRequest {
                    success: vec![put("")],
                    ..Default::default()
                },
                Some("key is empty"),
                "an empty key",
            ),
            (
                api::TxnRequest {
                    compare: vec![compare("k", CmpTarget::Exists, "yes", "")],
                    ..Default::default()
                },
                Some("\"true\" or \"false\""),
                "EXISTS with another value",
            ),
            (
                api::TxnRequest {
                    compare: vec![compare("k", CmpTarget::Version, "", "seven")],
                    ..Default::default()
                },
                Some("<epoch>.<seq>"),
                "a VERSION that is not a version",
            ),
            (
                api::TxnRequest {
                    success: vec![op(Kind::Put, "a", &big), op(Kind::Put, "b", &big)],
                    ..Default::default()
                },
                Some("4 MiB"),
                "6 MiB of values",
            ),
            (
                api::TxnRequest {
                    success: vec![op(Kind::Put, "a", &format!("{big}x"))],
                    ..Default::default()
                },
                Some("3 MiB"),
                "a value over the limit",
            ),
            (
                api::TxnRequest {
                    success: vec![api::TxnOp {
                        kind: 9,
                        key: "k".into(),
                        value: String::new(),
                    }],
                    ..Default::default()
                },
                Some("unknown kind"),
                "an op of no kind",
            ),
        ];
        for (request, error, why) in rows {
            match (TxnSpec::from_request(request), error) {
                (Ok(_), None) => {}
                (Err(e), Some(word)) if e.contains(word) => {}
                (got, _) => panic!("{why}: expected {error:?}, got {got:?}"),
            }
        }
    }
}
