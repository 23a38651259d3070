//! RDS: a RouteConfiguration becomes a [`RouteTable`]: matches, weighted clusters, rewrites,
//! redirects, fixed answers, mirrors and header edits.

use super::*;

pub(super) fn string_match(
    ctx: &Ctx<'_>,
    field: &str,
    m: &StringMatcher,
) -> Result<StringMatch, Invalid> {
    if m.ignore_case {
        return Err(ctx.err(format!("{field}.ignore_case"), "not supported"));
    }
    Ok(match &m.match_pattern {
        Some(string_matcher::MatchPattern::Exact(v)) => StringMatch::Exact(v.clone()),
        Some(string_matcher::MatchPattern::Prefix(v)) => StringMatch::Prefix(v.clone()),
        Some(string_matcher::MatchPattern::Suffix(v)) => StringMatch::Suffix(v.clone()),
        Some(string_matcher::MatchPattern::Contains(v)) => StringMatch::Contains(v.clone()),
        Some(string_matcher::MatchPattern::SafeRegex(r)) => StringMatch::Regex(
            full_regex(&r.regex)
                .map_err(|e| ctx.err(format!("{field}.safe_regex"), e.to_string()))?,
        ),
        _ => return Err(ctx.err(field, "unsupported match pattern")),
    })
}

/// A header condition, as routes and RBAC rules carry it.
// The deprecated matchers are still what older control planes send.
#[allow(deprecated)]
pub(super) fn header_match(
    ctx: &Ctx<'_>,
    f: &str,
    h: &xr::HeaderMatcher,
) -> Result<HeaderMatch, Invalid> {
    // Other pseudo-headers are not in the header map a request is matched against: such a
    // match would never hold (and, inverted, always).
    if h.name.starts_with(':') && !h.name.eq_ignore_ascii_case(":method") {
        return Err(ctx.err(
            format!("{f}.name"),
            format!(
                "{} cannot be matched; only :method of the pseudo-headers",
                h.name
            ),
        ));
    }
    let value = match &h.header_match_specifier {
        Some(header_matcher::HeaderMatchSpecifier::StringMatch(s)) => string_match(ctx, f, s)?,
        Some(header_matcher::HeaderMatchSpecifier::ExactMatch(v)) => StringMatch::Exact(v.clone()),
        Some(header_matcher::HeaderMatchSpecifier::PrefixMatch(v)) => {
            StringMatch::Prefix(v.clone())
        }
        Some(header_matcher::HeaderMatchSpecifier::SafeRegexMatch(r)) => {
            StringMatch::Regex(full_regex(&r.regex).map_err(|e| ctx.err(f, e.to_string()))?)
        }
        Some(header_matcher::HeaderMatchSpecifier::PresentMatch(true)) | None => {
            StringMatch::Present
        }
        _ => return Err(ctx.err(f, "unsupported header match")),
    };
    Ok(HeaderMatch {
        name: h.name.to_ascii_lowercase(),
        value,
        invert: h.invert_match,
    })
}

/// Whether a route or virtual host changes the RBAC filter's rules for its requests
/// (`RBACPerRoute`), which weft-proxy does not do: the listener's rules would be applied
/// instead, looser or tighter than asked.
fn overrides_rbac(per_filter: &std::collections::HashMap<String, Any>) -> bool {
    per_filter
        .iter()
        .any(|(name, a)| name == "envoy.filters.http.rbac" || a.type_url.ends_with(".RBACPerRoute"))
}

/// NACKs the first of `set` (a field name under `field`, and whether the resource sets it):
/// fields that change what happens to a request, which weft-proxy would otherwise accept and
/// silently not do.
pub(super) fn refuse<'a>(
    ctx: &Ctx<'_>,
    field: &str,
    set: impl IntoIterator<Item = (&'a str, bool)>,
) -> Result<(), Invalid> {
    match set.into_iter().find(|(_, is_set)| *is_set) {
        Some((name, _)) if field.is_empty() => Err(ctx.err(name, "not supported by weft-proxy")),
        Some((name, _)) => Err(ctx.err(format!("{field}.{name}"), "not supported by weft-proxy")),
        None => Ok(()),
    }
}

/// Envoy's four header-mutation lists, which route configurations, virtual hosts and routes all
/// carry, as [`refuse`] entries.
macro_rules! header_mutations {
    ($m:expr) => {
        [
            (
                "request_headers_to_add",
                !$m.request_headers_to_add.is_empty(),
            ),
            (
                "request_headers_to_remove",
                !$m.request_headers_to_remove.is_empty(),
            ),
            (
                "response_headers_to_add",
                !$m.response_headers_to_add.is_empty(),
            ),
            (
                "response_headers_to_remove",
                !$m.response_headers_to_remove.is_empty(),
            ),
        ]
    };
}

// The deprecated header matchers are still what older control planes send.
#[allow(deprecated)]
pub(super) fn route(ctx: &Ctx<'_>, field: &str, r: &xr::Route) -> Result<Route, Invalid> {
    let m = r
        .r#match
        .as_ref()
        .ok_or_else(|| ctx.err(format!("{field}.match"), "missing"))?;
    refuse(
        ctx,
        field,
        [
            ("match.runtime_fraction", m.runtime_fraction.is_some()),
            ("match.grpc", m.grpc.is_some()),
            ("match.tls_context", m.tls_context.is_some()),
            ("match.dynamic_metadata", !m.dynamic_metadata.is_empty()),
            (
                "typed_per_filter_config",
                overrides_rbac(&r.typed_per_filter_config),
            ),
        ],
    )?;
    let edits = header_edits(
        ctx,
        field,
        [&r.request_headers_to_add, &r.response_headers_to_add],
        [&r.request_headers_to_remove, &r.response_headers_to_remove],
    )?;
    if m.case_sensitive.is_some_and(|c| !c.value) {
        return Err(ctx.err(
            format!("{field}.match.case_sensitive"),
            "case-insensitive paths are not supported",
        ));
    }
    let path = match &m.path_specifier {
        Some(route_match::PathSpecifier::Prefix(p)) => PathMatch::Prefix(p.clone()),
        Some(route_match::PathSpecifier::Path(p)) => PathMatch::Exact(p.clone()),
        Some(route_match::PathSpecifier::PathSeparatedPrefix(p)) => {
            PathMatch::Segments(p.trim_end_matches('/').to_string())
        }
        Some(route_match::PathSpecifier::SafeRegex(r)) => PathMatch::Regex(
            full_regex(&r.regex)
                .map_err(|e| ctx.err(format!("{field}.match.safe_regex"), e.to_string()))?,
        ),
        _ => {
            return Err(ctx.err(
                format!("{field}.match.path_specifier"),
                "only prefix, path, path_separated_prefix and safe_regex",
            ));
        }
    };
    let mut headers = Vec::new();
    for (i, h) in m.headers.iter().enumerate() {
        headers.push(header_match(
            ctx,
            &format!("{field}.match.headers[{i}]"),
            h,
        )?);
    }
    let mut query = Vec::new();
    for (i, q) in m.query_parameters.iter().enumerate() {
        let f = format!("{field}.match.query_parameters[{i}]");
        let value = match &q.query_parameter_match_specifier {
            Some(query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(s)) => {
                string_match(ctx, &f, s)?
            }
            Some(query_parameter_matcher::QueryParameterMatchSpecifier::PresentMatch(true))
            | None => StringMatch::Present,
            _ => return Err(ctx.err(f, "unsupported query match")),
        };
        query.push(QueryMatch {
            name: q.name.clone(),
            value,
        });
    }
    let edits = (!edits.is_empty()).then(|| Arc::new(edits));
    let matched = match &path {
        PathMatch::Prefix(p) | PathMatch::Exact(p) | PathMatch::Segments(p) => Some(p.as_str()),
        PathMatch::Regex(_) => None,
    };
    let prefix_rewrite = |f: &str, with: &str| -> Result<PathRewrite, Invalid> {
        let matched = matched.ok_or_else(|| {
            ctx.err(
                f,
                "a prefix rewrite needs a prefix or path match, not a regex",
            )
        })?;
        Ok(PathRewrite::Prefix {
            matched: matched.to_string(),
            with: with.to_string(),
        })
    };
    let mut out = Route {
        name: r.name.clone(),
        path: path.clone(),
        headers,
        query,
        clusters: Vec::new(),
        timeout: None,
        edits,
        rewrite: None,
        redirect: None,
        mirrors: Vec::new(),
        direct: None,
        cluster_not_found: http::StatusCode::SERVICE_UNAVAILABLE,
    };
    match &r.action {
        Some(route::Action::Route(action)) => {
            forward(
                ctx,
                &format!("{field}.route"),
                action,
                &prefix_rewrite,
                &mut out,
            )?;
        }
        Some(route::Action::Redirect(action)) => {
            let f = format!("{field}.redirect");
            out.redirect = Some(Arc::new(redirect(ctx, &f, action, &prefix_rewrite)?));
        }
        Some(route::Action::DirectResponse(d)) => {
            out.direct = Some(direct_response(
                ctx,
                &format!("{field}.direct_response"),
                d,
            )?);
        }
        _ => {
            return Err(ctx.err(
                format!("{field}.action"),
                "only route, redirect and direct_response actions are supported",
            ));
        }
    }
    Ok(out)
}

/// A `direct_response`: a status Envoy accepts (200-599) and an inline body.
pub(super) fn direct_response(
    ctx: &Ctx<'_>,
    field: &str,
    d: &xr::DirectResponseAction,
) -> Result<DirectResponse, Invalid> {
    use weft_proto::xds::config::core::v3::data_source::Specifier;
    refuse(ctx, field, [("body_format", d.body_format.is_some())])?;
    let status = u16::try_from(d.status)
        .ok()
        .filter(|s| (200..600).contains(s))
        .and_then(|s| http::StatusCode::from_u16(s).ok())
        .ok_or_else(|| {
            ctx.err(
                format!("{field}.status"),
                format!("bad status {}", d.status),
            )
        })?;
    let body = match d.body.as_ref().and_then(|b| b.specifier.as_ref()) {
        None => bytes::Bytes::new(),
        Some(Specifier::InlineString(s)) => bytes::Bytes::from(s.clone()),
        Some(Specifier::InlineBytes(b)) => bytes::Bytes::from(b.clone()),
        Some(_) => {
            return Err(ctx.err(
                format!("{field}.body"),
                "only an inline string or bytes is supported",
            ));
        }
    };
    Ok(DirectResponse { status, body })
}

/// One of a route's weighted clusters, with its header edits (Envoy applies them before the
/// route's) composed with the route's `edits`.
pub(super) fn weighted_cluster(
    ctx: &Ctx<'_>,
    field: &str,
    c: &xr::weighted_cluster::ClusterWeight,
    route: Option<&Arc<HeaderEdits>>,
) -> Result<WeightedCluster, Invalid> {
    refuse(
        ctx,
        field,
        [
            ("cluster_header", !c.cluster_header.is_empty()),
            ("metadata_match", c.metadata_match.is_some()),
            ("host_rewrite_specifier", c.host_rewrite_specifier.is_some()),
        ],
    )?;
    let own = header_edits(
        ctx,
        field,
        [&c.request_headers_to_add, &c.response_headers_to_add],
        [&c.request_headers_to_remove, &c.response_headers_to_remove],
    )?;
    let edits = match route {
        _ if own.is_empty() => route.cloned(),
        None => Some(Arc::new(own)),
        Some(r) => Some(Arc::new(own.then(r))),
    };
    Ok(WeightedCluster {
        name: c.name.clone(),
        weight: c.weight.map_or(0, |w| w.value),
        edits,
    })
}

/// A route action: clusters, timeout and rewrites, into `out`.
pub(super) fn forward(
    ctx: &Ctx<'_>,
    field: &str,
    action: &xr::RouteAction,
    prefix_rewrite: &dyn Fn(&str, &str) -> Result<PathRewrite, Invalid>,
    out: &mut Route,
) -> Result<(), Invalid> {
    refuse(
        ctx,
        field,
        [
            ("path_rewrite_policy", action.path_rewrite_policy.is_some()),
            ("hedge_policy", action.hedge_policy.is_some()),
            // Subsets: without them the route would spread over every endpoint.
            ("metadata_match", action.metadata_match.is_some()),
            (
                "internal_redirect_policy",
                action.internal_redirect_policy.is_some(),
            ),
        ],
    )?;
    use route_action::ClusterNotFoundResponseCode as NotFound;
    out.cluster_not_found = match NotFound::try_from(action.cluster_not_found_response_code) {
        Ok(NotFound::ServiceUnavailable) => http::StatusCode::SERVICE_UNAVAILABLE,
        Ok(NotFound::NotFound) => http::StatusCode::NOT_FOUND,
        Ok(NotFound::InternalServerError) => http::StatusCode::INTERNAL_SERVER_ERROR,
        Err(_) => {
            return Err(ctx.err(
                format!("{field}.cluster_not_found_response_code"),
                format!("unknown code {}", action.cluster_not_found_response_code),
            ));
        }
    };
    out.clusters = match &action.cluster_specifier {
        Some(route_action::ClusterSpecifier::Cluster(c)) => vec![WeightedCluster {
            name: c.clone(),
            weight: 1,
            edits: out.edits.clone(),
        }],
        Some(route_action::ClusterSpecifier::WeightedClusters(w)) => w
            .clusters
            .iter()
            .enumerate()
            .map(|(i, c)| {
                weighted_cluster(
                    ctx,
                    &format!("{field}.weighted_clusters.clusters[{i}]"),
                    c,
                    out.edits.as_ref(),
                )
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(ctx.err(
                format!("{field}.cluster_specifier"),
                "only cluster and weighted_clusters",
            ));
        }
    };
    // Envoy: an unset route timeout means 15 s, zero means none; `max_stream_duration` bounds it
    // further when set.
    let route_timeout = match &action.timeout {
        None => Some(Duration::from_secs(15)),
        Some(t) => Some(duration(t)).filter(|d| !d.is_zero()),
    };
    let stream_max = action
        .max_stream_duration
        .as_ref()
        .and_then(|m| m.max_stream_duration.as_ref())
        .map(duration)
        .filter(|d| !d.is_zero());
    out.timeout = match (route_timeout, stream_max) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let path = match (action.prefix_rewrite.as_str(), &action.regex_rewrite) {
        ("", None) => None,
        (with, None) => Some(prefix_rewrite(&format!("{field}.prefix_rewrite"), with)?),
        ("", Some(rr)) => {
            let f = format!("{field}.regex_rewrite");
            let pattern = rr
                .pattern
                .as_ref()
                .ok_or_else(|| ctx.err(format!("{f}.pattern"), "missing"))?;
            Some(PathRewrite::Regex {
                pattern: regex::Regex::new(&pattern.regex)
                    .map_err(|e| ctx.err(format!("{f}.pattern.regex"), e.to_string()))?,
                with: re2_substitution(&rr.substitution)
                    .map_err(|e| ctx.err(format!("{f}.substitution"), e))?,
            })
        }
        _ => {
            return Err(ctx.err(
                format!("{field}.regex_rewrite"),
                "prefix_rewrite and regex_rewrite are exclusive",
            ));
        }
    };
    let host = match &action.host_rewrite_specifier {
        None => None,
        Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(h)) => Some(
            http::uri::Authority::try_from(h.as_str())
                .ok()
                .and_then(|a| http::HeaderValue::try_from(a.as_str()).ok())
                .ok_or_else(|| {
                    ctx.err(
                        format!("{field}.host_rewrite_literal"),
                        format!("not a host: {h:?}"),
                    )
                })?,
        ),
        Some(_) => {
            return Err(ctx.err(
                format!("{field}.host_rewrite_specifier"),
                "only host_rewrite_literal",
            ));
        }
    };
    if path.is_some() || host.is_some() {
        out.rewrite = Some(Arc::new(Rewrite { path, host }));
    }
    out.mirrors = action
        .request_mirror_policies
        .iter()
        .enumerate()
        .map(|(i, m)| mirror_policy(ctx, &format!("{field}.request_mirror_policies[{i}]"), m))
        .collect::<Result<_, _>>()?;
    Ok(())
}

/// A mirror policy: a named cluster and a static share (a runtime key would need Envoy's runtime).
pub(super) fn mirror_policy(
    ctx: &Ctx<'_>,
    field: &str,
    m: &route_action::RequestMirrorPolicy,
) -> Result<MirrorPolicy, Invalid> {
    use weft_proto::xds::r#type::v3::fractional_percent::DenominatorType;
    refuse(
        ctx,
        field,
        [
            ("cluster_header", !m.cluster_header.is_empty()),
            ("trace_sampled", m.trace_sampled.is_some_and(|t| t.value)),
            (
                "disable_shadow_host_suffix_append",
                m.disable_shadow_host_suffix_append,
            ),
            (
                "runtime_fraction.runtime_key",
                m.runtime_fraction
                    .as_ref()
                    .is_some_and(|f| !f.runtime_key.is_empty()),
            ),
        ],
    )?;
    if m.cluster.is_empty() {
        return Err(ctx.err(format!("{field}.cluster"), "missing"));
    }
    // Envoy: no fraction means every request.
    let per_million = match m
        .runtime_fraction
        .as_ref()
        .and_then(|f| f.default_value.as_ref())
    {
        None => 1_000_000,
        Some(p) => {
            let scale = match DenominatorType::try_from(p.denominator) {
                Ok(DenominatorType::Hundred) => 10_000,
                Ok(DenominatorType::TenThousand) => 100,
                Ok(DenominatorType::Million) => 1,
                Err(_) => {
                    return Err(ctx.err(
                        format!("{field}.runtime_fraction.default_value.denominator"),
                        "unknown",
                    ));
                }
            };
            p.numerator.saturating_mul(scale).min(1_000_000)
        }
    };
    Ok(MirrorPolicy {
        cluster: m.cluster.clone(),
        per_million,
    })
}

/// A redirect action, checked: a known status, a port in range, a host without a port.
pub(super) fn redirect(
    ctx: &Ctx<'_>,
    field: &str,
    r: &xr::RedirectAction,
    prefix_rewrite: &dyn Fn(&str, &str) -> Result<PathRewrite, Invalid>,
) -> Result<Redirect, Invalid> {
    use xr::redirect_action::{PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier};
    let status = match RedirectResponseCode::try_from(r.response_code) {
        Ok(RedirectResponseCode::MovedPermanently) => http::StatusCode::MOVED_PERMANENTLY,
        Ok(RedirectResponseCode::Found) => http::StatusCode::FOUND,
        Ok(RedirectResponseCode::SeeOther) => http::StatusCode::SEE_OTHER,
        Ok(RedirectResponseCode::TemporaryRedirect) => http::StatusCode::TEMPORARY_REDIRECT,
        Ok(RedirectResponseCode::PermanentRedirect) => http::StatusCode::PERMANENT_REDIRECT,
        Err(_) => {
            return Err(ctx.err(
                format!("{field}.response_code"),
                format!("unknown code {}", r.response_code),
            ));
        }
    };
    let scheme = match &r.scheme_rewrite_specifier {
        Some(SchemeRewriteSpecifier::HttpsRedirect(true)) => Some("https".to_string()),
        Some(SchemeRewriteSpecifier::SchemeRedirect(s)) if !s.is_empty() => {
            http::uri::Scheme::try_from(s.as_str()).map_err(|_| {
                ctx.err(
                    format!("{field}.scheme_redirect"),
                    format!("bad scheme {s:?}"),
                )
            })?;
            Some(s.to_ascii_lowercase())
        }
        _ => None,
    };
    let host = match r.host_redirect.as_str() {
        "" => None,
        h => {
            let bare = h.trim_start_matches('[').trim_end_matches(']');
            let valid = bare.parse::<IpAddr>().is_ok()
                || (!h.contains(':') && http::uri::Authority::try_from(h).is_ok());
            if !valid {
                return Err(ctx.err(
                    format!("{field}.host_redirect"),
                    format!("not a host: {h:?}"),
                ));
            }
            Some(bare.to_string())
        }
    };
    let port = match r.port_redirect {
        0 => None,
        p => Some(u16::try_from(p).map_err(|_| {
            ctx.err(
                format!("{field}.port_redirect"),
                format!("{p} is not a port"),
            )
        })?),
    };
    let path = match &r.path_rewrite_specifier {
        None => None,
        Some(PathRewriteSpecifier::PathRedirect(p)) if p.starts_with('/') => {
            Some(PathRewrite::Full(p.clone()))
        }
        Some(PathRewriteSpecifier::PathRedirect(p)) => {
            return Err(ctx.err(
                format!("{field}.path_redirect"),
                format!("{p:?} does not start with /"),
            ));
        }
        Some(PathRewriteSpecifier::PrefixRewrite(p)) => {
            Some(prefix_rewrite(&format!("{field}.prefix_rewrite"), p)?)
        }
        Some(_) => {
            return Err(ctx.err(
                format!("{field}.path_rewrite_specifier"),
                "only path_redirect and prefix_rewrite",
            ));
        }
    };
    Ok(Redirect {
        scheme,
        host,
        port,
        path,
        strip_query: r.strip_query,
        status,
    })
}

/// An RE2 substitution (`\1` names a group, `\\` is a backslash) in the `regex` crate's syntax
/// (`${1}`, and `$$` for a dollar).
pub(super) fn re2_substitution(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(d) if d.is_ascii_digit() => out.push_str(&format!("${{{d}}}")),
                Some('\\') => out.push('\\'),
                other => return Err(format!("bad escape \\{}", other.unwrap_or(' '))),
            },
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// The header edits of a route or a weighted cluster, both ways: (request, response) additions
/// and removals, Envoy's `request_headers_*` and `response_headers_*`.
pub(super) fn header_edits(
    ctx: &Ctx<'_>,
    field: &str,
    [request_add, response_add]: [&[weft_proto::xds::config::core::v3::HeaderValueOption]; 2],
    [request_remove, response_remove]: [&[String]; 2],
) -> Result<HeaderEdits, Invalid> {
    Ok(HeaderEdits {
        request: edits(
            ctx,
            &format!("{field}.request_headers"),
            request_add,
            request_remove,
        )?,
        response: edits(
            ctx,
            &format!("{field}.response_headers"),
            response_add,
            response_remove,
        )?,
    })
}

/// A route's header edits of one direction (`<field>_to_add`, `<field>_to_remove`), checked: names and values valid, none the proxy
/// must not let a route change (pseudo-headers, `host`, framing), and no command operators
/// (`%REQ(...)%`), which Envoy would substitute and weft-proxy cannot; `%%` is a plain `%`.
pub(super) fn edits(
    ctx: &Ctx<'_>,
    field: &str,
    add: &[weft_proto::xds::config::core::v3::HeaderValueOption],
    remove: &[String],
) -> Result<Edits, Invalid> {
    use weft_proto::xds::config::core::v3::header_value_option::HeaderAppendAction as Action;
    let name = |f: &str, n: &str| -> Result<http::HeaderName, Invalid> {
        let lower = n.to_ascii_lowercase();
        let forbidden = lower.starts_with(':')
            || matches!(
                lower.as_str(),
                "host" | "content-length" | "transfer-encoding"
            );
        if forbidden {
            return Err(ctx.err(f, format!("header {n} may not be changed by a route")));
        }
        http::HeaderName::try_from(lower).map_err(|_| ctx.err(f, format!("bad header name {n:?}")))
    };
    let mut out = Edits {
        remove: remove
            .iter()
            .enumerate()
            .map(|(i, n)| name(&format!("{field}_to_remove[{i}]"), n))
            .collect::<Result<_, _>>()?,
        put: Vec::new(),
    };
    for (i, opt) in add.iter().enumerate() {
        let f = format!("{field}_to_add[{i}]");
        let h = opt
            .header
            .as_ref()
            .ok_or_else(|| ctx.err(format!("{f}.header"), "missing"))?;
        let raw = if h.raw_value.is_empty() {
            h.value.clone()
        } else {
            String::from_utf8(h.raw_value.clone())
                .map_err(|_| ctx.err(format!("{f}.header.raw_value"), "not UTF-8"))?
        };
        let pieces: Vec<&str> = raw.split("%%").collect();
        if pieces.iter().any(|p| p.contains('%')) {
            return Err(ctx.err(
                format!("{f}.header.value"),
                "command operators (%...%) are not supported",
            ));
        }
        let value = http::HeaderValue::try_from(pieces.join("%"))
            .map_err(|_| ctx.err(format!("{f}.header.value"), "not a valid header value"))?;
        // The deprecated `append`, when set, decides (Envoy's rule).
        #[allow(deprecated)]
        let action = match opt.append {
            Some(a) if a.value => Action::AppendIfExistsOrAdd,
            Some(_) => Action::OverwriteIfExistsOrAdd,
            None => Action::try_from(opt.append_action)
                .map_err(|_| ctx.err(format!("{f}.append_action"), "unknown append action"))?,
        };
        out.put.push(Put {
            name: name(&format!("{f}.header.key"), &h.key)?,
            value,
            append: match action {
                Action::AppendIfExistsOrAdd => Append::AppendIfExistsOrAdd,
                Action::AddIfAbsent => Append::AddIfAbsent,
                Action::OverwriteIfExistsOrAdd => Append::OverwriteIfExistsOrAdd,
                Action::OverwriteIfExists => Append::OverwriteIfExists,
            },
        });
    }
    Ok(out)
}

impl TryFrom<&xr::RouteConfiguration> for RouteTable {
    type Error = Invalid;

    fn try_from(rc: &xr::RouteConfiguration) -> Result<Self, Invalid> {
        let ctx = Ctx(&rc.name);
        refuse(
            &ctx,
            "",
            header_mutations!(rc).into_iter().chain([
                ("vhds", rc.vhds.is_some()),
                (
                    "request_mirror_policies",
                    !rc.request_mirror_policies.is_empty(),
                ),
            ]),
        )?;
        let mut virtual_hosts = Vec::new();
        for (i, vh) in rc.virtual_hosts.iter().enumerate() {
            refuse(
                &ctx,
                &format!("virtual_hosts[{i}]"),
                header_mutations!(vh).into_iter().chain([
                    ("require_tls", vh.require_tls != 0),
                    (
                        "typed_per_filter_config",
                        overrides_rbac(&vh.typed_per_filter_config),
                    ),
                    ("matcher", vh.matcher.is_some()),
                    (
                        "request_mirror_policies",
                        !vh.request_mirror_policies.is_empty(),
                    ),
                ]),
            )?;
            let routes = vh
                .routes
                .iter()
                .enumerate()
                .map(|(j, r)| route(&ctx, &format!("virtual_hosts[{i}].routes[{j}]"), r))
                .collect::<Result<_, _>>()?;
            virtual_hosts.push(VirtualHost {
                domains: vh.domains.clone(),
                routes,
            });
        }
        Ok(Self {
            name: rc.name.clone(),
            virtual_hosts,
        })
    }
}
