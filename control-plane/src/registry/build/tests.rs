//! What the build makes of Kubernetes objects, checked at the Mesh it builds (translation to xDS
//! is tested alone, from Mesh values). Child modules by concern; `examples` reads the shop.

mod authorization;
mod examples;
mod http_route;
mod services;

use std::path::Path;

use super::*;
use crate::registry::file::load_text;

fn build_yaml(yaml: &str) -> (Mesh, Vec<String>) {
    let mut objects = Objects::default();
    let mut file_warnings = Vec::new();
    load_text(Path::new("t.yaml"), yaml, &mut objects, &mut file_warnings).unwrap();
    let (mesh, warnings) = build(&objects, "cluster.local");
    (mesh, warnings.iter().map(ToString::to_string).collect())
}

const API: &str = "apiVersion: v1
kind: Service
metadata: {name: api, namespace: ns}
spec: {clusterIP: 10.0.0.1, ports: [{name: http, port: 80}]}
";

#[test]
fn bad_references_drop_only_what_they_touch() {
    let cases: &[(&str, &str)] = &[
        (
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: ns}\n\
spec: {parentRefs: [{kind: Service, name: missing}], rules: [{backendRefs: [{name: api, port: 80}]}]}\n",
            "HTTPRoute ns/r: parent Service ns/missing does not exist",
        ),
        (
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: ns}\n\
spec: {parentRefs: [{kind: Service, name: api, port: 81}], rules: [{backendRefs: [{name: api, port: 80}]}]}\n",
            "HTTPRoute ns/r: parent Service ns/api has no 81 port",
        ),
        (
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: ns}\n\
spec: {parentRefs: [{kind: Service, name: api}], rules: [{matches: [{path: {type: RegularExpression, value: '(['}}], backendRefs: [{name: api, port: 80}]}]}\n",
            "HTTPRoute ns/r: rule 0 dropped: invalid regular expression",
        ),
        (
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: orphan-1, namespace: ns, labels: {kubernetes.io/service-name: orphan}}\n\
addressType: IPv4\nendpoints: [{addresses: [10.1.0.1]}]\n",
            "EndpointSlice ns/orphan-1: its Service ns/orphan does not exist: ignored",
        ),
        (
            "apiVersion: weft.io/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: tp, namespace: ns}\n\
spec: {targetRefs: [{kind: Service, name: nope}], timeout: 'ten seconds'}\n",
            "TrafficPolicy ns/tp: timeout: invalid duration",
        ),
    ];
    for (doc, want) in cases {
        let (mesh, warnings) = build_yaml(&format!("{API}---\n{doc}"));
        assert!(
            warnings.iter().any(|w| w.starts_with(want)),
            "want {want:?}, got {warnings:?}"
        );
        // The Service itself is untouched and keeps its default route.
        let api = &mesh.services[&Key::new("ns", "api")];
        assert!(api.ports[0].routes.is_empty(), "{want}");
    }
}

/// Gateway API: a backendRef that does not resolve keeps its share, which gets 500 (503 on a
/// GRPCRoute); a rule whose backends all have weight 0 answers it outright; a rule with no
/// backendRefs sends to the Service it is attached to.
#[test]
fn unresolved_backends_keep_their_share_and_a_rule_without_backends_goes_to_its_parent() {
    let route = |kind: &str, rules: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: {kind}\nmetadata: {{name: r, namespace: ns}}\n\
spec: {{parentRefs: [{{kind: Service, name: api}}], rules: {rules}}}\n"
        )
    };
    let http = route(
        "HTTPRoute",
        "[{backendRefs: [{name: api, port: 80}, {name: gone, port: 80}, {name: api, port: 81}, \
{kind: Bucket, group: example.com, name: b, port: 1}]}, \
{matches: [{path: {type: PathPrefix, value: /zero}}], backendRefs: [{name: api, port: 80, weight: 0}]}, \
{matches: [{path: {type: PathPrefix, value: /none}}]}]",
    );
    let (mesh, warnings) = build_yaml(&format!("{API}---\n{http}"));
    for want in [
        "HTTPRoute ns/r: backendRef Service ns/gone does not exist; its share of requests gets 500",
        "HTTPRoute ns/r: backendRef ns/api has no port 81; its share of requests gets 500",
        "HTTPRoute ns/r: backendRef b: only Services are supported; its share of requests gets 500",
        "HTTPRoute ns/r: every backendRef has weight 0; the rule answers 500",
    ] {
        assert!(
            warnings.iter().any(|w| w == want),
            "want {want:?}, got {warnings:?}"
        );
    }
    let routes = &mesh.services[&Key::new("ns", "api")].ports[0].routes;
    assert_eq!(routes.len(), 3);
    let unresolved: Vec<bool> = routes[0].backends.iter().map(|b| b.unresolved).collect();
    assert_eq!(unresolved, [false, true, true, true]);
    assert_eq!(
        (routes[0].refused.as_deref(), routes[0].failure_status),
        (None, 500)
    );
    assert_eq!(
        routes[1].refused.as_deref(),
        Some("every backendRef has weight 0")
    );
    assert_eq!(routes[2].backends, [Backend::to(Key::new("ns", "api"), 80)]);

    let grpc = route("GRPCRoute", "[{backendRefs: [{name: gone, port: 80}]}]");
    let (mesh, _) = build_yaml(&format!("{API}---\n{grpc}"));
    let routes = &mesh.services[&Key::new("ns", "api")].ports[0].routes;
    assert_eq!(routes[0].failure_status, 503);
    assert!(routes[0].backends[0].unresolved);
}

/// A backendRef or mirror into another namespace resolves without a ReferenceGrant: in the mesh
/// a route only changes where traffic to Services its clients can reach anyway goes (GEP-1294).
#[test]
fn cross_namespace_references_need_no_reference_grant() {
    const DB: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: data}\n\
spec: {clusterIP: 10.0.0.9, ports: [{name: http, port: 80}]}\n";
    let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: ns}\n\
spec: {parentRefs: [{kind: Service, name: api}], rules: [{\
filters: [{type: RequestMirror, requestMirror: {backendRef: {name: db, namespace: data, port: 80}}}], \
backendRefs: [{name: db, namespace: data, port: 80}]}]}\n";
    let (mesh, warnings) = build_yaml(&format!("{API}---\n{DB}---\n{route}"));
    assert!(warnings.is_empty(), "{warnings:?}");
    let rule = &mesh.services[&Key::new("ns", "api")].ports[0].routes[0];
    assert_eq!(rule.backends[0].service, Key::new("data", "db"));
    assert!(!rule.backends[0].unresolved);
    assert_eq!(rule.mirrors.len(), 1);
}

#[test]
fn header_modifiers_apply_and_a_filter_weft_cannot_apply_refuses_the_rule() {
    let doc = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: ns}\n\
spec: {parentRefs: [{kind: Service, name: api}], rules: [{filters: [\
{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-Env, value: canary}, {name: Host, value: evil}], add: [{name: x-a, value: '1'}], remove: [X-Debug]}}, \
{type: ResponseHeaderModifier, responseHeaderModifier: {add: [{name: x-served, value: weft}]}}, \
{type: RequestMirror, requestMirror: {backendRef: {name: api, port: 80}}}], \
backendRefs: [{name: api, port: 80, filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {remove: [Z]}}, \
{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-backend, value: api}]}}, \
{type: URLRewrite, urlRewrite: {hostname: other}}]}]}]}\n";
    let (mesh, warnings) = build_yaml(&format!("{API}---\n{doc}"));
    assert_eq!(
        warnings,
        [
            "HTTPRoute ns/r: a header modifier may not change host: ignored",
            "HTTPRoute ns/r: unsupported filters: UrlRewrite on a backendRef; the rule answers 500 instead of forwarding"
        ]
    );
    let routes = &mesh.services[&Key::new("ns", "api")].ports[0].routes;
    assert_eq!(routes.len(), 1);
    assert_eq!(
        routes[0].refused.as_deref(),
        Some("unsupported filters: UrlRewrite on a backendRef")
    );
    let pair = |n: &str, v: &str| (n.to_string(), v.to_string());
    assert_eq!(routes[0].request_headers.set, [pair("x-env", "canary")]);
    assert_eq!(routes[0].request_headers.add, [pair("x-a", "1")]);
    assert_eq!(routes[0].request_headers.remove, ["x-debug"]);
    assert_eq!(routes[0].response_headers.add, [pair("x-served", "weft")]);
    let mirror = Mirror {
        service: Key::new("ns", "api"),
        port: 80,
        per_million: 1_000_000,
    };
    assert_eq!(routes[0].mirrors, [mirror]);
    // A backendRef's own header modifiers are its own.
    let backend = &routes[0].backends[0];
    assert_eq!(backend.request_headers.set, [pair("x-backend", "api")]);
    assert_eq!(backend.response_headers.remove, ["z"]);
}

/// A mirror's share comes from `percent` or `fraction`; one that names nothing real is said and
/// left out, and its rule still forwards.
#[test]
fn request_mirror_shares_and_bad_mirrors() {
    let rule = |mirror: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r, namespace: ns}}\n\
spec: {{parentRefs: [{{kind: Service, name: api}}], rules: [{{filters: [{{type: RequestMirror, requestMirror: {mirror}}}], \
backendRefs: [{{name: api, port: 80}}]}}]}}\n"
        )
    };
    let cases: &[(&str, Option<u32>, &str)] = &[
        (
            "{backendRef: {name: api, port: 80}, percent: 25}",
            Some(250_000),
            "",
        ),
        (
            "{backendRef: {name: api, port: 80}, fraction: {numerator: 1, denominator: 3}}",
            Some(333_333),
            "",
        ),
        (
            "{backendRef: {name: api, port: 80}, fraction: {numerator: 5}}",
            Some(50_000),
            "",
        ),
        (
            "{backendRef: {name: gone, port: 80}}",
            None,
            "RequestMirror ignored: backendRef Service ns/gone does not exist",
        ),
        (
            "{backendRef: {name: api}}",
            None,
            "RequestMirror ignored: backendRef ns/api has no port",
        ),
        (
            "{backendRef: {name: api, port: 80}, percent: 120}",
            None,
            "RequestMirror ignored: percent 120 is not 0 to 100",
        ),
    ];
    for (mirror, share, warning) in cases {
        let (mesh, warnings) = build_yaml(&format!("{API}---\n{}", rule(mirror)));
        let routes = &mesh.services[&Key::new("ns", "api")].ports[0].routes;
        assert_eq!(routes.len(), 1, "{mirror}");
        let got: Vec<u32> = routes[0].mirrors.iter().map(|m| m.per_million).collect();
        assert_eq!(got, share.iter().copied().collect::<Vec<_>>(), "{mirror}");
        let want: Vec<String> = [warning]
            .iter()
            .filter(|w| !w.is_empty())
            .map(|w| format!("HTTPRoute ns/r: {w}"))
            .collect();
        assert_eq!(warnings, want, "{mirror}");
    }
}

/// Rules Gateway API forbids are dropped with the reason said; the valid rule beside them stays.
#[test]
fn invalid_rewrites_and_redirects_drop_their_rule() {
    let rule = |r: &str| format!("{{{r}}}");
    let cases: &[(&str, &str)] = &[
        (
            "matches: [{path: {type: Exact, value: /a}}], filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}], backendRefs: [{name: api, port: 80}]",
            "ReplacePrefixMatch needs every match of the rule to be a PathPrefix",
        ),
        (
            "filters: [{type: RequestRedirect, requestRedirect: {hostname: x.example}}], backendRefs: [{name: api, port: 80}]",
            "RequestRedirect cannot be used with backendRefs",
        ),
        (
            "filters: [{type: RequestRedirect, requestRedirect: {hostname: x.example}}, {type: URLRewrite, urlRewrite: {hostname: y.example}}]",
            "URLRewrite and RequestRedirect cannot both be in one rule",
        ),
        (
            "filters: [{type: RequestRedirect, requestRedirect: {statusCode: 200}}]",
            "redirect statusCode 200 is not 301, 302, 303, 307 or 308",
        ),
        (
            "filters: [{type: URLRewrite, urlRewrite: {hostname: 'a b:80'}}], backendRefs: [{name: api, port: 80}]",
            "hostname \"a b:80\" is not a DNS name",
        ),
        (
            "filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath}}}], backendRefs: [{name: api, port: 80}]",
            "path modifier without replaceFullPath",
        ),
    ];
    for (bad, why) in cases {
        let doc = format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r, namespace: ns}}\n\
spec: {{parentRefs: [{{kind: Service, name: api}}], rules: [{}, {}]}}\n",
            rule(bad),
            rule(
                "matches: [{path: {type: PathPrefix, value: /ok}}], backendRefs: [{name: api, port: 80}]"
            ),
        );
        let (mesh, warnings) = build_yaml(&format!("{API}---\n{doc}"));
        assert_eq!(
            warnings,
            [format!("HTTPRoute ns/r: rule 0 dropped: {why}")],
            "{bad}"
        );
        let routes = &mesh.services[&Key::new("ns", "api")].ports[0].routes;
        assert_eq!(routes.len(), 1, "{bad}");
        assert_eq!(routes[0].origin, "ns/r#1");
    }
}

/// A GRPCRoute's method matches become the paths gRPC calls use; its header matches, filters and
/// backends read as an HTTPRoute's; a bad one is said, under its own kind.
#[test]
fn grpcroute_method_matches_become_paths() {
    let doc = "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {name: g, namespace: ns}\n\
spec: {parentRefs: [{kind: Service, name: api}], rules: [{matches: [\
{method: {service: pkg.Svc, method: Get}, headers: [{name: X-Tenant, value: a}]}, \
{method: {service: pkg.Svc}}, {method: {method: List}}, \
{method: {type: RegularExpression, service: 'pkg\\..*'}}, {}, \
{method: {type: RegularExpression, service: 'a|b', method: 'Get|List'}}], \
filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-via, value: grpcroute}]}}], \
backendRefs: [{name: api, port: 80, weight: 3}]}]}\n";
    let (mesh, warnings) = build_yaml(&format!("{API}---\n{doc}"));
    assert!(warnings.is_empty(), "{warnings:?}");
    let routes = &mesh.services[&Key::new("ns", "api")].ports[0].routes;
    assert_eq!(routes.len(), 1);
    let paths: Vec<Option<PathMatch>> = routes[0].matches.iter().map(|m| m.path.clone()).collect();
    assert_eq!(
        paths,
        [
            Some(PathMatch::Exact("/pkg.Svc/Get".into())),
            Some(PathMatch::Prefix("/pkg.Svc".into())),
            Some(PathMatch::Regex("/[^/]+/List".into())),
            Some(PathMatch::Regex("/(?:pkg\\..*)/(?:[^/]+)".into())),
            Some(PathMatch::Prefix("/".into())),
            Some(PathMatch::Regex("/(?:a|b)/(?:Get|List)".into())),
        ]
    );
    assert_eq!(routes[0].matches[0].headers[0].name, "x-tenant");
    assert_eq!(
        routes[0].request_headers.set,
        [("x-via".to_string(), "grpcroute".to_string())]
    );
    assert_eq!(routes[0].backends[0].weight, 3);

    let bad = doc.replace("method: Get", "method: 'Get/x'");
    let (mesh, warnings) = build_yaml(&format!("{API}---\n{bad}"));
    assert_eq!(
        warnings,
        ["GRPCRoute ns/g: ignored: rule 0: method match name \"Get/x\" is empty or has a '/'"]
    );
    assert!(
        mesh.services[&Key::new("ns", "api")].ports[0]
            .routes
            .is_empty()
    );
}

#[test]
fn a_selector_without_endpoint_slices_takes_the_ready_pods_it_picks() {
    let yaml = "apiVersion: v1
kind: Service
metadata: {name: api, namespace: ns}
spec:
  clusterIP: 10.0.0.1
  selector: {app: api}
  ports: [{name: http, port: 80, targetPort: web}, {name: admin, port: 9000}]
---
apiVersion: v1
kind: Pod
metadata: {name: api-1, namespace: ns, labels: {app: api, v: '1'}}
spec: {containers: [{name: c, ports: [{name: web, containerPort: 8080}]}]}
status: {podIP: 10.1.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: api-2, namespace: ns, labels: {app: api}}
spec: {containers: [{name: c, ports: [{name: web, containerPort: 8081}]}]}
status: {podIP: 10.1.0.2, podIPs: [{ip: 10.1.0.2}, {ip: 'fd00::2'}], conditions: [{type: Ready, status: 'True'}]}
---
apiVersion: v1
kind: Pod
metadata: {name: api-3, namespace: ns, labels: {app: api}}
spec: {containers: [{name: c, ports: [{name: web, containerPort: 8080}]}]}
status: {podIP: 10.1.0.3, conditions: [{type: Ready, status: 'False'}]}
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: ns, labels: {app: other}}
spec: {containers: [{name: c}]}
status: {podIP: 10.1.0.4}
---
apiVersion: v1
kind: Pod
metadata: {name: api-elsewhere, namespace: ns2, labels: {app: api}}
spec: {containers: [{name: c}]}
status: {podIP: 10.1.0.5}
";
    let (mesh, warnings) = build_yaml(yaml);
    assert!(warnings.is_empty(), "{warnings:?}");
    let api = &mesh.services[&Key::new("ns", "api")];
    let at = |i: usize| -> Vec<String> {
        api.ports[i]
            .endpoints
            .iter()
            .map(|e| format!("{}:{}", e.ip, e.port))
            .collect()
    };
    // The named target port resolves per Pod; the not-ready Pod and others are left out.
    assert_eq!(at(0), ["10.1.0.1:8080", "10.1.0.2:8081"]);
    // No targetPort: the Service's own port.
    assert_eq!(at(1), ["10.1.0.1:9000", "10.1.0.2:9000"]);
    assert_eq!(
        api.ports[0].endpoints[0].identity.as_deref(),
        Some("spiffe://cluster.local/ns/ns/sa/default")
    );

    // A terminating Pod drains: used only while no other is ready. publishNotReadyAddresses
    // takes the not-ready ones too (a StatefulSet's peers finding each other).
    let pods = "
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: ns, labels: {app: db}, deletionTimestamp: '2026-01-01T00:00:00Z'}
spec: {containers: [{name: c}]}
status: {podIP: 10.2.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: db-1, namespace: ns, labels: {app: db}}
spec: {containers: [{name: c}]}
status: {podIP: 10.2.0.2, conditions: [{type: Ready, status: 'False'}]}
";
    let svc = |publish: bool| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: db, namespace: ns}}\n\
             spec: {{clusterIP: None, selector: {{app: db}}, publishNotReadyAddresses: {publish}, ports: [{{port: 5432}}]}}\n{pods}"
        )
    };
    let ips = |yaml: &str| -> Vec<(String, Health)> {
        let (mesh, _) = build_yaml(yaml);
        mesh.services[&Key::new("ns", "db")].ports[0]
            .endpoints
            .iter()
            .map(|e| (e.ip.to_string(), e.health))
            .collect()
    };
    assert_eq!(
        ips(&svc(false)),
        [("10.2.0.1".to_string(), Health::Draining)]
    );
    assert_eq!(ips(&svc(true)), [("10.2.0.2".to_string(), Health::Healthy)]);
}

#[test]
fn routes_attach_to_http_ports_when_no_port_is_named() {
    let yaml = format!(
        "{API}---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r, namespace: ns}}\n\
spec: {{parentRefs: [{{kind: Service, name: api}}], rules: [{{backendRefs: [{{name: api, port: 80, weight: 3}}], timeouts: {{request: 1500ms}}}}]}}\n"
    );
    let (mesh, warnings) = build_yaml(&yaml);
    assert!(warnings.is_empty(), "{warnings:?}");
    let rule = &mesh.services[&Key::new("ns", "api")].ports[0].routes[0];
    assert_eq!(rule.backends[0].weight, 3);
    assert_eq!(rule.timeout, Some(Duration::from_millis(1500)));
    assert_eq!(rule.origin, "ns/r#0");
}

#[test]
fn workload_identity_comes_from_the_service_account() {
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: ns}\n\
spec: {serviceAccountName: sa1, containers: [{name: c, ports: [{name: grpc-x, containerPort: 9000}]}]}\n\
status: {podIP: 10.1.0.9}\n";
    let (mesh, _) = build_yaml(yaml);
    let w = &mesh.workloads[&Key::new("ns", "p")];
    assert_eq!(w.identity, "spiffe://cluster.local/ns/ns/sa/sa1");
    assert_eq!(w.ports[0].protocol, Protocol::Grpc);
    assert_eq!(w.ips, ["10.1.0.9".parse::<IpAddr>().unwrap()]);
}

/// Gateway API: of several matches on one header name (case-insensitive) or query parameter
/// (case-sensitive), only the first counts.
#[test]
fn only_the_first_match_on_a_header_or_query_parameter_counts() {
    let doc = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: ns}\n\
spec: {parentRefs: [{kind: Service, name: api}], rules: [{matches: [{\
headers: [{name: x-env, value: prod}, {name: X-Env, value: canary}, {name: x-other, value: a}], \
queryParams: [{name: v, value: '1'}, {name: v, value: '2'}, {name: V, value: '3'}]}], \
backendRefs: [{name: api, port: 80}]}]}\n";
    let (mesh, warnings) = build_yaml(&format!("{API}---\n{doc}"));
    assert!(warnings.is_empty(), "{warnings:?}");
    let m = &mesh.services[&Key::new("ns", "api")].ports[0].routes[0].matches[0];
    let headers: Vec<&str> = m.headers.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(headers, ["x-env", "x-other"]);
    assert_eq!(m.headers[0].value, StringMatch::Exact("prod".into()));
    let query: Vec<(&str, &StringMatch)> = m
        .query
        .iter()
        .map(|q| (q.name.as_str(), &q.value))
        .collect();
    assert_eq!(
        query,
        [
            ("v", &StringMatch::Exact("1".into())),
            ("V", &StringMatch::Exact("3".into()))
        ]
    );
}

/// GEP-1426: a GRPCRoute and an HTTPRoute on the same Service port: the GRPCRoute is kept, the
/// HTTPRoute ignored and said; on another port (or another Service) both apply.
#[test]
fn a_grpcroute_takes_precedence_over_an_httproute_on_the_same_parent() {
    let svc = "apiVersion: v1
kind: Service
metadata: {name: api, namespace: ns}
spec: {clusterIP: 10.0.0.1, ports: [{name: grpc, port: 80}, {name: http, port: 81}]}
";
    let route = |kind: &str, name: &str, port: Option<u16>| {
        let port = port.map_or(String::new(), |p| format!(", port: {p}"));
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: {kind}\nmetadata: {{name: {name}, namespace: ns}}\n\
spec: {{parentRefs: [{{kind: Service, name: api{port}}}], rules: [{{backendRefs: [{{name: api, port: 81}}]}}]}}\n"
        )
    };
    let origins = |mesh: &Mesh, port: usize| -> Vec<String> {
        mesh.services[&Key::new("ns", "api")].ports[port]
            .routes
            .iter()
            .map(|r| r.origin.clone())
            .collect()
    };
    let (mesh, warnings) = build_yaml(&format!(
        "{svc}{}{}",
        route("GRPCRoute", "g", Some(80)),
        route("HTTPRoute", "h", Some(80))
    ));
    assert_eq!(
        warnings,
        [
            "HTTPRoute ns/h: not attached to port 80 of Service ns/api: GRPCRoute ns/g is, and takes precedence (GEP-1426)"
        ]
    );
    assert_eq!(origins(&mesh, 0), ["ns/g#0"]);

    // An HTTPRoute on every HTTP port loses only the one the GRPCRoute holds.
    let (mesh, warnings) = build_yaml(&format!(
        "{svc}{}{}",
        route("GRPCRoute", "g", Some(80)),
        route("HTTPRoute", "h", None)
    ));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(
        (origins(&mesh, 0), origins(&mesh, 1)),
        (vec!["ns/g#0".to_string()], vec!["ns/h#0".to_string()])
    );

    // Without a port the GRPCRoute holds every HTTP port of the Service.
    let (mesh, warnings) = build_yaml(&format!(
        "{svc}{}{}",
        route("GRPCRoute", "g", None),
        route("HTTPRoute", "h", Some(81))
    ));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(origins(&mesh, 1).iter().all(|o| o != "ns/h#0"));

    let (mesh, warnings) = build_yaml(&format!(
        "{svc}{}{}",
        route("GRPCRoute", "g", Some(80)),
        route("HTTPRoute", "h", Some(81))
    ));
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        (origins(&mesh, 0), origins(&mesh, 1)),
        (vec!["ns/g#0".to_string()], vec!["ns/h#0".to_string()])
    );
}

/// `sectionName` picks a Service port by name, as `port` does by number; one naming no port
/// attaches nowhere, and says so.
#[test]
fn a_parent_section_name_attaches_to_that_port_only() {
    let svc = "apiVersion: v1
kind: Service
metadata: {name: api, namespace: ns}
spec: {clusterIP: 10.0.0.1, ports: [{name: http, port: 80}, {name: metrics, port: 9090}]}
";
    let route = |section: &str| {
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: h, namespace: ns}}\n\
spec: {{parentRefs: [{{group: \"\", kind: Service, name: api, sectionName: {section}}}], rules: [{{backendRefs: [{{name: api, port: 80}}]}}]}}\n"
        )
    };
    let counts = |mesh: &Mesh| -> Vec<usize> {
        mesh.services[&Key::new("ns", "api")]
            .ports
            .iter()
            .map(|p| p.routes.len())
            .collect()
    };
    let (mesh, warnings) = build_yaml(&format!("{svc}{}", route("http")));
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(counts(&mesh), [1, 0]);
    let (mesh, warnings) = build_yaml(&format!("{svc}{}", route("grpc")));
    assert_eq!(
        warnings,
        ["HTTPRoute ns/h: parent Service ns/api has no \"grpc\" port"]
    );
    assert_eq!(counts(&mesh), [0, 0]);
}

/// A pod labelled as running weft's sidecar is dialed with mTLS; its inbound mode is the MeshTLS
/// that selects it by label, else its namespace's, else PERMISSIVE.
#[test]
fn mesh_tls_modes_and_sidecars_are_read_per_workload() {
    let pod = |name: &str, labels: &str| {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: ns, labels: {{{labels}}}}}\n\
spec: {{containers: [{{name: c}}]}}\nstatus: {{podIP: 10.0.0.{}}}\n",
            name.len()
        )
    };
    let mesh_tls = |name: &str, selector: &str, mode: &str| {
        format!(
            "---\napiVersion: weft.io/v1alpha1\nkind: MeshTLS\nmetadata: {{name: {name}, namespace: ns}}\n\
spec: {{selector: {{matchLabels: {{{selector}}}}}, mode: {mode}}}\n"
        )
    };
    let docs = [
        pod("a", "app: a, security.weft.io/tlsMode: weft"),
        pod("bb", "app: b"),
        mesh_tls("ns-wide", "", "STRICT"),
        mesh_tls("b-only", "app: b", "PERMISSIVE"),
    ]
    .concat();
    let (mesh, warnings) = build_yaml(&docs);
    assert!(warnings.is_empty(), "{warnings:?}");
    let w = |name: &str| mesh.workloads[&Key::new("ns", name)].clone();
    assert_eq!((w("a").sidecar, w("a").tls_mode), (true, TlsMode::Strict));
    assert_eq!(
        (w("bb").sidecar, w("bb").tls_mode),
        (false, TlsMode::Permissive)
    );
    let (mesh, _) = build_yaml(&pod("a", "app: a"));
    assert_eq!(
        mesh.workloads[&Key::new("ns", "a")].tls_mode,
        TlsMode::Permissive
    );
}

/// A route written `parentRefs: [{kind: Service, name: api}]` reaches weft from the API server
/// with the CRD's default group, `gateway.networking.k8s.io`: it still attaches to the Service,
/// as the same YAML does from a file, and says how to write it.
#[test]
fn a_service_parent_with_the_gateway_api_default_group_still_attaches() {
    let doc = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: ns}\n\
spec: {parentRefs: [{group: gateway.networking.k8s.io, kind: Service, name: api}], rules: [{backendRefs: [{name: api, port: 80}]}]}\n";
    let (mesh, warnings) = build_yaml(&format!("{API}{doc}"));
    assert_eq!(
        mesh.services[&Key::new("ns", "api")].ports[0].routes.len(),
        1
    );
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("write group: \"\""), "{warnings:?}");
}

/// An explicit outbound listener names its Service as users write hosts (`api`, `api.ns`,
/// `api.ns.svc`, `api.ns.svc.cluster.local`); one naming no Service, or no port of it, says so
/// instead of never being bound without a word.
#[test]
fn sidecar_outbound_listeners_take_every_host_form_and_say_what_they_miss() {
    let sidecar = |service: &str, port: u16| {
        format!(
            "---\napiVersion: weft.io/v1alpha1\nkind: Sidecar\nmetadata: {{name: s, namespace: ns}}\n\
spec: {{outboundListeners: [{{bind: \"127.0.0.1:19080\", service: \"{service}\", port: {port}}}]}}\n"
        )
    };
    for host in ["api", "api.ns", "api.ns.svc", "api.ns.svc.cluster.local"] {
        let (mesh, warnings) = build_yaml(&format!("{API}{}", sidecar(host, 80)));
        assert!(warnings.is_empty(), "{host}: {warnings:?}");
        assert_eq!(
            mesh.sidecars[0].listeners[0].service,
            Key::new("ns", "api"),
            "{host}"
        );
    }
    let (_, warnings) = build_yaml(&format!("{API}{}", sidecar("apo.ns", 80)));
    assert_eq!(
        warnings,
        [
            "Sidecar ns/s: outbound listener 127.0.0.1:19080: no Service ns/apo; not bound until there is"
        ]
    );
    let (_, warnings) = build_yaml(&format!("{API}{}", sidecar("api", 81)));
    assert_eq!(
        warnings,
        ["Sidecar ns/s: outbound listener 127.0.0.1:19080: Service ns/api has no port 81"]
    );
}

/// A TCPRoute on a Service's opaque ports: weighted backends (an unresolved one keeping its
/// share), the oldest route per port, a consumer route per namespace, only the first rule, and
/// a declared HTTP port left alone with a word.
#[test]
fn tcp_routes_split_opaque_ports_and_say_what_they_cannot_do() {
    let svcs = "apiVersion: v1
kind: Service
metadata: {name: db, namespace: ns}
spec: {clusterIP: 10.0.0.1, ports: [{name: tcp-pg, port: 5432}, {name: http, port: 80}, {name: any, port: 7000}]}
---
apiVersion: v1
kind: Service
metadata: {name: db-v2, namespace: ns}
spec: {clusterIP: 10.0.0.2, ports: [{name: tcp-pg, port: 5432}]}
";
    let route = |name: &str, ns: &str, when: &str, parent: &str, rules: &str| {
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\n\
metadata: {{name: {name}, namespace: {ns}, creationTimestamp: '{when}'}}\n\
spec: {{parentRefs: [{parent}], rules: {rules}}}\n"
        )
    };
    let split = "[{backendRefs: [{name: db, port: 5432, weight: 90}, {name: db-v2, port: 5432, weight: 10}, \
{name: gone, port: 5432, weight: 5}]}]";
    let yaml = format!(
        "{svcs}{}{}{}{}",
        route(
            "canary",
            "ns",
            "2026-01-01T00:00:00Z",
            "{kind: Service, name: db}",
            split
        ),
        route(
            "newer",
            "ns",
            "2026-02-01T00:00:00Z",
            "{kind: Service, name: db, port: 5432}",
            "[{backendRefs: [{name: db-v2, port: 5432}]}, {backendRefs: [{name: db, port: 5432}]}]"
        ),
        route(
            "on-http",
            "ns",
            "2026-03-01T00:00:00Z",
            "{kind: Service, name: db, port: 80}",
            "[{backendRefs: [{name: db, port: 5432}]}]"
        ),
        route(
            "mine",
            "team",
            "2026-04-01T00:00:00Z",
            "{kind: Service, name: db, namespace: ns, sectionName: tcp-pg}",
            "[{backendRefs: [{name: db-v2, namespace: ns, port: 5432, weight: 0}]}]"
        ),
    );
    let (mesh, warnings) = build_yaml(&yaml);
    let db = &mesh.services[&Key::new("ns", "db")];
    let shares = |r: Option<&TcpRoute>| -> Vec<(String, u32, bool)> {
        r.into_iter()
            .flat_map(|r| &r.backends)
            .map(|b| (b.service.to_string(), b.weight, b.unresolved))
            .collect()
    };
    let want = [
        ("ns/db".to_string(), 90, false),
        ("ns/db-v2".to_string(), 10, false),
        ("ns/gone".to_string(), 5, true),
    ];
    // Both opaque ports (TCP, and the one left to detection) take the route without a port.
    assert_eq!(shares(db.ports[0].tcp_route.as_ref()), want);
    assert_eq!(shares(db.ports[2].tcp_route.as_ref()), want);
    assert_eq!(db.ports[1].tcp_route, None);
    // The consumer's route is its namespace's alone.
    assert_eq!(
        shares(db.ports[0].tcp_route_for(Some("team"))),
        [("ns/db-v2".to_string(), 0, false)]
    );
    assert_eq!(shares(db.ports[0].tcp_route_for(Some("other"))), want);
    assert_eq!(mesh.consumers["team"], [Key::new("ns", "db")]);
    assert_eq!(
        warnings,
        [
            "TCPRoute ns/canary: backendRef Service ns/gone does not exist; its share of connections is refused",
            "TCPRoute ns/newer: only the first of its 2 rules applies: TCPRoute rules have no matches",
            "TCPRoute ns/newer: not attached to port 5432 of Service ns/db: TCPRoute ns/canary is, and is older",
            "TCPRoute ns/on-http: port 80 of Service ns/db speaks http: a TCPRoute does not apply to it",
            "TCPRoute team/mine: every backendRef has weight 0; its connections are refused",
        ]
    );
}

/// Gateway API's default parentRef kind is Gateway: a route that names a Service without
/// `kind: Service` is not attached to it, and says how to write it (a Gateway of another
/// implementation, with no such Service, is nobody's business here).
#[test]
fn a_parent_ref_without_a_kind_names_a_gateway() {
    let route = |parent: &str| {
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r, namespace: ns}}\n\
spec: {{parentRefs: [{parent}], rules: [{{backendRefs: [{{name: api, port: 80}}]}}]}}\n"
        )
    };
    let (mesh, warnings) = build_yaml(&format!("{API}{}", route("{name: api}")));
    assert!(
        mesh.services[&Key::new("ns", "api")].ports[0]
            .routes
            .is_empty()
    );
    assert_eq!(
        warnings,
        [
            "HTTPRoute ns/r: parentRef api has no kind, so it names a Gateway (the default), not Service ns/api: not attached; write kind: Service and group: \"\""
        ]
    );
    let (_, warnings) = build_yaml(&format!("{API}{}", route("{name: edge}")));
    assert!(warnings.is_empty(), "{warnings:?}");
    let (_, warnings) = build_yaml(&format!(
        "{API}{}",
        route("{group: gateway.networking.k8s.io, kind: Gateway, name: api}")
    ));
    assert!(warnings.is_empty(), "{warnings:?}");
}

/// GEP-1294: where an HTTPRoute (or GRPCRoute) and a TCPRoute bind the same port, the HTTP one
/// applies and the TCPRoute is ignored, said; in another namespace the two groups are apart.
#[test]
fn an_http_route_takes_precedence_over_a_tcp_route_on_one_port() {
    let svc = "apiVersion: v1
kind: Service
metadata: {name: api, namespace: ns}
spec: {clusterIP: 10.0.0.1, ports: [{port: 7000}]}
";
    let http = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: h, namespace: ns}\n\
spec: {parentRefs: [{kind: Service, name: api}], rules: [{backendRefs: [{name: api, port: 7000}]}]}\n";
    let tcp = |ns: &str| {
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\nmetadata: {{name: t, namespace: {ns}}}\n\
spec: {{parentRefs: [{{kind: Service, name: api, namespace: ns}}], rules: [{{backendRefs: [{{name: api, namespace: ns, port: 7000}}]}}]}}\n"
        )
    };
    let (mesh, warnings) = build_yaml(&format!("{svc}{http}{}{}", tcp("ns"), tcp("team")));
    let port = &mesh.services[&Key::new("ns", "api")].ports[0];
    assert_eq!(
        warnings,
        [
            "TCPRoute ns/t: not attached to port 7000 of Service ns/api: an HTTPRoute or GRPCRoute is, and takes precedence (GEP-1294)"
        ]
    );
    assert_eq!(port.tcp_route, None);
    assert!(port.consumer_tcp_routes.contains_key("team"));
    assert_eq!(port.protocol_for(None), Protocol::Detect);
    assert_eq!(port.protocol_for(Some("team")), Protocol::Tcp);
}

/// An HTTPRoute on a declared TCP port applies to nothing (the port has no HTTP), so it does not
/// keep a TCPRoute off that port either.
#[test]
fn an_http_route_on_a_tcp_port_leaves_the_tcp_route_in_force() {
    let svc = "apiVersion: v1
kind: Service
metadata: {name: db, namespace: ns}
spec: {clusterIP: 10.0.0.1, ports: [{name: tcp-pg, port: 5432}]}
";
    let http = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: h, namespace: ns}\n\
spec: {parentRefs: [{kind: Service, name: db, port: 5432}], rules: [{backendRefs: [{name: db, port: 5432}]}]}\n";
    let tcp = "---\napiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\nmetadata: {name: t, namespace: ns}\n\
spec: {parentRefs: [{kind: Service, name: db, port: 5432}], rules: [{backendRefs: [{name: db, port: 5432}]}]}\n";
    let (mesh, warnings) = build_yaml(&format!("{svc}{http}{tcp}"));
    assert!(warnings.is_empty(), "{warnings:?}");
    let port = &mesh.services[&Key::new("ns", "db")].ports[0];
    assert!(port.tcp_route.is_some());
}
