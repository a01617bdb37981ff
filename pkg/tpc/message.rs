//! Domain types of the 2PC protocol, and the one place where they are converted from and
//! to the wire types of `pkg/rpc/tpc.proto` (thin adapters at the edge). Transaction ids
//! are parsed here, once: the cores never see a wire string.

use std::fmt;

use super::membership::ViewRecord;
use crate::kvstore::Versioned;
use crate::limits;
use crate::placement::MemberId;
use crate::proto::{api, rpc};
pub use crate::txid::TxId;
use crate::txn::{Evaluation, TxnOp, TxnSpec};

/// The protocol revision this build speaks (`LeaderMsg.protocol`, `Response.protocol`):
/// the commit rule of DESIGN §1.4 (a COMMIT vote means the vote and the participant list
/// are durable), the fence and its inquiry report, and batched frames. 0 is classic.
pub const PROTOCOL: u32 = 2;

/// The transaction a message is about, as its wire `txid` names it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TxnId {
    /// No id: a legacy message from classic tooling (DESIGN §2).
    Legacy,
    /// One of ours, `<epoch>.<seq>`: ordered, so epochs and low-water marks apply to it.
    Ordered(TxId),
    /// Any other id (another tool's UUID, say): unordered, so no mark ever passes it.
    Foreign(String),
}

impl TxnId {
    /// Parses a wire (or journal) id; the empty string is a legacy message.
    pub fn parse(s: &str) -> TxnId {
        if s.is_empty() {
            return TxnId::Legacy;
        }
        match s.parse::<TxId>() {
            Ok(id) => TxnId::Ordered(id),
            Err(_) => TxnId::Foreign(s.to_string()),
        }
    }

    /// The ordered id, if it is one.
    pub fn ordered(&self) -> Option<TxId> {
        match self {
            TxnId::Ordered(id) => Some(*id),
            TxnId::Legacy | TxnId::Foreign(_) => None,
        }
    }
}

impl fmt::Display for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TxnId::Legacy => Ok(()),
            TxnId::Ordered(id) => id.fmt(f),
            TxnId::Foreign(s) => f.write_str(s),
        }
    }
}

impl From<&str> for TxnId {
    fn from(s: &str) -> TxnId {
        TxnId::parse(s)
    }
}

impl From<TxId> for TxnId {
    fn from(id: TxId) -> TxnId {
        TxnId::Ordered(id)
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

impl Op {
    /// The value the key has once this is applied (`None`: absent).
    pub fn value(&self) -> Option<&str> {
        match self {
            Op::Put(value) => Some(value),
            Op::Delete => None,
        }
    }
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
    /// Phase one: lock every key of `txn`, evaluate its compares and GETs, and vote;
    /// `participants` are every follower of the transaction (empty from classic tooling
    /// and from leaders before protocol 2). A `Put` or `Delete` is a `txn` of one write.
    Prepare {
        txn: TxnSpec,
        participants: Vec<String>,
        /// The member and view it is meant for (DESIGN §7), if the leader has a view.
        recipient: Option<Recipient>,
    },
    /// Phase two: the decision; with `failed`, a COMMIT applies the failure branch
    /// (the compares did not hold).
    Decide { outcome: Outcome, failed: bool },
    /// A restarted leader's fence (on the wire: a GLOBAL ABORT of `<epoch>.0`, an id no
    /// transaction has): refuse every PREPARE of an older epoch from now on, durably,
    /// and report what is known of the older epochs' transactions.
    Fence,
    /// The view in force (DESIGN §7; on the wire a GLOBAL COMMIT of `0.<view epoch>`
    /// carrying it): keep it, durably, and answer direct reads by it. With `next`, the
    /// next view while the members change (DESIGN §8): keep it, durably, and catch up
    /// on the keys it places here; `follows` is then the epoch of the view in force it
    /// follows (0: not said).
    View {
        view: ViewRecord,
        next: bool,
        follows: u64,
    },
}

impl Body {
    /// The decision `outcome`, of the success branch.
    pub fn decide(outcome: Outcome) -> Body {
        Body::Decide {
            outcome,
            failed: false,
        }
    }
}

/// What a PREPARE says about whom it is for (DESIGN §7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    /// The epoch of the view the transaction runs in.
    pub view_epoch: u64,
    /// The member the PREPARE is meant for.
    pub member_id: MemberId,
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
    /// The transaction it is about.
    pub txid: TxnId,
    /// What the message asks.
    pub body: Body,
    /// The sender's leader epoch (0 from classic tooling).
    pub epoch: u64,
    /// Everything below this id sent to the receiving follower is decided and ACKed by it.
    pub low_water: Option<TxId>,
    /// Absent from classic tooling.
    pub cluster: Option<ClusterInfo>,
    /// The sender's protocol revision (0 from classic tooling).
    pub protocol: u32,
}

impl LeaderMessage {
    /// True for a message from classic tooling, which carries no transaction id.
    pub fn is_legacy(&self) -> bool {
        self.txid == TxnId::Legacy
    }

    /// Why a PREPARE must be refused whatever the state (a bad key or value: a
    /// classic PREPARE is not validated on the way in), if it must.
    pub fn prepare_problem(&self) -> Option<String> {
        let Body::Prepare { txn, .. } = &self.body else {
            return None;
        };
        txn.success.iter().chain(&txn.failure).find_map(|op| {
            limits::check_key(op.key()).err().or_else(|| match op {
                TxnOp::Put(_, value) => limits::check_value(value).err(),
                TxnOp::Get(_) | TxnOp::Delete(_) => None,
            })
        })
    }
}

/// The longest transaction id a follower accepts (ours are two decimal numbers).
pub const MAX_TXID_BYTES: usize = 128;
/// The most participants a PREPARE may name.
pub const MAX_PARTICIPANTS: usize = 1024;
/// The longest participant address a PREPARE may name.
pub const MAX_PARTICIPANT_BYTES: usize = 4096;
/// The most messages one frame may carry.
pub const MAX_FRAME_MESSAGES: usize = 4096;

/// Splits a wire frame into its messages (the frame's own, then its `batch`), each
/// validated. An invalid message makes the whole frame invalid.
pub fn messages_of_frame(mut frame: rpc::LeaderMsg) -> Result<Vec<LeaderMessage>, String> {
    if frame.batch.len() >= MAX_FRAME_MESSAGES {
        return Err(format!(
            "a frame of {} messages; the limit is {MAX_FRAME_MESSAGES}",
            frame.batch.len() + 1
        ));
    }
    let batch = std::mem::take(&mut frame.batch);
    let mut messages = Vec::with_capacity(batch.len() + 1);
    messages.push(LeaderMessage::try_from(frame)?);
    for msg in batch {
        if !msg.batch.is_empty() {
            return Err("a batched message carries a batch of its own".into());
        }
        messages.push(LeaderMessage::try_from(msg)?);
    }
    Ok(messages)
}

/// Packs messages into one wire frame (the first, with the rest in its `batch`); only
/// for a follower that advertised [`PROTOCOL`].
pub fn frame_of_messages(messages: Vec<LeaderMessage>) -> Option<rpc::LeaderMsg> {
    let mut messages = messages.into_iter().map(rpc::LeaderMsg::from);
    let mut frame = messages.next()?;
    frame.batch = messages.collect();
    Some(frame)
}

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
        if m.participants.len() > MAX_PARTICIPANTS {
            return Err(format!(
                "{} participants; the limit is {MAX_PARTICIPANTS}",
                m.participants.len()
            ));
        }
        if let Some(p) = m
            .participants
            .iter()
            .find(|p| p.is_empty() || p.len() > MAX_PARTICIPANT_BYTES)
        {
            return Err(format!(
                "a participant address of {} bytes (1 to {MAX_PARTICIPANT_BYTES})",
                p.len()
            ));
        }
        let txid = TxnId::parse(&m.txid);
        let msg_type = rpc::MessageType::try_from(m.r#type)
            .map_err(|_| format!("unknown message type {}", m.r#type))?;
        let action =
            rpc::Action::try_from(m.action).map_err(|_| format!("unknown action {}", m.action))?;
        let body = match (msg_type, action) {
            (rpc::MessageType::Vote, rpc::Action::Prepare) => {
                let txn = match m.txn {
                    Some(txn) => TxnSpec::from_request(txn)
                        .map_err(|why| format!("a PREPARE's transaction: {why}"))?,
                    None => match rpc::Operation::try_from(m.op) {
                        Ok(rpc::Operation::Put) => TxnSpec::write(m.key, Some(m.value)),
                        Ok(rpc::Operation::Delete) => TxnSpec::write(m.key, None),
                        Err(_) => return Err(format!("unknown operation {}", m.op)),
                    },
                };
                let recipient = match m.member_id.as_str() {
                    "" => None,
                    id => Some(Recipient {
                        view_epoch: m.view_epoch,
                        member_id: MemberId(check_member_id(id)?.to_string()),
                    }),
                };
                Body::Prepare {
                    txn,
                    participants: m.participants,
                    recipient,
                }
            }
            (rpc::MessageType::Global, rpc::Action::Commit) if m.view.is_some() => {
                let info = m.view.unwrap_or_default();
                let (next, follows) = (info.next, info.follows);
                let view = view_of(info)?;
                if txid != TxId::view(view.epoch).into() {
                    return Err(format!(
                        "a view message's id must be 0.{} (its epoch), not {txid}",
                        view.epoch
                    ));
                }
                Body::View {
                    view,
                    next,
                    follows,
                }
            }
            (rpc::MessageType::Global, rpc::Action::Commit) => Body::Decide {
                outcome: Outcome::Commit,
                failed: m.failed,
            },
            (rpc::MessageType::Global, rpc::Action::Abort)
                if txid.ordered().is_some_and(|id| id.seq == 0) =>
            {
                Body::Fence
            }
            (rpc::MessageType::Global, rpc::Action::Abort) => Body::decide(Outcome::Abort),
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
            txid,
            body,
            epoch: m.epoch,
            low_water,
            cluster,
            protocol: m.protocol,
        })
    }
}

impl From<LeaderMessage> for rpc::LeaderMsg {
    fn from(m: LeaderMessage) -> Self {
        let mut participants = Vec::new();
        let mut txn = None;
        let mut failed = false;
        let mut to = None;
        let mut view = None;
        let (msg_type, action, key, value, op) = match m.body {
            Body::Prepare {
                txn: spec,
                participants: p,
                recipient,
            } => {
                participants = p;
                to = recipient;
                let (key, value, op) = match spec.single_write() {
                    Some((key, Some(value))) => {
                        (key.to_string(), value.to_string(), rpc::Operation::Put)
                    }
                    Some((key, None)) => (key.to_string(), String::new(), rpc::Operation::Delete),
                    None => {
                        txn = Some(api::TxnRequest::from(&spec));
                        (String::new(), String::new(), rpc::Operation::Put)
                    }
                };
                (rpc::MessageType::Vote, rpc::Action::Prepare, key, value, op)
            }
            Body::Decide {
                outcome,
                failed: branch,
            } => {
                failed = branch;
                (
                    rpc::MessageType::Global,
                    outcome.action(),
                    String::new(),
                    String::new(),
                    rpc::Operation::Put,
                )
            }
            Body::Fence => (
                rpc::MessageType::Global,
                rpc::Action::Abort,
                String::new(),
                String::new(),
                rpc::Operation::Put,
            ),
            Body::View {
                view: v,
                next,
                follows,
            } => {
                view = Some(rpc::ViewInfo {
                    next,
                    follows,
                    epoch: v.epoch,
                    replication: v.replication as u32,
                    member_ids: v.members.iter().map(|(id, _)| id.0.clone()).collect(),
                    addresses: v.members.into_iter().map(|(_, a)| a).collect(),
                });
                (
                    rpc::MessageType::Global,
                    rpc::Action::Commit,
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
            txid: m.txid.to_string(),
            op: op as i32,
            epoch: m.epoch,
            low_water: m.low_water.map(|t| t.to_string()).unwrap_or_default(),
            cluster_id,
            cluster_has_data,
            participants,
            protocol: m.protocol,
            batch: Vec::new(),
            txn,
            failed,
            view_epoch: to.as_ref().map_or(0, |r| r.view_epoch),
            member_id: to.map(|r| r.member_id.0).unwrap_or_default(),
            view,
        }
    }
}

/// A transaction a follower holds prepared, as its fence report tells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportedTxn {
    /// The transaction.
    pub txid: TxId,
    /// Its first key (for operators).
    pub key: String,
    /// Its participants as its PREPARE named them (empty: every follower).
    pub participants: Vec<String>,
    /// Its compares do not hold here: committed, its failure branch applies.
    pub failed: bool,
}

/// What a follower knows of the transactions of epochs before a fence's
/// ([`Body::Fence`]), taken when the fence is durable there.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InquiryReport {
    /// Voted COMMIT and undecided.
    pub prepared: Vec<ReportedTxn>,
    /// Decided COMMIT here.
    pub committed: Vec<TxId>,
    /// Those of `committed` whose failure branch applied.
    pub committed_failed: Vec<TxId>,
    /// Decided ABORT here (or voted ABORT).
    pub aborted: Vec<TxId>,
    /// Below it, every transaction sent here is decided and ACKed here.
    pub low_water: Option<TxId>,
    /// The follower's member id (it names the follower's data, `crate::member`).
    pub member_id: Option<String>,
}

/// A follower's answer to one leader message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The answer to a PREPARE of a plain write.
    Vote(Outcome),
    /// A COMMIT vote on a transaction with compares or GETs, with what they found here.
    Evaluated(Evaluation),
    /// The answer to a decision.
    Ack,
    /// The answer to a fence.
    Report(InquiryReport),
}

impl Reply {
    /// The wire response for this reply to transaction `txid`, from a follower of
    /// `cluster_id` that speaks [`PROTOCOL`].
    pub fn to_wire(&self, txid: &TxnId, cluster_id: Option<&str>) -> rpc::Response {
        let mut response = rpc::Response {
            txid: txid.to_string(),
            cluster_id: cluster_id.unwrap_or_default().to_string(),
            protocol: PROTOCOL,
            ..rpc::Response::default()
        };
        let action = match self {
            Reply::Vote(o) => o.action(),
            Reply::Evaluated(evaluation) => {
                response.failed = !evaluation.succeeded;
                response.results = evaluation.results.iter().map(result_of).collect();
                rpc::Action::Commit
            }
            Reply::Ack => rpc::Action::Ack,
            Reply::Report(report) => {
                response.report = Some(report.into());
                rpc::Action::Ack
            }
        };
        response.action = action as i32;
        response
    }
}

impl From<&InquiryReport> for rpc::InquiryReport {
    fn from(r: &InquiryReport) -> Self {
        let ids = |ids: &[TxId]| ids.iter().map(TxId::to_string).collect();
        rpc::InquiryReport {
            prepared: r
                .prepared
                .iter()
                .map(|t| rpc::PreparedTxn {
                    txid: t.txid.to_string(),
                    key: t.key.clone(),
                    participants: t.participants.clone(),
                    failed: t.failed,
                })
                .collect(),
            committed: ids(&r.committed),
            committed_failed: ids(&r.committed_failed),
            aborted: ids(&r.aborted),
            low_water: r.low_water.map(|t| t.to_string()).unwrap_or_default(),
            member_id: r.member_id.clone().unwrap_or_default(),
        }
    }
}

impl TryFrom<rpc::InquiryReport> for InquiryReport {
    type Error = String;
    fn try_from(r: rpc::InquiryReport) -> Result<Self, String> {
        let ids = |ids: Vec<String>| {
            ids.iter()
                .map(|s| s.parse::<TxId>())
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(InquiryReport {
            prepared: r
                .prepared
                .into_iter()
                .map(|t| {
                    Ok(ReportedTxn {
                        txid: t.txid.parse()?,
                        key: t.key,
                        participants: t.participants,
                        failed: t.failed,
                    })
                })
                .collect::<Result<_, String>>()?,
            committed: ids(r.committed)?,
            committed_failed: ids(r.committed_failed)?,
            aborted: ids(r.aborted)?,
            low_water: if r.low_water.is_empty() {
                None
            } else {
                Some(r.low_water.parse()?)
            },
            member_id: match r.member_id.as_str() {
                "" => None,
                id => Some(check_member_id(id)?.to_string()),
            },
        })
    }
}

/// Validates a view from the wire.
fn view_of(v: rpc::ViewInfo) -> Result<ViewRecord, String> {
    if v.epoch == 0 || v.replication == 0 {
        return Err("a view's epoch and replication start at 1".into());
    }
    if v.member_ids.len() != v.addresses.len() || v.member_ids.len() > MAX_PARTICIPANTS {
        return Err(format!(
            "a view of {} member ids and {} addresses (at most {MAX_PARTICIPANTS}, as many of each)",
            v.member_ids.len(),
            v.addresses.len()
        ));
    }
    let mut members = Vec::with_capacity(v.member_ids.len());
    for (id, address) in v.member_ids.into_iter().zip(v.addresses) {
        check_member_id(&id)?;
        if address.is_empty() || address.len() > MAX_PARTICIPANT_BYTES {
            return Err(format!(
                "a member address of {} bytes (1 to {MAX_PARTICIPANT_BYTES})",
                address.len()
            ));
        }
        members.push((MemberId(id), address));
    }
    Ok(ViewRecord {
        epoch: v.epoch,
        replication: v.replication as usize,
        members,
    })
}

/// A member id as it arrives on the wire: 1 to 64 printable ASCII characters (ours are
/// UUIDs, `crate::member`).
/// Validates a member id from the wire.
pub fn check_member_id(id: &str) -> Result<&str, String> {
    if (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(id)
    } else {
        Err("a member id must be 1 to 64 printable ASCII characters".into())
    }
}

/// What a follower's response says, as the leader reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A vote (COMMIT or ABORT).
    Vote(Outcome),
    /// A COMMIT vote with what the transaction's compares and GETs found.
    Evaluated(Evaluation),
    /// ACK of a decision.
    Ack,
    /// ACK of a fence, with what the follower knows (`None`: a classic peer's plain ACK).
    Report(Option<InquiryReport>),
    /// PREPARE, or an action this build does not know: answers nothing sensibly.
    Other(i32),
}

/// One follower response, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FollowerReply {
    /// The message it answers (legacy: the oldest unanswered one).
    pub txid: TxnId,
    /// What it says.
    pub answer: Answer,
    /// The follower's cluster, if it has joined one.
    pub cluster_id: Option<String>,
    /// The follower's protocol revision (0: classic).
    pub protocol: u32,
}

/// Splits a wire response frame into its responses, in order. A response that can't be
/// read (a report with a bad id) is `Err`, the leader then treats the stream as broken.
pub fn replies_of_frame(mut frame: rpc::Response) -> Vec<Result<FollowerReply, String>> {
    let batch = std::mem::take(&mut frame.batch);
    std::iter::once(frame)
        .chain(batch)
        .map(FollowerReply::try_from)
        .collect()
}

impl TryFrom<rpc::Response> for FollowerReply {
    type Error = String;
    fn try_from(r: rpc::Response) -> Result<Self, String> {
        let answer = match rpc::Action::try_from(r.action) {
            Ok(rpc::Action::Commit) if r.failed || !r.results.is_empty() => {
                Answer::Evaluated(Evaluation {
                    succeeded: !r.failed,
                    results: r
                        .results
                        .into_iter()
                        .map(versioned_of)
                        .collect::<Result<_, String>>()?,
                })
            }
            Ok(rpc::Action::Commit) => Answer::Vote(Outcome::Commit),
            Ok(rpc::Action::Abort) => Answer::Vote(Outcome::Abort),
            Ok(rpc::Action::Ack) => match r.report {
                Some(report) => Answer::Report(Some(report.try_into()?)),
                None => Answer::Ack,
            },
            Ok(rpc::Action::Prepare) | Err(_) => Answer::Other(r.action),
        };
        Ok(FollowerReply {
            txid: TxnId::parse(&r.txid),
            answer,
            cluster_id: (!r.cluster_id.is_empty()).then_some(r.cluster_id),
            protocol: r.protocol,
        })
    }
}

/// A GET's result on the wire (`found` false: absent).
pub fn result_of(state: &Option<Versioned>) -> api::TxnResult {
    match state {
        Some(held) => api::TxnResult {
            key: String::new(),
            found: true,
            value: held.value.clone(),
            version: held.version.to_string(),
        },
        None => api::TxnResult::default(),
    }
}

/// A GET's result from the wire.
pub fn versioned_of(result: api::TxnResult) -> Result<Option<Versioned>, String> {
    if !result.found {
        return Ok(None);
    }
    Ok(Some(Versioned {
        value: result.value,
        version: result.version.parse()?,
    }))
}

/// Packs responses into one wire frame (the first, with the rest in its `batch`); only
/// for a leader that speaks [`PROTOCOL`].
pub fn frame_of_responses(responses: Vec<rpc::Response>) -> Option<rpc::Response> {
    let mut responses = responses.into_iter();
    let mut frame = responses.next()?;
    frame.batch = responses.collect();
    Some(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_ids_parse_into_legacy_ordered_or_foreign() {
        assert_eq!(TxnId::parse(""), TxnId::Legacy);
        assert_eq!(
            TxnId::parse("3.4"),
            TxnId::Ordered(TxId { epoch: 3, seq: 4 })
        );
        let uuid = "0b1e8c6e-2f43-4a7e-9d0c-6a2c1b3f4d5e";
        assert_eq!(TxnId::parse(uuid), TxnId::Foreign(uuid.into()));
        for id in [TxnId::Legacy, TxnId::parse("3.4"), TxnId::parse(uuid)] {
            assert_eq!(TxnId::parse(&id.to_string()), id);
        }
    }

    #[test]
    fn wire_conversion_round_trips() {
        let msg = LeaderMessage {
            txid: TxnId::parse("3.4"),
            body: Body::Prepare {
                txn: TxnSpec::write("k".into(), None),
                participants: vec!["a:1".into(), "unix:/b".into()],
                recipient: Some(Recipient {
                    view_epoch: 2,
                    member_id: MemberId("m-1".into()),
                }),
            },
            epoch: 3,
            low_water: Some(TxId { epoch: 3, seq: 1 }),
            cluster: Some(ClusterInfo {
                id: "c".into(),
                has_data: true,
            }),
            protocol: PROTOCOL,
        };
        let wire: rpc::LeaderMsg = msg.clone().into();
        assert_eq!(LeaderMessage::try_from(wire).unwrap(), msg);

        let fence = LeaderMessage {
            txid: TxId::fence(4).into(),
            body: Body::Fence,
            epoch: 4,
            low_water: None,
            cluster: None,
            protocol: PROTOCOL,
        };
        let wire: rpc::LeaderMsg = fence.clone().into();
        assert_eq!(
            (wire.r#type, wire.action, wire.txid.as_str()),
            (
                rpc::MessageType::Global as i32,
                rpc::Action::Abort as i32,
                "4.0"
            ),
            "an ABORT of <epoch>.0 on the wire, which classic peers just ACK"
        );
        assert_eq!(LeaderMessage::try_from(wire).unwrap(), fence);

        let view = ViewRecord {
            epoch: 3,
            replication: 2,
            members: vec![(MemberId("m-1".into()), "a:1".into())],
        };
        let view = LeaderMessage {
            txid: TxId::view(3).into(),
            body: Body::View {
                view,
                next: true,
                follows: 2,
            },
            ..fence
        };
        let wire: rpc::LeaderMsg = view.clone().into();
        assert_eq!(
            (wire.action, wire.txid.as_str()),
            (rpc::Action::Commit as i32, "0.3")
        );
        assert_eq!(LeaderMessage::try_from(wire.clone()).unwrap(), view);
        let mut bad = wire.clone();
        bad.txid = "0.4".into();
        assert!(LeaderMessage::try_from(bad).unwrap_err().contains("0.3"));
        let mut bad = wire.clone();
        bad.view.as_mut().unwrap().addresses.clear();
        assert!(
            LeaderMessage::try_from(bad).is_err(),
            "an address per member"
        );
        let mut bad = wire;
        bad.view.as_mut().unwrap().member_ids[0] = "no spaces".into();
        assert!(LeaderMessage::try_from(bad).is_err());
    }

    #[test]
    fn frames_carry_several_messages_in_order() {
        let decide = |seq| LeaderMessage {
            txid: TxId { epoch: 1, seq }.into(),
            body: Body::decide(Outcome::Commit),
            epoch: 1,
            low_water: None,
            cluster: None,
            protocol: PROTOCOL,
        };
        let messages: Vec<_> = (1..=3).map(decide).collect();
        let frame = frame_of_messages(messages.clone()).unwrap();
        assert_eq!(frame.batch.len(), 2);
        assert_eq!(messages_of_frame(frame).unwrap(), messages);
        assert!(frame_of_messages(Vec::new()).is_none());

        let mut nested = frame_of_messages(messages.clone()).unwrap();
        nested.batch[0].batch.push(rpc::LeaderMsg::default());
        assert!(messages_of_frame(nested).is_err());
    }

    #[test]
    fn responses_round_trip_with_reports_and_batches() {
        let report = InquiryReport {
            prepared: vec![ReportedTxn {
                txid: TxId { epoch: 2, seq: 7 },
                key: "k".into(),
                participants: vec!["a:1".into()],
                failed: false,
            }],
            committed: vec![TxId { epoch: 2, seq: 5 }, TxId { epoch: 2, seq: 6 }],
            committed_failed: vec![TxId { epoch: 2, seq: 6 }],
            aborted: vec![TxId { epoch: 1, seq: 9 }],
            low_water: Some(TxId { epoch: 1, seq: 3 }),
            member_id: Some("m-1".into()),
        };
        let mut bad = rpc::InquiryReport::from(&report);
        bad.member_id = "x".repeat(65);
        assert!(
            InquiryReport::try_from(bad).is_err(),
            "a member id is bounded"
        );
        let txid = TxnId::from(TxId::fence(3));
        let replies = vec![
            Reply::Report(report.clone()).to_wire(&txid, Some("c")),
            Reply::Vote(Outcome::Commit).to_wire(&TxnId::parse("3.1"), Some("c")),
            Reply::Ack.to_wire(&TxnId::Legacy, None),
        ];
        let frame = frame_of_responses(replies).unwrap();
        let read: Vec<_> = replies_of_frame(frame)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(read[0].answer, Answer::Report(Some(report)));
        assert_eq!(read[0].cluster_id.as_deref(), Some("c"));
        assert_eq!(read[0].protocol, PROTOCOL);
        assert_eq!(read[1].answer, Answer::Vote(Outcome::Commit));
        assert_eq!(read[2].txid, TxnId::Legacy);
        assert_eq!(read[2].answer, Answer::Ack);

        let classic = rpc::Response {
            action: rpc::Action::Ack as i32,
            ..Default::default()
        };
        let read = FollowerReply::try_from(classic).unwrap();
        assert_eq!((read.answer, read.protocol), (Answer::Ack, 0));
        let bad = rpc::Response {
            action: rpc::Action::Ack as i32,
            report: Some(rpc::InquiryReport {
                committed: vec!["x".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(FollowerReply::try_from(bad).is_err());
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
                txn: TxnSpec::write("k".into(), Some("v".into())),
                participants: Vec::new(),
                recipient: None,
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
                txid: "1".repeat(200),
                ..Default::default()
            },
            rpc::LeaderMsg {
                participants: vec![String::new()],
                ..Default::default()
            },
            rpc::LeaderMsg {
                participants: vec!["a".into(); MAX_PARTICIPANTS + 1],
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
