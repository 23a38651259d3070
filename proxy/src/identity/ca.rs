//! Asking the mesh CA for a certificate: a new P-256 key, a CSR for it, the workload's token as
//! the credential (read again each time: projected tokens are rotated by the kubelet), and a check
//! that what came back certifies that key.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use weft_proto::weft::ca::v1::SignRequest;
use weft_proto::weft::ca::v1::certificate_service_client::CertificateServiceClient;

use super::Certified;

/// How long a connect to the CA may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one signing request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how to ask for certificates.
#[derive(Clone, Debug)]
pub struct CaClient {
    /// The CA, and how to speak to it.
    pub control_plane: crate::control_plane::ControlPlane,
    /// The file holding the workload's token.
    pub token_file: PathBuf,
    /// The lifetime to ask for; `None` for the CA's default.
    pub validity: Option<Duration>,
}

impl CaClient {
    /// A new key, certified by the CA for this workload's identity.
    pub async fn certify(&self) -> anyhow::Result<Certified> {
        let token = std::fs::read_to_string(&self.token_file)
            .map_err(|e| anyhow::anyhow!("reading the token {}: {e}", self.token_file.display()))?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let csr = CertificateParams::default()
            .serialize_request(&key)?
            .pem()?;
        let endpoint = tonic::transport::Endpoint::from_shared(self.control_plane.url.clone())?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT);
        let channel = self.control_plane.connect(endpoint).await?;
        let mut req = tonic::Request::new(SignRequest {
            csr,
            validity_seconds: self.validity.map_or(0, |v| v.as_secs() as i64),
        });
        req.metadata_mut()
            .insert("authorization", format!("Bearer {}", token.trim()).parse()?);
        let resp = CertificateServiceClient::new(channel)
            .sign(req)
            .await
            .map_err(|s| anyhow::anyhow!("the CA refused: {:?}: {}", s.code(), s.message()))?
            .into_inner();
        let chain = pems(&resp.cert_chain)?;
        let roots = pems(&resp.trust_bundle)?;
        let Some(leaf) = chain.first() else {
            anyhow::bail!("the CA sent no certificate");
        };
        if roots.is_empty() {
            anyhow::bail!("the CA sent no trust bundle");
        }
        let (_, cert) = x509_parser::parse_x509_certificate(leaf)?;
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            anyhow::bail!("the CA's certificate is not for the key asked for");
        }
        let spiffe_id = cert
            .subject_alternative_name()?
            .and_then(|s| {
                s.value.general_names.iter().find_map(|n| match n {
                    x509_parser::extensions::GeneralName::URI(u) if u.starts_with("spiffe://") => {
                        Some(u.to_string())
                    }
                    _ => None,
                })
            })
            .ok_or_else(|| anyhow::anyhow!("the certificate names no SPIFFE ID"))?;
        let time = |t: x509_parser::time::ASN1Time| {
            SystemTime::UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64)
        };
        let validity = cert.validity();
        let key = PrivatePkcs8KeyDer::from(key.serialize_der());
        let tls = super::tls::TlsConfigs::new(&chain, &key.clone_key().into(), &roots)?;
        Ok(Certified {
            tls,
            spiffe_id,
            not_before: time(validity.not_before),
            not_after: time(validity.not_after),
            serial: cert.raw_serial_as_string(),
            issued: SystemTime::now(),
            chain,
            key,
            roots,
        })
    }
}

/// DER of each PEM certificate.
fn pems(pems: &[String]) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    pems.iter()
        .map(|p| {
            let (_, pem) = x509_parser::pem::parse_x509_pem(p.as_bytes())
                .map_err(|e| anyhow::anyhow!("the CA sent a bad PEM: {e}"))?;
            Ok(CertificateDer::from(pem.contents))
        })
        .collect()
}
