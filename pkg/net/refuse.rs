//! Refusing a connection in words the peer will show its operator (DESIGN §10).
//!
//! A peer that is refused in the TLS handshake, or whose bytes are dropped, reports a
//! broken connection and nothing more. So a node with TLS answers a plaintext peer,
//! or one whose certificate it refuses, with a gRPC error on every call
//! (`UNAUTHENTICATED`, with the reason), and serves it nothing else. A node without
//! TLS cannot speak TLS to a TLS peer; it closes the connection, which the peer reads
//! as "runs without TLS" (`super::tls`), and logs why.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How long a refused peer is answered before its connection is closed.
const REFUSAL_TIME: Duration = Duration::from_secs(10);

/// gRPC's `UNAUTHENTICATED`.
const UNAUTHENTICATED: u16 = 16;

/// Answers every call on `io` (HTTP/2) with `UNAUTHENTICATED` and `message`, for a
/// while, then closes it.
pub(super) async fn unauthenticated<IO>(io: IO, message: String)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let message = grpc_message(&message);
    let service = hyper::service::service_fn(move |_request| {
        let response = hyper::Response::builder()
            .status(200)
            .header("content-type", "application/grpc")
            .header("grpc-status", UNAUTHENTICATED.to_string())
            .header("grpc-message", message.clone())
            .body(String::new());
        std::future::ready(response)
    });
    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), service);
    let _ = tokio::time::timeout(REFUSAL_TIME, connection).await;
}

/// `text` as a `grpc-message` header: percent-encoded outside printable ASCII.
fn grpc_message(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if (0x20..0x7f).contains(&byte) && byte != b'%' {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// How often the same refusal of the same peer host is logged: a misconfigured peer
/// retries every second or so, and one line says it all.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// Logs a refused connection as a warning, unless the same refusal of the same host
/// was logged within [`REFUSAL_LOG_INTERVAL`] (then at debug level).
pub(super) fn log_refusal(peer: &str, refusal: &str) {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Instant;
    static LOGGED: Mutex<Option<HashMap<(String, String), Instant>>> = Mutex::new(None);
    let host = peer.rsplit_once(':').map_or(peer, |(host, _)| host);
    let now = Instant::now();
    let fresh = {
        let mut logged = LOGGED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let logged = logged.get_or_insert_with(HashMap::new);
        logged.retain(|_, at| now.duration_since(*at) < REFUSAL_LOG_INTERVAL);
        match logged.entry((host.to_string(), refusal.to_string())) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert(now);
                true
            }
        }
    };
    if fresh {
        tracing::warn!(%peer, "{refusal} (the same refusal of this host is logged at most every {REFUSAL_LOG_INTERVAL:?})");
    } else {
        tracing::debug!(%peer, "{refusal}");
    }
}

/// A connection whose first byte was read to tell TLS from plaintext; it reads that
/// byte again first.
pub(crate) struct Prefixed<IO> {
    first: Option<u8>,
    io: IO,
}

impl<IO> Prefixed<IO> {
    pub(super) fn new(first: u8, io: IO) -> Self {
        Prefixed {
            first: Some(first),
            io,
        }
    }

    pub(super) fn get_ref(&self) -> &IO {
        &self.io
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefixed<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(first) = self.first.take() {
            buf.put_slice(&[first]);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

forward_async_write!(Prefixed, io, AsyncWrite + Unpin);

/// A plaintext node's connection: if the peer opens with a TLS handshake, it is
/// logged and closed (the peer then says that this node seems to run without TLS).
pub(crate) struct Plaintext<IO> {
    io: IO,
    /// Whether the first bytes were read and were not TLS.
    checked: bool,
}

impl<IO> Plaintext<IO> {
    pub(crate) fn new(io: IO) -> Self {
        Plaintext { io, checked: false }
    }
}

impl<IO: tonic::transport::server::Connected> tonic::transport::server::Connected
    for Plaintext<IO>
{
    type ConnectInfo = IO::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<IO: AsyncRead + Unpin + super::tls::Peer> AsyncRead for Plaintext<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let start = buf.filled().len();
        let result = Pin::new(&mut self.io).poll_read(cx, buf);
        if !self.checked {
            if let Poll::Ready(Ok(())) = &result {
                match buf.filled().get(start) {
                    Some(&super::tls::TLS_HANDSHAKE_RECORD) => {
                        log_refusal(&self.io.peer(), "refused a TLS connection: this node runs without TLS (start it with --tls-cert, --tls-key and --tls-ca, or the peer without them)");
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "a TLS handshake on a plaintext node",
                        )));
                    }
                    Some(_) => self.checked = true,
                    None => {}
                }
            }
        }
        result
    }
}

forward_async_write!(Plaintext, io, AsyncWrite + Unpin);
