//! Domain types of the 2PC protocol, and the one place where they are converted from and
//! to the wire types of `pkg/rpc/tpc.proto` (thin adapters at the edge).

use std::fmt;
use std::str::FromStr;

use crate::limits;
use crate::proto::rpc;

/// An ordered transaction id, `<epoch>.<seq>` on the wire. Ids compare by epoch, then
/// sequence number, which is what the low-water mark and the epoch rule rely on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxId {
    /// The leader epoch that created the transaction.
    pub epoch: u64,
    /// The transaction's number within its epoch, from 1.
    pub seq: u64,
}

impl fmt::Display for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.epoch, self.seq)
    }
}

impl FromStr for TxId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (epoch, seq) = s
            .split_once('.')
            .ok_or_else(|| format!("transaction id {s:?} is not <epoch>.<seq>"))?;
        let parse = |part: &str| {
            // Only plain decimal digits: "+1" or " 1" would make two spellings of one id.
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("transaction id {s:?} is not <epoch>.<seq>"));
            }
            part.parse::<u64>()
                .map_err(|_| format!("transaction id {s:?} is out of range"))
        };
        Ok(TxId {
            epoch: parse(epoch)?,
            seq: parse(seq)?,
        })
    }
}

/// What a transaction does to its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Set the key to this value (an empty value is a value, not a delete).
    Put(String),
    /// Remove the key (removing an absent key is fine).
    Delete,
}

/// The outcome of a transaction, and also a vote (COMMIT = yes, ABORT = no).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// Apply the change everywhere.
    Commit,
    /// Apply it nowhere.
    Abort,
}

impl Outcome {
    /// The journal spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Commit => "commit",
            Outcome::Abort => "abort",
        }
    }
    /// Parses the journal spelling.
    pub fn parse(s: &str) -> Option<Outcome> {
        match s {
            "commit" => Some(Outcome::Commit),
            "abort" => Some(Outcome::Abort),
            _ => None,
        }
    }
    fn action(self) -> rpc::Action {
        match self {
            Outcome::Commit => rpc::Action::Commit,
            Outcome::Abort => rpc::Action::Abort,
        }
    }
}

/// The body of a leader message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// Phase one: lock `key` for `op` and vote.
    Prepare { key: String, op: Op },
    /// Phase two: the decision.
    Decide(Outcome),
    /// A restarted leader's end of recovery (on the wire: an ABORT of `<epoch>.0`, an id
    /// no transaction has): abort every prepared transaction of an older epoch that is
    /// not in `known` (`follower_core.rs`).
    EndOfRecovery { known: Vec<TxId> },
}

/// Cluster membership information carried by our leader's messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterInfo {
    /// The cluster id created at the leader's first start.
    pub id: String,
    /// True once the cluster has committed a write.
    pub has_data: bool,
}

/// A validated leader message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderMessage {
    /// The transaction id; empty for a legacy message from classic tooling.
    pub txid: String,
    /// What the message asks.
    pub body: Body,
    /// The sender's leader epoch (0 from classic tooling).
    pub epoch: u64,
    /// Everything below this id sent to the receiving follower is decided and ACKed by it.
    pub low_water: Option<TxId>,
    /// Absent from classic tooling.
    pub cluster: Option<ClusterInfo>,
}

impl LeaderMessage {
    /// True for a message from classic tooling, which carries no transaction id.
    pub fn is_legacy(&self) -> bool {
        self.txid.is_empty()
    }
}

/// The longest transaction id a follower accepts (ours are two decimal numbers).
pub const MAX_TXID_BYTES: usize = 128;

impl TryFrom<rpc::LeaderMsg> for LeaderMessage {
    type Error = String;

    /// Validates a wire message. Errors describe what is wrong, for an INVALID_ARGUMENT
    /// status; a PREPARE with a bad key or value is *not* an error here (the follower votes
    /// ABORT on it, see [`LeaderMessage::prepare_problem`]).
    fn try_from(m: rpc::LeaderMsg) -> Result<Self, String> {
        if m.txid.len() > MAX_TXID_BYTES {
            return Err(format!(
                "transaction id is {} bytes; the limit is {MAX_TXID_BYTES}",
                m.txid.len()
            ));
        }
        let msg_type = rpc::MessageType::try_from(m.r#type)
            .map_err(|_| format!("unknown message type {}", m.r#type))?;
        let action =
            rpc::Action::try_from(m.action).map_err(|_| format!("unknown action {}", m.action))?;
        let body = match (msg_type, action) {
            (rpc::MessageType::Vote, rpc::Action::Prepare) => {
                let op = match rpc::Operation::try_from(m.op) {
                    Ok(rpc::Operation::Put) => Op::Put(m.value),
                    Ok(rpc::Operation::Delete) => Op::Delete,
                    Err(_) => return Err(format!("unknown operation {}", m.op)),
                };
                Body::Prepare { key: m.key, op }
            }
            (rpc::MessageType::Global, rpc::Action::Commit) => Body::Decide(Outcome::Commit),
            (rpc::MessageType::Global, rpc::Action::Abort)
                if m.txid.parse::<TxId>().is_ok_and(|id| id.seq == 0) =>
            {
                let known = m
                    .known_txids
                    .iter()
                    .map(|txid| txid.parse::<TxId>())
                    .collect::<Result<Vec<_>, _>>()?;
                Body::EndOfRecovery { known }
            }
            (rpc::MessageType::Global, rpc::Action::Abort) => Body::Decide(Outcome::Abort),
            (t, a) => {
                return Err(format!(
                    "{} {} is not a leader message (expected VOTE PREPARE, GLOBAL COMMIT or GLOBAL ABORT)",
                    t.as_str_name(),
                    a.as_str_name()
                ))
            }
        };
        let low_water = if m.low_water.is_empty() {
            None
        } else {
            Some(m.low_water.parse::<TxId>()?)
        };
        let cluster = (!m.cluster_id.is_empty()).then_some(ClusterInfo {
            id: m.cluster_id,
            has_data: m.cluster_has_data,
        });
        Ok(LeaderMessage {
            txid: m.txid,
            body,
            epoch: m.epoch,
            low_water,
            cluster,
        })
    }
}

impl LeaderMessage {
    /// Why a PREPARE must be refused whatever the state (bad key or value), if it must.
    pub fn prepare_problem(&self) -> Option<String> {
        match &self.body {
            Body::Prepare { key, op } => limits::check_key(key).err().or_else(|| match op {
                Op::Put(value) => limits::check_value(value).err(),
                Op::Delete => None,
            }),
            Body::Decide(_) | Body::EndOfRecovery { .. } => None,
        }
    }
}

impl From<LeaderMessage> for rpc::LeaderMsg {
    fn from(m: LeaderMessage) -> Self {
        let mut known_txids = Vec::new();
        let (msg_type, action, key, value, op) = match m.body {
            Body::Prepare { key, op } => {
                let (value, op) = match op {
                    Op::Put(v) => (v, rpc::Operation::Put),
                    Op::Delete => (String::new(), rpc::Operation::Delete),
                };
                (rpc::MessageType::Vote, rpc::Action::Prepare, key, value, op)
            }
            Body::Decide(outcome) => (
                rpc::MessageType::Global,
                outcome.action(),
                String::new(),
                String::new(),
                rpc::Operation::Put,
            ),
            Body::EndOfRecovery { known } => {
                known_txids = known.iter().map(TxId::to_string).collect();
                (
                    rpc::MessageType::Global,
                    rpc::Action::Abort,
                    String::new(),
                    String::new(),
                    rpc::Operation::Put,
                )
            }
        };
        let (cluster_id, cluster_has_data) = match m.cluster {
            Some(c) => (c.id, c.has_data),
            None => (String::new(), false),
        };
        rpc::LeaderMsg {
            r#type: msg_type as i32,
            action: action as i32,
            key,
            value,
            txid: m.txid,
            op: op as i32,
            epoch: m.epoch,
            low_water: m.low_water.map(|t| t.to_string()).unwrap_or_default(),
            cluster_id,
            cluster_has_data,
            known_txids,
        }
    }
}

/// A follower's answer to one leader message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The answer to a PREPARE.
    Vote(Outcome),
    /// The answer to a decision.
    Ack,
}

impl Reply {
    /// The wire response for this reply to transaction `txid`.
    pub fn to_wire(&self, txid: &str, cluster_id: Option<&str>) -> rpc::Response {
        let action = match self {
            Reply::Vote(o) => o.action(),
            Reply::Ack => rpc::Action::Ack,
        };
        rpc::Response {
            action: action as i32,
            txid: txid.to_string(),
            cluster_id: cluster_id.unwrap_or_default().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txid_round_trips_and_orders_by_epoch_then_seq() {
        let a: TxId = "2.10".parse().unwrap();
        assert_eq!(a, TxId { epoch: 2, seq: 10 });
        assert_eq!(a.to_string(), "2.10");
        assert!("1.99".parse::<TxId>().unwrap() < a);
        assert!("2.9".parse::<TxId>().unwrap() < a);
        assert!("3.1".parse::<TxId>().unwrap() > a);
        for bad in [
            "",
            ".",
            "1.",
            ".1",
            "1.2.3",
            "+1.2",
            "1.-2",
            "a.b",
            "1 .2",
            "99999999999999999999.1",
        ] {
            assert!(bad.parse::<TxId>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn wire_conversion_round_trips() {
        let msg = LeaderMessage {
            txid: "3.4".into(),
            body: Body::Prepare {
                key: "k".into(),
                op: Op::Delete,
            },
            epoch: 3,
            low_water: Some(TxId { epoch: 3, seq: 1 }),
            cluster: Some(ClusterInfo {
                id: "c".into(),
                has_data: true,
            }),
        };
        let wire: rpc::LeaderMsg = msg.clone().into();
        assert_eq!(LeaderMessage::try_from(wire).unwrap(), msg);

        let end = LeaderMessage {
            txid: "4.0".into(),
            body: Body::EndOfRecovery {
                known: vec![TxId { epoch: 3, seq: 2 }, TxId { epoch: 2, seq: 9 }],
            },
            epoch: 4,
            low_water: Some(TxId { epoch: 2, seq: 9 }),
            cluster: None,
        };
        let wire: rpc::LeaderMsg = end.clone().into();
        assert_eq!(
            (wire.r#type, wire.action, wire.known_txids.clone()),
            (
                rpc::MessageType::Global as i32,
                rpc::Action::Abort as i32,
                vec!["3.2".to_string(), "2.9".to_string()]
            ),
            "an ABORT of <epoch>.0 on the wire, which classic peers just ACK"
        );
        assert_eq!(LeaderMessage::try_from(wire).unwrap(), end);
    }

    #[test]
    fn classic_prepare_is_a_legacy_put() {
        let wire = rpc::LeaderMsg {
            key: "k".into(),
            value: "v".into(),
            ..Default::default()
        };
        let msg = LeaderMessage::try_from(wire).unwrap();
        assert!(msg.is_legacy());
        assert_eq!(
            msg.body,
            Body::Prepare {
                key: "k".into(),
                op: Op::Put("v".into())
            }
        );
    }

    #[test]
    fn malformed_messages_are_refused_with_a_reason() {
        let cases = [
            rpc::LeaderMsg {
                r#type: 0,
                action: 3,
                ..Default::default()
            },
            rpc::LeaderMsg {
                r#type: 1,
                action: 0,
                ..Default::default()
            },
            rpc::LeaderMsg {
                r#type: 7,
                ..Default::default()
            },
            rpc::LeaderMsg {
                action: 9,
                ..Default::default()
            },
            rpc::LeaderMsg {
                op: 5,
                ..Default::default()
            },
            rpc::LeaderMsg {
                low_water: "x".into(),
                ..Default::default()
            },
            rpc::LeaderMsg {
                r#type: rpc::MessageType::Global as i32,
                action: rpc::Action::Abort as i32,
                txid: "4.0".into(),
                known_txids: vec!["3.1".into(), "three".into()],
                ..Default::default()
            },
            rpc::LeaderMsg {
                txid: "1".repeat(200),
                ..Default::default()
            },
        ];
        for wire in cases {
            assert!(
                LeaderMessage::try_from(wire.clone()).is_err(),
                "{wire:?} accepted"
            );
        }
    }
}
