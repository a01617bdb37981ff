//! Two-phase commit: the protocol cores and the runtime that drives them.
//!
//! A write is one transaction: the leader journals `begin` (id, key, followers) while it
//! sends PREPARE to every follower over its long-lived stream, and collects votes (a
//! follower locks the key and journals its vote before it answers COMMIT; no answer
//! within the vote timeout counts as ABORT). It journals the decision, answers the
//! client, and delivers the decision to every follower that got the PREPARE until each
//! ACKs; a follower journals and applies it before it unlocks the key and ACKs.
//! DESIGN.md §1 states the guarantees this gives; the README states their limits.
//!
//! The code is split the way the protocol's rules and its plumbing differ:
//!
//! - **Cores**, pure state machines with no I/O: [`follower_core`] (votes, locks,
//!   decisions, idempotence, legacy messages, cluster membership) and [`leader_core`]
//!   (the transaction table, recovery, low-water marks). They return effects in
//!   write-ahead order; journal replay goes through the same code. Their tests read as
//!   the rule book, and `simulation.rs` (tests only) drives them through adversarial
//!   schedules.
//! - **Runtime**, which carries the effects out: [`follower`] (a state-owner thread,
//!   the gRPC services), [`coordinator`] (runs the transactions, many at once),
//!   [`leader`] (the client API; its reads go out through `reads.rs`, one stream per
//!   follower), [`link`] (one task and one stream per follower: ordering,
//!   retransmission, reconnection) and [`admin`] (the operator's status).
//! - **Edges**: [`message`] converts wire messages to domain types and back, in one
//!   place; [`records`] encodes journal records.

pub mod admin;
pub mod coordinator;
pub mod follower;
mod follower_batch;
pub mod follower_core;
mod follower_state;
pub mod leader;
pub mod leader_core;
pub mod link;
pub mod link_core;
pub mod message;
mod reads;
pub mod records;
pub mod recovery;
pub mod trace;

#[cfg(test)]
mod simulation;
