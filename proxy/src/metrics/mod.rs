//! Prometheus metrics, served on the health port's `/metrics`.
//!
//! Request and TCP metrics follow Prometheus conventions (base units, `_total` counters) and carry
//! the labels of Istio's standard metrics (`reporter`, `source_workload`, `destination_service`,
//! `response_code`, `response_flags`, ...), with Istio's duration buckets: an Istio dashboard or
//! alert ports by renaming `istio_requests_total` to `weft_requests_total` and
//! `istio_request_duration_milliseconds` to `weft_request_duration_seconds` (`le` divided by 1000).
//! Scrapers that ask for OpenMetrics get it; others (curl, promtool) get the classic text format.
//!
//! The data path never takes a lock or allocates to count: each destination (cluster and workload)
//! gets its [`DestStats`] when the config is applied, and a request bumps atomics in the series for
//! its outcome, found by index. Series are created on first use and live as long as the
//! destination is in the config: a removed workload's series disappear with it.

mod outcome;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub use self::outcome::{Flag, Outcome, RequestProtocol};

/// Distinct outcomes (status, gRPC status, flag) kept per destination; a destination seldom sees
/// more than a handful. Outcomes past this are counted in `weft_proxy_metrics_overflow`.
const OUTCOMES: usize = 64;

/// Upper bounds of the duration histogram, in seconds: Istio's buckets (0.5 ms to 60 s).
const BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The workload this proxy serves, for the labels that name it.
#[derive(Clone, Debug)]
pub struct Node {
    /// Workload name (a Deployment's name rather than a pod's, where known).
    pub workload: String,
    /// Its namespace.
    pub namespace: String,
}

/// Every metric the proxy exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Arc<Requests>,
    /// xDS stream and config health.
    pub xds: XdsMetrics,
    inbound_security: InboundSecurity,
}

/// How inbound connections to ports that offer mTLS arrived: what an operator reads before
/// turning a namespace STRICT.
#[derive(Clone, Debug, Default)]
struct InboundSecurity {
    /// Connections by `security` (`mtls`, `plaintext`) and `result` (`accepted`, `refused`).
    connections: Family<Vec<(&'static str, &'static str)>, Counter>,
    /// mTLS handshakes that failed (no client certificate, another CA's, expired, ...).
    handshake_failures: Counter,
    /// Authorization decisions, `[tcp, http][denied, allowed]`: the family's counters, made
    /// once so a request counts without building labels.
    authorization: [[Counter; 2]; 2],
}

/// xDS health: is the stream up, how many updates were applied and rejected.
#[derive(Clone, Debug, Default)]
pub struct XdsMetrics {
    /// 1 while an xDS stream is open.
    pub connected: Gauge,
    /// Responses applied (ACKed), by type.
    pub applied: Family<Vec<(&'static str, String)>, Counter>,
    /// Responses rejected (NACKed), by type.
    pub rejected: Family<Vec<(&'static str, String)>, Counter>,
    /// Complete configs published to the data path.
    pub published: Counter,
    /// EDS/RDS resources given up on after the initial fetch timeout, by type.
    pub fetch_timeouts: Family<Vec<(&'static str, String)>, Counter>,
}

impl Metrics {
    /// Metrics for a proxy serving `node`.
    pub fn new(node: Node) -> Self {
        let mut requests = Requests {
            unrouted: Arc::new(DestStats::new(Vec::new())),
            passthrough: [
                Arc::new(DestStats::new(Vec::new())),
                Arc::new(DestStats::new(Vec::new())),
            ],
            blackhole: Arc::new(DestStats::new(Vec::new())),
            node,
            dests: Mutex::default(),
        };
        requests.unrouted = requests.shared(labels(&requests.node, None, None));
        requests.passthrough = [PASSTHROUGH, INBOUND_PASSTHROUGH]
            .map(|name| requests.shared(labels(&requests.node, Some(name), None)));
        requests.blackhole = requests.shared(labels(&requests.node, Some(BLACKHOLE), None));
        let requests = Arc::new(requests);
        let xds = XdsMetrics::default();
        let mut registry = Registry::default();
        registry.register(
            "weft_proxy_xds_connected",
            "Whether the xDS stream to the control plane is open",
            xds.connected.clone(),
        );
        registry.register(
            "weft_proxy_xds_applied",
            "xDS responses applied and ACKed, by type",
            xds.applied.clone(),
        );
        registry.register(
            "weft_proxy_xds_rejected",
            "xDS responses rejected with a NACK, by type",
            xds.rejected.clone(),
        );
        registry.register(
            "weft_proxy_xds_fetch_timeouts",
            "Resources the control plane did not send within the initial fetch timeout, by type",
            xds.fetch_timeouts.clone(),
        );
        registry.register(
            "weft_proxy_config_published",
            "Complete configurations handed to the data path",
            xds.published.clone(),
        );
        let build = Family::<Vec<(&'static str, String)>, Gauge>::default();
        build
            .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_string())])
            .set(1);
        registry.register("weft_proxy_build_info", "weft-proxy's version", build);
        registry.register_collector(Box::new(requests.clone()));
        let decisions = Family::<Vec<(&'static str, &'static str)>, Counter>::default();
        let decision = |protocol, decision| {
            decisions
                .get_or_create(&vec![("protocol", protocol), ("decision", decision)])
                .clone()
        };
        let inbound_security = InboundSecurity {
            connections: Family::default(),
            handshake_failures: Counter::default(),
            authorization: [
                [decision("tcp", "denied"), decision("tcp", "allowed")],
                [decision("http", "denied"), decision("http", "allowed")],
            ],
        };
        registry.register(
            "weft_proxy_authorization_decisions",
            "Inbound connections (tcp) and requests (http) checked against authorization policy, by decision",
            decisions,
        );
        registry.register(
            "weft_proxy_inbound_connections",
            "Connections to inbound ports that offer mTLS, by security and result",
            inbound_security.connections.clone(),
        );
        registry.register(
            "weft_proxy_mtls_handshake_failures",
            "Inbound mTLS handshakes that failed",
            inbound_security.handshake_failures.clone(),
        );
        Self {
            registry,
            requests,
            xds,
            inbound_security,
        }
    }

    /// Counts a connection to a port that offers mTLS: mTLS (`mtls`) or plaintext, accepted or
    /// refused (plaintext to a STRICT port).
    pub fn inbound_connection(&self, mtls: bool, accepted: bool) {
        let security = if mtls { "mtls" } else { "plaintext" };
        let result = if accepted { "accepted" } else { "refused" };
        self.inbound_security
            .connections
            .get_or_create(&vec![("security", security), ("result", result)])
            .inc();
    }

    /// Counts an authorization decision on an inbound TCP connection or HTTP request.
    pub fn authorized(&self, http: bool, allowed: bool) {
        self.inbound_security.authorization[usize::from(http)][usize::from(allowed)].inc();
    }

    /// Counts a failed inbound mTLS handshake.
    pub fn mtls_handshake_failed(&self) {
        self.inbound_security.handshake_failures.inc();
        self.inbound_connection(true, false);
    }

    /// The registry, for a component that registers its own metrics at start (the identity).
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The stats of `cluster`'s endpoints of `workload` (`name.namespace`, from EDS), shared by
    /// every endpoint and config version that names the same pair. Config time only.
    pub fn destination(&self, cluster: &str, workload: Option<&str>) -> Arc<DestStats> {
        let workload = workload.and_then(|w| w.rsplit_once('.'));
        self.requests
            .shared(labels(&self.requests.node, Some(cluster), workload))
    }

    /// Where requests that matched no route or cluster are counted.
    pub fn unrouted(&self) -> &Arc<DestStats> {
        &self.requests.unrouted
    }

    /// Where connections passed through untouched are counted, outbound (to destinations the
    /// mesh does not know) or inbound (to ports no chain names): Istio's `PassthroughCluster`
    /// and `InboundPassthroughCluster`, so traffic that bypasses the mesh still shows.
    pub fn passthrough(&self, inbound: bool) -> &Arc<DestStats> {
        &self.requests.passthrough[usize::from(inbound)]
    }

    /// Where traffic refused under the registry-only policy is counted: Istio's
    /// `BlackHoleCluster`, so an app calling something the mesh does not know shows up on a
    /// dashboard, not only in a log line.
    pub fn blackhole(&self) -> &Arc<DestStats> {
        &self.requests.blackhole
    }

    /// Every metric, as OpenMetrics text or (`openmetrics: false`) in the classic Prometheus
    /// text format, which older tools such as promtool read.
    pub fn render(&self, openmetrics: bool) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!("encoding metrics: {e}");
        }
        if openmetrics {
            out
        } else {
            weft_proto::exposition::classic(&out)
        }
    }
}

/// A destination's fixed labels: destinations that label alike (two ports of one Service, two
/// inbound ports) share one set of series, as Prometheus requires.
type DestKey = Vec<(&'static str, String)>;

/// The per-destination stats, enumerated on each scrape.
#[derive(Debug)]
struct Requests {
    node: Node,
    dests: Mutex<HashMap<DestKey, Weak<DestStats>>>,
    unrouted: Arc<DestStats>,
    /// Outbound, then inbound passthrough.
    passthrough: [Arc<DestStats>; 2],
    blackhole: Arc<DestStats>,
}

/// Destination of connections passed through to where they were going.
const PASSTHROUGH: &str = "PassthroughCluster";
/// Destination of inbound connections to ports no chain names.
const INBOUND_PASSTHROUGH: &str = "InboundPassthroughCluster";
/// Destination of outbound traffic refused because the mesh does not know where it goes.
const BLACKHOLE: &str = "BlackHoleCluster";

impl Requests {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DestKey, Weak<DestStats>>> {
        self.dests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn live(&self) -> Vec<Arc<DestStats>> {
        self.lock().values().filter_map(Weak::upgrade).collect()
    }

    /// The stats of the destination labelled `labels`, made if no live one has them.
    fn shared(&self, labels: DestKey) -> Arc<DestStats> {
        let mut dests = self.lock();
        if let Some(d) = dests.get(&labels).and_then(Weak::upgrade) {
            return d;
        }
        let d = Arc::new(DestStats::new(labels.clone()));
        dests.insert(labels, Arc::downgrade(&d));
        // Forget destinations no config holds any more.
        dests.retain(|_, w| w.strong_count() > 0);
        d
    }
}

impl Collector for Requests {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let dests = self.live();
        let series: Vec<(&DestStats, &Series)> = dests
            .iter()
            .flat_map(|d| d.series().map(move |s| (&**d, s)))
            .collect();
        let mut m = encoder.encode_descriptor(
            "weft_requests",
            "Requests, by source, destination and outcome",
            None,
            MetricType::Counter,
        )?;
        for (d, s) in &series {
            let labels = d.labels_with(&s.outcome);
            m.encode_family(&labels)?
                .encode_counter::<NoLabelSet, u64, u64>(&s.count.load(Ordering::Relaxed), None)?;
        }
        let mut m = encoder.encode_descriptor(
            "weft_request_duration_seconds",
            "Request duration, first request byte to last response byte",
            None,
            MetricType::Histogram,
        )?;
        for (d, s) in &series {
            let labels = d.labels_with(&s.outcome);
            let buckets = s.buckets();
            m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
                s.sum_seconds(),
                s.count.load(Ordering::Relaxed),
                &buckets,
                None,
            )?;
        }
        let mut m = encoder.encode_descriptor(
            "weft_proxy_metrics_overflow",
            "Requests not counted in weft_requests_total: their destination had too many distinct outcomes",
            None,
            MetricType::Counter,
        )?;
        let overflow: u64 = dests
            .iter()
            .map(|d| d.overflow.load(Ordering::Relaxed))
            .sum();
        m.encode_counter::<NoLabelSet, u64, u64>(&overflow, None)?;
        for (name, help, pick) in [
            (
                "weft_tcp_connections_opened",
                "TCP connections opened",
                0usize,
            ),
            ("weft_tcp_connections_closed", "TCP connections closed", 1),
            ("weft_tcp_sent_bytes", "Bytes sent to the client", 2),
            (
                "weft_tcp_received_bytes",
                "Bytes received from the client",
                3,
            ),
        ] {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for d in dests.iter().filter(|d| d.tcp.used()) {
                let labels = d.tcp_labels();
                m.encode_family(&labels)?
                    .encode_counter::<NoLabelSet, u64, u64>(&d.tcp.get(pick), None)?;
            }
        }
        Ok(())
    }
}

/// Counters of one destination: the labels that never change, and a series per outcome.
#[derive(Debug)]
pub struct DestStats {
    labels: Vec<(&'static str, String)>,
    /// A series per outcome seen, in the order first seen; allocated on the first request.
    slots: OnceLock<Box<[OnceLock<Box<Series>>]>>,
    /// Requests whose outcome found no free slot.
    overflow: AtomicU64,
    /// Opaque TCP traffic to this destination.
    pub tcp: TcpStats,
}

impl DestStats {
    pub(crate) fn new(labels: DestKey) -> Self {
        Self {
            labels,
            slots: OnceLock::new(),
            overflow: AtomicU64::new(0),
            tcp: TcpStats::default(),
        }
    }

    /// Counts one finished request.
    pub fn record(&self, outcome: Outcome, took: Duration) {
        let slots = self.slots.get_or_init(|| {
            (0..OUTCOMES)
                .map(|_| OnceLock::new())
                .collect::<Vec<_>>()
                .into_boxed_slice()
        });
        // Lock-free find-or-insert: the first empty slot is claimed for this outcome; a slot
        // claimed meanwhile by another outcome is skipped.
        for slot in slots.iter() {
            let series = slot.get_or_init(|| Box::new(Series::new(outcome)));
            if series.outcome == outcome {
                series.observe(took);
                return;
            }
        }
        self.overflow.fetch_add(1, Ordering::Relaxed);
    }

    fn series(&self) -> impl Iterator<Item = &Series> {
        self.slots
            .get()
            .into_iter()
            .flat_map(|s| s.iter().filter_map(|s| s.get().map(|b| &**b)))
    }

    fn labels_with(&self, o: &Outcome) -> Vec<(&'static str, String)> {
        let mut l = self.labels.clone();
        l.push(("request_protocol", o.protocol.as_str().to_string()));
        l.push(("response_code", o.code.to_string()));
        l.push((
            "grpc_response_status",
            o.grpc_status.map(|g| g.to_string()).unwrap_or_default(),
        ));
        l.push((
            "response_flags",
            o.flag.map_or("-", Flag::as_str).to_string(),
        ));
        l
    }

    fn tcp_labels(&self) -> Vec<(&'static str, String)> {
        let mut l = self.labels.clone();
        l.push(("request_protocol", "tcp".to_string()));
        l.push(("response_flags", "-".to_string()));
        l
    }
}

/// The fixed labels of requests from `node` to `cluster`'s endpoints of `workload` (name,
/// namespace).
fn labels(node: &Node, cluster: Option<&str>, workload: Option<(&str, &str)>) -> DestKey {
    let unknown = || "unknown".to_string();
    let inbound = cluster.is_some_and(|c| c.starts_with("inbound|") || c == INBOUND_PASSTHROUGH);
    let passthrough = cluster.filter(|c| [PASSTHROUGH, INBOUND_PASSTHROUGH, BLACKHOLE].contains(c));
    let service = match passthrough {
        Some(name) => Some(name.to_string()),
        None => cluster
            .filter(|_| !inbound)
            .and_then(|c| c.rsplit_once("||"))
            .map(|(_, fqdn)| fqdn.to_string()),
    };
    let (service_name, service_ns) = match passthrough {
        Some(name) => (name.to_string(), unknown()),
        None => service
            .as_deref()
            .and_then(|s| {
                let mut parts = s.splitn(3, '.');
                Some((parts.next()?.to_string(), parts.next()?.to_string()))
            })
            .unwrap_or_else(|| (unknown(), unknown())),
    };
    let (src_wl, src_ns, dst_wl, dst_ns) = if inbound {
        (
            unknown(),
            unknown(),
            node.workload.clone(),
            node.namespace.clone(),
        )
    } else {
        let (w, ns) = workload.map_or_else(
            || (unknown(), unknown()),
            |(w, ns)| (w.to_string(), ns.to_string()),
        );
        (node.workload.clone(), node.namespace.clone(), w, ns)
    };
    vec![
        (
            "reporter",
            if inbound { "destination" } else { "source" }.to_string(),
        ),
        ("source_workload", src_wl),
        ("source_workload_namespace", src_ns),
        ("source_principal", unknown()),
        ("destination_service", service.unwrap_or_else(unknown)),
        ("destination_service_name", service_name),
        ("destination_service_namespace", service_ns),
        ("destination_workload", dst_wl),
        ("destination_workload_namespace", dst_ns),
        ("destination_principal", unknown()),
        (
            "connection_security_policy",
            if inbound { "none" } else { "unknown" }.to_string(),
        ),
    ]
}

/// Counters of opaque TCP connections.
#[derive(Debug, Default)]
pub struct TcpStats {
    opened: AtomicU64,
    closed: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
}

impl TcpStats {
    /// A connection was opened.
    pub fn open(&self) {
        self.opened.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection closed.
    pub fn close(&self) {
        self.closed.fetch_add(1, Ordering::Relaxed);
    }

    /// Bytes sent to the client, added as they are read from the upstream.
    pub fn sent_bytes(&self) -> &AtomicU64 {
        &self.sent
    }

    /// Bytes received from the client, added as they are read.
    pub fn received_bytes(&self) -> &AtomicU64 {
        &self.received
    }

    fn used(&self) -> bool {
        self.opened.load(Ordering::Relaxed) > 0
    }

    fn get(&self, i: usize) -> u64 {
        [&self.opened, &self.closed, &self.sent, &self.received][i].load(Ordering::Relaxed)
    }
}

/// Count and duration histogram of one outcome.
#[derive(Debug)]
struct Series {
    outcome: Outcome,
    count: AtomicU64,
    /// Per bucket (not cumulative), the last one past every bound.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

impl Series {
    fn new(outcome: Outcome) -> Self {
        Self {
            outcome,
            count: AtomicU64::new(0),
            buckets: Default::default(),
            sum_ns: AtomicU64::new(0),
        }
    }

    fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let i = BUCKETS.partition_point(|b| *b < secs);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn sum_seconds(&self) -> f64 {
        self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9
    }

    /// (upper bound, count in that bucket alone): the encoder accumulates them.
    fn buckets(&self) -> Vec<(f64, u64)> {
        BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(&self.buckets)
            .map(|(bound, n)| (bound, n.load(Ordering::Relaxed)))
            .collect()
    }
}

#[cfg(test)]
mod tests;
