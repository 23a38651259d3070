//! RDS: one route configuration per Service port, from its HTTPRoute rules.

use weft_proto::google::protobuf::UInt32Value;
use weft_proto::xds::config::core::v3::header_value_option::HeaderAppendAction;
use weft_proto::xds::config::core::v3::{DataSource, data_source};
use weft_proto::xds::config::core::v3::{HeaderValue, HeaderValueOption};
use weft_proto::xds::config::route::v3::route_action::ClusterNotFoundResponseCode;
use weft_proto::xds::config::route::v3::{
    DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RedirectAction, RetryPolicy, Route,
    RouteAction, RouteConfiguration, RouteMatch as XdsRouteMatch, VirtualHost, WeightedCluster,
    header_matcher, query_parameter_matcher, redirect_action, retry_policy, route, route_action,
    route_match, weighted_cluster,
};
use weft_proto::xds::r#type::matcher::v3::{
    RegexMatchAndSubstitute, RegexMatcher, StringMatcher, string_matcher,
};

use super::duration;
use super::names::{backend_cluster_name, cluster_name, service_listener_name};
use crate::model::{
    Backend, HeaderEdits, Mirror, PathMatch, PathModifier, Protocol, Redirect, RouteMatch,
    RouteRetry, RouteRule, Service, ServicePort, StringMatch, UrlRewrite,
};

/// The route configuration for one Service port. Its single virtual host matches any authority:
/// the configuration already belongs to one Service, and clients address it by IP, short name or
/// FQDN alike.
pub fn service(svc: &Service, port: &ServicePort) -> RouteConfiguration {
    route_config(svc, port, &[])
}

/// The route configuration clients in `namespace` get for one Service port when that namespace
/// has consumer routes on it: the same name, its consumer routes first (they take precedence
/// over the producer's, GEP-1294), then the producer routes.
pub fn for_consumers(svc: &Service, port: &ServicePort, namespace: &str) -> RouteConfiguration {
    let consumer = port
        .consumer_routes
        .get(namespace)
        .map_or(&[][..], Vec::as_slice);
    route_config(svc, port, consumer)
}

fn route_config(svc: &Service, port: &ServicePort, consumer: &[RouteRule]) -> RouteConfiguration {
    let name = service_listener_name(&svc.key, port.port);
    let policy = svc.policy.clone().unwrap_or_default();
    let first = routes(consumer, &policy, (port.protocol, port.port));
    let producer = if port.routes.is_empty() && consumer.is_empty() {
        let default = RouteRule {
            origin: "default".into(),
            matches: vec![RouteMatch {
                path: Some(PathMatch::Prefix("/".into())),
                ..Default::default()
            }],
            backends: vec![Backend::to(svc.key.clone(), port.port)],
            timeout: None,
            backend_timeout: None,
            retry: None,
            request_headers: Default::default(),
            response_headers: Default::default(),
            rewrite: None,
            redirect: None,
            mirrors: Vec::new(),
            refused: None,
            failure_status: 500,
        };
        routes(&[default], &policy, (port.protocol, port.port))
    } else {
        routes(&port.routes, &policy, (port.protocol, port.port))
    };
    let routes = first.into_iter().chain(producer).collect();
    RouteConfiguration {
        name: name.clone(),
        virtual_hosts: vec![VirtualHost {
            name,
            domains: vec!["*".into()],
            routes,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Rules flattened to one route per match, ordered by Gateway API precedence (stable, so rules
/// that tie keep their order: older HTTPRoute first, then rule order).
fn routes(
    rules: &[RouteRule],
    policy: &crate::model::TrafficPolicy,
    (protocol, port): (Protocol, u16),
) -> Vec<Route> {
    let mut flat: Vec<(&RouteRule, &RouteMatch)> = rules
        .iter()
        .flat_map(|r| r.matches.iter().map(move |m| (r, m)))
        .collect();
    flat.sort_by_key(|(_, m)| std::cmp::Reverse(m.precedence()));
    let mut out = Vec::new();
    for (rule, m) in flat {
        let forward = action(rule, policy, protocol);
        for xds_match in matches(m) {
            let path = xds_match.path_specifier.as_ref();
            let action = match (&rule.refused, &rule.redirect) {
                (Some(why), _) => route::Action::DirectResponse(DirectResponseAction {
                    status: u32::from(rule.failure_status),
                    body: Some(DataSource {
                        specifier: Some(data_source::Specifier::InlineString(format!("{why}\n"))),
                        ..Default::default()
                    }),
                    body_format: None,
                }),
                (None, Some(r)) => route::Action::Redirect(redirect(r, path, port)),
                (None, None) => {
                    route::Action::Route(rewritten(&forward, rule.rewrite.as_ref(), path))
                }
            };
            out.push(Route {
                name: rule.origin.clone(),
                r#match: Some(xds_match),
                action: Some(action),
                request_headers_to_add: headers_to_add(&rule.request_headers),
                request_headers_to_remove: rule.request_headers.remove.clone(),
                response_headers_to_add: headers_to_add(&rule.response_headers),
                response_headers_to_remove: rule.response_headers.remove.clone(),
                ..Default::default()
            });
        }
    }
    out
}

/// Envoy's `prefix_rewrite` for a Gateway API ReplacePrefixMatch on one of the routes a path
/// prefix becomes: the exact route swaps the whole path; the `/foo/` route keeps the separator, so
/// `/foo/x` becomes `/bar/x` and, with `/`, `/x`.
fn replaced_prefix(path: Option<&route_match::PathSpecifier>, with: &str) -> String {
    match path {
        Some(route_match::PathSpecifier::Prefix(p)) if p.ends_with('/') => {
            format!("{}/", with.trim_end_matches('/'))
        }
        _ => with.to_string(),
    }
}

/// `action` with a URLRewrite's host and path: a prefix as [`replaced_prefix`], a full path as a
/// regex rewrite of the whole path (Envoy keeps the query).
fn rewritten(
    action: &RouteAction,
    rewrite: Option<&UrlRewrite>,
    path: Option<&route_match::PathSpecifier>,
) -> RouteAction {
    let mut action = action.clone();
    let Some(rw) = rewrite else { return action };
    if let Some(h) = &rw.hostname {
        action.host_rewrite_specifier = Some(
            route_action::HostRewriteSpecifier::HostRewriteLiteral(h.clone()),
        );
    }
    match &rw.path {
        Some(PathModifier::Prefix(with)) => action.prefix_rewrite = replaced_prefix(path, with),
        Some(PathModifier::Full(full)) => {
            action.regex_rewrite = Some(RegexMatchAndSubstitute {
                pattern: Some(regex("^/.*$")),
                substitution: full.replace('\\', "\\\\"),
            });
        }
        None => {}
    }
    action
}

/// A RequestRedirect as Envoy's redirect action. Gateway API's port rules: a changed scheme
/// without a port goes to the scheme's own port (left out of the URL), as Envoy does; with neither,
/// the Service's port, which Envoy would otherwise drop (port 80) unless it is named.
fn redirect(
    r: &Redirect,
    path: Option<&route_match::PathSpecifier>,
    service_port: u16,
) -> RedirectAction {
    use redirect_action::{PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier};
    let code = match r.status {
        301 => RedirectResponseCode::MovedPermanently,
        303 => RedirectResponseCode::SeeOther,
        307 => RedirectResponseCode::TemporaryRedirect,
        308 => RedirectResponseCode::PermanentRedirect,
        _ => RedirectResponseCode::Found,
    };
    RedirectAction {
        scheme_rewrite_specifier: r.scheme.clone().map(SchemeRewriteSpecifier::SchemeRedirect),
        host_redirect: r.hostname.clone().unwrap_or_default(),
        port_redirect: match (r.port, &r.scheme) {
            (Some(p), _) => u32::from(p),
            (None, None) if service_port != 80 => u32::from(service_port),
            (None, _) => 0,
        },
        path_rewrite_specifier: r.path.as_ref().map(|p| match p {
            PathModifier::Full(full) => PathRewriteSpecifier::PathRedirect(full.clone()),
            PathModifier::Prefix(with) => {
                PathRewriteSpecifier::PrefixRewrite(replaced_prefix(path, with))
            }
        }),
        response_code: code as i32,
        strip_query: false,
    }
}

/// A modifier's `set` and `add` as Envoy's options: overwrite and append. Values are literal, so
/// a `%` is escaped from Envoy's command operators.
fn headers_to_add(edits: &HeaderEdits) -> Vec<HeaderValueOption> {
    let option = |(name, value): &(String, String), action: HeaderAppendAction| HeaderValueOption {
        header: Some(HeaderValue {
            key: name.clone(),
            value: value.replace('%', "%%"),
            ..Default::default()
        }),
        append_action: action as i32,
        ..Default::default()
    };
    let set = edits
        .set
        .iter()
        .map(|h| option(h, HeaderAppendAction::OverwriteIfExistsOrAdd));
    let add = edits
        .add
        .iter()
        .map(|h| option(h, HeaderAppendAction::AppendIfExistsOrAdd));
    set.chain(add).collect()
}

fn string_matcher(m: &StringMatch) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(match m {
            StringMatch::Exact(v) => string_matcher::MatchPattern::Exact(v.clone()),
            StringMatch::Regex(v) => string_matcher::MatchPattern::SafeRegex(regex(v)),
        }),
        ignore_case: false,
    }
}

fn regex(re: &str) -> RegexMatcher {
    RegexMatcher {
        regex: re.to_string(),
        ..Default::default()
    }
}

/// One model match as xDS matches. A path-segment prefix `/a` becomes two routes, exact `/a` and
/// prefix `/a/`: that is Gateway API's meaning, and unlike `path_separated_prefix` every client
/// (gRPC's included) understands it.
fn matches(m: &RouteMatch) -> Vec<XdsRouteMatch> {
    let mut headers: Vec<HeaderMatcher> = m
        .headers
        .iter()
        .map(|h| HeaderMatcher {
            name: h.name.clone(),
            header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
                string_matcher(&h.value),
            )),
            ..Default::default()
        })
        .collect();
    if let Some(method) = &m.method {
        headers.push(HeaderMatcher {
            name: ":method".into(),
            header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
                string_matcher(&StringMatch::Exact(method.clone())),
            )),
            ..Default::default()
        });
    }
    let query_parameters: Vec<QueryParameterMatcher> = m
        .query
        .iter()
        .map(|q| QueryParameterMatcher {
            name: q.name.clone(),
            query_parameter_match_specifier: Some(
                query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(string_matcher(
                    &q.value,
                )),
            ),
        })
        .collect();
    let paths = match &m.path {
        None => vec![route_match::PathSpecifier::Prefix("/".into())],
        Some(PathMatch::Exact(p)) => vec![route_match::PathSpecifier::Path(p.clone())],
        Some(PathMatch::Prefix(p)) if p == "/" => {
            vec![route_match::PathSpecifier::Prefix("/".into())]
        }
        Some(PathMatch::Prefix(p)) => vec![
            route_match::PathSpecifier::Path(p.clone()),
            route_match::PathSpecifier::Prefix(format!("{p}/")),
        ],
        Some(PathMatch::Regex(r)) => vec![route_match::PathSpecifier::SafeRegex(regex(r))],
    };
    paths
        .into_iter()
        .map(|path| XdsRouteMatch {
            path_specifier: Some(path),
            headers: headers.clone(),
            query_parameters: query_parameters.clone(),
            ..Default::default()
        })
        .collect()
}

fn action(
    rule: &RouteRule,
    policy: &crate::model::TrafficPolicy,
    protocol: Protocol,
) -> RouteAction {
    let live: Vec<&Backend> = rule.backends.iter().filter(|b| b.weight > 0).collect();
    let plain = |b: &Backend| b.request_headers.is_empty() && b.response_headers.is_empty();
    // An unresolved backend is a cluster no client has: Envoy answers its share with
    // `cluster_not_found_response_code`, which carries the rule's failure status.
    let target = backend_cluster_name;
    let not_found = match (live.iter().any(|b| b.unresolved), rule.failure_status) {
        (false, _) | (true, 503) => ClusterNotFoundResponseCode::ServiceUnavailable,
        (true, _) => ClusterNotFoundResponseCode::InternalServerError,
    };
    // A backend's own header edits ride on its weighted cluster (which Envoy applies before the
    // route's), so a single backend with edits is a weighted cluster of one.
    let cluster_specifier = match live.as_slice() {
        [one] if plain(one) => route_action::ClusterSpecifier::Cluster(target(one)),
        _ => route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: live
                .iter()
                .map(|b| weighted_cluster::ClusterWeight {
                    name: target(b),
                    weight: Some(UInt32Value { value: b.weight }),
                    request_headers_to_add: headers_to_add(&b.request_headers),
                    request_headers_to_remove: b.request_headers.remove.clone(),
                    response_headers_to_add: headers_to_add(&b.response_headers),
                    response_headers_to_remove: b.response_headers.remove.clone(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
    };
    let retry = rule
        .retry
        .as_ref()
        .or(policy.retry.as_ref())
        .filter(|r| r.attempts > 0);
    let timeout = rule.timeout.or(policy.timeout).filter(|t| !t.is_zero());
    // Without retries the one attempt is the whole request: a backend timeout bounds it, for
    // clients that read no per-try timeout outside a retry policy.
    let timeout = match (retry, rule.backend_timeout) {
        (None, Some(per_try)) => Some(timeout.map_or(per_try, |t| t.min(per_try))),
        _ => timeout,
    };
    RouteAction {
        cluster_specifier: Some(cluster_specifier),
        cluster_not_found_response_code: not_found as i32,
        // Zero disables Envoy's 15 s default, which would cut long streams (gRPC, WebSocket).
        timeout: Some(duration(timeout.unwrap_or_default())),
        max_stream_duration: timeout.map(|t| route_action::MaxStreamDuration {
            max_stream_duration: Some(duration(t)),
            ..Default::default()
        }),
        retry_policy: retry.map(|r| retry_policy(r, rule.backend_timeout, protocol)),
        request_mirror_policies: rule.mirrors.iter().map(mirror_policy).collect(),
        ..Default::default()
    }
}

/// A RequestMirror as Envoy's mirror policy; a share below all of them as a static fraction.
fn mirror_policy(m: &Mirror) -> route_action::RequestMirrorPolicy {
    use weft_proto::xds::config::core::v3::RuntimeFractionalPercent;
    use weft_proto::xds::r#type::v3::{FractionalPercent, fractional_percent::DenominatorType};
    route_action::RequestMirrorPolicy {
        cluster: cluster_name(&m.service, m.port),
        runtime_fraction: (m.per_million < 1_000_000).then(|| RuntimeFractionalPercent {
            default_value: Some(FractionalPercent {
                numerator: m.per_million,
                denominator: DenominatorType::Million as i32,
            }),
            runtime_key: String::new(),
        }),
        ..Default::default()
    }
}

/// Retries on the listed status codes (or the gateway errors) and on connection failures; gRPC
/// ports also retry `unavailable`, the status gRPC clients understand.
fn retry_policy(
    r: &RouteRetry,
    per_try: Option<std::time::Duration>,
    protocol: Protocol,
) -> RetryPolicy {
    let mut on = vec!["connect-failure", "refused-stream", "reset"];
    let codes = if r.codes.is_empty() {
        on.push("gateway-error");
        Vec::new()
    } else {
        on.push("retriable-status-codes");
        r.codes.clone()
    };
    if protocol == Protocol::Grpc {
        on.push("unavailable");
    }
    RetryPolicy {
        retry_on: on.join(","),
        num_retries: Some(UInt32Value { value: r.attempts }),
        per_try_timeout: per_try.map(duration),
        retriable_status_codes: codes,
        retry_back_off: r.backoff.map(|b| retry_policy::RetryBackOff {
            base_interval: Some(duration(b)),
            max_interval: Some(duration(b * 10)),
        }),
        ..Default::default()
    }
}
