//! Route tables: authority -> virtual host -> first matching route -> weighted clusters.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::edits::HeaderEdits;
use super::rewrite::{Redirect, Rewrite};

/// A RouteConfiguration.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RouteTable {
    /// xDS name.
    pub name: String,
    /// Virtual hosts in order.
    pub virtual_hosts: Vec<VirtualHost>,
}

/// Routes for a set of domains.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VirtualHost {
    /// Domains: exact, `*`, `*.suffix` or `prefix.*`; a port is ignored when the domain has none.
    pub domains: Vec<String>,
    /// Routes, first match wins.
    pub routes: Vec<Route>,
}

/// One route.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Route {
    /// Name, for logs and metrics.
    pub name: String,
    /// Path condition.
    pub path: PathMatch,
    /// Header conditions, all must hold (`:method` included).
    pub headers: Vec<HeaderMatch>,
    /// Query conditions, all must hold.
    pub query: Vec<QueryMatch>,
    /// Targets and their weights.
    pub clusters: Vec<WeightedCluster>,
    /// Whole-request timeout; `None` for none.
    #[serde(rename = "timeout_ms", serialize_with = "super::optional_ms")]
    pub timeout: Option<Duration>,
    /// Header edits to the requests and responses it carries; `None` for none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edits: Option<Arc<HeaderEdits>>,
    /// Path and host changes to the requests it forwards; `None` for none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Arc<Rewrite>>,
    /// Answered with this redirect instead of forwarded (`clusters` is then empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect: Option<Arc<Redirect>>,
    /// Clusters a copy of each request also goes to.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<MirrorPolicy>,
    /// Answered with this instead of forwarded (Envoy's `direct_response`; `clusters` is then
    /// empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direct: Option<DirectResponse>,
    /// The status a request gets when the cluster drawn for it does not exist (Envoy's
    /// `cluster_not_found_response_code`): 503, or the 500 Gateway API gives the share of a
    /// backend that does not resolve.
    #[serde(serialize_with = "super::status_code")]
    pub cluster_not_found: http::StatusCode,
}

/// An answer a route gives itself.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DirectResponse {
    /// Status.
    #[serde(serialize_with = "super::status_code")]
    pub status: http::StatusCode,
    /// Body, sent as `text/plain`; empty for none.
    #[serde(serialize_with = "super::lossy_text")]
    pub body: bytes::Bytes,
}

/// A cluster that gets copies of a route's requests.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MirrorPolicy {
    /// Cluster name.
    pub cluster: String,
    /// Share of requests copied, in millionths.
    pub per_million: u32,
}

impl MirrorPolicy {
    /// Whether this request is copied: a fair draw at the policy's rate.
    pub fn sampled(&self) -> bool {
        self.per_million >= 1_000_000 || fastrand::u32(..1_000_000) < self.per_million
    }
}

/// One of `clusters`, each as likely as its share of the weights; `None` when there is none, or
/// every weight is 0.
pub fn pick_weighted(clusters: &[WeightedCluster]) -> Option<&WeightedCluster> {
    match clusters {
        [] => None,
        [one] => Some(one),
        many => {
            let total: u64 = many.iter().map(|c| u64::from(c.weight)).sum();
            if total == 0 {
                return None;
            }
            let mut n = fastrand::u64(0..total);
            many.iter().find(|c| {
                if n < u64::from(c.weight) {
                    true
                } else {
                    n -= u64::from(c.weight);
                    false
                }
            })
        }
    }
}

/// A weighted target cluster.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WeightedCluster {
    /// Cluster name.
    pub name: String,
    /// Relative weight.
    pub weight: u32,
    /// Header edits of requests sent to it and their responses: its own (a Gateway API
    /// backendRef's filters) and then the route's, composed at config time; `None` for none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edits: Option<Arc<HeaderEdits>>,
}

impl WeightedCluster {
    /// A cluster of this weight, with no header edits of its own (a `tcp_proxy`'s).
    pub fn plain(name: String, weight: u32) -> Self {
        Self {
            name,
            weight,
            edits: None,
        }
    }
}

/// Path condition.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathMatch {
    /// Starts with.
    Prefix(String),
    /// Equals.
    Exact(String),
    /// This prefix, ending where a path segment ends (`/a` matches `/a`, `/a/b`, `/a?q`, not
    /// `/ab`): Envoy's `path_separated_prefix`, Gateway API's `PathPrefix`.
    Segments(String),
    /// Whole-path regular expression.
    Regex(#[serde(with = "regex_str")] regex::Regex),
}

impl PartialEq for PathMatch {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Prefix(a), Self::Prefix(b))
            | (Self::Exact(a), Self::Exact(b))
            | (Self::Segments(a), Self::Segments(b)) => a == b,
            (Self::Regex(a), Self::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

/// Value condition.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StringMatch {
    /// Equals.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// Ends with.
    Suffix(String),
    /// Contains.
    Contains(String),
    /// Whole-value regular expression.
    Regex(#[serde(with = "regex_str")] regex::Regex),
    /// Present at all.
    Present,
}

impl PartialEq for StringMatch {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Exact(a), Self::Exact(b))
            | (Self::Prefix(a), Self::Prefix(b))
            | (Self::Suffix(a), Self::Suffix(b))
            | (Self::Contains(a), Self::Contains(b)) => a == b,
            (Self::Regex(a), Self::Regex(b)) => a.as_str() == b.as_str(),
            (Self::Present, Self::Present) => true,
            _ => false,
        }
    }
}

impl StringMatch {
    /// Whether `value` satisfies the condition.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(v) => v == value,
            Self::Prefix(p) => value.starts_with(p.as_str()),
            Self::Suffix(p) => value.ends_with(p.as_str()),
            Self::Contains(p) => value.contains(p.as_str()),
            Self::Regex(r) => r.is_match(value),
            Self::Present => true,
        }
    }
}

/// Header condition.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HeaderMatch {
    /// Lowercase name; `:method` for the method.
    pub name: String,
    /// Condition on the value.
    pub value: StringMatch,
    /// Inverts the result.
    pub invert: bool,
}

impl HeaderMatch {
    /// Whether a request satisfies the condition, with Envoy's semantics: repeated headers
    /// match as their comma-joined value, and an absent header matches nothing, inverted or
    /// not (presence checks aside).
    pub fn matches(&self, parts: &impl RequestView) -> bool {
        // Borrowed in the usual single-value case; joined only for repeated headers.
        let value: Option<std::borrow::Cow<'_, str>> = if self.name == ":method" {
            Some(parts.method().into())
        } else {
            let mut values = parts.header_values(self.name.as_str());
            match (values.next(), values.next()) {
                (None, _) => None,
                (Some(one), None) => Some(one.into()),
                (Some(a), Some(b)) => {
                    let mut joined = format!("{a},{b}");
                    for v in values {
                        joined.push(',');
                        joined.push_str(v);
                    }
                    Some(joined.into())
                }
            }
        };
        match (value, &self.value) {
            (None, StringMatch::Present) => self.invert,
            (None, _) => false,
            (Some(v), m) => m.matches(&v) != self.invert,
        }
    }
}

/// Query parameter condition.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct QueryMatch {
    /// Parameter name.
    pub name: String,
    /// Condition on the value.
    pub value: StringMatch,
}

/// Anchors a regular expression so it must match the whole input, as Envoy's `safe_regex` does.
pub fn full_regex(re: &str) -> Result<regex::Regex, regex::Error> {
    regex::Regex::new(&format!("^(?:{re})$"))
}

mod regex_str {
    pub fn serialize<S: serde::Serializer>(r: &regex::Regex, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(r.as_str())
    }
}

/// What routing reads of a request. Implemented by hyper's parsed requests and by the HTTP/1.1
/// fast path's, which routes straight from the bytes it read without building a header map.
pub trait RequestView {
    /// The method, as sent.
    fn method(&self) -> &str;
    /// The path, without the query.
    fn path(&self) -> &str;
    /// The query, without the `?`.
    fn query(&self) -> Option<&str>;
    /// The values of a header (lowercase `name`) that are valid UTF-8, in order.
    fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a;
}

impl RequestView for http::request::Parts {
    fn method(&self) -> &str {
        self.method.as_str()
    }

    fn path(&self) -> &str {
        self.uri.path()
    }

    fn query(&self) -> Option<&str> {
        self.uri.query()
    }

    fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
    }
}

impl RouteTable {
    /// The first route matching a request, searching the virtual host of its authority.
    pub fn find(&self, authority: &str, parts: &impl RequestView) -> Option<&Route> {
        let vh = self.virtual_host(authority)?;
        vh.routes.iter().find(|r| r.matches(parts))
    }

    /// Envoy's order: exact domain, then the longest suffix wildcard (`*.example.com`), then the
    /// longest prefix wildcard (`api.*`), then `*`; case-insensitive, port optional.
    fn virtual_host(&self, authority: &str) -> Option<&VirtualHost> {
        // Compared case-insensitively in place: no lowercase copies per request. Authorities are
        // ASCII (hyper rejects anything else), so byte offsets are character offsets.
        let host = authority.rsplit_once(':').map_or(authority, |(h, p)| {
            if p.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                authority
            }
        });
        let ends_with = |s: &str, suffix: &str| {
            s.len() >= suffix.len()
                && s.get(s.len() - suffix.len()..)
                    .is_some_and(|t| t.eq_ignore_ascii_case(suffix))
        };
        let starts_with = |s: &str, prefix: &str| {
            s.get(..prefix.len())
                .is_some_and(|t| t.eq_ignore_ascii_case(prefix))
        };
        let score = |d: &str| -> Option<(u8, usize)> {
            if d == "*" {
                Some((0, 0))
            } else if d.eq_ignore_ascii_case(authority) || d.eq_ignore_ascii_case(host) {
                Some((3, d.len()))
            } else if let Some(suffix) = d.strip_prefix('*') {
                (!suffix.is_empty() && ends_with(host, suffix)).then_some((2, suffix.len()))
            } else if let Some(prefix) = d.strip_suffix('*') {
                starts_with(host, prefix).then_some((1, prefix.len()))
            } else {
                None
            }
        };
        self.virtual_hosts
            .iter()
            .filter_map(|vh| {
                vh.domains
                    .iter()
                    .filter_map(|d| score(d))
                    .max()
                    .map(|s| (s, vh))
            })
            .max_by_key(|(s, _)| *s)
            .map(|(_, vh)| vh)
    }
}

impl Route {
    /// Whether a request satisfies every condition.
    pub fn matches(&self, parts: &impl RequestView) -> bool {
        let path = parts.path();
        let path_ok = match &self.path {
            PathMatch::Prefix(p) => path.starts_with(p.as_str()),
            PathMatch::Exact(p) => path == p,
            PathMatch::Segments(p) => path
                .strip_prefix(p.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
            PathMatch::Regex(r) => r.is_match(path),
        };
        path_ok
            && self.headers.iter().all(|h| h.matches(parts))
            && self.query.iter().all(|q| {
                parts.query().is_some_and(|qs| {
                    qs.split('&').any(|kv| {
                        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                        k == q.name && q.value.matches(v)
                    })
                })
            })
    }

    /// Picks a target cluster by weight.
    pub fn pick_cluster(&self) -> Option<&WeightedCluster> {
        pick_weighted(&self.clusters)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn route(path: PathMatch, headers: Vec<HeaderMatch>, query: Vec<QueryMatch>) -> Route {
        Route {
            name: "r".into(),
            path,
            headers,
            query,
            clusters: vec![WeightedCluster {
                name: "c".into(),
                weight: 1,
                edits: None,
            }],
            timeout: None,
            edits: None,
            rewrite: None,
            redirect: None,
            mirrors: Vec::new(),
            direct: None,
            cluster_not_found: http::StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    #[test]
    fn route_matching() {
        let exact = |s: &str| StringMatch::Exact(s.into());
        let cases: Vec<(Route, http::request::Parts, bool)> = vec![
            (
                route(PathMatch::Prefix("/a".into()), vec![], vec![]),
                parts("GET", "/a/b", &[]),
                true,
            ),
            (
                route(PathMatch::Prefix("/a".into()), vec![], vec![]),
                parts("GET", "/b", &[]),
                false,
            ),
            (
                route(PathMatch::Exact("/a".into()), vec![], vec![]),
                parts("GET", "/a?x=1", &[]),
                true,
            ),
            (
                route(PathMatch::Exact("/a".into()), vec![], vec![]),
                parts("GET", "/a/", &[]),
                false,
            ),
            (
                route(PathMatch::Segments("/a".into()), vec![], vec![]),
                parts("GET", "/a?x=1", &[]),
                true,
            ),
            (
                route(PathMatch::Segments("/a".into()), vec![], vec![]),
                parts("GET", "/a/b", &[]),
                true,
            ),
            (
                route(PathMatch::Segments("/a".into()), vec![], vec![]),
                parts("GET", "/ab", &[]),
                false,
            ),
            (
                route(PathMatch::Segments(String::new()), vec![], vec![]),
                parts("GET", "/x", &[]),
                true,
            ),
            (
                route(
                    PathMatch::Regex(full_regex("/u/[0-9]+").unwrap()),
                    vec![],
                    vec![],
                ),
                parts("GET", "/u/42", &[]),
                true,
            ),
            (
                route(
                    PathMatch::Regex(full_regex("/u/[0-9]+").unwrap()),
                    vec![],
                    vec![],
                ),
                parts("GET", "/u/42/x", &[]),
                false,
            ),
            (
                route(
                    PathMatch::Prefix("/".into()),
                    vec![HeaderMatch {
                        name: ":method".into(),
                        value: exact("POST"),
                        invert: false,
                    }],
                    vec![],
                ),
                parts("GET", "/", &[]),
                false,
            ),
            (
                route(
                    PathMatch::Prefix("/".into()),
                    vec![HeaderMatch {
                        name: "x-v".into(),
                        value: exact("1,2"),
                        invert: false,
                    }],
                    vec![],
                ),
                parts("GET", "/", &[("x-v", "1"), ("x-v", "2")]),
                true,
            ),
            (
                route(
                    PathMatch::Prefix("/".into()),
                    vec![HeaderMatch {
                        name: "x-tier".into(),
                        value: exact("free"),
                        invert: true,
                    }],
                    vec![],
                ),
                parts("GET", "/", &[]),
                false,
            ),
            (
                route(
                    PathMatch::Prefix("/".into()),
                    vec![HeaderMatch {
                        name: "x-v".into(),
                        value: StringMatch::Present,
                        invert: true,
                    }],
                    vec![],
                ),
                parts("GET", "/", &[]),
                true,
            ),
            (
                route(
                    PathMatch::Prefix("/".into()),
                    vec![],
                    vec![QueryMatch {
                        name: "debug".into(),
                        value: exact("1"),
                    }],
                ),
                parts("GET", "/x?a=b&debug=1", &[]),
                true,
            ),
            (
                route(
                    PathMatch::Prefix("/".into()),
                    vec![],
                    vec![QueryMatch {
                        name: "debug".into(),
                        value: exact("1"),
                    }],
                ),
                parts("GET", "/x?debug=0", &[]),
                false,
            ),
        ];
        for (i, (r, p, want)) in cases.iter().enumerate() {
            assert_eq!(r.matches(p), *want, "case {i}: {:?} {}", r.path, p.uri);
        }
    }

    #[test]
    fn virtual_host_selection_prefers_exact_then_longest_wildcard() {
        let vh = |d: &str, name: &str| VirtualHost {
            domains: vec![d.into()],
            routes: vec![Route {
                name: name.into(),
                ..route(PathMatch::Prefix("/".into()), vec![], vec![])
            }],
        };
        let table = RouteTable {
            name: "t".into(),
            virtual_hosts: vec![
                vh("*", "any"),
                vh("*.example.com", "wild"),
                vh("api.example.com", "exact"),
                vh("*.COM", "suffix"),
                vh("WWW.*", "prefix"),
            ],
        };
        let p = parts("GET", "/", &[]);
        let name = |a: &str| table.find(a, &p).map(|r| r.name.clone());
        assert_eq!(name("api.example.com:8080").as_deref(), Some("exact"));
        assert_eq!(name("API.Example.com").as_deref(), Some("exact"));
        // A suffix wildcard beats a prefix wildcard, whatever their lengths.
        assert_eq!(name("www.other.com").as_deref(), Some("suffix"));
        assert_eq!(name("www.example.com").as_deref(), Some("wild"));
        assert_eq!(name("www.other.org").as_deref(), Some("prefix"));
        assert_eq!(name("Www.Other.Org").as_deref(), Some("prefix"));
        assert_eq!(name("10.0.0.1:80").as_deref(), Some("any"));
    }

    #[test]
    fn weighted_pick_follows_weights() {
        let r = Route {
            clusters: vec![
                WeightedCluster {
                    name: "a".into(),
                    weight: 3,
                    edits: None,
                },
                WeightedCluster {
                    name: "b".into(),
                    weight: 1,
                    edits: None,
                },
                WeightedCluster {
                    name: "off".into(),
                    weight: 0,
                    edits: None,
                },
            ],
            ..route(PathMatch::Prefix("/".into()), vec![], vec![])
        };
        let a = (0..10_000)
            .filter(|_| r.pick_cluster().map(|c| c.name.as_str()) == Some("a"))
            .count();
        // 7,500 expected, sd ~43.
        assert!((7_250..=7_750).contains(&a), "{a}");
    }
}
