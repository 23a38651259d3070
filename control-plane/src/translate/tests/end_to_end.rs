//! End to end: the `examples/shop` directory through the registry to xDS, as `weft serve` reads
//! it. The only tests here that start from YAML; each piece is tested alone elsewhere.

use std::path::Path;

use weft_proto::xds::config::cluster::v3::Cluster;
use weft_proto::xds::config::endpoint::v3::lb_endpoint;

use super::*;
use crate::registry;

fn shop() -> Mesh {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shop");
    let (objects, warnings) = registry::file::load_dir(&dir).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let (mesh, warnings) = registry::build(&objects, "cluster.local");
    assert!(warnings.is_empty(), "{warnings:?}");
    mesh
}

#[test]
fn end_to_end_shop_every_service_port_gets_cluster_endpoints_listener_and_routes() {
    let res = for_node(&shop(), "some-client");
    assert_eq!(
        names(&res, ResourceType::Cluster),
        [
            "outbound|50051||greeter.shop.svc.cluster.local",
            "outbound|5432||db.shop.svc.cluster.local",
            "outbound|80||web.shop.svc.cluster.local",
            "outbound|9080||reviews-v1.shop.svc.cluster.local",
            "outbound|9080||reviews-v2.shop.svc.cluster.local",
            "outbound|9080||reviews.shop.svc.cluster.local",
        ]
    );
    assert_eq!(
        names(&res, ResourceType::Endpoint),
        names(&res, ResourceType::Cluster)
    );
    // TCP ports have no route configuration.
    assert_eq!(
        names(&res, ResourceType::Route),
        [
            "greeter.shop.svc.cluster.local:50051",
            "reviews-v1.shop.svc.cluster.local:9080",
            "reviews-v2.shop.svc.cluster.local:9080",
            "reviews.shop.svc.cluster.local:9080",
            "web.shop.svc.cluster.local:80",
        ]
    );
    let db = listener(&res, "db.shop.svc.cluster.local:5432");
    assert!(db.api_listener.is_none());
    assert_eq!(
        db.filter_chains[0].filters[0].name,
        "envoy.filters.network.tcp_proxy"
    );
    // An unknown node has no workload, so no inbound listener.
    assert!(!names(&res, ResourceType::Listener).contains(&"inbound"));
}

#[test]
fn end_to_end_shop_sidecar_scope_limits_services_but_keeps_canary_backends() {
    let m = shop();
    let res = for_node(&m, "web-0.shop");
    // web may reach reviews and greeter; reviews' routes bring reviews-v1/v2 along; db is out.
    assert_eq!(
        names(&res, ResourceType::Cluster),
        [
            "InboundPassthroughCluster",
            "inbound|8080||",
            "outbound|50051||greeter.shop.svc.cluster.local",
            "outbound|9080||reviews-v1.shop.svc.cluster.local",
            "outbound|9080||reviews-v2.shop.svc.cluster.local",
            "outbound|9080||reviews.shop.svc.cluster.local",
        ]
    );
    let lds = names(&res, ResourceType::Listener);
    assert!(lds.contains(&"inbound"));
    assert!(lds.contains(&"outbound|127.0.0.1:19080"));
    // The local app is reached at the pod's address, not loopback (Istio since 1.10).
    let inbound: Cluster = get(&res, ResourceType::Cluster, "inbound|8080||");
    let addrs: Vec<String> = inbound.load_assignment.unwrap().endpoints[0]
        .lb_endpoints
        .iter()
        .map(|e| match &e.host_identifier {
            Some(lb_endpoint::HostIdentifier::Endpoint(ep)) => socket(ep.address.as_ref()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(addrs, ["127.20.0.1:8080"]);
    // Istio-style node ids name the same workload.
    let istio = for_node(&m, "sidecar~127.20.0.1~web-0.shop~shop.svc.cluster.local");
    assert_eq!(istio, res);
    // Loading and building again gives the same resources, versions included.
    assert_eq!(for_node(&shop(), "web-0.shop"), res);
}
