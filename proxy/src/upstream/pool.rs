//! Upstream connections, pooled per endpoint: HTTP/1.1 keep-alive connections reused one request
//! at a time (most recently used first), or one multiplexed HTTP/2 connection.
//!
//! The pool lives in the endpoint, so it survives config swaps with it, and a checkout is a pop
//! from that endpoint's own list: no key to hash, no shared table. Connections are dialed by
//! [`super::conn::Dialer`], plain or mTLS as the endpoint's security says.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::body::RequestBody;
pub use super::conn::SendError;
use super::conn::{Conn, Dialer};
use super::h2::{H2Body, H2Conn};
use crate::config::Security;
use http::{Request, Response};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

/// A response body as the pool's connections give it: hyper's HTTP/1.1 client's, or an HTTP/2
/// stream's.
pub type Answer = Either<Incoming, H2Body>;

/// How to reach an endpoint: cluster settings that apply to every connection.
#[derive(Clone, Copy, Debug)]
pub struct Dial {
    /// Speak HTTP/2 instead of HTTP/1.1: outright (prior knowledge), or as `negotiate` says.
    pub http2: bool,
    /// HTTP/2 is offered to the peer (a sidecar) by ALPN rather than spoken outright: a peer that
    /// declines gets the request as HTTP/1.1 on the same connection, and the next ones to it are
    /// HTTP/1.1 from the start ([`Pool::declined_h2`]).
    pub negotiate: bool,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
}

/// An HTTP/1.1 connection lent to one request; given back once its response body is done.
#[derive(Debug)]
pub struct H1 {
    send: http1::SendRequest<RequestBody>,
    /// Not reused from then on (an mTLS connection, shortly before its certificate expires).
    reuse_until: Option<Instant>,
}

/// The shared HTTP/2 connection of an endpoint.
#[derive(Debug)]
struct H2 {
    send: H2Conn,
    /// When it was last used.
    used: Instant,
    /// Not used for new requests from then on (streams on it finish).
    reuse_until: Option<Instant>,
}

/// Whether a connection that must not be reused from `until` may still be.
fn reusable(until: Option<Instant>) -> bool {
    until.is_none_or(|t| Instant::now() < t)
}

/// A connection the fast path speaks HTTP/1.1 on itself, plain or mTLS (the fast path reads and
/// writes it through [`crate::stream::Stream`] only), with the buffer its responses are read
/// into. The buffer stays with the connection, in the pool too: a client connection idle
/// between requests holds none, and a thousand of them idle share the few pooled ones.
#[derive(Debug)]
pub struct RawConn {
    /// The connection.
    pub conn: Conn,
    /// Bytes read from it: the response being relayed.
    pub buf: bytes::BytesMut,
}

impl RawConn {
    /// A newly dialed connection, its buffer not yet allocated.
    pub fn new(conn: Conn) -> Self {
        Self {
            conn,
            buf: bytes::BytesMut::new(),
        }
    }
}

/// The endpoint a request goes to: its address, and how to connect to it.
#[derive(Clone, Copy, Debug)]
pub struct Peer<'a> {
    /// Address.
    pub addr: SocketAddr,
    /// Plain or mTLS, and the identities it may present.
    pub security: &'a Security,
    /// What dials it.
    pub dialer: &'a Dialer,
}

/// One endpoint's upstream connections.
#[derive(Debug, Default)]
pub struct Pool {
    /// Idle HTTP/1.1 connections and when each became idle; the newest is last.
    h1: Mutex<Vec<(H1, Instant)>>,
    /// Idle HTTP/1.1 connections of the fast path (plain sockets it speaks HTTP/1.1 on itself).
    raw: Mutex<Vec<(RawConn, Instant)>>,
    /// The shared HTTP/2 connection.
    h2: Mutex<Option<H2>>,
    /// Held while dialing HTTP/2, so a burst of first requests opens one connection, not many.
    h2_dial: tokio::sync::Mutex<()>,
    /// When the last HTTP/2 dial failed: requests that queued behind it fail with it instead of
    /// each waiting out another connect timeout.
    h2_failed: Mutex<Option<Instant>>,
    /// The peer answered an offer of HTTP/2 by ALPN with HTTP/1.1 (a sidecar that does not
    /// multiplex): requests to it are sent as HTTP/1.1.
    h2_declined: AtomicBool,
}

/// A connection ready for a request that was made for HTTP/2.
enum Ready {
    /// The shared HTTP/2 connection.
    H2(H2Conn),
    /// An HTTP/1.1 connection, where the peer declined HTTP/2.
    H1(H1),
}

/// Whether a request with this method may be sent again on another connection after the first
/// closed under it unanswered (RFC 9110 §9.2.2). The fast path's retry asks the same
/// (`http::rules` re-exports it).
pub fn idempotent(method: &[u8]) -> bool {
    matches!(
        method,
        b"GET" | b"HEAD" | b"OPTIONS" | b"TRACE" | b"PUT" | b"DELETE"
    )
}

/// Whether a request may be sent again after a connection closed under it: idempotent, without a
/// body, and no protocol switch (whose handle cannot be copied).
fn resendable(req: &Request<RequestBody>) -> bool {
    use hyper::body::Body as _;
    idempotent(req.method().as_str().as_bytes())
        && req.body().is_end_stream()
        && !req.headers().contains_key(http::header::UPGRADE)
}

/// Whether the connection ended under a request before any answer: closed (end of stream) or
/// reset (the peer had closed, and our request drew its RST).
fn closed_before_answer(e: &hyper::Error) -> bool {
    let reset = std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            )
        });
    e.is_incomplete_message() || reset
}

/// Whether a HEAD answer has no framing (no `Content-Length`, no `Transfer-Encoding`, and a
/// status that has a body): its server has nothing to say where a GET's body would end, so it
/// closes next, and a request sent on the connection meanwhile would race that close (the fast
/// path does not pool such a connection either).
fn unframed_head<B>(head: bool, resp: &Response<B>) -> bool {
    let h = resp.headers();
    let bodiless = resp.status() == http::StatusCode::NO_CONTENT
        || resp.status() == http::StatusCode::NOT_MODIFIED
        || resp.status().is_informational();
    head && !bodiless
        && !h.contains_key(http::header::CONTENT_LENGTH)
        && !h.contains_key(http::header::TRANSFER_ENCODING)
}

/// A copy of a bodiless request's head, to send again.
fn head_again(req: &Request<RequestBody>) -> Request<RequestBody> {
    let mut copy = Request::new(RequestBody::Empty);
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

impl Pool {
    /// Sends `req` to `addr`; for HTTP/1.1 also returns the connection, to be given back with
    /// [`Pool::put_back`] when the response body has been read to its end.
    pub async fn send(
        &self,
        peer: Peer<'_>,
        dial: Dial,
        req: Request<RequestBody>,
    ) -> Result<(Response<Answer>, Option<H1>), SendError> {
        if dial.http2 {
            return self.send_h2(peer, dial, req).await;
        }
        let mut req = req;
        let head = req.method() == http::Method::HEAD;
        // A pooled connection the peer closed meanwhile hands the request back unsent: retry it
        // once on a new connection (what hyper's own pool does for "canceled" requests). One it
        // closed after the request went out, before any answer (a keep-alive timeout racing the
        // request), gets a bodiless idempotent request again, as the fast path, nginx and Go's
        // client do.
        if let Some(mut conn) = self.take_h1() {
            let again = resendable(&req).then(|| head_again(&req));
            match conn.send.try_send_request(req).await {
                Ok(resp) => {
                    let conn = (!unframed_head(head, &resp)).then_some(conn);
                    return Ok((resp.map(Either::Left), conn));
                }
                Err(mut e) => match (e.take_message(), again) {
                    (Some(unsent), _) => req = unsent,
                    (None, Some(copy)) if closed_before_answer(e.error()) => req = copy,
                    (None, _) => return Err(e.into_error().into()),
                },
            }
        }
        // Boxed: dialing is rare, and its state would otherwise grow every request's future.
        let mut conn = Box::pin(dial_h1(peer, dial)).await?;
        let resp = conn.send.send_request(req).await?;
        let conn = (!unframed_head(head, &resp)).then_some(conn);
        Ok((resp.map(Either::Left), conn))
    }

    /// Returns an HTTP/1.1 connection whose response is complete.
    pub fn put_back(&self, conn: H1) {
        if conn.send.is_closed() || !reusable(conn.reuse_until) {
            return;
        }
        lock(&self.h1).push((conn, Instant::now()));
    }

    /// An idle fast-path connection, the most recently used first; one the peer has closed or
    /// written to meanwhile is dropped. Costs no system call unless the socket has news.
    pub fn take_raw(&self) -> Option<RawConn> {
        loop {
            let (mut raw, _) = lock(&self.raw).pop()?;
            if raw.conn.still_idle() {
                return Some(raw);
            }
        }
    }

    /// Returns a fast-path connection whose response was read whole.
    pub fn put_back_raw(&self, conn: RawConn) {
        lock(&self.raw).push((conn, Instant::now()));
    }

    /// Closes connections idle for longer than `idle_timeout`. `busy` says whether requests to this
    /// endpoint are in flight (an HTTP/2 connection carrying streams is not idle).
    pub fn evict_idle(&self, idle_timeout: Duration, busy: bool) {
        let now = Instant::now();
        lock(&self.h1).retain(|(c, since)| {
            !c.send.is_closed() && now - *since < idle_timeout && reusable(c.reuse_until)
        });
        lock(&self.raw)
            .retain(|(c, since)| now - *since < idle_timeout && reusable(c.conn.reuse_until()));
        let mut h2 = lock(&self.h2);
        if h2.as_ref().is_some_and(|c| {
            c.send.is_closed()
                || (!busy && now - c.used >= idle_timeout)
                || !reusable(c.reuse_until)
        }) {
            *h2 = None;
        }
    }

    /// Whether the peer declined an offer of HTTP/2: requests to it go as HTTP/1.1.
    pub fn declined_h2(&self) -> bool {
        self.h2_declined.load(Ordering::Relaxed)
    }

    /// Open connections: (idle HTTP/1.1, HTTP/2).
    pub fn open(&self) -> (usize, usize) {
        (
            lock(&self.h1).len() + lock(&self.raw).len(),
            usize::from(lock(&self.h2).as_ref().is_some_and(|c| !c.send.is_closed())),
        )
    }

    fn take_h1(&self) -> Option<H1> {
        let mut idle = lock(&self.h1);
        while let Some((conn, _)) = idle.pop() {
            // Not ready means closing, or (rarely) not yet past its last response: either way
            // it cannot take this request now.
            if conn.send.is_ready() && reusable(conn.reuse_until) {
                return Some(conn);
            }
        }
        None
    }

    /// The shared HTTP/2 connection, if it may take a new request.
    fn shared_h2(&self) -> Option<H2Conn> {
        let mut h2 = lock(&self.h2);
        match h2.as_mut() {
            Some(c) if !c.send.is_closed() && reusable(c.reuse_until) => {
                c.used = Instant::now();
                Some(c.send.clone())
            }
            _ => None,
        }
    }

    /// Forgets the shared HTTP/2 connection if it is still `conn`, which could not take a
    /// stream: the next request dials anew.
    fn forget_h2(&self, conn: &H2Conn) {
        let mut h2 = lock(&self.h2);
        if h2.as_ref().is_some_and(|c| c.send.same(conn)) {
            *h2 = None;
        }
    }

    /// The shared HTTP/2 connection, ready for a stream, dialing it (or HTTP/1.1, where the peer
    /// declined HTTP/2) if there is none; a burst of first requests dials once.
    async fn ready_h2(&self, peer: Peer<'_>, dial: Dial) -> Result<Ready, SendError> {
        if let Some(mut conn) = self.shared_h2() {
            match conn.ready().await {
                Ok(()) => return Ok(Ready::H2(conn)),
                Err(e) => {
                    tracing::debug!(addr = %peer.addr, "HTTP/2 connection cannot take a stream: {e}");
                    self.forget_h2(&conn);
                }
            }
        }
        let ready = {
            let queued = Instant::now();
            let _dialing = self.h2_dial.lock().await;
            match self.shared_h2() {
                Some(c) => Ready::H2(c),
                None if dial.negotiate && self.declined_h2() => match self.take_h1() {
                    Some(conn) => Ready::H1(conn),
                    None => Ready::H1(Box::pin(dial_h1(peer, dial)).await?),
                },
                None => {
                    if lock(&self.h2_failed).is_some_and(|failed| failed >= queued) {
                        return Err(SendError::Connect(format!(
                            "{}: the dial this request waited for failed",
                            peer.addr
                        )));
                    }
                    match Box::pin(dial_h2(peer, dial)).await {
                        Ok(Dialed::H2(c, reuse_until)) => {
                            *lock(&self.h2) = Some(H2 {
                                send: c.clone(),
                                used: Instant::now(),
                                reuse_until,
                            });
                            Ready::H2(c)
                        }
                        Ok(Dialed::H1(conn)) => {
                            tracing::debug!(addr = %peer.addr, "peer declined HTTP/2: HTTP/1.1 to it");
                            self.h2_declined.store(true, Ordering::Relaxed);
                            Ready::H1(conn)
                        }
                        Err(e) => {
                            *lock(&self.h2_failed) = Some(Instant::now());
                            return Err(e);
                        }
                    }
                }
            }
        };
        match ready {
            Ready::H2(mut conn) => match conn.ready().await {
                Ok(()) => Ok(Ready::H2(conn)),
                Err(e) => {
                    self.forget_h2(&conn);
                    Err(SendError::H2(e))
                }
            },
            h1 => Ok(h1),
        }
    }

    /// The shared HTTP/2 connection, ready for a stream (dialed if there is none), for a caller
    /// that opens the stream itself (the fast path). `None`: the peer declined HTTP/2; the
    /// HTTP/1.1 connection it agreed to instead is pooled for hyper's client.
    pub async fn ready_stream(
        &self,
        peer: Peer<'_>,
        dial: Dial,
    ) -> Result<Option<H2Conn>, SendError> {
        match self.ready_h2(peer, dial).await? {
            Ready::H2(conn) => Ok(Some(conn)),
            Ready::H1(conn) => {
                self.put_back(conn);
                Ok(None)
            }
        }
    }

    async fn send_h2(
        &self,
        peer: Peer<'_>,
        dial: Dial,
        req: Request<RequestBody>,
    ) -> Result<(Response<Answer>, Option<H1>), SendError> {
        match self.ready_h2(peer, dial).await? {
            Ready::H2(conn) => Ok((conn.send(req).await?.map(Either::Right), None)),
            Ready::H1(mut conn) => {
                let req = as_http1(req);
                let head = req.method() == http::Method::HEAD;
                let resp = conn.send.send_request(req).await?;
                let conn = (!unframed_head(head, &resp)).then_some(conn);
                Ok((resp.map(Either::Left), conn))
            }
        }
    }
}

/// The HTTP/1.1 form of a request made for HTTP/2, for a peer that declined it: `Host` from
/// `:authority`, an origin-form target, a body of unknown length chunked. (Cookies were joined
/// when it was made: one field is valid in both versions.)
fn as_http1(req: Request<RequestBody>) -> Request<RequestBody> {
    let (mut parts, body) = req.into_parts();
    if let Some(host) = parts
        .uri
        .authority()
        .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
    {
        parts.headers.insert(http::header::HOST, host);
    }
    let mut uri = http::uri::Parts::default();
    uri.path_and_query = parts.uri.path_and_query().cloned();
    if let Ok(u) = http::Uri::from_parts(uri) {
        parts.uri = u;
    }
    parts.version = http::Version::HTTP_11;
    super::body::chunk_if_unsized(&mut parts.headers, &body);
    Request::from_parts(parts, body)
}

impl serde::Serialize for Pool {
    /// Open connections, for `/clusters`.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let (h1, h2) = self.open();
        let mut st = s.serialize_struct("Pool", 2)?;
        st.serialize_field("idle_http1", &h1)?;
        st.serialize_field("http2", &h2)?;
        st.end()
    }
}

/// The pool's lists are only touched for a push or a pop; a panic while holding one cannot leave
/// it inconsistent, so a poisoned lock is used as is.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn dial_h1(peer: Peer<'_>, dial: Dial) -> Result<H1, SendError> {
    let conn = peer
        .dialer
        .dial(peer.addr, peer.security, dial.connect_timeout, false);
    handshake_h1(peer.addr, conn.await?).await
}

async fn handshake_h1(addr: SocketAddr, conn: Conn) -> Result<H1, SendError> {
    let reuse_until = conn.reuse_until();
    let io = TokioIo::new(conn);
    let (send, conn) = http1::Builder::new()
        .max_header_size(super::MAX_HEADER_BYTES)
        .handshake(io)
        .await
        .map_err(|e| SendError::Connect(format!("{addr}: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(%addr, "upstream connection ended: {e}");
        }
    });
    Ok(H1 { send, reuse_until })
}

/// What an HTTP/2 dial made.
enum Dialed {
    /// An HTTP/2 connection, and when to stop sending new requests on it.
    H2(H2Conn, Option<Instant>),
    /// An HTTP/1.1 connection: the peer declined HTTP/2 by ALPN.
    H1(H1),
}

async fn dial_h2(peer: Peer<'_>, dial: Dial) -> Result<Dialed, SendError> {
    let addr = peer.addr;
    let conn = peer
        .dialer
        .dial(addr, peer.security, dial.connect_timeout, dial.negotiate);
    let conn = conn.await?;
    if dial.negotiate && !conn.negotiated_h2() {
        return handshake_h1(addr, conn).await.map(Dialed::H1);
    }
    let reuse_until = conn.reuse_until();
    let send = super::h2::handshake(addr, conn).await?;
    Ok(Dialed::H2(send, reuse_until))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::identity::tls::tests::TestCa;
    use crate::identity::{Certified, Identity};
    use hyper_util::rt::TokioExecutor;

    /// A sidecar-like mTLS server answering with the version and `Host` it was asked with; it
    /// offers `alpn` and speaks HTTP/2 when that was agreed, HTTP/1.1 otherwise.
    async fn mtls_server(ca: &TestCa, alpn: &[&[u8]]) -> SocketAddr {
        let mut server = (*ca.fresh("spiffe://td/ns/a/sa/api").server).clone();
        server.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(s).await else {
                        return;
                    };
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    let answer = hyper::service::service_fn(|req: Request<Incoming>| async move {
                        let host = req
                            .headers()
                            .get(http::header::HOST)
                            .map(|h| h.to_str().unwrap().to_owned())
                            .or_else(|| req.uri().authority().map(|a| a.to_string()))
                            .unwrap_or_default();
                        let said = format!("{:?} {host} {}", req.version(), req.uri());
                        Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(
                            bytes::Bytes::from(said),
                        )))
                    });
                    let io = TokioIo::new(tls);
                    let _ = match h2 {
                        true => {
                            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                                .serve_connection(io, answer)
                                .await
                        }
                        false => {
                            hyper::server::conn::http1::Builder::new()
                                .serve_connection(io, answer)
                                .await
                        }
                    };
                });
            }
        });
        addr
    }

    /// A request made for HTTP/2, as the data path makes it for a sidecar.
    fn for_h2(path: &str) -> Request<RequestBody> {
        let mut req = Request::new(RequestBody::Empty);
        *req.version_mut() = http::Version::HTTP_2;
        *req.uri_mut() = format!("http://api.shop:8080{path}").parse().unwrap();
        req
    }

    async fn body(resp: Response<Answer>) -> String {
        use http_body_util::BodyExt;
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    /// HTTP/1 requests to a sidecar that takes HTTP/2 by ALPN share one connection; one that
    /// declines gets the request as HTTP/1.1 on the connection it agreed to, `Host` restored,
    /// and the next ones go as HTTP/1.1 from the start.
    #[tokio::test]
    async fn http2_is_offered_to_a_sidecar_and_a_refusal_is_met_with_http1() {
        let ca = TestCa::new();
        let identity = Arc::new(Identity::default());
        identity.set(Certified::for_tests(
            "spiffe://td/ns/a/sa/web",
            ca.fresh("spiffe://td/ns/a/sa/web"),
        ));
        let dialer = Dialer::new(Some(identity));
        let security = Security::Mtls {
            peer_ids: Arc::from(vec!["spiffe://td/ns/a/sa/api".to_string()]),
        };
        let dial = Dial {
            http2: true,
            negotiate: true,
            connect_timeout: Duration::from_secs(1),
        };
        for (alpn, want, declined) in [
            (
                &[&b"h2"[..], b"http/1.1"][..],
                "HTTP/2.0 api.shop:8080 http://api.shop:8080/a",
                false,
            ),
            (&[&b"http/1.1"[..]][..], "HTTP/1.1 api.shop:8080 /a", true),
            (&[][..], "HTTP/1.1 api.shop:8080 /a", true),
        ] {
            let addr = mtls_server(&ca, alpn).await;
            let peer = Peer {
                addr,
                security: &security,
                dialer: &dialer,
            };
            let pool = Pool::default();
            let (resp, conn) = pool.send(peer, dial, for_h2("/a")).await.unwrap();
            assert_eq!(body(resp).await, want, "{alpn:?}");
            assert_eq!(pool.declined_h2(), declined, "{alpn:?}");
            assert_eq!(
                conn.is_some(),
                declined,
                "an HTTP/1.1 connection to give back"
            );
            if let Some(conn) = conn {
                pool.put_back(conn);
            }
            assert_eq!(pool.open(), (usize::from(declined), usize::from(!declined)));
        }
    }

    #[test]
    fn a_head_answer_without_framing_is_not_pooled() {
        let resp = |status: u16, header: Option<(&str, &str)>| {
            let mut r = Response::builder().status(status);
            if let Some((k, v)) = header {
                r = r.header(k, v);
            }
            r.body(()).unwrap()
        };
        // (request was HEAD, response, not to be pooled)
        let cases = [
            (true, resp(200, None), true),
            (true, resp(200, Some(("content-length", "1024"))), false),
            (
                true,
                resp(200, Some(("transfer-encoding", "chunked"))),
                false,
            ),
            (true, resp(204, None), false),
            (true, resp(304, None), false),
            (false, resp(200, None), false),
        ];
        for (head, r, want) in cases {
            assert_eq!(unframed_head(head, &r), want, "HEAD {head}, {r:?}");
        }
    }
}
