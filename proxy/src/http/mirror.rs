//! Request mirroring (Gateway API's `RequestMirror`, Envoy's `request_mirror_policies`): a copy of
//! a request goes to another cluster, fire and forget. Its response is read and dropped; it never
//! delays, changes or fails the real request.
//!
//! A body is copied as it streams (a [`Tee`]), not buffered: each frame is handed to the copies
//! through a small queue. A mirror too slow to keep up loses its copy (the copy ends in an
//! error, so the mirror never sees a cut body as a whole one) rather than slowing the client.

use std::sync::Arc;
use tokio::time::Instant;

use http::{HeaderValue, Request};
use hyper::body::Incoming;

use crate::balance::Endpoint;
use crate::metrics::{Outcome, RequestProtocol};
use crate::upstream::body::{self, RequestBody};
use crate::upstream::pool::{self, Dial};

/// Where one copy goes.
#[derive(Debug)]
pub struct Mirror {
    /// The endpoint of the mirror cluster picked for this request.
    pub endpoint: Arc<Endpoint>,
    /// How to reach it.
    pub dial: Dial,
    /// What dials it.
    pub dialer: crate::upstream::conn::Dialer,
}

/// Sends a copy of the request `parts` (already edited for its upstream) to each of `mirrors`,
/// and returns the body to send upstream in place of `body`. The copies' `Host` (or
/// `:authority`) gets Envoy's `-shadow` suffix, so a mirror's logs tell copies from real traffic.
pub fn spawn(
    parts: &http::request::Parts,
    body: Incoming,
    mirrors: Vec<Mirror>,
    protocol: RequestProtocol,
) -> RequestBody {
    let (body, copies) = body::tee(body, mirrors.len());
    for (m, copy) in mirrors.into_iter().zip(copies) {
        let Some(req) = copy_of(parts, m.dial.http2, copy) else {
            continue;
        };
        tokio::spawn(send(m, req, protocol));
    }
    body
}

/// The copy of a request for a mirror speaking HTTP/2 (`:authority`) or HTTP/1.1 (`Host`),
/// whichever the real upstream speaks; `None` when it names no authority a copy could carry.
fn copy_of(
    parts: &http::request::Parts,
    http2: bool,
    body: RequestBody,
) -> Option<Request<RequestBody>> {
    let authority = match parts.uri.authority() {
        Some(a) => a.as_str().as_bytes().to_vec(),
        None => parts.headers.get(http::header::HOST)?.as_bytes().to_vec(),
    };
    let shadow = shadow_host(&authority);
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.headers_mut() = parts.headers.clone();
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let mut uri = http::uri::Parts::default();
    if http2 {
        *req.version_mut() = http::Version::HTTP_2;
        req.headers_mut().remove(http::header::HOST);
        uri.scheme = Some(http::uri::Scheme::HTTP);
        uri.authority = Some(http::uri::Authority::try_from(shadow).ok()?);
    } else {
        *req.version_mut() = http::Version::HTTP_11;
        let host = HeaderValue::try_from(shadow).ok()?;
        req.headers_mut().insert(http::header::HOST, host);
    }
    uri.path_and_query = Some(path);
    *req.uri_mut() = http::Uri::from_parts(uri).ok()?;
    Some(req)
}

/// `host[:port]` with `-shadow` after the host.
fn shadow_host(authority: &[u8]) -> Vec<u8> {
    let s = String::from_utf8_lossy(authority);
    let colon = s.rfind(':').filter(|i| !s[*i..].contains(']'));
    match colon {
        Some(i) => format!("{}-shadow{}", &s[..i], &s[i..]).into_bytes(),
        None => format!("{s}-shadow").into_bytes(),
    }
}

/// Sends one copy, reads its response to the end and counts it against the mirror endpoint.
async fn send(m: Mirror, req: Request<RequestBody>, protocol: RequestProtocol) {
    use http_body_util::BodyExt;
    let started = Instant::now();
    let mut guard = m.endpoint.start();
    let peer = pool::Peer {
        addr: m.endpoint.addr,
        security: &m.endpoint.security,
        dialer: &m.dialer,
    };
    match m.endpoint.pool.send(peer, m.dial, req).await {
        Ok((resp, conn)) => {
            guard.answered();
            let outcome = Outcome {
                protocol,
                code: resp.status().as_u16(),
                grpc_status: None,
                flag: None,
            };
            let whole = resp.into_body().collect().await.is_ok();
            m.endpoint.stats.record(outcome, started.elapsed());
            if let (Some(conn), true) = (conn, whole) {
                m.endpoint.pool.put_back(conn);
            }
        }
        Err(e) => {
            if matches!(e, pool::SendError::Connect(_)) {
                guard.failed();
            }
            tracing::debug!(endpoint = %m.endpoint.addr, "mirror failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_hosts_keep_their_port() {
        let cases = [
            ("api", "api-shadow"),
            ("api:8080", "api-shadow:8080"),
            ("[::1]:80", "[::1]-shadow:80"),
            ("10.0.0.1", "10.0.0.1-shadow"),
        ];
        for (host, want) in cases {
            assert_eq!(shadow_host(host.as_bytes()), want.as_bytes(), "{host}");
        }
    }
}
