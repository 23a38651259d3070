//! The workload's identity: a key made in memory (never written anywhere), the certificate the
//! mesh CA signed for it, and the roots the mesh trusts. [`rotate::run`] keeps it fresh; the
//! data path loads the current one per new connection, so a renewal never touches a connection
//! already open.

pub mod ca;
pub mod rotate;
pub mod tls;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};

/// A certificate and its key, as the CA gave them.
pub struct Certified {
    /// The SPIFFE ID the certificate names.
    pub spiffe_id: String,
    /// The leaf, then any intermediates.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivatePkcs8KeyDer<'static>,
    /// Every root the mesh trusts.
    pub roots: Vec<CertificateDer<'static>>,
    /// Start of the leaf's validity.
    pub not_before: SystemTime,
    /// End of the leaf's validity.
    pub not_after: SystemTime,
    /// The leaf's serial number, hex.
    pub serial: String,
    /// The rustls configs made of it, once.
    pub tls: tls::TlsConfigs,
    /// When the CA issued it, by this host's clock (its validity starts a little earlier, for
    /// peers whose clocks run behind).
    pub issued: SystemTime,
}

impl std::fmt::Debug for Certified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certified")
            .field("spiffe_id", &self.spiffe_id)
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Certified {
    /// When renewal is due: half way through what was left of the certificate's life when it
    /// was issued.
    pub fn renew_at(&self) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.issued)
            .unwrap_or_default();
        self.issued + life / 2
    }

    /// Seconds until the certificate expires (negative once it has).
    pub fn expires_in(&self) -> f64 {
        match self.not_after.duration_since(SystemTime::now()) {
            Ok(d) => d.as_secs_f64(),
            Err(e) => -e.duration().as_secs_f64(),
        }
    }
}

/// `result` label of the renewal counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct ResultLabel {
    /// `ok` or `failed`.
    pub result: &'static str,
}

/// The workload identity the data path and the admin port read.
#[derive(Debug)]
pub struct Identity {
    current: ArcSwapOption<Certified>,
    /// Certificate requests to the CA, by result.
    pub requests: Family<ResultLabel, Counter>,
}

impl Default for Identity {
    fn default() -> Self {
        Self {
            current: ArcSwapOption::empty(),
            requests: Family::default(),
        }
    }
}

impl Identity {
    /// The current certificate, if one was issued yet.
    pub fn current(&self) -> Option<Arc<Certified>> {
        self.current.load_full()
    }

    /// Puts a new certificate in force; connections opened from now on use it.
    pub fn set(&self, certified: Certified) {
        self.current.store(Some(Arc::new(certified)));
    }

    /// Registers the identity's metrics: seconds until the certificate expires (read when
    /// scraped) and the requests made to the CA.
    pub fn register(self: &Arc<Self>, registry: &mut Registry) {
        registry.register(
            "weft_proxy_identity_requests",
            "Certificate requests to the mesh CA, by result",
            self.requests.clone(),
        );
        registry.register_collector(Box::new(Expiry(self.clone())));
    }

    /// What `/certs` shows.
    pub fn view(&self) -> serde_json::Value {
        let Some(c) = self.current() else {
            return serde_json::json!({ "identity": null, "reason": "no certificate yet" });
        };
        let describe = |der: &CertificateDer<'_>| {
            let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
                return serde_json::json!({ "error": "unreadable" });
            };
            let sans: Vec<String> = cert
                .subject_alternative_name()
                .ok()
                .flatten()
                .map(|s| {
                    s.value
                        .general_names
                        .iter()
                        .map(|n| match n {
                            x509_parser::extensions::GeneralName::URI(u) => u.to_string(),
                            other => other.to_string(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            serde_json::json!({
                "subject": cert.subject().to_string(),
                "issuer": cert.issuer().to_string(),
                "sans": sans,
                "serial": cert.raw_serial_as_string(),
                "not_before": cert.validity().not_before.to_string(),
                "not_after": cert.validity().not_after.to_string(),
            })
        };
        serde_json::json!({
            "identity": c.spiffe_id,
            "expires_in_seconds": c.expires_in().floor(),
            "chain": c.chain.iter().map(describe).collect::<Vec<_>>(),
            "trust_bundle": c.roots.iter().map(describe).collect::<Vec<_>>(),
        })
    }
}

/// `weft_proxy_identity_cert_expiry_seconds`, computed when scraped.
#[derive(Debug)]
struct Expiry(Arc<Identity>);

impl prometheus_client::collector::Collector for Expiry {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(c) = self.0.current() else {
            return Ok(());
        };
        let m = encoder.encode_descriptor(
            "weft_proxy_identity_cert_expiry_seconds",
            "Seconds until the workload certificate expires",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        ConstGauge::new(c.expires_in()).encode(m)
    }
}

/// Seconds since the Unix epoch, for log lines.
pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

#[cfg(test)]
impl Certified {
    /// A certificate's configs under `spiffe_id`, for tests of what uses them.
    pub(crate) fn for_tests(spiffe_id: &str, tls: tls::TlsConfigs) -> Self {
        let now = SystemTime::now();
        Self {
            spiffe_id: spiffe_id.into(),
            chain: Vec::new(),
            key: PrivatePkcs8KeyDer::from(Vec::new()),
            roots: Vec::new(),
            not_before: now,
            not_after: now + Duration::from_secs(3600),
            serial: "00".into(),
            tls,
            issued: now,
        }
    }
}
