//! A follower's side of cooperative termination (DESIGN §9), beside its state owner:
//! the rule is `termination.rs`'s, and the core answers (`FollowerCore::answer_termination`).
//!
//! Every transaction this follower has held prepared for `--termination-timeout` with no
//! decision (its leader is down, or cut off) is asked about: every other participant
//! its PREPARE named gets `rpc.FollowerReads/AskDecision`, as the member the view the
//! PREPARE ran in places there, all at once. If the answers decide it ([`termination::decision`]), the
//! decision goes to the state owner exactly as the leader's would (a decision that
//! arrives twice changes nothing); if not, the transaction is asked about again after
//! another timeout. Transactions of classic tooling name no participants and are never
//! asked about.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::follower_core::StreamId;
use super::follower_state::{Command, Shared};
use super::message::{Body, LeaderMessage, Outcome, TxId, PROTOCOL};
use super::termination::{self, Known};
use crate::limits::MAX_GRPC_MESSAGE_BYTES;
use crate::net::{self, Address};
use crate::proto::rpc;
use crate::proto::rpc::follower_reads_client::FollowerReadsClient;

/// The default `--termination-timeout`: a few of the leader's default vote timeouts.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The stream a decision learned from the other participants comes in on (the leader's
/// streams are numbered from 1).
const PEERS: StreamId = 0;
/// How long one participant's answer may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// A prepared transaction, as the asking needs it.
struct Waiting {
    txid: TxId,
    participants: Vec<String>,
    ids: Vec<String>,
}

/// Asks about every transaction prepared here longer than `timeout`, until the follower
/// stops.
pub async fn run(shared: Arc<Shared>, inbox: mpsc::Sender<Command>, timeout: Duration) {
    // When each transaction was first seen prepared, and when it was last asked about.
    let mut since: HashMap<TxId, (Instant, Option<Instant>)> = HashMap::new();
    let mut ticks = tokio::time::interval((timeout / 4).max(Duration::from_millis(50)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let now = Instant::now();
        let (cluster_id, me, prepared) = {
            let core = shared.core();
            let prepared: Vec<Waiting> = core
                .prepared()
                .iter()
                .filter(|(_, p)| !p.participants.is_empty())
                .filter_map(|(txid, p)| {
                    Some(Waiting {
                        txid: txid.ordered()?,
                        participants: p.participants.clone(),
                        ids: core.participant_ids(p),
                    })
                })
                .collect();
            let cluster_id = core.cluster_id().unwrap_or_default().to_string();
            let me = core.member_id().unwrap_or_default().to_string();
            (cluster_id, me, prepared)
        };
        since.retain(|txid, _| prepared.iter().any(|w| w.txid == *txid));
        for waiting in prepared {
            let (first, asked) = since.entry(waiting.txid).or_insert((now, None));
            let due = now.duration_since(*first) >= timeout
                && asked.is_none_or(|at| now.duration_since(at) >= timeout);
            if !due {
                continue;
            }
            *asked = Some(now);
            let answers = ask_all(&cluster_id, &me, &waiting).await;
            let decided = termination::decision(answers.iter().copied());
            let label = decided.map_or("none", |(outcome, _)| outcome.as_str());
            crate::metrics::TERMINATIONS
                .with_label_values(&[label])
                .inc();
            let Some((outcome, failed)) = decided else {
                tracing::info!(txid = %waiting.txid, ?answers, "no decision yet, and the other participants cannot tell it: the transaction stays prepared");
                continue;
            };
            tracing::warn!(txid = %waiting.txid, outcome = outcome.as_str(), failed, "decision learned from the other participants (cooperative termination)");
            learn(&inbox, waiting.txid, outcome, failed).await;
        }
    }
}

/// Asks every other participant of `waiting`, at once.
async fn ask_all(cluster_id: &str, me: &str, waiting: &Waiting) -> Vec<Known> {
    let asks = waiting
        .participants
        .iter()
        .enumerate()
        .filter_map(|(i, address)| {
            let member = waiting.ids.get(i).cloned().unwrap_or_default();
            (member.is_empty() || member != me).then_some((address.clone(), member))
        })
        .map(|(address, member)| {
            let request = rpc::DecisionRequest {
                cluster_id: cluster_id.to_string(),
                txid: waiting.txid.to_string(),
                member_id: member,
            };
            async move {
                match ask(&address, request).await {
                    Ok(known) => known,
                    Err(why) => {
                        tracing::debug!(participant = %address, error = %why, "asking for a decision failed");
                        Known::Unknown
                    }
                }
            }
        });
    futures::future::join_all(asks).await
}

/// Asks the participant at `address`.
async fn ask(address: &str, request: rpc::DecisionRequest) -> Result<Known, String> {
    let address: Address = address.parse()?;
    let channel = net::connect(&address, ASK_TIMEOUT).await?;
    let mut client = FollowerReadsClient::new(channel)
        .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
    let reply = tokio::time::timeout(ASK_TIMEOUT, client.ask_decision(request))
        .await
        .map_err(|_| format!("no answer within {ASK_TIMEOUT:?}"))?
        .map_err(|s| s.message().to_string())?
        .into_inner();
    use rpc::decision_reply::Known as Wire;
    Ok(match Wire::try_from(reply.known) {
        Ok(Wire::Voted) => Known::Voted,
        Ok(Wire::Committed) => Known::Committed {
            failed: reply.failed,
        },
        Ok(Wire::Aborted) => Known::Aborted,
        Ok(Wire::Unknown) | Err(_) => Known::Unknown,
    })
}

/// Hands the state owner the decision of `txid`, as the leader's would come.
async fn learn(inbox: &mpsc::Sender<Command>, txid: TxId, outcome: Outcome, failed: bool) {
    let msg = LeaderMessage {
        txid: txid.into(),
        body: Body::Decide { outcome, failed },
        epoch: 0,
        low_water: None,
        cluster: None,
        protocol: PROTOCOL,
    };
    let (reply, applied) = oneshot::channel();
    let command = Command::Message {
        stream: PEERS,
        msg: Box::new(msg),
        reply,
    };
    if inbox.send(command).await.is_ok() {
        if let Ok(Err(status)) = applied.await {
            tracing::warn!(%txid, error = %status.message(), "the learned decision could not be applied; asking again later");
        }
    }
}
