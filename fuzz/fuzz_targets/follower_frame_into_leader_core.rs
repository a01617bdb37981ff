//! What reaches a leader's core from its followers (or anyone on their streams), in
//! any order, interleaved with client writes, streams that end or fail to open, time
//! passing, journal writes that end, and operators' member changes: effects, never a
//! panic.
//!
//! The input is a header, then events, one tag byte each:
//!
//! - header: byte 0 chooses the replication (1 to 3 of three followers), whether the
//!   journal writes the core asks for succeed at once, and whether the core starts
//!   from journal lines the input carries (one length byte, then the text: each line
//!   decoded and read as a leader record, as a restart reads its journal);
//! - a raw frame: one length byte, then bytes decoded as a `Response` frame, exactly
//!   as the link reads them, on a chosen stream;
//! - replies: answers to messages the core really sent (so that txids, streams and
//!   clusters meet), each shaped by a few bytes: the expected answer or a wrong one,
//!   another cluster or protocol, the wrong stream, a fence's report naming what the
//!   follower claims to know; several make one batched frame;
//! - a stream that ends or could not open; a client write (a put, a delete or a
//!   transaction with compares and GETs on a few keys); time passing (or up to the
//!   core's next deadline); a journal write that ends (well, failed, broken); a member
//!   change; the followers' silences.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tpc::journal::decode_line;
use tpc::proto::{api, rpc};
use tpc::tpc::leader_core::{Effect, JobId, JournalFailure, LeaderCore};
use tpc::tpc::link_core::LinkEffect;
use tpc::tpc::message::{replies_of_frame, Body, LeaderMessage, PROTOCOL};
use tpc::tpc::records::LeaderRecord;
use tpc::txn::{Compare, Target, TxnOp, TxnSpec};

const FOLLOWERS: usize = 3;
const KEYS: [&str; 4] = ["a", "b", "c", "d"];
/// The messages remembered per follower, to answer.
const REMEMBERED: usize = 32;
/// Events per input, at most.
const MAX_EVENTS: usize = 400;

/// The input, read a byte at a time (zeros once it is used up).
struct Input<'a> {
    data: &'a [u8],
}

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let (taken, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        taken
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// What the core asked for, as a follower would see it.
#[derive(Default)]
struct Link {
    current: Option<u64>,
    sent: Vec<(u64, LeaderMessage)>,
}

struct World {
    core: LeaderCore,
    links: Vec<Link>,
    jobs: Vec<JobId>,
    auto_journal: bool,
    now: Duration,
    write: u64,
}

impl World {
    /// Takes the core's effects until it has none, remembering what a follower and
    /// the journal would see; with `auto_journal`, every journal write succeeds.
    fn settle(&mut self) {
        for _ in 0..8 {
            let effects = self.core.take_effects(self.now);
            if effects.is_empty() {
                return;
            }
            for effect in effects {
                match effect {
                    Effect::Journal { job: Some(job), .. } | Effect::Checkpoint { job, .. } => {
                        self.jobs.push(job)
                    }
                    Effect::Link { follower, effect } => {
                        let link = &mut self.links[follower];
                        match effect {
                            LinkEffect::Open { stream } => link.current = Some(stream),
                            LinkEffect::Send {
                                stream, messages, ..
                            } => {
                                link.sent.extend(messages.into_iter().map(|m| (stream, m)));
                                let over = link.sent.len().saturating_sub(REMEMBERED);
                                link.sent.drain(..over);
                            }
                            LinkEffect::Close { stream } => {
                                if link.current == Some(stream) {
                                    link.current = None;
                                }
                            }
                        }
                    }
                    Effect::Journal { job: None, .. }
                    | Effect::Answer { .. }
                    | Effect::Trace { .. }
                    | Effect::Fatal(_) => {}
                }
            }
            if self.auto_journal {
                for job in std::mem::take(&mut self.jobs) {
                    self.core.journaled(job, Ok(()), self.now);
                }
            }
        }
    }

    fn stream(&self, f: usize, choice: u8) -> u64 {
        match (choice % 4, self.links[f].current) {
            (0..=2, Some(current)) => current,
            (_, current) => current.unwrap_or(0) + u64::from(choice % 3),
        }
    }

    /// Follower `f`'s answer to a message it was sent, shaped by `input`; and the
    /// stream to send it on.
    fn reply(&self, f: usize, input: &mut Input) -> Option<(u64, rpc::Response)> {
        let link = &self.links[f];
        let pick = input.byte() as usize;
        let kind = input.byte();
        let flags = input.byte();
        let (stream, message) = link.sent.iter().rev().nth(pick % link.sent.len().max(1))?;
        let mut txid = message.txid.to_string();
        if flags & 0x40 != 0 {
            txid = match kind / 8 % 4 {
                0 => String::new(),
                1 => "x".into(),
                2 => format!("{}.0", self.core.epoch()),
                _ => link.sent[pick / 7 % link.sent.len()].1.txid.to_string(),
            };
        }
        let cluster_id = match flags & 3 {
            0 | 1 => self.core.cluster_id().to_string(),
            2 => String::new(),
            _ => "another cluster".into(),
        };
        let protocol = match (flags >> 2) & 3 {
            0 | 1 => PROTOCOL,
            2 => 0,
            _ => PROTOCOL + 1,
        };
        let stream = match (flags >> 4) & 3 {
            0 | 1 => *stream,
            2 => link.current.unwrap_or(*stream),
            _ => *stream + 1,
        };
        let mut response = rpc::Response {
            txid,
            cluster_id,
            protocol,
            ..Default::default()
        };
        let evaluated = flags & 0x80 != 0;
        let action = match (kind % 8, &message.body) {
            (0..=2, Body::Prepare { txn, .. }) => {
                if evaluated || !txn.compares.is_empty() {
                    let succeeded = kind & 0x40 == 0;
                    response.failed = !succeeded;
                    let gets = txn
                        .branch(succeeded)
                        .iter()
                        .filter(|op| matches!(op, TxnOp::Get(_)))
                        .count();
                    let extra = usize::from(evaluated && kind & 0x80 != 0);
                    response.results = (0..gets + extra)
                        .map(|i| result(input.byte(), KEYS[i % KEYS.len()]))
                        .collect();
                }
                rpc::Action::Commit as i32
            }
            (0..=2, Body::Fence) | (5, _) => {
                response.report = Some(self.report(f, input));
                rpc::Action::Ack as i32
            }
            (0..=2, Body::Decide { .. } | Body::View { .. }) | (4, _) => rpc::Action::Ack as i32,
            (3, _) => rpc::Action::Abort as i32,
            (6, _) => {
                response.failed = evaluated;
                response.results = vec![result(input.byte(), "a")];
                rpc::Action::Commit as i32
            }
            _ if evaluated => 9,
            _ => rpc::Action::Prepare as i32,
        };
        response.action = action;
        Some((stream, response))
    }

    /// What follower `f` claims to know, in a fence's ACK: the transactions it was
    /// sent, each prepared, committed (either branch), aborted or not known.
    fn report(&self, f: usize, input: &mut Input) -> rpc::InquiryReport {
        let mut report = rpc::InquiryReport::default();
        let prepares = self.links[f].sent.iter().filter_map(|(_, m)| match &m.body {
            Body::Prepare {
                txn, participants, ..
            } => Some((m.txid.to_string(), txn, participants)),
            _ => None,
        });
        let mut known = Vec::new();
        for (i, (txid, txn, participants)) in prepares.enumerate().take(12) {
            let fate = if i % 4 == 0 { input.byte() } else { 0 };
            match (fate >> (2 * (i % 4))) & 3 {
                0 => {}
                1 => report.prepared.push(rpc::PreparedTxn {
                    txid: txid.clone(),
                    key: txn.keys().into_iter().next().unwrap_or_default().to_string(),
                    participants: participants.clone(),
                    failed: fate & 0x80 != 0,
                }),
                2 if fate & 1 == 0 => report.committed.push(txid.clone()),
                2 => report.committed_failed.push(txid.clone()),
                _ => report.aborted.push(txid.clone()),
            }
            known.push(txid);
        }
        let mark = input.byte();
        report.low_water = match mark % 4 {
            0 => String::new(),
            1 => format!("{}.0", self.core.epoch()),
            _ => known
                .get(mark as usize / 4 % known.len().max(1))
                .cloned()
                .unwrap_or_default(),
        };
        report.member_id = match mark / 64 {
            0 => String::new(),
            1 | 2 => format!("m{f}"),
            _ => "m0".into(),
        };
        report
    }
}

/// A GET's result: not found, or a value at some version.
fn result(b: u8, key: &str) -> api::TxnResult {
    api::TxnResult {
        key: key.to_string(),
        found: b & 1 == 1,
        value: format!("v{}", b >> 4),
        version: match b % 8 {
            0 | 1 => "1.1".into(),
            2 | 3 => "2.3".into(),
            4 | 5 => "0.0".into(),
            _ => "not a version".into(),
        },
    }
}

/// A client's write, shaped by two bytes.
fn write(a: u8, b: u8) -> TxnSpec {
    let key = |i: u8| KEYS[usize::from(i) % KEYS.len()].to_string();
    match a % 4 {
        0 => TxnSpec::write(key(b), Some(format!("v{}", b / 4))),
        1 => TxnSpec::write(key(b), None),
        _ => {
            let target = match b % 3 {
                0 => Target::Value("v1".into()),
                1 => Target::Version(tpc::txid::TxId {
                    epoch: 1,
                    seq: u64::from(b / 3 % 4),
                }),
                _ => Target::Exists(b & 8 != 0),
            };
            let mut success = vec![TxnOp::Put(key(a / 4), "w".into())];
            if a & 0x10 != 0 {
                success.push(TxnOp::Get(key(a / 32)));
            }
            if a & 0x20 != 0 {
                success.push(TxnOp::Delete(key(a / 64 + 1)));
            }
            TxnSpec {
                compares: vec![Compare {
                    key: key(b / 16),
                    target,
                    equal: b & 0x80 == 0,
                }],
                success,
                failure: if a & 0x80 != 0 {
                    vec![TxnOp::Get(key(b / 64))]
                } else {
                    Vec::new()
                },
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input { data };
    let header = input.byte();
    let replication = usize::from(header % 3) + 1;
    let auto_journal = header & 4 != 0;
    let mut records = Vec::new();
    if header & 8 != 0 {
        let len = usize::from(input.byte());
        let text = String::from_utf8_lossy(input.bytes(len)).into_owned();
        for line in text.lines() {
            if let Ok(record) = decode_line(line) {
                if let Ok(record) = LeaderRecord::try_from(record) {
                    records.push(record);
                }
            }
        }
    }
    let followers: Vec<String> = (1..=FOLLOWERS).map(|i| format!("f{i}")).collect();
    let Ok(start) = LeaderCore::recover(
        records,
        followers,
        replication,
        Duration::from_millis(100),
        || "c".to_string(),
    ) else {
        return;
    };
    let mut world = World {
        core: start.core,
        links: (0..FOLLOWERS).map(|_| Link::default()).collect(),
        jobs: Vec::new(),
        auto_journal,
        now: Duration::ZERO,
        write: 0,
    };
    world.settle();
    for _ in 0..MAX_EVENTS {
        if input.is_empty() {
            break;
        }
        let tag = input.byte();
        let f = usize::from(tag / 16) % FOLLOWERS;
        match tag % 16 {
            0 | 1 => {
                let stream = world.stream(f, input.byte());
                let len = usize::from(input.byte());
                if let Ok(frame) = rpc::Response::decode(input.bytes(len)) {
                    world
                        .core
                        .replies(f, stream, replies_of_frame(frame), world.now);
                }
            }
            2..=6 => {
                let count = usize::from(tag / 64) + 1;
                let mut frame: Option<(u64, rpc::Response)> = None;
                for _ in 0..count {
                    let Some((stream, reply)) = world.reply(f, &mut input) else {
                        break;
                    };
                    match &mut frame {
                        None => frame = Some((stream, reply)),
                        Some((_, first)) => first.batch.push(reply),
                    }
                }
                if let Some((stream, frame)) = frame {
                    world
                        .core
                        .replies(f, stream, replies_of_frame(frame), world.now);
                }
            }
            7 => {
                let stream = world.stream(f, input.byte());
                world
                    .core
                    .stream_ended(f, stream, "ended".into(), world.now);
            }
            8 => {
                let stream = world.stream(f, input.byte());
                world
                    .core
                    .open_failed(f, stream, "refused".into(), world.now);
            }
            9 | 10 => {
                world.write += 1;
                let txn = write(input.byte(), input.byte());
                world.core.submit(world.write, txn, world.now);
            }
            11 => {
                let b = input.byte();
                world.now = match world.core.next_deadline() {
                    Some(at) if b & 1 == 0 => at.max(world.now),
                    _ => world.now + Duration::from_millis(u64::from(b) * 4),
                };
                world.core.tick(world.now);
            }
            12 | 13 => {
                let b = input.byte();
                if !world.jobs.is_empty() {
                    let job = world.jobs.remove(usize::from(b / 4) % world.jobs.len());
                    let result = match b % 4 {
                        0 | 1 => Ok(()),
                        2 => Err(JournalFailure {
                            message: "disk full".into(),
                            broken: false,
                        }),
                        _ => Err(JournalFailure {
                            message: "fsync failed".into(),
                            broken: b & 0x80 != 0,
                        }),
                    };
                    world.core.journaled(job, result, world.now);
                }
            }
            14 => {
                let b = input.byte();
                let address = match b % 8 {
                    0..=2 => format!("f{}", b % 8 + 1),
                    3 => "f4".into(),
                    4 => String::new(),
                    _ => "f1 ".into(),
                };
                let _ = world.core.change_members(&address, b & 0x80 == 0);
            }
            _ => {
                let b = input.byte();
                let silent: Vec<Option<Duration>> = (0..FOLLOWERS)
                    .map(|i| (b >> i & 1 == 1).then(|| Duration::from_millis(u64::from(b) * 40)))
                    .collect();
                let timeout = (b & 0x80 != 0).then(|| Duration::from_millis(500));
                world.core.silences(&silent, timeout);
            }
        }
        world.settle();
    }
});
