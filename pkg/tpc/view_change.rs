//! The leader's side of a change of the members (DESIGN §8), beside the core.
//!
//! The core journals the next view and sends it; the followers that hold keys in it
//! catch up from one another (`catch_up.rs`). This task asks each of them, a few times a
//! second, over `rpc.FollowerReads/CatchUp`, whether it has; once all have, it tells the
//! core ([`Coordinator::caught_up`]), which puts the next view in force. What they
//! report is kept for operators (`tpc members list`, `tpc status`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::transport::Channel;

use super::coordinator::Coordinator;
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

/// The change under way, for operators.
#[derive(Default)]
pub struct Moves {
    progress: Mutex<MoveProgress>,
}

impl Moves {
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

/// Asks the followers catching up on the next view, until the leader stops.
pub async fn watch(coordinator: Arc<Coordinator>, moves: Arc<Moves>) {
    let mut clients: HashMap<String, FollowerReadsClient<Channel>> = HashMap::new();
    let mut ticks = tokio::time::interval(ASK_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let (epoch, followers) = {
            let core = coordinator.core();
            let membership = core.membership();
            let Some(next) = membership.next() else {
                moves.set(MoveProgress::default());
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
        moves.set(progress);
        if done {
            coordinator.caught_up(epoch);
        }
    }
}

/// Asks `follower` whether it caught up on the next view of `epoch`.
async fn ask(
    clients: &mut HashMap<String, FollowerReadsClient<Channel>>,
    follower: &str,
    epoch: u64,
) -> Result<rpc::CatchUpReply, String> {
    if !clients.contains_key(follower) {
        let address: Address = follower.parse()?;
        let channel = net::connect_lazy(&address, ASK_TIMEOUT)?;
        let client = FollowerReadsClient::new(channel)
            .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
        clients.insert(follower.to_string(), client);
    }
    let client = clients.get_mut(follower).expect("inserted");
    let request = rpc::CatchUpRequest { view_epoch: epoch };
    match tokio::time::timeout(ASK_TIMEOUT, client.catch_up(request)).await {
        Ok(Ok(reply)) => Ok(reply.into_inner()),
        Ok(Err(status)) => Err(status.message().to_string()),
        Err(_) => Err(format!("no answer within {ASK_TIMEOUT:?}")),
    }
}
