//! HTTP/2 to an upstream on the `h2` crate itself. hyper's client hands each request to the
//! connection's own task over a channel and spawns a task per request to wait for its answer;
//! here the task that has the request opens the stream and reads the answer itself, so a
//! request costs one wake of the connection's task (which writes and reads the frames) and one
//! of its own. The connection is shared: a sidecar's one HTTP/2 connection per peer, or an
//! `h2c` upstream's.

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use h2::{RecvStream, SendStream};
use http::{HeaderMap, Method, Request, Response};
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;

use super::body::{ClientBodyError, RequestBody};
use super::conn::{Conn, SendError};

/// The header that names a request end to end, added where the client sent none.
pub const REQUEST_ID: &str = "x-request-id";

/// Receive windows, frame and buffer limits, and how many streams to open before the peer's
/// SETTINGS say: hyper's client defaults, which the proxy used until now.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONN_WINDOW: u32 = 5 * 1024 * 1024;
const MAX_FRAME: u32 = 16 * 1024;
const MAX_SEND_BUFFER: usize = 1024 * 1024;
const INITIAL_MAX_SEND_STREAMS: usize = 100;

/// An open HTTP/2 connection to an endpoint; clones share it.
#[derive(Clone, Debug)]
pub struct H2Conn {
    send: SendRequest<Bytes>,
    /// Set once the connection's task has ended: nothing more can be sent on it.
    ended: Arc<AtomicBool>,
}

/// Opens HTTP/2 on `conn` and spawns the task that reads and writes its frames.
pub async fn handshake(addr: SocketAddr, conn: Conn) -> Result<H2Conn, SendError> {
    // No keep-alive pings, as Envoy sends none unless configured: gRPC servers count a ping
    // that comes within 5 minutes of the last with no data sent between as abuse and close
    // the connection (GOAWAY `too_many_pings`), which would take down every call on it when one
    // call waits quietly. A silently dead connection is bounded by the route's timeout.
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONN_WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_header_list_size(super::MAX_HEADER_BYTES as u32)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .initial_max_send_streams(INITIAL_MAX_SEND_STREAMS)
        .enable_push(false)
        .handshake::<_, Bytes>(conn)
        .await
        .map_err(|e| SendError::Connect(format!("{addr}: {e}")))?;
    let ended = Arc::new(AtomicBool::new(false));
    let done = ended.clone();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(%addr, "upstream HTTP/2 connection ended: {e}");
        }
        done.store(true, Ordering::Relaxed);
    });
    Ok(H2Conn { send, ended })
}

impl H2Conn {
    /// Whether `other` is a handle on the same connection.
    pub fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.ended, &other.ended)
    }

    /// Whether the connection is gone (closed, failed, or done after the peer's GOAWAY).
    pub fn is_closed(&self) -> bool {
        self.ended.load(Ordering::Relaxed)
    }

    /// Checks the connection can open a stream. An error means it cannot (closed, failed, or
    /// told to go away): nothing was sent, and the request may go on another. (Streams past
    /// the peer's concurrency limit wait inside h2 until one ends; every request holds a
    /// handle of its own, so none waits here.)
    pub async fn ready(&mut self) -> Result<(), h2::Error> {
        poll_fn(|cx| self.send.poll_ready(cx)).await
    }

    /// Opens a stream with `head` (an absolute URI: its scheme and authority become the
    /// pseudo-headers), ending it there when `end`. Call after [`H2Conn::ready`].
    ///
    /// The request id, new with every request, is sent as a literal never indexed: HPACK would
    /// otherwise add each one to the connection's table, where every later request's lookup
    /// walks all those of the same name (most of a request's encoding cost, measured).
    pub fn open(
        &mut self,
        mut head: Request<()>,
        end: bool,
    ) -> Result<(ResponseFuture, SendStream<Bytes>), SendError> {
        if let Some(id) = head.headers_mut().get_mut(REQUEST_ID) {
            id.set_sensitive(true);
        }
        self.send.send_request(head, end).map_err(SendError::H2)
    }

    /// Sends `req`, its body streamed by a task of its own while the answer is awaited (the
    /// two run at once, as a gRPC stream needs). Connection-specific headers, which HTTP/2
    /// forbids, are dropped, and a body of known length states it.
    pub async fn send(mut self, req: Request<RequestBody>) -> Result<Response<H2Body>, SendError> {
        let (mut parts, body) = req.into_parts();
        strip_connection_headers(&mut parts.headers);
        if let Some(n) = body.size_hint().exact()
            && (n != 0 || has_payload_semantics(&parts.method))
            && !parts.headers.contains_key(http::header::CONTENT_LENGTH)
        {
            parts.headers.insert(http::header::CONTENT_LENGTH, n.into());
        }
        let end = body.is_end_stream();
        let (answer, stream) = self.open(Request::from_parts(parts, ()), end)?;
        let cancel = (!end).then(|| {
            let (cancel, canceled) = oneshot::channel();
            tokio::spawn(Pipe {
                body,
                stream,
                held: None,
                canceled,
            });
            cancel
        });
        let resp = answer.await.map_err(SendError::H2)?;
        Ok(H2Body::response(resp, cancel))
    }
}

/// Whether `e`, an answer's error, is the stream reset by this side because the client's own
/// body broke off while it was sent on (the pipe resets with `CANCEL`; nothing else here does
/// while the answer is awaited).
pub fn client_body_broke(e: &h2::Error) -> bool {
    e.is_reset() && !e.is_remote() && !e.is_library() && e.reason() == Some(h2::Reason::CANCEL)
}

/// Methods whose empty body is still stated as `content-length: 0` (hyper's rule).
pub fn has_payload_semantics(m: &Method) -> bool {
    !matches!(
        *m,
        Method::GET
            | Method::HEAD
            | Method::DELETE
            | Method::OPTIONS
            | Method::CONNECT
            | Method::TRACE
    )
}

/// Drops what HTTP/2 forbids in a request (RFC 9113 §8.2.2): the connection-specific fields, the
/// ones `Connection` names, and a `TE` other than `trailers`. The data path already dropped the
/// hop-by-hop ones; this is what h2 would otherwise refuse the whole request for.
pub fn strip_connection_headers(headers: &mut HeaderMap) {
    use http::header::{CONNECTION, TE, TRANSFER_ENCODING, UPGRADE};
    if let Some(named) = headers.remove(CONNECTION)
        && let Ok(named) = named.to_str()
    {
        for name in named.split(',') {
            headers.remove(name.trim());
        }
    }
    for name in [TRANSFER_ENCODING, UPGRADE] {
        headers.remove(name);
    }
    for name in ["keep-alive", "proxy-connection"] {
        headers.remove(name);
    }
    if headers.get(TE).is_some_and(|te| te != "trailers") {
        headers.remove(TE);
    }
}

/// The request body on its way out: frames from the client (or its copy) sent as the peer's
/// flow control allows; reset with `CANCEL` if the body breaks off or the answer is no longer
/// wanted.
struct Pipe {
    body: RequestBody,
    stream: SendStream<Bytes>,
    /// A chunk read from the body, waiting for send capacity.
    held: Option<(Bytes, bool)>,
    /// Fires (closes) when the answer's side is dropped.
    canceled: oneshot::Receiver<()>,
}

impl Future for Pipe {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let me = &mut *self;
        loop {
            if Pin::new(&mut me.canceled).poll(cx).is_ready() {
                me.stream.send_reset(h2::Reason::CANCEL);
                return Poll::Ready(());
            }
            if let Poll::Ready(reason) = me.stream.poll_reset(cx) {
                tracing::debug!("upstream reset the request stream: {reason:?}");
                return Poll::Ready(());
            }
            if me.held.is_some() {
                // Capacity is claimed one byte at a time, only with a chunk in hand: claiming
                // ahead of data pins the connection's window (hyper#4003). h2 raises the claim
                // to the chunk's length as it sends.
                while me.stream.capacity() == 0 {
                    match ready!(me.stream.poll_capacity(cx)) {
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => return Poll::Ready(()),
                    }
                }
                let (data, end) = me.held.take().expect("held");
                if me.stream.send_data(data, end).is_err() || end {
                    return Poll::Ready(());
                }
                continue;
            }
            match ready!(Pin::new(&mut me.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let end = me.body.is_end_stream();
                        if data.is_empty() {
                            if me.stream.send_data(data, end).is_err() || end {
                                return Poll::Ready(());
                            }
                            continue;
                        }
                        me.stream.reserve_capacity(1);
                        me.held = Some((data, end));
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            me.stream.reserve_capacity(0);
                            let _ = me.stream.send_trailers(trailers);
                            return Poll::Ready(());
                        }
                    }
                },
                Some(Err(e)) => {
                    if e.is::<ClientBodyError>() {
                        tracing::debug!("client body broke off: {e}");
                    }
                    me.stream.send_reset(h2::Reason::CANCEL);
                    return Poll::Ready(());
                }
                None => {
                    let _ = me.stream.send_data(Bytes::new(), true);
                    return Poll::Ready(());
                }
            }
        }
    }
}

/// An upstream's HTTP/2 response body: DATA frames (their flow-control capacity given back as
/// each is taken), then trailers.
pub struct H2Body {
    recv: RecvStream,
    data_done: bool,
    /// What `content-length` says is left, as hyper's client reported it.
    left: Option<u64>,
    /// Dropped with the body: tells the request's pipe, if it still runs, to stop.
    _cancel: Option<oneshot::Sender<()>>,
}

impl H2Body {
    /// `resp` with its body read as one, sized by its `content-length` if it states one.
    /// `cancel`: the request's pipe, stopped when the body is dropped.
    pub fn response(
        resp: Response<RecvStream>,
        cancel: Option<oneshot::Sender<()>>,
    ) -> Response<Self> {
        let (parts, recv) = resp.into_parts();
        let left = content_length(&parts.headers).or(recv.is_end_stream().then_some(0));
        let body = Self {
            recv,
            data_done: false,
            left,
            _cancel: cancel,
        };
        Response::from_parts(parts, body)
    }
}

/// The length every `content-length` field agrees on, if they do.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut length = None;
    for v in headers.get_all(http::header::CONTENT_LENGTH) {
        for n in v.to_str().ok()?.split(',') {
            let n: u64 = n.trim().parse().ok()?;
            if length.is_some_and(|l| l != n) {
                return None;
            }
            length = Some(n);
        }
    }
    length
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let me = &mut *self;
        // A RST_STREAM with NO_ERROR after the whole answer (RFC 9113 §8.1: the server needs no
        // more of the request) ends the body; h2 reports one that comes after END_STREAM as
        // the end already, so one seen here came early: complete only if the stated length
        // has all come. Anything else cut the body short.
        let whole = me.left == Some(0);
        let early = |e: h2::Error| match e.reason() {
            Some(h2::Reason::NO_ERROR) if whole => None,
            _ => Some(Err(e)),
        };
        if !me.data_done {
            match ready!(me.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = me.recv.flow_control().release_capacity(data.len());
                    if let Some(left) = &mut me.left {
                        *left = left.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(early(e)),
                None => me.data_done = true,
            }
        }
        match ready!(me.recv.poll_trailers(cx)) {
            Ok(t) => Poll::Ready(t.map(|t| Ok(Frame::trailers(t)))),
            Err(e) => Poll::Ready(early(e)),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.left
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use hyper::body::Incoming;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    /// An h2c server (hyper's) that answers with what it read: the body's length, the request's
    /// trailer, and the headers that reached it, with a trailer of its own.
    async fn echo_server() -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let answer = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let (parts, body) = req.into_parts();
                    let whole = body.collect().await.unwrap();
                    let trailer = whole
                        .trailers()
                        .and_then(|t| t.get("x-sum"))
                        .map(|v| v.to_str().unwrap().to_owned());
                    let mut names: Vec<_> = parts.headers.keys().map(|k| k.as_str()).collect();
                    names.sort_unstable();
                    let said = format!("{} {trailer:?} {names:?}", whole.to_bytes().len());
                    let mut trailers = HeaderMap::new();
                    trailers.insert("grpc-status", "0".parse().unwrap());
                    let body = http_body_util::StreamBody::new(futures::stream::iter([
                        Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(said))),
                        Ok(Frame::trailers(trailers)),
                    ]));
                    Ok::<_, std::convert::Infallible>(Response::new(body))
                });
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(s), answer),
                );
            }
        });
        addr
    }

    async fn connect(addr: SocketAddr) -> H2Conn {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        handshake(addr, Conn::Plain(tcp)).await.unwrap()
    }

    /// A body several times the peer's 64 KiB window goes whole, as flow control allows, with
    /// its trailers; the answer's trailers come back; what HTTP/2 forbids is dropped, not
    /// refused.
    #[tokio::test]
    async fn a_body_larger_than_the_window_and_trailers_cross_both_ways() {
        let addr = echo_server().await;
        let conn = connect(addr).await;
        let (tx, body) = futures::channel::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
        tokio::spawn(async move {
            use futures::SinkExt;
            let mut tx = tx;
            for _ in 0..25 {
                tx.send(Ok(Frame::data(Bytes::from(vec![b'x'; 10_000]))))
                    .await
                    .unwrap();
            }
            let mut t = HeaderMap::new();
            t.insert("x-sum", "250000".parse().unwrap());
            tx.send(Ok(Frame::trailers(t))).await.unwrap();
        });
        let body = http_body_util::StreamBody::new(body);
        let (server_side, incoming) = hyper_incoming(body).await;
        let mut req = Request::new(RequestBody::Client(incoming));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = "http://api.shop/upload".parse().unwrap();
        for (k, v) in [
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers, deflate"),
            ("x-kept", "1"),
        ] {
            req.headers_mut().append(k, v.parse().unwrap());
        }
        let mut conn = conn;
        conn.ready().await.unwrap();
        let resp = conn.send(req).await.unwrap();
        let whole = resp.into_body().collect().await.unwrap();
        let trailers = whole.trailers().cloned().unwrap();
        assert_eq!(trailers["grpc-status"], "0");
        assert_eq!(
            String::from_utf8(whole.to_bytes().to_vec()).unwrap(),
            r#"250000 Some("250000") ["x-kept"]"#
        );
        drop(server_side);
    }

    /// A streamed body as hyper's server hands it to the proxy: an `Incoming` read from a
    /// real HTTP/1.1 connection that `body` is sent on, chunked.
    async fn hyper_incoming<B>(body: B) -> (tokio::task::JoinHandle<()>, Incoming)
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (give, take) = oneshot::channel();
        let server = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let give = std::sync::Mutex::new(Some(give));
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let _ = give.lock().unwrap().take().unwrap().send(req.into_body());
                std::future::pending::<Result<Response<String>, std::convert::Infallible>>()
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(s), svc)
                .await;
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut send, c) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(c);
        tokio::spawn(async move {
            let req = Request::post("/")
                .header("trailer", "x-sum")
                .body(body)
                .unwrap();
            let _ = send.send_request(req).await;
        });
        (server, take.await.unwrap())
    }
}
