//! The fault layer of one direction of one stream: a *lane*.
//!
//! A lane takes messages from a source stream in arrival order, decides each one's fate
//! with its own RNG ([`decide`], a fixed number of draws per message, so decisions depend
//! only on the seed and the position of the message), and forwards what survives through
//! a FIFO queue: each entry is due at its arrival time plus its delay, and is forwarded
//! once it is due and everything ahead of it has gone. Replayed messages wait in a side
//! list, counting further arrivals, and join the queue behind the message that releases
//! them.

use std::collections::VecDeque;
use std::time::Duration;

use futures::{Stream, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use tonic::Status;

use super::{FaultControl, Faults};
use crate::proto::rpc;

/// Which way messages flow through a lane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Leader to follower: `LeaderMsg`s.
    Down,
    /// Follower to leader: `Response`s.
    Up,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Direction::Down => "leader->follower",
            Direction::Up => "follower->leader",
        }
    }
}

/// The faults that apply to one direction.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LaneFaults {
    /// Probability of dropping a message.
    pub drop: f64,
    /// Probability of forwarding a message twice.
    pub dup: f64,
    /// Probability of delivering a message again later.
    pub replay: f64,
    /// Probability of cutting the stream.
    pub cut: f64,
    /// Delay range in milliseconds.
    pub delay_ms: (u64, u64),
}

impl LaneFaults {
    /// The part of `faults` that applies in `direction`.
    pub fn of(faults: &Faults, direction: Direction) -> LaneFaults {
        let (drop, dup) = match direction {
            Direction::Down => (faults.drop, faults.dup),
            Direction::Up => (faults.drop_reply, faults.dup_reply),
        };
        LaneFaults {
            drop,
            dup,
            replay: faults.replay,
            cut: faults.cut,
            delay_ms: faults.delay_ms,
        }
    }
}

/// The fate of one arriving message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// End both streams; the message is lost.
    pub cut: bool,
    /// How many times to forward it now: 0 (dropped), 1, or 2 (duplicated).
    pub copies: usize,
    /// Deliver it once more after this many further messages.
    pub replay_after: Option<u32>,
    /// How long it waits before it may be forwarded.
    pub delay: Duration,
}

/// Fewest and most further messages after which a replayed message comes again.
const REPLAY_GAP: (u32, u32) = (1, 20);

/// Decides the fate of one message. Always makes the same draws, whatever the faults, so
/// a lane's later decisions do not depend on which faults fired earlier.
pub fn decide(rng: &mut StdRng, faults: &LaneFaults) -> Decision {
    let cut_roll: f64 = rng.random();
    let drop_roll: f64 = rng.random();
    let dup_roll: f64 = rng.random();
    let replay_roll: f64 = rng.random();
    let gap = rng.random_range(REPLAY_GAP.0..=REPLAY_GAP.1);
    let (min, max) = faults.delay_ms;
    let delay = Duration::from_millis(rng.random_range(min..=max.max(min)));
    let cut = cut_roll < faults.cut;
    let dropped = cut || drop_roll < faults.drop;
    Decision {
        cut,
        copies: match (dropped, dup_roll < faults.dup) {
            (true, _) => 0,
            (false, false) => 1,
            (false, true) => 2,
        },
        replay_after: (!dropped && replay_roll < faults.replay).then_some(gap),
        delay,
    }
}

/// The RNG of one direction of one stream, derived from the proxy's seed.
pub fn stream_rng(seed: u64, stream: u64, direction: Direction) -> StdRng {
    let salt = match direction {
        Direction::Down => 0x5eed_d0d0_0000_0001,
        Direction::Up => 0x5eed_0b0b_0000_0002,
    };
    StdRng::seed_from_u64(mix(mix(seed ^ salt).wrapping_add(stream)))
}

/// splitmix64's finaliser: nearby inputs (stream 1, 2, ...) give unrelated seeds.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A message short enough to log (values may be megabytes).
pub trait Describe {
    /// One line naming the message.
    fn describe(&self) -> String;
}

impl Describe for rpc::LeaderMsg {
    fn describe(&self) -> String {
        let kind = rpc::MessageType::try_from(self.r#type)
            .map(|t| t.as_str_name())
            .unwrap_or("?");
        let action = rpc::Action::try_from(self.action)
            .map(|a| a.as_str_name())
            .unwrap_or("?");
        format!("{kind}/{action} txid={:?}", self.txid)
    }
}

impl Describe for rpc::Response {
    fn describe(&self) -> String {
        let action = rpc::Action::try_from(self.action)
            .map(|a| a.as_str_name())
            .unwrap_or("?");
        format!("{action} txid={:?}", self.txid)
    }
}

impl Describe for rpc::ReadRequest {
    fn describe(&self) -> String {
        format!("read id={}", self.id)
    }
}

impl Describe for rpc::ReadReply {
    fn describe(&self) -> String {
        format!("read reply id={} code={}", self.id, self.code)
    }
}

/// How a lane ended.
#[derive(Debug)]
pub enum LaneEnd {
    /// Its source ended cleanly and everything queued was forwarded.
    Finished,
    /// Its source failed with this status (after everything queued was forwarded).
    Failed(Status),
    /// A cut fault fired.
    Cut,
    /// The receiving side is gone.
    Closed,
}

/// One lane: what it needs besides its source and outlet.
pub struct Lane {
    /// Its direction.
    pub direction: Direction,
    /// The number of its stream, for logs.
    pub stream: u64,
    /// Its RNG ([`stream_rng`]).
    pub rng: StdRng,
    /// The proxy's faults, read at every message.
    pub control: FaultControl,
}

impl Lane {
    /// Forwards `source` through the faults into `outlet` (which returns false once the
    /// receiver is gone) until the source ends, a cut fires, or the outlet closes.
    pub async fn run<T, S, O>(mut self, mut source: S, mut outlet: O) -> LaneEnd
    where
        T: Clone + Describe,
        S: Stream<Item = Result<T, Status>> + Unpin,
        O: FnMut(T) -> bool,
    {
        let mut queue: VecDeque<(Instant, T)> = VecDeque::new();
        let mut replays: Vec<(u32, T)> = Vec::new();
        let mut ended: Option<LaneEnd> = None;
        loop {
            let due = queue.front().map(|(at, _)| *at);
            if due.is_none() {
                if let Some(end) = ended {
                    return end;
                }
            }
            tokio::select! {
                item = source.next(), if ended.is_none() => match item {
                    Some(Ok(msg)) => {
                        if !self.arrive(msg, &mut queue, &mut replays) {
                            return LaneEnd::Cut;
                        }
                    }
                    Some(Err(status)) => ended = Some(LaneEnd::Failed(status)),
                    None => ended = Some(LaneEnd::Finished),
                },
                _ = sleep_until(due) => {
                    if let Some((_, msg)) = queue.pop_front() {
                        if !outlet(msg) {
                            return LaneEnd::Closed;
                        }
                    }
                }
            }
        }
    }

    /// Handles one arriving message; false if it cuts the stream.
    fn arrive<T>(
        &mut self,
        msg: T,
        queue: &mut VecDeque<(Instant, T)>,
        replays: &mut Vec<(u32, T)>,
    ) -> bool
    where
        T: Clone + Describe,
    {
        let faults = LaneFaults::of(&self.control.get(), self.direction);
        let decision = decide(&mut self.rng, &faults);
        let (stream, direction) = (self.stream, self.direction.name());
        if decision.cut {
            tracing::debug!(stream, direction, msg = %msg.describe(), "fault: cut the stream");
            return false;
        }
        let due = Instant::now() + decision.delay;
        match decision.copies {
            0 => tracing::debug!(stream, direction, msg = %msg.describe(), "fault: drop"),
            2 => tracing::debug!(stream, direction, msg = %msg.describe(), "fault: duplicate"),
            _ => {}
        }
        if !decision.delay.is_zero() {
            tracing::trace!(stream, direction, delay = ?decision.delay, "delay");
        }
        for _ in 0..decision.copies {
            queue.push_back((due, msg.clone()));
        }
        // Earlier replays count this message; those whose turn has come follow it.
        let mut i = 0;
        while i < replays.len() {
            replays[i].0 -= 1;
            if replays[i].0 == 0 {
                let (_, old) = replays.remove(i);
                tracing::debug!(stream, direction, msg = %old.describe(), "fault: replay an old message");
                queue.push_back((due, old));
            } else {
                i += 1;
            }
        }
        if let Some(after) = decision.replay_after {
            tracing::debug!(stream, direction, msg = %msg.describe(), after, "fault: will replay");
            replays.push((after, msg));
        }
        true
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decisions(seed: u64, faults: &LaneFaults, n: usize) -> Vec<Decision> {
        let mut rng = stream_rng(seed, 1, Direction::Down);
        (0..n).map(|_| decide(&mut rng, faults)).collect()
    }

    #[test]
    fn no_faults_forward_everything_once() {
        let all = decisions(1, &LaneFaults::default(), 200);
        assert!(all.iter().all(|d| *d
            == Decision {
                cut: false,
                copies: 1,
                replay_after: None,
                delay: Duration::ZERO
            }));
    }

    #[test]
    fn decisions_follow_the_seed() {
        let faults = LaneFaults {
            drop: 0.3,
            dup: 0.3,
            replay: 0.1,
            cut: 0.01,
            delay_ms: (0, 200),
        };
        assert_eq!(decisions(7, &faults, 300), decisions(7, &faults, 300));
        assert_ne!(decisions(7, &faults, 300), decisions(8, &faults, 300));
        let mut down = stream_rng(7, 1, Direction::Down);
        let mut up = stream_rng(7, 1, Direction::Up);
        let mut other_stream = stream_rng(7, 2, Direction::Down);
        let first: Vec<u64> = (0..4).map(|_| down.random()).collect();
        assert_ne!(first, (0..4).map(|_| up.random()).collect::<Vec<u64>>());
        assert_ne!(
            first,
            (0..4).map(|_| other_stream.random()).collect::<Vec<u64>>()
        );
    }

    #[test]
    fn certain_faults_always_fire() {
        let all = |f: LaneFaults| decisions(3, &f, 100);
        assert!(all(LaneFaults {
            drop: 1.0,
            ..Default::default()
        })
        .iter()
        .all(|d| d.copies == 0 && d.replay_after.is_none()));
        assert!(all(LaneFaults {
            dup: 1.0,
            ..Default::default()
        })
        .iter()
        .all(|d| d.copies == 2));
        assert!(all(LaneFaults {
            replay: 1.0,
            ..Default::default()
        })
        .iter()
        .all(|d| matches!(d.replay_after, Some(1..=20))));
        assert!(all(LaneFaults {
            cut: 1.0,
            ..Default::default()
        })
        .iter()
        .all(|d| d.cut && d.copies == 0));
        assert!(all(LaneFaults {
            delay_ms: (5, 9),
            ..Default::default()
        })
        .iter()
        .all(|d| (5..=9).contains(&d.delay.as_millis())));
    }
}
