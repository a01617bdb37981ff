//! The leader's side of a change of the members (DESIGN §8), and of who answers, beside
//! the core.
//!
//! - **Catch-up.** The core journals the next view and sends it; the followers that
//!   hold keys in it catch up from one another (`catch_up.rs`). This task asks each of
//!   them, a few times a second, over `rpc.FollowerReads/CatchUp`, whether it has; once
//!   all have, it tells the core ([`Coordinator::caught_up`]), which puts the next view
//!   in force. What they report is kept for operators (`tpc members list`, `tpc status`).
//! - **Leases and silences.** Every [`RENEW_EVERY`] it grants every follower the lease
//!   for direct reads (`lease.rs`), and tells the core how long each has not answered;
//!   with `--member-timeout`, the core removes a member silent that long and re-admits
//!   it when it answers again (`Membership::due_change`). Each grant's answer carries
//!   the follower's last key count (`key_count.rs`), kept for operators too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use tonic::transport::Channel;

use super::coordinator::Coordinator;
use super::lease::RENEW_EVERY;
use crate::limits::MAX_GRPC_MESSAGE_BYTES;
use crate::net::{self, Address};
use crate::proto::rpc;
use crate::proto::rpc::follower_reads_client::FollowerReadsClient;

/// How often the followers catching up are asked.
const ASK_EVERY: Duration = Duration::from_millis(200);
/// How long one follower's answer may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the change under way stands, as the followers catching up last reported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MoveProgress {
    /// The next view's epoch; 0: no change under way.
    pub epoch: u64,
    /// Keys and bytes copied so far, summed over the followers catching up.
    pub keys: u64,
    pub bytes: u64,
    /// The followers not caught up yet, each with what it waits for.
    pub waiting: Vec<(String, String)>,
}

/// What the followers report, for operators: the change under way, and the keys each
/// holds.
#[derive(Default)]
pub struct Reports {
    progress: Mutex<MoveProgress>,
    /// Per follower address, the keys in its store at its last count.
    keys: Mutex<HashMap<String, u64>>,
}

impl Reports {
    /// The keys in `follower`'s store at its last count, if it has reported one.
    pub fn keys(&self, follower: &str) -> Option<u64> {
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.get(follower).copied()
    }

    fn set_keys(&self, follower: &str, count: u64) {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.insert(follower.to_string(), count);
    }

    /// The progress as last reported.
    pub fn progress(&self) -> MoveProgress {
        self.progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set(&self, progress: MoveProgress) {
        *self.progress.lock().unwrap_or_else(|p| p.into_inner()) = progress;
    }
}

/// Grants leases, reports silences and asks the followers catching up on the next
/// view, until the leader stops. `member_timeout`: see the module documentation.
pub async fn watch(
    coordinator: Arc<Coordinator>,
    reports: Arc<Reports>,
    member_timeout: Option<Duration>,
) {
    // Two loops, so that a slow or dead follower in one never delays the other: a
    // lease must be renewed on time whatever a catch-up's poll waits for.
    tokio::join!(
        grant_leases(&coordinator, &reports, member_timeout),
        poll_catch_up(&coordinator, &reports)
    );
}

/// Grants leases every [`RENEW_EVERY`] and reports the silences to the core.
async fn grant_leases(
    coordinator: &Coordinator,
    reports: &Reports,
    member_timeout: Option<Duration>,
) {
    let mut clients: HashMap<String, FollowerReadsClient<Channel>> = HashMap::new();
    let mut ticks = tokio::time::interval(RENEW_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leases = Leases::new(coordinator, Instant::now());
    loop {
        ticks.tick().await;
        let view_epoch = coordinator
            .core()
            .membership()
            .current()
            .map_or(0, |v| v.epoch);
        let silent = leases.grant(&mut clients, view_epoch, reports).await;
        coordinator.silences(silent, member_timeout);
    }
}

/// Asks the followers catching up on the next view, every [`ASK_EVERY`].
async fn poll_catch_up(coordinator: &Coordinator, reports: &Reports) {
    let mut clients: HashMap<String, FollowerReadsClient<Channel>> = HashMap::new();
    let mut ticks = tokio::time::interval(ASK_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let (epoch, followers) = {
            let core = coordinator.core();
            let membership = core.membership();
            let Some(next) = membership.next() else {
                reports.set(MoveProgress::default());
                continue;
            };
            let followers: Vec<String> = membership
                .catching_up()
                .into_iter()
                .map(|f| core.followers()[f].clone())
                .collect();
            (next.epoch, followers)
        };
        let mut progress = MoveProgress {
            epoch,
            ..MoveProgress::default()
        };
        for follower in followers {
            match ask(&mut clients, &follower, epoch).await {
                Ok(reply) => {
                    progress.keys += reply.keys;
                    progress.bytes += reply.bytes;
                    if !reply.done {
                        progress.waiting.push((follower, reply.waiting_for));
                    }
                }
                Err(why) => progress.waiting.push((follower, why)),
            }
        }
        let done = progress.waiting.is_empty();
        reports.set(progress);
        if done {
            coordinator.caught_up(epoch);
        }
    }
}

/// The followers' leases: when each last answered.
struct Leases {
    followers: Vec<String>,
    cluster_id: String,
    epoch: u64,
    answered: Vec<Instant>,
}

impl Leases {
    fn new(coordinator: &Coordinator, now: Instant) -> Leases {
        let core = coordinator.core();
        Leases {
            followers: core.followers().to_vec(),
            cluster_id: core.cluster_id().to_string(),
            epoch: core.epoch(),
            answered: vec![now; core.followers().len()],
        }
    }

    /// Grants every follower the lease, all at once; returns how long each has not
    /// answered (`None`: it answered now), and keeps the key counts they report in
    /// `reports`. A classic follower, which has no leases, answers UNIMPLEMENTED: it
    /// answers.
    async fn grant(
        &mut self,
        clients: &mut HashMap<String, FollowerReadsClient<Channel>>,
        view_epoch: u64,
        reports: &Reports,
    ) -> Vec<Option<Duration>> {
        let started = Instant::now();
        let mut calls = Vec::new();
        for follower in &self.followers {
            let Ok(client) = client(clients, follower) else {
                calls.push(None);
                continue;
            };
            let mut client = client.clone();
            let request = rpc::LeaseRequest {
                cluster_id: self.cluster_id.clone(),
                epoch: self.epoch,
                view_epoch,
            };
            // Any answer but a timeout or a transport error means the follower is up:
            // one refused the lease (behind the view in force), or a classic follower
            // that has none (UNIMPLEMENTED), answers too.
            // A round waits for its slowest answer: at most until the next one is due,
            // so a dead follower never holds up the others' leases.
            calls.push(Some(async move {
                match tokio::time::timeout(RENEW_EVERY, client.lease(request)).await {
                    Ok(Ok(reply)) => {
                        let reply = reply.into_inner();
                        if reply.keys_counted {
                            reports.set_keys(follower, reply.keys);
                        }
                        true
                    }
                    Ok(Err(status)) => !matches!(
                        status.code(),
                        tonic::Code::Unavailable
                            | tonic::Code::Unknown
                            | tonic::Code::DeadlineExceeded
                    ),
                    Err(_) => false,
                }
            }));
        }
        let answers = futures::future::join_all(calls.into_iter().map(|call| async move {
            match call {
                Some(call) => call.await,
                None => false,
            }
        }))
        .await;
        answers
            .into_iter()
            .enumerate()
            .map(|(f, answered)| {
                if answered {
                    self.answered[f] = started;
                    None
                } else {
                    Some(started.saturating_duration_since(self.answered[f]))
                }
            })
            .collect()
    }
}

/// The client of `follower`'s `FollowerReads`, made once.
fn client<'c>(
    clients: &'c mut HashMap<String, FollowerReadsClient<Channel>>,
    follower: &str,
) -> Result<&'c mut FollowerReadsClient<Channel>, String> {
    if !clients.contains_key(follower) {
        let address: Address = follower.parse()?;
        let channel = net::connect_lazy(&address, ASK_TIMEOUT)?;
        let client = FollowerReadsClient::new(channel)
            .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
        clients.insert(follower.to_string(), client);
    }
    Ok(clients.get_mut(follower).expect("inserted"))
}

/// Asks `follower` whether it caught up on the next view of `epoch`.
async fn ask(
    clients: &mut HashMap<String, FollowerReadsClient<Channel>>,
    follower: &str,
    epoch: u64,
) -> Result<rpc::CatchUpReply, String> {
    let client = client(clients, follower)?;
    let request = rpc::CatchUpRequest { view_epoch: epoch };
    match tokio::time::timeout(ASK_TIMEOUT, client.catch_up(request)).await {
        Ok(Ok(reply)) => Ok(reply.into_inner()),
        Ok(Err(status)) => Err(status.message().to_string()),
        Err(_) => Err(format!("no answer within {ASK_TIMEOUT:?}")),
    }
}
