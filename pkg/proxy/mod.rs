//! A fault-injecting proxy for the link between the leader and one follower.
//!
//! Two-phase commit is only as good as its behaviour on a bad network, and a bad network
//! is hard to come by on demand. The proxy sits between the leader and **one** follower
//! (the leader's `--follower` points at the proxy's listening address, the proxy forwards
//! to the follower) and breaks the link on purpose, driven by a seeded random number
//! generator, so a failing run can be replayed with the same `--seed`:
//!
//! ```text
//! tpc proxy --listen 127.0.0.1:6001 --target 127.0.0.1:50001 --drop 0.05 --dup 0.02 --delay-ms 0-200 --seed 7
//! ```
//!
//! It serves `rpc.TwoPhaseCommit/TPCMsg` (and the leader's forwarded reads,
//! `rpc.FollowerReads/Reads`, the same way): each stream from the leader gets its own stream
//! to the follower, opened the way the leader opens one (the first message is queued
//! before the follower's response headers are awaited, because classic peers send them
//! only with their first reply; the leader in turn gets the proxy's headers when the
//! follower's arrive). `LeaderMsg`s flow downstream and `Response`s upstream, each
//! direction through its own fault layer ([`lane`]). The faults, each an independent
//! probability per message:
//!
//! - **drop** (`--drop` downstream, `--drop-reply` upstream): the message is not forwarded;
//! - **dup** (`--dup`, `--dup-reply`): the message is forwarded twice in a row;
//! - **delay** (`--delay-ms MIN-MAX`, both directions): each message waits a random time
//!   in the range, counted from its arrival, before it is forwarded. Order within a
//!   direction is kept, as TCP keeps it: a delayed message holds back the ones behind it;
//! - **replay** (`--replay`, both directions): the message is forwarded, and remembered and
//!   forwarded once more later, after a random 1–20 further messages in that direction:
//!   an old message delivered again, late, after newer ones;
//! - **cut** (`--cut`, both directions): the message is lost and both streams end; the
//!   leader's with `UNAVAILABLE` "proxy cut the stream", the follower's as if the leader
//!   went away. The leader reconnects by itself and gets a fresh stream.
//!
//! When either side ends its stream or fails, the proxy ends the other (a follower's
//! error status is passed to the leader unchanged).
//!
//! The proxy also forwards the `api.KeyValueAPI` unary calls (`Get`, and `Put`/`Delete`,
//! which a follower refuses) to the follower, since the leader reads from its followers
//! at the address it knows them by. Status codes and messages pass through unchanged;
//! `--delay-ms` delays each call, and `--drop` makes a call fail with `UNAVAILABLE`.
//!
//! **It deliberately breaks DESIGN §2's rule "every LeaderMsg gets exactly one Response
//! on the same stream"**: with drops a message gets no answer, with dups and replays it
//! gets two, and a replayed answer arrives after answers to newer messages. tpc's leader
//! must tolerate this, and can, because every message and response carries a transaction
//! id (unmatched responses are ignored, unanswered messages time out). Classic peers,
//! which match answers by position, cannot; run them without reply faults.
//!
//! **Determinism.** Every incoming stream is numbered (1, 2, ...) and each direction of
//! each stream draws from its own RNG, seeded from the proxy's seed, the stream's number
//! and the direction, with a fixed number of draws per message. So the same seed and the
//! same message sequence give the same fault decisions, whatever the timing of the other
//! direction or of other streams. Unary calls share one RNG of their own. Faults can be
//! changed while the proxy runs ([`FaultControl`]), for instance to heal the network at
//! the end of a test; running streams see the change at their next message.

pub mod lane;
mod service;

use std::future::Future;
use std::sync::{Arc, Mutex};

use crate::net::{Address, Listener};
use crate::{Error, Result};

/// Which faults to inject, and how often. Probabilities are per message, in `[0, 1]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// Probability that a `LeaderMsg` (leader to follower) is dropped.
    pub drop: f64,
    /// Probability that a `Response` (follower to leader) is dropped.
    pub drop_reply: f64,
    /// Probability that a `LeaderMsg` is forwarded twice.
    pub dup: f64,
    /// Probability that a `Response` is forwarded twice.
    pub dup_reply: f64,
    /// Each message (and unary call) is delayed by a random time in `[min, max]` milliseconds.
    pub delay_ms: (u64, u64),
    /// Probability that a message (either direction) is delivered again after 1–20 more.
    pub replay: f64,
    /// Probability that a message (either direction) cuts the stream.
    pub cut: f64,
}

impl Faults {
    /// No faults: a transparent proxy.
    pub fn none() -> Faults {
        Faults::default()
    }

    /// Checks that every probability is in `[0, 1]` and the delay range is not reversed.
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (name, p) in [
            ("drop", self.drop),
            ("drop-reply", self.drop_reply),
            ("dup", self.dup),
            ("dup-reply", self.dup_reply),
            ("replay", self.replay),
            ("cut", self.cut),
        ] {
            check_probability(p).map_err(|e| format!("--{name}: {e}"))?;
        }
        let (min, max) = self.delay_ms;
        if min > max {
            return Err(format!(
                "--delay-ms: the minimum {min} is above the maximum {max}"
            ));
        }
        Ok(())
    }
}

fn check_probability(p: f64) -> std::result::Result<(), String> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(format!("{p} is not a probability between 0 and 1"))
    }
}

/// Parses a probability flag: a number between 0 and 1 inclusive.
pub fn parse_probability(text: &str) -> std::result::Result<f64, String> {
    let p: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number; give a probability between 0 and 1"))?;
    check_probability(p)?;
    Ok(p)
}

/// Parses `--delay-ms`: `MIN-MAX` (e.g. `0-200`) or a single number of milliseconds.
pub fn parse_delay_range(text: &str) -> std::result::Result<(u64, u64), String> {
    let number = |part: &str| {
        part.trim().parse::<u64>().map_err(|_| {
            format!("{text:?} is not a delay in milliseconds like 50 or a range like 0-200")
        })
    };
    let (min, max) = match text.split_once('-') {
        Some((min, max)) => (number(min)?, number(max)?),
        None => {
            let ms = number(text)?;
            (ms, ms)
        }
    };
    if min > max {
        return Err(format!(
            "{text:?}: the minimum {min} is above the maximum {max}"
        ));
    }
    Ok((min, max))
}

/// A handle on a running proxy's faults; clones share them.
#[derive(Clone, Debug)]
pub struct FaultControl {
    faults: Arc<Mutex<Faults>>,
}

impl FaultControl {
    fn new(faults: Faults) -> FaultControl {
        FaultControl {
            faults: Arc::new(Mutex::new(faults)),
        }
    }

    /// The faults in force now.
    pub fn get(&self) -> Faults {
        // Nothing panics while holding the lock; a poisoned value is still a valid one.
        self.faults
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Replaces the faults; running streams apply them from their next message.
    pub fn set(&self, faults: Faults) -> std::result::Result<(), String> {
        faults.validate()?;
        tracing::info!(?faults, "proxy faults changed");
        *self
            .faults
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = faults;
        Ok(())
    }

    /// Removes every fault: the proxy becomes transparent.
    pub fn heal(&self) {
        // No faults always validate.
        let _ = self.set(Faults::none());
    }
}

/// How a proxy runs.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// The follower it forwards to.
    pub target: Address,
    /// The faults at start.
    pub faults: Faults,
    /// The seed of every fault decision.
    pub seed: u64,
}

/// A fault-injecting proxy in front of one follower; see the module documentation.
pub struct Proxy {
    config: ProxyConfig,
    control: FaultControl,
}

impl Proxy {
    /// A proxy for `config`; fails if a probability or the delay range is invalid.
    pub fn new(config: ProxyConfig) -> Result<Proxy> {
        config.faults.validate().map_err(Error::Config)?;
        let control = FaultControl::new(config.faults.clone());
        Ok(Proxy { config, control })
    }

    /// The handle that changes this proxy's faults, also while it serves.
    pub fn faults(&self) -> FaultControl {
        self.control.clone()
    }

    /// Serves on `listener` until `shutdown` resolves; then every open stream ends with
    /// `UNAVAILABLE`.
    pub async fn serve(self, listener: Listener, shutdown: impl Future<Output = ()>) -> Result<()> {
        tracing::info!(
            listen = %listener.local_address(),
            target = %self.config.target,
            seed = self.config.seed,
            faults = ?self.control.get(),
            "proxy listening (rerun with --seed {} to repeat its fault decisions)",
            self.config.seed
        );
        service::serve(self.config, self.control, listener, shutdown).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_parse_and_are_checked() {
        assert_eq!(parse_probability("0"), Ok(0.0));
        assert_eq!(parse_probability("0.05"), Ok(0.05));
        assert_eq!(parse_probability("1"), Ok(1.0));
        for bad in ["", "x", "-0.1", "1.01", "NaN", "inf"] {
            assert!(parse_probability(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn delay_ranges_parse_and_are_checked() {
        assert_eq!(parse_delay_range("0-200"), Ok((0, 200)));
        assert_eq!(parse_delay_range("50"), Ok((50, 50)));
        assert_eq!(parse_delay_range(" 5 - 9 "), Ok((5, 9)));
        for bad in ["", "x", "-5", "5-", "200-100", "1.5"] {
            assert!(parse_delay_range(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn invalid_faults_are_refused() {
        let config = |faults| ProxyConfig {
            target: Address::Tcp("127.0.0.1:1".into()),
            faults,
            seed: 0,
        };
        assert!(Proxy::new(config(Faults::none())).is_ok());
        let bad = Faults {
            dup_reply: 2.0,
            ..Faults::none()
        };
        let error = Proxy::new(config(bad.clone())).err().map(|e| e.to_string());
        assert!(error.is_some_and(|e| e.contains("--dup-reply")));
        let control = Proxy::new(config(Faults::none())).map(|p| p.faults());
        assert!(control.is_ok_and(|c| c.set(bad).is_err() && c.get() == Faults::none()));
    }
}
