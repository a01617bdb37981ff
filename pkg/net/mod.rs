//! Addresses, listening and dialing, for TCP and Unix-domain sockets alike.
//!
//! An address is `host:port` or `unix:/path/to.sock` (DESIGN §3). Servers bind dual-stack
//! `[::]` for `--port`, because peers dial both `127.0.0.1` and `localhost`. Clients keep
//! HTTP/2 keepalive pings rare (5 minutes): classic grpcio and grpc-go peers answer
//! frequent pings on idle connections with GOAWAY; dead peers are found by per-message
//! timeouts instead.
//!
//! [`connect`], [`connect_lazy`] and [`Listener::serve`] are the only places where tpc
//! dials or listens, so they are where mutual TLS ([`tls`]) is applied to every
//! connection of a process, and where the cluster console cuts a node off ([`cut`]).

/// `AsyncWrite` for a wrapper of a connection, by handing every call to the
/// wrapped connection in `$field`.
macro_rules! forward_async_write {
    ($wrapper:ident, $field:tt, $($bounds:tt)+) => {
        impl<IO: $($bounds)+> tokio::io::AsyncWrite for $wrapper<IO> {
            fn poll_write(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.$field).poll_write(cx, buf)
            }
            fn poll_write_vectored(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.$field).poll_write_vectored(cx, bufs)
            }
            fn is_write_vectored(&self) -> bool {
                self.$field.is_write_vectored()
            }
            fn poll_flush(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.$field).poll_flush(cx)
            }
            fn poll_shutdown(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.$field).poll_shutdown(cx)
            }
        }
    };
}

pub mod certs;
pub mod cut;
mod refuse;
pub mod tls;
#[cfg(test)]
mod tls_tests;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint, Uri};

use tls::Tls;

/// Interval of HTTP/2 keepalive pings on client connections (DESIGN §2: 5 minutes or more).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(300);

/// A node's address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Address {
    /// `host:port`.
    Tcp(String),
    /// `unix:/path`.
    Unix(PathBuf),
}

impl FromStr for Address {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(format!("address {s:?}: unix: needs a socket path"));
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        let hostport = s.strip_prefix("http://").unwrap_or(s);
        let (host, port) = hostport
            .rsplit_once(':')
            .ok_or_else(|| format!("address {s:?} is not host:port or unix:/path"))?;
        if port.parse::<u16>().is_err() {
            return Err(format!("address {s:?}: bad port {port:?}"));
        }
        let host = if host.is_empty() { "127.0.0.1" } else { host };
        Ok(Address::Tcp(format!("{host}:{port}")))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(hostport) => f.write_str(hostport),
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A bound listening socket.
pub enum Listener {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A Unix-domain socket listener.
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// Binds `--port P` (dual-stack, all interfaces) or `--listen ADDR`.
    pub async fn bind(addr: &ListenAddr) -> std::io::Result<Listener> {
        match addr {
            ListenAddr::Port(port) => Ok(Listener::Tcp(bind_all_interfaces(*port)?)),
            ListenAddr::Addr(Address::Tcp(hostport)) => {
                Ok(Listener::Tcp(TcpListener::bind(hostport.as_str()).await?))
            }
            ListenAddr::Addr(Address::Unix(path)) => {
                remove_stale_socket(path).await?;
                Ok(Listener::Unix(UnixListener::bind(path)?, path.clone()))
            }
        }
    }

    /// The address clients can dial, for logs and tests.
    pub fn local_address(&self) -> String {
        match self {
            Listener::Tcp(l) => match l.local_addr() {
                Ok(a) if a.ip().is_unspecified() => format!("127.0.0.1:{}", a.port()),
                Ok(a) => a.to_string(),
                Err(_) => "?".into(),
            },
            Listener::Unix(_, path) => format!("unix:{}", path.display()),
        }
    }

    /// Serves `router` until `shutdown` resolves; with TLS on ([`tls::install`]), only
    /// to peers that pass the handshake and the CA's check.
    pub async fn serve(
        self,
        router: tonic::transport::server::Router,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), tonic::transport::Error> {
        self.serve_with(router, shutdown, tls::installed()).await
    }

    /// As [`Listener::serve`], with these TLS settings rather than the process's.
    pub(crate) async fn serve_with(
        self,
        router: tonic::transport::server::Router,
        shutdown: impl Future<Output = ()>,
        tls: Option<Arc<Tls>>,
    ) -> Result<(), tonic::transport::Error> {
        match self {
            Listener::Tcp(l) => {
                // Nagle's algorithm would hold small replies back behind delayed ACKs.
                let incoming = TcpListenerStream::new(l).map(|s| {
                    if let Ok(s) = &s {
                        let _ = s.set_nodelay(true);
                    }
                    s
                });
                serve_incoming(router, incoming, shutdown, tls).await
            }
            Listener::Unix(l, path) => {
                let result =
                    serve_incoming(router, UnixListenerStream::new(l), shutdown, tls).await;
                let _ = std::fs::remove_file(path);
                result
            }
        }
    }
}

async fn serve_incoming<IO>(
    router: tonic::transport::server::Router,
    incoming: impl Stream<Item = std::io::Result<IO>> + Send + 'static,
    shutdown: impl Future<Output = ()>,
    tls: Option<Arc<Tls>>,
) -> Result<(), tonic::transport::Error>
where
    IO: AsyncRead + AsyncWrite + Connected + tls::Peer + Unpin + Send + 'static,
    IO::ConnectInfo: Clone + Send + Sync + 'static,
{
    let incoming = incoming.map(|io| io.map(cut::Cuttable));
    match tls {
        Some(tls) => {
            router
                .serve_with_incoming_shutdown(tls.accept(incoming), shutdown)
                .await
        }
        None => {
            let incoming = incoming.map(|io| io.map(refuse::Plaintext::new));
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
    }
}

/// Where a server listens: `--port P` or `--listen ADDR`.
#[derive(Clone, Debug)]
pub enum ListenAddr {
    /// All interfaces, IPv6 and IPv4, on this port.
    Port(u16),
    /// Exactly this address.
    Addr(Address),
}

/// Binds `port` on all interfaces, dual-stack IPv6 and IPv4 where the machine has IPv6.
pub fn bind_all_interfaces(port: u16) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let dual_stack = || -> std::io::Result<Socket> {
        let socket = Socket::new(Domain::IPV6, Type::STREAM, None)?;
        socket.set_only_v6(false)?;
        socket.set_reuse_address(true)?;
        socket.bind(&SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)).into())?;
        Ok(socket)
    };
    let socket = match dual_stack() {
        Ok(s) => s,
        Err(_) => {
            // No IPv6 on this machine: IPv4 only.
            let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
            socket.set_reuse_address(true)?;
            socket.bind(&SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, port)).into())?;
            socket
        }
    };
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket.into())
}

/// A socket file left by a process that is gone is removed; one that still answers is an error.
async fn remove_stale_socket(path: &PathBuf) -> std::io::Result<()> {
    if !path.exists() {
        return Ok(());
    }
    if UnixStream::connect(path).await.is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("{} is in use by another process", path.display()),
        ));
    }
    std::fs::remove_file(path)
}

fn endpoint(addr: &Address, connect_timeout: Duration) -> Result<Endpoint, String> {
    let uri = match addr {
        Address::Tcp(hostport) => format!("http://{hostport}"),
        // Ignored by the Unix connector, but the endpoint needs one.
        Address::Unix(_) => "http://localhost".to_string(),
    };
    Ok(Endpoint::from_shared(uri)
        .map_err(|e| format!("bad address {addr}: {e}"))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(false))
}

/// Connects now; fails if the peer is unreachable within `timeout`.
pub async fn connect(addr: &Address, timeout: Duration) -> Result<Channel, String> {
    connect_with(addr, timeout, tls::installed()).await
}

/// As [`connect`], with these TLS settings rather than the process's.
pub(crate) async fn connect_with(
    addr: &Address,
    timeout: Duration,
    tls: Option<Arc<Tls>>,
) -> Result<Channel, String> {
    let endpoint = endpoint(addr, timeout)?;
    let connecting = endpoint.connect_with_connector(dialer(addr, tls));
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(e)) => Err(describe_transport_error(addr, &e)),
        Err(_) => Err(format!("{addr}: no connection within {timeout:?}")),
    }
}

/// A channel that connects on first use and reconnects by itself (for pooled reads).
pub fn connect_lazy(addr: &Address, timeout: Duration) -> Result<Channel, String> {
    let endpoint = endpoint(addr, timeout)?;
    Ok(endpoint.connect_with_connector_lazy(dialer(addr, tls::installed())))
}

/// A connection a channel dialed.
type Dialed = TokioIo<cut::Cuttable<Box<dyn tls::Io>>>;

/// What channels to `addr` dial with: TCP or a Unix socket, then TLS if it is on; the
/// connection fails while the node is cut off ([`cut`]).
fn dialer(
    addr: &Address,
    tls: Option<Arc<Tls>>,
) -> impl tower::Service<
    Uri,
    Response = Dialed,
    Error = std::io::Error,
    Future = impl Future<Output = std::io::Result<Dialed>> + Send,
> + Send
       + 'static {
    let addr = addr.clone();
    tower::service_fn(move |_: Uri| dial(addr.clone(), tls.clone()))
}

async fn dial(addr: Address, tls: Option<Arc<Tls>>) -> std::io::Result<Dialed> {
    cut::check_dial()?;
    let io: Box<dyn tls::Io> = match &addr {
        Address::Tcp(hostport) => {
            let tcp = TcpStream::connect(hostport.as_str()).await?;
            // Nagle's algorithm would hold small messages back behind delayed ACKs.
            tcp.set_nodelay(true)?;
            Box::new(tcp)
        }
        Address::Unix(path) => Box::new(UnixStream::connect(path).await?),
    };
    let io = match tls {
        Some(tls) => tls.secure(&addr, io).await?,
        None => io,
    };
    Ok(TokioIo::new(cut::Cuttable(io)))
}

fn describe_transport_error(addr: &Address, e: &tonic::transport::Error) -> String {
    use std::error::Error;
    let mut text = format!("{addr}: {e}");
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(&format!(": {part}"));
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse() {
        assert_eq!(
            "localhost:5".parse(),
            Ok(Address::Tcp("localhost:5".into()))
        );
        assert_eq!("http://h:5".parse(), Ok(Address::Tcp("h:5".into())));
        assert_eq!(":5".parse(), Ok(Address::Tcp("127.0.0.1:5".into())));
        assert_eq!("[::1]:5".parse(), Ok(Address::Tcp("[::1]:5".into())));
        assert_eq!(
            "unix:/tmp/a.sock".parse(),
            Ok(Address::Unix("/tmp/a.sock".into()))
        );
        assert_eq!(
            "unix:///tmp/a.sock".parse(),
            Ok(Address::Unix("/tmp/a.sock".into()))
        );
        for bad in ["", "host", "host:x", "host:70000", "unix:"] {
            assert!(bad.parse::<Address>().is_err(), "{bad:?}");
        }
        assert_eq!(Address::Unix("/a".into()).to_string(), "unix:/a");
    }
}
