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

/// An endpoint whose workload runs a sidecar is marked `tlsMode: weft` for its cluster's
/// transport socket matches; its cluster then asks for mTLS to such endpoints, naming the
/// identities they may present, and plaintext to the rest.
#[test]
fn endpoints_with_a_sidecar_are_dialed_with_mtls_as_their_cluster_says() {
    use weft_proto::xds::config::cluster::v3::Cluster;
    use weft_proto::xds::config::core::v3::transport_socket::ConfigType;
    use weft_proto::xds::extensions::transport_sockets::tls::v3::{
        UpstreamTlsContext, common_tls_context::ValidationContextType,
    };
    use weft_proto::xds::extensions::upstreams::http::v3::{
        HttpProtocolOptions, http_protocol_options,
    };
    let meshed = Endpoint {
        identity: Some("spiffe://cluster.local/ns/shop/sa/reviews".into()),
        mtls: true,
        ..endpoint("127.20.0.2", 9080)
    };
    let name = "outbound|9080||reviews.shop.svc.cluster.local";
    let svc = || {
        service("shop", "reviews")
            .port(9080, Protocol::Http1)
            .endpoints([meshed.clone(), endpoint("127.20.0.3", 9080)])
    };
    let cla = assignment(svc(), name);
    let modes: Vec<Option<String>> = cla.endpoints[0]
        .lb_endpoints
        .iter()
        .map(|e| {
            let md = e.metadata.as_ref()?;
            let m = md.filter_metadata.get("envoy.transport_socket_match")?;
            match &m.fields["tlsMode"].kind {
                Some(Kind::StringValue(s)) => Some(s.clone()),
                _ => None,
            }
        })
        .collect();
    assert_eq!(modes, [Some("weft".to_string()), None]);

    let cluster: Cluster = get(&of_service(svc()), ResourceType::Cluster, name);
    let names: Vec<&str> = cluster
        .transport_socket_matches
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(names, ["tlsMode-weft", "tlsMode-disabled"]);
    // The first match's TLS context.
    let mtls_context = |c: &Cluster| {
        let Some(ConfigType::TypedConfig(any)) = &c.transport_socket_matches[0]
            .transport_socket
            .as_ref()
            .unwrap()
            .config_type
        else {
            panic!("{c:?}")
        };
        UpstreamTlsContext::decode(&any.value[..]).unwrap()
    };
    let common = mtls_context(&cluster).common_tls_context.unwrap();
    // HTTP/1 between sidecars goes over HTTP/2 where ALPN agrees; plaintext stays HTTP/1.1.
    assert_eq!(common.alpn_protocols, ["h2", "http/1.1"]);
    let opts = HttpProtocolOptions::decode(
        cluster.typed_extension_protocol_options
            ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
            .value
            .as_slice(),
    )
    .unwrap();
    assert!(matches!(
        opts.upstream_protocol_options,
        Some(http_protocol_options::UpstreamProtocolOptions::AutoConfig(
            _
        ))
    ));
    let Some(ValidationContextType::CombinedValidationContext(v)) = common.validation_context_type
    else {
        panic!("no combined validation context")
    };
    assert_eq!(
        v.validation_context_sds_secret_config.unwrap().name,
        "ROOTCA"
    );
    let sans = v
        .default_validation_context
        .unwrap()
        .match_typed_subject_alt_names;
    assert_eq!(sans.len(), 1);

    // A policy that says no keeps HTTP/1.1 to sidecars: nothing offered, nothing to negotiate.
    let kept: Cluster = get(
        &of_service(svc().policy(crate::model::TrafficPolicy {
            limits: crate::model::ConnectionLimits {
                h2_upgrade: Some(false),
                ..Default::default()
            },
            ..Default::default()
        })),
        ResourceType::Cluster,
        name,
    );
    assert!(kept.typed_extension_protocol_options.is_empty());
    let common = mtls_context(&kept).common_tls_context.unwrap();
    assert!(common.alpn_protocols.is_empty());

    // No endpoint with a sidecar: plaintext, with nothing to match.
    let plain: Cluster = get(
        &of_service(
            service("shop", "db")
                .port(5432, Protocol::Tcp)
                .endpoints([endpoint("127.20.0.4", 5432)]),
        ),
        ResourceType::Cluster,
        "outbound|5432||db.shop.svc.cluster.local",
    );
    assert!(plain.transport_socket_matches.is_empty());
    assert!(plain.typed_extension_protocol_options.is_empty());
}
