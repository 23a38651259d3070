//! HTTPRoutes (and GRPCRoutes, read as HTTPRoutes) onto their Services' ports: matches,
//! weighted backends, filters.

use super::*;

pub(super) fn attach_routes(
    objects: &Objects,
    services: &mut BTreeMap<Key, Service>,
    b: &mut Builder,
) {
    // GRPCRoutes are HTTPRoutes matching `/<service>/<method>` paths: read as such, so both kinds
    // share every check and the translation.
    let mut grpc = Vec::new();
    for (key, route) in &objects.grpc_routes {
        match grpc::as_http_route(route) {
            Ok(r) => grpc.push((key, r)),
            Err(why) => b.warn("GRPCRoute", key, format!("ignored: {why}")),
        }
    }
    // Older routes win ties, then namespace/name, as Gateway API orders conflicts.
    let mut routes: Vec<(&str, &Key, &HttpRoute)> = objects
        .http_routes
        .iter()
        .map(|(k, r)| ("HTTPRoute", k, r))
        .chain(grpc.iter().map(|(k, r)| ("GRPCRoute", *k, r)))
        .collect();
    routes.sort_by_key(|(kind, k, r)| {
        (
            r.metadata.creation_timestamp.clone().map(|t| t.0),
            *k,
            *kind,
        )
    });
    // GEP-1426: where a GRPCRoute and an HTTPRoute attach to the same Service port, the
    // GRPCRoute is kept and the HTTPRoute ignored there, as Linkerd does.
    let grpc_parents: Vec<(Parent, &Key)> = grpc
        .iter()
        .flat_map(|(key, route)| service_parents(key, route).map(move |parent| (parent, *key)))
        .collect();
    for (kind, key, route) in routes {
        let parent_refs = route.spec.parent_refs.iter().flatten();
        let parents = parent_refs.map(|p| parent_ref(key, p.into()));
        let parents = attachable((kind, key), parents, services, b);
        // A route of Gateways only is another implementation's: not read, not warned about.
        if parents.is_empty() {
            continue;
        }
        let rules = route_rules((kind, key), route, services, b);
        for parent in parents {
            let parent_key = parent.service.clone();
            let Some(svc) = services.get_mut(&parent_key) else {
                b.warn(
                    kind,
                    key,
                    format!("parent Service {parent_key} does not exist"),
                );
                continue;
            };
            let mut attached = false;
            for port in &mut svc.ports {
                if !parent.wants(port) {
                    continue;
                }
                let held = grpc_parents
                    .iter()
                    .find(|(g, _)| g.service == parent_key && g.wants(port));
                if let (Some((_, grpc_key)), "HTTPRoute") = (held, kind) {
                    b.warn(
                        kind,
                        key,
                        format!(
                            "not attached to port {} of Service {parent_key}: GRPCRoute \
                             {grpc_key} is, and takes precedence (GEP-1426)",
                            port.port
                        ),
                    );
                    attached = true;
                    continue;
                }
                let parent_port = port.port;
                attached = true;
                // A route from another namespace is that namespace's consumer route.
                let producer = key.namespace == parent_key.namespace;
                // A consumer route none of whose rules stands is no route, as a producer's is.
                if !producer && rules.is_empty() {
                    continue;
                }
                let routes = match producer {
                    true => &mut port.routes,
                    false => port
                        .consumer_routes
                        .entry(key.namespace.clone())
                        .or_default(),
                };
                routes.extend(rules.iter().cloned().map(|mut r| {
                    // GAMMA: a rule without backendRefs sends to the Service it is on.
                    if r.backends.is_empty() && r.redirect.is_none() {
                        r.backends
                            .push(Backend::to(parent_key.clone(), parent_port));
                    }
                    r
                }));
            }
            if !attached {
                let which = parent.which("HTTP");
                b.warn(
                    kind,
                    key,
                    format!("parent Service {parent_key} has no {which} port"),
                );
            }
        }
    }
}
pub(super) fn route_rules(
    (kind, key): (&str, &Key),
    route: &HttpRoute,
    services: &BTreeMap<Key, Service>,
    b: &mut Builder,
) -> Vec<RouteRule> {
    let mut out = Vec::new();
    for (i, rule) in route.spec.rules.iter().flatten().enumerate() {
        let origin = format!("{key}#{i}");
        match route_rule((kind, key), rule, &origin, services, b) {
            Ok(r) => out.push(r),
            Err(why) => b.warn(kind, key, format!("rule {i} dropped: {why}")),
        }
    }
    out
}
/// The edits of a Request- or ResponseHeaderModifier (two types of one shape).
macro_rules! header_edits {
    ($m:expr) => {
        HeaderEdits {
            set: pairs($m.set.iter().flatten().map(|h| (&h.name, &h.value))),
            add: pairs($m.add.iter().flatten().map(|h| (&h.name, &h.value))),
            remove: $m
                .remove
                .iter()
                .flatten()
                .map(|n| n.to_ascii_lowercase())
                .collect(),
        }
    };
}
/// The filters a backendRef may carry that weft applies: header modifiers, as Istio does.
pub(super) fn backend_modifier(t: &HttpRouteRulesBackendRefsFiltersType) -> bool {
    matches!(
        t,
        HttpRouteRulesBackendRefsFiltersType::RequestHeaderModifier
            | HttpRouteRulesBackendRefsFiltersType::ResponseHeaderModifier
    )
}
pub(super) fn route_rule(
    (kind, key): (&str, &Key),
    rule: &HttpRouteRules,
    origin: &str,
    services: &BTreeMap<Key, Service>,
    b: &mut Builder,
) -> Result<RouteRule, String> {
    let failure_status = if kind == "GRPCRoute" { 503 } else { 500 };
    let matches = match rule.matches.as_deref() {
        None | Some([]) => vec![RouteMatch {
            path: Some(PathMatch::Prefix("/".into())),
            ..RouteMatch::default()
        }],
        Some(ms) => ms.iter().map(route_match).collect::<Result<_, _>>()?,
    };
    // Header modifiers, mirrors, URL rewrites and redirects of the rule apply, and header
    // modifiers of single backends; any other filter refuses the rule (below).
    let (mut request_headers, mut response_headers) =
        (HeaderEdits::default(), HeaderEdits::default());
    let (mut rewrite, mut redirect) = (None, None);
    let mut mirrors = Vec::new();
    let mut unapplied = Vec::new();
    for f in rule.filters.iter().flatten() {
        match f.r#type {
            HttpRouteRulesFiltersType::RequestMirror => {
                if let Some(m) = &f.request_mirror {
                    // A mirror that cannot be resolved is said and left out; the rule stands.
                    match request_mirror(key, m, services) {
                        Ok(m) => mirrors.push(m),
                        Err(why) => b.warn(kind, key, format!("RequestMirror ignored: {why}")),
                    }
                }
            }
            HttpRouteRulesFiltersType::UrlRewrite => {
                if let Some(u) = &f.url_rewrite {
                    let path = u.path.as_ref().map(|p| {
                        let full =
                            p.r#type == HttpRouteRulesFiltersUrlRewritePathType::ReplaceFullPath;
                        path_modifier(full, &p.replace_full_path, &p.replace_prefix_match)
                    });
                    rewrite = Some(UrlRewrite {
                        hostname: u.hostname.as_deref().map(hostname).transpose()?,
                        path: path.transpose()?,
                    });
                }
            }
            HttpRouteRulesFiltersType::RequestRedirect => {
                if let Some(r) = &f.request_redirect {
                    redirect = Some(request_redirect(r)?);
                }
            }
            HttpRouteRulesFiltersType::RequestHeaderModifier => {
                if let Some(m) = &f.request_header_modifier {
                    request_headers = allowed_edits(b, (kind, key), header_edits!(m));
                }
            }
            HttpRouteRulesFiltersType::ResponseHeaderModifier => {
                if let Some(m) = &f.response_header_modifier {
                    response_headers = allowed_edits(b, (kind, key), header_edits!(m));
                }
            }
            ref other => unapplied.push(format!("{other:?}")),
        }
    }
    unapplied.extend(
        rule.backend_refs
            .iter()
            .flatten()
            .flat_map(|br| br.filters.iter().flatten())
            .filter(|f| !backend_modifier(&f.r#type))
            .map(|f| format!("{:?} on a backendRef", f.r#type)),
    );
    // Gateway API: a filter that cannot be applied must not be skipped; the requests it would
    // have handled get an error instead (an auth filter fails closed).
    let mut refused = None;
    if !unapplied.is_empty() {
        let why = format!("unsupported filters: {}", unapplied.join(", "));
        b.warn(
            kind,
            key,
            format!("{why}; the rule answers {failure_status} instead of forwarding"),
        );
        refused = Some(why);
    }
    if rewrite.is_some() && redirect.is_some() {
        return Err("URLRewrite and RequestRedirect cannot both be in one rule".into());
    }
    let by_prefix = |p: &Option<PathModifier>| matches!(p, Some(PathModifier::Prefix(_)));
    let prefix_modified = rewrite
        .as_ref()
        .is_some_and(|r: &UrlRewrite| by_prefix(&r.path))
        || redirect
            .as_ref()
            .is_some_and(|r: &Redirect| by_prefix(&r.path));
    if prefix_modified
        && matches
            .iter()
            .any(|m| !matches!(m.path, Some(PathMatch::Prefix(_))))
    {
        return Err("ReplacePrefixMatch needs every match of the rule to be a PathPrefix".into());
    }
    if redirect.is_some() && rule.backend_refs.as_ref().is_some_and(|b| !b.is_empty()) {
        return Err("RequestRedirect cannot be used with backendRefs".into());
    }
    // A backendRef that does not resolve keeps its weight: Gateway API gives its share of the
    // requests a 500 rather than sending it to the other backends. No backendRefs at all (and no
    // redirect) leaves `backends` empty: the rule then sends to the Service it is attached to.
    let mut backends = Vec::new();
    for br in rule.backend_refs.iter().flatten() {
        let svc_key = Key::new(br.namespace.as_deref().unwrap_or(&key.namespace), &br.name);
        let port = br.port.and_then(|p| u16::try_from(p).ok());
        let unresolved = if !is_service_ref(br.group.as_deref(), br.kind.as_deref()) {
            Some(format!(
                "backendRef {}: only Services are supported",
                br.name
            ))
        } else {
            resolve(services, &svc_key, port).err()
        };
        if let Some(why) = &unresolved {
            b.warn(
                kind,
                key,
                format!("{why}; its share of requests gets {failure_status}"),
            );
        }
        let (mut request_headers, mut response_headers) =
            (HeaderEdits::default(), HeaderEdits::default());
        for f in br.filters.iter().flatten() {
            if let Some(m) = &f.request_header_modifier {
                request_headers = allowed_edits(b, (kind, key), header_edits!(m));
            }
            if let Some(m) = &f.response_header_modifier {
                response_headers = allowed_edits(b, (kind, key), header_edits!(m));
            }
        }
        backends.push(Backend {
            service: svc_key,
            port: port.unwrap_or_default(),
            weight: u32::try_from(br.weight.unwrap_or(1).max(0)).unwrap_or(0),
            request_headers,
            response_headers,
            unresolved: unresolved.is_some(),
        });
    }
    if redirect.is_none() && !backends.is_empty() && backends.iter().all(|b| b.weight == 0) {
        let why = "every backendRef has weight 0".to_string();
        b.warn(
            kind,
            key,
            format!("{why}; the rule answers {failure_status}"),
        );
        refused.get_or_insert(why);
    }
    let timeouts = rule.timeouts.as_ref();
    Ok(RouteRule {
        origin: origin.to_string(),
        matches,
        backends,
        timeout: duration(
            b,
            kind,
            key,
            "timeouts.request",
            timeouts.and_then(|t| t.request.as_deref()),
        ),
        backend_timeout: duration(
            b,
            kind,
            key,
            "timeouts.backendRequest",
            timeouts.and_then(|t| t.backend_request.as_deref()),
        )
        .filter(|d| !d.is_zero()),
        retry: rule.retry.as_ref().map(|r| {
            retry(
                b,
                kind,
                key,
                r.attempts.unwrap_or(1),
                r.codes.as_deref().unwrap_or_default(),
                r.backoff.as_deref(),
            )
        }),
        request_headers,
        response_headers,
        rewrite,
        redirect,
        mirrors,
        refused,
        failure_status,
    })
}
/// A RequestMirror's Service port and share (`percent`, or `fraction` of a denominator that
/// defaults to 100; every request without either).
pub(super) fn request_mirror(
    key: &Key,
    m: &HttpRouteRulesFiltersRequestMirror,
    services: &BTreeMap<Key, Service>,
) -> Result<Mirror, String> {
    let r = &m.backend_ref;
    if !is_service_ref(r.group.as_deref(), r.kind.as_deref()) {
        return Err(format!(
            "backendRef {}: only Services are supported",
            r.name
        ));
    }
    let svc = Key::new(r.namespace.as_deref().unwrap_or(&key.namespace), &r.name);
    let port = resolve(services, &svc, r.port.and_then(|p| u16::try_from(p).ok()))?;
    let per_million = match (m.percent, &m.fraction) {
        (None, None) => 1_000_000,
        (Some(p), None) if (0..=100).contains(&p) => p as u32 * 10_000,
        (None, Some(f)) => {
            let d = f.denominator.unwrap_or(100);
            if d <= 0 || f.numerator < 0 || f.numerator > d {
                return Err(format!("fraction {}/{d} is not a share", f.numerator));
            }
            (i64::from(f.numerator) * 1_000_000 / i64::from(d)) as u32
        }
        (Some(p), None) => return Err(format!("percent {p} is not 0 to 100")),
        (Some(_), Some(_)) => return Err("percent and fraction are exclusive".into()),
    };
    Ok(Mirror {
        service: svc,
        port,
        per_million,
    })
}
/// A ReplaceFullPath or ReplacePrefixMatch modifier, checked: the value its type names is there
/// and is a path.
pub(super) fn path_modifier(
    full: bool,
    full_path: &Option<String>,
    prefix: &Option<String>,
) -> Result<PathModifier, String> {
    let (value, field) = if full {
        (full_path, "replaceFullPath")
    } else {
        (prefix, "replacePrefixMatch")
    };
    let value = match value.as_deref() {
        // Gateway API: an empty prefix replacement drops the prefix (`/foo/bar` to `/bar`).
        Some("") if !full => "/",
        Some(v) => v,
        None => return Err(format!("path modifier without {field}")),
    };
    if !value.starts_with('/') || value.chars().any(|c| c.is_ascii_control() || c == ' ') {
        return Err(format!("{field} {value:?} is not a path"));
    }
    Ok(if full {
        PathModifier::Full(value.to_string())
    } else {
        PathModifier::Prefix(value.to_string())
    })
}
/// A hostname as Gateway API's `PreciseHostname` allows it: DNS labels, no port, no wildcard.
pub(super) fn hostname(h: &str) -> Result<String, String> {
    let valid = !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if valid {
        Ok(h.to_ascii_lowercase())
    } else {
        Err(format!("hostname {h:?} is not a DNS name"))
    }
}
pub(super) fn request_redirect(
    r: &HttpRouteRulesFiltersRequestRedirect,
) -> Result<Redirect, String> {
    let status = match r.status_code {
        None => 302,
        Some(c @ (301 | 302 | 303 | 307 | 308)) => c as u16,
        Some(c) => {
            return Err(format!(
                "redirect statusCode {c} is not 301, 302, 303, 307 or 308"
            ));
        }
    };
    let port = r
        .port
        .map(|p| {
            u16::try_from(p)
                .ok()
                .filter(|p| *p > 0)
                .ok_or(format!("redirect port {p}"))
        })
        .transpose()?;
    let path = r.path.as_ref().map(|p| {
        let full = p.r#type == HttpRouteRulesFiltersRequestRedirectPathType::ReplaceFullPath;
        path_modifier(full, &p.replace_full_path, &p.replace_prefix_match)
    });
    Ok(Redirect {
        scheme: r.scheme.as_ref().map(|s| {
            match s {
                HttpRouteRulesFiltersRequestRedirectScheme::Http => "http",
                HttpRouteRulesFiltersRequestRedirectScheme::Https => "https",
            }
            .to_string()
        }),
        hostname: r.hostname.as_deref().map(hostname).transpose()?,
        path: path.transpose()?,
        port,
        status,
    })
}
/// `edits` without the headers a route may not change (the proxy would refuse the whole route
/// table for them): `Host`, which routing and the upstream's virtual hosting read, and the
/// message framing.
pub(super) fn allowed_edits(
    b: &mut Builder,
    (kind, key): (&str, &Key),
    mut edits: HeaderEdits,
) -> HeaderEdits {
    let fixed = |n: &str| {
        n.starts_with(':') || matches!(n, "host" | "content-length" | "transfer-encoding")
    };
    let mut dropped: Vec<String> = Vec::new();
    let mut keep = |n: &String| {
        let ok = !fixed(n);
        if !ok {
            dropped.push(n.clone());
        }
        ok
    };
    edits.set.retain(|(n, _)| keep(n));
    edits.add.retain(|(n, _)| keep(n));
    edits.remove.retain(|n| keep(n));
    if !dropped.is_empty() {
        b.warn(
            kind,
            key,
            format!(
                "a header modifier may not change {}: ignored",
                dropped.join(", ")
            ),
        );
    }
    edits
}
pub(super) fn check_regex(re: &str) -> Result<(), String> {
    regex::Regex::new(re)
        .map(|_| ())
        .map_err(|e| format!("invalid regular expression {re:?}: {e}"))
}
pub(super) fn string_match(regex: bool, value: &str) -> Result<StringMatch, String> {
    if regex {
        check_regex(value)?;
        Ok(StringMatch::Regex(value.to_string()))
    } else {
        Ok(StringMatch::Exact(value.to_string()))
    }
}
pub(super) fn route_match(m: &HttpRouteRulesMatches) -> Result<RouteMatch, String> {
    let path = match &m.path {
        None => Some(PathMatch::Prefix("/".into())),
        Some(p) => {
            let value = p.value.clone().unwrap_or_else(|| "/".into());
            if !value.starts_with('/')
                && p.r#type != Some(HttpRouteRulesMatchesPathType::RegularExpression)
            {
                return Err(format!("path {value:?} must start with '/'"));
            }
            Some(match p.r#type {
                Some(HttpRouteRulesMatchesPathType::Exact) => PathMatch::Exact(value),
                None | Some(HttpRouteRulesMatchesPathType::PathPrefix) => {
                    let trimmed = value.trim_end_matches('/');
                    PathMatch::Prefix(if trimmed.is_empty() {
                        "/".into()
                    } else {
                        trimmed.into()
                    })
                }
                Some(HttpRouteRulesMatchesPathType::RegularExpression) => {
                    check_regex(&value)?;
                    PathMatch::Regex(value)
                }
            })
        }
    };
    // Gateway API: of matches on one header (names case-insensitive) or one query parameter
    // (case-sensitive), only the first counts.
    let mut seen = std::collections::HashSet::new();
    let headers = m
        .headers
        .iter()
        .flatten()
        .filter(|h| seen.insert(h.name.to_ascii_lowercase()))
        .map(|h| {
            Ok(HeaderMatch {
                name: h.name.to_ascii_lowercase(),
                value: string_match(
                    h.r#type == Some(HttpRouteRulesMatchesHeadersType::RegularExpression),
                    &h.value,
                )?,
            })
        })
        .collect::<Result<_, String>>()?;
    let mut seen = std::collections::HashSet::new();
    let query = m
        .query_params
        .iter()
        .flatten()
        .filter(|q| seen.insert(q.name.as_str()))
        .map(|q| {
            Ok(QueryMatch {
                name: q.name.clone(),
                value: string_match(
                    q.r#type == Some(HttpRouteRulesMatchesQueryParamsType::RegularExpression),
                    &q.value,
                )?,
            })
        })
        .collect::<Result<_, String>>()?;
    let method = m.method.as_ref().map(|meth| {
        serde_json::to_value(meth)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    });
    Ok(RouteMatch {
        path,
        headers,
        method,
        query,
    })
}
