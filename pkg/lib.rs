//! tpc: a small, strongly consistent replicated key-value store.
//!
//! One leader serves clients; every follower holds a full copy; every write is made
//! atomic across all followers with two-phase commit over one long-lived bidirectional
//! gRPC stream per follower. `DESIGN.md` (in the project's shared folder) is the contract;
//! the README tells how to run it.
//!
//! - [`journal`]: the append-only, checksummed line journal every node writes ahead, and
//!   its group-commit writer.
//! - [`kvstore`]: the follower's file-per-key store.
//! - [`txn`]: multi-key transactions (`Txn`): validation and evaluation.
//! - [`placement`]: the hash ring: which followers hold a key in a view (DESIGN §7).
//! - [`tpc`]: the protocol cores (pure state machines) and the runtime around them.
//! - [`client`]: the client library used by the shell, `tpc status`, the tests and the
//!   tools.
//! - [`bench`]: `tpc bench`, the closed-loop load generator.
//! - [`proxy`]: `tpc proxy`, a seeded fault-injecting message proxy; [`crash`]: crash
//!   points; [`check`]: the linearizability checker of the chaos test.
//! - [`server`], [`http`], [`metrics`]: what operators see: gRPC health and reflection,
//!   `/metrics` and `/healthz`.
//! - [`member`]: a follower's member id, kept in its journal directory.
//! - [`net`], [`limits`], [`dirlock`], [`txid`]: addresses, sockets and mutual TLS, input limits,
//!   directory locks, transaction ids (which are also versions).
//! - [`wire`]: what every gRPC server accepts off the wire: the codec of the generated
//!   code, so bytes that do not decode get `INVALID_ARGUMENT`.

use std::path::PathBuf;

pub mod bench;
pub mod check;
pub mod client;
pub mod crash;
pub mod dirlock;
pub mod http;
pub mod journal;
pub mod kvstore;
pub mod limits;
pub mod member;
pub mod metrics;
pub mod net;
pub mod placement;
pub mod proxy;
pub mod raft;
pub mod server;
mod task;
pub mod tpc;
pub mod txid;
pub mod txn;
pub mod wire;

#[cfg(test)]
mod test_disk;

/// The generated wire types (`api/kv.proto`, `pkg/rpc/tpc.proto`, `pkg/rpc/admin.proto`).
pub mod proto {
    /// Client API: package `api`.
    pub mod api {
        tonic::include_proto!("api");
    }
    /// Leader <-> follower protocol: package `rpc`.
    pub mod rpc {
        tonic::include_proto!("rpc");
    }
    /// Both protos as an encoded `FileDescriptorSet`, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("tpc_descriptor");
}

/// A node-level error: what stops a node from starting or running. Errors a client
/// can cause are `tonic::Status`es instead, and never reach this type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The journal failed or is corrupt.
    #[error(transparent)]
    Journal(#[from] journal::Error),
    /// The key-value store failed.
    #[error(transparent)]
    Kv(#[from] kvstore::Error),
    /// A journal record that decodes but is not a valid protocol record.
    #[error("journal {path}: record {index}: {reason}; refusing to start")]
    BadRecord {
        path: PathBuf,
        index: usize,
        reason: String,
    },
    /// A file system operation failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Bad flags or an unusable setup.
    #[error("{0}")]
    Config(String),
    /// The gRPC server failed.
    #[error("server: {0}")]
    Server(#[from] tonic::transport::Error),
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
