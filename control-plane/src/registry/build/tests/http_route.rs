//! What HTTPRoute rules become: matches, filters, timeouts, and whose routes they are.

use super::*;

/// A mesh of Service `api` (port 80, `http`) and HTTPRoute `ns/r` on it with `rules` (YAML
/// flow list items), with no warning.
fn api_rules(rules: &str) -> Vec<RouteRule> {
    let (mesh, warnings) = build_yaml(&format!(
        "{API}---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
metadata: {{name: r, namespace: ns}}\n\
spec: {{parentRefs: [{{kind: Service, name: api}}], rules: [{rules}]}}\n"
    ));
    assert!(warnings.is_empty(), "{warnings:?}");
    mesh.services[&Key::new("ns", "api")].ports[0]
        .routes
        .clone()
}

/// Path matches as Gateway API reads them: a prefix is segment-wise, so a trailing `/` says
/// nothing (and `/` alone, or no path, is every path); an exact path and a regex stay as
/// written; a method and query parameters ride along.
#[test]
fn path_matches_read_as_gateway_api_defines_them() {
    let cases: &[(&str, Option<PathMatch>)] = &[
        (
            "{path: {type: PathPrefix, value: /v1/users/}}",
            Some(PathMatch::Prefix("/v1/users".into())),
        ),
        (
            "{path: {type: PathPrefix, value: /v1}}",
            Some(PathMatch::Prefix("/v1".into())),
        ),
        (
            "{path: {type: PathPrefix, value: /}}",
            Some(PathMatch::Prefix("/".into())),
        ),
        ("{path: {value: /a/}}", Some(PathMatch::Prefix("/a".into()))),
        ("{method: GET}", Some(PathMatch::Prefix("/".into()))),
        (
            "{path: {type: Exact, value: /v1/health/}}",
            Some(PathMatch::Exact("/v1/health/".into())),
        ),
        (
            "{path: {type: RegularExpression, value: '/v[0-9]+'}}",
            Some(PathMatch::Regex("/v[0-9]+".into())),
        ),
    ];
    for (m, want) in cases {
        let rules = api_rules(&format!(
            "{{matches: [{m}], backendRefs: [{{name: api, port: 80}}]}}"
        ));
        assert_eq!(&rules[0].matches[0].path, want, "{m}");
    }
    let rules = api_rules(
        "{matches: [{path: {type: Exact, value: /v1/health}, method: GET, queryParams: [{name: debug, value: '1'}]}], \
backendRefs: [{name: api, port: 80}]}",
    );
    let m = &rules[0].matches[0];
    assert_eq!(m.method.as_deref(), Some("GET"));
    assert_eq!(
        m.query,
        [QueryMatch {
            name: "debug".into(),
            value: StringMatch::Exact("1".into()),
        }]
    );
}

/// The URLRewrite and RequestRedirect filters a rule may have: an empty prefix replacement is
/// `/` (the prefix dropped); a redirect's status is 302 unless it says otherwise.
#[test]
fn url_rewrites_and_redirects_read_as_gateway_api_defines_them() {
    let rules = api_rules(
        "{matches: [{path: {type: PathPrefix, value: /old}}], \
filters: [{type: URLRewrite, urlRewrite: {hostname: api.example, path: {type: ReplacePrefixMatch, replacePrefixMatch: ''}}}], \
backendRefs: [{name: api, port: 80}]}, \
{matches: [{path: {type: Exact, value: /moved}}], \
filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /new}}}], \
backendRefs: [{name: api, port: 80}]}, \
{matches: [{path: {type: PathPrefix, value: /legacy}}], \
filters: [{type: RequestRedirect, requestRedirect: {scheme: https, port: 8443, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}]}, \
{matches: [{path: {type: Exact, value: /gone}}], \
filters: [{type: RequestRedirect, requestRedirect: {hostname: elsewhere.example, statusCode: 301}}]}",
    );
    assert_eq!(
        rules[0].rewrite,
        Some(UrlRewrite {
            hostname: Some("api.example".into()),
            path: Some(PathModifier::Prefix("/".into())),
        })
    );
    assert_eq!(
        rules[1].rewrite,
        Some(UrlRewrite {
            hostname: None,
            path: Some(PathModifier::Full("/new".into())),
        })
    );
    assert_eq!(
        rules[2].redirect,
        Some(Redirect {
            scheme: Some("https".into()),
            hostname: None,
            path: Some(PathModifier::Prefix("/v2".into())),
            port: Some(8443),
            status: 302,
        })
    );
    assert_eq!(
        rules[3].redirect,
        Some(Redirect {
            scheme: None,
            hostname: Some("elsewhere.example".into()),
            path: None,
            port: None,
            status: 301,
        })
    );
    // A redirect forwards nothing.
    assert!(rules[2].backends.is_empty() && rules[3].backends.is_empty());
}

/// Gateway API timeouts: `0s` is kept (it turns the request timeout off, a TrafficPolicy's
/// too), `backendRequest` is the per-attempt timeout; a TrafficPolicy's `timeout` is the
/// Service's default.
#[test]
fn request_and_backend_timeouts_and_a_policys_default() {
    let policy = "---\napiVersion: weft.io/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: tp, namespace: ns}\n\
spec: {targetRefs: [{kind: Service, name: api}], timeout: 30s}\n";
    let route = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: ns}\n\
spec: {parentRefs: [{kind: Service, name: api}], rules: [\
{timeouts: {request: 0s}, backendRefs: [{name: api, port: 80}]}, \
{timeouts: {request: 10s, backendRequest: 2s}, retry: {attempts: 2}, backendRefs: [{name: api, port: 80}]}, \
{backendRefs: [{name: api, port: 80}]}]}\n";
    let (mesh, warnings) = build_yaml(&format!("{API}{policy}{route}"));
    assert!(warnings.is_empty(), "{warnings:?}");
    let api = &mesh.services[&Key::new("ns", "api")];
    assert_eq!(
        api.policy.as_ref().unwrap().timeout,
        Some(Duration::from_secs(30))
    );
    let got: Vec<(Option<Duration>, Option<Duration>, Option<u32>)> = api.ports[0]
        .routes
        .iter()
        .map(|r| {
            (
                r.timeout,
                r.backend_timeout,
                r.retry.as_ref().map(|r| r.attempts),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (Some(Duration::ZERO), None, None),
            (
                Some(Duration::from_secs(10)),
                Some(Duration::from_secs(2)),
                Some(2)
            ),
            (None, None, None),
        ]
    );
}

/// A filter weft cannot apply (an ExtensionRef, say an auth filter) refuses its rule, which
/// answers 500 rather than forwarding unchecked; the other rules stand.
#[test]
fn an_extension_ref_refuses_its_rule() {
    let doc = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: ns}\n\
spec: {parentRefs: [{kind: Service, name: api}], rules: [\
{matches: [{path: {type: PathPrefix, value: /auth}}], \
filters: [{type: ExtensionRef, extensionRef: {group: example.com, kind: Auth, name: a}}], \
backendRefs: [{name: api, port: 80}]}, \
{backendRefs: [{name: api, port: 80}]}]}\n";
    let (mesh, warnings) = build_yaml(&format!("{API}---\n{doc}"));
    assert_eq!(
        warnings,
        [
            "HTTPRoute ns/r: unsupported filters: ExtensionRef; the rule answers 500 instead of forwarding"
        ]
    );
    let routes = &mesh.services[&Key::new("ns", "api")].ports[0].routes;
    let refused: Vec<(Option<&str>, u16)> = routes
        .iter()
        .map(|r| (r.refused.as_deref(), r.failure_status))
        .collect();
    assert_eq!(
        refused,
        [
            (Some("unsupported filters: ExtensionRef"), 500),
            (None, 500)
        ]
    );
}

/// GEP-1294: an HTTPRoute in another namespace than its Service's is a consumer route, only
/// for its own namespace's clients, and the Mesh lists the Service under that namespace; the
/// producer's routes stay everyone's.
#[test]
fn a_route_from_another_namespace_is_a_consumer_route() {
    let yaml = "apiVersion: v1
kind: Service
metadata: {name: api, namespace: ns}
spec: {clusterIP: 10.0.0.1, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: canary, namespace: ns}
spec: {clusterIP: 10.0.0.2, ports: [{name: http, port: 80}]}
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
    let (mesh, warnings) = build_yaml(yaml);
    assert!(warnings.is_empty(), "{warnings:?}");
    let port = &mesh.services[&Key::new("ns", "api")].ports[0];
    let origins =
        |rules: &[RouteRule]| -> Vec<String> { rules.iter().map(|r| r.origin.clone()).collect() };
    assert_eq!(origins(&port.routes), ["ns/producer#0"]);
    assert_eq!(
        port.consumer_routes.keys().collect::<Vec<_>>(),
        ["consumer"]
    );
    assert_eq!(
        origins(&port.consumer_routes["consumer"]),
        ["consumer/mine#0"]
    );
    assert_eq!(
        port.consumer_routes["consumer"][0].backends,
        [Backend::to(Key::new("ns", "canary"), 80)]
    );
    assert_eq!(mesh.consumers["consumer"], [Key::new("ns", "api")]);
    assert_eq!(mesh.consumers.len(), 1);
}

/// A producer TCPRoute and a consumer HTTPRoute on one port left to detection are in different
/// groups (GEP-1294): both stand; the port is opaque TCP for everyone but the consumer's
/// namespace, which keeps HTTP for its routes.
#[test]
fn a_producer_tcp_route_and_a_consumer_http_route_both_stand() {
    let yaml = "apiVersion: v1
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
";
    let (mesh, warnings) = build_yaml(yaml);
    assert!(warnings.is_empty(), "{warnings:?}");
    let port = &mesh.services[&Key::new("ns", "api")].ports[0];
    assert_eq!(port.protocol, Protocol::Detect);
    assert_eq!(port.tcp_route.as_ref().unwrap().origin, "ns/all");
    assert_eq!(port.consumer_routes["team"][0].origin, "team/mine#0");
    assert_eq!(port.protocol_for(None), Protocol::Tcp);
    assert_eq!(port.protocol_for(Some("team")), Protocol::Detect);
    assert_eq!(mesh.consumers["team"], [Key::new("ns", "api")]);
}
