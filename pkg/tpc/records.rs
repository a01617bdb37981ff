//! Journal records of the leader and the follower, and their encoding as journal fields.
//!
//! Every record is a list of string fields whose first field names the kind. The
//! journal escapes the fields, so keys and values may hold any characters.
//!
//! Follower journal:
//! - `meta CLUSTER_ID MAX_EPOCH LOW_WATER` (empty fields when unknown)
//! - `prepare TXID KEY put VALUE PARTICIPANT...` or `prepare TXID KEY del PARTICIPANT...`
//!   (TXID empty: legacy; no participants from classic tooling, nor in records of
//!   revisions before protocol 2)
//! - `decide TXID commit|abort`
//!
//! Leader journal (it holds no record of a commit that every participant voted for,
//! DESIGN §1.4):
//! - `meta CLUSTER_ID EPOCH HAS_DATA` (HAS_DATA is `0` or `1`), at every start
//! - `decide TXID commit|abort FOLLOWER...`: an ABORT, or the decision of a transaction
//!   with a classic participant, durable before it is sent or answered; the followers
//!   that still need it
//! - `done TXID` once every one of them ACKed
//! - `begin TXID ...`, written by revisions before protocol 2, is read and ignored

use std::path::{Path, PathBuf};

use super::message::{Op, Outcome, TxId, TxnId};
use crate::dirlock::DirLock;
use crate::journal::{Journal, Record};
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
    /// A COMMIT vote: the transaction holds the key's lock until its decision.
    Prepare {
        txid: TxnId,
        key: String,
        op: Op,
        participants: Vec<String>,
    },
    /// A decision (or a marker for a decided transaction this follower never prepared).
    Decide { txid: TxnId, outcome: Outcome },
}

/// A record in the leader's journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaderRecord {
    /// Written at every start (with the new epoch) and when the cluster gets data.
    Meta {
        cluster_id: String,
        epoch: u64,
        has_data: bool,
    },
    /// Written by revisions before protocol 2 (a transaction about to send its first
    /// PREPARE); read and ignored: recovery asks the followers instead.
    Begin { txid: TxId },
    /// A decision that must survive a crash, and the followers it must still reach.
    Decide {
        txid: TxId,
        outcome: Outcome,
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
                key,
                op,
                participants,
            } => {
                let mut fields = vec!["prepare".into(), txid.to_string(), key.clone()];
                match op {
                    Op::Put(value) => fields.extend(["put".into(), value.clone()]),
                    Op::Delete => fields.push("del".into()),
                }
                fields.extend(participants.iter().cloned());
                fields
            }
            FollowerRecord::Decide { txid, outcome } => {
                vec!["decide".into(), txid.to_string(), outcome.as_str().into()]
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
            ["prepare", txid, key, "put", value, participants @ ..] => {
                Ok(FollowerRecord::Prepare {
                    txid: TxnId::parse(txid),
                    key: key.to_string(),
                    op: Op::Put(value.to_string()),
                    participants: strings(participants),
                })
            }
            ["prepare", txid, key, "del", participants @ ..] => Ok(FollowerRecord::Prepare {
                txid: TxnId::parse(txid),
                key: key.to_string(),
                op: Op::Delete,
                participants: strings(participants),
            }),
            ["decide", txid, outcome] => Ok(FollowerRecord::Decide {
                txid: TxnId::parse(txid),
                outcome: parse_outcome(outcome)?,
            }),
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
            } => vec![
                "meta".into(),
                cluster_id.clone(),
                epoch.to_string(),
                if *has_data { "1" } else { "0" }.into(),
            ],
            LeaderRecord::Begin { txid } => vec!["begin".into(), txid.to_string()],
            LeaderRecord::Decide {
                txid,
                outcome,
                followers,
            } => {
                let mut fields = vec!["decide".into(), txid.to_string(), outcome.as_str().into()];
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
            ["meta", cluster, epoch, has_data] => Ok(LeaderRecord::Meta {
                cluster_id: cluster.to_string(),
                epoch: parse_u64(epoch, "epoch")?,
                has_data: *has_data == "1",
            }),
            ["begin", txid, ..] => Ok(LeaderRecord::Begin {
                txid: parse_txid(txid)?,
            }),
            ["decide", txid, outcome, followers @ ..] => Ok(LeaderRecord::Decide {
                txid: parse_txid(txid)?,
                outcome: parse_outcome(outcome)?,
                followers: strings(followers),
            }),
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
            FollowerRecord::Meta {
                cluster_id: None,
                max_epoch: 0,
                low_water: None,
            },
            FollowerRecord::Prepare {
                txid: TxnId::parse("1.2"),
                key: "a b\n".into(),
                op: Op::Put(String::new()),
                participants: vec!["a:1".into(), "unix:/x y".into()],
            },
            FollowerRecord::Prepare {
                txid: TxnId::Legacy,
                key: "k".into(),
                op: Op::Delete,
                participants: Vec::new(),
            },
            FollowerRecord::Prepare {
                txid: TxnId::parse("some-uuid"),
                key: "k".into(),
                op: Op::Delete,
                participants: vec!["a:1".into()],
            },
            FollowerRecord::Decide {
                txid: TxnId::parse("1.2"),
                outcome: Outcome::Abort,
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
            },
            LeaderRecord::Begin { txid },
            LeaderRecord::Decide {
                txid,
                outcome: Outcome::Abort,
                followers: vec!["a:1".into(), "unix:/x".into()],
            },
            LeaderRecord::Decide {
                txid,
                outcome: Outcome::Commit,
                followers: vec![],
            },
            LeaderRecord::Done { txid },
        ];
        for record in records {
            let fields: Record = (&record).into();
            assert_eq!(LeaderRecord::try_from(fields).unwrap(), record);
        }
        assert!(LeaderRecord::try_from(vec!["begin".into(), "x".into(), "k".into()]).is_err());
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
                key: "k".into(),
                op: Op::Put("v".into()),
                participants: Vec::new(),
            }
        );
    }
}
