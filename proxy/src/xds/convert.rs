//! xDS protos -> weft-proxy config, at the edge. Every error names the resource and the field, and
//! becomes the NACK's message.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use weft_proto::google::protobuf::{Any, value::Kind};
use weft_proto::xds::config::cluster::v3::{self as xc, cluster};
use weft_proto::xds::config::core::v3::{
    Address, HealthStatus, Metadata, TrafficDirection, address, config_source, socket_address,
};
use weft_proto::xds::config::endpoint::v3::{ClusterLoadAssignment, LbEndpoint, lb_endpoint};
use weft_proto::xds::config::listener::v3 as xl;
use weft_proto::xds::config::route::v3::{
    self as xr, header_matcher, query_parameter_matcher, route, route_action, route_match,
};
use weft_proto::xds::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use weft_proto::xds::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use weft_proto::xds::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use weft_proto::xds::r#type::matcher::v3::{StringMatcher, string_matcher};

use crate::config::edits::{Append, Edits, HeaderEdits, Put};
use crate::config::rewrite::{PathRewrite, Redirect, Rewrite};
use crate::config::route::{DirectResponse, MirrorPolicy};
use crate::config::{
    Assignment, Cluster, DnsFamily, DnsHost, DnsTargets, EndpointConfig, Handler, HeaderMatch,
    LbPolicy, Listener, OVERPROVISIONING, PathMatch, PortChain, Protocol, QueryMatch, Route,
    RouteTable, Sniffing, StringMatch, TCP_IDLE_TIMEOUT, UpstreamHttp, VirtualHost,
    WeightedCluster, route::full_regex,
};

/// A resource weft-proxy cannot apply.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{resource}: {field}: {reason}")]
pub struct Invalid {
    /// Resource name.
    pub resource: String,
    /// The offending field, as a proto path.
    pub field: String,
    /// Why.
    pub reason: String,
}

struct Ctx<'a>(&'a str);

impl Ctx<'_> {
    fn err(&self, field: impl Into<String>, reason: impl Into<String>) -> Invalid {
        Invalid {
            resource: self.0.to_string(),
            field: field.into(),
            reason: reason.into(),
        }
    }

    fn unpack<M: Message + Default>(
        &self,
        field: &str,
        any: &Any,
        type_name: &str,
    ) -> Result<M, Invalid> {
        if any.type_url.rsplit('/').next() != Some(type_name) {
            return Err(self.err(field, format!("unsupported type {}", any.type_url)));
        }
        M::decode(&any.value[..]).map_err(|e| self.err(field, format!("cannot decode: {e}")))
    }
}

const HCM: &str =
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const TCP_PROXY: &str = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
const ROUTER: &str = "envoy.extensions.filters.http.router.v3.Router";
const HTTP_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
/// Upstream idle timeout when the cluster sets none: under nginx's 75 s keep-alive, so the proxy
/// rather than the upstream usually closes an idle connection (no request lost to that race).
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

fn socket_addr(ctx: &Ctx<'_>, field: &str, a: &Address) -> Result<SocketAddr, Invalid> {
    let (host, port) = host_port(ctx, field, a)?;
    let ip: IpAddr = host
        .parse()
        .map_err(|_| ctx.err(format!("{field}.address"), format!("{host:?} is not an IP")))?;
    Ok(SocketAddr::new(ip, port))
}

/// The address (an IP, or for a DNS cluster a name) and port of a socket address.
fn host_port<'a>(ctx: &Ctx<'_>, field: &str, a: &'a Address) -> Result<(&'a str, u16), Invalid> {
    let Some(address::Address::SocketAddress(sa)) = &a.address else {
        return Err(ctx.err(field, "only socket addresses are supported"));
    };
    let Some(socket_address::PortSpecifier::PortValue(port)) = sa.port_specifier else {
        return Err(ctx.err(format!("{field}.port_value"), "missing"));
    };
    let port =
        u16::try_from(port).map_err(|_| ctx.err(format!("{field}.port_value"), "out of range"))?;
    if !sa.resolver_name.is_empty() {
        return Err(ctx.err(
            format!("{field}.resolver_name"),
            "custom resolvers are not supported (weft-proxy uses the system resolver)",
        ));
    }
    Ok((&sa.address, port))
}

/// Whether an endpoint may take traffic, as its EDS health says; `None` for DRAINING, which
/// Envoy excludes: it takes no traffic and does not count against its priority's health (half
/// a priority draining in a rollout must not send a third of the requests to another zone).
/// UNHEALTHY, DEGRADED and TIMEOUT take none but do count.
fn health(lb: &LbEndpoint) -> Option<bool> {
    match HealthStatus::try_from(lb.health_status) {
        Ok(HealthStatus::Draining) => None,
        status => Some(matches!(
            status,
            Ok(HealthStatus::Healthy | HealthStatus::Unknown)
        )),
    }
}

/// An endpoint's relative weight: 1 unless set, and never 0.
fn weight(lb: &LbEndpoint) -> u32 {
    lb.load_balancing_weight.map_or(1, |w| w.value.max(1))
}

fn weft_string(md: Option<&Metadata>, key: &str) -> Option<String> {
    let field = md?.filter_metadata.get("weft")?.fields.get(key)?;
    match &field.kind {
        Some(Kind::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

fn duration(d: &weft_proto::google::protobuf::Duration) -> Duration {
    Duration::new(
        u64::try_from(d.seconds).unwrap_or(0),
        u32::try_from(d.nanos).unwrap_or(0),
    )
}

/// Whether a config source can be fetched over the one stream weft-proxy has: `ads`; `self` (the
/// server that sent the resource), which gRPC's xDS clients and some servers use for the same;
/// or a gRPC `api_config_source`, which go-control-plane's examples use and Envoy would fetch on
/// a stream of its own to the cluster it names, in practice the same control plane. REST and
/// file sources are not.
fn over_ads(source: Option<&weft_proto::xds::config::core::v3::ConfigSource>) -> bool {
    use weft_proto::xds::config::core::v3::api_config_source::ApiType;
    match source.and_then(|s| s.config_source_specifier.as_ref()) {
        Some(
            config_source::ConfigSourceSpecifier::Ads(_)
            | config_source::ConfigSourceSpecifier::Self_(_),
        ) => true,
        Some(config_source::ConfigSourceSpecifier::ApiConfigSource(api)) => matches!(
            ApiType::try_from(api.api_type),
            Ok(ApiType::Grpc
                | ApiType::DeltaGrpc
                | ApiType::AggregatedGrpc
                | ApiType::AggregatedDeltaGrpc)
        ),
        _ => false,
    }
}

/// Why [`over_ads`] refused a config source.
const NOT_OVER_ADS: &str = "only ADS, self and gRPC config sources are supported (weft-proxy fetches them on its ADS stream)";

// === Listener ===

fn hcm_handler(
    ctx: &Ctx<'_>,
    field: &str,
    hcm: &HttpConnectionManager,
) -> Result<Handler, Invalid> {
    for (i, f) in hcm.http_filters.iter().enumerate() {
        let is_router = f.name == "envoy.filters.http.router"
            || matches!(&f.config_type, Some(weft_proto::xds::extensions::filters::network::http_connection_manager::v3::http_filter::ConfigType::TypedConfig(a)) if a.type_url.ends_with(ROUTER));
        if !is_router && !f.is_optional {
            return Err(ctx.err(
                format!("{field}.http_filters[{i}]"),
                format!("filter {} is not supported", f.name),
            ));
        }
    }
    let normalize_path = hcm.normalize_path.is_some_and(|b| b.value);
    match &hcm.route_specifier {
        Some(http_connection_manager::RouteSpecifier::Rds(rds)) => {
            if !over_ads(rds.config_source.as_ref()) {
                return Err(ctx.err(format!("{field}.rds.config_source"), NOT_OVER_ADS));
            }
            Ok(Handler::Http {
                route_config: rds.route_config_name.clone(),
                normalize_path,
            })
        }
        Some(http_connection_manager::RouteSpecifier::RouteConfig(rc)) => Ok(Handler::HttpInline {
            table: Arc::new(RouteTable::try_from(rc)?),
            normalize_path,
        }),
        _ => Err(ctx.err(
            format!("{field}.route_specifier"),
            "needs rds or route_config",
        )),
    }
}

fn filter_handler(ctx: &Ctx<'_>, field: &str, chain: &xl::FilterChain) -> Result<Handler, Invalid> {
    // Served as plaintext, a chain that asks for TLS (perhaps requiring client certificates)
    // would let in what it means to keep out.
    if chain.transport_socket.is_some() {
        return Err(ctx.err(
            format!("{field}.transport_socket"),
            "downstream TLS is configured by weft's mesh identity, not per filter chain",
        ));
    }
    let [filter] = chain.filters.as_slice() else {
        return Err(ctx.err(
            format!("{field}.filters"),
            "exactly one network filter is supported",
        ));
    };
    let Some(xl::filter::ConfigType::TypedConfig(any)) = &filter.config_type else {
        return Err(ctx.err(format!("{field}.filters[0]"), "needs typed_config"));
    };
    let f = format!("{field}.filters[0].typed_config");
    if any.type_url.ends_with(HCM) {
        hcm_handler(ctx, &f, &ctx.unpack::<HttpConnectionManager>(&f, any, HCM)?)
    } else {
        let tcp: TcpProxy = ctx.unpack(&f, any, TCP_PROXY)?;
        let clusters = match tcp.cluster_specifier {
            Some(tcp_proxy::ClusterSpecifier::Cluster(cluster)) => {
                vec![WeightedCluster::plain(cluster, 1)]
            }
            Some(tcp_proxy::ClusterSpecifier::WeightedClusters(w)) if !w.clusters.is_empty() => {
                let mut clusters = Vec::with_capacity(w.clusters.len());
                for (i, c) in w.clusters.into_iter().enumerate() {
                    // Envoy's schema: every weight at least 1, every name set.
                    if c.name.is_empty() || c.weight == 0 {
                        return Err(ctx.err(
                            format!("{f}.weighted_clusters.clusters[{i}]"),
                            "needs a name and a weight of at least 1",
                        ));
                    }
                    clusters.push(WeightedCluster::plain(c.name, c.weight));
                }
                clusters
            }
            Some(tcp_proxy::ClusterSpecifier::WeightedClusters(_)) => {
                return Err(ctx.err(
                    format!("{f}.weighted_clusters.clusters"),
                    "needs at least one cluster",
                ));
            }
            _ => {
                return Err(ctx.err(
                    format!("{f}.cluster_specifier"),
                    "only cluster and weighted_clusters are supported",
                ));
            }
        };
        Ok(Handler::Tcp {
            clusters,
            // Envoy: unset means an hour, zero means never.
            idle_timeout: match tcp.idle_timeout.as_ref().map(duration) {
                None => Some(TCP_IDLE_TIMEOUT),
                Some(Duration::ZERO) => None,
                Some(d) => Some(d),
            },
        })
    }
}

/// The `weft.protocol` metadata at `field`; undeclared means detect.
fn protocol(ctx: &Ctx<'_>, field: &str, md: Option<&Metadata>) -> Result<Protocol, Invalid> {
    match protocol_and_destination(ctx, field, md)? {
        (p, false) => Ok(p),
        (_, true) => Err(ctx.err(
            format!("{field}.weft.protocol"),
            "destination=original is for listeners only",
        )),
    }
}

/// `weft.protocol`, and whether it asks (`<protocol>; destination=original`, a headless
/// Service's listener) that connections stay on the endpoint they were addressed to.
fn protocol_and_destination(
    ctx: &Ctx<'_>,
    field: &str,
    md: Option<&Metadata>,
) -> Result<(Protocol, bool), Invalid> {
    let Some(value) = weft_string(md, "protocol") else {
        return Ok((Protocol::Detect, false));
    };
    let err = |why: String| ctx.err(format!("{field}.weft.protocol"), why);
    let (name, param) = match value.split_once(';') {
        Some((n, p)) => (n.trim(), Some(p.trim())),
        None => (value.as_str(), None),
    };
    let protocol = Protocol::parse(name).ok_or_else(|| err(format!("unknown {value:?}")))?;
    match param {
        None => Ok((protocol, false)),
        Some("destination=original") => Ok((protocol, true)),
        Some(other) => Err(err(format!("unknown parameter {other:?}"))),
    }
}

fn protocol_of_chain(
    ctx: &Ctx<'_>,
    field: &str,
    chain: &xl::FilterChain,
) -> Result<Protocol, Invalid> {
    protocol(ctx, &format!("{field}.metadata"), chain.metadata.as_ref())
}

/// The listener filters Istio and others put on every listener that change nothing weft-proxy
/// does not already do: TLS and HTTP detection, and recovering the original destination. By
/// name, or by the type of their config.
const INSPECTORS: [(&str, &str); 3] = [
    (
        "envoy.filters.listener.tls_inspector",
        "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
    ),
    (
        "envoy.filters.listener.http_inspector",
        "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector",
    ),
    (
        "envoy.filters.listener.original_dst",
        "envoy.extensions.filters.listener.original_dst.v3.OriginalDst",
    ),
];

fn inspects_only(f: &xl::ListenerFilter) -> bool {
    // The config's type decides when there is one, as in Envoy; the name otherwise.
    match &f.config_type {
        Some(xl::listener_filter::ConfigType::TypedConfig(a)) => {
            let message = a.type_url.rsplit('/').next();
            INSPECTORS.iter().any(|(_, m)| Some(*m) == message)
        }
        _ => INSPECTORS.iter().any(|(name, _)| f.name == *name),
    }
}

impl TryFrom<&xl::Listener> for Listener {
    type Error = Invalid;

    fn try_from(l: &xl::Listener) -> Result<Self, Invalid> {
        let ctx = Ctx(&l.name);
        for (i, f) in l.listener_filters.iter().enumerate() {
            if !inspects_only(f) {
                return Err(ctx.err(
                    format!("listener_filters[{i}]"),
                    format!("filter {} is not supported", f.name),
                ));
            }
        }
        let mut addresses = Vec::new();
        if let Some(a) = &l.address {
            addresses.push(socket_addr(&ctx, "address", a)?);
        }
        for (i, a) in l.additional_addresses.iter().enumerate() {
            if let Some(a) = &a.address {
                addresses.push(socket_addr(
                    &ctx,
                    &format!("additional_addresses[{i}].address"),
                    a,
                )?);
            }
        }
        let (protocol, original_dst) =
            protocol_and_destination(&ctx, "metadata", l.metadata.as_ref())?;
        // Per destination port (`None`: the default chain), the chain matched on sniffed HTTP
        // and the one for everything else, as Envoy's protocol sniffing lays them out.
        let mut slots: Vec<(Option<u16>, Protocol, Slot)> = Vec::new();
        if let Some(api) = &l.api_listener {
            let any = api
                .api_listener
                .as_ref()
                .ok_or_else(|| ctx.err("api_listener.api_listener", "missing"))?;
            let hcm: HttpConnectionManager = ctx.unpack("api_listener.api_listener", any, HCM)?;
            let h = hcm_handler(&ctx, "api_listener", &hcm)?;
            slots.push((None, protocol, Slot::plain(h)));
        }
        for (i, chain) in l.filter_chains.iter().enumerate() {
            let field = format!("filter_chains[{i}]");
            let h = filter_handler(&ctx, &field, chain)?;
            let (port, sniffed) = chain_match(&ctx, &field, chain.filter_chain_match.as_ref())?;
            let kind = if sniffed { "sniffed HTTP" } else { "other" };
            let taken = |what: &str| match port {
                Some(p) => ctx.err(
                    format!("{field}.filter_chain_match"),
                    format!("port {p} has two filter chains for {what} connections"),
                ),
                None => ctx.err(
                    field.clone(),
                    format!("two default filter chains for {what} connections"),
                ),
            };
            let chain_protocol = match port {
                Some(_) => protocol_of_chain(&ctx, &field, chain)?,
                None => protocol,
            };
            let slot = match slots.iter_mut().find(|(p, ..)| *p == port) {
                Some((_, p, _)) if *p != chain_protocol => {
                    return Err(ctx.err(
                        format!("{field}.metadata.weft.protocol"),
                        "differs from the other chain of its port",
                    ));
                }
                Some((_, _, slot)) => slot,
                None => {
                    slots.push((port, chain_protocol, Slot::default()));
                    &mut slots.last_mut().expect("pushed").2
                }
            };
            let place = if sniffed {
                &mut slot.http
            } else {
                &mut slot.other
            };
            if place.is_some() {
                return Err(taken(kind));
            }
            *place = Some(h);
        }
        let mut handler = None;
        let mut fallback = None;
        let mut by_port = Vec::new();
        for (port, chain_protocol, slot) in slots {
            let (h, f) = slot.split();
            match port {
                Some(port) => {
                    // A port's app: what a chain with no fallback of its own falls back to.
                    let cluster = weft_proto::names::inbound_cluster(port);
                    by_port.push(PortChain {
                        port,
                        protocol: chain_protocol,
                        handler: h,
                        fallback: f.unwrap_or_else(|| Handler::tcp_to(cluster.clone())),
                        cluster,
                    });
                }
                None => (handler, fallback) = (Some(h), f),
            }
        }
        if handler.is_none() && by_port.is_empty() {
            return Err(ctx.err("filter_chains", "no api_listener and no filter chain"));
        }
        let bind = l.api_listener.is_none()
            && l.bind_to_port.is_none_or(|b| b.value)
            && !addresses.is_empty();
        // The Service port a listener stands for: a captured one is named after it
        // (`<fqdn>:<port>`), a bound one routes by its route configuration, of the same name.
        let cluster = match (&handler, bind) {
            (Some(Handler::Http { route_config, .. }), true) => {
                weft_proto::names::cluster_of_service_listener(route_config)
            }
            (_, true) => None,
            (_, false) => weft_proto::names::cluster_of_service_listener(&l.name),
        };
        let fallback = fallback.or_else(|| cluster.clone().map(Handler::tcp_to));
        Ok(Self {
            name: l.name.clone(),
            addresses,
            protocol,
            handler,
            fallback,
            by_port,
            cluster,
            inbound: l.traffic_direction == TrafficDirection::Inbound as i32,
            bind,
            original_dst,
            sniffing: sniffing(l),
        })
    }
}

/// The listener's detection wait, when it sets one. Unset, weft-proxy keeps its own default
/// (`--detect-timeout-ms`, then opaque TCP) rather than Envoy's 15 s and a close, which would
/// hold a server-first protocol for 15 s and then drop it.
fn sniffing(l: &xl::Listener) -> Option<Sniffing> {
    let timeout = duration(l.listener_filters_timeout.as_ref()?);
    Some(Sniffing {
        timeout: (!timeout.is_zero()).then_some(timeout),
        close_on_timeout: !l.continue_on_listener_filters_timeout,
    })
}

/// A port's chains: the one for connections sniffed as HTTP and the one for the rest.
#[derive(Default)]
struct Slot {
    http: Option<Handler>,
    other: Option<Handler>,
}

impl Slot {
    fn plain(h: Handler) -> Self {
        Self {
            http: None,
            other: Some(h),
        }
    }

    /// The handler, and what serves connections that are not HTTP when a separate chain says.
    fn split(self) -> (Handler, Option<Handler>) {
        match (self.http, self.other) {
            (Some(http), other) => (http, other),
            (None, Some(other)) => (other, None),
            (None, None) => unreachable!("a slot is made with a chain"),
        }
    }
}

/// A chain's destination port, and whether it is matched on sniffed HTTP application protocols.
/// Any other condition would be silently ignored, so it is refused by name.
fn chain_match(
    ctx: &Ctx<'_>,
    field: &str,
    m: Option<&xl::FilterChainMatch>,
) -> Result<(Option<u16>, bool), Invalid> {
    let Some(m) = m else {
        return Ok((None, false));
    };
    let supported = xl::FilterChainMatch {
        destination_port: m.destination_port,
        application_protocols: m.application_protocols.clone(),
        ..Default::default()
    };
    if *m != supported {
        return Err(ctx.err(
            format!("{field}.filter_chain_match"),
            "only destination_port and application_protocols are supported",
        ));
    }
    if let Some(p) = m
        .application_protocols
        .iter()
        .find(|p| !weft_proto::names::SNIFFED_HTTP.contains(&p.as_str()))
    {
        return Err(ctx.err(
            format!("{field}.filter_chain_match.application_protocols"),
            format!("{p:?} is not sniffed; only http/1.0, http/1.1 and h2c are"),
        ));
    }
    let port = m
        .destination_port
        .map(|p| {
            u16::try_from(p.value).map_err(|_| {
                ctx.err(
                    format!("{field}.filter_chain_match.destination_port"),
                    "out of range",
                )
            })
        })
        .transpose()?;
    Ok((port, !m.application_protocols.is_empty()))
}

// === Cluster ===

fn lb_from_policy(ctx: &Ctx<'_>, c: &xc::Cluster) -> Result<LbPolicy, Invalid> {
    if let Some(p) = &c.load_balancing_policy {
        for pol in &p.policies {
            let url = pol
                .typed_extension_config
                .as_ref()
                .and_then(|t| t.typed_config.as_ref())
                .map(|a| a.type_url.as_str())
                .unwrap_or_default();
            let lb = match url.rsplit('.').next() {
                Some("LeastRequest") => LbPolicy::LeastRequest,
                Some("RoundRobin") => LbPolicy::RoundRobin,
                Some("Random") => LbPolicy::Random,
                _ => continue,
            };
            return Ok(lb);
        }
        return Err(ctx.err(
            "load_balancing_policy.policies",
            "none of the policies is supported",
        ));
    }
    match cluster::LbPolicy::try_from(c.lb_policy) {
        Ok(cluster::LbPolicy::RoundRobin) => Ok(LbPolicy::RoundRobin),
        Ok(cluster::LbPolicy::LeastRequest) => Ok(LbPolicy::LeastRequest),
        Ok(cluster::LbPolicy::Random) => Ok(LbPolicy::Random),
        _ => Err(ctx.err("lb_policy", format!("{} is not supported", c.lb_policy))),
    }
}

impl TryFrom<&xc::Cluster> for Cluster {
    type Error = Invalid;

    fn try_from(c: &xc::Cluster) -> Result<Self, Invalid> {
        let ctx = Ctx(&c.name);
        // Istio's auto-mTLS picks TLS per endpoint with `transport_socket_matches`; plaintext
        // there would be a silent downgrade.
        for (field, set) in [
            ("transport_socket", c.transport_socket.is_some()),
            (
                "transport_socket_matches",
                !c.transport_socket_matches.is_empty(),
            ),
        ] {
            if set {
                return Err(ctx.err(
                    field,
                    "upstream TLS is configured by weft's mesh identity, not per cluster",
                ));
            }
        }
        // Active health checking: accepting it would leave endpoints it should fail in use.
        refuse(&ctx, "", [("health_checks", !c.health_checks.is_empty())])?;
        let kind = match c.cluster_discovery_type {
            Some(cluster::ClusterDiscoveryType::Type(t)) => {
                cluster::DiscoveryType::try_from(t).ok()
            }
            None => Some(cluster::DiscoveryType::Static),
            Some(_) => None,
        };
        let mut dns = None;
        let (eds, static_endpoints) = match kind {
            Some(cluster::DiscoveryType::Eds) => {
                let source = c
                    .eds_cluster_config
                    .as_ref()
                    .and_then(|e| e.eds_config.as_ref());
                if !over_ads(source) {
                    return Err(ctx.err("eds_cluster_config.eds_config", NOT_OVER_ADS));
                }
                // Istio names the assignment `outbound|port|subset|host` under other cluster
                // names; Envoy subscribes to `service_name` when set.
                let service = c
                    .eds_cluster_config
                    .as_ref()
                    .map(|e| e.service_name.as_str())
                    .filter(|s| !s.is_empty())
                    .unwrap_or(&c.name);
                (Some(service.to_string()), None)
            }
            Some(cluster::DiscoveryType::Static) => {
                // None is a cluster of no endpoints, as Envoy has it (Istio's BlackHoleCluster).
                let eps = match &c.load_assignment {
                    Some(cla) => endpoints(&ctx, cla)?,
                    None => Assignment::new(Vec::new()),
                };
                (None, Some(eps))
            }
            Some(t @ (cluster::DiscoveryType::StrictDns | cluster::DiscoveryType::LogicalDns)) => {
                let logical = t == cluster::DiscoveryType::LogicalDns;
                dns = Some(Arc::new(dns_targets(&ctx, c, logical)?));
                (None, None)
            }
            _ => {
                return Err(ctx.err(
                    "type",
                    "only EDS, STATIC, STRICT_DNS and LOGICAL_DNS clusters are supported",
                ));
            }
        };
        // The deprecated cluster field many servers still send to mark gRPC upstreams;
        // `typed_extension_protocol_options`, when present, decides.
        #[allow(deprecated)]
        let mut upstream_http = match c.http2_protocol_options {
            Some(_) => UpstreamHttp::Http2,
            None => UpstreamHttp::Http1,
        };
        let mut idle_timeout = DEFAULT_IDLE_TIMEOUT;
        for (k, any) in &c.typed_extension_protocol_options {
            if k != HTTP_OPTIONS {
                return Err(ctx.err(
                    format!("typed_extension_protocol_options[{k}]"),
                    "not supported",
                ));
            }
            let opts: HttpProtocolOptions =
                ctx.unpack("typed_extension_protocol_options", any, HTTP_OPTIONS)?;
            if let Some(t) = opts
                .common_http_protocol_options
                .as_ref()
                .and_then(|c| c.idle_timeout.as_ref())
            {
                // Envoy reads zero as "never"; a connection that is never closed is what an
                // hour amounts to for a sidecar, and keeps the sweeper's arithmetic simple.
                idle_timeout = match duration(t) {
                    Duration::ZERO => Duration::from_secs(3600),
                    d => d,
                };
            }
            use http_protocol_options::UpstreamProtocolOptions as Upstream;
            use http_protocol_options::explicit_http_config::ProtocolConfig;
            upstream_http = match opts.upstream_protocol_options {
                None => UpstreamHttp::Http1,
                Some(Upstream::ExplicitHttpConfig(e)) => match e.protocol_config {
                    Some(ProtocolConfig::Http2ProtocolOptions(_)) => UpstreamHttp::Http2,
                    Some(ProtocolConfig::HttpProtocolOptions(_)) | None => UpstreamHttp::Http1,
                    Some(ProtocolConfig::Http3ProtocolOptions(_)) => {
                        return Err(ctx.err(
                            "typed_extension_protocol_options.upstream_protocol_options",
                            "HTTP/3 is not supported",
                        ));
                    }
                },
                Some(Upstream::UseDownstreamProtocolConfig(_)) => UpstreamHttp::Downstream,
                // ALPN picks the version, and plaintext has none: Envoy falls back to HTTP/1.1.
                Some(Upstream::AutoConfig(_)) => UpstreamHttp::Http1,
            };
        }
        Ok(Self {
            name: c.name.clone(),
            lb: lb_from_policy(&ctx, c)?,
            upstream_http,
            connect_timeout: c
                .connect_timeout
                .as_ref()
                .map_or(Duration::from_secs(5), duration),
            idle_timeout,
            static_endpoints,
            eds,
            dns,
        })
    }
}

/// The names a STRICT_DNS or LOGICAL_DNS cluster resolves, from its `load_assignment`, which
/// holds host names where an EDS one holds addresses.
fn dns_targets(ctx: &Ctx<'_>, c: &xc::Cluster, logical: bool) -> Result<DnsTargets, Invalid> {
    #[allow(deprecated)]
    let custom_resolver = [
        ("dns_resolvers", !c.dns_resolvers.is_empty()),
        ("dns_resolution_config", c.dns_resolution_config.is_some()),
        (
            "typed_dns_resolver_config",
            c.typed_dns_resolver_config.is_some(),
        ),
    ];
    // Lookups go through the system resolver: another one asked for would be silently unused.
    refuse(ctx, "", custom_resolver)?;
    let cla = c.load_assignment.as_ref().ok_or_else(|| {
        ctx.err(
            "load_assignment",
            "missing: a DNS cluster names its hosts there",
        )
    })?;
    let mut hosts = Vec::new();
    for (i, loc) in cla.endpoints.iter().enumerate() {
        for (j, lb) in loc.lb_endpoints.iter().enumerate() {
            let field =
                format!("load_assignment.endpoints[{i}].lb_endpoints[{j}].endpoint.address");
            // A host the control plane says is not healthy is left out (its name is not
            // looked up, so it cannot count in its priority's health as an EDS endpoint does).
            if health(lb) != Some(true) {
                continue;
            }
            let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = &lb.host_identifier else {
                return Err(ctx.err(field, "missing"));
            };
            let address = ep
                .address
                .as_ref()
                .ok_or_else(|| ctx.err(&field, "missing"))?;
            let (host, port) = host_port(ctx, &field, address)?;
            if host.is_empty() {
                return Err(ctx.err(format!("{field}.address"), "empty"));
            }
            hosts.push(DnsHost {
                host: host.to_string(),
                port,
                weight: weight(lb),
                priority: loc.priority,
            });
        }
    }
    // As Envoy: a LOGICAL_DNS cluster is one logical host.
    if logical && hosts.len() != 1 {
        return Err(ctx.err(
            "load_assignment",
            "a LOGICAL_DNS cluster has exactly one endpoint",
        ));
    }
    use cluster::DnsLookupFamily as F;
    let family = match F::try_from(c.dns_lookup_family) {
        Ok(F::Auto) => DnsFamily::Auto,
        Ok(F::V4Only) => DnsFamily::V4Only,
        Ok(F::V6Only) => DnsFamily::V6Only,
        Ok(F::V4Preferred) => DnsFamily::V4Preferred,
        Ok(F::All) => DnsFamily::All,
        Err(_) => return Err(ctx.err("dns_lookup_family", "unknown value")),
    };
    // Envoy's default is 5 s, and it refuses anything under 1 ms. (Deprecated for the DNS
    // cluster extension, which go-control-plane's example and most servers do not send yet.)
    #[allow(deprecated)]
    let refresh = c
        .dns_refresh_rate
        .as_ref()
        .map_or(Duration::from_secs(5), duration);
    if refresh <= Duration::from_millis(1) {
        return Err(ctx.err("dns_refresh_rate", "must be more than 1ms"));
    }
    Ok(DnsTargets {
        hosts,
        family,
        refresh,
        logical,
    })
}

// === Endpoints ===

/// The endpoints of an assignment, each with its priority and health, and the factor the
/// balancer stretches a priority's health by before moving load on (failover is the
/// balancer's).
fn endpoints(ctx: &Ctx<'_>, cla: &ClusterLoadAssignment) -> Result<Assignment, Invalid> {
    // Envoy's validation refuses 0.
    let overprovisioning = cla
        .policy
        .as_ref()
        .and_then(|p| p.overprovisioning_factor.as_ref())
        .map_or(OVERPROVISIONING, |f| f.value);
    if overprovisioning == 0 {
        return Err(ctx.err("policy.overprovisioning_factor", "must be more than 0"));
    }
    let mut out = Vec::new();
    for (i, loc) in cla.endpoints.iter().enumerate() {
        for (j, lb) in loc.lb_endpoints.iter().enumerate() {
            let field = format!("endpoints[{i}].lb_endpoints[{j}]");
            let Some(healthy) = health(lb) else { continue };
            let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = &lb.host_identifier else {
                return Err(ctx.err(format!("{field}.endpoint"), "missing"));
            };
            let addr = ep
                .address
                .as_ref()
                .ok_or_else(|| ctx.err(format!("{field}.endpoint.address"), "missing"))?;
            out.push(EndpointConfig {
                addr: socket_addr(ctx, &format!("{field}.endpoint.address"), addr)?,
                weight: weight(lb),
                identity: weft_string(lb.metadata.as_ref(), "identity"),
                workload: (!ep.hostname.is_empty()).then(|| ep.hostname.clone()),
                priority: loc.priority,
                healthy,
            });
        }
    }
    Ok(Assignment {
        endpoints: out,
        overprovisioning,
    })
}

/// The endpoints of a ClusterLoadAssignment.
pub fn load_assignment(cla: &ClusterLoadAssignment) -> Result<Assignment, Invalid> {
    endpoints(&Ctx(&cla.cluster_name), cla)
}

// === Routes ===

fn string_match(ctx: &Ctx<'_>, field: &str, m: &StringMatcher) -> Result<StringMatch, Invalid> {
    if m.ignore_case {
        return Err(ctx.err(format!("{field}.ignore_case"), "not supported"));
    }
    Ok(match &m.match_pattern {
        Some(string_matcher::MatchPattern::Exact(v)) => StringMatch::Exact(v.clone()),
        Some(string_matcher::MatchPattern::Prefix(v)) => StringMatch::Prefix(v.clone()),
        Some(string_matcher::MatchPattern::Suffix(v)) => StringMatch::Suffix(v.clone()),
        Some(string_matcher::MatchPattern::Contains(v)) => StringMatch::Contains(v.clone()),
        Some(string_matcher::MatchPattern::SafeRegex(r)) => StringMatch::Regex(
            full_regex(&r.regex)
                .map_err(|e| ctx.err(format!("{field}.safe_regex"), e.to_string()))?,
        ),
        _ => return Err(ctx.err(field, "unsupported match pattern")),
    })
}

/// NACKs the first of `set` (a field name under `field`, and whether the resource sets it):
/// fields that change what happens to a request, which weft-proxy would otherwise accept and
/// silently not do.
fn refuse<'a>(
    ctx: &Ctx<'_>,
    field: &str,
    set: impl IntoIterator<Item = (&'a str, bool)>,
) -> Result<(), Invalid> {
    match set.into_iter().find(|(_, is_set)| *is_set) {
        Some((name, _)) if field.is_empty() => Err(ctx.err(name, "not supported by weft-proxy")),
        Some((name, _)) => Err(ctx.err(format!("{field}.{name}"), "not supported by weft-proxy")),
        None => Ok(()),
    }
}

/// Envoy's four header-mutation lists, which route configurations, virtual hosts and routes all
/// carry, as [`refuse`] entries.
macro_rules! header_mutations {
    ($m:expr) => {
        [
            (
                "request_headers_to_add",
                !$m.request_headers_to_add.is_empty(),
            ),
            (
                "request_headers_to_remove",
                !$m.request_headers_to_remove.is_empty(),
            ),
            (
                "response_headers_to_add",
                !$m.response_headers_to_add.is_empty(),
            ),
            (
                "response_headers_to_remove",
                !$m.response_headers_to_remove.is_empty(),
            ),
        ]
    };
}

// The deprecated header matchers are still what older control planes send.
#[allow(deprecated)]
fn route(ctx: &Ctx<'_>, field: &str, r: &xr::Route) -> Result<Route, Invalid> {
    let m = r
        .r#match
        .as_ref()
        .ok_or_else(|| ctx.err(format!("{field}.match"), "missing"))?;
    refuse(
        ctx,
        field,
        [
            ("match.runtime_fraction", m.runtime_fraction.is_some()),
            ("match.grpc", m.grpc.is_some()),
            ("match.tls_context", m.tls_context.is_some()),
            ("match.dynamic_metadata", !m.dynamic_metadata.is_empty()),
        ],
    )?;
    let edits = header_edits(
        ctx,
        field,
        [&r.request_headers_to_add, &r.response_headers_to_add],
        [&r.request_headers_to_remove, &r.response_headers_to_remove],
    )?;
    if m.case_sensitive.is_some_and(|c| !c.value) {
        return Err(ctx.err(
            format!("{field}.match.case_sensitive"),
            "case-insensitive paths are not supported",
        ));
    }
    let path = match &m.path_specifier {
        Some(route_match::PathSpecifier::Prefix(p)) => PathMatch::Prefix(p.clone()),
        Some(route_match::PathSpecifier::Path(p)) => PathMatch::Exact(p.clone()),
        Some(route_match::PathSpecifier::PathSeparatedPrefix(p)) => {
            PathMatch::Segments(p.trim_end_matches('/').to_string())
        }
        Some(route_match::PathSpecifier::SafeRegex(r)) => PathMatch::Regex(
            full_regex(&r.regex)
                .map_err(|e| ctx.err(format!("{field}.match.safe_regex"), e.to_string()))?,
        ),
        _ => {
            return Err(ctx.err(
                format!("{field}.match.path_specifier"),
                "only prefix, path, path_separated_prefix and safe_regex",
            ));
        }
    };
    let mut headers = Vec::new();
    for (i, h) in m.headers.iter().enumerate() {
        let f = format!("{field}.match.headers[{i}]");
        // Other pseudo-headers are not in the header map a route is matched against: such a
        // match would never hold (and, inverted, always).
        if h.name.starts_with(':') && !h.name.eq_ignore_ascii_case(":method") {
            return Err(ctx.err(
                format!("{f}.name"),
                format!(
                    "{} cannot be matched; only :method of the pseudo-headers",
                    h.name
                ),
            ));
        }
        let value = match &h.header_match_specifier {
            Some(header_matcher::HeaderMatchSpecifier::StringMatch(s)) => string_match(ctx, &f, s)?,
            Some(header_matcher::HeaderMatchSpecifier::ExactMatch(v)) => {
                StringMatch::Exact(v.clone())
            }
            Some(header_matcher::HeaderMatchSpecifier::PrefixMatch(v)) => {
                StringMatch::Prefix(v.clone())
            }
            Some(header_matcher::HeaderMatchSpecifier::SafeRegexMatch(r)) => {
                StringMatch::Regex(full_regex(&r.regex).map_err(|e| ctx.err(&f, e.to_string()))?)
            }
            Some(header_matcher::HeaderMatchSpecifier::PresentMatch(true)) | None => {
                StringMatch::Present
            }
            _ => return Err(ctx.err(f, "unsupported header match")),
        };
        headers.push(HeaderMatch {
            name: h.name.to_ascii_lowercase(),
            value,
            invert: h.invert_match,
        });
    }
    let mut query = Vec::new();
    for (i, q) in m.query_parameters.iter().enumerate() {
        let f = format!("{field}.match.query_parameters[{i}]");
        let value = match &q.query_parameter_match_specifier {
            Some(query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(s)) => {
                string_match(ctx, &f, s)?
            }
            Some(query_parameter_matcher::QueryParameterMatchSpecifier::PresentMatch(true))
            | None => StringMatch::Present,
            _ => return Err(ctx.err(f, "unsupported query match")),
        };
        query.push(QueryMatch {
            name: q.name.clone(),
            value,
        });
    }
    let edits = (!edits.is_empty()).then(|| Arc::new(edits));
    let matched = match &path {
        PathMatch::Prefix(p) | PathMatch::Exact(p) | PathMatch::Segments(p) => Some(p.as_str()),
        PathMatch::Regex(_) => None,
    };
    let prefix_rewrite = |f: &str, with: &str| -> Result<PathRewrite, Invalid> {
        let matched = matched.ok_or_else(|| {
            ctx.err(
                f,
                "a prefix rewrite needs a prefix or path match, not a regex",
            )
        })?;
        Ok(PathRewrite::Prefix {
            matched: matched.to_string(),
            with: with.to_string(),
        })
    };
    let mut out = Route {
        name: r.name.clone(),
        path: path.clone(),
        headers,
        query,
        clusters: Vec::new(),
        timeout: None,
        edits,
        rewrite: None,
        redirect: None,
        mirrors: Vec::new(),
        direct: None,
        cluster_not_found: http::StatusCode::SERVICE_UNAVAILABLE,
    };
    match &r.action {
        Some(route::Action::Route(action)) => {
            forward(
                ctx,
                &format!("{field}.route"),
                action,
                &prefix_rewrite,
                &mut out,
            )?;
        }
        Some(route::Action::Redirect(action)) => {
            let f = format!("{field}.redirect");
            out.redirect = Some(Arc::new(redirect(ctx, &f, action, &prefix_rewrite)?));
        }
        Some(route::Action::DirectResponse(d)) => {
            out.direct = Some(direct_response(
                ctx,
                &format!("{field}.direct_response"),
                d,
            )?);
        }
        _ => {
            return Err(ctx.err(
                format!("{field}.action"),
                "only route, redirect and direct_response actions are supported",
            ));
        }
    }
    Ok(out)
}

/// A `direct_response`: a status Envoy accepts (200-599) and an inline body.
fn direct_response(
    ctx: &Ctx<'_>,
    field: &str,
    d: &xr::DirectResponseAction,
) -> Result<DirectResponse, Invalid> {
    use weft_proto::xds::config::core::v3::data_source::Specifier;
    refuse(ctx, field, [("body_format", d.body_format.is_some())])?;
    let status = u16::try_from(d.status)
        .ok()
        .filter(|s| (200..600).contains(s))
        .and_then(|s| http::StatusCode::from_u16(s).ok())
        .ok_or_else(|| {
            ctx.err(
                format!("{field}.status"),
                format!("bad status {}", d.status),
            )
        })?;
    let body = match d.body.as_ref().and_then(|b| b.specifier.as_ref()) {
        None => bytes::Bytes::new(),
        Some(Specifier::InlineString(s)) => bytes::Bytes::from(s.clone()),
        Some(Specifier::InlineBytes(b)) => bytes::Bytes::from(b.clone()),
        Some(_) => {
            return Err(ctx.err(
                format!("{field}.body"),
                "only an inline string or bytes is supported",
            ));
        }
    };
    Ok(DirectResponse { status, body })
}

/// One of a route's weighted clusters, with its header edits (Envoy applies them before the
/// route's) composed with the route's `edits`.
fn weighted_cluster(
    ctx: &Ctx<'_>,
    field: &str,
    c: &xr::weighted_cluster::ClusterWeight,
    route: Option<&Arc<HeaderEdits>>,
) -> Result<WeightedCluster, Invalid> {
    refuse(
        ctx,
        field,
        [
            ("cluster_header", !c.cluster_header.is_empty()),
            ("metadata_match", c.metadata_match.is_some()),
            ("host_rewrite_specifier", c.host_rewrite_specifier.is_some()),
        ],
    )?;
    let own = header_edits(
        ctx,
        field,
        [&c.request_headers_to_add, &c.response_headers_to_add],
        [&c.request_headers_to_remove, &c.response_headers_to_remove],
    )?;
    let edits = match route {
        _ if own.is_empty() => route.cloned(),
        None => Some(Arc::new(own)),
        Some(r) => Some(Arc::new(own.then(r))),
    };
    Ok(WeightedCluster {
        name: c.name.clone(),
        weight: c.weight.map_or(0, |w| w.value),
        edits,
    })
}

/// A route action: clusters, timeout and rewrites, into `out`.
fn forward(
    ctx: &Ctx<'_>,
    field: &str,
    action: &xr::RouteAction,
    prefix_rewrite: &dyn Fn(&str, &str) -> Result<PathRewrite, Invalid>,
    out: &mut Route,
) -> Result<(), Invalid> {
    refuse(
        ctx,
        field,
        [
            ("path_rewrite_policy", action.path_rewrite_policy.is_some()),
            ("hedge_policy", action.hedge_policy.is_some()),
            // Subsets: without them the route would spread over every endpoint.
            ("metadata_match", action.metadata_match.is_some()),
            (
                "internal_redirect_policy",
                action.internal_redirect_policy.is_some(),
            ),
        ],
    )?;
    use route_action::ClusterNotFoundResponseCode as NotFound;
    out.cluster_not_found = match NotFound::try_from(action.cluster_not_found_response_code) {
        Ok(NotFound::ServiceUnavailable) => http::StatusCode::SERVICE_UNAVAILABLE,
        Ok(NotFound::NotFound) => http::StatusCode::NOT_FOUND,
        Ok(NotFound::InternalServerError) => http::StatusCode::INTERNAL_SERVER_ERROR,
        Err(_) => {
            return Err(ctx.err(
                format!("{field}.cluster_not_found_response_code"),
                format!("unknown code {}", action.cluster_not_found_response_code),
            ));
        }
    };
    out.clusters = match &action.cluster_specifier {
        Some(route_action::ClusterSpecifier::Cluster(c)) => vec![WeightedCluster {
            name: c.clone(),
            weight: 1,
            edits: out.edits.clone(),
        }],
        Some(route_action::ClusterSpecifier::WeightedClusters(w)) => w
            .clusters
            .iter()
            .enumerate()
            .map(|(i, c)| {
                weighted_cluster(
                    ctx,
                    &format!("{field}.weighted_clusters.clusters[{i}]"),
                    c,
                    out.edits.as_ref(),
                )
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(ctx.err(
                format!("{field}.cluster_specifier"),
                "only cluster and weighted_clusters",
            ));
        }
    };
    // Envoy: an unset route timeout means 15 s, zero means none; `max_stream_duration` bounds it
    // further when set.
    let route_timeout = match &action.timeout {
        None => Some(Duration::from_secs(15)),
        Some(t) => Some(duration(t)).filter(|d| !d.is_zero()),
    };
    let stream_max = action
        .max_stream_duration
        .as_ref()
        .and_then(|m| m.max_stream_duration.as_ref())
        .map(duration)
        .filter(|d| !d.is_zero());
    out.timeout = match (route_timeout, stream_max) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let path = match (action.prefix_rewrite.as_str(), &action.regex_rewrite) {
        ("", None) => None,
        (with, None) => Some(prefix_rewrite(&format!("{field}.prefix_rewrite"), with)?),
        ("", Some(rr)) => {
            let f = format!("{field}.regex_rewrite");
            let pattern = rr
                .pattern
                .as_ref()
                .ok_or_else(|| ctx.err(format!("{f}.pattern"), "missing"))?;
            Some(PathRewrite::Regex {
                pattern: regex::Regex::new(&pattern.regex)
                    .map_err(|e| ctx.err(format!("{f}.pattern.regex"), e.to_string()))?,
                with: re2_substitution(&rr.substitution)
                    .map_err(|e| ctx.err(format!("{f}.substitution"), e))?,
            })
        }
        _ => {
            return Err(ctx.err(
                format!("{field}.regex_rewrite"),
                "prefix_rewrite and regex_rewrite are exclusive",
            ));
        }
    };
    let host = match &action.host_rewrite_specifier {
        None => None,
        Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(h)) => Some(
            http::uri::Authority::try_from(h.as_str())
                .ok()
                .and_then(|a| http::HeaderValue::try_from(a.as_str()).ok())
                .ok_or_else(|| {
                    ctx.err(
                        format!("{field}.host_rewrite_literal"),
                        format!("not a host: {h:?}"),
                    )
                })?,
        ),
        Some(_) => {
            return Err(ctx.err(
                format!("{field}.host_rewrite_specifier"),
                "only host_rewrite_literal",
            ));
        }
    };
    if path.is_some() || host.is_some() {
        out.rewrite = Some(Arc::new(Rewrite { path, host }));
    }
    out.mirrors = action
        .request_mirror_policies
        .iter()
        .enumerate()
        .map(|(i, m)| mirror_policy(ctx, &format!("{field}.request_mirror_policies[{i}]"), m))
        .collect::<Result<_, _>>()?;
    Ok(())
}

/// A mirror policy: a named cluster and a static share (a runtime key would need Envoy's runtime).
fn mirror_policy(
    ctx: &Ctx<'_>,
    field: &str,
    m: &route_action::RequestMirrorPolicy,
) -> Result<MirrorPolicy, Invalid> {
    use weft_proto::xds::r#type::v3::fractional_percent::DenominatorType;
    refuse(
        ctx,
        field,
        [
            ("cluster_header", !m.cluster_header.is_empty()),
            ("trace_sampled", m.trace_sampled.is_some_and(|t| t.value)),
            (
                "disable_shadow_host_suffix_append",
                m.disable_shadow_host_suffix_append,
            ),
            (
                "runtime_fraction.runtime_key",
                m.runtime_fraction
                    .as_ref()
                    .is_some_and(|f| !f.runtime_key.is_empty()),
            ),
        ],
    )?;
    if m.cluster.is_empty() {
        return Err(ctx.err(format!("{field}.cluster"), "missing"));
    }
    // Envoy: no fraction means every request.
    let per_million = match m
        .runtime_fraction
        .as_ref()
        .and_then(|f| f.default_value.as_ref())
    {
        None => 1_000_000,
        Some(p) => {
            let scale = match DenominatorType::try_from(p.denominator) {
                Ok(DenominatorType::Hundred) => 10_000,
                Ok(DenominatorType::TenThousand) => 100,
                Ok(DenominatorType::Million) => 1,
                Err(_) => {
                    return Err(ctx.err(
                        format!("{field}.runtime_fraction.default_value.denominator"),
                        "unknown",
                    ));
                }
            };
            p.numerator.saturating_mul(scale).min(1_000_000)
        }
    };
    Ok(MirrorPolicy {
        cluster: m.cluster.clone(),
        per_million,
    })
}

/// A redirect action, checked: a known status, a port in range, a host without a port.
fn redirect(
    ctx: &Ctx<'_>,
    field: &str,
    r: &xr::RedirectAction,
    prefix_rewrite: &dyn Fn(&str, &str) -> Result<PathRewrite, Invalid>,
) -> Result<Redirect, Invalid> {
    use xr::redirect_action::{PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier};
    let status = match RedirectResponseCode::try_from(r.response_code) {
        Ok(RedirectResponseCode::MovedPermanently) => http::StatusCode::MOVED_PERMANENTLY,
        Ok(RedirectResponseCode::Found) => http::StatusCode::FOUND,
        Ok(RedirectResponseCode::SeeOther) => http::StatusCode::SEE_OTHER,
        Ok(RedirectResponseCode::TemporaryRedirect) => http::StatusCode::TEMPORARY_REDIRECT,
        Ok(RedirectResponseCode::PermanentRedirect) => http::StatusCode::PERMANENT_REDIRECT,
        Err(_) => {
            return Err(ctx.err(
                format!("{field}.response_code"),
                format!("unknown code {}", r.response_code),
            ));
        }
    };
    let scheme = match &r.scheme_rewrite_specifier {
        Some(SchemeRewriteSpecifier::HttpsRedirect(true)) => Some("https".to_string()),
        Some(SchemeRewriteSpecifier::SchemeRedirect(s)) if !s.is_empty() => {
            http::uri::Scheme::try_from(s.as_str()).map_err(|_| {
                ctx.err(
                    format!("{field}.scheme_redirect"),
                    format!("bad scheme {s:?}"),
                )
            })?;
            Some(s.to_ascii_lowercase())
        }
        _ => None,
    };
    let host = match r.host_redirect.as_str() {
        "" => None,
        h => {
            let bare = h.trim_start_matches('[').trim_end_matches(']');
            let valid = bare.parse::<IpAddr>().is_ok()
                || (!h.contains(':') && http::uri::Authority::try_from(h).is_ok());
            if !valid {
                return Err(ctx.err(
                    format!("{field}.host_redirect"),
                    format!("not a host: {h:?}"),
                ));
            }
            Some(bare.to_string())
        }
    };
    let port = match r.port_redirect {
        0 => None,
        p => Some(u16::try_from(p).map_err(|_| {
            ctx.err(
                format!("{field}.port_redirect"),
                format!("{p} is not a port"),
            )
        })?),
    };
    let path = match &r.path_rewrite_specifier {
        None => None,
        Some(PathRewriteSpecifier::PathRedirect(p)) if p.starts_with('/') => {
            Some(PathRewrite::Full(p.clone()))
        }
        Some(PathRewriteSpecifier::PathRedirect(p)) => {
            return Err(ctx.err(
                format!("{field}.path_redirect"),
                format!("{p:?} does not start with /"),
            ));
        }
        Some(PathRewriteSpecifier::PrefixRewrite(p)) => {
            Some(prefix_rewrite(&format!("{field}.prefix_rewrite"), p)?)
        }
        Some(_) => {
            return Err(ctx.err(
                format!("{field}.path_rewrite_specifier"),
                "only path_redirect and prefix_rewrite",
            ));
        }
    };
    Ok(Redirect {
        scheme,
        host,
        port,
        path,
        strip_query: r.strip_query,
        status,
    })
}

/// An RE2 substitution (`\1` names a group, `\\` is a backslash) in the `regex` crate's syntax
/// (`${1}`, and `$$` for a dollar).
fn re2_substitution(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(d) if d.is_ascii_digit() => out.push_str(&format!("${{{d}}}")),
                Some('\\') => out.push('\\'),
                other => return Err(format!("bad escape \\{}", other.unwrap_or(' '))),
            },
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// The header edits of a route or a weighted cluster, both ways: (request, response) additions
/// and removals, Envoy's `request_headers_*` and `response_headers_*`.
fn header_edits(
    ctx: &Ctx<'_>,
    field: &str,
    [request_add, response_add]: [&[weft_proto::xds::config::core::v3::HeaderValueOption]; 2],
    [request_remove, response_remove]: [&[String]; 2],
) -> Result<HeaderEdits, Invalid> {
    Ok(HeaderEdits {
        request: edits(
            ctx,
            &format!("{field}.request_headers"),
            request_add,
            request_remove,
        )?,
        response: edits(
            ctx,
            &format!("{field}.response_headers"),
            response_add,
            response_remove,
        )?,
    })
}

/// A route's header edits of one direction (`<field>_to_add`, `<field>_to_remove`), checked: names and values valid, none the proxy
/// must not let a route change (pseudo-headers, `host`, framing), and no command operators
/// (`%REQ(...)%`), which Envoy would substitute and weft-proxy cannot; `%%` is a plain `%`.
fn edits(
    ctx: &Ctx<'_>,
    field: &str,
    add: &[weft_proto::xds::config::core::v3::HeaderValueOption],
    remove: &[String],
) -> Result<Edits, Invalid> {
    use weft_proto::xds::config::core::v3::header_value_option::HeaderAppendAction as Action;
    let name = |f: &str, n: &str| -> Result<http::HeaderName, Invalid> {
        let lower = n.to_ascii_lowercase();
        let forbidden = lower.starts_with(':')
            || matches!(
                lower.as_str(),
                "host" | "content-length" | "transfer-encoding"
            );
        if forbidden {
            return Err(ctx.err(f, format!("header {n} may not be changed by a route")));
        }
        http::HeaderName::try_from(lower).map_err(|_| ctx.err(f, format!("bad header name {n:?}")))
    };
    let mut out = Edits {
        remove: remove
            .iter()
            .enumerate()
            .map(|(i, n)| name(&format!("{field}_to_remove[{i}]"), n))
            .collect::<Result<_, _>>()?,
        put: Vec::new(),
    };
    for (i, opt) in add.iter().enumerate() {
        let f = format!("{field}_to_add[{i}]");
        let h = opt
            .header
            .as_ref()
            .ok_or_else(|| ctx.err(format!("{f}.header"), "missing"))?;
        let raw = if h.raw_value.is_empty() {
            h.value.clone()
        } else {
            String::from_utf8(h.raw_value.clone())
                .map_err(|_| ctx.err(format!("{f}.header.raw_value"), "not UTF-8"))?
        };
        let pieces: Vec<&str> = raw.split("%%").collect();
        if pieces.iter().any(|p| p.contains('%')) {
            return Err(ctx.err(
                format!("{f}.header.value"),
                "command operators (%...%) are not supported",
            ));
        }
        let value = http::HeaderValue::try_from(pieces.join("%"))
            .map_err(|_| ctx.err(format!("{f}.header.value"), "not a valid header value"))?;
        // The deprecated `append`, when set, decides (Envoy's rule).
        #[allow(deprecated)]
        let action = match opt.append {
            Some(a) if a.value => Action::AppendIfExistsOrAdd,
            Some(_) => Action::OverwriteIfExistsOrAdd,
            None => Action::try_from(opt.append_action)
                .map_err(|_| ctx.err(format!("{f}.append_action"), "unknown append action"))?,
        };
        out.put.push(Put {
            name: name(&format!("{f}.header.key"), &h.key)?,
            value,
            append: match action {
                Action::AppendIfExistsOrAdd => Append::AppendIfExistsOrAdd,
                Action::AddIfAbsent => Append::AddIfAbsent,
                Action::OverwriteIfExistsOrAdd => Append::OverwriteIfExistsOrAdd,
                Action::OverwriteIfExists => Append::OverwriteIfExists,
            },
        });
    }
    Ok(out)
}

impl TryFrom<&xr::RouteConfiguration> for RouteTable {
    type Error = Invalid;

    fn try_from(rc: &xr::RouteConfiguration) -> Result<Self, Invalid> {
        let ctx = Ctx(&rc.name);
        refuse(
            &ctx,
            "",
            header_mutations!(rc).into_iter().chain([
                ("vhds", rc.vhds.is_some()),
                (
                    "request_mirror_policies",
                    !rc.request_mirror_policies.is_empty(),
                ),
            ]),
        )?;
        let mut virtual_hosts = Vec::new();
        for (i, vh) in rc.virtual_hosts.iter().enumerate() {
            refuse(
                &ctx,
                &format!("virtual_hosts[{i}]"),
                header_mutations!(vh).into_iter().chain([
                    ("require_tls", vh.require_tls != 0),
                    ("matcher", vh.matcher.is_some()),
                    (
                        "request_mirror_policies",
                        !vh.request_mirror_policies.is_empty(),
                    ),
                ]),
            )?;
            let routes = vh
                .routes
                .iter()
                .enumerate()
                .map(|(j, r)| route(&ctx, &format!("virtual_hosts[{i}].routes[{j}]"), r))
                .collect::<Result<_, _>>()?;
            virtual_hosts.push(VirtualHost {
                domains: vh.domains.clone(),
                routes,
            });
        }
        Ok(Self {
            name: rc.name.clone(),
            virtual_hosts,
        })
    }
}

#[cfg(test)]
mod tests {
    use weft_proto::xds::config::core::v3::HeaderValueOption;

    use super::*;

    type Edit = fn(&mut xr::RouteConfiguration);

    fn route_config(edit: impl FnOnce(&mut xr::RouteConfiguration)) -> Result<RouteTable, Invalid> {
        let mut rc = xr::RouteConfiguration {
            name: "rc".into(),
            virtual_hosts: vec![xr::VirtualHost {
                name: "vh".into(),
                domains: vec!["*".into()],
                routes: vec![xr::Route {
                    r#match: Some(xr::RouteMatch {
                        path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                        ..Default::default()
                    }),
                    action: Some(route::Action::Route(xr::RouteAction {
                        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                            "c".into(),
                        )),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        edit(&mut rc);
        RouteTable::try_from(&rc)
    }

    fn first_route(rc: &mut xr::RouteConfiguration) -> &mut xr::Route {
        &mut rc.virtual_hosts[0].routes[0]
    }

    fn first_action(rc: &mut xr::RouteConfiguration) -> &mut xr::RouteAction {
        match first_route(rc).action.as_mut() {
            Some(route::Action::Route(a)) => a,
            _ => unreachable!("built with a route action"),
        }
    }

    #[test]
    fn fields_weft_proxy_would_silently_not_apply_are_refused_by_name() {
        assert!(route_config(|_| {}).is_ok());
        let cases: [(&str, Edit); 8] = [
            (
                "virtual_hosts[0].routes[0].route.path_rewrite_policy",
                |rc| first_action(rc).path_rewrite_policy = Some(Default::default()),
            ),
            (
                "virtual_hosts[0].routes[0].route.request_mirror_policies[0].cluster_header",
                |rc| {
                    first_action(rc).request_mirror_policies.push(
                        route_action::RequestMirrorPolicy {
                            cluster_header: "x-mirror-to".into(),
                            ..Default::default()
                        },
                    )
                },
            ),
            ("virtual_hosts[0].request_headers_to_add", |rc| {
                rc.virtual_hosts[0]
                    .request_headers_to_add
                    .push(HeaderValueOption::default())
            }),
            ("virtual_hosts[0].routes[0].match.runtime_fraction", |rc| {
                first_route(rc).r#match.as_mut().unwrap().runtime_fraction =
                    Some(Default::default())
            }),
            ("virtual_hosts[0].require_tls", |rc| {
                rc.virtual_hosts[0].require_tls = 1
            }),
            ("response_headers_to_add", |rc| {
                rc.response_headers_to_add
                    .push(HeaderValueOption::default())
            }),
            ("virtual_hosts[0].routes[0].route.metadata_match", |rc| {
                first_action(rc).metadata_match = Some(Default::default())
            }),
            ("virtual_hosts[0].routes[0].match.headers[0].name", |rc| {
                first_route(rc)
                    .r#match
                    .as_mut()
                    .unwrap()
                    .headers
                    .push(xr::HeaderMatcher {
                        name: ":authority".into(),
                        ..Default::default()
                    })
            }),
        ];
        for (field, edit) in cases {
            let err = route_config(edit).expect_err(field);
            assert_eq!(err.field, field);
        }
    }

    fn header(key: &str, value: &str, action: i32) -> HeaderValueOption {
        HeaderValueOption {
            header: Some(weft_proto::xds::config::core::v3::HeaderValue {
                key: key.into(),
                value: value.into(),
                ..Default::default()
            }),
            append_action: action,
            ..Default::default()
        }
    }

    #[test]
    fn route_header_edits_are_parsed_once_and_unsafe_ones_refused() {
        let rt = route_config(|rc| {
            let r = first_route(rc);
            r.request_headers_to_add.push(header("X-Canary", "yes", 2));
            r.request_headers_to_add.push(header("x-pct", "100%%", 0));
            r.request_headers_to_remove.push("X-Debug".into());
            r.response_headers_to_add
                .push(header("x-served-by", "weft", 1));
        })
        .unwrap();
        let edits = rt.virtual_hosts[0].routes[0].edits.clone().expect("edits");
        let put = |e: &Edits| -> Vec<(String, String, Append)> {
            e.put
                .iter()
                .map(|p| {
                    (
                        p.name.to_string(),
                        p.value.to_str().unwrap().to_string(),
                        p.append,
                    )
                })
                .collect()
        };
        assert_eq!(
            put(&edits.request),
            [
                (
                    "x-canary".into(),
                    "yes".into(),
                    Append::OverwriteIfExistsOrAdd
                ),
                ("x-pct".into(), "100%".into(), Append::AppendIfExistsOrAdd),
            ]
        );
        assert_eq!(edits.request.remove, ["x-debug"]);
        assert_eq!(
            put(&edits.response),
            [("x-served-by".into(), "weft".into(), Append::AddIfAbsent)]
        );
        // Without edits a route carries none (and the fast path keeps it).
        assert!(
            route_config(|_| {}).unwrap().virtual_hosts[0].routes[0]
                .edits
                .is_none()
        );

        let cases: [(&str, Edit); 4] = [
            (
                "virtual_hosts[0].routes[0].request_headers_to_add[0]",
                |rc| {
                    first_route(rc)
                        .request_headers_to_add
                        .push(header(":path", "/x", 0))
                },
            ),
            (
                "virtual_hosts[0].routes[0].request_headers_to_add[0].header.value",
                |rc| {
                    first_route(rc).request_headers_to_add.push(header(
                        "x-peer",
                        "%DOWNSTREAM_REMOTE_ADDRESS%",
                        0,
                    ))
                },
            ),
            (
                "virtual_hosts[0].routes[0].request_headers_to_remove[0]",
                |rc| {
                    first_route(rc)
                        .request_headers_to_remove
                        .push("Host".into())
                },
            ),
            (
                "virtual_hosts[0].routes[0].response_headers_to_add[0].header",
                |rc| {
                    first_route(rc)
                        .response_headers_to_add
                        .push(HeaderValueOption::default())
                },
            ),
        ];
        for (field, edit) in cases {
            let err = route_config(edit).expect_err(field);
            assert!(err.field.starts_with(field), "{field}: {err:?}");
        }
    }

    #[test]
    fn a_weighted_clusters_header_edits_come_before_its_routes() {
        fn weighted(rc: &mut xr::RouteConfiguration) {
            let r = first_route(rc);
            r.request_headers_to_add.push(header("x-route", "r", 2));
            r.request_headers_to_remove.push("x-b".into());
            let b = xr::weighted_cluster::ClusterWeight {
                name: "b".into(),
                weight: Some(weft_proto::google::protobuf::UInt32Value { value: 1 }),
                request_headers_to_add: vec![header("x-b", "1", 2), header("x-backend", "b", 2)],
                response_headers_to_add: vec![header("x-served-by", "b", 2)],
                ..Default::default()
            };
            let a = xr::weighted_cluster::ClusterWeight {
                name: "a".into(),
                weight: Some(weft_proto::google::protobuf::UInt32Value { value: 1 }),
                ..Default::default()
            };
            first_action(rc).cluster_specifier = Some(
                route_action::ClusterSpecifier::WeightedClusters(xr::WeightedCluster {
                    clusters: vec![a, b],
                    ..Default::default()
                }),
            );
        }
        let rt = route_config(weighted).unwrap();
        let route = &rt.virtual_hosts[0].routes[0];
        let (a, b) = (&route.clusters[0], &route.clusters[1]);
        // No edits of its own: the route's, shared.
        assert!(Arc::ptr_eq(
            a.edits.as_ref().unwrap(),
            route.edits.as_ref().unwrap()
        ));
        let mut h = http::HeaderMap::new();
        b.edits.as_ref().unwrap().request.apply(&mut h);
        // The route removes `x-b` after the cluster put it, as Envoy orders them.
        let shown: Vec<(&str, &str)> = h
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(shown, [("x-backend", "b"), ("x-route", "r")]);
        let mut h = http::HeaderMap::new();
        b.edits.as_ref().unwrap().response.apply(&mut h);
        assert_eq!(h["x-served-by"], "b");

        let bad = |rc: &mut xr::RouteConfiguration| {
            weighted(rc);
            if let Some(route_action::ClusterSpecifier::WeightedClusters(w)) =
                &mut first_action(rc).cluster_specifier
            {
                w.clusters[1].host_rewrite_specifier = Some(
                    xr::weighted_cluster::cluster_weight::HostRewriteSpecifier::HostRewriteLiteral(
                        "x".into(),
                    ),
                );
            }
        };
        let err = route_config(bad).unwrap_err();
        assert_eq!(
            err.field,
            "virtual_hosts[0].routes[0].route.weighted_clusters.clusters[1].host_rewrite_specifier"
        );
    }

    #[test]
    fn direct_responses_and_the_cluster_not_found_code_are_read_and_bad_ones_refused() {
        use weft_proto::xds::config::core::v3::{DataSource, data_source::Specifier};
        let direct = |status: u32, body: Option<Specifier>| {
            move |rc: &mut xr::RouteConfiguration| {
                first_route(rc).action =
                    Some(route::Action::DirectResponse(xr::DirectResponseAction {
                        status,
                        body: body.clone().map(|s| DataSource {
                            specifier: Some(s),
                            ..Default::default()
                        }),
                        body_format: None,
                    }));
            }
        };
        let rt = route_config(direct(500, Some(Specifier::InlineString("no".into())))).unwrap();
        let want = DirectResponse {
            status: http::StatusCode::INTERNAL_SERVER_ERROR,
            body: bytes::Bytes::from_static(b"no"),
        };
        assert_eq!(rt.virtual_hosts[0].routes[0].direct, Some(want));
        assert!(rt.virtual_hosts[0].routes[0].clusters.is_empty());
        let plain = route_config(direct(204, None)).unwrap();
        assert!(
            plain.virtual_hosts[0].routes[0]
                .direct
                .as_ref()
                .unwrap()
                .body
                .is_empty()
        );
        for (status, body, field) in [
            (99, None, "status"),
            (101, None, "status"),
            (600, None, "status"),
            (200, Some(Specifier::Filename("/etc/passwd".into())), "body"),
        ] {
            let err = route_config(direct(status, body)).unwrap_err();
            assert_eq!(
                err.field,
                format!("virtual_hosts[0].routes[0].direct_response.{field}")
            );
        }

        let code = |c: i32| {
            move |rc: &mut xr::RouteConfiguration| {
                first_action(rc).cluster_not_found_response_code = c;
            }
        };
        let statuses: Vec<u16> = [0, 1, 2]
            .map(|c| {
                route_config(code(c)).unwrap().virtual_hosts[0].routes[0]
                    .cluster_not_found
                    .as_u16()
            })
            .into();
        assert_eq!(statuses, [503, 404, 500]);
        let err = route_config(code(7)).unwrap_err();
        assert_eq!(
            err.field,
            "virtual_hosts[0].routes[0].route.cluster_not_found_response_code"
        );
    }

    fn redirect_route(rc: &mut xr::RouteConfiguration, r: xr::RedirectAction) {
        first_route(rc).action = Some(route::Action::Redirect(r));
    }

    #[test]
    fn rewrites_and_redirects_are_read_and_bad_ones_refused_by_name() {
        use crate::config::rewrite::{PathRewrite, Redirect};
        use weft_proto::xds::r#type::matcher::v3::{RegexMatchAndSubstitute, RegexMatcher};
        fn regex_rewrite(pattern: &str, substitution: &str) -> Option<RegexMatchAndSubstitute> {
            Some(RegexMatchAndSubstitute {
                pattern: Some(RegexMatcher {
                    regex: pattern.into(),
                    ..Default::default()
                }),
                substitution: substitution.into(),
            })
        }
        let rt = route_config(|rc| {
            first_action(rc).prefix_rewrite = "/v2/".into();
            first_action(rc).host_rewrite_specifier = Some(
                route_action::HostRewriteSpecifier::HostRewriteLiteral("api.example:8080".into()),
            );
        })
        .unwrap();
        let rw = rt.virtual_hosts[0].routes[0].rewrite.clone().unwrap();
        assert_eq!(rw.path.as_ref().unwrap().apply("/x?y"), "/v2/x?y");
        assert_eq!(rw.host.as_ref().unwrap(), "api.example:8080");
        let rt = route_config(|rc| {
            first_action(rc).regex_rewrite =
                regex_rewrite("^/svc/([^/]+)(/.*)$", "\\2/instance/\\1$");
        })
        .unwrap();
        let rw = rt.virtual_hosts[0].routes[0].rewrite.clone().unwrap();
        assert_eq!(
            rw.path.as_ref().unwrap().apply("/svc/a/b?q"),
            "/b/instance/a$?q"
        );

        let rt = route_config(|rc| {
            redirect_route(
                rc,
                xr::RedirectAction {
                    scheme_rewrite_specifier: Some(
                        xr::redirect_action::SchemeRewriteSpecifier::HttpsRedirect(true),
                    ),
                    host_redirect: "[::1]".into(),
                    port_redirect: 8443,
                    path_rewrite_specifier: Some(
                        xr::redirect_action::PathRewriteSpecifier::PathRedirect("/new".into()),
                    ),
                    response_code: 4,
                    strip_query: true,
                },
            )
        })
        .unwrap();
        let route = &rt.virtual_hosts[0].routes[0];
        assert!(route.clusters.is_empty());
        assert_eq!(
            route.redirect.as_deref(),
            Some(&Redirect {
                scheme: Some("https".into()),
                host: Some("::1".into()),
                port: Some(8443),
                path: Some(PathRewrite::Full("/new".into())),
                strip_query: true,
                status: http::StatusCode::PERMANENT_REDIRECT,
            })
        );

        let cases: [(&str, Edit); 8] = [
            ("virtual_hosts[0].routes[0].route.prefix_rewrite", |rc| {
                first_route(rc).r#match.as_mut().unwrap().path_specifier =
                    Some(route_match::PathSpecifier::SafeRegex(RegexMatcher {
                        regex: "/a.*".into(),
                        ..Default::default()
                    }));
                first_action(rc).prefix_rewrite = "/b".into();
            }),
            ("virtual_hosts[0].routes[0].route.regex_rewrite", |rc| {
                first_action(rc).prefix_rewrite = "/b".into();
                first_action(rc).regex_rewrite = regex_rewrite("^/.*$", "/c");
            }),
            (
                "virtual_hosts[0].routes[0].route.regex_rewrite.pattern.regex",
                |rc| first_action(rc).regex_rewrite = regex_rewrite("([", "/c"),
            ),
            (
                "virtual_hosts[0].routes[0].route.regex_rewrite.substitution",
                |rc| first_action(rc).regex_rewrite = regex_rewrite("^/.*$", "\\x"),
            ),
            (
                "virtual_hosts[0].routes[0].route.host_rewrite_literal",
                |rc| {
                    first_action(rc).host_rewrite_specifier = Some(
                        route_action::HostRewriteSpecifier::HostRewriteLiteral("a b".into()),
                    )
                },
            ),
            ("virtual_hosts[0].routes[0].redirect.response_code", |rc| {
                redirect_route(
                    rc,
                    xr::RedirectAction {
                        response_code: 9,
                        ..Default::default()
                    },
                )
            }),
            ("virtual_hosts[0].routes[0].redirect.port_redirect", |rc| {
                redirect_route(
                    rc,
                    xr::RedirectAction {
                        port_redirect: 70_000,
                        ..Default::default()
                    },
                )
            }),
            ("virtual_hosts[0].routes[0].redirect.host_redirect", |rc| {
                redirect_route(
                    rc,
                    xr::RedirectAction {
                        host_redirect: "evil.example:80/x".into(),
                        ..Default::default()
                    },
                )
            }),
        ];
        for (field, edit) in cases {
            let err = route_config(edit).expect_err(field);
            assert_eq!(err.field, field, "{err:?}");
        }
    }

    #[test]
    fn mirror_policies_read_their_share_and_refuse_what_they_cannot_do() {
        use weft_proto::xds::config::core::v3::RuntimeFractionalPercent;
        use weft_proto::xds::r#type::v3::FractionalPercent;
        let rt = route_config(|rc| {
            first_action(rc).request_mirror_policies = vec![
                route_action::RequestMirrorPolicy {
                    cluster: "quarter".into(),
                    runtime_fraction: Some(RuntimeFractionalPercent {
                        default_value: Some(FractionalPercent {
                            numerator: 25,
                            denominator: 0, // HUNDRED
                        }),
                        runtime_key: String::new(),
                    }),
                    ..Default::default()
                },
                route_action::RequestMirrorPolicy {
                    cluster: "all".into(),
                    ..Default::default()
                },
            ]
        })
        .unwrap();
        let got: Vec<(String, u32)> = rt.virtual_hosts[0].routes[0]
            .mirrors
            .iter()
            .map(|m| (m.cluster.clone(), m.per_million))
            .collect();
        assert_eq!(
            got,
            [
                ("quarter".to_string(), 250_000),
                ("all".to_string(), 1_000_000)
            ]
        );
        let err = route_config(|rc| {
            first_action(rc)
                .request_mirror_policies
                .push(Default::default())
        })
        .expect_err("no cluster");
        assert_eq!(
            err.field,
            "virtual_hosts[0].routes[0].route.request_mirror_policies[0].cluster"
        );
    }

    #[test]
    fn paths_matched_by_segment_as_gateway_servers_send_them() {
        let rt = route_config(|rc| {
            first_route(rc).r#match.as_mut().unwrap().path_specifier = Some(
                route_match::PathSpecifier::PathSeparatedPrefix("/api".into()),
            )
        })
        .unwrap();
        assert_eq!(
            rt.virtual_hosts[0].routes[0].path,
            PathMatch::Segments("/api".into())
        );
    }

    fn eds_cluster(source: config_source::ConfigSourceSpecifier, service: &str) -> xc::Cluster {
        xc::Cluster {
            name: "outbound|80||a.shop.svc.cluster.local".into(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Eds as i32,
            )),
            eds_cluster_config: Some(cluster::EdsClusterConfig {
                eds_config: Some(weft_proto::xds::config::core::v3::ConfigSource {
                    config_source_specifier: Some(source),
                    ..Default::default()
                }),
                service_name: service.into(),
            }),
            ..Default::default()
        }
    }

    /// TLS weft-proxy would not do is refused, never served as plaintext: per cluster (plain, or
    /// per endpoint as Istio's auto-mTLS asks) and per listener filter chain.
    #[test]
    fn tls_asked_for_per_cluster_or_per_chain_is_refused() {
        use config_source::ConfigSourceSpecifier as Source;
        let tls = || weft_proto::xds::config::core::v3::TransportSocket {
            name: "envoy.transport_sockets.tls".into(),
            ..Default::default()
        };
        let plain = eds_cluster(Source::Ads(Default::default()), "");
        let cases = [
            (
                xc::Cluster {
                    transport_socket: Some(tls()),
                    ..plain.clone()
                },
                "transport_socket",
            ),
            (
                xc::Cluster {
                    transport_socket_matches: vec![cluster::TransportSocketMatch {
                        name: "tlsMode-istio".into(),
                        transport_socket: Some(tls()),
                        ..Default::default()
                    }],
                    ..plain.clone()
                },
                "transport_socket_matches",
            ),
        ];
        for (c, field) in cases {
            assert_eq!(Cluster::try_from(&c).unwrap_err().field, field);
        }
        let chain = xl::FilterChain {
            transport_socket: Some(tls()),
            ..tcp_chain()
        };
        let l = xl::Listener {
            name: "l".into(),
            filter_chains: vec![chain],
            ..Default::default()
        };
        assert_eq!(
            Listener::try_from(&l).unwrap_err().field,
            "filter_chains[0].transport_socket"
        );
    }

    #[test]
    fn clusters_as_other_control_planes_send_them() {
        use config_source::ConfigSourceSpecifier as Source;
        let ads = || Source::Ads(Default::default());
        // EDS over ADS or `self`, by the cluster's name or by `service_name`.
        let c = Cluster::try_from(&eds_cluster(ads(), "")).unwrap();
        assert_eq!(
            c.eds.as_deref(),
            Some("outbound|80||a.shop.svc.cluster.local")
        );
        let c =
            Cluster::try_from(&eds_cluster(Source::Self_(Default::default()), "a-eds")).unwrap();
        assert_eq!(c.eds.as_deref(), Some("a-eds"));
        // A gRPC api_config_source (go-control-plane's example) is fetched over the ADS stream;
        // REST and files are refused.
        use weft_proto::xds::config::core::v3::{ApiConfigSource, api_config_source::ApiType};
        let api = |api_type: ApiType| {
            Source::ApiConfigSource(ApiConfigSource {
                api_type: api_type as i32,
                ..Default::default()
            })
        };
        for t in [ApiType::Grpc, ApiType::DeltaGrpc, ApiType::AggregatedGrpc] {
            let c = Cluster::try_from(&eds_cluster(api(t), "")).unwrap();
            assert_eq!(
                c.eds.as_deref(),
                Some("outbound|80||a.shop.svc.cluster.local")
            );
        }
        for source in [
            Source::PathConfigSource(Default::default()),
            api(ApiType::Rest),
        ] {
            let err = Cluster::try_from(&eds_cluster(source, "")).unwrap_err();
            assert_eq!(err.field, "eds_cluster_config.eds_config");
        }
        // The deprecated HTTP/2 marker still makes the upstream HTTP/2.
        #[allow(deprecated)]
        let h2 = xc::Cluster {
            http2_protocol_options: Some(Default::default()),
            ..eds_cluster(ads(), "")
        };
        assert_eq!(
            Cluster::try_from(&h2).unwrap().upstream_http,
            UpstreamHttp::Http2
        );
        // A static cluster without endpoints (Istio's BlackHoleCluster) has none.
        let blackhole = xc::Cluster {
            name: "BlackHoleCluster".into(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Static as i32,
            )),
            ..Default::default()
        };
        let c = Cluster::try_from(&blackhole).unwrap();
        assert_eq!(
            (c.eds, c.static_endpoints),
            (None, Some(Assignment::new(vec![])))
        );
    }

    /// A `tcp_proxy` split over weighted clusters (a TCPRoute's) is read with its weights; a
    /// weight of 0, a nameless cluster or an empty list is refused, naming the field.
    #[test]
    fn a_tcp_proxy_takes_weighted_clusters() {
        use weft_proto::xds::extensions::filters::network::tcp_proxy::v3::tcp_proxy::weighted_cluster::ClusterWeight;
        let listener = |clusters: &[(&str, u32)]| {
            let weighted = tcp_proxy::WeightedCluster {
                clusters: clusters
                    .iter()
                    .map(|(name, weight)| ClusterWeight {
                        name: (*name).into(),
                        weight: *weight,
                        ..Default::default()
                    })
                    .collect(),
            };
            let proxy = TcpProxy {
                cluster_specifier: Some(tcp_proxy::ClusterSpecifier::WeightedClusters(weighted)),
                ..Default::default()
            };
            xl::Listener {
                name: "l".into(),
                filter_chains: vec![xl::FilterChain {
                    filters: vec![xl::Filter {
                        name: "tcp".into(),
                        config_type: Some(xl::filter::ConfigType::TypedConfig(Any {
                            type_url: format!("type.googleapis.com/{TCP_PROXY}"),
                            value: proxy.encode_to_vec(),
                        })),
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }
        };
        let l = Listener::try_from(&listener(&[("v1", 90), ("v2", 10)])).unwrap();
        let Some(Handler::Tcp { clusters, .. }) = l.handler else {
            panic!("{:?}", l.handler);
        };
        let got: Vec<(&str, u32)> = clusters
            .iter()
            .map(|c| (c.name.as_str(), c.weight))
            .collect();
        assert_eq!(got, [("v1", 90), ("v2", 10)]);
        let refused = |clusters| Listener::try_from(&listener(clusters)).unwrap_err().field;
        let f = "filter_chains[0].filters[0].typed_config.weighted_clusters.clusters";
        assert_eq!(refused(&[("v1", 1), ("v2", 0)]), format!("{f}[1]"));
        assert_eq!(refused(&[("", 1)]), format!("{f}[0]"));
        assert_eq!(refused(&[]), f);
    }

    /// A listener laid out for Envoy's protocol sniffing: per port (or by default) a chain matched
    /// on sniffed HTTP and a plain one, which serves what is not HTTP.
    #[test]
    fn a_sniffed_http_chain_and_its_fallback_are_read_per_port_and_other_matches_refused() {
        use weft_proto::google::protobuf::UInt32Value;
        use weft_proto::xds::config::core::v3::{AggregatedConfigSource, ConfigSource};
        use weft_proto::xds::extensions::filters::network::http_connection_manager::v3::Rds;
        let filter = |type_name: &str, value: Vec<u8>| xl::Filter {
            name: type_name.into(),
            config_type: Some(xl::filter::ConfigType::TypedConfig(Any {
                type_url: format!("type.googleapis.com/{type_name}"),
                value,
            })),
        };
        let tcp = |idle: u64| {
            let proxy = TcpProxy {
                cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster("c".into())),
                idle_timeout: Some(weft_proto::google::protobuf::Duration {
                    seconds: i64::try_from(idle).unwrap(),
                    nanos: 0,
                }),
                ..Default::default()
            };
            filter(TCP_PROXY, proxy.encode_to_vec())
        };
        let hcm = || {
            let rds = Rds {
                config_source: Some(ConfigSource {
                    config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
                        AggregatedConfigSource {},
                    )),
                    ..Default::default()
                }),
                route_config_name: "r".into(),
            };
            let hcm = HttpConnectionManager {
                route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(rds)),
                ..Default::default()
            };
            filter(HCM, hcm.encode_to_vec())
        };
        let chain = |port: Option<u32>, protocols: &[&str], f: xl::Filter| xl::FilterChain {
            filter_chain_match: Some(xl::FilterChainMatch {
                destination_port: port.map(|value| UInt32Value { value }),
                application_protocols: protocols.iter().map(|p| p.to_string()).collect(),
                ..Default::default()
            }),
            filters: vec![f],
            ..Default::default()
        };
        let listener = |chains| xl::Listener {
            name: "l".into(),
            filter_chains: chains,
            ..Default::default()
        };
        let http = Handler::Http {
            route_config: "r".into(),
            normalize_path: false,
        };
        let tcp_handler = |secs| Handler::Tcp {
            clusters: vec![WeightedCluster::plain("c".into(), 1)],
            idle_timeout: Some(Duration::from_secs(secs)),
        };

        // The fallback may come first; what it matches, not where it is, decides.
        let l = Listener::try_from(&listener(vec![
            chain(None, &[], tcp(5)),
            chain(None, &weft_proto::names::SNIFFED_HTTP, hcm()),
        ]))
        .unwrap();
        assert_eq!(
            (l.handler, l.fallback),
            (Some(http.clone()), Some(tcp_handler(5)))
        );

        let l = Listener::try_from(&listener(vec![
            chain(Some(8080), &["http/1.1", "h2c"], hcm()),
            chain(Some(8080), &[], tcp(7)),
            chain(Some(8081), &[], tcp(9)),
        ]))
        .unwrap();
        let ports: Vec<_> = l
            .by_port
            .iter()
            .map(|c| (c.port, &c.handler, &c.fallback))
            .collect();
        assert_eq!(
            ports,
            [
                (8080, &http, &tcp_handler(7)),
                // A port without a fallback chain falls back to its app, decided here.
                (
                    8081,
                    &tcp_handler(9),
                    &Handler::tcp_to(weft_proto::names::inbound_cluster(8081))
                )
            ]
        );
        // What a listener is comes from its fields, decided here: the inbound side says so in
        // `traffic_direction` (a name alone makes nothing inbound), and a captured listener
        // named for a Service port falls back to that port's cluster.
        assert!(!l.inbound && l.cluster.is_none());
        let inbound = Listener::try_from(&xl::Listener {
            name: "virtualInbound".into(),
            traffic_direction: TrafficDirection::Inbound as i32,
            ..listener(vec![chain(Some(8081), &[], tcp(9))])
        })
        .unwrap();
        assert!(inbound.inbound);
        let named_only = Listener::try_from(&xl::Listener {
            name: "inbound".into(),
            ..listener(vec![chain(Some(8081), &[], tcp(9))])
        })
        .unwrap();
        assert!(!named_only.inbound);
        let service = Listener::try_from(&xl::Listener {
            name: "web.shop.svc.cluster.local:80".into(),
            bind_to_port: Some(weft_proto::google::protobuf::BoolValue { value: false }),
            ..listener(vec![chain(None, &[], hcm())])
        })
        .unwrap();
        let own = "outbound|80||web.shop.svc.cluster.local";
        assert_eq!(service.cluster.as_deref(), Some(own));
        assert_eq!(service.fallback, Some(Handler::tcp_to(own.into())));

        let refused = |chains| Listener::try_from(&listener(chains)).unwrap_err().field;
        // Istio's own ALPN values are not something weft-proxy sniffs.
        assert_eq!(
            refused(vec![chain(None, &["istio-http/1.1"], hcm())]),
            "filter_chains[0].filter_chain_match.application_protocols"
        );
        assert_eq!(
            refused(vec![
                chain(Some(80), &["http/1.1"], hcm()),
                chain(Some(80), &["h2c"], hcm())
            ]),
            "filter_chains[1].filter_chain_match"
        );
        let mut by_transport = chain(None, &[], tcp(1));
        by_transport
            .filter_chain_match
            .as_mut()
            .unwrap()
            .transport_protocol = "tls".into();
        assert_eq!(
            refused(vec![by_transport]),
            "filter_chains[0].filter_chain_match"
        );
    }

    /// A filter chain of one `tcp_proxy` to cluster `c`.
    fn tcp_chain() -> xl::FilterChain {
        xl::FilterChain {
            filters: vec![xl::Filter {
                name: "tcp".into(),
                config_type: Some(xl::filter::ConfigType::TypedConfig(Any {
                    type_url: format!("type.googleapis.com/{TCP_PROXY}"),
                    value: TcpProxy {
                        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster("c".into())),
                        ..Default::default()
                    }
                    .encode_to_vec(),
                })),
            }],
            ..Default::default()
        }
    }

    /// STRICT_DNS and LOGICAL_DNS clusters name their hosts in the load assignment; a LOGICAL_DNS
    /// one has exactly one, and a resolver weft-proxy would not use is refused by name.
    #[test]
    fn dns_clusters_name_their_hosts_in_the_load_assignment() {
        use weft_proto::xds::config::endpoint::v3::{Endpoint, LbEndpoint, LocalityLbEndpoints};
        let host = |name: &str, port: u32| LbEndpoint {
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(
                        weft_proto::xds::config::core::v3::SocketAddress {
                            address: name.into(),
                            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                            ..Default::default()
                        },
                    )),
                }),
                ..Default::default()
            })),
            ..Default::default()
        };
        let dns = |t: cluster::DiscoveryType, hosts: Vec<LbEndpoint>| xc::Cluster {
            name: "ext".into(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(t as i32)),
            dns_lookup_family: cluster::DnsLookupFamily::V4Only as i32,
            load_assignment: Some(ClusterLoadAssignment {
                cluster_name: "ext".into(),
                endpoints: vec![LocalityLbEndpoints {
                    lb_endpoints: hosts,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        use cluster::DiscoveryType::{LogicalDns, StrictDns};
        let c = Cluster::try_from(&dns(
            StrictDns,
            vec![host("db.example", 5432), host("10.0.0.1", 5432)],
        ))
        .unwrap();
        let t = c.dns.expect("DNS targets");
        assert_eq!((c.eds, c.static_endpoints), (None, None));
        let hosts: Vec<(&str, u16)> = t.hosts.iter().map(|h| (h.host.as_str(), h.port)).collect();
        assert_eq!(hosts, [("db.example", 5432), ("10.0.0.1", 5432)]);
        assert_eq!(
            (t.family, t.refresh, t.logical),
            (DnsFamily::V4Only, Duration::from_secs(5), false)
        );
        assert!(
            Cluster::try_from(&dns(LogicalDns, vec![host("a", 80)]))
                .unwrap()
                .dns
                .unwrap()
                .logical
        );
        // A STRICT_DNS cluster of no hosts is a cluster of no endpoints, as Envoy has it.
        let none = Cluster::try_from(&dns(StrictDns, vec![])).unwrap();
        assert!(none.dns.unwrap().hosts.is_empty());
        // (cluster, refused field)
        let custom = xc::Cluster {
            typed_dns_resolver_config: Some(Default::default()),
            ..dns(StrictDns, vec![host("a", 80)])
        };
        let cases = [
            (
                dns(LogicalDns, vec![host("a", 80), host("b", 80)]),
                "load_assignment",
            ),
            (custom, "typed_dns_resolver_config"),
            (
                xc::Cluster {
                    load_assignment: None,
                    ..dns(StrictDns, vec![])
                },
                "load_assignment",
            ),
        ];
        for (c, field) in cases {
            assert_eq!(Cluster::try_from(&c).unwrap_err().field, field);
        }
    }

    /// An HCM whose RDS comes from a gRPC `api_config_source` (go-control-plane's example)
    /// takes its routes from the ADS stream; a REST one is refused, naming the field.
    #[test]
    fn rds_from_a_grpc_config_source_is_read_over_ads() {
        use weft_proto::xds::config::core::v3::{
            ApiConfigSource, ConfigSource, api_config_source::ApiType,
        };
        use weft_proto::xds::extensions::filters::network::http_connection_manager::v3::Rds;
        let listener = |api_type: ApiType| {
            let rds = Rds {
                config_source: Some(ConfigSource {
                    config_source_specifier: Some(
                        config_source::ConfigSourceSpecifier::ApiConfigSource(ApiConfigSource {
                            api_type: api_type as i32,
                            ..Default::default()
                        }),
                    ),
                    ..Default::default()
                }),
                route_config_name: "local_route".into(),
            };
            let hcm = HttpConnectionManager {
                route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(rds)),
                ..Default::default()
            };
            xl::Listener {
                name: "l".into(),
                filter_chains: vec![xl::FilterChain {
                    filters: vec![xl::Filter {
                        name: "hcm".into(),
                        config_type: Some(xl::filter::ConfigType::TypedConfig(Any {
                            type_url: format!("type.googleapis.com/{HCM}"),
                            value: hcm.encode_to_vec(),
                        })),
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }
        };
        let l = Listener::try_from(&listener(ApiType::Grpc)).unwrap();
        assert!(
            matches!(&l.handler, Some(Handler::Http { route_config, .. }) if route_config == "local_route"),
            "{:?}",
            l.handler
        );
        let err = Listener::try_from(&listener(ApiType::Rest)).unwrap_err();
        assert!(err.field.ends_with("rds.config_source"), "{}", err.field);
    }

    /// The listener's own detection wait and what follows it, as Envoy reads them: `0s` is no
    /// limit, and `continue_on_listener_filters_timeout` unset (false) closes; a listener that
    /// says nothing keeps the proxy's default.
    #[test]
    fn the_listener_filters_timeout_is_the_detection_wait() {
        let with = |timeout: Option<(i64, i32)>, carry_on: bool| {
            let l = xl::Listener {
                name: "l".into(),
                listener_filters_timeout: timeout.map(|(seconds, nanos)| {
                    weft_proto::google::protobuf::Duration { seconds, nanos }
                }),
                continue_on_listener_filters_timeout: carry_on,
                filter_chains: vec![tcp_chain()],
                ..Default::default()
            };
            Listener::try_from(&l).unwrap().sniffing
        };
        let wait = |ms, close_on_timeout| {
            Some(Sniffing {
                timeout: Some(Duration::from_millis(ms)),
                close_on_timeout,
            })
        };
        // (listener_filters_timeout, continue_on_listener_filters_timeout, read as)
        let cases = [
            (None, false, None),
            (None, true, None),
            (Some((0, 100_000_000)), true, wait(100, false)),
            (Some((2, 500_000_000)), false, wait(2500, true)),
            (
                Some((0, 0)),
                true,
                Some(Sniffing {
                    timeout: None,
                    close_on_timeout: false,
                }),
            ),
        ];
        for (timeout, carry_on, want) in cases {
            assert_eq!(with(timeout, carry_on), want, "{timeout:?} {carry_on}");
        }
    }

    #[test]
    fn inspecting_listener_filters_are_accepted_and_others_named() {
        let with = |name: &str, type_url: &str| xl::Listener {
            name: "l".into(),
            listener_filters: vec![xl::ListenerFilter {
                name: name.into(),
                config_type: Some(xl::listener_filter::ConfigType::TypedConfig(Any {
                    type_url: type_url.into(),
                    value: vec![],
                })),
                ..Default::default()
            }],
            filter_chains: vec![tcp_chain()],
            ..Default::default()
        };
        let tls =
            "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector";
        let proxy_protocol =
            "type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol";
        // A familiar name does not excuse another filter's config.
        assert!(
            Listener::try_from(&with(
                "envoy.filters.listener.tls_inspector",
                proxy_protocol
            ))
            .is_err()
        );
        assert!(Listener::try_from(&with("envoy.filters.listener.tls_inspector", tls)).is_ok());
        assert!(Listener::try_from(&with("anything", tls)).is_ok());
        let err = Listener::try_from(&with(
            "envoy.filters.listener.proxy_protocol",
            proxy_protocol,
        ))
        .unwrap_err();
        assert_eq!(err.field, "listener_filters[0]");
    }

    #[test]
    fn endpoints_keep_their_priority_and_health() {
        use weft_proto::xds::config::endpoint::v3::{Endpoint, LbEndpoint, LocalityLbEndpoints};
        let level = |priority: u32, port: u32, health: HealthStatus| LocalityLbEndpoints {
            priority,
            lb_endpoints: vec![LbEndpoint {
                health_status: health as i32,
                host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                    address: Some(Address {
                        address: Some(address::Address::SocketAddress(
                            weft_proto::xds::config::core::v3::SocketAddress {
                                address: "127.0.0.1".into(),
                                port_specifier: Some(socket_address::PortSpecifier::PortValue(
                                    port,
                                )),
                                ..Default::default()
                            },
                        )),
                    }),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        };
        let cla = ClusterLoadAssignment {
            cluster_name: "c".into(),
            endpoints: vec![
                level(1, 2, HealthStatus::Healthy),
                level(0, 1, HealthStatus::Unhealthy),
                level(0, 3, HealthStatus::Unknown),
            ],
            ..Default::default()
        };
        let got: Vec<(u16, u32, bool)> = load_assignment(&cla)
            .unwrap()
            .endpoints
            .iter()
            .map(|e| (e.addr.port(), e.priority, e.healthy))
            .collect();
        // The unhealthy one is kept, marked: it takes no traffic but counts in its priority's
        // health.
        assert_eq!(got, [(2, 1, true), (1, 0, false), (3, 0, true)]);
        // The assignment's overprovisioning factor goes with its endpoints (140 unless set); 0 is
        // refused, as Envoy's validation does; a draining endpoint is left out.
        assert_eq!(load_assignment(&cla).unwrap().overprovisioning, 140);
        let with = |factor: u32| {
            let mut c = cla.clone();
            c.policy = Some(
                weft_proto::xds::config::endpoint::v3::cluster_load_assignment::Policy {
                    overprovisioning_factor: Some(weft_proto::google::protobuf::UInt32Value {
                        value: factor,
                    }),
                    ..Default::default()
                },
            );
            c
        };
        assert_eq!(load_assignment(&with(200)).unwrap().overprovisioning, 200);
        assert_eq!(
            load_assignment(&with(0)).unwrap_err().field,
            "policy.overprovisioning_factor"
        );
        let mut draining = cla.clone();
        draining.endpoints.push(level(0, 4, HealthStatus::Draining));
        assert_eq!(load_assignment(&draining).unwrap().endpoints.len(), 3);
    }

    #[test]
    fn active_health_checks_are_refused() {
        let c = xc::Cluster {
            name: "c".into(),
            health_checks: vec![Default::default()],
            ..Default::default()
        };
        assert_eq!(Cluster::try_from(&c).unwrap_err().field, "health_checks");
    }
}
