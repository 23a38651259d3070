//! LDS: per Service port an API listener (what gRPC's proxyless clients resolve, and what weft-proxy
//! matches captured traffic against), per proxy an inbound listener and explicit outbound ones.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use weft_proto::google::protobuf::{BoolValue, UInt32Value};
use weft_proto::xds::config::core::v3::{
    Address, Metadata, SocketAddress, TrafficDirection, address, socket_address::PortSpecifier,
};
use weft_proto::xds::config::listener::v3::{
    AdditionalAddress, ApiListener, Filter, FilterChain, FilterChainMatch, Listener,
    ListenerFilter, filter, listener_filter,
};
use weft_proto::xds::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route, route_action,
    route_match,
};
use weft_proto::xds::extensions::filters::http::router::v3::Router;
use weft_proto::xds::extensions::filters::listener::http_inspector::v3::HttpInspector;
use weft_proto::xds::extensions::filters::listener::original_dst::v3::OriginalDst;
use weft_proto::xds::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use weft_proto::xds::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use weft_proto::xds::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};

use super::names::{
    INBOUND_LISTENER, INBOUND_PASSTHROUGH_CLUSTER, backend_cluster_name, cluster_name,
    explicit_name, inbound_cluster_name, service_listener_name,
};
use super::{ads, any, authz, duration, weft_metadata};
use crate::model::{Backend, Protocol, Service, ServicePort, TlsMode, Workload};

/// Where weft-proxy captures inbound traffic (iptables PREROUTING redirect).
pub const INBOUND_PORT: u16 = 15006;

fn socket_address(ip: IpAddr, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

fn router() -> HttpFilter {
    HttpFilter {
        name: "envoy.filters.http.router".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any(
            "envoy.extensions.filters.http.router.v3.Router",
            &Router::default(),
        ))),
        ..Default::default()
    }
}

fn hcm(
    stat_prefix: String,
    routes: http_connection_manager::RouteSpecifier,
) -> HttpConnectionManager {
    HttpConnectionManager {
        stat_prefix,
        codec_type: http_connection_manager::CodecType::Auto as i32,
        route_specifier: Some(routes),
        http_filters: vec![router()],
        // Istio's default (`BASE`): `/public/../admin` is routed as `/admin`.
        normalize_path: Some(BoolValue { value: true }),
        ..Default::default()
    }
}

fn rds(name: &str) -> http_connection_manager::RouteSpecifier {
    http_connection_manager::RouteSpecifier::Rds(Rds {
        config_source: Some(ads()),
        route_config_name: name.to_string(),
    })
}

fn network_filter(name: &str, type_name: &str, msg: &impl prost::Message) -> Filter {
    Filter {
        name: name.into(),
        config_type: Some(filter::ConfigType::TypedConfig(any(type_name, msg))),
    }
}

fn hcm_filter(hcm: &HttpConnectionManager) -> Filter {
    network_filter(
        "envoy.filters.network.http_connection_manager",
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        hcm,
    )
}

const TCP_PROXY_FILTER: &str = "envoy.filters.network.tcp_proxy";

/// A `tcp_proxy` to `clusters`; `idle_timeout` unset leaves Envoy's default (an hour).
fn tcp_filter(
    stat_prefix: String,
    clusters: tcp_proxy::ClusterSpecifier,
    idle_timeout: Option<Duration>,
) -> Filter {
    network_filter(
        TCP_PROXY_FILTER,
        "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        &TcpProxy {
            stat_prefix,
            cluster_specifier: Some(clusters),
            idle_timeout: idle_timeout.map(duration),
            ..Default::default()
        },
    )
}

/// Where a Service port's opaque connections go: its own cluster, or the clusters of the
/// TCPRoute a client in `namespace` (any: `None`) gets, by weight. A backend that does not
/// resolve keeps its share under a cluster nobody has, so Envoy (and weft-proxy) close those
/// connections; a backend of weight 0 is left out (Envoy's schema wants every weight at least
/// 1), and a route whose every weight is 0 refuses every connection.
fn tcp_targets(
    svc: &Service,
    port: &ServicePort,
    namespace: Option<&str>,
) -> tcp_proxy::ClusterSpecifier {
    use tcp_proxy::weighted_cluster::ClusterWeight;
    let Some(route) = port.tcp_route_for(namespace) else {
        return tcp_proxy::ClusterSpecifier::Cluster(cluster_name(&svc.key, port.port));
    };
    let target = backend_cluster_name;
    let live: Vec<&Backend> = route.backends.iter().filter(|b| b.weight > 0).collect();
    match live.as_slice() {
        [one] => tcp_proxy::ClusterSpecifier::Cluster(target(one)),
        [] => tcp_proxy::ClusterSpecifier::Cluster(format!("refused|{}", route.origin)),
        many => tcp_proxy::ClusterSpecifier::WeightedClusters(tcp_proxy::WeightedCluster {
            clusters: many
                .iter()
                .map(|b| ClusterWeight {
                    name: target(b),
                    weight: b.weight,
                    ..Default::default()
                })
                .collect(),
        }),
    }
}

/// The Service's `TrafficPolicy` `connectionPool.idleTimeout`, which (as Istio's
/// `connectionPool.tcp.idleTimeout`) also closes idle opaque TCP connections.
fn tcp_idle_timeout(svc: &Service) -> Option<Duration> {
    svc.policy.as_ref().and_then(|p| p.limits.idle_timeout)
}

/// The listener of one Service port, in the shape Envoy (and weft-proxy) reads from LDS. Its
/// addresses are the Service's cluster IPs, which is how a sidecar maps a captured connection's
/// original destination to the Service; it is matched against captured traffic, never bound
/// (Istio's per-Service outbound listeners do the same). HTTP (and undeclared) ports carry an
/// HTTP connection manager whose routes come over RDS, TCP ports a `tcp_proxy`. `weft.protocol`
/// metadata tells weft-proxy whether to sniff the protocol first.
///
/// A headless Service has no cluster IP: clients address its pods, so its listener takes every
/// endpoint's address, and `; destination=original` in its `weft.protocol` tells weft-proxy to
/// keep each connection on the pod it was addressed to rather than balance it (a StatefulSet's
/// clients pick their pod). A port with no address gets no listener: Envoy refuses one.
///
/// Opaque connections go where the port's TCPRoute sends them: the one of clients in `consumer`
/// (the namespace of the proxies this variant is for), else the Service's own.
pub fn service(svc: &Service, port: &ServicePort, consumer: Option<&str>) -> Option<Listener> {
    let name = service_listener_name(&svc.key, port.port);
    let protocol = port.protocol_for(consumer);
    let mut listener = addressed(svc, port, protocol)?;
    let tcp = tcp_targets(svc, port, consumer);
    listener.filter_chains = port_chains(
        protocol,
        || hcm_filter(&hcm(name.clone(), rds(&name))),
        || tcp_filter(name.clone(), tcp, tcp_idle_timeout(svc)),
        FilterChain::default(),
    );
    sniff_if_detecting(&mut listener, protocol == Protocol::Detect);
    listener.bind_to_port = Some(BoolValue { value: false });
    Some(listener)
}

/// A port's filter chains, each from `base` (its match and name): an HTTP port's connection
/// manager, a TCP port's `tcp_proxy`, and for a port left to detection both, as Envoy's protocol
/// sniffing reads them: the connection manager for connections sniffed as HTTP, the `tcp_proxy`
/// (with the Service's idle timeout) for the rest, server-first protocols and TLS included.
fn port_chains(
    protocol: Protocol,
    http: impl FnOnce() -> Filter,
    tcp: impl FnOnce() -> Filter,
    base: FilterChain,
) -> Vec<FilterChain> {
    let chain = |filter| FilterChain {
        filters: vec![filter],
        ..base.clone()
    };
    match protocol {
        Protocol::Tcp => vec![chain(tcp())],
        Protocol::Detect => {
            let mut sniffed = chain(http());
            let matched = sniffed.filter_chain_match.get_or_insert_default();
            matched.application_protocols =
                weft_proto::names::SNIFFED_HTTP.map(String::from).to_vec();
            vec![sniffed, chain(tcp())]
        }
        _ => vec![chain(http())],
    }
}

/// A listener filter, its config typed.
fn listener_filter(name: &str, type_name: &str, config: &impl prost::Message) -> ListenerFilter {
    ListenerFilter {
        name: name.into(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(any(
            type_name, config,
        ))),
        ..Default::default()
    }
}

/// Gives a listener with a port left to detection the inspector that sniffs HTTP, and lets a
/// connection that sends nothing go on to the TCP chain after weft-proxy's detection timeout
/// ([`weft_proto::names::DETECT_TIMEOUT_MS`]) rather than be closed (Envoy's default), as
/// Istio's protocol detection does.
fn sniff_if_detecting(listener: &mut Listener, detecting: bool) {
    if !detecting {
        return;
    }
    listener.listener_filters = vec![listener_filter(
        "envoy.filters.listener.http_inspector",
        "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector",
        &HttpInspector::default(),
    )];
    let timeout = Duration::from_millis(weft_proto::names::DETECT_TIMEOUT_MS);
    listener.listener_filters_timeout = Some(duration(timeout));
    listener.continue_on_listener_filters_timeout = true;
}

/// The listener of one HTTP Service port as gRPC's proxyless clients ask for it (gRFC A27): an
/// `api_listener` holding the connection manager, under the same `<host>:<port>` name. Envoy
/// ignores listeners of this shape that come over LDS, so only gRPC clients are sent it.
pub fn service_api(svc: &Service, port: &ServicePort) -> Option<Listener> {
    // Declared, not as a TCPRoute serves it: gRPC's clients read only the routes, never the
    // `tcp_proxy` a TCPRoute changes.
    let protocol = port.protocol;
    if !protocol.is_http() {
        return None;
    }
    let name = service_listener_name(&svc.key, port.port);
    let mut listener = addressed(svc, port, protocol).unwrap_or_else(|| Listener {
        name: name.clone(),
        metadata: Some(protocol_metadata(svc, protocol)),
        ..Default::default()
    });
    listener.api_listener = Some(ApiListener {
        api_listener: Some(any(
            "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            &hcm(name.clone(), rds(&name)),
        )),
    });
    Some(listener)
}

/// A Service port's listener name, addresses and metadata (`protocol`, as it is served);
/// `None` when it has no address.
fn addressed(svc: &Service, port: &ServicePort, protocol: Protocol) -> Option<Listener> {
    let targets: Vec<(IpAddr, u16)> = if svc.headless {
        let set: BTreeSet<(IpAddr, u16)> = port.endpoints.iter().map(|e| (e.ip, e.port)).collect();
        set.into_iter().collect()
    } else {
        svc.cluster_ips.iter().map(|ip| (*ip, port.port)).collect()
    };
    let mut addrs = targets.iter().map(|(ip, p)| socket_address(*ip, *p));
    let address = Some(addrs.next()?);
    let additional_addresses = addrs
        .map(|a| AdditionalAddress {
            address: Some(a),
            ..Default::default()
        })
        .collect();
    Some(Listener {
        name: service_listener_name(&svc.key, port.port),
        address,
        additional_addresses,
        metadata: Some(protocol_metadata(svc, protocol)),
        traffic_direction: TrafficDirection::Outbound as i32,
        ..Default::default()
    })
}

/// `weft.protocol`: one metadata key (protobuf maps encode in no fixed order, and a resource's
/// version is the hash of its encoding), so a headless listener's says `; destination=original`.
fn protocol_metadata(svc: &Service, protocol: Protocol) -> Metadata {
    weft_metadata(
        "protocol",
        match svc.headless {
            true => format!("{}; destination=original", protocol.as_str()),
            false => protocol.as_str().to_string(),
        },
    )
}

/// The proxy's inbound listener: one filter chain per app port, forwarding to the app on the same
/// port over loopback, each guarded by the RBAC filters of the AuthorizationPolicies that select
/// the workload.
pub fn inbound(workload: &Workload) -> Listener {
    let filter_chains = workload
        .ports
        .iter()
        .flat_map(|p| {
            let cluster = inbound_cluster_name(p.port);
            let http = || {
                let route_config = RouteConfiguration {
                    name: cluster.clone(),
                    virtual_hosts: vec![VirtualHost {
                        name: cluster.clone(),
                        domains: vec!["*".into()],
                        routes: vec![Route {
                            r#match: Some(RouteMatch {
                                path_specifier: Some(route_match::PathSpecifier::Prefix(
                                    "/".into(),
                                )),
                                ..Default::default()
                            }),
                            action: Some(route::Action::Route(RouteAction {
                                cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                                    cluster.clone(),
                                )),
                                timeout: Some(duration(std::time::Duration::ZERO)),
                                ..Default::default()
                            })),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                };
                let mut h = hcm(
                    cluster.clone(),
                    http_connection_manager::RouteSpecifier::RouteConfig(route_config),
                );
                // Who may call: checked before the router.
                h.http_filters
                    .splice(0..0, authz::http_filters(&workload.authorization));
                hcm_filter(&h)
            };
            let tcp = || {
                let to = tcp_proxy::ClusterSpecifier::Cluster(cluster.clone());
                tcp_filter(cluster.clone(), to, None)
            };
            let base = FilterChain {
                name: cluster.clone(),
                filter_chain_match: Some(FilterChainMatch {
                    destination_port: Some(UInt32Value {
                        value: u32::from(p.port),
                    }),
                    ..Default::default()
                }),
                metadata: Some(weft_metadata("protocol", p.protocol.as_str().into())),
                ..Default::default()
            };
            let mut chains = port_chains(p.protocol, http, tcp, base);
            for c in &mut chains {
                if c.filters.iter().any(|f| f.name == TCP_PROXY_FILTER) {
                    let checks = authz::network_filters(&workload.authorization, &cluster);
                    c.filters.splice(0..0, checks);
                }
            }
            mtls_chains(chains, workload.tls_mode)
        })
        .chain(passthrough_chains(workload))
        .collect();
    let detecting = workload
        .ports
        .iter()
        .any(|p| p.protocol == Protocol::Detect);
    let mut listener = Listener {
        name: INBOUND_LISTENER.into(),
        address: Some(socket_address(
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            INBOUND_PORT,
        )),
        filter_chains,
        // What makes it the inbound side, for weft-proxy as for Envoy (Istio's
        // `virtualInbound` says the same): not its name.
        traffic_direction: TrafficDirection::Inbound as i32,
        ..Default::default()
    };
    sniff_if_detecting(&mut listener, detecting);
    // Plaintext and mTLS are told apart by the first bytes, as Envoy's TLS inspector does.
    // Envoy matches the chains on the destination the connection was redirected from.
    let first = [
        listener_filter(
            "envoy.filters.listener.original_dst",
            "envoy.extensions.filters.listener.original_dst.v3.OriginalDst",
            &OriginalDst::default(),
        ),
        listener_filter(
            "envoy.filters.listener.tls_inspector",
            "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
            &TlsInspector::default(),
        ),
    ];
    listener.listener_filters.splice(0..0, first);
    let timeout = Duration::from_millis(weft_proto::names::DETECT_TIMEOUT_MS);
    listener.listener_filters_timeout = Some(duration(timeout));
    listener.continue_on_listener_filters_timeout = true;
    listener
}

/// Whether a workload gets an inbound listener: it has ports to serve, or a mode or policy
/// that its undeclared ports must meet too.
pub fn needs_inbound(workload: &Workload) -> bool {
    !workload.ports.is_empty()
        || workload.tls_mode == TlsMode::Strict
        || !workload.authorization.is_empty()
}

/// The default chains (no destination port): connections to ports the workload did not
/// declare go where they were headed (the ORIGINAL_DST passthrough cluster), as opaque TCP,
/// after the same mTLS mode and authorization as its declared ports, so STRICT and an
/// AuthorizationPolicy leave no port open around them (Istio's inbound passthrough chains).
fn passthrough_chains(workload: &Workload) -> Vec<FilterChain> {
    let name = INBOUND_PASSTHROUGH_CLUSTER;
    let to = tcp_proxy::ClusterSpecifier::Cluster(name.into());
    let mut filters = authz::network_filters(&workload.authorization, name);
    filters.push(tcp_filter(name.into(), to, None));
    let chain = FilterChain {
        name: name.into(),
        filters,
        filter_chain_match: Some(FilterChainMatch::default()),
        metadata: Some(weft_metadata("protocol", Protocol::Tcp.as_str().into())),
        ..Default::default()
    };
    mtls_chains(vec![chain], workload.tls_mode)
}

/// A port's chains for mTLS (matched on `transport_protocol: tls`, with a DownstreamTlsContext
/// requiring a client certificate) and, PERMISSIVE, the same chains for plaintext (matched on
/// `raw_buffer`); STRICT leaves plaintext nothing to match, so it is refused.
fn mtls_chains(plain: Vec<FilterChain>, mode: TlsMode) -> Vec<FilterChain> {
    let mut chains: Vec<FilterChain> = plain
        .iter()
        .map(|c| {
            let mut t = c.clone();
            t.name = format!("{}-mtls", c.name);
            t.filter_chain_match
                .get_or_insert_default()
                .transport_protocol = "tls".into();
            t.transport_socket = Some(super::tls::downstream());
            t
        })
        .collect();
    if mode == TlsMode::Permissive {
        chains.extend(plain.into_iter().map(|mut c| {
            c.filter_chain_match
                .get_or_insert_default()
                .transport_protocol = "raw_buffer".into();
            c
        }));
    }
    chains
}

/// A listener the proxy binds itself (hosts without iptables), forwarding to one Service port as
/// a client in `namespace` (the proxy's) is routed.
pub fn explicit(bind: SocketAddr, svc: &Service, port: &ServicePort, namespace: &str) -> Listener {
    let target = service_listener_name(&svc.key, port.port);
    let protocol = port.protocol_for(Some(namespace));
    let tcp = tcp_targets(svc, port, Some(namespace));
    let mut listener = Listener {
        name: explicit_name(bind),
        address: Some(socket_address(bind.ip(), bind.port())),
        filter_chains: port_chains(
            protocol,
            || hcm_filter(&hcm(target.clone(), rds(&target))),
            || tcp_filter(target.clone(), tcp, tcp_idle_timeout(svc)),
            FilterChain::default(),
        ),
        metadata: Some(weft_metadata("protocol", protocol.as_str().into())),
        traffic_direction: TrafficDirection::Outbound as i32,
        ..Default::default()
    };
    sniff_if_detecting(&mut listener, protocol == Protocol::Detect);
    listener
}
