//! Two-phase commit: the protocol cores and the runtime that drives them.

pub mod admin;
pub mod follower;
pub mod follower_core;
pub mod leader;
pub mod leader_core;
pub mod link;
pub mod message;
pub mod records;

#[cfg(test)]
mod simulation;
