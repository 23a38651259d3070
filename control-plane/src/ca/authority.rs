//! The CA's signing key and certificate: loaded from files an operator gives, or from a
//! directory where the first replica to start creates a self-signed root and every other
//! replica (and every restart) reads the same one. And the one thing it does with them: sign a
//! workload certificate for an identity.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aws_lc_rs::rand::SecureRandom;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use time::OffsetDateTime;

use super::Identity;

/// The file a CA directory keeps its root in: certificate and key in one file, so that creating
/// it is one atomic step.
pub const ROOT_FILE: &str = "ca.pem";

/// How long a root this CA creates is valid.
const ROOT_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// How far back a certificate's validity starts, for peers whose clocks run a little behind.
const BACKDATE: Duration = Duration::from_secs(60);

/// Where the CA's key and certificate come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A directory holding [`ROOT_FILE`]; a self-signed root is created there if none is.
    Dir(PathBuf),
    /// A Kubernetes Secret holding [`ROOT_FILE`] (`ca.pem`); a self-signed root is created
    /// there if there is none ([`Authority::load_secret`]).
    Secret {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// An operator's key and certificate (a root, or an intermediate followed by its chain).
    Files {
        /// PEM: the signing certificate first, then the chain above it.
        cert: PathBuf,
        /// PEM: its private key (ECDSA P-256, PKCS#8).
        key: PathBuf,
    },
}

/// Workload certificate lifetimes.
#[derive(Clone, Copy, Debug)]
pub struct Lifetimes {
    /// Given when a request asks for none.
    pub default: Duration,
    /// The most a request gets.
    pub max: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            default: Duration::from_secs(24 * 3600),
            max: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Why the CA could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A file holds no usable certificate or key.
    #[error("{path}: {why}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
}

/// Why a CSR was not signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The CSR is no CSR, its signature does not verify, or its key is not ECDSA P-256.
    #[error("bad certificate signing request: {0}")]
    BadCsr(String),
    /// Building or signing the certificate failed.
    #[error("signing failed: {0}")]
    Failed(String),
}

/// A signed workload certificate.
#[derive(Clone, Debug)]
pub struct Signed {
    /// PEM: the leaf, then the intermediates up to (not including) the root.
    pub chain: Vec<String>,
    /// PEM: every root the mesh trusts.
    pub trust_bundle: Vec<String>,
}

/// A certificate for the control plane's own TLS port.
#[derive(Clone, Debug)]
pub struct Serving {
    /// PEM: the leaf, then the intermediates up to (not including) the root.
    pub chain: Vec<String>,
    /// Its new key, PKCS#8.
    pub key_pkcs8: Vec<u8>,
}

/// The mesh CA's signing key and certificate.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    /// The signing key again, as PKCS#8, for the workload tokens it signs.
    key_pkcs8: Vec<u8>,
    /// PEM: the intermediates between the signing certificate and a root (the signing
    /// certificate itself when it is no root).
    intermediates: Vec<String>,
    bundle: Vec<String>,
    trust_domain: String,
    lifetimes: Lifetimes,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("trust_domain", &self.trust_domain)
            .field("roots", &self.bundle.len())
            .finish_non_exhaustive()
    }
}

impl Authority {
    /// Loads the CA from `source`, creating a root in a directory that has none. `extra_roots`
    /// (PEM) are trusted besides its own: the old root while a new one takes over.
    pub fn load(
        source: &Source,
        extra_roots: Option<&Path>,
        trust_domain: &str,
        lifetimes: Lifetimes,
    ) -> Result<Self, LoadError> {
        let (certs_pem, key_pem, path) = match source {
            Source::Dir(dir) => {
                let path = dir.join(ROOT_FILE);
                let text = load_or_create(&path, trust_domain)?;
                (text.clone(), text, path)
            }
            Source::Files { cert, key } => (read(cert)?, read(key)?, cert.clone()),
            Source::Secret { namespace, name } => {
                return Err(LoadError::Invalid {
                    path: PathBuf::from(format!("secret {namespace}/{name}")),
                    why: "a Secret is read with a Kubernetes client (Authority::load_secret)"
                        .into(),
                });
            }
        };
        Self::from_pem(
            (&certs_pem, &key_pem, &path),
            extra_roots,
            trust_domain,
            lifetimes,
        )
    }

    /// Loads the CA from the Secret `namespace/name`, creating a root there if there is none.
    /// Replicas that start together end up with one root: a create that finds the Secret made
    /// meanwhile (409) reads what the other made.
    pub async fn load_secret(
        client: &kube::Client,
        (namespace, name): (&str, &str),
        extra_roots: Option<&Path>,
        trust_domain: &str,
        lifetimes: Lifetimes,
    ) -> Result<Self, LoadError> {
        let path = PathBuf::from(format!("secret {namespace}/{name}"));
        let make = || new_root(trust_domain);
        let text = super::secret::load_or_create(client, (namespace, name), ROOT_FILE, make)
            .await
            .map_err(|why| LoadError::Invalid {
                path: path.clone(),
                why,
            })?;
        Self::from_pem((&text, &text, &path), extra_roots, trust_domain, lifetimes)
    }

    /// The CA from its certificates' and key's PEM (`path` names where they came from).
    fn from_pem(
        (certs_pem, key_pem, path): (&str, &str, &Path),
        extra_roots: Option<&Path>,
        trust_domain: &str,
        lifetimes: Lifetimes,
    ) -> Result<Self, LoadError> {
        let invalid = |why: String| LoadError::Invalid {
            path: path.to_path_buf(),
            why,
        };
        let certs = pem_blocks(certs_pem, "CERTIFICATE");
        let Some(signing) = certs.first() else {
            return Err(invalid("no CERTIFICATE block".into()));
        };
        let key_block = pem_blocks(key_pem, "PRIVATE KEY");
        let Some(key_block) = key_block.first() else {
            return Err(invalid("no PRIVATE KEY (PKCS#8) block".into()));
        };
        let key = KeyPair::from_pem(key_block).map_err(|e| invalid(format!("key: {e}")))?;
        if key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
            return Err(invalid("the CA key must be ECDSA P-256".into()));
        }
        let key_pkcs8 = key.serialize_der();
        let (mut intermediates, mut bundle) = (Vec::new(), Vec::new());
        for pem in &certs {
            let self_signed = is_self_signed(pem).map_err(|e| invalid(e.to_string()))?;
            if self_signed {
                bundle.push(pem.clone());
            } else {
                intermediates.push(pem.clone());
            }
        }
        if !certs_match_key(signing, &key).map_err(|e| invalid(e.to_string()))? {
            return Err(invalid("the first certificate is not the key's".into()));
        }
        if bundle.is_empty() {
            return Err(invalid(
                "no root: give the intermediate's chain up to its self-signed root".into(),
            ));
        }
        if let Some(extra) = extra_roots {
            for pem in pem_blocks(&read(extra)?, "CERTIFICATE") {
                if !bundle.contains(&pem) {
                    bundle.push(pem);
                }
            }
        }
        let issuer = Issuer::from_ca_cert_pem(signing, key)
            .map_err(|e| invalid(format!("certificate: {e}")))?;
        Ok(Self {
            issuer,
            key_pkcs8,
            intermediates,
            bundle,
            trust_domain: trust_domain.to_string(),
            lifetimes,
        })
    }

    /// The SPIFFE trust domain the CA writes into certificates.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// PEM: every root the mesh trusts.
    pub fn trust_bundle(&self) -> &[String] {
        &self.bundle
    }

    /// The roots as one PEM file, one after the other: what `weft ca root` prints and what the
    /// `weft-ca-root-cert` ConfigMaps hold (a sidecar's `--xds-root-cert`).
    pub fn trust_bundle_pem(&self) -> String {
        self.bundle
            .iter()
            .map(|root| format!("{}\n", root.trim_end()))
            .collect()
    }

    /// The signing key as PKCS#8 (workload tokens are signed with it too).
    pub fn key_pkcs8(&self) -> &[u8] {
        &self.key_pkcs8
    }

    /// The public key (uncompressed P-256 point) tokens are checked against.
    pub fn public_key(&self) -> &[u8] {
        self.issuer.key().public_key_raw()
    }

    /// Signs the public key of `csr_pem` into a certificate for `identity`, valid for `asked`
    /// (the default when `None`; never more than the maximum). Nothing else of the CSR is used:
    /// not its subject, not its names, not a CA flag it may ask for.
    pub fn sign(
        &self,
        csr_pem: &str,
        identity: &Identity,
        asked: Option<Duration>,
    ) -> Result<Signed, SignError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| SignError::BadCsr(e.to_string()))?;
        if csr.public_key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
            return Err(SignError::BadCsr("the key must be ECDSA P-256".into()));
        }
        let validity = asked
            .unwrap_or(self.lifetimes.default)
            .min(self.lifetimes.max);
        let spiffe = identity.spiffe_id(&self.trust_domain);
        let mut params = CertificateParams::default();
        // No subject: the identity is the URI SAN alone (marked critical, as RFC 5280 asks of
        // a certificate without a subject), as SPIFFE's X.509-SVID has it.
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(
            spiffe
                .try_into()
                .map_err(|e| SignError::Failed(format!("{e}")))?,
        )];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(serial().map_err(SignError::Failed)?);
        let now = OffsetDateTime::from(SystemTime::now());
        params.not_before = now - BACKDATE;
        params.not_after = now + validity;
        let leaf = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(|e| SignError::Failed(e.to_string()))?;
        let mut chain = Vec::with_capacity(1 + self.intermediates.len());
        chain.push(leaf.pem());
        chain.extend(self.intermediates.iter().cloned());
        Ok(Signed {
            chain,
            trust_bundle: self.bundle.clone(),
        })
    }
}

impl Authority {
    /// A certificate with a new key for the control plane's TLS port, for `names` (DNS names,
    /// or IP addresses), valid for `validity`: what a sidecar that knows the mesh root checks
    /// before it sends its token.
    pub fn serving(&self, names: &[String], validity: Duration) -> Result<Serving, SignError> {
        let failed = |e: rcgen::Error| SignError::Failed(e.to_string());
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(failed)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => n.clone().try_into().map(SanType::DnsName),
            })
            .collect::<Result<_, _>>()
            .map_err(failed)?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(serial().map_err(SignError::Failed)?);
        let now = OffsetDateTime::from(SystemTime::now());
        params.not_before = now - BACKDATE;
        params.not_after = now + validity;
        let cert = params.signed_by(&key, &self.issuer).map_err(failed)?;
        let mut chain = Vec::with_capacity(1 + self.intermediates.len());
        chain.push(cert.pem());
        chain.extend(self.intermediates.iter().cloned());
        Ok(Serving {
            chain,
            key_pkcs8: key.serialize_der(),
        })
    }
}

/// A random positive 16-byte serial number (RFC 5280 allows up to 20).
fn serial() -> Result<SerialNumber, String> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "no randomness".to_string())?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

fn read(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads the root at `path`, or creates one there if there is none. Creation writes a whole
/// file aside and links it into place, which fails if another replica got there first: then
/// that replica's root is read, so replicas starting together end up with one root, never two.
fn load_or_create(path: &Path, trust_domain: &str) -> Result<String, LoadError> {
    let io = |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => return Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let text = new_root(trust_domain).map_err(|why| LoadError::Invalid {
        path: path.to_path_buf(),
        why,
    })?;
    let mut tmp = tempfile_in(dir).map_err(io)?;
    tmp.1.write_all(text.as_bytes()).map_err(io)?;
    tmp.1.sync_all().map_err(io)?;
    let linked = std::fs::hard_link(&tmp.0, path);
    let _ = std::fs::remove_file(&tmp.0);
    match linked {
        Ok(()) => {
            tracing::info!(path = %path.display(), "created a new mesh root CA");
            Ok(text)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::read_to_string(path).map_err(io)
        }
        Err(e) => Err(io(e)),
    }
}

/// A new file beside the root, readable by its owner only (it holds the key).
fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut suffix = [0u8; 8];
    let _ = aws_lc_rs::rand::SystemRandom::new().fill(&mut suffix);
    let name = format!(
        ".{ROOT_FILE}.{}.{}",
        std::process::id(),
        u64::from_le_bytes(suffix)
    );
    let path = dir.join(name);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    Ok((path, file))
}

/// A new self-signed root: certificate and PKCS#8 key, PEM, in one text.
fn new_root(trust_domain: &str) -> Result<String, String> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, trust_domain);
    dn.push(DnType::CommonName, "weft mesh root CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(serial()?);
    let now = OffsetDateTime::from(SystemTime::now());
    params.not_before = now - BACKDATE;
    params.not_after = now + ROOT_VALIDITY;
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    Ok(format!("{}{}", cert.pem(), key.serialize_pem()))
}

/// The PEM blocks of `label` in `text`, each re-encoded on its own.
fn pem_blocks(text: &str, label: &str) -> Vec<String> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(b) = rest.find(&begin) {
        let Some(e) = rest[b..].find(&end) else { break };
        let stop = b + e + end.len();
        out.push(format!("{}\n", &rest[b..stop]));
        rest = &rest[stop..];
    }
    out
}

fn der_of(pem: &str) -> Result<Vec<u8>, String> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| e.to_string())?;
    Ok(p.contents)
}

/// Whether a certificate is a root: issued by itself, its signature made by its own key.
fn is_self_signed(pem: &str) -> Result<bool, String> {
    let der = der_of(pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| e.to_string())?;
    Ok(cert.issuer() == cert.subject() && cert.verify_signature(None).is_ok())
}

/// Whether a certificate certifies `key`.
fn certs_match_key(pem: &str, key: &KeyPair) -> Result<bool, String> {
    let der = der_of(pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| e.to_string())?;
    Ok(cert.public_key().subject_public_key.data.as_ref() == key.public_key_raw())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr(sans: &[&str]) -> (KeyPair, String) {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let pem = params.serialize_request(&key).unwrap().pem().unwrap();
        (key, pem)
    }

    fn ca(dir: &Path) -> Authority {
        Authority::load(
            &Source::Dir(dir.into()),
            None,
            "cluster.local",
            Lifetimes::default(),
        )
        .unwrap()
    }

    fn parsed(pem: &str) -> Vec<u8> {
        der_of(pem).unwrap()
    }

    /// A certificate's subject alternative names, as x509-parser prints them.
    fn sans(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
        cert.subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect()
    }

    #[test]
    fn the_control_planes_own_certificate_names_its_hosts_and_serves_only() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca(dir.path());
        let names = ["weft.weft-system.svc".to_string(), "127.0.0.1".to_string()];
        let serving = ca.serving(&names, Duration::from_secs(3600)).unwrap();
        let der = parsed(&serving.chain[0]);
        let (_, leaf) = x509_parser::parse_x509_certificate(&der).unwrap();
        let sans = sans(&leaf);
        // x509-parser prints an IP address as its bytes.
        assert_eq!(
            sans,
            ["DNSName(weft.weft-system.svc)", "IPAddress(7f:00:00:01)"]
        );
        let eku = leaf.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth, "{eku:?}");
        assert!(!leaf.is_ca());
        let key = KeyPair::try_from(serving.key_pkcs8.as_slice()).unwrap();
        assert_eq!(
            leaf.public_key().subject_public_key.data.as_ref(),
            key.public_key_raw()
        );
        let root_der = parsed(&ca.trust_bundle()[0]);
        let (_, root) = x509_parser::parse_x509_certificate(&root_der).unwrap();
        leaf.verify_signature(Some(root.public_key())).unwrap();
    }

    #[test]
    fn the_certificate_names_the_callers_identity_not_the_csrs() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca(dir.path());
        let (key, csr) = csr(&["evil.example"]);
        let id = Identity::new("shop", "web").unwrap();
        let signed = ca.sign(&csr, &id, None).unwrap();
        assert_eq!(signed.chain.len(), 1);
        assert_eq!(signed.trust_bundle.len(), 1);
        let der = parsed(&signed.chain[0]);
        let (_, leaf) = x509_parser::parse_x509_certificate(&der).unwrap();
        let sans = sans(&leaf);
        assert_eq!(sans, ["URI(spiffe://cluster.local/ns/shop/sa/web)"]);
        let san_ext = leaf
            .extensions()
            .iter()
            .find(|e| e.oid == x509_parser::oid_registry::OID_X509_EXT_SUBJECT_ALT_NAME)
            .unwrap();
        assert!(san_ext.critical, "no subject, so the SAN is critical");
        assert!(!leaf.is_ca(), "the CSR's CA flag is not honoured");
        assert_eq!(
            leaf.public_key().subject_public_key.data.as_ref(),
            key.public_key_raw()
        );
        let validity = leaf.validity().time_to_expiration().unwrap();
        assert!(validity.whole_hours() == 23, "{validity:?}");
        let root_der = parsed(&signed.trust_bundle[0]);
        let (_, root) = x509_parser::parse_x509_certificate(&root_der).unwrap();
        leaf.verify_signature(Some(root.public_key())).unwrap();
    }

    #[test]
    fn lifetimes_are_the_default_or_what_is_asked_up_to_the_maximum() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca(dir.path());
        let (_, csr) = csr(&[]);
        let id = Identity::new("a", "b").unwrap();
        for (asked, want_secs) in [
            (None, 24 * 3600),
            (Some(Duration::from_secs(5)), 5),
            (Some(Duration::from_secs(30 * 24 * 3600)), 7 * 24 * 3600),
        ] {
            let signed = ca.sign(&csr, &id, asked).unwrap();
            let der = parsed(&signed.chain[0]);
            let (_, leaf) = x509_parser::parse_x509_certificate(&der).unwrap();
            let v = leaf.validity();
            let secs = (v.not_after.to_datetime() - v.not_before.to_datetime()).whole_seconds();
            assert_eq!(secs, want_secs + BACKDATE.as_secs() as i64, "{asked:?}");
        }
    }

    #[test]
    fn what_is_not_a_p256_csr_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca(dir.path());
        let id = Identity::new("a", "b").unwrap();
        let (_, good) = csr(&[]);
        let mut tampered = good.clone();
        // A byte of the signed part changed: the signature no longer verifies.
        let body_at = tampered.find('\n').unwrap() + 40;
        let c = if &tampered[body_at..=body_at] == "A" {
            "B"
        } else {
            "A"
        };
        tampered.replace_range(body_at..=body_at, c);
        let p384 = {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
            CertificateParams::default()
                .serialize_request(&key)
                .unwrap()
                .pem()
                .unwrap()
        };
        for bad in ["", "not a csr", &tampered, &p384] {
            assert!(
                matches!(ca.sign(bad, &id, None), Err(SignError::BadCsr(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_directory_keeps_its_root_and_replicas_starting_together_share_one() {
        let dir = tempfile::tempdir().unwrap();
        let first = ca(dir.path()).trust_bundle().to_vec();
        assert_eq!(
            ca(dir.path()).trust_bundle(),
            first,
            "a restart reads the same root"
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join(ROOT_FILE))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o077, 0, "the key is its owner's alone");

        let dir = tempfile::tempdir().unwrap();
        let roots: Vec<Vec<String>> = std::thread::scope(|s| {
            let started: Vec<_> = (0..8)
                .map(|_| s.spawn(|| ca(dir.path()).trust_bundle().to_vec()))
                .collect();
            started.into_iter().map(|t| t.join().unwrap()).collect()
        });
        assert!(
            roots.iter().all(|r| *r == roots[0]),
            "replicas made two roots"
        );
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn a_corrupt_or_mismatched_root_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ROOT_FILE);
        let other = tempfile::tempdir().unwrap();
        ca(other.path());
        let other_text = std::fs::read_to_string(other.path().join(ROOT_FILE)).unwrap();
        let cert_only = pem_blocks(&other_text, "CERTIFICATE").concat();
        let key_of_another = format!(
            "{cert_only}{}",
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
                .unwrap()
                .serialize_pem()
        );
        let garbled = other_text.replace('M', "x");
        for (text, says) in [
            ("garbage", "no CERTIFICATE"),
            (cert_only.as_str(), "no PRIVATE KEY"),
            (key_of_another.as_str(), "not the key's"),
            (garbled.as_str(), ""),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = Authority::load(
                &Source::Dir(dir.path().into()),
                None,
                "td",
                Lifetimes::default(),
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains(ROOT_FILE) && err.contains(says), "{err}");
        }
    }

    #[test]
    fn an_intermediate_signs_and_is_sent_with_the_chain_and_extra_roots_are_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let root_text = new_root("td").unwrap();
        let root_key = KeyPair::from_pem(&pem_blocks(&root_text, "PRIVATE KEY")[0]).unwrap();
        let root_pem = pem_blocks(&root_text, "CERTIFICATE").remove(0);
        let root = Issuer::from_ca_cert_pem(&root_pem, root_key).unwrap();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "intermediate");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let inter = params.signed_by(&key, &root).unwrap();
        let cert = dir.path().join("cert.pem");
        let key_path = dir.path().join("key.pem");
        std::fs::write(&cert, format!("{}{root_pem}", inter.pem())).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        let old = tempfile::tempdir().unwrap();
        let old_root = ca(old.path()).trust_bundle()[0].clone();
        let extra = dir.path().join("old.pem");
        std::fs::write(&extra, &old_root).unwrap();
        let source = Source::Files {
            cert,
            key: key_path,
        };
        let ca = Authority::load(&source, Some(&extra), "td", Lifetimes::default()).unwrap();
        assert_eq!(ca.trust_bundle(), [root_pem.clone(), old_root]);
        let (_, csr) = csr(&[]);
        let signed = ca
            .sign(&csr, &Identity::new("a", "b").unwrap(), None)
            .unwrap();
        assert_eq!(signed.chain.len(), 2);
        assert_eq!(signed.chain[1], inter.pem());
        let (leaf_der, inter_der) = (parsed(&signed.chain[0]), parsed(&signed.chain[1]));
        let (_, leaf) = x509_parser::parse_x509_certificate(&leaf_der).unwrap();
        let (_, i) = x509_parser::parse_x509_certificate(&inter_der).unwrap();
        leaf.verify_signature(Some(i.public_key())).unwrap();
    }
}
