//! The control plane's TLS port (15012): xDS and the CA as on the plaintext port, behind a
//! certificate the mesh CA issues to the control plane itself. A sidecar that knows the mesh root
//! then sends its token encrypted, to a server it has authenticated, as Istio's agents do with
//! istiod. The certificate is renewed at half its lifetime; connections keep the one they began
//! with.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::aws_lc_rs::sign::any_supported_type;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::ca::Authority;

/// How long the control plane's own certificate is valid.
const VALIDITY: Duration = Duration::from_secs(24 * 3600);

/// How long a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The names the certificate carries when none are given: the Service a Kubernetes install
/// puts in front of the control plane, and the loopback names of a host install.
pub const DEFAULT_NAMES: [&str; 4] = [
    "weft.weft-system.svc",
    "weft.weft-system.svc.cluster.local",
    "localhost",
    "127.0.0.1",
];

/// The certificate in force, swapped whole when renewed.
#[derive(Debug)]
struct Current(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// The TLS port's server side: its rustls config and the certificate it serves.
pub struct Port {
    config: Arc<rustls::ServerConfig>,
    current: Arc<Current>,
    authority: Arc<Authority>,
    names: Vec<String>,
}

impl Port {
    /// A certificate for `names` (DNS names or IP addresses) from `authority`, ready to serve.
    pub fn new(authority: Arc<Authority>, names: Vec<String>) -> anyhow::Result<Self> {
        let key = issue(&authority, &names)?;
        let current = Arc::new(Current(ArcSwap::from_pointee(key)));
        let mut config =
            rustls::ServerConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
                .with_no_client_auth()
                .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            config: Arc::new(config),
            current,
            authority,
            names,
        })
    }

    /// TLS connections accepted on `listener`, as tonic serves them; renews the certificate at
    /// half its lifetime meanwhile.
    pub fn incoming(
        self,
        listener: TcpListener,
    ) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<Tls>> {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config.clone());
        tokio::spawn(async move {
            let mut renew = std::pin::pin!(tokio::time::sleep(VALIDITY / 2));
            loop {
                let (tcp, peer) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!("TLS port: accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                    () = renew.as_mut() => {
                        let next = match issue(&self.authority, &self.names) {
                            Ok(key) => {
                                self.current.0.store(Arc::new(key));
                                tracing::info!("TLS port: certificate renewed");
                                VALIDITY / 2
                            }
                            Err(e) => {
                                tracing::error!("TLS port: renewing the certificate failed: {e:#}");
                                Duration::from_secs(10)
                            }
                        };
                        renew.as_mut().reset(tokio::time::Instant::now() + next);
                        continue;
                    }
                    () = tx.closed() => return,
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send(Ok(Tls(tls))).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS port: handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS port: handshake timed out"),
                    }
                });
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}

/// A certificate for `names`, with a new key.
fn issue(authority: &Authority, names: &[String]) -> anyhow::Result<CertifiedKey> {
    let serving = authority.serving(names, VALIDITY)?;
    let chain = serving
        .chain
        .iter()
        .map(|pem| {
            let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes())?;
            Ok(CertificateDer::from(p.contents))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(serving.key_pkcs8));
    let signing = any_supported_type(&key)?;
    Ok(CertifiedKey::new(chain, signing))
}

/// One accepted TLS connection, with its TCP addresses for tonic's `remote_addr`.
pub struct Tls(TlsStream<TcpStream>);

impl Connected for Tls {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.0.get_ref().0.connect_info()
    }
}

impl tokio::io::AsyncRead for Tls {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Tls {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}
