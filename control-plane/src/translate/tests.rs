//! Table tests: YAML in (through the same registry code users hit), xDS out.

use std::path::Path;

use prost::Message;
use weft_proto::google::protobuf::BoolValue;
use weft_proto::xds::config::cluster::v3::Cluster;
use weft_proto::xds::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint};
use weft_proto::xds::config::listener::v3::{Listener, filter};
use weft_proto::xds::config::route::v3::{
    RouteAction, RouteConfiguration, route, route_action, route_match,
};
use weft_proto::xds::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use weft_proto::xds::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};

use super::*;
use crate::registry::{self, Objects};

const TD: &str = "cluster.local";

fn mesh(yaml: &str) -> Mesh {
    let mut objects = Objects::default();
    let mut warnings = Vec::new();
    registry::file::load_text(Path::new("t.yaml"), yaml, &mut objects, &mut warnings).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let (mesh, warnings) = registry::build(&objects, TD);
    assert!(warnings.is_empty(), "{warnings:?}");
    mesh
}

fn shop() -> Mesh {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shop");
    let (objects, warnings) = registry::file::load_dir(&dir).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    registry::build(&objects, TD).0
}

fn get<M: Message + Default>(
    res: &BTreeMap<ResourceType, BTreeMap<String, Arc<Resource>>>,
    t: ResourceType,
    name: &str,
) -> M {
    let r = res
        .get(&t)
        .and_then(|m| m.get(name))
        .unwrap_or_else(|| panic!("no {t:?} {name}"));
    M::decode(&r.body.value[..]).unwrap()
}

fn names(
    res: &BTreeMap<ResourceType, BTreeMap<String, Arc<Resource>>>,
    t: ResourceType,
) -> Vec<&str> {
    res.get(&t)
        .into_iter()
        .flat_map(|m| m.keys())
        .map(String::as_str)
        .collect()
}

#[test]
fn every_service_port_gets_cluster_endpoints_listener_and_routes() {
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
    // TCP ports have no route configuration.
    assert!(!names(&res, ResourceType::Route).contains(&"db.shop.svc.cluster.local:5432"));
    let db: Listener = get(
        &res,
        ResourceType::Listener,
        "db.shop.svc.cluster.local:5432",
    );
    assert!(db.api_listener.is_none());
    assert_eq!(
        db.filter_chains[0].filters[0].name,
        "envoy.filters.network.tcp_proxy"
    );
    // An unknown node has no workload, so no inbound listener.
    assert!(!names(&res, ResourceType::Listener).contains(&"inbound"));
}

/// The listener's HTTP connection manager and where it sits, for Envoy's shape and gRPC's.
fn hcm_of(l: &Listener) -> (HttpConnectionManager, Option<String>) {
    let any = match &l.api_listener {
        Some(api) => api.api_listener.clone().unwrap(),
        None => match l.filter_chains[0].filters[0].config_type.clone() {
            Some(filter::ConfigType::TypedConfig(any)) => any,
            other => panic!("{other:?}"),
        },
    };
    let addr = match l.address.as_ref().and_then(|a| a.address.as_ref()) {
        Some(weft_proto::xds::config::core::v3::address::Address::SocketAddress(sa)) => {
            Some(sa.address.clone())
        }
        _ => None,
    };
    (HttpConnectionManager::decode(&any.value[..]).unwrap(), addr)
}

#[test]
fn http_listener_is_at_the_cluster_ip_with_filter_chains_for_envoy_and_an_api_listener_for_grpc() {
    let name = "greeter.shop.svc.cluster.local:50051";
    let envoy: Listener = get(&for_node(&shop(), "x"), ResourceType::Listener, name);
    // Envoy drops LDS listeners with an `api_listener`; this one it binds nothing for and
    // matches captured connections to.
    assert!(envoy.api_listener.is_none());
    assert_eq!(envoy.bind_to_port, Some(BoolValue { value: false }));
    assert_eq!(
        envoy.filter_chains[0].filters[0].name,
        "envoy.filters.network.http_connection_manager"
    );
    let grpc: Listener = get(
        &for_client(&shop(), "x", Client::Grpc),
        ResourceType::Listener,
        name,
    );
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
    // TCP listeners are the same for both.
    let tcp = "db.shop.svc.cluster.local:5432";
    assert_eq!(
        for_node(&shop(), "x")[&ResourceType::Listener][tcp],
        for_client(&shop(), "x", Client::Grpc)[&ResourceType::Listener][tcp]
    );
}

#[test]
fn clients_are_told_apart_by_user_agent_generator_or_first_listener_request() {
    use weft_proto::xds::config::core::v3::Node;
    let agent = |a: &str| Node {
        user_agent_name: a.into(),
        ..Default::default()
    };
    let istio_grpc = Node {
        metadata: Some(weft_proto::google::protobuf::Struct {
            fields: [(
                "GENERATOR".to_string(),
                weft_proto::google::protobuf::Value {
                    kind: Some(weft_proto::google::protobuf::value::Kind::StringValue(
                        "grpc".into(),
                    )),
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

#[test]
fn canary_route_has_header_match_first_then_weighted_split() {
    let res = for_node(&shop(), "x");
    let rc: RouteConfiguration = get(
        &res,
        ResourceType::Route,
        "reviews.shop.svc.cluster.local:9080",
    );
    let routes = &rc.virtual_hosts[0].routes;
    assert_eq!(routes.len(), 2);
    // Both rules match prefix "/"; the one with a header match wins by precedence.
    let m = routes[0].r#match.as_ref().unwrap();
    assert_eq!(m.headers[0].name, "x-canary");
    let Some(route::Action::Route(a)) = &routes[1].action else {
        panic!()
    };
    let Some(route_action::ClusterSpecifier::WeightedClusters(wc)) = &a.cluster_specifier else {
        panic!("not weighted: {a:?}")
    };
    let split: Vec<(&str, u32)> = wc
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c.weight.unwrap().value))
        .collect();
    assert_eq!(
        split,
        [
            ("outbound|9080||reviews-v1.shop.svc.cluster.local", 90),
            ("outbound|9080||reviews-v2.shop.svc.cluster.local", 10)
        ]
    );
    assert_eq!(a.timeout.unwrap().seconds, 5);
    let retry = a.retry_policy.as_ref().unwrap();
    assert_eq!(retry.num_retries.unwrap().value, 2);
    assert_eq!(retry.retriable_status_codes, [503]);
}

#[test]
fn route_without_httproute_sends_everything_to_the_service_without_timeout() {
    let res = for_node(&shop(), "x");
    let rc: RouteConfiguration = get(&res, ResourceType::Route, "web.shop.svc.cluster.local:80");
    let r = &rc.virtual_hosts[0].routes[0];
    assert_eq!(
        r.r#match.as_ref().unwrap().path_specifier,
        Some(route_match::PathSpecifier::Prefix("/".into()))
    );
    let Some(route::Action::Route(a)) = &r.action else {
        panic!()
    };
    assert_eq!(
        a.cluster_specifier,
        Some(route_action::ClusterSpecifier::Cluster(
            "outbound|80||web.shop.svc.cluster.local".into()
        ))
    );
    // Zero, not unset: Envoy's unset default (15 s) would cut streams.
    assert_eq!(a.timeout.unwrap().seconds, 0);
}

#[test]
fn endpoints_carry_identity_and_only_ready_addresses() {
    let res = for_node(&shop(), "x");
    let cla: ClusterLoadAssignment = get(
        &res,
        ResourceType::Endpoint,
        "outbound|9080||reviews.shop.svc.cluster.local",
    );
    let eps = &cla.endpoints[0].lb_endpoints;
    assert_eq!(eps.len(), 2);
    let md = eps[0].metadata.as_ref().unwrap();
    let id = &md.filter_metadata["weft"].fields["identity"];
    assert_eq!(
        id.kind,
        Some(weft_proto::google::protobuf::value::Kind::StringValue(
            "spiffe://cluster.local/ns/shop/sa/reviews".into()
        ))
    );
    let Some(lb_endpoint::HostIdentifier::Endpoint(e)) = &eps[0].host_identifier else {
        panic!()
    };
    assert_eq!(e.hostname, "reviews-v1-0.shop");
}

const READINESS: &str = "
apiVersion: v1
kind: Service
metadata: {name: api, namespace: ns}
spec: {clusterIP: 10.0.0.1, ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: api-1, namespace: ns, labels: {kubernetes.io/service-name: api}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
  - addresses: [10.1.0.1]
    conditions: {ready: READY1, serving: true, terminating: TERM1}
  - addresses: [10.1.0.2]
    conditions: {ready: false, serving: true, terminating: true}
  - addresses: [10.1.0.3]
    conditions: {ready: false, serving: false, terminating: false}
";

#[test]
fn terminating_endpoints_stay_only_while_nothing_is_ready() {
    let cases = [
        // (first endpoint ready?, terminating?) -> addresses served
        ("true", "false", vec!["10.1.0.1"]),
        ("false", "true", vec!["10.1.0.1", "10.1.0.2"]),
    ];
    for (ready, term, want) in cases {
        let m = mesh(&READINESS.replace("READY1", ready).replace("TERM1", term));
        let res = for_node(&m, "x");
        let cla: ClusterLoadAssignment = get(
            &res,
            ResourceType::Endpoint,
            "outbound|80||api.ns.svc.cluster.local",
        );
        let got: Vec<String> = cla
            .endpoints
            .iter()
            .flat_map(|l| &l.lb_endpoints)
            .map(|e| match &e.host_identifier {
                Some(lb_endpoint::HostIdentifier::Endpoint(ep)) => match &ep.address.as_ref().unwrap().address {
                    Some(weft_proto::xds::config::core::v3::address::Address::SocketAddress(sa)) => {
                        assert_eq!(sa.port_specifier, Some(weft_proto::xds::config::core::v3::socket_address::PortSpecifier::PortValue(8080)));
                        sa.address.clone()
                    }
                    _ => panic!(),
                },
                _ => panic!(),
            })
            .collect();
        assert_eq!(got, want, "ready={ready} terminating={term}");
    }
}

#[test]
fn sidecar_scope_limits_services_but_keeps_canary_backends() {
    let m = shop();
    let res = for_node(&m, "web-0.shop");
    // web may reach reviews and greeter; reviews' routes bring reviews-v1/v2 along; db is out.
    assert_eq!(
        names(&res, ResourceType::Cluster),
        [
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
            Some(lb_endpoint::HostIdentifier::Endpoint(ep)) => format!("{:?}", ep.address),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(addrs.len(), 1);
    assert!(
        addrs[0].contains("\"127.20.0.1\"") && addrs[0].contains("8080"),
        "{addrs:?}"
    );
    // Istio-style node ids name the same workload.
    let istio = for_node(&m, "sidecar~127.20.0.1~web-0.shop~shop.svc.cluster.local");
    assert_eq!(
        names(&istio, ResourceType::Cluster),
        names(&res, ResourceType::Cluster)
    );
}

#[test]
fn traffic_policy_sets_balancer_and_limits() {
    let res = for_node(&shop(), "x");
    let c: Cluster = get(
        &res,
        ResourceType::Cluster,
        "outbound|9080||reviews.shop.svc.cluster.local",
    );
    let policies: Vec<&str> = c
        .load_balancing_policy
        .as_ref()
        .unwrap()
        .policies
        .iter()
        .map(|p| {
            p.typed_extension_config
                .as_ref()
                .unwrap()
                .typed_config
                .as_ref()
                .unwrap()
                .type_url
                .as_str()
        })
        .collect();
    assert_eq!(
        policies,
        [
            "type.googleapis.com/envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest",
            "type.googleapis.com/envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin"
        ]
    );
    let t = &c.circuit_breakers.as_ref().unwrap().thresholds[0];
    assert_eq!(t.max_connections.unwrap().value, 100);
    assert_eq!(t.max_pending_requests.unwrap().value, 50);
    assert!(t.max_requests.is_none());
    assert_eq!(
        c.outlier_detection
            .as_ref()
            .unwrap()
            .consecutive_5xx
            .unwrap()
            .value,
        5
    );
    // The idle timeout rides in Envoy's HttpProtocolOptions; an HTTP/1 port sets no protocol.
    let opts: weft_proto::xds::extensions::upstreams::http::v3::HttpProtocolOptions = prost::Message::decode(
        c.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
            .value
            .as_slice(),
    )
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
    // gRPC ports speak HTTP/2 upstream.
    let g: Cluster = get(
        &res,
        ResourceType::Cluster,
        "outbound|50051||greeter.shop.svc.cluster.local",
    );
    assert!(
        g.typed_extension_protocol_options
            .contains_key("envoy.extensions.upstreams.http.v3.HttpProtocolOptions")
    );
}

/// Service `api` (namespace `ns`, cluster IP 10.0.0.1) with one port, as a YAML document and its
/// separator.
fn api_service(port_name: &str, port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: api, namespace: ns}}\n\
spec: {{clusterIP: 10.0.0.1, ports: [{{name: {port_name}, port: {port}}}]}}\n---\n"
    )
}

/// A mesh of Service `api` and an HTTPRoute on it with `rules` (YAML list items).
/// The action of the route that matches exactly `path`.
fn action_for_path(rc: &RouteConfiguration, path: &str) -> route::Action {
    rc.virtual_hosts[0]
        .routes
        .iter()
        .find(|r| {
            r.r#match.as_ref().unwrap().path_specifier
                == Some(route_match::PathSpecifier::Path(path.into()))
        })
        .and_then(|r| r.action.clone())
        .unwrap_or_else(|| panic!("no route for {path}"))
}

fn api_routed(rules: &str) -> Mesh {
    mesh(&api_routes(rules))
}

fn api_routes(rules: &str) -> String {
    format!(
        "
apiVersion: v1
kind: Service
metadata: {{name: api, namespace: ns}}
spec: {{clusterIP: 10.0.0.1, ports: [{{name: http, port: 80}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: ns}}
spec:
  parentRefs: [{{kind: Service, name: api}}]
  rules:
{rules}"
    )
}

#[test]
fn path_prefix_is_segment_aware_and_precedence_orders_matches() {
    let m = api_routed(
        "
    - matches: [{path: {type: PathPrefix, value: /v1}}]
      backendRefs: [{name: api, port: 80}]
    - matches: [{path: {type: Exact, value: /v1/health}, method: GET}]
      backendRefs: [{name: api, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /v1/users/}, queryParams: [{name: debug, value: '1'}]}]
      backendRefs: [{name: api, port: 80}]
",
    );
    let res = for_node(&m, "x");
    let rc: RouteConfiguration = get(&res, ResourceType::Route, "api.ns.svc.cluster.local:80");
    let paths: Vec<String> = rc.virtual_hosts[0]
        .routes
        .iter()
        .map(|r| {
            format!(
                "{:?}",
                r.r#match.as_ref().unwrap().path_specifier.as_ref().unwrap()
            )
        })
        .collect();
    assert_eq!(
        paths,
        [
            r#"Path("/v1/health")"#,
            r#"Path("/v1/users")"#,
            r#"Prefix("/v1/users/")"#,
            r#"Path("/v1")"#,
            r#"Prefix("/v1/")"#,
        ]
    );
    let first = rc.virtual_hosts[0].routes[0].r#match.as_ref().unwrap();
    assert_eq!(first.headers[0].name, ":method");
    let users = rc.virtual_hosts[0].routes[1].r#match.as_ref().unwrap();
    assert_eq!(users.query_parameters[0].name, "debug");
}

#[test]
fn header_modifiers_become_route_header_options_with_literal_values() {
    let m = api_routed(
        "
    - filters:
        - type: RequestHeaderModifier
          requestHeaderModifier:
            set: [{name: x-env, value: '100%'}]
            add: [{name: x-a, value: '1'}]
            remove: [x-debug]
        - type: ResponseHeaderModifier
          responseHeaderModifier: {remove: [server]}
      backendRefs: [{name: api, port: 80}]
",
    );
    let res = for_node(&m, "x");
    let rc: RouteConfiguration = get(&res, ResourceType::Route, "api.ns.svc.cluster.local:80");
    let r = &rc.virtual_hosts[0].routes[0];
    let added: Vec<(String, String, i32)> = r
        .request_headers_to_add
        .iter()
        .map(|o| {
            let h = o.header.as_ref().unwrap();
            (h.key.clone(), h.value.clone(), o.append_action)
        })
        .collect();
    // Set overwrites (2), add appends (0); `%` is not a command operator.
    assert_eq!(
        added,
        [
            ("x-env".to_string(), "100%%".to_string(), 2),
            ("x-a".to_string(), "1".to_string(), 0)
        ]
    );
    assert_eq!(r.request_headers_to_remove, ["x-debug"]);
    assert!(r.response_headers_to_add.is_empty());
    assert_eq!(r.response_headers_to_remove, ["server"]);
}

/// URLRewrite and RequestRedirect per route Envoy gets: a prefix swap keeps the segment separator
/// on the `/old/` route, a full path is a whole-path regex rewrite, a redirect is a redirect action
/// with Gateway API's default 302.
#[test]
fn url_rewrites_and_redirects_become_route_and_redirect_actions() {
    use weft_proto::xds::config::route::v3::{redirect_action, route, route_action};
    let m = api_routed(
        "
    - matches: [{path: {type: PathPrefix, value: /old}}]
      filters: [{type: URLRewrite, urlRewrite: {hostname: api.example, path: {type: ReplacePrefixMatch, replacePrefixMatch: ''}}}]
      backendRefs: [{name: api, port: 80}]
    - matches: [{path: {type: Exact, value: /moved}}]
      filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /new}}}]
      backendRefs: [{name: api, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /legacy}}]
      filters: [{type: RequestRedirect, requestRedirect: {scheme: https, port: 8443, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}]
    - matches: [{path: {type: Exact, value: /gone}}]
      filters: [{type: RequestRedirect, requestRedirect: {hostname: elsewhere.example, statusCode: 301}}]
",
    );
    let res = for_node(&m, "x");
    let rc: RouteConfiguration = get(&res, ResourceType::Route, "api.ns.svc.cluster.local:80");
    let summary: Vec<String> = rc.virtual_hosts[0]
        .routes
        .iter()
        .map(|r| {
            let path = r.r#match.as_ref().unwrap().path_specifier.as_ref().unwrap();
            let action = match r.action.as_ref().unwrap() {
                route::Action::Route(a) => format!(
                    "forward prefix={:?} regex={:?} host={:?}",
                    a.prefix_rewrite,
                    a.regex_rewrite.as_ref().map(|r| (
                        r.pattern.as_ref().unwrap().regex.clone(),
                        r.substitution.clone()
                    )),
                    a.host_rewrite_specifier.as_ref().map(|h| match h {
                        route_action::HostRewriteSpecifier::HostRewriteLiteral(h) => h.clone(),
                        other => format!("{other:?}"),
                    }),
                ),
                route::Action::Redirect(r) => format!(
                    "redirect {:?} scheme={:?} host={:?} port={} path={:?}",
                    redirect_action::RedirectResponseCode::try_from(r.response_code).unwrap(),
                    r.scheme_rewrite_specifier,
                    r.host_redirect,
                    r.port_redirect,
                    r.path_rewrite_specifier,
                ),
                other => format!("{other:?}"),
            };
            format!("{path:?}: {action}")
        })
        .collect();
    assert_eq!(
        summary,
        [
            r#"Path("/moved"): forward prefix="" regex=Some(("^/.*$", "/new")) host=None"#,
            r#"Path("/gone"): redirect MovedPermanently scheme=None host="elsewhere.example" port=0 path=None"#,
            r#"Path("/legacy"): redirect Found scheme=Some(SchemeRedirect("https")) host="" port=8443 path=Some(PrefixRewrite("/v2"))"#,
            r#"Prefix("/legacy/"): redirect Found scheme=Some(SchemeRedirect("https")) host="" port=8443 path=Some(PrefixRewrite("/v2/"))"#,
            r#"Path("/old"): forward prefix="/" regex=None host=Some("api.example")"#,
            r#"Prefix("/old/"): forward prefix="/" regex=None host=Some("api.example")"#,
        ]
    );

    // On a port other than 80, a redirect that changes neither scheme nor port names the
    // Service's port: Envoy would otherwise send the client to port 80.
    let m = mesh(
        &(api_service("http", 8080)
            + "
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: ns}
spec:
  parentRefs: [{kind: Service, name: api}]
  rules:
    - filters: [{type: RequestRedirect, requestRedirect: {hostname: elsewhere.example}}]
"),
    );
    let res = for_node(&m, "x");
    let rc: RouteConfiguration = get(&res, ResourceType::Route, "api.ns.svc.cluster.local:8080");
    let Some(route::Action::Redirect(r)) = &rc.virtual_hosts[0].routes[0].action else {
        panic!("{rc:?}")
    };
    assert_eq!(
        (r.host_redirect.as_str(), r.port_redirect),
        ("elsewhere.example", 8080)
    );
}

/// A headless Service's listeners are at its pods' addresses and ask for the original
/// destination; a headless TCP port without endpoints gets no listener (Envoy refuses one without
/// an address), an HTTP one keeps its address-less API listener for proxyless gRPC.
#[test]
fn headless_service_listeners_sit_at_the_pods_and_keep_the_original_destination() {
    use weft_proto::xds::config::core::v3::address::Address;
    let m = mesh(
        "
apiVersion: v1
kind: Service
metadata: {name: db, namespace: ns}
spec: {clusterIP: None, ports: [{name: tcp-pg, port: 5432}, {name: http, port: 8080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: db-1, namespace: ns, labels: {kubernetes.io/service-name: db}}
addressType: IPv4
ports: [{name: tcp-pg, port: 5432}]
endpoints: [{addresses: [10.1.0.6]}, {addresses: [10.1.0.5]}, {addresses: [10.1.0.5]}]
",
    );
    let res = for_node(&m, "x");
    let l: Listener = get(&res, ResourceType::Listener, "db.ns.svc.cluster.local:5432");
    let addr = |a: Option<&weft_proto::xds::config::core::v3::Address>| match a
        .and_then(|a| a.address.as_ref())
    {
        Some(Address::SocketAddress(sa)) => format!("{}:{:?}", sa.address, sa.port_specifier),
        other => panic!("{other:?}"),
    };
    let mut all = vec![addr(l.address.as_ref())];
    all.extend(
        l.additional_addresses
            .iter()
            .map(|a| addr(a.address.as_ref())),
    );
    assert_eq!(
        all,
        [
            "10.1.0.5:Some(PortValue(5432))",
            "10.1.0.6:Some(PortValue(5432))"
        ]
    );
    let md = &l.metadata.unwrap().filter_metadata["weft"].fields;
    assert_eq!(md.len(), 1, "one key: maps encode in no fixed order");
    assert_eq!(
        md["protocol"].kind,
        Some(weft_proto::google::protobuf::value::Kind::StringValue(
            "tcp; destination=original".into()
        ))
    );
    // The HTTP port has no endpoints: no listener Envoy would refuse, and gRPC's API listener
    // without an address, as before.
    assert!(!names(&res, ResourceType::Listener).contains(&"db.ns.svc.cluster.local:8080"));
    let grpc = for_client(&m, "x", Client::Grpc);
    let http: Listener = get(
        &grpc,
        ResourceType::Listener,
        "db.ns.svc.cluster.local:8080",
    );
    assert!(http.address.is_none() && http.api_listener.is_some());

    let empty = mesh(
        "
apiVersion: v1
kind: Service
metadata: {name: db, namespace: ns}
spec: {clusterIP: None, ports: [{name: tcp-pg, port: 5432}]}
",
    );
    let res = for_node(&empty, "x");
    assert!(
        names(&res, ResourceType::Listener).is_empty(),
        "{:?}",
        names(&res, ResourceType::Listener)
    );
    assert_eq!(
        names(&res, ResourceType::Cluster),
        ["outbound|5432||db.ns.svc.cluster.local"]
    );
}

/// GRPCRoute precedence: an exact method first, then the service's prefix, then a method-only
/// match (a regex), and the empty catch-all last.
#[test]
fn grpcroute_matches_are_ordered_by_service_then_method() {
    let m = mesh(
        &(api_service("grpc", 50051)
            + "
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: g, namespace: ns}
spec:
  parentRefs: [{kind: Service, name: api}]
  rules:
    - backendRefs: [{name: api, port: 50051}]
    - matches: [{method: {method: List}}]
      backendRefs: [{name: api, port: 50051}]
    - matches: [{method: {service: pkg.Svc}}]
      backendRefs: [{name: api, port: 50051}]
    - matches: [{method: {service: pkg.Svc, method: Get}}]
      backendRefs: [{name: api, port: 50051}]
"),
    );
    let res = for_node(&m, "x");
    let rc: RouteConfiguration = get(&res, ResourceType::Route, "api.ns.svc.cluster.local:50051");
    let order: Vec<&str> = rc.virtual_hosts[0]
        .routes
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(order, ["ns/g#3", "ns/g#2", "ns/g#2", "ns/g#1", "ns/g#0"]);
}

/// A mirror is Envoy's mirror policy, its share a fraction of a million, and a Sidecar that lets
/// a proxy reach the mirrored Service brings the mirror's cluster along.
#[test]
fn request_mirrors_become_mirror_policies_and_come_along_in_scope() {
    let m = mesh(&(api_service("http", 80)
        + "
apiVersion: v1
kind: Service
metadata: {name: shadow, namespace: other}
spec: {clusterIP: 10.0.0.2, ports: [{name: http, port: 8080}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: ns}
spec:
  parentRefs: [{kind: Service, name: api}]
  rules:
    - filters: [{type: RequestMirror, requestMirror: {backendRef: {name: shadow, namespace: other, port: 8080}, percent: 10}}]
      backendRefs: [{name: api, port: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: c-0, namespace: ns, labels: {app: c}}
spec: {containers: [{name: c}]}
status: {podIP: 10.1.0.1}
---
apiVersion: weft.io/v1alpha1
kind: Sidecar
metadata: {name: c, namespace: ns}
spec: {egress: [./api]}
"),
    );
    let res = for_node(&m, "c-0.ns");
    let rc: RouteConfiguration = get(&res, ResourceType::Route, "api.ns.svc.cluster.local:80");
    let Some(route::Action::Route(a)) = &rc.virtual_hosts[0].routes[0].action else {
        panic!("{rc:?}")
    };
    let p = &a.request_mirror_policies[0];
    assert_eq!(p.cluster, "outbound|8080||shadow.other.svc.cluster.local");
    let share = p
        .runtime_fraction
        .as_ref()
        .unwrap()
        .default_value
        .as_ref()
        .unwrap();
    assert_eq!((share.numerator, share.denominator), (100_000, 2));
    assert!(
        names(&res, ResourceType::Cluster)
            .contains(&"outbound|8080||shadow.other.svc.cluster.local"),
        "{:?}",
        names(&res, ResourceType::Cluster)
    );
}

#[test]
fn translation_is_deterministic() {
    let a = for_node(&shop(), "web-0.shop");
    let b = for_node(&shop(), "web-0.shop");
    assert_eq!(a, b);
    // Every kind of listener metadata too (a map of two entries would encode in random order).
    let headless = mesh(
        "
apiVersion: v1
kind: Service
metadata: {name: db, namespace: ns}
spec: {clusterIP: None, ports: [{name: tcp-pg, port: 5432}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: db-1, namespace: ns, labels: {kubernetes.io/service-name: db}}
addressType: IPv4
ports: [{name: tcp-pg, port: 5432}]
endpoints: [{addresses: [10.1.0.5]}]
",
    );
    let first = for_node(&headless, "x");
    for _ in 0..8 {
        assert_eq!(for_node(&headless, "x"), first);
    }
}

#[test]
fn a_workload_without_ports_gets_no_inbound_listener() {
    // A listener without a filter chain is invalid (Envoy and weft-proxy both reject it).
    let m = mesh(
        "
apiVersion: v1
kind: Pod
metadata: {name: job-0, namespace: ns, labels: {app: job}}
spec: {containers: [{name: c}]}
status: {podIP: 10.1.0.9}
",
    );
    let res = for_node(&m, "job-0.ns");
    assert!(names(&res, ResourceType::Listener).is_empty());
    assert!(names(&res, ResourceType::Cluster).is_empty());
}

#[test]
fn a_backends_header_modifiers_ride_on_its_weighted_cluster() {
    let m = api_routed(
        "
    - matches: [{path: {type: PathPrefix, value: /split}}]
      filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-rule, value: r}]}}]
      backendRefs:
        - {name: api, port: 80, weight: 1, filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-backend, value: a}], remove: [x-drop]}}, {type: ResponseHeaderModifier, responseHeaderModifier: {add: [{name: x-via, value: a}]}}]}
        - {name: api, port: 80, weight: 1}
    - backendRefs:
        - {name: api, port: 80, filters: [{type: RequestHeaderModifier, requestHeaderModifier: {add: [{name: x-one, value: '1'}]}}]}
",
    );
    let res = for_node(&m, "x");
    let rc: RouteConfiguration = get(&res, ResourceType::Route, "api.ns.svc.cluster.local:80");
    let action = |i: usize| match &rc.virtual_hosts[0].routes[i].action {
        Some(route::Action::Route(a)) => a.clone(),
        other => panic!("{other:?}"),
    };
    let clusters = |a: RouteAction| match a.cluster_specifier {
        Some(route_action::ClusterSpecifier::WeightedClusters(w)) => w.clusters,
        other => panic!("not weighted: {other:?}"),
    };
    let keys = |h: &[weft_proto::xds::config::core::v3::HeaderValueOption]| -> Vec<String> {
        h.iter()
            .map(|o| o.header.as_ref().unwrap().key.clone())
            .collect()
    };
    // The split (two routes: exact `/split` and prefix `/split/`): the rule's edits on the
    // route, the backend's on its cluster.
    let split = clusters(action(0));
    assert_eq!(keys(&split[0].request_headers_to_add), ["x-backend"]);
    assert_eq!(split[0].request_headers_to_remove, ["x-drop"]);
    assert_eq!(keys(&split[0].response_headers_to_add), ["x-via"]);
    assert!(split[1].request_headers_to_add.is_empty());
    assert_eq!(
        keys(&rc.virtual_hosts[0].routes[0].request_headers_to_add),
        ["x-rule"]
    );
    // One backend with edits of its own: a weighted cluster of one.
    let last = rc.virtual_hosts[0].routes.len() - 1;
    let one = clusters(action(last));
    assert_eq!(one.len(), 1);
    assert_eq!(keys(&one[0].request_headers_to_add), ["x-one"]);
}

/// Gateway API's 500s as Envoy expresses them: a refused rule is a `direct_response`; an
/// unresolved backend's share goes to a cluster no client has, answered with
/// `cluster_not_found_response_code`.
#[test]
fn unresolved_backends_and_refused_rules_answer_500() {
    let yaml = api_routes(
        "
    - matches: [{path: {type: PathPrefix, value: /split}}]
      backendRefs: [{name: api, port: 80}, {name: gone, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /auth}}]
      filters: [{type: ExtensionRef, extensionRef: {group: example.com, kind: Auth, name: a}}]
      backendRefs: [{name: api, port: 80}]
    - backendRefs: [{name: api, port: 80}]
",
    );
    let mut objects = Objects::default();
    let mut warnings = Vec::new();
    registry::file::load_text(Path::new("t.yaml"), &yaml, &mut objects, &mut warnings).unwrap();
    let (m, warnings) = registry::build(&objects, TD);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    let res = for_node(&m, "x");
    let rc: RouteConfiguration = get(&res, ResourceType::Route, "api.ns.svc.cluster.local:80");
    let by_path = |p: &str| action_for_path(&rc, p);
    let route::Action::Route(split) = by_path("/split") else {
        panic!("split is not forwarded")
    };
    assert_eq!(
        split.cluster_not_found_response_code,
        route_action::ClusterNotFoundResponseCode::InternalServerError as i32
    );
    let Some(route_action::ClusterSpecifier::WeightedClusters(w)) = split.cluster_specifier else {
        panic!("not weighted")
    };
    let names: Vec<&str> = w.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "outbound|80||api.ns.svc.cluster.local",
            "unresolved|ns/gone|80"
        ]
    );
    assert!(
        !names[1..]
            .iter()
            .any(|n| res[&ResourceType::Cluster].contains_key(*n))
    );
    let route::Action::DirectResponse(d) = by_path("/auth") else {
        panic!("auth is not refused")
    };
    assert_eq!(d.status, 500);
    // A rule that resolves keeps Envoy's default.
    let last = rc.virtual_hosts[0].routes.last().unwrap();
    let Some(route::Action::Route(plain)) = &last.action else {
        panic!("{last:?}")
    };
    assert_eq!(plain.cluster_not_found_response_code, 0);
}

/// Gateway API timeouts: `0s` disables the request timeout (a TrafficPolicy's too); without
/// retries, `backendRequest` bounds the one attempt; with them it is the per-try timeout.
#[test]
fn request_and_backend_timeouts() {
    let policy = "
---
apiVersion: weft.io/v1alpha1
kind: TrafficPolicy
metadata: {name: tp, namespace: ns}
spec: {targetRefs: [{kind: Service, name: api}], timeout: 30s}
";
    let m = mesh(&format!(
        "{}{policy}",
        api_routes(
            "
    - matches: [{path: {type: Exact, value: /off}}]
      timeouts: {request: 0s}
      backendRefs: [{name: api, port: 80}]
    - matches: [{path: {type: Exact, value: /backend}}]
      timeouts: {request: 10s, backendRequest: 2s}
      backendRefs: [{name: api, port: 80}]
    - matches: [{path: {type: Exact, value: /retried}}]
      timeouts: {request: 10s, backendRequest: 2s}
      retry: {attempts: 2}
      backendRefs: [{name: api, port: 80}]
    - matches: [{path: {type: Exact, value: /policy}}]
      backendRefs: [{name: api, port: 80}]
"
        )
    ));
    let res = for_node(&m, "x");
    let rc: RouteConfiguration = get(&res, ResourceType::Route, "api.ns.svc.cluster.local:80");
    let action = |p: &str| match action_for_path(&rc, p) {
        route::Action::Route(a) => a,
        other => panic!("{other:?}"),
    };
    let secs = |a: &RouteAction| a.timeout.unwrap().seconds;
    assert_eq!(secs(&action("/off")), 0);
    assert!(action("/off").max_stream_duration.is_none());
    assert_eq!(secs(&action("/backend")), 2);
    let retried = action("/retried");
    assert_eq!(secs(&retried), 10);
    let per_try = retried.retry_policy.unwrap().per_try_timeout.unwrap();
    assert_eq!(per_try.seconds, 2);
    assert_eq!(secs(&action("/policy")), 30);
}

/// GEP-1294: a route from another namespace (a consumer route) is only its namespace's: a
/// proxy there gets the Service's route configuration with it first, then the producer's
/// routes; a proxy elsewhere gets the producer's alone.
#[test]
fn consumer_routes_apply_only_in_their_namespace_ahead_of_the_producers() {
    let yaml = "
apiVersion: v1
kind: Service
metadata: {name: api, namespace: ns}
spec: {clusterIP: 10.0.0.1, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: canary, namespace: ns}
spec: {clusterIP: 10.0.0.2, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Pod
metadata: {name: c-0, namespace: consumer}
spec: {containers: [{name: app}]}
status: {podIP: 10.2.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: o-0, namespace: other}
spec: {containers: [{name: app}]}
status: {podIP: 10.3.0.1}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: producer, namespace: ns}
spec:
  parentRefs: [{kind: Service, name: api, port: 80}]
  rules: [{matches: [{path: {type: PathPrefix, value: /v1}}], backendRefs: [{name: api, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: mine, namespace: consumer}
spec:
  parentRefs: [{kind: Service, name: api, namespace: ns, port: 80}]
  rules: [{backendRefs: [{name: canary, namespace: ns, port: 80}]}]
";
    let m = mesh(yaml);
    assert_eq!(m.consumers["consumer"], [Key::new("ns", "api")]);
    let route_names = |node: &str| -> Vec<String> {
        let res = for_node(&m, node);
        let rc: RouteConfiguration = get(&res, ResourceType::Route, "api.ns.svc.cluster.local:80");
        rc.virtual_hosts[0]
            .routes
            .iter()
            .map(|r| r.name.clone())
            .collect()
    };
    // The consumer's catch-all first, then the producer's /v1 (exact and prefix).
    assert_eq!(
        route_names("c-0.consumer"),
        ["consumer/mine#0", "ns/producer#0", "ns/producer#0"]
    );
    assert_eq!(route_names("o-0.other"), ["ns/producer#0", "ns/producer#0"]);
    assert_eq!(route_names("unknown"), ["ns/producer#0", "ns/producer#0"]);
}

/// The filter chains of a listener: (destination port, application protocols, filter name).
fn chains(l: &Listener) -> Vec<(Option<u32>, Vec<String>, &str)> {
    l.filter_chains
        .iter()
        .map(|c| {
            let m = c.filter_chain_match.clone().unwrap_or_default();
            let port = m.destination_port.map(|p| p.value);
            (port, m.application_protocols, c.filters[0].name.as_str())
        })
        .collect()
}

/// A port left to detection gets Envoy's protocol sniffing: the connection manager for what
/// `http_inspector` sniffs as HTTP, a `tcp_proxy` with the Service's idle timeout for the rest,
/// and connections that send nothing (server-first protocols) go on to it after 100 ms. Declared
/// ports keep one chain and no inspector.
#[test]
fn a_port_left_to_detection_gets_a_sniffed_http_chain_and_a_tcp_fallback() {
    let m = mesh(
        "
apiVersion: v1
kind: Pod
metadata: {name: c-0, namespace: ns, labels: {app: c}}
spec: {containers: [{name: c, ports: [{name: web, containerPort: 8080}, {name: http, containerPort: 8081}]}]}
status: {podIP: 10.1.0.1}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: ns}
spec: {clusterIP: 10.96.0.1, ports: [{name: web, port: 80}, {name: http-admin, port: 81}]}
---
apiVersion: weft.io/v1alpha1
kind: TrafficPolicy
metadata: {name: tp, namespace: ns}
spec: {targetRefs: [{kind: Service, name: api}], connectionPool: {idleTimeout: 5s}}
",
    );
    let res = for_node(&m, "c-0.ns");
    let hcm = "envoy.filters.network.http_connection_manager";
    let tcp = "envoy.filters.network.tcp_proxy";
    let sniffed = || vec!["http/1.0".to_string(), "http/1.1".into(), "h2c".into()];
    let inspected = |l: &Listener| {
        let names: Vec<String> = l.listener_filters.iter().map(|f| f.name.clone()).collect();
        (
            names,
            l.listener_filters_timeout,
            l.continue_on_listener_filters_timeout,
        )
    };
    let timeout = Some(super::duration(std::time::Duration::from_millis(100)));

    let detect: Listener = get(&res, ResourceType::Listener, "api.ns.svc.cluster.local:80");
    assert_eq!(
        chains(&detect),
        [(None, sniffed(), hcm), (None, vec![], tcp)]
    );
    assert_eq!(
        inspected(&detect),
        (
            vec!["envoy.filters.listener.http_inspector".to_string()],
            timeout,
            true
        )
    );
    let Some(filter::ConfigType::TypedConfig(any)) =
        &detect.filter_chains[1].filters[0].config_type
    else {
        panic!()
    };
    let proxy = TcpProxy::decode(&any.value[..]).unwrap();
    assert_eq!(
        proxy.idle_timeout,
        Some(super::duration(std::time::Duration::from_secs(5)))
    );
    assert_eq!(
        proxy.cluster_specifier,
        Some(tcp_proxy::ClusterSpecifier::Cluster(
            "outbound|80||api.ns.svc.cluster.local".into()
        ))
    );

    let declared: Listener = get(&res, ResourceType::Listener, "api.ns.svc.cluster.local:81");
    assert_eq!(chains(&declared), [(None, vec![], hcm)]);
    assert_eq!(inspected(&declared), (Vec::<String>::new(), None, false));

    let inbound: Listener = get(&res, ResourceType::Listener, "inbound");
    // The inbound side says so, as Envoy reads it, and the Service listeners the other way.
    use weft_proto::xds::config::core::v3::TrafficDirection;
    assert_eq!(inbound.traffic_direction, TrafficDirection::Inbound as i32);
    assert_eq!(
        declared.traffic_direction,
        TrafficDirection::Outbound as i32
    );
    assert_eq!(
        chains(&inbound),
        [
            (Some(8080), sniffed(), hcm),
            (Some(8080), vec![], tcp),
            (Some(8081), vec![], hcm)
        ]
    );
    assert_eq!(
        inspected(&inbound),
        (
            vec!["envoy.filters.listener.http_inspector".to_string()],
            timeout,
            true
        )
    );
}

/// A TCPRoute's split is the `tcp_proxy`'s weighted clusters (an unresolved backend under a
/// cluster nobody has, weight-0 ones left out); a consumer TCPRoute gives its namespace's
/// proxies a listener of their own under the same name, and its backends come along in a
/// Sidecar's scope.
#[test]
fn tcp_routes_become_weighted_tcp_proxies_and_consumer_listeners() {
    let m = mesh("
apiVersion: v1
kind: Service
metadata: {name: db, namespace: ns}
spec: {clusterIP: 10.0.0.1, ports: [{name: tcp-pg, port: 5432}]}
---
apiVersion: v1
kind: Service
metadata: {name: db-v2, namespace: ns}
spec: {clusterIP: 10.0.0.2, ports: [{name: tcp-pg, port: 5432}]}
---
apiVersion: v1
kind: Service
metadata: {name: local, namespace: team}
spec: {clusterIP: 10.0.0.3, ports: [{name: tcp-pg, port: 5432}]}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: canary, namespace: ns}
spec:
  parentRefs: [{kind: Service, name: db}]
  rules: [{backendRefs: [{name: db, port: 5432, weight: 90}, {name: db-v2, port: 5432, weight: 10}, {name: db-v2, port: 5432, weight: 0}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: mine, namespace: team}
spec:
  parentRefs: [{kind: Service, name: db, namespace: ns}]
  rules: [{backendRefs: [{name: local, port: 5432}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: t-0, namespace: team}
spec: {containers: [{name: app}]}
status: {podIP: 10.2.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: o-0, namespace: other, labels: {app: o}}
spec: {containers: [{name: app}]}
status: {podIP: 10.3.0.1}
---
apiVersion: weft.io/v1alpha1
kind: Sidecar
metadata: {name: o, namespace: other}
spec: {egress: [ns/db]}
");
    let specifier = |node: &str| {
        let res = for_node(&m, node);
        let l: Listener = get(&res, ResourceType::Listener, "db.ns.svc.cluster.local:5432");
        let Some(filter::ConfigType::TypedConfig(any)) = &l.filter_chains[0].filters[0].config_type
        else {
            panic!()
        };
        let clusters = names(&res, ResourceType::Cluster)
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
        (
            TcpProxy::decode(&any.value[..]).unwrap().cluster_specifier,
            clusters,
        )
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
        Some(tcp_proxy::ClusterSpecifier::Cluster(
            "outbound|5432||local.team.svc.cluster.local".into()
        ))
    );
}

/// A consumer TCPRoute on a port left to detection makes that port opaque TCP, split as it says,
/// for its namespace's proxies (others still sniff it), but gRPC's clients there keep the
/// `api_listener` they read.
#[test]
fn a_consumer_tcp_route_leaves_grpc_clients_their_api_listener() {
    let m = mesh(
        "
apiVersion: v1
kind: Service
metadata: {name: api, namespace: ns}
spec: {clusterIP: 10.0.0.1, ports: [{port: 9000}]}
---
apiVersion: v1
kind: Service
metadata: {name: other, namespace: team}
spec: {clusterIP: 10.0.0.2, ports: [{port: 9000}]}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: mine, namespace: team}
spec:
  parentRefs: [{kind: Service, name: api, namespace: ns}]
  rules: [{backendRefs: [{name: other, port: 9000}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: t-0, namespace: team}
spec: {containers: [{name: app}]}
status: {podIP: 10.2.0.1}
",
    );
    let name = "api.ns.svc.cluster.local:9000";
    let grpc = for_client(&m, "t-0.team", Client::Grpc);
    let l: Listener = get(&grpc, ResourceType::Listener, name);
    assert!(l.api_listener.is_some(), "{l:?}");
    let envoy = for_client(&m, "t-0.team", Client::Envoy);
    let l: Listener = get(&envoy, ResourceType::Listener, name);
    assert!(l.api_listener.is_none());
    assert_eq!(
        chains(&l),
        [(None, vec![], "envoy.filters.network.tcp_proxy")]
    );
    assert!(l.listener_filters.is_empty());
    let elsewhere: Listener = get(&for_node(&m, "unknown"), ResourceType::Listener, name);
    assert_eq!(elsewhere.filter_chains.len(), 2);
    let Some(filter::ConfigType::TypedConfig(any)) = &l.filter_chains[0].filters[0].config_type
    else {
        panic!()
    };
    assert_eq!(
        TcpProxy::decode(&any.value[..]).unwrap().cluster_specifier,
        Some(tcp_proxy::ClusterSpecifier::Cluster(
            "outbound|9000||other.team.svc.cluster.local".into()
        ))
    );
}

/// A producer TCPRoute makes a port left to detection opaque TCP for every proxy, but a
/// namespace with consumer HTTP routes on it keeps sniffing, for its routes to apply, and
/// gRPC's clients keep their `api_listener`.
#[test]
fn a_producer_tcp_route_makes_a_detected_port_tcp_but_for_consumer_http_routes() {
    let m = mesh(
        "
apiVersion: v1
kind: Service
metadata: {name: api, namespace: ns}
spec: {clusterIP: 10.0.0.1, ports: [{port: 9000}]}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: all, namespace: ns}
spec:
  parentRefs: [{kind: Service, name: api}]
  rules: [{backendRefs: [{name: api, port: 9000}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: mine, namespace: team}
spec:
  parentRefs: [{kind: Service, name: api, namespace: ns}]
  rules: [{backendRefs: [{name: api, namespace: ns, port: 9000}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: t-0, namespace: team}
spec: {containers: [{name: app}]}
status: {podIP: 10.2.0.1}
",
    );
    let name = "api.ns.svc.cluster.local:9000";
    let tcp = "envoy.filters.network.tcp_proxy";
    let shared: Listener = get(&for_node(&m, "unknown"), ResourceType::Listener, name);
    assert_eq!(chains(&shared), [(None, vec![], tcp)]);
    // gRPC's clients read only routes, never the `tcp_proxy`: they keep their api_listener.
    let grpc: Listener = get(
        &for_client(&m, "unknown", Client::Grpc),
        ResourceType::Listener,
        name,
    );
    assert!(grpc.api_listener.is_some());
    let team: Listener = get(&for_node(&m, "t-0.team"), ResourceType::Listener, name);
    assert_eq!(team.filter_chains.len(), 2);
    assert_eq!(
        team.filter_chains[0].filters[0].name,
        "envoy.filters.network.http_connection_manager"
    );
}
