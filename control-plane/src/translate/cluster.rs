//! CDS: one EDS cluster per Service port, one static cluster per local app port.

use std::time::Duration;

use weft_proto::google::protobuf::UInt32Value;
use weft_proto::xds::config::cluster::v3::{
    CircuitBreakers, Cluster, LoadBalancingPolicy, OutlierDetection, circuit_breakers,
    cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig},
    load_balancing_policy,
};
use weft_proto::xds::config::core::v3::{
    Address, Http1ProtocolOptions, Http2ProtocolOptions,
    HttpProtocolOptions as HttpProtocolOptionsCommon, SocketAddress, TypedExtensionConfig, address,
    socket_address::PortSpecifier,
};
use weft_proto::xds::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use weft_proto::xds::extensions::load_balancing_policies::{
    least_request::v3::LeastRequest, random::v3::Random, round_robin::v3::RoundRobin,
};
use weft_proto::xds::extensions::upstreams::http::v3::{
    HttpProtocolOptions,
    http_protocol_options::{
        self, AutoHttpConfig, ExplicitHttpConfig, UseDownstreamHttpConfig, explicit_http_config,
    },
};

use super::names::{INBOUND_PASSTHROUGH_CLUSTER, cluster_name, inbound_cluster_name};
use super::{ads, any, duration, weft_metadata};
use crate::model::{LoadBalancer, Protocol, Service, ServicePort, WorkloadPort};

/// Connect timeout for upstream connections; Linkerd and Istio both default to seconds, not tens.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

fn policy(type_name: &str, msg: &impl prost::Message) -> load_balancing_policy::Policy {
    load_balancing_policy::Policy {
        typed_extension_config: Some(TypedExtensionConfig {
            name: type_name
                .rsplit('.')
                .next()
                .unwrap_or(type_name)
                .to_string(),
            typed_config: Some(any(type_name, msg)),
        }),
    }
}

/// The extensible `load_balancing_policy`, with round robin last: a client (gRPC's proxyless ones
/// included) takes the first policy it supports.
fn load_balancing(lb: LoadBalancer) -> LoadBalancingPolicy {
    let rr = policy(
        "envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin",
        &RoundRobin::default(),
    );
    let policies = match lb {
        LoadBalancer::LeastRequest => vec![
            policy(
                "envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest",
                &LeastRequest {
                    choice_count: Some(UInt32Value { value: 2 }),
                    ..Default::default()
                },
            ),
            rr,
        ],
        LoadBalancer::RoundRobin => vec![rr],
        LoadBalancer::Random => vec![
            policy(
                "envoy.extensions.load_balancing_policies.random.v3.Random",
                &Random::default(),
            ),
            rr,
        ],
    };
    LoadBalancingPolicy { policies }
}

/// The cluster for one Service port, its endpoints delivered by EDS on the same stream.
pub fn outbound(svc: &Service, port: &ServicePort) -> Cluster {
    let policy = svc.policy.clone().unwrap_or_default();
    let limits = &policy.limits;
    let u32v = |v: Option<u32>| v.map(|value| UInt32Value { value });
    let has_limits = limits.max_connections.is_some()
        || limits.max_pending_requests.is_some()
        || limits.max_requests.is_some()
        || limits.max_retries.is_some();
    let circuit_breakers = has_limits.then(|| CircuitBreakers {
        thresholds: vec![circuit_breakers::Thresholds {
            max_connections: u32v(limits.max_connections),
            max_pending_requests: u32v(limits.max_pending_requests),
            max_requests: u32v(limits.max_requests),
            max_retries: u32v(limits.max_retries),
            ..Default::default()
        }],
        ..Default::default()
    });
    let outlier_detection = policy.outlier_detection.as_ref().map(|o| OutlierDetection {
        consecutive_5xx: Some(UInt32Value {
            value: o.consecutive_5xx,
        }),
        interval: Some(duration(o.interval)),
        base_ejection_time: Some(duration(o.base_ejection_time)),
        max_ejection_percent: Some(UInt32Value {
            value: o.max_ejection_percent,
        }),
        ..Default::default()
    });
    // HTTP/1 to sidecars is multiplexed over HTTP/2 unless the policy says not to.
    let upgrade = port.endpoints.iter().any(|e| e.mtls) && limits.h2_upgrade != Some(false);
    let protocol_options = http_protocol_options(port.protocol, upgrade, limits.idle_timeout);
    Cluster {
        name: cluster_name(&svc.key, port.port),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: String::new(),
        }),
        connect_timeout: Some(duration(CONNECT_TIMEOUT)),
        load_balancing_policy: Some(load_balancing(policy.load_balancer)),
        circuit_breakers,
        outlier_detection,
        typed_extension_protocol_options: protocol_options,
        metadata: Some(weft_metadata("protocol", port.protocol.as_str().into())),
        transport_socket_matches: super::tls::upstream(port, upgrade),
        ..Default::default()
    }
}

/// `HttpProtocolOptions` for a port: HTTP/2 upstream for HTTP/2 and gRPC ports; on a port left to
/// detection, the client's own protocol (Istio does the same for sniffed ports: a gRPC client on an
/// unnamed port must reach its server over HTTP/2); on an HTTP/1 port to `upgrade` (it has
/// sidecars among its endpoints, and its policy does not say no), the version ALPN agrees
/// (`auto_config`: the sidecars multiplex HTTP/1 requests over one HTTP/2 mTLS connection, and
/// the endpoints without one, in plaintext, get HTTP/1.1; Istio's `h2UpgradePolicy` upgrades
/// the whole cluster instead); HTTP/1.1 otherwise. Plus the idle timeout.
fn http_protocol_options(
    protocol: Protocol,
    upgrade: bool,
    idle_timeout: Option<Duration>,
) -> std::collections::HashMap<String, weft_proto::google::protobuf::Any> {
    let upstream_protocol_options = match protocol {
        Protocol::Http2 | Protocol::Grpc => Some(
            http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                ExplicitHttpConfig {
                    protocol_config: Some(
                        explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                            Http2ProtocolOptions::default(),
                        ),
                    ),
                },
            ),
        ),
        Protocol::Detect => Some(
            http_protocol_options::UpstreamProtocolOptions::UseDownstreamProtocolConfig(
                UseDownstreamHttpConfig {
                    http_protocol_options: Some(Http1ProtocolOptions::default()),
                    http2_protocol_options: Some(Http2ProtocolOptions::default()),
                    ..Default::default()
                },
            ),
        ),
        Protocol::Http1 if upgrade => Some(
            http_protocol_options::UpstreamProtocolOptions::AutoConfig(AutoHttpConfig {
                http_protocol_options: Some(Http1ProtocolOptions::default()),
                http2_protocol_options: Some(Http2ProtocolOptions::default()),
                ..Default::default()
            }),
        ),
        Protocol::Http1 | Protocol::Tcp => None,
    };
    let common_http_protocol_options = idle_timeout.map(|t| HttpProtocolOptionsCommon {
        idle_timeout: Some(duration(t)),
        ..Default::default()
    });
    let mut options = std::collections::HashMap::new();
    if upstream_protocol_options.is_some() || common_http_protocol_options.is_some() {
        let opts = HttpProtocolOptions {
            upstream_protocol_options,
            common_http_protocol_options,
            ..Default::default()
        };
        options.insert(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_string(),
            any(
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                &opts,
            ),
        );
    }
    options
}

/// Where inbound connections to ports no chain names go: each to the address it was headed
/// for (ORIGINAL_DST), as Istio's `InboundPassthroughCluster`, after the passthrough chains
/// have checked its mTLS mode and authorization.
pub fn inbound_passthrough() -> Cluster {
    Cluster {
        name: INBOUND_PASSTHROUGH_CLUSTER.into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32,
        )),
        lb_policy: weft_proto::xds::config::cluster::v3::cluster::LbPolicy::ClusterProvided as i32,
        // Istio's `connectTimeout`, as weft-proxy's own passthrough uses.
        connect_timeout: Some(duration(std::time::Duration::from_secs(10))),
        ..Default::default()
    }
}

/// The local app on one port, at the pod's primary address (loopback only when it has none): as
/// in Istio since 1.10, so an app bound to the pod IP is reached and one that keeps a port on
/// localhost keeps it private. One address, not one per family: a client that balances over the
/// endpoints (Envoy) would otherwise send half of them to the IPv6 address of a dual-stack pod
/// whose app listens on `0.0.0.0`.
pub fn inbound(port: &WorkloadPort, pod_ips: &[std::net::IpAddr]) -> Cluster {
    let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
    let ips = [pod_ips.first().copied().unwrap_or(loopback)];
    let endpoint = |ip: &std::net::IpAddr| LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: ip.to_string(),
                    port_specifier: Some(PortSpecifier::PortValue(u32::from(port.port))),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        })),
        ..Default::default()
    };
    let name = inbound_cluster_name(port.port);
    Cluster {
        name: name.clone(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        connect_timeout: Some(duration(CONNECT_TIMEOUT)),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name,
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: ips.iter().map(endpoint).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        typed_extension_protocol_options: http_protocol_options(port.protocol, false, None),
        metadata: Some(weft_metadata("protocol", port.protocol.as_str().into())),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// The upstream HTTP version each declared protocol asks of the proxy.
    #[test]
    fn upstream_http_version_follows_the_port_protocol() {
        use http_protocol_options::UpstreamProtocolOptions as U;
        let cases = [
            (Protocol::Detect, Some("downstream")),
            (Protocol::Http1, None),
            (Protocol::Http2, Some("http2")),
            (Protocol::Grpc, Some("http2")),
            (Protocol::Tcp, None),
        ];
        for (protocol, want) in cases {
            let port = WorkloadPort {
                port: 8080,
                protocol,
            };
            let inbound = inbound(&port, &[]);
            let got = inbound
                .typed_extension_protocol_options
                .get("envoy.extensions.upstreams.http.v3.HttpProtocolOptions")
                .map(|any| {
                    match HttpProtocolOptions::decode(any.value.as_slice())
                        .unwrap()
                        .upstream_protocol_options
                    {
                        Some(U::UseDownstreamProtocolConfig(_)) => "downstream",
                        Some(U::ExplicitHttpConfig(_)) => "http2",
                        other => panic!("{other:?}"),
                    }
                });
            assert_eq!(got, want, "{protocol:?}");
        }
    }
}
