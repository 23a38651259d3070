//! CDS: a Service port's cluster, shaped by its protocol and its TrafficPolicy.

use weft_proto::xds::config::cluster::v3::Cluster;
use weft_proto::xds::extensions::upstreams::http::v3::HttpProtocolOptions;

use super::*;
use crate::model::{ConnectionLimits, LoadBalancer, OutlierDetection};

const OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

fn cluster(svc: ServiceBuilder, name: &str) -> Cluster {
    get(&of_service(svc), ResourceType::Cluster, name)
}

/// The type URLs of a cluster's load-balancing policies, in the order a client tries them.
fn balancers(c: &Cluster) -> Vec<&str> {
    c.load_balancing_policy
        .as_ref()
        .unwrap()
        .policies
        .iter()
        .map(|p| {
            let config = p.typed_extension_config.as_ref().unwrap();
            let any = config.typed_config.as_ref().unwrap();
            any.type_url
                .strip_prefix("type.googleapis.com/envoy.extensions.load_balancing_policies.")
                .unwrap()
        })
        .collect()
}

/// Each balancer goes first, with round robin after it for clients that know only that.
#[test]
fn the_balancer_comes_first_and_round_robin_last() {
    let cases = [
        (
            LoadBalancer::LeastRequest,
            vec!["least_request.v3.LeastRequest", "round_robin.v3.RoundRobin"],
        ),
        (LoadBalancer::RoundRobin, vec!["round_robin.v3.RoundRobin"]),
        (
            LoadBalancer::Random,
            vec!["random.v3.Random", "round_robin.v3.RoundRobin"],
        ),
    ];
    for (load_balancer, want) in cases {
        let svc = service("ns", "api")
            .port(80, Protocol::Http1)
            .policy(TrafficPolicy {
                load_balancer,
                ..Default::default()
            });
        let c = cluster(svc, "outbound|80||api.ns.svc.cluster.local");
        assert_eq!(balancers(&c), want, "{load_balancer:?}");
    }
}

#[test]
fn a_traffic_policy_sets_limits_outlier_detection_and_the_idle_timeout() {
    let policy = TrafficPolicy {
        limits: ConnectionLimits {
            max_connections: Some(100),
            max_pending_requests: Some(50),
            idle_timeout: secs(30),
            ..Default::default()
        },
        outlier_detection: Some(OutlierDetection {
            consecutive_5xx: 5,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_percent: 10,
        }),
        ..Default::default()
    };
    let c = cluster(
        service("shop", "reviews")
            .port(9080, Protocol::Http1)
            .policy(policy),
        "outbound|9080||reviews.shop.svc.cluster.local",
    );
    let t = &c.circuit_breakers.as_ref().unwrap().thresholds[0];
    assert_eq!(t.max_connections.unwrap().value, 100);
    assert_eq!(t.max_pending_requests.unwrap().value, 50);
    assert!(t.max_requests.is_none());
    let od = c.outlier_detection.as_ref().unwrap();
    assert_eq!(od.consecutive_5xx.unwrap().value, 5);
    assert_eq!(od.interval.unwrap().seconds, 10);
    assert_eq!(od.base_ejection_time.unwrap().seconds, 30);
    assert_eq!(od.max_ejection_percent.unwrap().value, 10);
    // The idle timeout rides in Envoy's HttpProtocolOptions; an HTTP/1 port sets no protocol.
    let opts =
        HttpProtocolOptions::decode(c.typed_extension_protocol_options[OPTIONS].value.as_slice())
            .unwrap();
    assert!(opts.upstream_protocol_options.is_none());
    assert_eq!(
        opts.common_http_protocol_options
            .unwrap()
            .idle_timeout
            .unwrap()
            .seconds,
        30
    );

    // Without a policy: no limits, no ejection, nothing for HTTP/1.
    let plain = cluster(
        service("shop", "web").port(80, Protocol::Http1),
        "outbound|80||web.shop.svc.cluster.local",
    );
    assert!(plain.circuit_breakers.is_none() && plain.outlier_detection.is_none());
    assert!(plain.typed_extension_protocol_options.is_empty());
}

/// gRPC ports speak HTTP/2 upstream, without a policy to say so.
#[test]
fn a_grpc_port_speaks_http2_upstream() {
    let g = cluster(
        service("shop", "greeter").port(50051, Protocol::Grpc),
        "outbound|50051||greeter.shop.svc.cluster.local",
    );
    let opts =
        HttpProtocolOptions::decode(g.typed_extension_protocol_options[OPTIONS].value.as_slice())
            .unwrap();
    assert!(opts.upstream_protocol_options.is_some());
}
