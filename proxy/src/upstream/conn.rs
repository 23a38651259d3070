//! Upstream connections, plain or mTLS, as one type the data path reads and writes without
//! knowing which; and the dialer that makes them, checking an mTLS peer's SPIFFE ID against the
//! ones the control plane listed for the endpoint before a byte of the request is sent.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::config::Security;
use crate::identity::Identity;
use crate::stream::{Flushing, Stream};

/// Why a request could not be sent upstream.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be opened (refused, unreachable, timed out, handshake failed).
    #[error("connect: {0}")]
    Connect(String),
    /// The connection broke or the peer spoke bad HTTP.
    #[error("upstream: {0}")]
    Http(#[from] hyper::Error),
    /// An HTTP/2 stream or connection failed (reset, GOAWAY, I/O).
    #[error("upstream: {0}")]
    H2(h2::Error),
    /// The fast path's exchange: the upstream closed before its response head was whole.
    #[error("upstream {0}")]
    Closed(&'static str),
    /// The fast path's exchange: the upstream answered with something that is not HTTP the
    /// proxy can forward.
    #[error("upstream: {0}")]
    Protocol(&'static str),
}

/// How long before a certificate it was made with expires an idle mTLS connection stops being
/// reused: no pooled connection outlives its certificate (a request already on it finishes).
pub const RECYCLE_BEFORE_EXPIRY: Duration = Duration::from_secs(1);

/// A connection to an endpoint.
#[derive(Debug)]
pub enum Conn {
    /// Plain TCP.
    Plain(TcpStream),
    /// mTLS over TCP.
    Tls(Box<TlsConn>),
}

/// An mTLS connection, and when the first of the two certificates it was made with expires.
#[derive(Debug)]
pub struct TlsConn {
    stream: Flushing<tokio_rustls::client::TlsStream<TcpStream>>,
    expires: Instant,
}

impl Conn {
    /// The TCP socket under it.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => s.stream.get_ref().get_ref().0,
        }
    }

    /// Whether the peer agreed by ALPN to speak HTTP/2 on it.
    pub fn negotiated_h2(&self) -> bool {
        match self {
            Self::Plain(_) => false,
            Self::Tls(s) => s.stream.get_ref().get_ref().1.alpn_protocol() == Some(b"h2"),
        }
    }

    /// When it must stop being reused: shortly before a certificate it was made with expires.
    pub fn reuse_until(&self) -> Option<Instant> {
        match self {
            Self::Plain(_) => None,
            Self::Tls(s) => Some(s.expires - RECYCLE_BEFORE_EXPIRY),
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
        if self.reuse_until().is_some_and(|t| Instant::now() >= t) {
            return false;
        }
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
                Pin::new(&mut s.stream)
                    .poll_read(&mut cx, &mut buf)
                    .is_pending()
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
            Self::Tls(s) => Pin::new(&mut s.stream).poll_read(cx, buf),
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
            Self::Tls(s) => Pin::new(&mut s.stream).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(&mut s.stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(&mut s.stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(&mut s.stream).poll_shutdown(cx),
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
    /// falling back to plaintext. `offer_h2` offers HTTP/2 by ALPN on mTLS
    /// ([`Conn::negotiated_h2`] says whether the peer took it).
    pub async fn dial(
        &self,
        addr: SocketAddr,
        security: &Security,
        timeout: Duration,
        offer_h2: bool,
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
            let config = match offer_h2 {
                true => &certified.tls.client_h2,
                false => &certified.tls.client,
            };
            let connector = tokio_rustls::TlsConnector::from(config.clone());
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
            // The first of the two certificates to expire bounds the connection's reuse.
            let peer_expiry = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|leaf| x509_parser::parse_x509_certificate(leaf).ok())
                .map(|(_, c)| c.validity().not_after.timestamp());
            let now_unix = crate::identity::unix_seconds(SystemTime::now()) as i64;
            let own = certified.not_after;
            let left = own.duration_since(SystemTime::now()).unwrap_or_default();
            let left = match peer_expiry {
                Some(t) => left.min(Duration::from_secs(t.saturating_sub(now_unix).max(0) as u64)),
                None => left,
            };
            Ok(Conn::Tls(Box::new(TlsConn {
                stream: Flushing::new(tls),
                expires: Instant::now() + left,
            })))
        };
        tokio::time::timeout(timeout, dial)
            .await
            .map_err(|_| SendError::Connect(format!("{addr}: timed out after {timeout:?}")))?
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::identity::Certified;
    use crate::identity::tls::tests::TestCa;

    /// A client that finds at an endpoint's address a workload other than the one the control
    /// plane listed refuses it before sending anything; one without a certificate cannot dial
    /// mTLS at all, and does not fall back to plaintext.
    #[tokio::test]
    async fn an_mtls_peer_must_be_the_identity_listed_for_its_endpoint() {
        let ca = TestCa::new();
        let api = ca.fresh("spiffe://td/ns/a/sa/api");
        let web = ca.fresh("spiffe://td/ns/a/sa/web");
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = api.server.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let acceptor = tokio_rustls::TlsAcceptor::from(server.clone());
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(s).await {
                        let _ = tls.write_all(b"hi").await;
                        let _ = tls.flush().await;
                    }
                });
            }
        });
        let identity = Arc::new(Identity::default());
        identity.set(Certified::for_tests("spiffe://td/ns/a/sa/web", web));
        let dialer = Dialer::new(Some(identity));
        let mtls = |ids: &[&str]| Security::Mtls {
            peer_ids: ids.iter().map(|s| s.to_string()).collect(),
        };
        let second = Duration::from_secs(1);

        let mut conn = dialer
            .dial(addr, &mtls(&["spiffe://td/ns/a/sa/api"]), second, false)
            .await
            .unwrap();
        assert!(matches!(conn, Conn::Tls(_)));
        let mut hi = [0u8; 2];
        conn.read_exact(&mut hi).await.unwrap();
        assert_eq!(&hi, b"hi");
        assert!(dialer.dial(addr, &mtls(&[]), second, false).await.is_ok());

        let err = dialer
            .dial(addr, &mtls(&["spiffe://td/ns/a/sa/db"]), second, false)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("spiffe://td/ns/a/sa/api, not one of"), "{err}");
        let err = Dialer::new(None)
            .dial(addr, &mtls(&["spiffe://td/ns/a/sa/api"]), second, false)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("no workload certificate"), "{err}");
    }

    /// An idle mTLS connection is not reused once the first of its two certificates is about to
    /// expire (a plain one has no such end).
    #[tokio::test]
    async fn an_idle_mtls_connection_is_not_reused_past_its_certificate() {
        let ca = TestCa::new();
        let roots = std::slice::from_ref(&ca.root);
        let started = SystemTime::now() - Duration::from_secs(60);
        // The server's certificate has 5 s left; the client's an hour.
        let api = ca.certify(
            "spiffe://td/ns/a/sa/api",
            started,
            Duration::from_secs(65),
            roots,
        );
        let web = ca.fresh("spiffe://td/ns/a/sa/web");
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let tls = tokio_rustls::TlsAcceptor::from(api.server).accept(s).await;
            // Held open, idle, as a pooled connection's server does.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(tls);
        });
        let identity = Arc::new(Identity::default());
        identity.set(Certified::for_tests("spiffe://td/ns/a/sa/web", web));
        let security = Security::Mtls {
            peer_ids: Arc::from(Vec::<String>::new()),
        };
        let mut conn = Dialer::new(Some(identity))
            .dial(addr, &security, Duration::from_secs(1), false)
            .await
            .unwrap();
        let left = conn.reuse_until().unwrap() - Instant::now();
        assert!(
            left > Duration::from_secs(2) && left <= Duration::from_secs(4),
            "{left:?}"
        );
        tokio::time::pause();
        assert!(conn.still_idle());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!conn.still_idle(), "reused past its certificate");
    }
}
