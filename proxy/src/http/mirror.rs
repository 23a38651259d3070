//! Request mirroring (Gateway API's `RequestMirror`, Envoy's `request_mirror_policies`): a copy of
//! a request goes to another cluster, fire and forget. Its response is read and dropped; it never
//! delays, changes or fails the real request.
//!
//! A body is copied as it streams (a [`Tee`]), not buffered: each frame is handed to the copies
//! through a small queue. A mirror too slow to keep up loses its copy (the copy ends in an
//! error, so the mirror never sees a cut body as a whole one) rather than slowing the client.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Request};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::mpsc;

use super::BodyError;
use super::pool::{self, Dial};
use crate::balance::Endpoint;
use crate::metrics::{Outcome, Protocol};

/// What polling a request body gives.
type Polled = Poll<Option<Result<Frame<Bytes>, BodyError>>>;

/// Frames queued per copy before a slow mirror is given up on.
const QUEUE: usize = 16;

/// A request body sent upstream: the client's, the client's while it is copied, or a copy.
pub enum RequestBody {
    /// The client's body, passed through.
    Client(Incoming),
    /// The client's body, copied to mirrors as it passes.
    Teed(Tee),
    /// A mirror's copy.
    Copy(CopyBody),
    /// None: a bodiless request sent again.
    Empty,
}

/// The client's request body failed (bad chunk framing, a reset): what a send that fails with
/// it as its cause is blamed on.
#[derive(Debug, thiserror::Error)]
#[error("client body: {0}")]
pub struct ClientBodyError(hyper::Error);

impl ClientBodyError {
    /// Whether `e` (an upstream send's error) was caused by the client's body.
    pub fn caused(e: &hyper::Error) -> bool {
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            if s.is::<Self>() {
                return true;
            }
            source = s.source();
        }
        false
    }
}

impl From<Incoming> for RequestBody {
    fn from(b: Incoming) -> Self {
        Self::Client(b)
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        match self.get_mut() {
            Self::Client(b) => Pin::new(b)
                .poll_frame(cx)
                .map_err(|e| -> BodyError { Box::new(ClientBodyError(e)) }),
            Self::Teed(t) => Pin::new(t).poll_frame(cx),
            Self::Copy(c) => Pin::new(c).poll_frame(cx),
            Self::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Client(b) => b.is_end_stream(),
            Self::Teed(t) => t.inner.is_end_stream(),
            Self::Copy(c) => c.rx.is_none(),
            Self::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Client(b) => b.size_hint(),
            Self::Teed(t) => t.inner.size_hint(),
            Self::Copy(c) => c.size,
            Self::Empty => SizeHint::with_exact(0),
        }
    }
}

/// One copy's end of the queue, and whether its sender gave up on it.
struct Outlet {
    tx: mpsc::Sender<Frame<Bytes>>,
    dropped: Arc<AtomicBool>,
}

/// The client's body, with every frame also sent to each mirror's copy.
pub struct Tee {
    inner: Incoming,
    outlets: Vec<Outlet>,
}

fn copy_frame(f: &Frame<Bytes>) -> Option<Frame<Bytes>> {
    if let Some(d) = f.data_ref() {
        return Some(Frame::data(d.clone()));
    }
    f.trailers_ref().map(|t| Frame::trailers(t.clone()))
}

impl Tee {
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if frame.is_data() || frame.is_trailers() {
                    self.outlets.retain(|o| {
                        let sent = copy_frame(frame).is_some_and(|c| o.tx.try_send(c).is_ok());
                        if !sent {
                            o.dropped.store(true, Ordering::Relaxed);
                        }
                        sent
                    });
                }
            }
            // The client's body broke off: so do the copies.
            Poll::Ready(Some(Err(_))) => {
                for o in self.outlets.drain(..) {
                    o.dropped.store(true, Ordering::Relaxed);
                }
            }
            // The end: dropping the senders ends the copies whole.
            Poll::Ready(None) => self.outlets.clear(),
            Poll::Pending => {}
        }
        polled.map(|f| f.map(|r| r.map_err(Into::into)))
    }
}

/// A mirror's copy of a body: what the [`Tee`] hands over, ending in an error if it gave up.
pub struct CopyBody {
    rx: Option<mpsc::Receiver<Frame<Bytes>>>,
    dropped: Arc<AtomicBool>,
    size: SizeHint,
}

impl CopyBody {
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        let Some(rx) = self.rx.as_mut() else {
            return Poll::Ready(None);
        };
        match rx.poll_recv(cx) {
            Poll::Ready(Some(f)) => Poll::Ready(Some(Ok(f))),
            Poll::Ready(None) => {
                self.rx = None;
                if self.dropped.load(Ordering::Relaxed) {
                    Poll::Ready(Some(Err("mirror fell behind: copy abandoned".into())))
                } else {
                    Poll::Ready(None)
                }
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Where one copy goes.
#[derive(Debug)]
pub struct Mirror {
    /// The endpoint of the mirror cluster picked for this request.
    pub endpoint: Arc<Endpoint>,
    /// How to reach it.
    pub dial: Dial,
}

/// Sends a copy of the request `parts` (already edited for its upstream) to each of `mirrors`,
/// and returns the body to send upstream in place of `body`. The copies' `Host` (or
/// `:authority`) gets Envoy's `-shadow` suffix, so a mirror's logs tell copies from real traffic.
pub fn spawn(
    parts: &http::request::Parts,
    body: Incoming,
    mirrors: Vec<Mirror>,
    protocol: Protocol,
) -> RequestBody {
    let bodiless = body.is_end_stream();
    let mut outlets = Vec::new();
    for m in mirrors {
        let copy = if bodiless {
            CopyBody {
                rx: None,
                dropped: Arc::default(),
                size: SizeHint::with_exact(0),
            }
        } else {
            let (tx, rx) = mpsc::channel(QUEUE);
            let dropped = Arc::new(AtomicBool::new(false));
            outlets.push(Outlet {
                tx,
                dropped: dropped.clone(),
            });
            CopyBody {
                rx: Some(rx),
                dropped,
                size: body.size_hint(),
            }
        };
        let Some(req) = copy_of(parts, m.dial.http2, RequestBody::Copy(copy)) else {
            continue;
        };
        tokio::spawn(send(m, req, protocol));
    }
    if outlets.is_empty() {
        RequestBody::Client(body)
    } else {
        RequestBody::Teed(Tee {
            inner: body,
            outlets,
        })
    }
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
async fn send(m: Mirror, req: Request<RequestBody>, protocol: Protocol) {
    use http_body_util::BodyExt;
    let started = Instant::now();
    let mut guard = m.endpoint.start();
    match m.endpoint.pool.send(m.endpoint.addr, m.dial, req).await {
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
