//! Cutting a node off the network on purpose, and healing it: the `cut` and `heal`
//! commands of the cluster console (`scripts/cluster.sh`), for watching a partition
//! happen to a real cluster.
//!
//! Only with `TPC_CUTTABLE=1` in a node's environment: then SIGUSR1 cuts the node off
//! and SIGUSR2 heals it. While cut, every connection the node has, makes or accepts
//! fails at its next read or write, as under a real partition (a peer that sends
//! nothing notices nothing, as with TCP). Its HTTP endpoints (live view, metrics) stay
//! up, so the cut can be watched. Without the variable the signals keep their default
//! effect, and a connection pays one relaxed atomic load per read or write.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The environment variable that lets SIGUSR1 and SIGUSR2 cut and heal the node.
pub const CUTTABLE_VAR: &str = "TPC_CUTTABLE";

static CUT: AtomicBool = AtomicBool::new(false);

fn cut_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "this node's network is cut (the cluster console's `cut`)",
    )
}

/// Whether the node is cut off now.
pub fn is_cut() -> bool {
    CUT.load(Ordering::Relaxed)
}

/// With [`CUTTABLE_VAR`] set to 1, cuts the node off on SIGUSR1 and heals it on SIGUSR2,
/// from a task of the current runtime; otherwise does nothing.
pub fn listen_for_signals() -> io::Result<()> {
    if std::env::var(CUTTABLE_VAR).as_deref() != Ok("1") {
        return Ok(());
    }
    use tokio::signal::unix::{signal, SignalKind};
    let mut cut = signal(SignalKind::user_defined1())?;
    let mut heal = signal(SignalKind::user_defined2())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                Some(()) = cut.recv() => {
                    CUT.store(true, Ordering::Relaxed);
                    tracing::warn!("network cut (SIGUSR1): every connection now fails");
                }
                Some(()) = heal.recv() => {
                    CUT.store(false, Ordering::Relaxed);
                    tracing::warn!("network healed (SIGUSR2)");
                }
                else => return,
            }
        }
    });
    Ok(())
}

/// Refuses to dial while the node is cut off.
pub(crate) fn check_dial() -> io::Result<()> {
    if is_cut() {
        Err(cut_error())
    } else {
        Ok(())
    }
}

/// A connection that fails while the node is cut off.
pub(crate) struct Cuttable<IO>(pub(crate) IO);

impl<IO: tonic::transport::server::Connected> tonic::transport::server::Connected for Cuttable<IO> {
    type ConnectInfo = IO::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.connect_info()
    }
}

impl<IO: super::tls::Peer> super::tls::Peer for Cuttable<IO> {
    fn peer(&self) -> String {
        self.0.peer()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Cuttable<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Cuttable<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
