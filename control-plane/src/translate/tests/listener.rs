//! LDS: a Service port's listener in Envoy's shape and gRPC's, and a proxy's own listeners.

use weft_proto::google::protobuf::BoolValue;
use weft_proto::google::protobuf::value::Kind;
use weft_proto::xds::config::core::v3::TrafficDirection;
use weft_proto::xds::extensions::filters::network::http_connection_manager::v3::http_connection_manager;

use super::*;

const HCM: &str = "envoy.filters.network.http_connection_manager";
const TCP: &str = "envoy.filters.network.tcp_proxy";

fn tcp_route(origin: &str, backends: impl IntoIterator<Item = Backend>) -> TcpRoute {
    TcpRoute {
        origin: origin.into(),
        backends: backends.into_iter().collect(),
    }
}

fn cluster(name: &str) -> Option<tcp_proxy::ClusterSpecifier> {
    Some(tcp_proxy::ClusterSpecifier::Cluster(name.into()))
}

#[test]
fn an_http_listener_is_at_the_cluster_ip_with_filter_chains_for_envoy_and_an_api_listener_for_grpc()
{
    let m = mesh()
        .service(
            service("shop", "greeter")
                .ip("127.10.0.5")
                .port(50051, Protocol::Grpc),
        )
        .service(
            service("shop", "db")
                .ip("127.10.0.6")
                .port(5432, Protocol::Tcp),
        )
        .build();
    let name = "greeter.shop.svc.cluster.local:50051";
    let envoy = listener(&for_node(&m, "x"), name);
    // Envoy drops LDS listeners with an `api_listener`; this one it binds nothing for and
    // matches captured connections to.
    assert!(envoy.api_listener.is_none());
    assert_eq!(envoy.bind_to_port, Some(BoolValue { value: false }));
    assert_eq!(envoy.filter_chains[0].filters[0].name, HCM);
    let grpc = listener(&for_client(&m, "x", Client::Grpc), name);
    assert!(grpc.api_listener.is_some() && grpc.filter_chains.is_empty());
    for l in [&envoy, &grpc] {
        let (hcm, addr) = hcm_of(l);
        assert_eq!(addr.as_deref(), Some("127.10.0.5"));
        let Some(http_connection_manager::RouteSpecifier::Rds(rds)) = hcm.route_specifier else {
            panic!("routes over RDS")
        };
        assert_eq!(rds.route_config_name, name);
        assert_eq!(
            hcm.http_filters.last().unwrap().name,
            "envoy.filters.http.router"
        );
    }
    // TCP listeners are the same for both, with a `tcp_proxy` and no route configuration.
    let tcp = "db.shop.svc.cluster.local:5432";
    let db = listener(&for_node(&m, "x"), tcp);
    assert!(db.api_listener.is_none());
    assert_eq!(chains(&db), [(None, vec![], TCP)]);
    assert_eq!(db, listener(&for_client(&m, "x", Client::Grpc), tcp));
    assert!(!names(&for_node(&m, "x"), ResourceType::Route).contains(&tcp));
}

/// A headless Service's listeners are at its pods' addresses (each once, in order) and ask for
/// the original destination; a headless TCP port without endpoints gets no listener (Envoy
/// refuses one without an address), an HTTP one keeps its address-less API listener for
/// proxyless gRPC.
#[test]
fn headless_service_listeners_sit_at_the_pods_and_keep_the_original_destination() {
    let m = mesh()
        .service(
            service("ns", "db")
                .headless()
                .port(5432, Protocol::Tcp)
                .endpoints([
                    endpoint("10.1.0.6", 5432),
                    endpoint("10.1.0.5", 5432),
                    endpoint("10.1.0.5", 5432),
                ])
                .port(8080, Protocol::Http1),
        )
        .build();
    let res = for_node(&m, "x");
    let l = listener(&res, "db.ns.svc.cluster.local:5432");
    let mut all = vec![socket(l.address.as_ref())];
    all.extend(
        l.additional_addresses
            .iter()
            .map(|a| socket(a.address.as_ref())),
    );
    assert_eq!(all, ["10.1.0.5:5432", "10.1.0.6:5432"]);
    let md = &l.metadata.unwrap().filter_metadata["weft"].fields;
    assert_eq!(md.len(), 1, "one key: maps encode in no fixed order");
    assert_eq!(
        md["protocol"].kind,
        Some(Kind::StringValue("tcp; destination=original".into()))
    );
    // The HTTP port has no endpoints: no listener Envoy would refuse, and gRPC's API listener
    // without an address, as before.
    assert!(!names(&res, ResourceType::Listener).contains(&"db.ns.svc.cluster.local:8080"));
    let grpc = for_client(&m, "x", Client::Grpc);
    let http = listener(&grpc, "db.ns.svc.cluster.local:8080");
    assert!(http.address.is_none() && http.api_listener.is_some());

    let empty = of_service(service("ns", "db").headless().port(5432, Protocol::Tcp));
    assert!(
        names(&empty, ResourceType::Listener).is_empty(),
        "{:?}",
        names(&empty, ResourceType::Listener)
    );
    assert_eq!(
        names(&empty, ResourceType::Cluster),
        ["outbound|5432||db.ns.svc.cluster.local"]
    );
}

/// A port left to detection gets Envoy's protocol sniffing: the connection manager for what
/// `http_inspector` sniffs as HTTP, a `tcp_proxy` with the Service's idle timeout for the rest,
/// and connections that send nothing (server-first protocols) go on to it after 100 ms. Declared
/// ports keep one chain and no inspector. The same holds per app port on the inbound side.
#[test]
fn a_port_left_to_detection_gets_a_sniffed_http_chain_and_a_tcp_fallback() {
    let m = mesh()
        .workload(Workload {
            ports: vec![
                workload_port(8080, Protocol::Detect),
                workload_port(8081, Protocol::Http1),
            ],
            ..workload("ns", "c-0", "10.1.0.1")
        })
        .service(
            service("ns", "api")
                .ip("10.96.0.1")
                .policy(TrafficPolicy {
                    limits: crate::model::ConnectionLimits {
                        idle_timeout: secs(5),
                        ..Default::default()
                    },
                    ..Default::default()
                })
                .port(80, Protocol::Detect)
                .port(81, Protocol::Http1),
        )
        .build();
    let res = for_node(&m, "c-0.ns");
    let sniffed = || vec!["http/1.0".to_string(), "http/1.1".into(), "h2c".into()];
    let inspected = |l: &Listener| {
        let names: Vec<String> = l.listener_filters.iter().map(|f| f.name.clone()).collect();
        (
            names,
            l.listener_filters_timeout,
            l.continue_on_listener_filters_timeout,
        )
    };
    let timeout = Some(super::super::duration(Duration::from_millis(100)));
    let inspector = || vec!["envoy.filters.listener.http_inspector".to_string()];

    let detect = listener(&res, "api.ns.svc.cluster.local:80");
    assert_eq!(
        chains(&detect),
        [(None, sniffed(), HCM), (None, vec![], TCP)]
    );
    assert_eq!(inspected(&detect), (inspector(), timeout, true));
    let (proxy, target) = tcp_target(&detect, 1);
    assert_eq!(
        proxy.idle_timeout,
        Some(super::super::duration(Duration::from_secs(5)))
    );
    assert_eq!(target, cluster("outbound|80||api.ns.svc.cluster.local"));

    let declared = listener(&res, "api.ns.svc.cluster.local:81");
    assert_eq!(chains(&declared), [(None, vec![], HCM)]);
    assert_eq!(inspected(&declared), (Vec::<String>::new(), None, false));

    let inbound = listener(&res, "inbound");
    // The inbound side says so, as Envoy reads it, and the Service listeners the other way.
    assert_eq!(inbound.traffic_direction, TrafficDirection::Inbound as i32);
    assert_eq!(
        declared.traffic_direction,
        TrafficDirection::Outbound as i32
    );
    // Each port's chains twice: mTLS first, then the same for plaintext (PERMISSIVE); and the
    // passthrough for the ports not declared, on no port.
    let per_port = [
        (Some(8080), sniffed(), HCM),
        (Some(8080), vec![], TCP),
        (Some(8081), vec![], HCM),
        (None, vec![], TCP),
    ];
    let plain: Vec<_> = chains(&inbound)
        .into_iter()
        .zip(&inbound.filter_chains)
        .filter(|(_, c)| c.transport_socket.is_none())
        .map(|(c, _)| c)
        .collect();
    assert_eq!(plain, per_port);
    assert_eq!(chains(&inbound).len(), 2 * per_port.len());
    let tls_inspector = "envoy.filters.listener.tls_inspector".to_string();
    let original_dst = "envoy.filters.listener.original_dst".to_string();
    assert_eq!(
        inspected(&inbound),
        (
            [vec![original_dst, tls_inspector], inspector()].concat(),
            timeout,
            true
        )
    );
}

/// A workload's inbound ports offer mTLS beside plaintext (PERMISSIVE, the default), or mTLS
/// alone (STRICT): chains matched on the transport protocol, the mTLS ones requiring a client
/// certificate from the mesh's roots, as Envoy reads them.
#[test]
fn inbound_ports_offer_or_require_mtls_as_the_workloads_mode_says() {
    use weft_proto::xds::extensions::transport_sockets::tls::v3::DownstreamTlsContext;
    // The port's chains, then the passthrough's for the ports not declared, alike.
    for (mode, want) in [
        (
            TlsMode::Permissive,
            vec!["tls", "raw_buffer", "tls", "raw_buffer"],
        ),
        (TlsMode::Strict, vec!["tls", "tls"]),
    ] {
        let m = mesh()
            .workload(Workload {
                ports: vec![workload_port(8081, Protocol::Http1)],
                tls_mode: mode,
                ..workload("ns", "c-0", "10.1.0.1")
            })
            .build();
        let inbound = listener(&for_node(&m, "c-0.ns"), "inbound");
        let transports: Vec<&str> = inbound
            .filter_chains
            .iter()
            .map(|c| {
                c.filter_chain_match
                    .as_ref()
                    .unwrap()
                    .transport_protocol
                    .as_str()
            })
            .collect();
        assert_eq!(transports, want, "{mode:?}");
        let passthrough = inbound.filter_chains.last().unwrap();
        assert_eq!(
            passthrough
                .filter_chain_match
                .as_ref()
                .unwrap()
                .destination_port,
            None
        );
        assert_eq!(
            tcp_target(&inbound, inbound.filter_chains.len() - 1).1,
            cluster("InboundPassthroughCluster")
        );
        let tls = &inbound.filter_chains[0];
        let Some(weft_proto::xds::config::core::v3::transport_socket::ConfigType::TypedConfig(any)) =
            &tls.transport_socket.as_ref().unwrap().config_type
        else {
            panic!("{tls:?}")
        };
        let ctx = DownstreamTlsContext::decode(&any.value[..]).unwrap();
        assert_eq!(ctx.require_client_certificate.map(|b| b.value), Some(true));
        let common = ctx.common_tls_context.unwrap();
        assert_eq!(common.tls_certificate_sds_secret_configs[0].name, "default");
    }
}

#[test]
fn a_workload_without_ports_gets_no_inbound_listener() {
    // A listener without a filter chain is invalid (Envoy and weft-proxy both reject it).
    let m = mesh().workload(workload("ns", "job-0", "10.1.0.9")).build();
    let res = for_node(&m, "job-0.ns");
    assert!(names(&res, ResourceType::Listener).is_empty());
    assert!(names(&res, ResourceType::Cluster).is_empty());
}

/// Where a TCPRoute sends a port's connections: one live backend is a plain cluster; several
/// are weighted clusters, weight-0 ones left out (Envoy's schema wants every weight at least 1)
/// and an unresolved one under a cluster nobody has; none live refuses every connection.
#[test]
fn a_tcp_routes_backends_become_the_tcp_proxys_clusters() {
    use tcp_proxy::ClusterSpecifier::{Cluster, WeightedClusters};
    let gone = Backend {
        unresolved: true,
        ..weighted("ns", "gone", 5432, 5)
    };
    let cases = [
        (
            vec![weighted("ns", "db-v2", 5432, 3)],
            "outbound|5432||db-v2.ns.svc.cluster.local",
        ),
        (
            vec![
                weighted("ns", "db", 5432, 90),
                weighted("ns", "db-v2", 5432, 10),
                weighted("ns", "db-v2", 5432, 0),
                gone,
            ],
            "outbound|5432||db.ns.svc.cluster.local=90 outbound|5432||db-v2.ns.svc.cluster.local=10 unresolved|ns/gone|5432=5",
        ),
        (vec![weighted("ns", "db", 5432, 0)], "refused|ns/canary"),
    ];
    for (backends, want) in cases {
        let res = of_service(
            service("ns", "db")
                .ip("10.0.0.1")
                .port(5432, Protocol::Tcp)
                .tcp_route(tcp_route("ns/canary", backends)),
        );
        let l = listener(&res, "db.ns.svc.cluster.local:5432");
        let got = match tcp_target(&l, 0).1 {
            Some(Cluster(c)) => c,
            Some(WeightedClusters(w)) => w
                .clusters
                .iter()
                .map(|c| format!("{}={}", c.name, c.weight))
                .collect::<Vec<_>>()
                .join(" "),
            None => panic!("{l:?}"),
        };
        assert_eq!(got, want);
    }
}

/// A consumer TCPRoute gives its namespace's proxies a listener of their own under the same
/// name, and a Sidecar's scope brings a TCPRoute's backends along.
#[test]
fn tcp_routes_make_consumer_listeners_and_bring_their_backends_into_scope() {
    let m = mesh()
        .service(
            service("ns", "db")
                .ip("10.0.0.1")
                .port(5432, Protocol::Tcp)
                .tcp_route(tcp_route(
                    "ns/canary",
                    [
                        weighted("ns", "db", 5432, 90),
                        weighted("ns", "db-v2", 5432, 10),
                    ],
                ))
                .consumer_tcp_route("team", tcp_route("team/mine", [to("team", "local", 5432)])),
        )
        .service(
            service("ns", "db-v2")
                .ip("10.0.0.2")
                .port(5432, Protocol::Tcp),
        )
        .service(
            service("team", "local")
                .ip("10.0.0.3")
                .port(5432, Protocol::Tcp),
        )
        .workload(workload("team", "t-0", "10.2.0.1"))
        .workload(workload("other", "o-0", "10.3.0.1"))
        .sidecar(sidecar("other", &["ns/db"]))
        .build();
    let specifier = |node: &str| {
        let res = for_node(&m, node);
        let l = listener(&res, "db.ns.svc.cluster.local:5432");
        let clusters: Vec<String> = names(&res, ResourceType::Cluster)
            .into_iter()
            .map(String::from)
            .collect();
        (tcp_target(&l, 0).1, clusters)
    };
    let (split, clusters) = specifier("o-0.other");
    let Some(tcp_proxy::ClusterSpecifier::WeightedClusters(w)) = split else {
        panic!("{split:?}")
    };
    let got: Vec<(&str, u32)> = w
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c.weight))
        .collect();
    assert_eq!(
        got,
        [
            ("outbound|5432||db.ns.svc.cluster.local", 90),
            ("outbound|5432||db-v2.ns.svc.cluster.local", 10)
        ]
    );
    // The Sidecar names db alone; its canary comes along, the team's Service does not.
    assert_eq!(
        clusters,
        [
            "outbound|5432||db-v2.ns.svc.cluster.local",
            "outbound|5432||db.ns.svc.cluster.local"
        ]
    );
    assert_eq!(
        specifier("t-0.team").0,
        cluster("outbound|5432||local.team.svc.cluster.local")
    );
}

/// A consumer TCPRoute on a port left to detection makes that port opaque TCP, split as it says,
/// for its namespace's proxies (others still sniff it), but gRPC's clients there keep the
/// `api_listener` they read.
#[test]
fn a_consumer_tcp_route_leaves_grpc_clients_their_api_listener() {
    let m = mesh()
        .service(
            service("ns", "api")
                .ip("10.0.0.1")
                .port(9000, Protocol::Detect)
                .consumer_tcp_route("team", tcp_route("team/mine", [to("team", "other", 9000)])),
        )
        .service(
            service("team", "other")
                .ip("10.0.0.2")
                .port(9000, Protocol::Detect),
        )
        .workload(workload("team", "t-0", "10.2.0.1"))
        .build();
    let name = "api.ns.svc.cluster.local:9000";
    let l = listener(&for_client(&m, "t-0.team", Client::Grpc), name);
    assert!(l.api_listener.is_some(), "{l:?}");
    let l = listener(&for_client(&m, "t-0.team", Client::Envoy), name);
    assert!(l.api_listener.is_none());
    assert_eq!(chains(&l), [(None, vec![], TCP)]);
    assert!(l.listener_filters.is_empty());
    let elsewhere = listener(&for_node(&m, "unknown"), name);
    assert_eq!(elsewhere.filter_chains.len(), 2);
    assert_eq!(
        tcp_target(&l, 0).1,
        cluster("outbound|9000||other.team.svc.cluster.local")
    );
}

/// A producer TCPRoute makes a port left to detection opaque TCP for every proxy, but a
/// namespace with consumer HTTP routes on it keeps sniffing, for its routes to apply, and
/// gRPC's clients keep their `api_listener`.
#[test]
fn a_producer_tcp_route_makes_a_detected_port_tcp_but_for_consumer_http_routes() {
    let m = mesh()
        .service(
            service("ns", "api")
                .ip("10.0.0.1")
                .port(9000, Protocol::Detect)
                .tcp_route(tcp_route("ns/all", [to("ns", "api", 9000)]))
                .consumer_routes(
                    "team",
                    [rule("team/mine#0", [prefix("/")], [to("ns", "api", 9000)])],
                ),
        )
        .workload(workload("team", "t-0", "10.2.0.1"))
        .build();
    let name = "api.ns.svc.cluster.local:9000";
    let shared = listener(&for_node(&m, "unknown"), name);
    assert_eq!(chains(&shared), [(None, vec![], TCP)]);
    // gRPC's clients read only routes, never the `tcp_proxy`: they keep their api_listener.
    let grpc = listener(&for_client(&m, "unknown", Client::Grpc), name);
    assert!(grpc.api_listener.is_some());
    let team = listener(&for_node(&m, "t-0.team"), name);
    assert_eq!(team.filter_chains.len(), 2);
    assert_eq!(team.filter_chains[0].filters[0].name, HCM);
}
