//! Upstream connections, plain or mTLS, as one type the data path reads and writes without
//! knowing which; and the dialer that makes them, checking an mTLS peer's SPIFFE ID against the
//! ones the control plane listed for the endpoint before a byte of the request is sent.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::pool::SendError;
use crate::config::Security;
use crate::identity::Identity;
use crate::stream::{Flushing, Stream};

/// A connection to an endpoint.
#[derive(Debug)]
pub enum Conn {
    /// Plain TCP.
    Plain(TcpStream),
    /// mTLS over TCP.
    Tls(Box<Flushing<tokio_rustls::client::TlsStream<TcpStream>>>),
}

impl Conn {
    /// The TCP socket under it.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => s.get_ref().get_ref().0,
        }
    }

    /// Whether an idle pooled connection can still carry a request: not closed by the peer, and
    /// nothing unasked for waiting. Costs no system call unless the socket has news. TLS reads
    /// through the session, so records that are no data (a TLS 1.3 session ticket) are taken
    /// in, not mistaken for a response.
    pub fn still_idle(&mut self) -> bool {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        // Readable means closed, or sending what nobody asked for; or only that the last read
        // did not drain the socket's readiness, which one read settles.
        if self.tcp().poll_read_ready(&mut cx).is_pending() {
            return true;
        }
        match self {
            Self::Plain(s) => {
                let mut probe = [0u8; 1];
                matches!(s.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            Self::Tls(s) => {
                let mut probe = [0u8; 1];
                let mut buf = ReadBuf::new(&mut probe);
                Pin::new(&mut **s).poll_read(&mut cx, &mut buf).is_pending()
            }
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

impl Stream for Conn {
    fn reset_on_close(&self) {
        self.tcp().reset_on_close();
    }
}

/// Opens upstream connections: plain TCP, or mTLS with the workload's current certificate.
#[derive(Clone, Debug, Default)]
pub struct Dialer {
    identity: Option<Arc<Identity>>,
}

impl Dialer {
    /// A dialer presenting `identity`'s certificate (none: mTLS endpoints cannot be reached).
    pub fn new(identity: Option<Arc<Identity>>) -> Self {
        Self { identity }
    }

    /// Connects to `addr` as `security` says, within `timeout` (TCP and TLS handshake
    /// together). An mTLS peer must present one of the expected SPIFFE IDs; there is no
    /// falling back to plaintext.
    pub async fn dial(
        &self,
        addr: SocketAddr,
        security: &Security,
        timeout: Duration,
    ) -> Result<Conn, SendError> {
        let dial = async {
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(|e| SendError::Connect(format!("{addr}: {e}")))?;
            let _ = tcp.set_nodelay(true);
            let Security::Mtls { peer_ids } = security else {
                return Ok(Conn::Plain(tcp));
            };
            let certified = self
                .identity
                .as_ref()
                .and_then(|i| i.current())
                .ok_or_else(|| {
                    SendError::Connect(format!("{addr}: mTLS, but no workload certificate yet"))
                })?;
            let connector = tokio_rustls::TlsConnector::from(certified.tls.client.clone());
            let tls = connector
                .connect(ServerName::IpAddress(addr.ip().into()), tcp)
                .await
                .map_err(|e| SendError::Connect(format!("{addr}: TLS handshake: {e}")))?;
            let peer = crate::identity::tls::peer_identity(tls.get_ref().1.peer_certificates());
            if !peer_ids.is_empty() && !peer.as_ref().is_some_and(|p| peer_ids.contains(p)) {
                tracing::warn!(
                    %addr,
                    peer = peer.as_deref().unwrap_or("none"),
                    expected = ?peer_ids,
                    "upstream presented another identity than the control plane listed: refused"
                );
                return Err(SendError::Connect(format!(
                    "{addr}: peer is {}, not one of {peer_ids:?}",
                    peer.as_deref().unwrap_or("no SPIFFE ID")
                )));
            }
            Ok(Conn::Tls(Box::new(Flushing::new(tls))))
        };
        tokio::time::timeout(timeout, dial)
            .await
            .map_err(|_| SendError::Connect(format!("{addr}: timed out after {timeout:?}")))?
    }
}
