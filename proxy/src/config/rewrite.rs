//! What a route changes in the URL: rewrites of forwarded requests (Gateway API's `URLRewrite`,
//! Envoy's `prefix_rewrite`, `regex_rewrite`, `host_rewrite_literal`) and redirects answered in
//! place of forwarding (`RequestRedirect`, Envoy's `RedirectAction`).

use http::{HeaderValue, StatusCode};
use serde::Serialize;

/// A new path for a request.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathRewrite {
    /// The route's matched prefix (or exact path) swapped for `with`; the rest, query included,
    /// kept.
    Prefix {
        /// What the route matched.
        matched: String,
        /// What replaces it.
        with: String,
    },
    /// Every match of `pattern` in the path (not the query) replaced by `with`, where `${1}`
    /// names a capture group.
    Regex {
        /// The pattern.
        #[serde(serialize_with = "regex_str")]
        pattern: regex::Regex,
        /// The replacement, in the `regex` crate's syntax.
        with: String,
    },
    /// The whole path replaced (a redirect's `path_redirect`); the query kept.
    Full(String),
}

fn regex_str<S: serde::Serializer>(r: &regex::Regex, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(r.as_str())
}

impl PartialEq for PathRewrite {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (
                Self::Prefix { matched, with },
                Self::Prefix {
                    matched: m,
                    with: w,
                },
            ) => matched == m && with == w,
            (
                Self::Regex { pattern, with },
                Self::Regex {
                    pattern: p,
                    with: w,
                },
            ) => pattern.as_str() == p.as_str() && with == w,
            (Self::Full(a), Self::Full(b)) => a == b,
            _ => false,
        }
    }
}

impl PathRewrite {
    /// The new path and query for `path_and_query`; it is returned unchanged where the rewrite
    /// does not apply (a prefix the path does not start with).
    pub fn apply(&self, path_and_query: &str) -> String {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let new_path = match self {
            Self::Prefix { matched, with } => match path_and_query.strip_prefix(matched.as_str()) {
                Some(rest) => return format!("{with}{rest}"),
                None => return path_and_query.to_string(),
            },
            Self::Regex { pattern, with } => pattern.replace_all(path, with.as_str()).into_owned(),
            Self::Full(p) => p.clone(),
        };
        match query {
            Some(q) if !new_path.contains('?') => format!("{new_path}?{q}"),
            _ => new_path,
        }
    }
}

/// Changes to a request the route forwards.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Rewrite {
    /// A new path, if any.
    pub path: Option<PathRewrite>,
    /// A new authority (`Host`, or `:authority` upstream over HTTP/2), if any.
    #[serde(serialize_with = "header_str")]
    pub host: Option<HeaderValue>,
}

fn header_str<S: serde::Serializer>(v: &Option<HeaderValue>, s: S) -> Result<S::Ok, S::Error> {
    match v.as_ref().and_then(|v| v.to_str().ok()) {
        Some(v) => s.serialize_some(v),
        None => s.serialize_none(),
    }
}

/// A redirect the proxy answers with itself.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Redirect {
    /// The new scheme; `None` keeps the request's.
    pub scheme: Option<String>,
    /// The new host (no port); `None` keeps the request's.
    pub host: Option<String>,
    /// The new port; `None` keeps the request's, or, when the scheme changes, the new scheme's
    /// own (which is left out of the URL).
    pub port: Option<u16>,
    /// The new path; `None` keeps the request's.
    pub path: Option<PathRewrite>,
    /// Drops the query.
    pub strip_query: bool,
    /// 301, 302, 303, 307 or 308.
    #[serde(serialize_with = "super::status_code")]
    pub status: StatusCode,
}

impl Redirect {
    /// The `Location` for a request that came with `scheme`, `authority` (`host[:port]`) and
    /// `path_and_query`; `None` when there is no host to send the client to (an HTTP/1.0 request
    /// without `Host`, and a redirect that names none).
    pub fn location(&self, scheme: &str, authority: &str, path_and_query: &str) -> Option<String> {
        let (req_host, req_port) = split_authority(authority);
        let scheme_out = self.scheme.as_deref().unwrap_or(scheme);
        let host = self.host.as_deref().unwrap_or(req_host);
        if host.is_empty() {
            return None;
        }
        let port = match (self.port, &self.scheme) {
            (Some(p), _) => Some(p),
            (None, Some(_)) => None,
            (None, None) => req_port,
        };
        let port = port.filter(|p| Some(*p) != default_port(scheme_out));
        let mut pq = match &self.path {
            Some(p) => p.apply(path_and_query),
            None => path_and_query.to_string(),
        };
        if self.strip_query {
            pq.truncate(pq.find('?').unwrap_or(pq.len()));
        }
        let bracketed = host.contains(':') && !host.starts_with('[');
        let host = if bracketed {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        Some(match port {
            Some(p) => format!("{scheme_out}://{host}:{p}{pq}"),
            None => format!("{scheme_out}://{host}{pq}"),
        })
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// `host[:port]` split; an IPv6 literal keeps its brackets.
fn split_authority(authority: &str) -> (&str, Option<u16>) {
    let colon = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => i,
        _ => return (authority, None),
    };
    match authority[colon + 1..].parse() {
        Ok(p) => (&authority[..colon], Some(p)),
        Err(_) => (authority, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(matched: &str, with: &str) -> PathRewrite {
        PathRewrite::Prefix {
            matched: matched.into(),
            with: with.into(),
        }
    }

    #[test]
    fn path_rewrites() {
        let re = |p: &str, w: &str| PathRewrite::Regex {
            pattern: regex::Regex::new(p).unwrap(),
            with: w.into(),
        };
        let cases: &[(PathRewrite, &str, &str)] = &[
            (prefix("/foo/", "/bar/"), "/foo/x?q=1", "/bar/x?q=1"),
            (prefix("/foo/", "/"), "/foo/x/y", "/x/y"),
            (prefix("/foo", "/bar"), "/foo", "/bar"),
            (prefix("/foo", "/bar"), "/other", "/other"),
            (re("^/.*$", "/full"), "/a/b?x=y", "/full?x=y"),
            (
                re("^/svc/([^/]+)(/.*)$", "${2}/instance/${1}"),
                "/svc/a/b",
                "/b/instance/a",
            ),
            (PathRewrite::Full("/new".into()), "/old?k=v", "/new?k=v"),
            (PathRewrite::Full("/new?z=1".into()), "/old?k=v", "/new?z=1"),
        ];
        for (rw, input, want) in cases {
            assert_eq!(rw.apply(input), *want, "{rw:?} on {input}");
        }
    }

    #[test]
    fn redirect_locations() {
        let base = Redirect {
            scheme: None,
            host: None,
            port: None,
            path: None,
            strip_query: false,
            status: StatusCode::FOUND,
        };
        let cases: &[(Redirect, &str, &str, &str)] = &[
            (base.clone(), "web:8080", "/a?b", "http://web:8080/a?b"),
            (base.clone(), "web:80", "/a", "http://web/a"),
            (
                Redirect {
                    scheme: Some("https".into()),
                    ..base.clone()
                },
                "web:8080",
                "/a",
                "https://web/a",
            ),
            (
                Redirect {
                    scheme: Some("https".into()),
                    port: Some(8443),
                    host: Some("example.com".into()),
                    ..base.clone()
                },
                "web",
                "/a",
                "https://example.com:8443/a",
            ),
            (
                Redirect {
                    path: Some(prefix("/old/", "/new/")),
                    strip_query: true,
                    ..base.clone()
                },
                "[::1]:9000",
                "/old/x?y=1",
                "http://[::1]:9000/new/x",
            ),
            (
                Redirect {
                    host: Some("::1".into()),
                    ..base.clone()
                },
                "web",
                "/",
                "http://[::1]/",
            ),
        ];
        for (r, authority, pq, want) in cases {
            assert_eq!(
                r.location("http", authority, pq).as_deref(),
                Some(*want),
                "{r:?}"
            );
        }
        assert_eq!(base.location("http", "", "/a"), None);
    }
}
