//! RDS: a Service port's rules as one route configuration.

use weft_proto::xds::config::core::v3::HeaderValueOption;
use weft_proto::xds::config::route::v3::{
    RouteAction, RouteConfiguration, redirect_action, route, route_action, route_match,
};

use super::*;
use crate::model::{Mirror, PathModifier, Redirect, RouteRetry, UrlRewrite};

const API: &str = "api.ns.svc.cluster.local:80";

/// Service `api` (namespace `ns`) with one HTTP port, 80, and `rules` on it.
fn api(rules: impl IntoIterator<Item = RouteRule>) -> ServiceBuilder {
    service("ns", "api")
        .ip("10.0.0.1")
        .port(80, Protocol::Http1)
        .routes(rules)
}

/// The route configuration of port 80 of Service `api` with `rules`.
fn api_routes(rules: impl IntoIterator<Item = RouteRule>) -> RouteConfiguration {
    route_config(&of_service(api(rules)), API)
}

fn forward(a: Option<&route::Action>) -> &RouteAction {
    match a {
        Some(route::Action::Route(a)) => a,
        other => panic!("not forwarded: {other:?}"),
    }
}

fn keys(h: &[HeaderValueOption]) -> Vec<String> {
    h.iter()
        .map(|o| o.header.as_ref().unwrap().key.clone())
        .collect()
}

#[test]
fn a_port_without_routes_sends_everything_to_the_service_without_timeout() {
    let res = of_service(
        service("ns", "web")
            .ip("10.0.0.1")
            .port(80, Protocol::Http1),
    );
    let rc = route_config(&res, "web.ns.svc.cluster.local:80");
    let r = &rc.virtual_hosts[0].routes[0];
    assert_eq!(rc.virtual_hosts[0].routes.len(), 1);
    assert_eq!(
        r.r#match.as_ref().unwrap().path_specifier,
        Some(route_match::PathSpecifier::Prefix("/".into()))
    );
    let a = forward(r.action.as_ref());
    assert_eq!(
        a.cluster_specifier,
        Some(route_action::ClusterSpecifier::Cluster(
            "outbound|80||web.ns.svc.cluster.local".into()
        ))
    );
    // Zero, not unset: Envoy's unset default (15 s) would cut streams.
    assert_eq!(a.timeout.unwrap().seconds, 0);
}

#[test]
fn a_canary_has_its_header_match_first_then_the_weighted_split() {
    // The split is the first rule; both match every path, so the header match wins by
    // precedence alone.
    let split = RouteRule {
        timeout: secs(5),
        retry: Some(RouteRetry {
            attempts: 2,
            codes: vec![503],
            backoff: Some(Duration::from_millis(25)),
        }),
        ..rule(
            "shop/reviews#0",
            [prefix("/")],
            [
                weighted("shop", "reviews-v1", 9080, 90),
                weighted("shop", "reviews-v2", 9080, 10),
            ],
        )
    };
    let testers = rule(
        "shop/reviews#1",
        [RouteMatch {
            headers: vec![header("x-canary", "yes")],
            ..prefix("/")
        }],
        [to("shop", "reviews-v2", 9080)],
    );
    let res = of_service(
        service("shop", "reviews")
            .port(9080, Protocol::Http1)
            .routes([split, testers]),
    );
    let rc = route_config(&res, "reviews.shop.svc.cluster.local:9080");
    let routes = &rc.virtual_hosts[0].routes;
    assert_eq!(routes.len(), 2);
    let m = routes[0].r#match.as_ref().unwrap();
    assert_eq!(m.headers[0].name, "x-canary");
    let a = forward(routes[1].action.as_ref());
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
    let backoff = retry.retry_back_off.as_ref().unwrap();
    assert_eq!(backoff.base_interval.unwrap().nanos, 25_000_000);
}

#[test]
fn a_path_prefix_is_segment_aware_and_precedence_orders_matches() {
    let rc = api_routes([
        rule("ns/r#0", [prefix("/v1")], [to("ns", "api", 80)]),
        rule(
            "ns/r#1",
            [RouteMatch {
                method: Some("GET".into()),
                ..exact("/v1/health")
            }],
            [to("ns", "api", 80)],
        ),
        rule(
            "ns/r#2",
            [RouteMatch {
                query: vec![query("debug", "1")],
                ..prefix("/v1/users")
            }],
            [to("ns", "api", 80)],
        ),
    ]);
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

/// GRPCRoute precedence, on the paths its method matches become: an exact method first, then
/// the service's prefix, then a method-only match (a regex), and the empty catch-all last.
#[test]
fn grpc_method_matches_are_ordered_by_service_then_method() {
    let grpc = |i: usize, m: RouteMatch| rule(&format!("ns/g#{i}"), [m], [to("ns", "api", 50051)]);
    let res = of_service(service("ns", "api").port(50051, Protocol::Grpc).routes([
        grpc(0, prefix("/")),
        grpc(
            1,
            RouteMatch {
                path: Some(PathMatch::Regex("/[^/]+/List".into())),
                ..Default::default()
            },
        ),
        grpc(2, prefix("/pkg.Svc")),
        grpc(3, exact("/pkg.Svc/Get")),
    ]));
    let rc = route_config(&res, "api.ns.svc.cluster.local:50051");
    let order: Vec<&str> = rc.virtual_hosts[0]
        .routes
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(order, ["ns/g#3", "ns/g#2", "ns/g#2", "ns/g#1", "ns/g#0"]);
}

#[test]
fn header_modifiers_become_route_header_options_with_literal_values() {
    let rc = api_routes([RouteRule {
        request_headers: HeaderEdits {
            set: pairs(&[("x-env", "100%")]),
            add: pairs(&[("x-a", "1")]),
            remove: vec!["x-debug".into()],
        },
        response_headers: HeaderEdits {
            remove: vec!["server".into()],
            ..Default::default()
        },
        ..rule("ns/r#0", [prefix("/")], [to("ns", "api", 80)])
    }]);
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

#[test]
fn a_backends_header_modifiers_ride_on_its_weighted_cluster() {
    let edited = Backend {
        request_headers: HeaderEdits {
            set: pairs(&[("x-backend", "a")]),
            remove: vec!["x-drop".into()],
            ..Default::default()
        },
        response_headers: HeaderEdits {
            add: pairs(&[("x-via", "a")]),
            ..Default::default()
        },
        ..to("ns", "api", 80)
    };
    let split = RouteRule {
        request_headers: HeaderEdits {
            set: pairs(&[("x-rule", "r")]),
            ..Default::default()
        },
        ..rule("ns/r#0", [prefix("/split")], [edited, to("ns", "api", 80)])
    };
    let one = Backend {
        request_headers: HeaderEdits {
            add: pairs(&[("x-one", "1")]),
            ..Default::default()
        },
        ..to("ns", "api", 80)
    };
    let rc = api_routes([split, rule("ns/r#1", [prefix("/")], [one])]);
    let clusters = |i: usize| {
        let a = forward(rc.virtual_hosts[0].routes[i].action.as_ref());
        match a.cluster_specifier.clone() {
            Some(route_action::ClusterSpecifier::WeightedClusters(w)) => w.clusters,
            other => panic!("not weighted: {other:?}"),
        }
    };
    // The split (two routes: exact `/split` and prefix `/split/`): the rule's edits on the
    // route, the backend's on its cluster.
    let split = clusters(0);
    assert_eq!(keys(&split[0].request_headers_to_add), ["x-backend"]);
    assert_eq!(split[0].request_headers_to_remove, ["x-drop"]);
    assert_eq!(keys(&split[0].response_headers_to_add), ["x-via"]);
    assert!(split[1].request_headers_to_add.is_empty());
    assert_eq!(
        keys(&rc.virtual_hosts[0].routes[0].request_headers_to_add),
        ["x-rule"]
    );
    // One backend with edits of its own: a weighted cluster of one.
    let one = clusters(rc.virtual_hosts[0].routes.len() - 1);
    assert_eq!(one.len(), 1);
    assert_eq!(keys(&one[0].request_headers_to_add), ["x-one"]);
}

/// URLRewrite and RequestRedirect per route Envoy gets: a prefix swap keeps the segment separator
/// on the `/old/` route, a full path is a whole-path regex rewrite, a redirect is a redirect action.
#[test]
fn url_rewrites_and_redirects_become_route_and_redirect_actions() {
    let redirect = |status| Redirect {
        scheme: None,
        hostname: None,
        path: None,
        port: None,
        status,
    };
    let rc = api_routes([
        RouteRule {
            rewrite: Some(UrlRewrite {
                hostname: Some("api.example".into()),
                path: Some(PathModifier::Prefix("/".into())),
            }),
            ..rule("ns/r#0", [prefix("/old")], [to("ns", "api", 80)])
        },
        RouteRule {
            rewrite: Some(UrlRewrite {
                hostname: None,
                path: Some(PathModifier::Full("/new".into())),
            }),
            ..rule("ns/r#1", [exact("/moved")], [to("ns", "api", 80)])
        },
        RouteRule {
            redirect: Some(Redirect {
                scheme: Some("https".into()),
                port: Some(8443),
                path: Some(PathModifier::Prefix("/v2".into())),
                ..redirect(302)
            }),
            ..rule("ns/r#2", [prefix("/legacy")], [])
        },
        RouteRule {
            redirect: Some(Redirect {
                hostname: Some("elsewhere.example".into()),
                ..redirect(301)
            }),
            ..rule("ns/r#3", [exact("/gone")], [])
        },
    ]);
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
}

/// A redirect that changes neither scheme nor port names the Service's port, unless it is 80:
/// Envoy would otherwise send the client to port 80. A changed scheme goes to its own port.
#[test]
fn a_redirect_keeps_the_service_port_unless_it_changes_scheme_or_port() {
    let cases = [
        // (service port, scheme, port) -> port_redirect
        (8080, None, None, 8080),
        (80, None, None, 0),
        (8080, Some("https"), None, 0),
        (8080, None, Some(9090), 9090),
    ];
    for (service_port, scheme, port, want) in cases {
        let redirect = Redirect {
            scheme: scheme.map(String::from),
            hostname: Some("elsewhere.example".into()),
            path: None,
            port,
            status: 302,
        };
        let res = of_service(
            service("ns", "api")
                .port(service_port, Protocol::Http1)
                .routes([RouteRule {
                    redirect: Some(redirect),
                    ..rule("ns/r#0", [prefix("/")], [])
                }]),
        );
        let rc = route_config(&res, &format!("api.ns.svc.cluster.local:{service_port}"));
        let Some(route::Action::Redirect(r)) = &rc.virtual_hosts[0].routes[0].action else {
            panic!("{rc:?}")
        };
        assert_eq!(
            (r.host_redirect.as_str(), r.port_redirect),
            ("elsewhere.example", want),
            "{service_port} {scheme:?} {port:?}"
        );
    }
}

/// A mirror is Envoy's mirror policy; a share below all of them a fraction of a million.
#[test]
fn request_mirrors_become_mirror_policies() {
    use weft_proto::xds::r#type::v3::fractional_percent::DenominatorType;
    let cases = [
        (100_000, Some((100_000, DenominatorType::Million as i32))),
        (1_000_000, None),
    ];
    for (per_million, want) in cases {
        let rc = api_routes([RouteRule {
            mirrors: vec![Mirror {
                service: Key::new("other", "shadow"),
                port: 8080,
                per_million,
            }],
            ..rule("ns/r#0", [prefix("/")], [to("ns", "api", 80)])
        }]);
        let a = forward(rc.virtual_hosts[0].routes[0].action.as_ref());
        let p = &a.request_mirror_policies[0];
        assert_eq!(p.cluster, "outbound|8080||shadow.other.svc.cluster.local");
        let share = p.runtime_fraction.as_ref().map(|f| {
            let f = f.default_value.as_ref().unwrap();
            (f.numerator, f.denominator)
        });
        assert_eq!(share, want, "{per_million}");
    }
}

/// Gateway API's failure statuses as Envoy expresses them: a refused rule is a
/// `direct_response`; an unresolved backend's share goes to a cluster no client has, answered
/// with `cluster_not_found_response_code` (500 for an HTTPRoute, 503 for a GRPCRoute).
#[test]
fn unresolved_backends_and_refused_rules_answer_their_failure_status() {
    let gone = Backend {
        unresolved: true,
        ..to("ns", "gone", 80)
    };
    for status in [500, 503] {
        let split = RouteRule {
            failure_status: status,
            ..rule(
                "ns/r#0",
                [prefix("/split")],
                [to("ns", "api", 80), gone.clone()],
            )
        };
        let refused = RouteRule {
            refused: Some("unsupported filters: ExtensionRef".into()),
            failure_status: status,
            ..rule("ns/r#1", [prefix("/auth")], [to("ns", "api", 80)])
        };
        let res = of_service(api([
            split,
            refused,
            rule("ns/r#2", [prefix("/")], [to("ns", "api", 80)]),
        ]));
        let rc = route_config(&res, API);
        let route::Action::Route(split) = action_for_path(&rc, "/split") else {
            panic!("split is not forwarded")
        };
        let not_found = match status {
            500 => route_action::ClusterNotFoundResponseCode::InternalServerError,
            _ => route_action::ClusterNotFoundResponseCode::ServiceUnavailable,
        };
        assert_eq!(split.cluster_not_found_response_code, not_found as i32);
        let Some(route_action::ClusterSpecifier::WeightedClusters(w)) = split.cluster_specifier
        else {
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
        assert!(!res[&ResourceType::Cluster].contains_key(names[1]));
        let route::Action::DirectResponse(d) = action_for_path(&rc, "/auth") else {
            panic!("auth is not refused")
        };
        assert_eq!(d.status, u32::from(status));
        // A rule that resolves keeps Envoy's default.
        let last = rc.virtual_hosts[0].routes.last().unwrap();
        assert_eq!(
            forward(last.action.as_ref()).cluster_not_found_response_code,
            0
        );
    }
}

/// Gateway API timeouts: zero disables the request timeout (a TrafficPolicy's too); without
/// retries, the backend timeout bounds the one attempt; with them it is the per-try timeout;
/// a rule that sets none takes the TrafficPolicy's.
#[test]
fn request_and_backend_timeouts() {
    let retry = RouteRetry {
        attempts: 2,
        codes: Vec::new(),
        backoff: None,
    };
    let cases = [
        // (request, backend request, retried) -> (timeout, per-try timeout)
        (Some(Duration::ZERO), None, false, (0, None)),
        (secs(10), secs(2), false, (2, None)),
        (secs(10), secs(2), true, (10, Some(2))),
        (None, None, false, (30, None)),
    ];
    for (timeout, backend_timeout, retried, want) in cases {
        let res = of_service(
            api([RouteRule {
                timeout,
                backend_timeout,
                retry: retried.then(|| retry.clone()),
                ..rule("ns/r#0", [prefix("/")], [to("ns", "api", 80)])
            }])
            .policy(TrafficPolicy {
                timeout: secs(30),
                ..Default::default()
            }),
        );
        let rc = route_config(&res, API);
        let a = forward(rc.virtual_hosts[0].routes[0].action.as_ref());
        let per_try = a
            .retry_policy
            .as_ref()
            .and_then(|r| r.per_try_timeout)
            .map(|t| t.seconds);
        let case = format!("{timeout:?} {backend_timeout:?} {retried}");
        assert_eq!((a.timeout.unwrap().seconds, per_try), want, "{case}");
        // No timeout, no stream bound either.
        assert_eq!(a.max_stream_duration.is_some(), want.0 != 0, "{case}");
    }
}

/// GEP-1294: a route from another namespace (a consumer route) is only its namespace's: a
/// proxy there gets the Service's route configuration with it first, then the producer's
/// routes; a proxy elsewhere gets the producer's alone.
#[test]
fn consumer_routes_apply_only_in_their_namespace_ahead_of_the_producers() {
    let m = mesh()
        .service(
            api([rule(
                "ns/producer#0",
                [prefix("/v1")],
                [to("ns", "api", 80)],
            )])
            .consumer_routes(
                "consumer",
                [rule(
                    "consumer/mine#0",
                    [prefix("/")],
                    [to("ns", "canary", 80)],
                )],
            ),
        )
        .service(
            service("ns", "canary")
                .ip("10.0.0.2")
                .port(80, Protocol::Http1),
        )
        .workload(workload("consumer", "c-0", "10.2.0.1"))
        .workload(workload("other", "o-0", "10.3.0.1"))
        .build();
    let route_names = |node: &str| -> Vec<String> {
        let rc = route_config(&for_node(&m, node), API);
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
