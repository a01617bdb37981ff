//! Two-phase commit: the protocol cores and the runtime that drives them.
pub mod follower_core;
pub mod message;
pub mod records;
