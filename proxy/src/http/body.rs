//! The bodies of the responses the proxy sends downstream: its own, or an upstream's streamed
//! through, which counts the request and gives its connection back once it is done.

use std::convert::Infallible;
use tokio::time::Instant;

use bytes::Bytes;
use http::header::HeaderName;
use http_body_util::Full;

use crate::metrics::{Flag, Outcome, RequestProtocol};
/// Why a response body broke off: the upstream's error, or the route's timeout.
pub use crate::upstream::body::BodyError;
use crate::upstream::pool;

/// The header a gRPC status rides in (trailers, or the headers of a trailers-only answer).
pub(super) const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// The `grpc-status` in the headers of a gRPC call, if there is a valid one. Other protocols are
/// not asked: the lookup costs a hash per response.
pub(super) fn grpc_status(protocol: RequestProtocol, headers: &http::HeaderMap) -> Option<u8> {
    if protocol != RequestProtocol::Grpc {
        return None;
    }
    std::str::from_utf8(headers.get(GRPC_STATUS)?.as_bytes())
        .ok()?
        .parse()
        .ok()
}

/// Body of every response the proxy returns: its own, or the upstream's passed through. An enum
/// rather than a boxed trait object, so a response costs no allocation for its body.
pub enum Body {
    /// A reply the proxy wrote itself.
    Local(Full<Bytes>),
    /// An upstream's response body, streamed.
    Upstream(UpstreamBody),
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Self::Local(b) => std::pin::Pin::new(b)
                .poll_frame(cx)
                .map_err(|n: Infallible| match n {}),
            Self::Upstream(b) => std::pin::Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Local(b) => b.is_end_stream(),
            Self::Upstream(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Self::Local(b) => b.size_hint(),
            Self::Upstream(b) => b.size_hint(),
        }
    }
}

/// A response body on its way downstream. Holds the endpoint busy until the body is done, then
/// gives an HTTP/1.1 connection back to the pool and counts the request; a body dropped before
/// its end takes the connection with it (it cannot carry another request) and is counted with
/// the `DC` flag.
pub struct UpstreamBody {
    pub(super) inner: Upstream,
    pub(super) guard: crate::balance::InFlight,
    pub(super) conn: Option<pool::H1>,
    /// The outcome so far and when the request started; taken when counted.
    pub(super) pending: Option<(Outcome, Instant)>,
    /// When the route's timeout cuts the response off.
    pub(super) deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

/// Where an upstream's response body is read from: a pooled connection (hyper's HTTP/1.1
/// client, or an HTTP/2 stream), or a fast-path connection ([`super::h1::client`]).
pub type Upstream = http_body_util::Either<pool::Answer, super::h1::client::RawBody>;

impl UpstreamBody {
    fn done(&mut self) {
        let pool = &self.guard.endpoint().pool;
        if let Some(conn) = self.conn.take() {
            pool.put_back(conn);
        }
        if let http_body_util::Either::Right(b) = &mut self.inner
            && let Some(conn) = b.reusable()
        {
            pool.put_back_raw(conn);
        }
        self.count(None);
    }

    fn count(&mut self, flag: Option<Flag>) {
        if let Some((mut outcome, started)) = self.pending.take() {
            outcome.flag = flag;
            self.guard
                .endpoint()
                .stats
                .record(outcome, started.elapsed());
        }
    }
}

impl hyper::body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BodyError>>> {
        if let Some(d) = self.deadline.as_mut()
            && d.as_mut().poll(cx).is_ready()
        {
            self.deadline = None;
            self.count(Some(Flag::UpstreamTimeout));
            // Dropping the connection with the unfinished body is what cancels the upstream.
            self.conn = None;
            return std::task::Poll::Ready(Some(Err("route timeout expired mid-response".into())));
        }
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(None) => self.done(),
            std::task::Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    if let Some((outcome, _)) = &mut self.pending {
                        outcome.grpc_status =
                            grpc_status(outcome.protocol, trailers).or(outcome.grpc_status);
                    }
                    // Trailers end a message; servers stop polling after them.
                    self.done();
                }
            }
            std::task::Poll::Ready(Some(Err(_))) => self.count(Some(Flag::UpstreamReset)),
            std::task::Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // The server stops polling once `is_end_stream` says so, or once a body of known length
        // has been sent whole (before an HTTP/2 upstream's END_STREAM arrives): both are complete.
        // Only a complete HTTP/1.1 message frees its connection for another request.
        if hyper::body::Body::is_end_stream(&self.inner) {
            self.done();
        } else if hyper::body::Body::size_hint(&self.inner).exact() == Some(0) {
            self.conn = None;
            self.count(None);
        } else {
            self.count(Some(Flag::DownstreamClosed));
        }
    }
}

/// Records a request the client abandoned before its response began, unless disarmed.
pub(super) struct Unanswered<'a> {
    pub(super) stats: &'a crate::metrics::DestStats,
    pub(super) protocol: RequestProtocol,
    pub(super) started: Instant,
    pub(super) armed: bool,
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if self.armed {
            let outcome = Outcome {
                protocol: self.protocol,
                code: 0,
                grpc_status: None,
                flag: Some(Flag::DownstreamClosed),
            };
            self.stats.record(outcome, self.started.elapsed());
        }
    }
}
