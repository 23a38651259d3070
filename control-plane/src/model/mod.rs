//! The Mesh: everything the registries know, as plain immutable types.
//!
//! Both registries (files and Kubernetes) produce a [`Mesh`]; the translator reads nothing else. No
//! I/O and no Kubernetes types here, so translation can be tested with values written by hand.

mod authz;
mod protocol;
mod route;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

pub use self::authz::{AuthorizationAction, AuthorizationPolicy, AuthorizationRule, Pattern};
pub use self::protocol::Protocol;
pub use self::route::{
    Backend, HeaderEdits, HeaderMatch, Mirror, PathMatch, PathModifier, QueryMatch, Redirect,
    RouteMatch, RouteRetry, RouteRule, StringMatch, TcpRoute, UrlRewrite,
};

pub use weft_proto::names::CLUSTER_DOMAIN;

/// Identifies a namespaced object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Object name within the namespace.
    pub name: String,
}

impl Key {
    /// A key from its two parts.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One immutable view of the whole mesh, shared behind an `Arc` by every xDS stream.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Mesh {
    /// The SPIFFE trust domain workload identities live in.
    pub trust_domain: String,
    /// Services by namespace/name; each carries its endpoints and routes so that one Service can be
    /// re-translated alone when it changes.
    pub services: BTreeMap<Key, Arc<Service>>,
    /// Workloads (pods, or hosts in file mode) by namespace/name.
    pub workloads: BTreeMap<Key, Arc<Workload>>,
    /// Config scopes, each selecting workloads.
    pub sidecars: Vec<Arc<SidecarScope>>,
    /// The Services that have consumer routes, by the namespace of those routes: what a proxy in
    /// that namespace gets its own route configurations for.
    pub consumers: BTreeMap<String, Vec<Key>>,
}

impl Mesh {
    /// The workload a proxy node stands for, if the node id names one (`<name>.<namespace>`).
    pub fn workload_for_node(&self, node_id: &str) -> Option<&Arc<Workload>> {
        let (name, namespace) = node_id.rsplit_once('.')?;
        self.workloads.get(&Key::new(namespace, name))
    }

    /// The scope that applies to a workload: the first Sidecar in its namespace that selects it.
    pub fn scope_for(&self, workload: &Workload) -> Option<&Arc<SidecarScope>> {
        self.sidecars
            .iter()
            .filter(|s| s.key.namespace == workload.key.namespace)
            .find(|s| s.selects(workload))
    }
}

/// A Kubernetes Service with what the mesh attaches to it.
#[derive(Clone, Debug, PartialEq)]
pub struct Service {
    /// Namespace/name.
    pub key: Key,
    /// Virtual IPs; empty for a headless Service.
    pub cluster_ips: Vec<IpAddr>,
    /// `clusterIP: None`: clients address the pods themselves (a StatefulSet's), not a virtual
    /// IP. Not merely an unset `clusterIP`, which a file registry may leave out.
    pub headless: bool,
    /// One entry per service port.
    pub ports: Vec<ServicePort>,
    /// Upstream behaviour from the `TrafficPolicy` targeting this Service, if any.
    pub policy: Option<TrafficPolicy>,
}

impl Service {
    /// `name.namespace.svc.cluster.local`.
    pub fn fqdn(&self) -> String {
        fqdn(&self.key)
    }

    /// The port with this number.
    pub fn port(&self, number: u16) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.port == number)
    }
}

/// The fully qualified DNS name of a Service.
pub fn fqdn(key: &Key) -> String {
    weft_proto::names::service_fqdn(&key.namespace, &key.name)
}

/// One port of a Service, with its endpoints and HTTP routes.
#[derive(Clone, Debug, PartialEq)]
pub struct ServicePort {
    /// Port name ("" when the Service has a single unnamed port).
    pub name: String,
    /// The port clients connect to.
    pub port: u16,
    /// What the port speaks, from `appProtocol` or the name prefix.
    pub protocol: Protocol,
    /// Endpoints that may receive traffic, in a stable order.
    pub endpoints: Vec<Endpoint>,
    /// Producer routes: rules of HTTPRoutes in the Service's own namespace attached to this port,
    /// for every client. Empty means "send everything to this Service"; non-empty means unmatched
    /// requests get 404, as GAMMA specifies.
    pub routes: Vec<RouteRule>,
    /// Consumer routes, by the namespace of their HTTPRoute: they apply only to clients in that
    /// namespace (GEP-1294), ahead of the producer routes, so no namespace can change another's
    /// traffic to a Service.
    pub consumer_routes: BTreeMap<String, Vec<RouteRule>>,
    /// The producer TCPRoute of an opaque (or undetected) port: where its connections go instead
    /// of the Service's own endpoints.
    pub tcp_route: Option<TcpRoute>,
    /// Consumer TCPRoutes, by namespace, as [`Self::consumer_routes`].
    pub consumer_tcp_routes: BTreeMap<String, TcpRoute>,
}

impl ServicePort {
    /// The TCPRoute a client in `namespace` (any namespace: `None`) gets on this port: its
    /// namespace's, if that has consumer routes here (HTTP ones mean none), else the producer's.
    pub fn tcp_route_for(&self, namespace: Option<&str>) -> Option<&TcpRoute> {
        match namespace {
            Some(ns) if self.protocol.is_http() && self.consumer_routes.contains_key(ns) => None,
            Some(ns) if self.consumer_tcp_routes.contains_key(ns) => {
                self.consumer_tcp_routes.get(ns)
            }
            _ => self.tcp_route.as_ref(),
        }
    }

    /// The protocol the port is served with for clients in `namespace`: a TCPRoute makes a port
    /// left to detection opaque TCP, so that every connection, HTTP or not, is split as it says.
    pub fn protocol_for(&self, namespace: Option<&str>) -> Protocol {
        match (self.protocol, self.tcp_route_for(namespace)) {
            (Protocol::Detect, Some(_)) => Protocol::Tcp,
            (protocol, _) => protocol,
        }
    }

    /// The namespaces with consumer routes of either kind on this port.
    pub fn consumer_namespaces(&self) -> impl Iterator<Item = &String> {
        self.consumer_routes
            .keys()
            .chain(self.consumer_tcp_routes.keys())
    }
}

/// Whether an endpoint should receive new requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Ready: takes traffic.
    Healthy,
    /// Serving but terminating: used only while nothing is ready.
    Draining,
}

/// One backend address of a Service port.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    /// Pod (or host) address.
    pub ip: IpAddr,
    /// Target port on that address.
    pub port: u16,
    /// Readiness as the EndpointSlice reports it.
    pub health: Health,
    /// SPIFFE ID the proxy must see on the peer's certificate, when the workload is known.
    pub identity: Option<String>,
    /// Whether the workload behind it runs weft's sidecar: it is dialed with mTLS.
    pub mtls: bool,
    /// The workload behind the address.
    pub workload: Option<Key>,
    /// Its workload name as metrics label it (the Deployment's, for a Deployment's pods).
    pub workload_name: Option<String>,
    /// Topology zone, for locality-aware balancing.
    pub zone: Option<String>,
}

/// A pod, or a host in file mode: something a proxy runs next to.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    /// Namespace/name of the pod.
    pub key: Key,
    /// Pod IPs.
    pub ips: Vec<IpAddr>,
    /// Pod labels, for selectors.
    pub labels: BTreeMap<String, String>,
    /// Kubernetes service account, the basis of identity.
    pub service_account: String,
    /// `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`.
    pub identity: String,
    /// Container ports the app listens on, for the inbound listener.
    pub ports: Vec<WorkloadPort>,
    /// Whether it runs weft's sidecar, which speaks mTLS (pod label
    /// `security.weft.io/tlsMode: weft`): clients dial it with mTLS.
    pub sidecar: bool,
    /// What its inbound ports accept.
    pub tls_mode: TlsMode,
    /// The AuthorizationPolicies that select it, by name; none: every caller is allowed.
    pub authorization: Vec<AuthorizationPolicy>,
}

/// What a workload's inbound ports accept (the MeshTLS object that selects it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsMode {
    /// mTLS or plaintext, the default: adoption is gradual.
    #[default]
    Permissive,
    /// mTLS only.
    Strict,
}

impl Workload {
    /// The name metrics give this workload, as Istio derives it: a Deployment's pod
    /// `<deployment>-<pod-template-hash>-<suffix>` is `<deployment>`; anything else keeps its own
    /// name. Bounded: every pod of a Deployment shares it.
    pub fn metrics_name(&self) -> String {
        let name = &self.key.name;
        self.labels
            .get("pod-template-hash")
            .and_then(|hash| {
                let (prefix, _) = name.rsplit_once('-')?;
                prefix.strip_suffix(hash.as_str())?.strip_suffix('-')
            })
            .filter(|n| !n.is_empty())
            .unwrap_or(name)
            .to_string()
    }
}

/// A port the app listens on.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadPort {
    /// Port number on the pod.
    pub port: u16,
    /// Protocol, from the Service(s) targeting it or the container port name.
    pub protocol: Protocol,
}

/// A label selector: every pair must match. An empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selector(pub BTreeMap<String, String>);

impl Selector {
    /// Whether the labels satisfy every pair.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// Which Services a set of workloads may reach, and explicit listeners for hosts without iptables.
#[derive(Clone, Debug, PartialEq)]
pub struct SidecarScope {
    /// The Sidecar object.
    pub key: Key,
    /// Workloads in the same namespace it applies to.
    pub selector: Selector,
    /// `namespace/name` patterns; `*` for any part, `.` for the Sidecar's own namespace. Empty means
    /// every Service.
    pub hosts: Vec<HostPattern>,
    /// Listeners the proxy binds itself.
    pub listeners: Vec<OutboundListener>,
}

impl SidecarScope {
    /// Whether this scope applies to a workload.
    pub fn selects(&self, workload: &Workload) -> bool {
        self.selector.matches(&workload.labels)
    }

    /// Whether a Service is in scope.
    pub fn allows(&self, service: &Key) -> bool {
        self.hosts.is_empty() || self.hosts.iter().any(|h| h.matches(service))
    }
}

/// `namespace/name` with `*` wildcards.
#[derive(Clone, Debug, PartialEq)]
pub struct HostPattern {
    /// Namespace, or `*`.
    pub namespace: String,
    /// Service name, or `*`.
    pub name: String,
}

impl HostPattern {
    /// Whether a Service key matches.
    pub fn matches(&self, key: &Key) -> bool {
        (self.namespace == "*" || self.namespace == key.namespace)
            && (self.name == "*" || self.name == key.name)
    }
}

/// An address the proxy binds that forwards to one Service port.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboundListener {
    /// Local address to bind.
    pub bind: std::net::SocketAddr,
    /// Target Service.
    pub service: Key,
    /// Target Service port.
    pub port: u16,
}

/// Load-balancing algorithm for a Service's endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LoadBalancer {
    /// Power of two choices over least outstanding requests (latency-weighted in weft-proxy).
    #[default]
    LeastRequest,
    /// Plain round robin.
    RoundRobin,
    /// Uniform random.
    Random,
}

/// Upstream behaviour for one Service, from a `TrafficPolicy`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrafficPolicy {
    /// Balancing algorithm.
    pub load_balancer: LoadBalancer,
    /// Circuit-breaking limits.
    pub limits: ConnectionLimits,
    /// Ejecting failing endpoints.
    pub outlier_detection: Option<OutlierDetection>,
    /// Default per-request timeout for routes that set none.
    pub timeout: Option<Duration>,
    /// Default retries for routes that set none.
    pub retry: Option<RouteRetry>,
}

/// Circuit-breaking thresholds; `None` keeps the proxy default.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConnectionLimits {
    /// Max connections to the whole Service.
    pub max_connections: Option<u32>,
    /// Max requests waiting for a connection.
    pub max_pending_requests: Option<u32>,
    /// Max requests in flight.
    pub max_requests: Option<u32>,
    /// Max retries in flight.
    pub max_retries: Option<u32>,
    /// Idle upstream connections are closed after this.
    pub idle_timeout: Option<Duration>,
    /// `Some(false)`: HTTP/1 to sidecars stays HTTP/1.1 (default: multiplexed over HTTP/2).
    pub h2_upgrade: Option<bool>,
}

/// Passive health checking.
#[derive(Clone, Debug, PartialEq)]
pub struct OutlierDetection {
    /// Consecutive 5xx (or connect failures) before ejection.
    pub consecutive_5xx: u32,
    /// How often ejection is evaluated.
    pub interval: Duration,
    /// Ejection time; grows with each ejection.
    pub base_ejection_time: Duration,
    /// Upper bound on the share of endpoints ejected at once.
    pub max_ejection_percent: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_name_strips_a_deployments_hash_and_suffix() {
        let cases = [
            (
                "reviews-v1-5d8f7c9b6-x2x9q",
                Some("5d8f7c9b6"),
                "reviews-v1",
            ),
            ("reviews-v1-0", None, "reviews-v1-0"),
            // A hash label that does not match the name leaves the name alone.
            ("web-abc-def", Some("zzz"), "web-abc-def"),
            ("5d8f7c9b6-x2x9q", Some("5d8f7c9b6"), "5d8f7c9b6-x2x9q"),
        ];
        for (name, hash, want) in cases {
            let w = Workload {
                key: Key::new("ns", name),
                ips: vec![],
                labels: hash
                    .map(|h| ("pod-template-hash".to_string(), h.to_string()))
                    .into_iter()
                    .collect(),
                service_account: "default".into(),
                identity: String::new(),
                ports: vec![],
                sidecar: false,
                tls_mode: TlsMode::Permissive,
                authorization: Vec::new(),
            };
            assert_eq!(w.metrics_name(), want, "{name}");
        }
    }
}
