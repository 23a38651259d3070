//! xDS server metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `api` label: state of the world or delta.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabel {
    /// `sotw` or `delta`.
    pub api: &'static str,
}

/// `type` label: cds, eds, lds, rds.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    /// Short type name.
    pub r#type: &'static str,
}

/// Counters and histograms of the ADS server.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Streams open now.
    pub connected: Family<ApiLabel, Gauge>,
    /// Responses sent.
    pub pushes: Family<TypeLabel, Counter>,
    /// Resources sent (delta counts only the changed ones).
    pub resources_pushed: Family<TypeLabel, Counter>,
    /// Encoded resource bytes sent.
    pub push_bytes: Family<TypeLabel, Counter>,
    /// Responses a client rejected.
    pub nacks: Family<TypeLabel, Counter>,
    /// Requests for type URLs weft does not serve.
    pub unknown_types: Counter,
    /// Requests whose nonce was not the latest sent (SotW ignores them).
    pub stale_nonces: Counter,
    /// Snapshot published -> response sent, seconds.
    pub push_latency: Histogram,
    /// Response sent -> ACK received, seconds.
    pub ack_latency: Histogram,
}

impl Metrics {
    /// Creates the metrics and registers them.
    pub fn register(reg: &mut Registry) -> Self {
        let buckets = || exponential_buckets(0.0005, 2.0, 16);
        let m = Self {
            connected: Family::default(),
            pushes: Family::default(),
            resources_pushed: Family::default(),
            push_bytes: Family::default(),
            nacks: Family::default(),
            unknown_types: Counter::default(),
            stale_nonces: Counter::default(),
            push_latency: Histogram::new(buckets()),
            ack_latency: Histogram::new(buckets()),
        };
        reg.register(
            "weft_xds_connected_proxies",
            "Open ADS streams",
            m.connected.clone(),
        );
        reg.register("weft_xds_pushes", "xDS responses sent", m.pushes.clone());
        reg.register(
            "weft_xds_resources_pushed",
            "Resources sent in xDS responses",
            m.resources_pushed.clone(),
        );
        reg.register(
            "weft_xds_push_bytes",
            "Encoded resource bytes sent",
            m.push_bytes.clone(),
        );
        reg.register(
            "weft_xds_nacks",
            "xDS responses rejected by clients",
            m.nacks.clone(),
        );
        reg.register(
            "weft_xds_unknown_type_requests",
            "Requests for resource types weft does not serve",
            m.unknown_types.clone(),
        );
        reg.register(
            "weft_xds_stale_nonces",
            "Requests carrying a nonce that is not the latest",
            m.stale_nonces.clone(),
        );
        reg.register(
            "weft_xds_push_latency_seconds",
            "Snapshot published to response sent",
            m.push_latency.clone(),
        );
        reg.register(
            "weft_xds_ack_latency_seconds",
            "Response sent to ACK received",
            m.ack_latency.clone(),
        );
        m
    }

    /// A throwaway set, for tests and benches that do not scrape.
    pub fn unregistered() -> Self {
        Self::register(&mut Registry::default())
    }
}
