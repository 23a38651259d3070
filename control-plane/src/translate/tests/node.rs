//! What one proxy is sent: which client it is, which Services it may reach, and the same every
//! time.

use weft_proto::google::protobuf::{Struct, Value, value::Kind};
use weft_proto::xds::config::core::v3::Node;

use super::*;
use crate::model::Mirror;

#[test]
fn clients_are_told_apart_by_user_agent_generator_or_first_listener_request() {
    let agent = |a: &str| Node {
        user_agent_name: a.into(),
        ..Default::default()
    };
    let istio_grpc = Node {
        metadata: Some(Struct {
            fields: [(
                "GENERATOR".to_string(),
                Value {
                    kind: Some(Kind::StringValue("grpc".into())),
                },
            )]
            .into(),
        }),
        ..Default::default()
    };
    let (l, c) = (ResourceType::Listener, ResourceType::Cluster);
    let cases = [
        (Some(agent("gRPC C-core linux")), l, false, Client::Grpc),
        (Some(agent("gRPC Go")), c, true, Client::Grpc),
        (Some(agent("envoy")), l, false, Client::Envoy),
        (Some(agent("weft-proxy")), l, true, Client::Envoy),
        (Some(istio_grpc), l, true, Client::Grpc),
        // Says nothing: a named Listener request first is what gRPC does, the wildcard what a
        // sidecar does.
        (None, l, false, Client::Grpc),
        (None, l, true, Client::Envoy),
        (Some(Node::default()), c, false, Client::Envoy),
    ];
    for (node, first, wildcard, want) in cases {
        assert_eq!(Client::of(node.as_ref(), first, wildcard), want, "{node:?}");
    }
}

/// A Sidecar limits a proxy to the Services it names, plus those their routes send to or
/// mirror to: a reachable Service's mirror comes along, an unrelated Service does not.
#[test]
fn a_sidecar_scope_brings_along_what_reachable_routes_mirror_to() {
    let mirrored = RouteRule {
        mirrors: vec![Mirror {
            service: Key::new("other", "shadow"),
            port: 8080,
            per_million: 100_000,
        }],
        ..rule("ns/r#0", [prefix("/")], [to("ns", "api", 80)])
    };
    let m = mesh()
        .service(
            service("ns", "api")
                .ip("10.0.0.1")
                .port(80, Protocol::Http1)
                .routes([mirrored]),
        )
        .service(
            service("other", "shadow")
                .ip("10.0.0.2")
                .port(8080, Protocol::Http1),
        )
        .service(
            service("ns", "unrelated")
                .ip("10.0.0.3")
                .port(80, Protocol::Http1),
        )
        .workload(workload("ns", "c-0", "10.1.0.1"))
        .sidecar(sidecar("ns", &["ns/api"]))
        .build();
    let res = for_node(&m, "c-0.ns");
    assert_eq!(
        names(&res, ResourceType::Cluster),
        [
            "outbound|8080||shadow.other.svc.cluster.local",
            "outbound|80||api.ns.svc.cluster.local",
        ]
    );
    // Without a scope, everything.
    assert_eq!(names(&for_node(&m, "x"), ResourceType::Cluster).len(), 3);
}

/// Equal meshes, equal resources and versions, every time: listener metadata included (a map
/// of two entries would encode in random order).
#[test]
fn translation_is_deterministic() {
    let m = mesh()
        .service(
            service("ns", "db")
                .headless()
                .port(5432, Protocol::Tcp)
                .endpoints([endpoint("10.1.0.5", 5432)]),
        )
        .service(
            service("ns", "api")
                .ip("10.0.0.1")
                .port(80, Protocol::Detect)
                .routes([RouteRule {
                    request_headers: HeaderEdits {
                        set: pairs(&[("x-a", "1"), ("x-b", "2")]),
                        ..Default::default()
                    },
                    ..rule("ns/r#0", [prefix("/")], [to("ns", "api", 80)])
                }]),
        )
        .workload(Workload {
            ports: vec![workload_port(8080, Protocol::Detect)],
            ..workload("ns", "c-0", "10.1.0.1")
        })
        .build();
    for (node, client) in [
        ("x", Client::Envoy),
        ("c-0.ns", Client::Envoy),
        ("c-0.ns", Client::Grpc),
    ] {
        let first = for_client(&m, node, client);
        for _ in 0..8 {
            assert_eq!(for_client(&m, node, client), first, "{node} {client:?}");
            assert_eq!(
                for_client(&m.clone(), node, client),
                first,
                "{node} {client:?}"
            );
        }
    }
}
