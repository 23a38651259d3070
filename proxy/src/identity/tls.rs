//! The rustls configs a certificate makes, built once per certificate (not per connection):
//! TLS 1.3 only, aws-lc-rs as the one crypto provider, the mesh's roots as the only trust. Server
//! side: a client certificate chaining to those roots is required. Client side: the server's
//! chain is checked against the roots (a SPIFFE certificate names no DNS host, so no host name
//! is checked); which SPIFFE ID the peer must have is the caller's check, once the handshake
//! is done and before a byte of the request is sent ([`peer_identity`]).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

/// The one crypto provider of the workspace: aws-lc-rs, chosen over ring (which kube used to
/// bring) because its full mutual P-256 handshake measured cheaper on the server's side.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The ALPN protocols weft-proxy serves on mTLS, in its order of preference: a client sidecar
/// that offers `h2` multiplexes its HTTP/1 requests over one connection; one that offers
/// nothing (TCP, or HTTP/1.1 it keeps to itself) is served as before.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The server and client configs of one certificate.
#[derive(Clone, Debug)]
pub struct TlsConfigs {
    /// Accepts mTLS: a client certificate from the mesh is required.
    pub server: Arc<ServerConfig>,
    /// Dials mTLS, presenting the certificate, with no ALPN (TCP, and HTTP/1.1 or HTTP/2 a
    /// cluster asks for outright).
    pub client: Arc<ClientConfig>,
    /// Dials mTLS offering `h2` then `http/1.1` by ALPN: for HTTP/1 requests to a sidecar,
    /// carried over HTTP/2 where the peer agrees.
    pub client_h2: Arc<ClientConfig>,
}

impl TlsConfigs {
    /// Builds both configs for a certificate chain and key, trusting `roots`.
    pub fn new(
        chain: &[CertificateDer<'static>],
        key: &PrivateKeyDer<'static>,
        roots: &[CertificateDer<'static>],
    ) -> Result<Self, rustls::Error> {
        let provider = provider();
        let mut store = RootCertStore::empty();
        for r in roots {
            store.add(r.clone())?;
        }
        let store = Arc::new(store);
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(store.clone(), provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.to_vec(), key.clone_key())?;
        // Stateless resumption: a returning peer skips the signatures of a full handshake.
        server.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
        server.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        let verifier = Arc::new(MeshServerVerifier {
            roots: store,
            algorithms: provider.signature_verification_algorithms,
        });
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(chain.to_vec(), key.clone_key())?;
        let mut client_h2 = client.clone();
        client_h2.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(Self {
            server: Arc::new(server),
            client: Arc::new(client),
            client_h2: Arc::new(client_h2),
        })
    }
}

/// Checks a server's chain against the mesh roots, and nothing of its names: the peer's SPIFFE
/// ID is checked by the caller against the one the control plane listed for the endpoint.
#[derive(Debug)]
struct MeshServerVerifier {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for MeshServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // The configs speak TLS 1.3 only.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The SPIFFE ID a verified peer's leaf certificate names (its first `spiffe://` URI SAN).
pub fn peer_identity(certs: Option<&[CertificateDer<'_>]>) -> Option<String> {
    let leaf = certs?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    let sans = cert.subject_alternative_name().ok()??;
    sans.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(u) if u.starts_with("spiffe://") => {
            Some(u.to_string())
        }
        _ => None,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::{Duration, SystemTime};

    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa,
        Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
    };
    use rustls::pki_types::PrivatePkcs8KeyDer;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A mesh CA for tests: signs SPIFFE certificates as `weft`'s does.
    pub(crate) struct TestCa {
        issuer: Issuer<'static, KeyPair>,
        pub(crate) root: CertificateDer<'static>,
    }

    impl TestCa {
        pub(crate) fn new() -> Self {
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
            let mut params = CertificateParams::default();
            params.distinguished_name = DistinguishedName::new();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "test root");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
            let cert = params.self_signed(&key).unwrap();
            let root = cert.der().clone();
            Self {
                issuer: Issuer::new(params, key),
                root,
            }
        }

        /// A certificate for `spiffe`, valid from `from` for `life`, and its key, trusting
        /// `roots`.
        pub(crate) fn certify(
            &self,
            spiffe: &str,
            from: SystemTime,
            life: Duration,
            roots: &[CertificateDer<'static>],
        ) -> TlsConfigs {
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
            let mut params = CertificateParams::default();
            params.distinguished_name = DistinguishedName::new();
            params.subject_alt_names = vec![SanType::URI(spiffe.try_into().unwrap())];
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            params.not_before = from.into();
            params.not_after = (from + life).into();
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            let key = PrivateKeyDer::from(PrivatePkcs8KeyDer::from(key.serialize_der()));
            TlsConfigs::new(&[cert.der().clone()], &key, roots).unwrap()
        }

        pub(crate) fn fresh(&self, spiffe: &str) -> TlsConfigs {
            let from = SystemTime::now() - Duration::from_secs(60);
            self.certify(
                spiffe,
                from,
                Duration::from_secs(3600),
                std::slice::from_ref(&self.root),
            )
        }
    }

    /// A handshake over a loopback pair: what each side learned of the other, or the first
    /// side's error.
    async fn handshake(
        client: Arc<ClientConfig>,
        server: Arc<ServerConfig>,
    ) -> Result<(Option<String>, Option<String>), String> {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let accept = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let mut tls = tokio_rustls::TlsAcceptor::from(server)
                .accept(s)
                .await
                .map_err(|e| e.to_string())?;
            let peer = peer_identity(tls.get_ref().1.peer_certificates());
            let mut b = [0u8; 4];
            tls.read_exact(&mut b).await.map_err(|e| e.to_string())?;
            tls.write_all(b"pong").await.map_err(|e| e.to_string())?;
            Ok::<_, String>(peer)
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::IpAddress(addr.ip().into());
        let dialed = async {
            let mut tls = tokio_rustls::TlsConnector::from(client)
                .connect(name, tcp)
                .await
                .map_err(|e| e.to_string())?;
            let peer = peer_identity(tls.get_ref().1.peer_certificates());
            tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
            let mut b = [0u8; 4];
            tls.read_exact(&mut b).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(peer)
        };
        let client_side = dialed.await;
        let server_side = accept.await.unwrap();
        Ok((client_side?, server_side?))
    }

    #[tokio::test]
    async fn two_workloads_of_one_mesh_learn_each_others_spiffe_ids() {
        let ca = TestCa::new();
        let web = ca.fresh("spiffe://td/ns/shop/sa/web");
        let api = ca.fresh("spiffe://td/ns/shop/sa/api");
        let (server_id, client_id) = handshake(web.client, api.server).await.unwrap();
        assert_eq!(server_id.as_deref(), Some("spiffe://td/ns/shop/sa/api"));
        assert_eq!(client_id.as_deref(), Some("spiffe://td/ns/shop/sa/web"));
    }

    #[tokio::test]
    async fn certificates_of_another_ca_or_expired_ones_are_refused_both_ways() {
        let ca = TestCa::new();
        let other = TestCa::new();
        let good = ca.fresh("spiffe://td/ns/a/sa/a");
        // Signed by another CA, trusting ours: neither side accepts the other.
        let stranger = other.certify(
            "spiffe://td/ns/a/sa/a",
            SystemTime::now() - Duration::from_secs(60),
            Duration::from_secs(3600),
            std::slice::from_ref(&ca.root),
        );
        assert!(
            handshake(stranger.client.clone(), good.server.clone())
                .await
                .is_err()
        );
        assert!(
            handshake(good.client.clone(), stranger.server.clone())
                .await
                .is_err()
        );
        let expired = ca.certify(
            "spiffe://td/ns/a/sa/a",
            SystemTime::now() - Duration::from_secs(7200),
            Duration::from_secs(3600),
            std::slice::from_ref(&ca.root),
        );
        assert!(
            handshake(expired.client.clone(), good.server.clone())
                .await
                .is_err()
        );
        assert!(
            handshake(good.client.clone(), expired.server.clone())
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_client_without_a_certificate_is_refused() {
        let ca = TestCa::new();
        let good = ca.fresh("spiffe://td/ns/a/sa/a");
        let mut roots = RootCertStore::empty();
        roots.add(ca.root.clone()).unwrap();
        let anonymous = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(MeshServerVerifier {
                roots: Arc::new(roots),
                algorithms: provider().signature_verification_algorithms,
            }))
            .with_no_client_auth();
        assert!(handshake(Arc::new(anonymous), good.server).await.is_err());
    }
}
