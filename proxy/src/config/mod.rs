//! The proxy's own configuration types and the live snapshot.
//!
//! xDS protos are turned into these at the edge ([`crate::xds::convert`]); the data path reads only
//! these. The whole config is one immutable [`Config`] behind an `ArcSwap`: a request loads it once,
//! without a lock, and finishes on that version even if a newer one is swapped in meanwhile.

pub mod authz;
pub mod edits;
pub mod rewrite;
pub mod route;
pub mod transport;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

pub use self::authz::Authz;
pub use self::route::{
    HeaderMatch, PathMatch, QueryMatch, Route, RouteTable, StringMatch, VirtualHost,
    WeightedCluster, pick_weighted,
};
pub use self::transport::{InboundTls, Security, Transport, TransportMatch};

/// What a port speaks, as the control plane declared it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Sniff the first bytes.
    #[default]
    Detect,
    /// HTTP/1.1.
    Http,
    /// HTTP/2 (cleartext).
    Http2,
    /// gRPC.
    Grpc,
    /// Opaque TCP.
    Tcp,
}

impl Protocol {
    /// From the `weft.protocol` metadata value.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "detect" => Self::Detect,
            "http" => Self::Http,
            "http2" => Self::Http2,
            "grpc" => Self::Grpc,
            "tcp" => Self::Tcp,
            _ => return None,
        })
    }
}

/// What a listener does with a connection.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Handler {
    /// HTTP, routed by a route table delivered over RDS.
    Http {
        /// RouteConfiguration name.
        route_config: String,
        /// Dot segments are removed from paths before routing (Envoy's `normalize_path`).
        normalize_path: bool,
        /// Who may make which requests (the connection manager's RBAC filters).
        #[serde(skip_serializing_if = "Authz::is_empty")]
        authz: Authz,
    },
    /// HTTP, routed by a table carried in the listener itself.
    HttpInline {
        /// The table.
        table: Arc<RouteTable>,
        /// As for [`Handler::Http`].
        normalize_path: bool,
        /// As for [`Handler::Http`].
        #[serde(skip_serializing_if = "Authz::is_empty")]
        authz: Authz,
    },
    /// Opaque TCP to a cluster, or to one of several by weight (a TCPRoute's split), picked
    /// per connection.
    Tcp {
        /// The clusters, with their weights (one, of weight 1, for a plain `cluster`).
        clusters: Vec<WeightedCluster>,
        /// A connection with no bytes either way for this long is closed (`None`: never).
        #[serde(serialize_with = "optional_ms")]
        idle_timeout: Option<Duration>,
        /// Who may open a connection (the chain's network RBAC filters).
        #[serde(skip_serializing_if = "Authz::is_empty")]
        authz: Authz,
    },
}

/// Envoy's `tcp_proxy` default idle timeout: an hour.
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

impl Handler {
    /// Who may use it: its RBAC filters.
    pub fn authz(&self) -> &Authz {
        match self {
            Self::Http { authz, .. } | Self::HttpInline { authz, .. } | Self::Tcp { authz, .. } => {
                authz
            }
        }
    }

    /// Opaque TCP to `cluster` with Envoy's defaults: what a port left to detection falls back
    /// to when its listener names no chain for it.
    pub fn tcp_to(cluster: String) -> Self {
        Self::Tcp {
            clusters: vec![WeightedCluster::plain(cluster, 1)],
            idle_timeout: Some(TCP_IDLE_TIMEOUT),
            authz: Authz::default(),
        }
    }
}

/// A status code as its number, for `/config_dump`.
pub(crate) fn status_code<S: serde::Serializer>(
    c: &http::StatusCode,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_u16(c.as_u16())
}

/// Bytes as text (invalid UTF-8 replaced), for `/config_dump`.
pub(crate) fn lossy_text<S: serde::Serializer>(b: &bytes::Bytes, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}

/// An optional duration as milliseconds (`null` for none), for `/config_dump`.
pub(crate) fn optional_ms<S: serde::Serializer>(
    d: &Option<Duration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => duration_ms::serialize(d, s),
        None => s.serialize_none(),
    }
}

/// A listener: a Service port (matched against captured destinations), an explicit outbound
/// listener (bound by the proxy), or the inbound side.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Listener {
    /// xDS name.
    pub name: String,
    /// Addresses: a Service's cluster IPs, or the address to bind.
    pub addresses: Vec<SocketAddr>,
    /// Declared protocol.
    pub protocol: Protocol,
    /// The default handler.
    pub handler: Option<Handler>,
    /// What serves a connection detection finds is not HTTP: the chain beside one matched on
    /// sniffed HTTP application protocols, else [`Listener::cluster`] as opaque TCP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Handler>,
    /// Per destination port handlers (the inbound listener).
    pub by_port: Vec<PortChain>,
    /// The inbound listener's chain for ports `by_port` does not name (its default chains:
    /// Istio's passthrough), with their mTLS mode and authorization; its `port` is 0. None:
    /// such connections pass through to the app untouched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_ports: Option<PortChain>,
    /// The cluster a connection defaults to: where a headless Service's connections stay on
    /// their pod, and what opaque TCP goes to when there is no fallback chain. Decided when the
    /// listener is converted (weft names it after the Service port), never read from a name on
    /// the data path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The inbound side (`traffic_direction: INBOUND`): captured traffic for the local app.
    pub inbound: bool,
    /// Whether the proxy binds `addresses` itself (explicit outbound listeners); Service listeners
    /// are only matched against captured traffic.
    pub bind: bool,
    /// Whether a captured connection stays on the endpoint it was addressed to (a headless
    /// Service's pod: `weft.destination: original`) instead of being balanced.
    pub original_dst: bool,
    /// How detection waits on this listener's ports left to it, as the listener says; `None`:
    /// the proxy's `--detect-timeout-ms`, then opaque TCP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sniffing: Option<Sniffing>,
}

impl Listener {
    /// The inbound chain that serves connections to `port`: the port's own, else the one for
    /// the ports no chain names.
    pub fn chain_for_port(&self, port: u16) -> Option<&PortChain> {
        self.by_port
            .iter()
            .find(|c| c.port == port)
            .or(self.other_ports.as_ref())
    }
}

/// How long protocol detection waits for a client's first bytes and what a connection that
/// decided nothing in that time gets: Envoy's `listener_filters_timeout` and
/// `continue_on_listener_filters_timeout`, so a control plane that tunes them for Envoy gets
/// the same from weft-proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Sniffing {
    /// The longest wait; `None`: no limit (Envoy's `0s`), for meshes where every server-first
    /// protocol is declared.
    #[serde(rename = "timeout_ms", serialize_with = "optional_ms")]
    pub timeout: Option<Duration>,
    /// Whether such a connection is closed (Envoy's default) rather than served as opaque TCP.
    pub close_on_timeout: bool,
}

/// The filter chain of one destination port.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PortChain {
    /// Destination port.
    pub port: u16,
    /// Declared protocol, from the chain's `weft.protocol` metadata.
    pub protocol: Protocol,
    /// What serves it.
    pub handler: Handler,
    /// As [`Listener::fallback`], for this port: its chain for what is not HTTP, else the app
    /// as opaque TCP.
    pub fallback: Handler,
    /// The local app's cluster for this port (`inbound|<port>||`): a connection headed for a
    /// pod address it lists stays on that address.
    pub cluster: String,
    /// Whether mTLS is refused, offered or required.
    pub tls: InboundTls,
}

/// Load-balancing algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    /// Power of two choices over least outstanding requests, latency-weighted (default).
    LeastRequest,
    /// Round robin.
    RoundRobin,
    /// Uniform random.
    Random,
}

/// The HTTP version a cluster's endpoints are spoken to in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamHttp {
    /// HTTP/1.1 (Envoy's default).
    Http1,
    /// HTTP/2 (`explicit_http_config` with HTTP/2 options).
    Http2,
    /// Whatever the client spoke (`use_downstream_protocol_config`): for ports whose protocol
    /// was detected, where an HTTP/2 client (gRPC) needs an HTTP/2 server.
    Downstream,
    /// Whatever ALPN agrees (`auto_config`): HTTP/2 to an mTLS endpoint (a sidecar) that takes
    /// it, so one connection carries every request to it; HTTP/1.1 in plaintext, where there is
    /// no ALPN, and for upgrades (WebSocket), which HTTP/2 cannot carry.
    Negotiated,
}

/// An upstream cluster.
#[derive(Clone, Debug, Serialize)]
pub struct Cluster {
    /// xDS name.
    pub name: String,
    /// Balancing algorithm.
    pub lb: LbPolicy,
    /// The HTTP version spoken to the endpoints.
    pub upstream_http: UpstreamHttp,
    /// TCP connect timeout.
    #[serde(with = "duration_ms")]
    pub connect_timeout: Duration,
    /// How long an upstream connection may sit unused before the proxy closes it.
    #[serde(with = "duration_ms")]
    pub idle_timeout: Duration,
    /// Static endpoints carried in the cluster (inbound clusters); EDS clusters get theirs from
    /// ClusterLoadAssignments.
    #[serde(skip)]
    pub static_endpoints: Option<Assignment>,
    /// The ClusterLoadAssignment its endpoints come in over EDS (`service_name`, or else the
    /// cluster's own name); none for a cluster that carries its endpoints.
    pub eds: Option<String>,
    /// The host names its endpoints are resolved from (STRICT_DNS and LOGICAL_DNS clusters).
    pub dns: Option<Arc<DnsTargets>>,
    /// Which endpoints are dialed with mTLS.
    pub transport: Transport,
    /// Envoy's ORIGINAL_DST: a connection goes to where it was headed, not to an endpoint
    /// (the inbound passthrough, for ports no chain of their own names).
    pub original_dst: bool,
}

/// What a DNS cluster resolves, and how: its endpoints are what the names resolve to, looked up
/// again every `refresh` ([`crate::dns`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DnsTargets {
    /// The names, with the port, weight and priority each resolved address gets.
    pub hosts: Vec<DnsHost>,
    /// Which address families to use.
    pub family: DnsFamily,
    /// How often to resolve again.
    #[serde(with = "duration_ms")]
    pub refresh: Duration,
    /// LOGICAL_DNS: the first address of each name only (one logical host, as Envoy has it);
    /// otherwise every address is an endpoint.
    pub logical: bool,
}

/// One name of a DNS cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DnsHost {
    /// Host name (or IP literal).
    pub host: String,
    /// Port of every address it resolves to.
    pub port: u16,
    /// Weight of each of its addresses.
    pub weight: u32,
    /// Priority of each of its addresses.
    pub priority: u32,
}

/// Envoy's `dns_lookup_family`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DnsFamily {
    /// IPv6 addresses if there are any, else IPv4 (Envoy's default).
    Auto,
    /// IPv4 only.
    V4Only,
    /// IPv6 only.
    V6Only,
    /// IPv4 addresses if there are any, else IPv6.
    V4Preferred,
    /// Both.
    All,
}

/// One endpoint as the control plane describes it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct EndpointConfig {
    /// Address.
    pub addr: SocketAddr,
    /// Relative weight.
    pub weight: u32,
    /// SPIFFE identity expected of the peer.
    pub identity: Option<String>,
    /// `<workload>.<namespace>` behind the address (EDS `hostname`), for metrics.
    pub workload: Option<String>,
    /// EDS priority: 0 is the most preferred; higher levels are failover.
    pub priority: u32,
    /// Whether the control plane says it may take traffic (EDS `health_status` HEALTHY or
    /// UNKNOWN). One that may not takes none, but counts in its priority's health, which
    /// decides how much of the traffic moves on to the next priority.
    pub healthy: bool,
    /// Its `envoy.transport_socket_match` metadata: which of its cluster's transport matches
    /// it meets (Istio and weft mark endpoints with a sidecar `tlsMode`).
    pub transport_match: Vec<(String, String)>,
}

/// Envoy's default overprovisioning factor, in percent: a priority whose healthy share times
/// this is 100 or more takes all the load its place leaves.
pub const OVERPROVISIONING: u32 = 140;

/// The endpoints of a cluster, as one ClusterLoadAssignment (or a DNS answer, or a static
/// cluster's own list) gives them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// The endpoints, each with its priority and health.
    pub endpoints: Vec<EndpointConfig>,
    /// Envoy's `policy.overprovisioning_factor`, in percent: how far a priority's health is
    /// stretched before traffic moves on to the next.
    pub overprovisioning: u32,
}

impl Assignment {
    /// `endpoints` with Envoy's default overprovisioning factor.
    pub fn new(endpoints: Vec<EndpointConfig>) -> Self {
        Self {
            endpoints,
            overprovisioning: OVERPROVISIONING,
        }
    }
}

/// A map the data path reads on every request: keyed by names that come from the control plane,
/// not from clients, so a fast non-keyed hash (foldhash) is safe and spares SipHash's cost.
pub type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The whole applied configuration.
#[derive(Debug, Default, Serialize)]
pub struct Config {
    /// Listeners by name.
    pub listeners: Map<String, Arc<Listener>>,
    /// Route tables by name.
    pub routes: Map<String, Arc<RouteTable>>,
    /// Clusters by name.
    pub clusters: Map<String, Arc<Cluster>>,
    /// Service listener by captured destination.
    #[serde(skip)]
    pub by_addr: Map<SocketAddr, Arc<Listener>>,
    /// The inbound listener, if one was sent.
    #[serde(skip)]
    pub inbound: Option<Arc<Listener>>,
}

impl Config {
    /// The listener a captured connection to `dst` belongs to: the one for that address, or else
    /// one for any address on that port (`0.0.0.0:8080`, as Istio describes its outbound HTTP
    /// ports).
    pub fn listener_for(&self, dst: SocketAddr) -> Option<&Arc<Listener>> {
        self.by_addr.get(&dst).or_else(|| {
            let any: std::net::IpAddr = match dst {
                SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
            };
            self.by_addr.get(&SocketAddr::new(any, dst.port()))
        })
    }

    /// Who may connect to the app's `port`, as its inbound chain says now: what requests and
    /// connections already open are judged by. None: no inbound chain serves the port.
    pub fn inbound_authz(&self, port: u16) -> Option<&Authz> {
        let chain = self.inbound.as_ref()?.chain_for_port(port)?;
        Some(chain.handler.authz())
    }
}

mod duration_ms {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_captured_destination_finds_its_address_first_then_any_address_on_its_port() {
        let listener = |name: &str| {
            Arc::new(Listener {
                name: name.into(),
                addresses: Vec::new(),
                protocol: Protocol::default(),
                handler: None,
                fallback: None,
                by_port: Vec::new(),
                other_ports: None,
                cluster: None,
                inbound: false,
                bind: false,
                original_dst: false,
                sniffing: None,
            })
        };
        let mut config = Config::default();
        for (addr, name) in [
            ("10.0.0.1:80", "exact"),
            ("0.0.0.0:80", "any4"),
            ("[::]:80", "any6"),
        ] {
            config.by_addr.insert(addr.parse().unwrap(), listener(name));
        }
        let found = |dst: &str| {
            config
                .listener_for(dst.parse().unwrap())
                .map(|l| l.name.clone())
        };
        assert_eq!(found("10.0.0.1:80").as_deref(), Some("exact"));
        assert_eq!(found("10.0.0.2:80").as_deref(), Some("any4"));
        assert_eq!(found("[fd00::1]:80").as_deref(), Some("any6"));
        assert_eq!(found("10.0.0.1:81"), None);
    }
}
