//! HTTP proxying: route each request by the live route table, pick a cluster and an endpoint,
//! forward over a pooled upstream connection.
//!
//! Every failure a client can see has a status and a `response_flags`-style reason, sent back in
//! the `x-weft-reason` header and logged: NR (no route), NC (no cluster), UH (no healthy endpoint),
//! UF (upstream connect failure), UR (upstream reset or protocol error), UT (upstream timeout),
//! DPE (a request breaking HTTP in a way the server library lets through).

mod authorize;
mod body;
pub mod fast;
mod h1;
mod headers;
pub mod mirror;
pub mod path;
mod reply;
pub mod rules;
mod upgrade;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use http::header::HeaderName;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};

use http_body_util::Full;
use hyper::body::Incoming;

use self::body::grpc_status;
pub use self::body::{Body, BodyError, UpstreamBody};
use self::body::{Unanswered, Upstream};
use crate::config::edits::HeaderEdits;
use crate::config::rewrite::{Redirect, Rewrite};
use crate::config::route::{DirectResponse, RequestView};
use crate::config::{RouteTable, UpstreamHttp};
use crate::metrics::{DestStats, Flag, Metrics, Outcome, RequestProtocol};
use crate::store::Store;
use crate::upstream::body::{ClientBodyError, RequestBody};
use crate::upstream::pool;

pub use crate::upstream::MAX_HEADER_BYTES;

const X_REQUEST_ID: HeaderName = HeaderName::from_static(rules::REQUEST_ID);

/// gRPC when the content type says so (`application/grpc`, `application/grpc+proto`, ...).
fn protocol_of(headers: &http::HeaderMap) -> RequestProtocol {
    match headers.get(http::header::CONTENT_TYPE) {
        Some(v) if v.as_bytes().starts_with(b"application/grpc") => RequestProtocol::Grpc,
        _ => RequestProtocol::Http,
    }
}

/// How a connection's requests are routed.
#[derive(Clone, Debug)]
pub struct RouteSource {
    /// The route table.
    pub routes: Routes,
    /// The endpoint requests to the listener's own cluster go to, whatever its balancer would
    /// pick: the pod a client addressed through a headless Service. Routes to other clusters
    /// (an HTTPRoute's backends) balance as usual.
    pub pinned: Option<(std::net::SocketAddr, String)>,
    /// Dot segments are removed from a request's path before it is routed and forwarded.
    pub normalize_path: bool,
    /// Who sends the requests, on an inbound connection: each is authorized against the
    /// inbound port's live RBAC filters, so a policy change applies to keep-alive connections
    /// too. `None` outbound, where nothing is authorized.
    pub peer: Option<crate::config::authz::Peer>,
}

/// Where a listener's routes come from.
#[derive(Clone, Debug)]
pub enum Routes {
    /// A RouteConfiguration by name, looked up in the live config per request.
    Named(String),
    /// A table carried in the listener.
    Inline(Arc<RouteTable>),
    /// None: the connection goes somewhere the mesh does not know and the policy is
    /// registry-only, so every request is refused (Istio's `block_all` virtual host).
    Blocked,
}

/// The authority a request is routed by: an absolute-form URI's, else its `Host` (RFC 9112 §3.2.2).
fn routed_authority<'a>(uri: Option<&'a Authority>, host: Option<&'a HeaderValue>) -> &'a str {
    match (uri, host) {
        (Some(a), _) => a.as_str(),
        (None, Some(h)) => h.to_str().unwrap_or_default(),
        (None, None) => "",
    }
}

/// How to reach one of a cluster's endpoints for a request that came over HTTP/2 or not.
fn dial_for(
    cluster: &crate::config::Cluster,
    endpoint: &crate::balance::Endpoint,
    downstream_http2: bool,
) -> pool::Dial {
    // Offered to a sidecar, unless it declined before.
    let negotiate = cluster.upstream_http == UpstreamHttp::Negotiated
        && matches!(endpoint.security, crate::config::Security::Mtls { .. })
        && !endpoint.pool.declined_h2();
    pool::Dial {
        http2: match cluster.upstream_http {
            UpstreamHttp::Http1 => false,
            UpstreamHttp::Http2 => true,
            UpstreamHttp::Downstream => downstream_http2,
            UpstreamHttp::Negotiated => negotiate,
        },
        negotiate,
        connect_timeout: cluster.connect_timeout,
    }
}

/// A failure, and the destination it is counted against (none when no route or cluster matched).
type Failure = (Flag, Option<Arc<DestStats>>);

/// The routing decision the fast path made for the request it handed to hyper: used for that
/// request instead of drawing again, so weighted splits and round robin count it once.
#[derive(Debug)]
pub struct Routed(Result<Decision, Failure>);

/// What the matching route does with a request.
#[derive(Debug)]
enum Decision {
    /// Forward it.
    Forward(Target),
    /// Answer it with a redirect, and the route's header edits.
    Redirect(Arc<Redirect>, Option<Arc<HeaderEdits>>),
    /// Answer it with this status and body (a route's `direct_response`, or a cluster that does
    /// not exist, named by its flag), and the route's header edits.
    Direct(DirectResponse, Option<Flag>, Option<Arc<HeaderEdits>>),
}

/// Where a request goes.
#[derive(Debug)]
struct Target {
    endpoint: Arc<crate::balance::Endpoint>,
    dial: pool::Dial,
    /// The route's whole-request timeout.
    timeout: Option<Duration>,
    /// The route's header edits, if it has any.
    edits: Option<Arc<HeaderEdits>>,
    /// The route's path and host rewrites, if it has any.
    rewrite: Option<Arc<Rewrite>>,
    /// Where copies of this request go (a route's mirrors, sampled); empty for most.
    mirrors: Vec<mirror::Mirror>,
}

/// How the HTTP/1.1 fast path carries a request upstream.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Carrier {
    /// As the bytes it came in, to an HTTP/1.1 upstream.
    Http1,
    /// As a stream on the endpoint's HTTP/2 connection (`fast::h2`).
    Http2,
}

impl Target {
    /// Whether, and how, the HTTP/1.1 fast path may carry a request going here: every route
    /// feature answers here, once. The fast path forwards the request as it came; whatever
    /// changes it (header edits, rewrites) or copies it (mirrors) is hyper's path. The fields
    /// are named, not skipped: a new one does not compile until it is answered.
    fn carrier(&self) -> Option<Carrier> {
        let Self {
            endpoint: _,
            dial,
            timeout: _,
            edits,
            rewrite,
            mirrors,
        } = self;
        if edits.is_some() || rewrite.is_some() || !mirrors.is_empty() {
            return None;
        }
        Some(match dial.http2 {
            true => Carrier::Http2,
            false => Carrier::Http1,
        })
    }
}

/// Forwards requests; one per proxy, shared by every listener.
#[derive(Clone, Debug)]
pub struct Proxy {
    store: Arc<Store>,
    /// How long a client may take to send a request's headers.
    pub header_timeout: Duration,
    /// How long to wait for a client's first bytes on a port of undeclared protocol before
    /// treating it as opaque TCP.
    pub detect_timeout: Duration,
    /// Drain state shared by every listener.
    pub drain: crate::drain::Drain,
    /// Whether plain HTTP/1.1 requests take the fast path (`fast`) rather than hyper.
    pub http1_fast_path: bool,
    /// How long a client's HTTP/2 connection may carry nothing before it is closed.
    pub idle_timeout: Duration,
    /// Dials upstreams, plain or mTLS with the workload's certificate.
    pub dialer: crate::upstream::conn::Dialer,
    /// The workload's identity, which inbound mTLS is served with (`None`: no mTLS).
    pub identity: Option<Arc<crate::identity::Identity>>,
    /// The connections accepted and open, for `/debug/connections`.
    pub connections: Arc<crate::connections::Connections>,
    metrics: Arc<Metrics>,
}

impl Proxy {
    /// A proxy reading routes from `store` and counting into `metrics`; clients get
    /// `header_timeout` to send request headers, and `detect_timeout` to send anything at all on
    /// a port left to protocol detection.
    pub fn new(
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        (header_timeout, detect_timeout): (Duration, Duration),
        drain: crate::drain::Drain,
    ) -> Self {
        Self {
            store,
            header_timeout,
            detect_timeout,
            drain,
            http1_fast_path: true,
            idle_timeout: Duration::from_secs(3600),
            dialer: Default::default(),
            identity: None,
            connections: Default::default(),
            metrics,
        }
    }

    /// How detection waits on a listener: as it says, else `detect_timeout` and then opaque
    /// TCP.
    pub fn sniffing(&self, listener: Option<crate::config::Sniffing>) -> crate::config::Sniffing {
        listener.unwrap_or(crate::config::Sniffing {
            timeout: Some(self.detect_timeout),
            close_on_timeout: false,
        })
    }

    /// Where requests and connections are counted.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Routes (unless the fast path did: `routed`) and forwards one request.
    pub async fn handle(
        &self,
        source: &RouteSource,
        req: Request<Incoming>,
        routed: Option<Routed>,
    ) -> Response<Body> {
        let counting = Counting {
            protocol: protocol_of(req.headers()),
            started: Instant::now(),
        };
        // Kept for the log line of a local reply; path and host share the request's buffer, no
        // copy.
        let (method, path) = (req.method().clone(), req.uri().path_and_query().cloned());
        let host = req.headers().get(http::header::HOST).cloned();
        let authority = req.uri().authority().cloned();
        // The route's header edits, once one matched: its response edits apply to the proxy's own
        // answers too, as Envoy's router applies them.
        let mut edits = None;
        match self
            .forward(source, req, routed, &mut edits, counting)
            .await
        {
            Ok(resp) => resp,
            Err(failure) => {
                let path = path.as_ref().map_or("/", |p| p.path());
                let authority = routed_authority(authority.as_ref(), host.as_ref());
                let asked = Asked {
                    method: method.as_str(),
                    authority,
                    path,
                };
                self.count_local(&failure, asked, counting);
                let mut reply = reply::for_failure(failure.0, counting.protocol);
                if let Some(e) = &edits {
                    e.response.apply(reply.headers_mut());
                }
                reply
            }
        }
    }

    /// Where a request goes, read from one snapshot of the config: the route matching it, a
    /// cluster by the route's weights, an endpoint by the cluster's balancer.
    fn target(
        &self,
        source: &RouteSource,
        authority: &str,
        req: &impl RequestView,
        downstream_http2: bool,
    ) -> Result<Decision, Failure> {
        let snap = self.store.load();
        let config = &snap.config;
        if let Some(peer) = &source.peer {
            self.authorize(config, peer, req)?;
        }
        let table = match &source.routes {
            Routes::Named(name) => config.routes.get(name).ok_or((Flag::NoRoute, None))?,
            Routes::Inline(t) => t,
            Routes::Blocked => {
                return Err((Flag::Unregistered, Some(self.metrics.blackhole().clone())));
            }
        };
        let route = table.find(authority, req).ok_or((Flag::NoRoute, None))?;
        if let Some(r) = &route.redirect {
            return Ok(Decision::Redirect(r.clone(), route.edits.clone()));
        }
        if let Some(d) = &route.direct {
            return Ok(Decision::Direct(d.clone(), None, route.edits.clone()));
        }
        let picked = route.pick_cluster().ok_or((Flag::NoCluster, None))?;
        let cluster_name = picked.name.as_str();
        let Some(cluster) = config.clusters.get(cluster_name) else {
            let direct = DirectResponse {
                status: route.cluster_not_found,
                body: Bytes::from_static(Flag::NoCluster.describe().as_bytes()),
            };
            let flag = Some(Flag::NoCluster);
            return Ok(Decision::Direct(direct, flag, picked.edits.clone()));
        };
        let endpoints = snap
            .endpoints
            .get(cluster_name)
            .ok_or((Flag::NoCluster, None))?;
        // A pinned endpoint is looked for by address: a headless Service has a few pods, and this
        // spares every other set an index.
        let endpoint = match &source.pinned {
            Some((addr, own)) if own == cluster_name => endpoints.get(*addr),
            _ => endpoints.pick().cloned(),
        }
        .ok_or_else(|| (Flag::NoHealthyUpstream, Some(endpoints.stats.clone())))?;
        let dial = dial_for(cluster, &endpoint, downstream_http2);
        // A mirror cluster that is missing or has no endpoint gets no copy; the request goes on.
        let mirrors = route
            .mirrors
            .iter()
            .filter(|m| m.sampled())
            .filter_map(|m| {
                let cluster = config.clusters.get(&m.cluster)?;
                let endpoint = snap.endpoints.get(&m.cluster)?.pick()?.clone();
                let dial = dial_for(cluster, &endpoint, downstream_http2);
                Some(mirror::Mirror {
                    endpoint,
                    dial,
                    dialer: self.dialer.clone(),
                })
            })
            .collect();
        Ok(Decision::Forward(Target {
            endpoint,
            dial,
            timeout: route.timeout,
            edits: picked.edits.clone(),
            rewrite: route.rewrite.clone(),
            mirrors,
        }))
    }

    /// The redirect a route answers with: `Location` from the request's authority and path,
    /// counted as a response without a destination.
    fn redirect(
        &self,
        redirect: &Redirect,
        edits: Option<&HeaderEdits>,
        authority: &str,
        path_and_query: &str,
        Counting { protocol, started }: Counting,
    ) -> Response<Body> {
        let location = redirect.location("http", authority, path_and_query);
        let mut reply = Response::builder()
            .status(redirect.status)
            .header(http::header::CONTENT_LENGTH, "0");
        // No host to send the client to (HTTP/1.0 without `Host`), or a URL that is no header
        // value: the request was at fault.
        match location.and_then(|l| HeaderValue::try_from(l).ok()) {
            Some(v) => reply = reply.header(http::header::LOCATION, v),
            None => reply = reply.status(StatusCode::BAD_REQUEST),
        }
        let mut reply = reply
            .body(Body::Local(Full::new(Bytes::new())))
            .expect("valid parts");
        if let Some(e) = edits {
            e.response.apply(reply.headers_mut());
        }
        let outcome = Outcome {
            protocol,
            code: reply.status().as_u16(),
            grpc_status: None,
            flag: None,
        };
        self.metrics.unrouted().record(outcome, started.elapsed());
        reply
    }

    /// A route's own answer, or a failure's that a route decided the status of: logged (a
    /// failure) and counted as a response without a destination.
    fn direct(
        &self,
        (direct, flag): (&DirectResponse, Option<Flag>),
        edits: Option<&HeaderEdits>,
        Asked {
            method,
            authority,
            path,
        }: Asked<'_>,
        Counting { protocol, started }: Counting,
    ) -> Response<Body> {
        let mut reply = reply::response(direct, flag, protocol);
        if let Some(e) = edits {
            e.response.apply(reply.headers_mut());
        }
        if let Some(flag) = flag {
            tracing::info!(%method, authority, path, flags = flag.as_str(), "local reply {}", direct.status.as_u16());
        }
        let (code, grpc_status) = reply::codes(direct.status, protocol);
        let outcome = Outcome {
            protocol,
            code,
            grpc_status,
            flag,
        };
        self.metrics.unrouted().record(outcome, started.elapsed());
        reply
    }

    /// Logs and counts a failure the proxy answers itself; returns the status and `grpc-status`
    /// it is counted with.
    fn count_local(
        &self,
        (flag, stats): &Failure,
        Asked {
            method,
            authority,
            path,
        }: Asked<'_>,
        Counting { protocol, started }: Counting,
    ) {
        let (code, grpc_status) = reply::codes(reply::status(*flag), protocol);
        // A refusal by policy was logged where it was decided, with the peer and the policy.
        if *flag != Flag::Unauthorized {
            tracing::info!(%method, authority, path, flags = flag.as_str(), "local reply {}", reply::status(*flag).as_u16());
        }
        let outcome = Outcome {
            protocol,
            code,
            grpc_status,
            flag: Some(*flag),
        };
        stats
            .as_ref()
            .unwrap_or(self.metrics.unrouted())
            .record(outcome, started.elapsed());
    }

    async fn forward(
        &self,
        source: &RouteSource,
        req: Request<Incoming>,
        routed: Option<Routed>,
        route_edits: &mut Option<Arc<HeaderEdits>>,
        counting: Counting,
    ) -> Result<Response<Body>, Failure> {
        let Counting { protocol, started } = counting;
        let (mut parts, body) = req.into_parts();
        // CONNECT tunnels only where a route says so (Envoy's `connect_matcher`), which weft's
        // routes never do: as in Envoy, it matches no route.
        if parts.method == http::Method::CONNECT {
            return Err((Flag::NoRoute, None));
        }
        // Routed and forwarded without dot segments (the fast path leaves such paths to here).
        if source.normalize_path && routed.is_none() {
            path::normalize(&mut parts.uri).map_err(|()| (Flag::DownstreamProtocolError, None))?;
        }
        // Clones share the request's buffer: routing reads the authority without copying it.
        let uri_authority = parts.uri.authority().cloned();
        // RFC 9112 §3.2: a second Host, or none in HTTP/1.1, is refused (hyper lets both
        // through); routing by one and forwarding both is a smuggling shape.
        // An absolute-form target does not stand in for it: HTTP/1.1 says a client sends Host
        // whatever the form. A Host that is no authority (a space, a control byte) is refused
        // rather than routed by half.
        let mut hosts = parts.headers.get_all(http::header::HOST).iter();
        let first_host = hosts.next();
        let bad_host = first_host.is_some_and(|h| !h.as_bytes().iter().all(u8::is_ascii_graphic));
        if hosts.next().is_some()
            || bad_host
            || (first_host.is_none() && parts.version == Version::HTTP_11)
        {
            return Err((Flag::DownstreamProtocolError, None));
        }
        // RFC 9112 §6.1's 501 for a body coded in a way the proxy cannot relay (Envoy's too).
        if headers::other_transfer_coding(&parts.headers) {
            return Err((Flag::UnsupportedTransferCoding, None));
        }
        let client_version = parts.version;
        let host = match uri_authority {
            Some(_) => None,
            None => first_host.cloned(),
        };
        let authority = routed_authority(uri_authority.as_ref(), host.as_ref());
        let decision = match routed {
            Some(Routed(decided)) => decided?,
            None => self.target(source, authority, &parts, parts.version == Version::HTTP_2)?,
        };
        let Target {
            endpoint,
            mut dial,
            timeout,
            edits,
            rewrite,
            mirrors,
        } = match decision {
            Decision::Forward(t) => t,
            Decision::Redirect(r, edits) => {
                let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                return Ok(self.redirect(&r, edits.as_deref(), authority, pq, counting));
            }
            Decision::Direct(d, flag, edits) => {
                let asked = Asked {
                    method: parts.method.as_str(),
                    authority,
                    path: parts.uri.path(),
                };
                return Ok(self.direct((&d, flag), edits.as_deref(), asked, counting));
            }
        };

        // An HTTP/1.1 upgrade (WebSocket) keeps its two hop-by-hop headers: the upstream must see
        // them to switch protocols. The server attaches `OnUpgrade` only to requests whose
        // `Connection` asks for one, so most requests skip parsing it.
        let downstream_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
        let upgrade = match downstream_upgrade {
            Some(_) => headers::upgrade(&parts.headers),
            None => None,
        };
        // HTTP/2 cannot carry an HTTP/1.1 upgrade: to a sidecar it goes as HTTP/1.1.
        if upgrade.is_some() && dial.negotiate {
            dial.http2 = false;
            dial.negotiate = false;
        }
        headers::strip_hop_by_hop(&mut parts.headers);
        if !dial.http2 {
            crate::upstream::body::chunk_if_unsized(&mut parts.headers, &body);
        }
        if let Some(protocol) = &upgrade {
            parts.headers.insert(
                http::header::CONNECTION,
                HeaderValue::from_static("upgrade"),
            );
            parts
                .headers
                .insert(http::header::UPGRADE, protocol.clone());
        }
        if !parts.headers.contains_key(X_REQUEST_ID) {
            let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
            let id = rules::new_request_id(&mut buf);
            parts.headers.insert(
                X_REQUEST_ID,
                HeaderValue::from_str(id).expect("uuid is ascii"),
            );
        }
        if let Some(e) = &edits {
            e.request.apply(&mut parts.headers);
            *route_edits = Some(e.clone());
        }
        let mut path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let rewrite = rewrite.as_deref();
        if let Some(p) = rewrite.and_then(|r| r.path.as_ref()) {
            // A rewrite that makes an invalid path (a substitution's odd bytes) is refused
            // rather than forwarded half-done.
            path_and_query = PathAndQuery::try_from(p.apply(path_and_query.as_str()))
                .map_err(|_| (Flag::NoRoute, None))?;
        }
        let new_host = rewrite.and_then(|r| r.host.as_ref());
        let mut uri = http::uri::Parts::default();
        if dial.http2 {
            // The service's authority rides in `:authority`; the connection goes to the endpoint.
            parts.version = Version::HTTP_2;
            parts.headers.remove(http::header::HOST);
            // One cookie field is valid in both versions, should the sidecar decline HTTP/2.
            if dial.negotiate && client_version == Version::HTTP_2 {
                headers::join_cookies(&mut parts.headers);
            }
            let target = match uri_authority {
                _ if new_host.is_some() => {
                    let h = new_host.map_or("", |h| h.to_str().unwrap_or_default());
                    Authority::try_from(h).map_err(|_| (Flag::NoRoute, None))?
                }
                Some(a) => a,
                None if authority.is_empty() => Authority::try_from(endpoint.addr.to_string())
                    .map_err(|_| (Flag::NoRoute, None))?,
                None => Authority::try_from(authority).map_err(|_| (Flag::NoRoute, None))?,
            };
            uri.scheme = Some(Scheme::HTTP);
            uri.authority = Some(target);
        } else {
            parts.version = Version::HTTP_11;
            if client_version == Version::HTTP_2 {
                headers::join_cookies(&mut parts.headers);
            }
            // The authority the request was routed by is the one the upstream sees: an
            // absolute-form URI wins over a conflicting Host header (RFC 9112 §3.2.2). HTTP/1.1
            // requires one, so a request without any (HTTP/1.0) names the endpoint.
            let named = match &uri_authority {
                Some(a) => Some(a.as_str().to_string()),
                None if host.is_none() => Some(endpoint.addr.to_string()),
                None => None,
            };
            if let Some(h) = new_host {
                parts.headers.insert(http::header::HOST, h.clone());
            } else if let Some(v) = named.and_then(|n| HeaderValue::try_from(n).ok()) {
                parts.headers.insert(http::header::HOST, v);
            }
        }
        uri.path_and_query = Some(path_and_query);
        parts.uri = Uri::from_parts(uri).map_err(|_| (Flag::NoRoute, None))?;
        // A bodiless request to an HTTP/1.1 upstream takes the fast path's exchange: no client
        // task, no channel. One with a body, an upgrade or copies keeps hyper's client.
        let raw = !dial.http2
            && upgrade.is_none()
            && mirrors.is_empty()
            && hyper::body::Body::is_end_stream(&body);
        let body = match mirrors.is_empty() {
            true => RequestBody::Client(body),
            false => mirror::spawn(&parts, body, mirrors, protocol),
        };
        let mut guard = endpoint.start();
        // Counted as `DC` with no status if the client goes away before the response headers
        // (the server then drops this future); disarmed once the request has an outcome.
        let mut unanswered = Unanswered {
            stats: &endpoint.stats,
            protocol,
            started,
            armed: true,
        };
        let peer = pool::Peer {
            addr: endpoint.addr,
            security: &endpoint.security,
            dialer: &self.dialer,
        };
        let fut = async {
            if raw {
                let sent = h1::client::send(&endpoint, &self.dialer, dial, &parts).await;
                return sent.map(|r| (r.map(Upstream::Right), None));
            }
            let sent = endpoint
                .pool
                .send(peer, dial, Request::from_parts(parts, body));
            sent.await.map(|(r, c)| (r.map(Upstream::Left), c))
        };
        // The route's timeout covers the whole response, as Gateway API and Envoy define it: the
        // same deadline bounds the headers here and the body in `UpstreamBody`.
        let mut deadline = timeout.map(|t| Box::pin(tokio::time::sleep(t)));
        let result = match deadline.as_mut() {
            Some(d) => tokio::select! {
                r = fut => r,
                () = d.as_mut() => {
                    unanswered.armed = false;
                    return Err((Flag::UpstreamTimeout, Some(endpoint.stats.clone())));
                }
            },
            None => fut.await,
        };
        unanswered.armed = false;
        let (resp, mut conn) = match result {
            Ok(answered) => {
                guard.answered();
                answered
            }
            Err(e) => {
                tracing::debug!(endpoint = %endpoint.addr, "upstream error: {e}");
                let reason = match e {
                    pool::SendError::Connect(_) => {
                        // Only a refused or unreachable endpoint is backed off from: one reset or
                        // bad response says little about the next request.
                        guard.failed();
                        Flag::UpstreamConnectFailure
                    }
                    // The client's body broke (bad chunk framing) while it was sent on: the
                    // client's fault, not the upstream's.
                    pool::SendError::Http(e) if ClientBodyError::caused(&e) => {
                        Flag::DownstreamProtocolError
                    }
                    pool::SendError::H2(e) if crate::upstream::h2::client_body_broke(&e) => {
                        Flag::DownstreamProtocolError
                    }
                    pool::SendError::Http(e) if e.is_parse() => Flag::UpstreamProtocolError,
                    pool::SendError::Http(_)
                    | pool::SendError::H2(_)
                    | pool::SendError::Closed(_) => Flag::UpstreamReset,
                    pool::SendError::Protocol(_) => Flag::UpstreamProtocolError,
                };
                return Err((reason, Some(endpoint.stats.clone())));
            }
        };
        let outcome = Outcome {
            protocol,
            code: resp.status().as_u16(),
            // A trailers-only gRPC response carries its status in the headers.
            grpc_status: grpc_status(protocol, resp.headers()),
            flag: None,
        };
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            // Only an upgrade weft passed on may be switched to (not after an h2c offer it
            // dropped, nor for an Upgrade without `Connection: upgrade`), as the fast path.
            // (The fast path's exchange carries no upgrade and refuses a 101 it did not ask for.)
            let (head, Upstream::Left(http_body_util::Either::Left(body))) = resp.into_parts()
            else {
                return Err((Flag::UpstreamProtocolError, Some(endpoint.stats.clone())));
            };
            if upgrade.is_none() {
                return Err((Flag::UpstreamProtocolError, Some(endpoint.stats.clone())));
            }
            let resp = Response::from_parts(head, body);
            endpoint.stats.record(outcome, started.elapsed());
            let open = self.drain.open();
            return Ok(upgrade::switch_protocols(
                resp,
                downstream_upgrade,
                guard,
                open,
            ));
        }
        let (mut parts, body) = resp.into_parts();
        // The framing rule the fast path keeps too: chunked is decoded here and sent on in this
        // hop's own framing; any other coding would reach the client without its name.
        match rules::response_framing(&parts.headers, parts.version == Version::HTTP_10) {
            Ok(framed) => {
                if !framed.reusable {
                    conn = None;
                }
                match framed.length_header {
                    rules::LengthHeader::AsSent => {}
                    rules::LengthHeader::Dropped => {
                        parts.headers.remove(http::header::CONTENT_LENGTH);
                    }
                    rules::LengthHeader::Restated(n) => {
                        parts.headers.insert(http::header::CONTENT_LENGTH, n.into());
                    }
                }
            }
            Err(_) => return Err((Flag::UpstreamProtocolError, Some(endpoint.stats.clone()))),
        }
        headers::strip_hop_by_hop(&mut parts.headers);
        if let Some(e) = &edits {
            e.response.apply(&mut parts.headers);
        }
        // This hop's version, not the upstream's (RFC 9110 §2.5). An HTTP/1.0 client can only be
        // sent a body of unknown length by closing after it, which HTTP/1.0 says and keep-alive
        // would not: hyper closes when the response is an HTTP/1.0 one.
        parts.version = match client_version {
            Version::HTTP_10 if hyper::body::Body::size_hint(&body).exact().is_none() => {
                Version::HTTP_10
            }
            Version::HTTP_10 | Version::HTTP_11 => Version::HTTP_11,
            v => v,
        };
        let body = UpstreamBody {
            inner: body,
            guard,
            conn,
            pending: Some((outcome, started)),
            deadline,
        };
        Ok(Response::from_parts(parts, Body::Upstream(body)))
    }
}

/// A request as it is counted: its protocol and when it began.
#[derive(Clone, Copy)]
struct Counting {
    protocol: RequestProtocol,
    started: Instant,
}

impl Counting {
    /// A plain HTTP/1 request (the fast path carries no other).
    fn http(started: Instant) -> Self {
        Self {
            protocol: RequestProtocol::Http,
            started,
        }
    }
}

/// A request as a local reply's log line names it.
struct Asked<'a> {
    method: &'a str,
    authority: &'a str,
    path: &'a str,
}
