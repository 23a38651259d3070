//! How the sidecar reaches the control plane, for xDS and for certificates alike: plaintext
//! (port 15010, for development), or TLS (15012) with the control plane's certificate checked
//! against the mesh root the sidecar was given, so its token travels encrypted and only to the
//! control plane.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

/// TCP keepalive on a TLS connection to the control plane, whatever the HTTP/2 pings: the
/// kernel's own check for a peer that is gone (the 60 s the xDS client asks of tonic's own
/// connector for a plaintext connection).
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// The control plane's address, and how to speak to it.
#[derive(Clone, Debug)]
pub struct ControlPlane {
    /// Its gRPC URL (`http://host:port`, `https://host:port` over TLS).
    pub url: String,
    tls: Option<Tls>,
}

/// TLS to the control plane: the roots its certificate must chain to, and the name it must
/// carry.
#[derive(Clone, Debug)]
struct Tls {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

impl ControlPlane {
    /// Plaintext to `url`.
    pub fn plaintext(url: String) -> Self {
        Self { url, tls: None }
    }

    /// TLS to `url`, its certificate checked against the PEM roots in `roots` for `name` (the
    /// URL's host when `None`).
    pub fn tls(url: String, roots: &Path, name: Option<&str>) -> anyhow::Result<Self> {
        let pem = std::fs::read(roots)
            .map_err(|e| anyhow::anyhow!("reading the mesh root {}: {e}", roots.display()))?;
        let mut store = rustls::RootCertStore::empty();
        // Certificates only: other blocks (a key) are no roots.
        for p in x509_parser::pem::Pem::iter_from_buffer(&pem) {
            let p = p.map_err(|e| anyhow::anyhow!("{}: bad PEM: {e}", roots.display()))?;
            if p.label != "CERTIFICATE" {
                continue;
            }
            store
                .add(CertificateDer::from(p.contents))
                .map_err(|e| anyhow::anyhow!("{}: not a usable root: {e}", roots.display()))?;
        }
        if store.is_empty() {
            anyhow::bail!("{}: no certificate in it", roots.display());
        }
        let host = match name {
            Some(n) => n.to_string(),
            None => url
                .parse::<http::Uri>()?
                .host()
                .map(|h| h.trim_matches(['[', ']']).to_string())
                .ok_or_else(|| anyhow::anyhow!("{url}: no host to check the certificate for"))?,
        };
        let name = ServerName::try_from(host.clone())
            .map_err(|_| anyhow::anyhow!("{host}: not a name a certificate can carry"))?;
        let mut config =
            rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
                .with_root_certificates(store)
                .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            url,
            tls: Some(Tls {
                config: Arc::new(config),
                name,
            }),
        })
    }

    /// A gRPC channel to the control plane, made with `endpoint`'s settings.
    pub async fn connect(
        &self,
        endpoint: tonic::transport::Endpoint,
    ) -> Result<tonic::transport::Channel, tonic::transport::Error> {
        match &self.tls {
            None => endpoint.connect().await,
            Some(tls) => endpoint.connect_with_connector(tls.clone()).await,
        }
    }
}

impl tonic::codegen::Service<http::Uri> for Tls {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let tls = self.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .unwrap_or_default()
                .trim_matches(['[', ']'])
                .to_string();
            let port = uri.port_u16().unwrap_or(15012);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
            let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive);
            let connector = tokio_rustls::TlsConnector::from(tls.config);
            let stream = connector.connect(tls.name, tcp).await?;
            Ok(hyper_util::rt::TokioIo::new(stream))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_file_that_cannot_serve_is_refused_at_start_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let key_only = dir.path().join("key.pem");
        std::fs::write(
            &key_only,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let missing = dir.path().join("missing.pem");
        let url = "https://127.0.0.1:15012".to_string();
        for (file, says) in [
            (&missing, "reading the mesh root"),
            (&key_only, "no certificate in it"),
            (&garbage, "garbage.pem"),
        ] {
            let err = ControlPlane::tls(url.clone(), file, None)
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{file:?}: {err}");
        }
    }
}
