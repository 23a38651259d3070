//! HTTP routing rules, as HTTPRoute (GAMMA) expresses them.

use std::time::Duration;

use super::Key;

/// One HTTPRoute rule after validation: a request matching any of `matches` goes to `backends`.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteRule {
    /// `namespace/name` of the HTTPRoute and rule index, for logs, metrics and resource names.
    pub origin: String,
    /// Alternatives; a request must satisfy one. Never empty (a rule without matches gets prefix `/`).
    pub matches: Vec<RouteMatch>,
    /// Weighted targets; weights need not sum to anything.
    pub backends: Vec<Backend>,
    /// Whole-request timeout, retries included; zero (Gateway API's `0s`) is none, whatever a
    /// TrafficPolicy says.
    pub timeout: Option<Duration>,
    /// Per-attempt timeout.
    pub backend_timeout: Option<Duration>,
    /// Retry policy.
    pub retry: Option<RouteRetry>,
    /// Edits to the requests the rule forwards (RequestHeaderModifier).
    pub request_headers: HeaderEdits,
    /// Edits to the responses it returns (ResponseHeaderModifier).
    pub response_headers: HeaderEdits,
    /// Changes to the URL of the requests it forwards (URLRewrite).
    pub rewrite: Option<UrlRewrite>,
    /// Answers with a redirect instead of forwarding (RequestRedirect); `backends` is then empty.
    pub redirect: Option<Redirect>,
    /// Where copies of its requests also go (RequestMirror).
    pub mirrors: Vec<Mirror>,
    /// Why the rule answers every request with `failure_status` instead of forwarding it: a
    /// filter weft cannot apply, which Gateway API says must not be skipped, or no backend with
    /// weight. `None` for a rule that forwards.
    pub refused: Option<String>,
    /// What a request the rule cannot forward gets (a refused rule's, or an unresolved backend's
    /// share): Gateway API's 500 for an HTTPRoute, 503 for a GRPCRoute (gRPC's `UNAVAILABLE`).
    pub failure_status: u16,
}

/// A RequestMirror filter: a Service port that gets a copy of a share of the requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mirror {
    /// Target Service.
    pub service: Key,
    /// Target Service port.
    pub port: u16,
    /// Share of requests copied, in millionths.
    pub per_million: u32,
}

/// A new path, as URLRewrite and RequestRedirect give it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathModifier {
    /// The whole path replaced (the query kept).
    Full(String),
    /// The matched path prefix replaced, segment-wise: `/foo` to `/bar` makes `/foo/x` `/bar/x`.
    Prefix(String),
}

/// A URLRewrite filter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UrlRewrite {
    /// A new `Host`.
    pub hostname: Option<String>,
    /// A new path.
    pub path: Option<PathModifier>,
}

/// A RequestRedirect filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    /// `http` or `https`; `None` keeps the request's.
    pub scheme: Option<String>,
    /// A new host; `None` keeps the request's.
    pub hostname: Option<String>,
    /// A new path; `None` keeps the request's.
    pub path: Option<PathModifier>,
    /// A new port; `None` keeps the request's, or the scheme's own when the scheme changes.
    pub port: Option<u16>,
    /// 301, 302 (the default), 303, 307 or 308.
    pub status: u16,
}

/// A Gateway API header modifier: headers replaced, added and removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderEdits {
    /// Replaced, or added when absent: (name, value).
    pub set: Vec<(String, String)>,
    /// Added after any values already there.
    pub add: Vec<(String, String)>,
    /// Removed.
    pub remove: Vec<String>,
}

impl HeaderEdits {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// A weighted Service port a rule sends to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    /// Target Service.
    pub service: Key,
    /// Target Service port.
    pub port: u16,
    /// Relative weight (0 disables the backend).
    pub weight: u32,
    /// Header edits of the requests sent to this backend (its `RequestHeaderModifier`), made
    /// before the rule's.
    pub request_headers: HeaderEdits,
    /// Header edits of the responses from it (its `ResponseHeaderModifier`).
    pub response_headers: HeaderEdits,
    /// The backendRef names no Service port that exists (or no Service at all): its share of
    /// the requests gets the rule's `failure_status`, as Gateway API asks, rather than going to
    /// the other backends.
    pub unresolved: bool,
}

impl Backend {
    /// All of a Service port's requests, with no edits of its own.
    pub fn to(service: Key, port: u16) -> Self {
        Self {
            service,
            port,
            weight: 1,
            request_headers: HeaderEdits::default(),
            response_headers: HeaderEdits::default(),
            unresolved: false,
        }
    }
}

/// A TCPRoute on a Service port: each connection goes to one of its backends, by weight. A
/// backend that does not resolve keeps its share, and those connections are refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpRoute {
    /// `namespace/name` of the TCPRoute.
    pub origin: String,
    /// The weighted backends (no header edits: there are no headers).
    pub backends: Vec<Backend>,
}

/// Conditions a request must all meet.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RouteMatch {
    /// Path condition; `None` matches every path.
    pub path: Option<PathMatch>,
    /// Header conditions (header names lowercase).
    pub headers: Vec<HeaderMatch>,
    /// HTTP method, uppercase.
    pub method: Option<String>,
    /// Query parameter conditions.
    pub query: Vec<QueryMatch>,
}

/// How the path must look.
#[derive(Clone, Debug, PartialEq)]
pub enum PathMatch {
    /// The whole path equals this.
    Exact(String),
    /// Path-segment prefix (`/foo` matches `/foo` and `/foo/bar`, not `/foobar`).
    Prefix(String),
    /// RE2-style regular expression over the whole path.
    Regex(String),
}

/// A value condition.
#[derive(Clone, Debug, PartialEq)]
pub enum StringMatch {
    /// Equal.
    Exact(String),
    /// Regular expression over the whole value.
    Regex(String),
}

/// A header condition.
#[derive(Clone, Debug, PartialEq)]
pub struct HeaderMatch {
    /// Lowercase header name.
    pub name: String,
    /// Value condition.
    pub value: StringMatch,
}

/// A query parameter condition.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryMatch {
    /// Parameter name (case-sensitive).
    pub name: String,
    /// Value condition.
    pub value: StringMatch,
}

/// When and how often to retry.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteRetry {
    /// Attempts after the first.
    pub attempts: u32,
    /// HTTP status codes that trigger a retry; empty means the usual gateway errors (502, 503, 504)
    /// plus connection failures.
    pub codes: Vec<u32>,
    /// Base backoff between attempts.
    pub backoff: Option<Duration>,
}

impl RouteMatch {
    /// Gateway API's precedence, as a sortable key (greater wins): exact path, then longer prefix,
    /// then a method, then more headers, then more query parameters. A regular expression, whose
    /// place the spec leaves open, ranks below every prefix but the catch-all `/`, which goes last
    /// (as Istio orders them): so a GRPCRoute's method-only match, a regex, beats an empty match,
    /// as GRPCRoute's precedence asks.
    pub fn precedence(&self) -> (u8, usize, bool, usize, usize) {
        let (kind, len) = match &self.path {
            Some(PathMatch::Exact(p)) => (3, p.len()),
            Some(PathMatch::Prefix(p)) if p == "/" => (0, 1),
            Some(PathMatch::Prefix(p)) => (2, p.len()),
            Some(PathMatch::Regex(p)) => (1, p.len()),
            None => (0, 1),
        };
        (
            kind,
            len,
            self.method.is_some(),
            self.headers.len(),
            self.query.len(),
        )
    }
}
