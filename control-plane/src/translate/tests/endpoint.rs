//! EDS: a Service port's endpoints, as the model lists them.

use weft_proto::google::protobuf::value::Kind;
use weft_proto::xds::config::core::v3::HealthStatus;
use weft_proto::xds::config::endpoint::v3::{ClusterLoadAssignment, LbEndpoint, lb_endpoint};

use super::*;

fn assignment(svc: ServiceBuilder, name: &str) -> ClusterLoadAssignment {
    get(&of_service(svc), ResourceType::Endpoint, name)
}

fn inner(e: &LbEndpoint) -> &weft_proto::xds::config::endpoint::v3::Endpoint {
    match &e.host_identifier {
        Some(lb_endpoint::HostIdentifier::Endpoint(e)) => e,
        other => panic!("{other:?}"),
    }
}

/// An endpoint of a known workload carries its identity (what the proxy must see on the peer's
/// certificate) and `<workload>.<namespace>` as its hostname, for metrics; one of no known
/// workload carries neither.
#[test]
fn endpoints_carry_identity_and_workload() {
    let known = Endpoint {
        identity: Some("spiffe://cluster.local/ns/shop/sa/reviews".into()),
        workload: Some(Key::new("shop", "reviews-v1-0")),
        workload_name: Some("reviews-v1".into()),
        ..endpoint("127.20.0.2", 9080)
    };
    let cla = assignment(
        service("shop", "reviews")
            .port(9080, Protocol::Http1)
            .endpoints([known, endpoint("127.20.0.3", 9080)]),
        "outbound|9080||reviews.shop.svc.cluster.local",
    );
    let eps = &cla.endpoints[0].lb_endpoints;
    assert_eq!(eps.len(), 2);
    let md = eps[0].metadata.as_ref().unwrap();
    assert_eq!(
        md.filter_metadata["weft"].fields["identity"].kind,
        Some(Kind::StringValue(
            "spiffe://cluster.local/ns/shop/sa/reviews".into()
        ))
    );
    assert_eq!(inner(&eps[0]).hostname, "reviews-v1.shop");
    assert!(eps[1].metadata.is_none());
    assert_eq!(inner(&eps[1]).hostname, "");
}

/// The model already chose which endpoints take traffic (draining ones only while nothing is
/// ready): every one it lists is sent, at its own port, as HEALTHY, since Envoy and gRPC both
/// skip DRAINING ones. Localities are the zones, each weighted by its endpoint count.
#[test]
fn every_listed_endpoint_is_sent_healthy_at_its_port_grouped_by_zone() {
    let cases = [
        (
            vec![endpoint("10.1.0.1", 8080)],
            vec![("", 1, vec!["10.1.0.1:8080"])],
        ),
        (
            vec![
                Endpoint {
                    health: Health::Draining,
                    ..endpoint("10.1.0.1", 8080)
                },
                Endpoint {
                    health: Health::Draining,
                    ..endpoint("10.1.0.2", 8081)
                },
            ],
            vec![("", 2, vec!["10.1.0.1:8080", "10.1.0.2:8081"])],
        ),
        (
            vec![
                Endpoint {
                    zone: Some("b".into()),
                    ..endpoint("10.1.0.1", 8080)
                },
                Endpoint {
                    zone: Some("a".into()),
                    ..endpoint("10.1.0.2", 8080)
                },
                Endpoint {
                    zone: Some("b".into()),
                    ..endpoint("10.1.0.3", 8080)
                },
            ],
            vec![
                ("a", 1, vec!["10.1.0.2:8080"]),
                ("b", 2, vec!["10.1.0.1:8080", "10.1.0.3:8080"]),
            ],
        ),
    ];
    for (endpoints, want) in cases {
        let cla = assignment(
            service("ns", "api")
                .port(80, Protocol::Http1)
                .endpoints(endpoints),
            "outbound|80||api.ns.svc.cluster.local",
        );
        let got: Vec<(&str, u32, Vec<String>)> = cla
            .endpoints
            .iter()
            .map(|l| {
                let zone = l.locality.as_ref().unwrap().zone.as_str();
                let addrs = l
                    .lb_endpoints
                    .iter()
                    .map(|e| {
                        assert_eq!(e.health_status, HealthStatus::Healthy as i32);
                        socket(inner(e).address.as_ref())
                    })
                    .collect();
                (zone, l.load_balancing_weight.unwrap().value, addrs)
            })
            .collect();
        let want: Vec<(&str, u32, Vec<String>)> = want
            .into_iter()
            .map(|(z, w, a)| (z, w, a.into_iter().map(String::from).collect()))
            .collect();
        assert_eq!(got, want);
    }
}
