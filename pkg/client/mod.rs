//! The client library: a thin, typed wrapper over `KeyValueAPI`, used by the shell, the
//! tests and the tools. Errors are the server's `tonic::Status` (code and message), so
//! callers can tell `NOT_FOUND` from `ABORTED` from `UNAVAILABLE`.

pub mod members;
pub mod output;
pub mod shell;
pub mod status;
mod txn;
mod txn_syntax;

pub use txn::Txn;
pub use txn_syntax::parse_txn;

use std::time::Duration;

use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::limits::MAX_GRPC_MESSAGE_BYTES;
use crate::net::{self, Address};
use crate::proto::api;

/// The leader address the tools use when none is given (the cluster script's leader).
pub const DEFAULT_LEADER: &str = "127.0.0.1:50000";

/// The leader to talk to, of `leaders` (`--leader A,B,C`, DESIGN §9): one address is
/// used as given; of several, the active leader, as the first to answer names it; if
/// none is active yet (the leaders are electing one), the first that answers, which
/// forwards calls once one is.
pub async fn resolve_leader(leaders: &[String], timeout: Duration) -> Result<String, String> {
    if let [one] = leaders {
        return Ok(one.clone());
    }
    if leaders.is_empty() {
        return Err("no leader address given".into());
    }
    let asks = leaders.iter().map(|addr| async move {
        (
            addr,
            status::fetch(addr, timeout.min(Duration::from_secs(2))).await,
        )
    });
    let answers = futures::future::join_all(asks).await;
    let answered: Vec<&String> = answers
        .iter()
        .filter(|(_, answer)| answer.is_ok())
        .map(|(addr, _)| *addr)
        .collect();
    let mut failures = Vec::new();
    let mut first = None;
    for (addr, answer) in &answers {
        match answer {
            Ok(status) if status.role == "active" || status.role == "leader" => {
                return Ok(addr.to_string())
            }
            // The one the others name, unless it is one of ours that did not answer
            // (it may be dead, and they not know yet).
            Ok(status)
                if !status.active_leader.is_empty()
                    && (answered.contains(&&status.active_leader)
                        || !leaders.contains(&status.active_leader)) =>
            {
                return Ok(status.active_leader.clone())
            }
            Ok(_) => first = first.or(Some(addr.to_string())),
            Err(e) => failures.push(format!("{addr}: {e}")),
        }
    }
    first.ok_or_else(|| format!("no leader answered: {}", failures.join("; ")))
}

/// A connection to a tpc node (normally the leader).
#[derive(Clone)]
pub struct Client {
    inner: api::key_value_api_client::KeyValueApiClient<Channel>,
    timeout: Duration,
}

impl Client {
    /// A client for `addr` (`host:port` or `unix:/path`) that connects on first use and
    /// reconnects by itself; each call waits at most `timeout`.
    pub fn new(addr: &str, timeout: Duration) -> Result<Client, String> {
        let addr: Address = addr.parse()?;
        let channel = net::connect_lazy(&addr, timeout)?;
        Ok(Client::from_channel(channel, timeout))
    }

    /// A client over an existing channel.
    pub fn from_channel(channel: Channel, timeout: Duration) -> Client {
        let inner = api::key_value_api_client::KeyValueApiClient::new(channel)
            .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
        Client { inner, timeout }
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(self.timeout);
        request
    }

    /// The value of `key`; `NOT_FOUND` if it is absent.
    pub async fn get(&mut self, key: &str) -> Result<String, Status> {
        let request = self.request(api::GetRequest {
            key: key.to_string(),
        });
        Ok(self.inner.get(request).await?.into_inner().value)
    }

    /// The value of `key` and its version (the id of the transaction that last wrote
    /// it, DESIGN §1.8); `NOT_FOUND` if it is absent.
    pub async fn get_versioned(&mut self, key: &str) -> Result<(String, String), Status> {
        let request = self.request(api::GetRequest {
            key: key.to_string(),
        });
        let answer = self.inner.get(request).await?.into_inner();
        Ok((answer.value, answer.version))
    }

    /// Sets `key` to `value` on every follower, or on none (then `ABORTED` or `UNAVAILABLE`).
    pub async fn put(&mut self, key: &str, value: &str) -> Result<(), Status> {
        let request = self.request(api::PutRequest {
            key: key.to_string(),
            value: value.to_string(),
        });
        self.inner.put(request).await?;
        Ok(())
    }

    /// Removes `key` on every follower, or on none; removing an absent key succeeds.
    pub async fn delete(&mut self, key: &str) -> Result<(), Status> {
        let request = self.request(api::DeleteRequest {
            key: key.to_string(),
        });
        self.inner.delete(request).await?;
        Ok(())
    }

    /// Runs a transaction (DESIGN §6; build one with [`Txn`]): atomically, the success
    /// ops if every compare holds, else the failure ops. The answer says which branch ran
    /// (`succeeded`), what its GETs read, and the version it wrote (empty if it wrote
    /// nothing). Errors as for `put`, and `INVALID_ARGUMENT` naming a broken rule.
    pub async fn txn(
        &mut self,
        txn: impl Into<api::TxnRequest>,
    ) -> Result<api::TxnResponse, Status> {
        let request = self.request(txn.into());
        Ok(self.inner.txn(request).await?.into_inner())
    }

    /// Compare-and-swap: sets `key` to `new` if its value is `expected` (`None`: if it
    /// is absent), in one transaction.
    pub async fn cas(
        &mut self,
        key: &str,
        expected: Option<&str>,
        new: &str,
    ) -> Result<Swap, Status> {
        let txn = match expected {
            Some(expected) => Txn::new().if_value(key, expected),
            None => Txn::new().if_missing(key),
        };
        let answer = self.txn(txn.then_put(key, new).else_get(key)).await?;
        if answer.succeeded {
            return Ok(Swap::Done(answer.version));
        }
        let current = answer
            .results
            .into_iter()
            .next()
            .filter(|read| read.found)
            .map(|read| (read.value, read.version));
        Ok(Swap::Refused(current))
    }
}

/// What [`Client::cas`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Swap {
    /// Swapped; the version written.
    Done(String),
    /// Not swapped: the key's value and version (`None`: absent).
    Refused(Option<(String, String)>),
}

/// One line describing a failed call: the status code's name and the server's message.
pub fn describe(status: &Status) -> String {
    let code = format!("{:?}", status.code());
    let code = code_name(&code);
    if status.message().is_empty() {
        code
    } else {
        format!("{code}: {}", status.message())
    }
}

/// `NotFound` -> `NOT_FOUND`, the spelling gRPC users know.
fn code_name(debug: &str) -> String {
    let mut out = String::new();
    for (i, c) in debug.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_described_with_grpc_code_names() {
        assert_eq!(
            describe(&Status::not_found("key not found")),
            "NOT_FOUND: key not found"
        );
        assert_eq!(describe(&Status::invalid_argument("")), "INVALID_ARGUMENT");
        assert_eq!(describe(&Status::unavailable("x")), "UNAVAILABLE: x");
    }
}
