//! Mutual TLS on every connection (DESIGN §10): client to leader, leader to follower,
//! follower to follower, leader to leader.
//!
//! A process turns TLS on once, at start ([`install`], from `--tls-cert`, `--tls-key`
//! and `--tls-ca`); from then on every dial ([`super::connect`], [`super::connect_lazy`])
//! and every listener ([`super::Listener::serve`]) of the process uses it. Those are the
//! only places where tpc dials or listens, so no link, read pool, Raft channel or
//! termination peer can be left in plaintext.
//!
//! Every node and every tool holds a certificate signed by the cluster's CA, and trusts
//! nothing else. The errors are meant to be read by the operator at both ends:
//!
//! - A server checks a client's certificate after the handshake, not in it, so that it
//!   can refuse over gRPC (`UNAUTHENTICATED`, [`super::refuse`]) with the reason, rather
//!   than with a TLS alert that the client would report as a broken connection. The
//!   client's proof that it holds the certificate's key is still checked in the
//!   handshake, and a refused connection never reaches the node's services.
//! - A plaintext client is answered the same way; a TLS client of a plaintext node is
//!   told, by its own error, that the node seems to run without TLS; both nodes log it.
//! - A client checks the server's certificate in the handshake (signed by the CA, and
//!   naming the host it dialed), as HTTPS does.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::Stream;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::HandshakeSignatureValid;
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName,
    RootCertStore, ServerConfig, SignatureScheme,
};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::StreamExt;

use super::refuse::{self, Prefixed};
use super::Address;

/// How long a peer may take over its TLS handshake before the server gives up on it.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The first byte of every TLS connection: a handshake record.
pub(super) const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The three files of `--tls-cert`, `--tls-key` and `--tls-ca`.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// This process's certificate (PEM), signed by the CA; intermediates may follow it.
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA certificate (PEM) that signs every node's and every tool's certificate.
    pub ca: PathBuf,
}

/// A process's TLS settings: what it presents, and whom it trusts.
pub struct Tls {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    /// The CA's check of a certificate chain, run on each client after its handshake.
    clients: Arc<dyn ClientCertVerifier>,
}

static INSTALLED: OnceLock<Arc<Tls>> = OnceLock::new();

/// Turns TLS on for every connection this process makes or accepts from now on.
/// Called once, at start, before any listener or dial; a second call is an error.
pub fn install(files: &TlsFiles) -> Result<(), String> {
    let tls = Tls::load(files)?;
    INSTALLED
        .set(Arc::new(tls))
        .map_err(|_| "TLS is already set up in this process".to_string())
}

/// The process's TLS settings, if [`install`] turned TLS on.
pub(crate) fn installed() -> Option<Arc<Tls>> {
    INSTALLED.get().cloned()
}

fn read(flag: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()))
}

impl Tls {
    /// Reads and checks the three files: each must parse, and the certificate must be
    /// signed by the CA (so that a mix-up is found at start, not by the first peer).
    pub fn load(files: &TlsFiles) -> Result<Tls, String> {
        let cert = read("--tls-cert", &files.cert)?;
        let key = read("--tls-key", &files.key)?;
        let ca = read("--tls-ca", &files.ca)?;
        Tls::from_pem(&cert, &key, &ca).map_err(|e| {
            format!(
                "TLS (--tls-cert {}, --tls-key {}, --tls-ca {}): {e}",
                files.cert.display(),
                files.key.display(),
                files.ca.display()
            )
        })
    }

    /// As [`Tls::load`], from the files' contents.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8], ca_pem: &[u8]) -> Result<Tls, String> {
        let tls = Tls::from_pem_unchecked(cert_pem, key_pem, ca_pem)?;
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("the certificate is not PEM: {e}"))?;
        tls.clients
            .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
            .map_err(|e| {
                format!(
                    "the certificate does not pass the CA's check: {}",
                    certificate_problem(&e)
                )
            })?;
        Ok(tls)
    }

    /// As [`Tls::from_pem`], without checking this process's own certificate against
    /// the CA: for tests that play a peer the CA did not sign.
    pub(crate) fn from_pem_unchecked(
        cert_pem: &[u8],
        key_pem: &[u8],
        ca_pem: &[u8],
    ) -> Result<Tls, String> {
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("the certificate is not PEM: {e}"))?;
        if chain.is_empty() {
            return Err("the certificate file holds no certificate".into());
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| format!("the key file holds no private key: {e}"))?;
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(ca_pem) {
            let ca = ca.map_err(|e| format!("the CA file is not PEM: {e}"))?;
            roots
                .add(ca)
                .map_err(|e| format!("the CA file holds a bad certificate: {e}"))?;
        }
        if roots.is_empty() {
            return Err("the CA file holds no certificate".into());
        }
        let roots = Arc::new(roots);
        // ring builds with the C compiler every Rust toolchain has; rustls deprecates
        // it only because it lacks post-quantum key exchange (aws-lc-rs has it, with a
        // heavier build).
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());

        let clients = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| format!("the CA cannot check certificates: {e}"))?;

        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(Arc::new(CheckedAfterHandshake(clients.clone())))
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| format!("the key does not go with the certificate: {e}"))?;
        server.alpn_protocols = vec![b"h2".to_vec()];

        let mut client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("the key does not go with the certificate: {e}"))?;
        client.alpn_protocols = vec![b"h2".to_vec()];

        Ok(Tls {
            server: Arc::new(server),
            client: Arc::new(client),
            clients,
        })
    }

    /// Runs the TLS handshake with `addr` over `io`, a connection to it; the error says
    /// what went wrong in words.
    pub(crate) async fn secure(&self, addr: &Address, io: Box<dyn Io>) -> io::Result<Box<dyn Io>> {
        let connector = TlsConnector::from(self.client.clone());
        let name = server_name(addr)?;
        match connector.connect(name, io).await {
            Ok(stream) => Ok(Box::new(stream)),
            Err(e) => Err(io::Error::new(e.kind(), handshake_problem(addr, &e))),
        }
    }

    /// The connections of `incoming` that pass the handshake and the CA's check; every
    /// other one is refused (with the reason, where the peer can be told) and logged.
    pub(crate) fn accept<S, IO>(
        self: Arc<Self>,
        incoming: S,
    ) -> impl Stream<Item = io::Result<Accepted<IO>>>
    where
        S: Stream<Item = io::Result<IO>> + Send + 'static,
        IO: AsyncRead + AsyncWrite + Peer + Unpin + Send + 'static,
    {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        let accepting = tokio::spawn(async move {
            tokio::pin!(incoming);
            while let Some(connection) = incoming.next().await {
                let io = match connection {
                    Ok(io) => io,
                    Err(e) => {
                        // Left to the server, which knows which accept errors are fatal.
                        if sender.send(Err(e)).is_err() {
                            return;
                        }
                        continue;
                    }
                };
                let tls = self.clone();
                let sender = sender.clone();
                tokio::spawn(async move {
                    let peer = io.peer();
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.handshake(io, &peer)).await {
                        Ok(Some(accepted)) => {
                            let _ = sender.send(Ok(accepted));
                        }
                        Ok(None) => {}
                        Err(_) => refuse::log_refusal(&peer, &format!("refused a connection: no TLS handshake within {HANDSHAKE_TIMEOUT:?}")),
                    }
                });
            }
        });
        Accepting {
            receiver,
            _accepting: crate::task::AbortOnDrop(accepting),
        }
    }

    async fn handshake<IO>(&self, mut io: IO, peer: &str) -> Option<Accepted<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let first = io.read_u8().await.ok()?;
        let io = Prefixed::new(first, io);
        if first != TLS_HANDSHAKE_RECORD {
            refuse::log_refusal(peer, "refused a plaintext connection: this node requires TLS (--tls-cert, --tls-key, --tls-ca)");
            let refusal = "this node requires mutual TLS and this connection is plaintext: give --tls-cert, --tls-key and --tls-ca";
            // In a task of its own: answering outlasts the handshake's time limit.
            tokio::spawn(refuse::unauthenticated(io, refusal.to_string()));
            return None;
        }
        let stream = match TlsAcceptor::from(self.server.clone()).accept(io).await {
            Ok(stream) => stream,
            // A client that connected and hung up at once (a reachability check) can
            // leave the last handshake message unsent: nothing was refused.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                ) =>
            {
                tracing::debug!(%peer, error = %e, "a client hung up during the TLS handshake");
                return None;
            }
            Err(e) => {
                refuse::log_refusal(
                    peer,
                    &format!("refused a connection: {}", accept_problem(&e)),
                );
                return None;
            }
        };
        let refusal = match stream.get_ref().1.peer_certificates() {
            None | Some([]) => {
                "no client certificate was given: give --tls-cert and --tls-key".to_string()
            }
            Some([leaf, intermediates @ ..]) => {
                match self
                    .clients
                    .verify_client_cert(leaf, intermediates, UnixTime::now())
                {
                    Ok(_) => return Some(Accepted(Box::new(stream))),
                    Err(e) => format!(
                        "the client's certificate is refused: {}",
                        certificate_problem(&e)
                    ),
                }
            }
        };
        refuse::log_refusal(peer, &format!("refused a TLS connection: {refusal}"));
        tokio::spawn(refuse::unauthenticated(stream, refusal));
        None
    }
}

/// A byte stream of either kind, after a handshake.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Who is at the other end of an accepted connection, for logs.
pub(crate) trait Peer {
    /// The peer's address, or what is known of it.
    fn peer(&self) -> String;
}

impl Peer for TcpStream {
    fn peer(&self) -> String {
        self.peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into())
    }
}

impl Peer for UnixStream {
    fn peer(&self) -> String {
        "a local process (Unix socket)".into()
    }
}

/// An accepted connection that passed the handshake and the CA's check.
pub(crate) struct Accepted<IO>(Box<tokio_rustls::server::TlsStream<Prefixed<IO>>>);

impl<IO: tonic::transport::server::Connected> tonic::transport::server::Connected for Accepted<IO> {
    type ConnectInfo = IO::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.get_ref().0.get_ref().connect_info()
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for Accepted<IO> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

forward_async_write!(Accepted, 0, AsyncRead + AsyncWrite + Unpin);

/// The accepted connections, until the server drops it (which stops accepting).
struct Accepting<IO> {
    receiver: tokio::sync::mpsc::UnboundedReceiver<io::Result<Accepted<IO>>>,
    _accepting: crate::task::AbortOnDrop,
}

impl<IO> Stream for Accepting<IO> {
    type Item = io::Result<Accepted<IO>>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.receiver.poll_recv(cx)
    }
}

/// The name the server's certificate must carry: the host dialed (a name or an IP
/// address), or `localhost` for a Unix socket.
fn server_name(addr: &Address) -> io::Result<ServerName<'static>> {
    let host = match addr {
        Address::Tcp(hostport) => {
            let host = hostport
                .rsplit_once(':')
                .map_or(hostport.as_str(), |(host, _)| host);
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string()
        }
        Address::Unix(_) => "localhost".to_string(),
    };
    ServerName::try_from(host.clone()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{host:?} cannot be checked against a certificate"),
        )
    })
}

/// A client's failed handshake with `addr`, in words.
fn handshake_problem(addr: &Address, e: &io::Error) -> String {
    let why = match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(problem)) => {
            format!(
                "its certificate is refused: {}",
                describe_certificate_error(problem)
            )
        }
        Some(rustls::Error::AlertReceived(alert)) => {
            format!("it refused the handshake ({})", alert_meaning(*alert))
        }
        Some(rustls::Error::InvalidMessage(_)) => {
            "it did not answer in TLS: it seems to run without TLS".to_string()
        }
        Some(other) => other.to_string(),
        None if matches!(
            e.kind(),
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
        ) =>
        {
            "it closed the connection during the TLS handshake: it seems to run without TLS"
                .to_string()
        }
        None => e.to_string(),
    };
    format!("TLS handshake with {addr} failed: {why}")
}

/// A server's failed handshake with a client, in words.
fn accept_problem(e: &io::Error) -> String {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::AlertReceived(alert)) => {
            format!(
                "the client refused the TLS handshake ({})",
                alert_meaning(*alert)
            )
        }
        Some(other) => format!("TLS handshake failed: {other}"),
        None if e.kind() == io::ErrorKind::UnexpectedEof => {
            "the client closed the connection during \
            the TLS handshake; it may not trust this node's certificate (signed by another CA?)"
                .to_string()
        }
        None => format!("TLS handshake failed: {e}"),
    }
}

fn alert_meaning(alert: AlertDescription) -> String {
    match alert {
        AlertDescription::UnknownCA
        | AlertDescription::BadCertificate
        | AlertDescription::DecryptError => {
            format!("alert {alert:?}: the other end does not trust the certificate it was shown; is it signed by the same CA?")
        }
        AlertDescription::CertificateRequired => {
            format!("alert {alert:?}: it wants a client certificate")
        }
        other => format!("alert {other:?}"),
    }
}

fn certificate_problem(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(problem) => describe_certificate_error(problem),
        other => other.to_string(),
    }
}

fn describe_certificate_error(problem: &CertificateError) -> String {
    match problem {
        CertificateError::UnknownIssuer | CertificateError::BadSignature => {
            "it is not signed by this cluster's CA (--tls-ca)".to_string()
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => "it has expired".to_string(),
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "it is not valid yet (check the clocks)".to_string()
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            format!("it does not name the host dialed ({problem})")
        }
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => format!(
            "it is not for this use ({problem}); node certificates need both server and client authentication"
        ),
        other => other.to_string(),
    }
}

/// The CA's check of a client certificate, made by [`Tls::accept`] after the handshake
/// so that a refusal can be explained; the handshake itself checks only that the
/// client holds the key of the certificate it presents.
#[derive(Debug)]
struct CheckedAfterHandshake(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for CheckedAfterHandshake {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
