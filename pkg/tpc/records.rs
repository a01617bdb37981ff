//! Journal records of the leader and the follower, and their encoding as journal fields.
//!
//! Every record is a list of string fields whose first field names the kind. The
//! journal escapes the fields, so keys and values may hold any characters.
//!
//! Follower journal:
//! - `meta CLUSTER_ID MAX_EPOCH LOW_WATER` (empty fields when unknown)
//! - `prepare TXID KEY put VALUE PARTICIPANT...` or `prepare TXID KEY del PARTICIPANT...`
//!   for a plain write (TXID empty: legacy; no participants from classic tooling, nor in
//!   records of revisions before protocol 2)
//! - `txn TXID N (KEY value|version|exists OPERAND eq|ne)*N M (get|put|del KEY VALUE)*M
//!   L (get|put|del KEY VALUE)*L PARTICIPANT...` for any other transaction (DESIGN §6):
//!   its compares, its success and its failure branch, each counted
//! - `decide TXID commit|abort`, or `decide TXID commit failed` when the failure branch
//!   applies
//! - `view VIEW_EPOCH REPLICATION (MEMBER_ID ADDRESS)...`: the view the leader handed it
//!   (DESIGN §7); `next-view ...` likewise, the next view while the members change (§8)
//!
//! Leader journal (it holds no record of a commit that every participant voted for,
//! DESIGN §1.4):
//! - `meta CLUSTER_ID EPOCH HAS_DATA` (HAS_DATA is `0` or `1`), at every start, followed
//!   by `view VIEW_EPOCH REPLICATION (MEMBER_ID ADDRESS)...` once the cluster has a view
//!   (DESIGN §7, `membership.rs`), and while the members change by `next` and the next
//!   view's `VIEW_EPOCH REPLICATION (MEMBER_ID ADDRESS)...`, and by `down ADDRESS...`
//!   when members were removed for being unreachable (§8)
//! - `decide TXID commit|abort FOLLOWER...`: an ABORT, or the decision of a transaction
//!   with a classic participant, durable before it is sent or answered; the followers
//!   that still need it
//! - `done TXID` once every one of them ACKed
//! - `begin TXID ...`, written by revisions before protocol 2, is read and ignored

use std::path::{Path, PathBuf};

use super::membership::{ViewRecord, Views};
use super::message::{Outcome, TxId, TxnId};
use crate::dirlock::DirLock;
use crate::journal::{Journal, Record};
use crate::placement::MemberId;
use crate::txn::{Compare, Target, TxnOp, TxnSpec};
use crate::Error;

/// Opens a node's journal at `path`: creates its directory if needed, takes the
/// journal's lock (`<journal>.lock`, so two processes can't share it), replays it and
/// parses every record (a record that is not one of `R` stops the start, naming it).
pub fn open_journal<R>(path: &Path) -> crate::Result<(DirLock, Journal, Vec<R>)>
where
    R: TryFrom<Record, Error = String>,
{
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| Error::Io {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    let mut lock_name = path.file_name().unwrap_or_default().to_os_string();
    lock_name.push(".lock");
    let lock = DirLock::acquire(&path.with_file_name(lock_name))?;
    let (journal, raw) = Journal::open(path)?;
    let records = raw
        .into_iter()
        .enumerate()
        .map(|(index, r)| {
            R::try_from(r).map_err(|reason| Error::BadRecord {
                path: PathBuf::from(path),
                index: index + 1,
                reason,
            })
        })
        .collect::<crate::Result<Vec<_>>>()?;
    Ok((lock, journal, records))
}

/// A record in a follower's journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FollowerRecord {
    /// Cluster membership and the protocol marks that let a checkpoint drop decided ids.
    Meta {
        cluster_id: Option<String>,
        max_epoch: u64,
        low_water: Option<TxId>,
    },
    /// A COMMIT vote: the transaction holds its keys' locks until its decision;
    /// `failed`: its compares did not hold here (what the vote said).
    Prepare {
        txid: TxnId,
        txn: TxnSpec,
        participants: Vec<String>,
        /// The view the PREPARE ran in (0: it named none); written after the
        /// participants as `view EPOCH` (no address is `view`).
        view_epoch: u64,
        failed: bool,
    },
    /// A decision (or a marker for a decided transaction this follower never prepared);
    /// `failed`: a COMMIT of the failure branch.
    Decide {
        txid: TxnId,
        outcome: Outcome,
        failed: bool,
    },
    /// The view the leader handed this follower (DESIGN §7).
    View(ViewRecord),
    /// The next view the leader handed this follower while the members change (§8).
    NextView(ViewRecord),
}

/// A record in the leader's journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaderRecord {
    /// Written at every start (with the new epoch), when the cluster gets data and when
    /// its view changes.
    Meta {
        cluster_id: String,
        epoch: u64,
        has_data: bool,
        /// The view in force and, during a change, the next one (`membership.rs`).
        views: Option<Views>,
    },
    /// Written by revisions before protocol 2 (a transaction about to send its first
    /// PREPARE); read and ignored: recovery asks the followers instead.
    Begin { txid: TxId },
    /// A decision that must survive a crash, and the followers it must still reach;
    /// `failed`: a COMMIT of the failure branch (written `decide TXID commit failed
    /// FOLLOWER...`; no follower address is `failed`).
    Decide {
        txid: TxId,
        outcome: Outcome,
        failed: bool,
        followers: Vec<String>,
    },
    /// Every follower ACKed the decision: the transaction is finished.
    Done { txid: TxId },
}

fn opt_field(value: &Option<String>) -> String {
    value.clone().unwrap_or_default()
}

fn parse_u64(field: &str, what: &str) -> Result<u64, String> {
    field.parse().map_err(|_| format!("bad {what} {field:?}"))
}

fn parse_txid(field: &str) -> Result<TxId, String> {
    field.parse()
}

fn strings(fields: &[&str]) -> Vec<String> {
    fields.iter().map(|f| f.to_string()).collect()
}

/// Marks, in a prepare record after its participants, the view it ran in.
const VIEW: &str = "view";

/// A prepare record's trailing fields: its participants, and the view it ran in (0:
/// none said). No address is `view`.
fn named(fields: &[&str]) -> Result<(Vec<String>, u64), String> {
    match fields.iter().position(|f| *f == VIEW) {
        Some(at) => match &fields[at + 1..] {
            [epoch] => Ok((strings(&fields[..at]), parse_u64(epoch, "view epoch")?)),
            _ => Err("a prepare record's view marker without one epoch".into()),
        },
        None => Ok((strings(fields), 0)),
    }
}

/// Appends a transaction's compares and branches as counted fields.
fn txn_fields(txn: &TxnSpec, fields: &mut Vec<String>) {
    fields.push(txn.compares.len().to_string());
    for c in &txn.compares {
        let (target, operand) = match &c.target {
            Target::Value(value) => ("value", value.clone()),
            Target::Version(version) => ("version", version.to_string()),
            Target::Exists(exists) => ("exists", exists.to_string()),
        };
        let op = if c.equal { "eq" } else { "ne" };
        fields.extend([c.key.clone(), target.into(), operand, op.into()]);
    }
    for branch in [&txn.success, &txn.failure] {
        fields.push(branch.len().to_string());
        for op in branch {
            let (kind, key, value) = match op {
                TxnOp::Get(key) => ("get", key, ""),
                TxnOp::Put(key, value) => ("put", key, value.as_str()),
                TxnOp::Delete(key) => ("del", key, ""),
            };
            fields.extend([kind.into(), key.clone(), value.into()]);
        }
    }
}

/// Reads what [`txn_fields`] wrote; returns the transaction and the fields after it.
fn parse_txn<'a>(fields: &'a [&'a str]) -> Result<(TxnSpec, &'a [&'a str]), String> {
    let mut rest = fields;
    let mut count = || -> Result<usize, String> {
        let (first, tail) = rest
            .split_first()
            .ok_or("a transaction record ends early")?;
        rest = tail;
        parse_u64(first, "count").map(|n| n as usize)
    };
    let compares = count()?;
    let mut txn = TxnSpec::default();
    for _ in 0..compares {
        let [key, target, operand, op, tail @ ..] = rest else {
            return Err("a transaction record ends in a compare".into());
        };
        let target = match *target {
            "value" => Target::Value(operand.to_string()),
            "version" => Target::Version(parse_txid(operand)?),
            "exists" => Target::Exists(match *operand {
                "true" => true,
                "false" => false,
                other => return Err(format!("bad EXISTS operand {other:?}")),
            }),
            other => return Err(format!("bad compare target {other:?}")),
        };
        let equal = match *op {
            "eq" => true,
            "ne" => false,
            other => return Err(format!("bad compare op {other:?}")),
        };
        txn.compares.push(Compare {
            key: key.to_string(),
            target,
            equal,
        });
        rest = tail;
    }
    for branch in [&mut txn.success, &mut txn.failure] {
        let (first, tail) = rest
            .split_first()
            .ok_or("a transaction record ends early")?;
        rest = tail;
        for _ in 0..parse_u64(first, "count")? {
            let [kind, key, value, tail @ ..] = rest else {
                return Err("a transaction record ends in an op".into());
            };
            branch.push(match *kind {
                "get" => TxnOp::Get(key.to_string()),
                "put" => TxnOp::Put(key.to_string(), value.to_string()),
                "del" => TxnOp::Delete(key.to_string()),
                other => return Err(format!("bad op kind {other:?}")),
            });
            rest = tail;
        }
    }
    Ok((txn, rest))
}

/// Appends a view as fields: `EPOCH REPLICATION (MEMBER_ID ADDRESS)...`.
fn view_fields(view: &ViewRecord, fields: &mut Vec<String>) {
    fields.extend([view.epoch.to_string(), view.replication.to_string()]);
    for (id, address) in &view.members {
        fields.extend([id.0.clone(), address.clone()]);
    }
}

/// Reads a meta record's views: `view` and what [`view_fields`] wrote, then optionally
/// `next` and the next view's fields (none: no view).
fn parse_views(fields: &[&str]) -> Result<Option<Views>, String> {
    let (fields, down) = match fields.iter().position(|f| *f == "down") {
        Some(at) => (&fields[..at], &fields[at + 1..]),
        None => (fields, &[][..]),
    };
    let down: Vec<String> = down.iter().map(|a| a.to_string()).collect();
    let (current, next) = match fields.iter().position(|f| *f == "next") {
        Some(at) => (&fields[..at], Some(&fields[at + 1..])),
        None => (fields, None),
    };
    let Some(current) = parse_view(current)? else {
        return match next {
            None => Ok(None),
            Some(_) => Err("a meta record has a next view and no view".into()),
        };
    };
    let next = match next {
        None => None,
        Some(fields) => Some(parse_view_fields(fields)?),
    };
    Ok(Some(Views {
        current,
        next,
        down,
    }))
}

/// Reads `view` and what [`view_fields`] wrote (none: no view).
fn parse_view(fields: &[&str]) -> Result<Option<ViewRecord>, String> {
    match fields {
        [] => Ok(None),
        ["view", rest @ ..] => parse_view_fields(rest).map(Some),
        _ => Err("a meta record's view ends early".into()),
    }
}

/// Reads what [`view_fields`] wrote.
fn parse_view_fields(fields: &[&str]) -> Result<ViewRecord, String> {
    match fields {
        [epoch, replication, members @ ..] if members.len() % 2 == 0 => Ok(ViewRecord {
            epoch: parse_u64(epoch, "view epoch")?,
            replication: parse_u64(replication, "replication")? as usize,
            members: members
                .chunks(2)
                .map(|pair| (MemberId(pair[0].to_string()), pair[1].to_string()))
                .collect(),
        }),
        _ => Err("a view ends early".into()),
    }
}

fn parse_outcome(field: &str) -> Result<Outcome, String> {
    Outcome::parse(field).ok_or_else(|| format!("bad outcome {field:?}"))
}

impl From<&FollowerRecord> for Record {
    fn from(record: &FollowerRecord) -> Record {
        match record {
            FollowerRecord::Meta {
                cluster_id,
                max_epoch,
                low_water,
            } => vec![
                "meta".into(),
                opt_field(cluster_id),
                max_epoch.to_string(),
                low_water.map(|t| t.to_string()).unwrap_or_default(),
            ],
            FollowerRecord::Prepare {
                txid,
                txn,
                participants,
                view_epoch,
                failed,
            } => {
                let mut fields = match txn.single_write() {
                    Some((key, value)) => {
                        let mut fields = vec!["prepare".into(), txid.to_string(), key.into()];
                        match value {
                            Some(value) => fields.extend(["put".into(), value.into()]),
                            None => fields.push("del".into()),
                        }
                        fields
                    }
                    None => {
                        let found = if *failed { "failed" } else { "held" };
                        let mut fields = vec!["txn".into(), txid.to_string(), found.into()];
                        txn_fields(txn, &mut fields);
                        fields
                    }
                };
                fields.extend(participants.iter().cloned());
                if *view_epoch != 0 {
                    fields.extend([VIEW.into(), view_epoch.to_string()]);
                }
                fields
            }
            FollowerRecord::Decide {
                txid,
                outcome,
                failed,
            } => {
                let mut fields = vec!["decide".into(), txid.to_string(), outcome.as_str().into()];
                if *failed {
                    fields.push("failed".into());
                }
                fields
            }
            FollowerRecord::View(view) => {
                let mut fields = vec!["view".into()];
                view_fields(view, &mut fields);
                fields
            }
            FollowerRecord::NextView(view) => {
                let mut fields = vec!["next-view".into()];
                view_fields(view, &mut fields);
                fields
            }
        }
    }
}

impl TryFrom<Record> for FollowerRecord {
    type Error = String;
    fn try_from(record: Record) -> Result<Self, String> {
        let fields: Vec<&str> = record.iter().map(String::as_str).collect();
        match fields.as_slice() {
            ["meta", cluster, epoch, low_water] => Ok(FollowerRecord::Meta {
                cluster_id: (!cluster.is_empty()).then(|| cluster.to_string()),
                max_epoch: parse_u64(epoch, "epoch")?,
                low_water: if low_water.is_empty() {
                    None
                } else {
                    Some(parse_txid(low_water)?)
                },
            }),
            ["prepare", txid, key, "put", value, rest @ ..] => {
                let (participants, view_epoch) = named(rest)?;
                Ok(FollowerRecord::Prepare {
                    txid: TxnId::parse(txid),
                    txn: TxnSpec::write(key.to_string(), Some(value.to_string())),
                    participants,
                    view_epoch,
                    failed: false,
                })
            }
            ["prepare", txid, key, "del", rest @ ..] => {
                let (participants, view_epoch) = named(rest)?;
                Ok(FollowerRecord::Prepare {
                    txid: TxnId::parse(txid),
                    txn: TxnSpec::write(key.to_string(), None),
                    participants,
                    view_epoch,
                    failed: false,
                })
            }
            ["txn", txid, found, rest @ ..] => {
                let failed = match *found {
                    "held" => false,
                    "failed" => true,
                    other => return Err(format!("bad compare result {other:?}")),
                };
                let (txn, rest) = parse_txn(rest)?;
                let (participants, view_epoch) = named(rest)?;
                Ok(FollowerRecord::Prepare {
                    txid: TxnId::parse(txid),
                    txn,
                    participants,
                    view_epoch,
                    failed,
                })
            }
            ["decide", txid, outcome] => Ok(FollowerRecord::Decide {
                txid: TxnId::parse(txid),
                outcome: parse_outcome(outcome)?,
                failed: false,
            }),
            ["decide", txid, outcome, "failed"] => Ok(FollowerRecord::Decide {
                txid: TxnId::parse(txid),
                outcome: parse_outcome(outcome)?,
                failed: true,
            }),
            ["view", ..] => match parse_view(&fields)? {
                Some(view) => Ok(FollowerRecord::View(view)),
                None => Err("an empty view record".into()),
            },
            ["next-view", view @ ..] => Ok(FollowerRecord::NextView(parse_view_fields(view)?)),
            _ => Err(format!("not a follower record: {:?}", fields.first())),
        }
    }
}

impl From<&LeaderRecord> for Record {
    fn from(record: &LeaderRecord) -> Record {
        match record {
            LeaderRecord::Meta {
                cluster_id,
                epoch,
                has_data,
                views,
            } => {
                let mut fields = vec![
                    "meta".into(),
                    cluster_id.clone(),
                    epoch.to_string(),
                    if *has_data { "1" } else { "0" }.into(),
                ];
                if let Some(views) = views {
                    fields.push("view".into());
                    view_fields(&views.current, &mut fields);
                    if let Some(next) = &views.next {
                        fields.push("next".into());
                        view_fields(next, &mut fields);
                    }
                    if !views.down.is_empty() {
                        fields.push("down".into());
                        fields.extend(views.down.iter().cloned());
                    }
                }
                fields
            }
            LeaderRecord::Begin { txid } => vec!["begin".into(), txid.to_string()],
            LeaderRecord::Decide {
                txid,
                outcome,
                failed,
                followers,
            } => {
                let mut fields = vec!["decide".into(), txid.to_string(), outcome.as_str().into()];
                if *failed {
                    fields.push("failed".into());
                }
                fields.extend(followers.iter().cloned());
                fields
            }
            LeaderRecord::Done { txid } => vec!["done".into(), txid.to_string()],
        }
    }
}

impl TryFrom<Record> for LeaderRecord {
    type Error = String;
    fn try_from(record: Record) -> Result<Self, String> {
        let fields: Vec<&str> = record.iter().map(String::as_str).collect();
        match fields.as_slice() {
            ["meta", cluster, epoch, has_data, view @ ..] => Ok(LeaderRecord::Meta {
                cluster_id: cluster.to_string(),
                epoch: parse_u64(epoch, "epoch")?,
                has_data: *has_data == "1",
                views: parse_views(view)?,
            }),
            ["begin", txid, ..] => Ok(LeaderRecord::Begin {
                txid: parse_txid(txid)?,
            }),
            ["decide", txid, outcome, rest @ ..] => {
                let (failed, followers) = match rest {
                    ["failed", followers @ ..] => (true, followers),
                    followers => (false, followers),
                };
                Ok(LeaderRecord::Decide {
                    txid: parse_txid(txid)?,
                    outcome: parse_outcome(outcome)?,
                    failed,
                    followers: strings(followers),
                })
            }
            ["done", txid] => Ok(LeaderRecord::Done {
                txid: parse_txid(txid)?,
            }),
            _ => Err(format!("not a leader record: {:?}", fields.first())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follower_records_round_trip() {
        let records = [
            FollowerRecord::Meta {
                cluster_id: Some("c".into()),
                max_epoch: 3,
                low_water: Some(TxId { epoch: 3, seq: 9 }),
            },
            FollowerRecord::View(ViewRecord {
                epoch: 2,
                replication: 3,
                members: vec![(MemberId("m1".into()), "unix:/a b".into())],
            }),
            FollowerRecord::NextView(ViewRecord {
                epoch: 3,
                replication: 3,
                members: vec![(MemberId("m2".into()), "b:1".into())],
            }),
            FollowerRecord::Meta {
                cluster_id: None,
                max_epoch: 0,
                low_water: None,
            },
            FollowerRecord::Prepare {
                txid: TxnId::parse("1.2"),
                txn: TxnSpec::write("a b\n".into(), Some(String::new())),
                participants: vec!["a:1".into(), "unix:/x y".into()],
                view_epoch: 0,
                failed: false,
            },
            FollowerRecord::Prepare {
                txid: TxnId::Legacy,
                txn: TxnSpec::write("k".into(), None),
                participants: Vec::new(),
                view_epoch: 0,
                failed: false,
            },
            FollowerRecord::Prepare {
                txid: TxnId::parse("some-uuid"),
                txn: TxnSpec::write("k".into(), None),
                participants: vec!["a:1".into()],
                view_epoch: 0,
                failed: false,
            },
            FollowerRecord::Decide {
                txid: TxnId::parse("1.2"),
                outcome: Outcome::Abort,
                failed: false,
            },
            FollowerRecord::Prepare {
                txid: TxnId::parse("2.5"),
                txn: TxnSpec {
                    compares: vec![
                        Compare {
                            key: "a b".into(),
                            target: Target::Value("".into()),
                            equal: true,
                        },
                        Compare {
                            key: "v".into(),
                            target: Target::Version(TxId { epoch: 1, seq: 2 }),
                            equal: false,
                        },
                        Compare {
                            key: "e".into(),
                            target: Target::Exists(false),
                            equal: true,
                        },
                    ],
                    success: vec![
                        TxnOp::Get("a b".into()),
                        TxnOp::Put("x".into(), "1\n2".into()),
                    ],
                    failure: vec![TxnOp::Delete("y".into())],
                },
                participants: vec!["a:1".into()],
                view_epoch: 7,
                failed: true,
            },
            FollowerRecord::Prepare {
                txid: TxnId::parse("2.6"),
                txn: TxnSpec::default(),
                participants: Vec::new(),
                view_epoch: 0,
                failed: false,
            },
            FollowerRecord::Decide {
                txid: TxnId::parse("2.5"),
                outcome: Outcome::Commit,
                failed: true,
            },
        ];
        for record in records {
            let fields: Record = (&record).into();
            assert_eq!(FollowerRecord::try_from(fields).unwrap(), record);
        }
        assert!(FollowerRecord::try_from(vec!["bogus".to_string()]).is_err());
        assert!(
            FollowerRecord::try_from(vec!["decide".into(), "1.1".into(), "maybe".into()]).is_err()
        );
    }

    #[test]
    fn leader_records_round_trip() {
        let txid = TxId { epoch: 2, seq: 7 };
        let records = [
            LeaderRecord::Meta {
                cluster_id: "c".into(),
                epoch: 2,
                has_data: true,
                views: None,
            },
            LeaderRecord::Meta {
                cluster_id: "c".into(),
                epoch: 3,
                has_data: false,
                views: Some(Views {
                    current: ViewRecord {
                        epoch: 4,
                        replication: 3,
                        members: vec![
                            (MemberId("m 1".into()), "a:1".into()),
                            (MemberId("m2".into()), "unix:/x".into()),
                        ],
                    },
                    next: None,
                    down: Vec::new(),
                }),
            },
            LeaderRecord::Meta {
                cluster_id: "c".into(),
                epoch: 3,
                has_data: true,
                views: Some(Views {
                    current: ViewRecord {
                        epoch: 4,
                        replication: 1,
                        members: vec![(MemberId("m1".into()), "a:1".into())],
                    },
                    next: Some(ViewRecord {
                        epoch: 5,
                        replication: 1,
                        members: vec![
                            (MemberId("m1".into()), "a:1".into()),
                            (MemberId("m2".into()), "b:2".into()),
                        ],
                    }),
                    down: vec!["c:3".into(), "unix:/d".into()],
                }),
            },
            LeaderRecord::Begin { txid },
            LeaderRecord::Decide {
                txid,
                outcome: Outcome::Abort,
                failed: false,
                followers: vec!["a:1".into(), "unix:/x".into()],
            },
            LeaderRecord::Decide {
                txid,
                outcome: Outcome::Commit,
                failed: false,
                followers: vec![],
            },
            LeaderRecord::Decide {
                txid,
                outcome: Outcome::Commit,
                failed: true,
                followers: vec!["a:1".into()],
            },
            LeaderRecord::Done { txid },
        ];
        for record in records {
            let fields: Record = (&record).into();
            assert_eq!(LeaderRecord::try_from(fields).unwrap(), record);
        }
        assert!(LeaderRecord::try_from(vec!["begin".into(), "x".into(), "k".into()]).is_err());
        let view_cut_short: Record = ["meta", "c", "1", "0", "view", "1", "3", "m1"]
            .map(String::from)
            .into();
        assert!(LeaderRecord::try_from(view_cut_short).is_err());
        // An earlier revision's `begin` (with its key and followers) still reads.
        let old: Record = ["begin", "2.7", "k", "a:1"].map(String::from).to_vec();
        assert_eq!(
            LeaderRecord::try_from(old).unwrap(),
            LeaderRecord::Begin { txid }
        );
    }

    #[test]
    fn a_prepare_journaled_before_participant_lists_reads_with_none() {
        let old: Record = ["prepare", "1.2", "k", "put", "v"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            FollowerRecord::try_from(old).unwrap(),
            FollowerRecord::Prepare {
                txid: TxnId::parse("1.2"),
                txn: TxnSpec::write("k".into(), Some("v".into())),
                participants: Vec::new(),
                view_epoch: 0,
                failed: false,
            }
        );
    }
}
