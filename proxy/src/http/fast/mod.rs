//! The HTTP/1.1 fast path: the common request (HTTP/1.1 keep-alive, origin-form, no body, to an
//! HTTP/1.1 upstream) proxied as bytes. The head is parsed in place, routed, and forwarded with
//! its hop-by-hop lines left out; the response head is forwarded the same way and its body copied
//! as it arrives, all in the connection's own task. No header map, no second task per upstream
//! connection, no channel between them: this is where hyper's generality cost the most per request.
//!
//! Anything else (a body, an upgrade, HTTP/1.0, a malformed or oversized head, a route that fails
//! or goes to HTTP/2) hands the connection, with the bytes read so far, to hyper for the rest of
//! its life. So every unusual or hostile request keeps hyper's checks and answers, and the proxy's
//! own replies for routing failures come from one place.

mod chunked;
mod parse;
mod prefixed;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use prefixed::Prefixed;

use self::parse::{Framing, Parsed, RequestHead, Response, ResponseHead, Span};
use super::{MAX_HEADER_BYTES, Proxy, RouteSource, Target, local_status};
use crate::balance::InFlight;
use crate::config::route::RequestView;
use crate::metrics::{DestStats, Flag, Outcome, Protocol};

/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 16 * 1024;

/// Pipelined bytes read ahead while a response is awaited; past this the client waits.
const READ_AHEAD: usize = 2 * MAX_HEADER_BYTES;

/// How long a closing connection's unread request body is read and dropped.
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// What became of a connection the fast path served.
#[derive(Debug)]
pub enum Served {
    /// It is closed.
    Closed,
    /// hyper serves the rest of it.
    Handoff(Prefixed),
}

/// A request head as routing sees it.
struct View<'a> {
    buf: &'a [u8],
    head: &'a RequestHead,
    headers: &'a [Span],
}

impl View<'_> {
    /// The parser checked these parts are ASCII.
    fn str(&self, r: &std::ops::Range<usize>) -> &str {
        std::str::from_utf8(&self.buf[r.clone()]).unwrap_or_default()
    }

    fn target(&self) -> (&str, Option<&str>) {
        let t = self.str(&self.head.target);
        match t.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (t, None),
        }
    }
}

impl RequestView for View<'_> {
    fn method(&self) -> &str {
        self.str(&self.head.method)
    }

    fn path(&self) -> &str {
        self.target().0
    }

    fn query(&self) -> Option<&str> {
        self.target().1
    }

    fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |s| self.buf[s.name.clone()].eq_ignore_ascii_case(name.as_bytes()))
            .filter_map(|s| std::str::from_utf8(&self.buf[s.value.clone()]).ok())
    }
}

/// Why no response head came back.
enum NoHead {
    /// The upstream closed or reset before sending a byte: a pooled connection it had given up
    /// on, so an idempotent request may go again on a new one.
    Stale,
    /// It answered with something that is not HTTP the proxy can forward.
    Broken(&'static str),
    /// The route's timeout passed.
    Timeout,
    /// The client went away.
    ClientGone,
    /// The client's body broke its framing (after the upstream had the head).
    BadBody,
}

/// A connection's buffers, reused from one request to the next.
struct Conn<'p> {
    proxy: &'p Proxy,
    client: TcpStream,
    /// Bytes from the client: the current head, then anything pipelined behind it.
    inbuf: BytesMut,
    /// Bytes from the upstream.
    upbuf: BytesMut,
    /// The head going upstream, kept for a retry.
    up_head: Vec<u8>,
    /// What goes downstream next.
    down: Vec<u8>,
    /// Header lines to forward, of the head being handled.
    spans: Vec<Span>,
}

/// Serves HTTP/1.1 requests on `client` until it closes or needs hyper. `late`: accepted while
/// the proxy drains, so it serves one request and closes.
pub async fn serve(proxy: &Proxy, source: &RouteSource, client: TcpStream, late: bool) -> Served {
    let mut conn = Conn {
        proxy,
        client,
        inbuf: BytesMut::with_capacity(4 * 1024),
        upbuf: BytesMut::new(),
        up_head: Vec::new(),
        down: Vec::new(),
        spans: Vec::new(),
    };
    let header_timeout = proxy.header_timeout;
    // One timer for the connection, re-armed only when it fires before a head is overdue: arming
    // a timer per request costs more than parsing the head.
    let mut header_timer = std::pin::pin!(tokio::time::sleep(header_timeout));
    let mut drained = std::pin::pin!(proxy.drain.signaled());
    let mut draining = late;
    loop {
        let waiting_since = Instant::now();
        let head = loop {
            if !conn.inbuf.is_empty() {
                match parse::request(&conn.inbuf, &mut conn.spans) {
                    Parsed::Done(head) => break head,
                    Parsed::Partial if conn.inbuf.len() < MAX_HEADER_BYTES => {}
                    _ => return Served::Handoff(Prefixed::new(conn.client, conn.inbuf)),
                }
            }
            conn.inbuf.reserve(READ_CHUNK);
            tokio::select! {
                biased;
                read = conn.client.read_buf(&mut conn.inbuf) => {
                    if !matches!(read, Ok(n) if n > 0) {
                        return Served::Closed;
                    }
                }
                () = header_timer.as_mut() => {
                    let overdue = waiting_since + header_timeout;
                    if Instant::now() >= overdue {
                        tracing::debug!("no request head within {header_timeout:?}; closing");
                        return Served::Closed;
                    }
                    header_timer.as_mut().reset(overdue.into());
                }
                () = drained.as_mut(), if !draining => {
                    draining = true;
                    if conn.inbuf.is_empty() {
                        return Served::Closed;
                    }
                }
            }
        };
        let started = Instant::now();
        let target = {
            let view = View {
                buf: &conn.inbuf,
                head: &head,
                headers: &conn.spans,
            };
            proxy.target(source, view.str(&head.host), &view, false)
        };
        let target = match target {
            Ok(t) if !t.dial.http2 => t,
            // hyper's path answers routing failures, and speaks HTTP/2 upstream.
            _ => return Served::Handoff(Prefixed::new(conn.client, conn.inbuf)),
        };
        // The part of the body that came with the head; malformed chunked coding is hyper's 400.
        let mut body = Left::new(head.body);
        let Ok((prefix, whole)) = body.feed(&conn.inbuf[head.len..]) else {
            return Served::Handoff(Prefixed::new(conn.client, conn.inbuf));
        };
        let mut request = Request {
            head,
            body,
            prefix,
            whole,
        };
        let close = request.head.close || draining;
        if !conn.exchange(&mut request, target, started, close).await {
            if !matches!(request.body, Left::Done) {
                conn.linger().await;
            }
            return Served::Closed;
        }
        conn.inbuf.advance(request.head.len + prefix);
    }
}

/// How much of a message body is still to come, as its bytes pass by.
enum Left {
    /// This many bytes.
    Length(u64),
    /// Chunks up to the last one and the trailers.
    Chunked(chunked::Chunked),
    /// Whatever comes until the sender closes.
    UntilClose,
    /// Nothing.
    Done,
}

impl Left {
    fn new(framing: Framing) -> Self {
        match framing {
            Framing::Empty | Framing::Length(0) => Self::Done,
            Framing::Length(n) => Self::Length(n),
            Framing::Chunked => Self::Chunked(Default::default()),
            Framing::UntilClose => Self::UntilClose,
        }
    }

    /// Of the body's next `bytes`, how many belong to it, and whether it ends with them.
    fn feed(&mut self, bytes: &[u8]) -> Result<(usize, bool), chunked::Malformed> {
        let fed = match self {
            Self::Done => (0, true),
            Self::Length(n) => {
                let take = (*n).min(bytes.len() as u64);
                *n -= take;
                (take as usize, *n == 0)
            }
            Self::Chunked(c) => match c.feed(bytes)? {
                Some(end) => (end, true),
                None => (bytes.len(), false),
            },
            Self::UntilClose => (bytes.len(), false),
        };
        if fed.1 {
            *self = Self::Done;
        }
        Ok(fed)
    }
}

/// A request being forwarded.
struct Request {
    head: RequestHead,
    /// What is left of its body after `prefix`.
    body: Left,
    /// Bytes of body that arrived with the head (in `inbuf` after it).
    prefix: usize,
    /// Whether they are the whole body.
    whole: bool,
}

/// The route's timer, when it has a timeout.
type Timer = Option<Pin<Box<tokio::time::Sleep>>>;

impl Conn<'_> {
    /// Forwards one request and its response. Whether the client connection stays open.
    async fn exchange(
        &mut self,
        req: &mut Request,
        target: Target,
        started: Instant,
        close: bool,
    ) -> bool {
        let head = &req.head;
        self.write_upstream_head(head);
        let body = &self.inbuf[head.len..head.len + req.prefix];
        self.up_head.extend_from_slice(body);
        let Target {
            endpoint,
            dial,
            timeout,
        } = target;
        let mut guard = endpoint.start();
        let mut timer: Timer =
            timeout.map(|t| Box::pin(tokio::time::sleep_until((started + t).into())));
        let is_head = head.is_head(&self.inbuf);
        // Only a request held whole can be sent again.
        let retryable = head.idempotent(&self.inbuf) && req.whole;
        let mut retried = false;
        let (upstream, resp, sent_whole) = loop {
            let (mut upstream, reused) = match endpoint.pool.take_raw() {
                Some(c) => (c, true),
                None => match super::pool::connect(endpoint.addr, dial.connect_timeout).await {
                    Ok(c) => (c, false),
                    Err(e) => {
                        tracing::debug!(endpoint = %endpoint.addr, "upstream error: {e}");
                        // Only a refused or unreachable endpoint is backed off from.
                        guard.failed();
                        let flag = Flag::UpstreamConnectFailure;
                        let close = close || !req.whole;
                        return self
                            .reply(flag, &endpoint.stats, head, started, close)
                            .await;
                    }
                },
            };
            let mut sent_whole = req.whole;
            let answer = match upstream.write_all(&self.up_head).await {
                Ok(()) if !req.whole => {
                    match self.upload(&mut upstream, &mut req.body, &mut timer).await {
                        Ok(whole) => {
                            sent_whole = whole;
                            self.response_head(&mut upstream, is_head, &mut timer).await
                        }
                        Err(e) => Err(e),
                    }
                }
                Ok(()) => self.response_head(&mut upstream, is_head, &mut timer).await,
                Err(_) => Err(NoHead::Stale),
            };
            let flag = match answer {
                Ok(resp) => break (upstream, resp, sent_whole),
                // What hyper's pool and browsers do for a pooled connection closed under them.
                Err(NoHead::Stale) if reused && retryable && !retried => {
                    retried = true;
                    continue;
                }
                Err(NoHead::ClientGone) => {
                    count(&endpoint.stats, 0, Some(Flag::DownstreamClosed), started);
                    return false;
                }
                Err(NoHead::Timeout) => Flag::UpstreamTimeout,
                Err(NoHead::BadBody) => Flag::DownstreamProtocolError,
                Err(NoHead::Stale) => {
                    tracing::debug!(endpoint = %endpoint.addr, "upstream closed before answering");
                    Flag::UpstreamReset
                }
                Err(NoHead::Broken(why)) => {
                    tracing::debug!(endpoint = %endpoint.addr, "upstream error: {why}");
                    Flag::UpstreamReset
                }
            };
            // A body not read to its end leaves no request boundary to go on from.
            let close =
                close || !matches!(req.body, Left::Done) || flag == Flag::DownstreamProtocolError;
            return self
                .reply(flag, &endpoint.stats, head, started, close)
                .await;
        };
        guard.answered();
        let close = close
            || !sent_whole
            || resp.framing == Framing::UntilClose
            || self.proxy.drain.is_draining();
        self.write_downstream_head(&resp, close);
        let mut resp = resp;
        // An upstream that answered before it had the whole body may not have read it.
        resp.reusable &= sent_whole;
        self.relay(upstream, resp, guard, &mut timer, started, close)
            .await
    }

    /// Copies the rest of the request body from the client to the upstream. `Ok(false)`: the
    /// upstream began to answer first (a 413, a redirect), so the rest is not sent.
    async fn upload(
        &mut self,
        upstream: &mut TcpStream,
        body: &mut Left,
        timer: &mut Timer,
    ) -> Result<bool, NoHead> {
        let (from_upstream, mut to_upstream) = upstream.split();
        loop {
            self.upbuf.clear();
            self.upbuf.reserve(READ_CHUNK);
            // The upstream first: an answer ends the upload even while the client has more.
            tokio::select! {
                biased;
                _ = from_upstream.readable() => return Ok(false),
                read = self.client.read_buf(&mut self.upbuf) => {
                    if !matches!(read, Ok(n) if n > 0) {
                        return Err(NoHead::ClientGone);
                    }
                }
                () = expiry(timer) => return Err(NoHead::Timeout),
            }
            let (take, done) = body.feed(&self.upbuf).map_err(|_| NoHead::BadBody)?;
            // Bytes past the body are the next request's.
            self.inbuf.extend_from_slice(&self.upbuf[take..]);
            tokio::select! {
                biased;
                sent = to_upstream.write_all(&self.upbuf[..take]) => {
                    if sent.is_err() {
                        return Err(NoHead::Broken("upstream closed mid-request"));
                    }
                }
                // It answers and stops reading: waiting for it to read would wait forever.
                _ = from_upstream.readable() => return Ok(false),
                () = expiry(timer) => return Err(NoHead::Timeout),
            }
            if done {
                return Ok(true);
            }
        }
    }

    /// The request head for the upstream: as the client sent it, less hop-by-hop lines, plus an
    /// `x-request-id` when it had none.
    fn write_upstream_head(&mut self, head: &RequestHead) {
        let (out, buf) = (&mut self.up_head, &self.inbuf[..]);
        out.clear();
        out.extend_from_slice(&buf[head.method.clone()]);
        out.push(b' ');
        out.extend_from_slice(&buf[head.target.clone()]);
        out.extend_from_slice(b" HTTP/1.1\r\n");
        write_lines(out, buf, &self.spans);
        if !head.has_request_id {
            let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
            out.extend_from_slice(b"x-request-id: ");
            out.extend_from_slice(
                uuid::Uuid::new_v4()
                    .hyphenated()
                    .encode_lower(&mut id)
                    .as_bytes(),
            );
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }

    fn write_downstream_head(&mut self, resp: &ResponseHead, close: bool) {
        let (out, buf) = (&mut self.down, &self.upbuf[..]);
        out.clear();
        out.extend_from_slice(b"HTTP/1.1 ");
        let s = resp.status;
        out.extend_from_slice(&[
            b'0' + (s / 100) as u8,
            b'0' + (s / 10 % 10) as u8,
            b'0' + (s % 10) as u8,
            b' ',
        ]);
        out.extend_from_slice(&buf[resp.reason.clone()]);
        out.extend_from_slice(b"\r\n");
        write_lines(out, buf, &self.spans);
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }

    /// Reads the response head into `upbuf`, skipping 1xx heads, while watching the client: one
    /// that closes abandons the request.
    async fn response_head(
        &mut self,
        upstream: &mut TcpStream,
        is_head: bool,
        timer: &mut Timer,
    ) -> Result<ResponseHead, NoHead> {
        self.upbuf.clear();
        let (mut heard, mut watching) = (false, true);
        loop {
            if !self.upbuf.is_empty() {
                match parse::response(&self.upbuf, is_head, &mut self.spans) {
                    Ok(Response::Done(resp)) => return Ok(resp),
                    Ok(Response::Informational(n)) => {
                        self.upbuf.advance(n);
                        continue;
                    }
                    Ok(Response::Partial) if self.upbuf.len() < MAX_HEADER_BYTES => {}
                    Ok(Response::Partial) => {
                        return Err(NoHead::Broken("response headers too large"));
                    }
                    Err(why) => return Err(NoHead::Broken(why)),
                }
            }
            self.upbuf.reserve(READ_CHUNK);
            tokio::select! {
                biased;
                read = upstream.read_buf(&mut self.upbuf) => match read {
                    Ok(n) if n > 0 => heard = true,
                    _ if !heard => return Err(NoHead::Stale),
                    _ => return Err(NoHead::Broken("closed mid-head")),
                },
                ready = self.client.readable(), if watching => {
                    if ready.is_err() {
                        return Err(NoHead::ClientGone);
                    }
                    match self.client.try_read_buf(&mut self.inbuf) {
                        Ok(0) => return Err(NoHead::ClientGone),
                        Ok(_) => watching = self.inbuf.len() < READ_AHEAD,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => return Err(NoHead::ClientGone),
                    }
                }
                () = expiry(timer) => return Err(NoHead::Timeout),
            }
        }
    }

    /// Sends the response head (in `down`) and the body after it, as the upstream sends it; then
    /// counts the request and pools the upstream connection if it can carry another.
    async fn relay(
        &mut self,
        mut upstream: TcpStream,
        resp: ResponseHead,
        guard: InFlight,
        timer: &mut Timer,
        started: Instant,
        close: bool,
    ) -> bool {
        let stats = &guard.endpoint().stats;
        let code = resp.status;
        let mut reusable = resp.reusable;
        let mut body = Left::new(resp.framing);
        let mut from = resp.len;
        let mut first = true;
        loop {
            let piece = &self.upbuf[from..];
            let Ok((take, done)) = body.feed(piece) else {
                tracing::debug!("upstream sent malformed chunked coding");
                count(stats, code, Some(Flag::UpstreamReset), started);
                return false;
            };
            // Bytes past the end of the response: the upstream is not speaking HTTP/1.1 we trust.
            reusable &= !(done && take < piece.len());
            // The head goes out with the first piece of body, in one write.
            let sent = if first {
                first = false;
                self.down.extend_from_slice(&piece[..take]);
                self.client.write_all(&self.down).await
            } else {
                self.client.write_all(&piece[..take]).await
            };
            if sent.is_err() {
                count(stats, code, Some(Flag::DownstreamClosed), started);
                return false;
            }
            if done {
                break;
            }
            self.upbuf.clear();
            self.upbuf.reserve(READ_CHUNK);
            from = 0;
            let read = tokio::select! {
                biased;
                read = upstream.read_buf(&mut self.upbuf) => read,
                () = expiry(timer) => {
                    count(stats, code, Some(Flag::UpstreamTimeout), started);
                    return false;
                }
            };
            match read {
                Ok(n) if n > 0 => {}
                Ok(_) if resp.framing == Framing::UntilClose => break,
                _ => {
                    tracing::debug!("upstream closed mid-body");
                    count(stats, code, Some(Flag::UpstreamReset), started);
                    return false;
                }
            }
        }
        if reusable {
            guard.endpoint().pool.put_back_raw(upstream);
        }
        count(stats, code, None, started);
        if close {
            let _ = self.client.shutdown().await;
        }
        !close
    }

    /// Closes a connection whose client may still be sending a body nobody reads, the way nginx
    /// does (`lingering_close`): our side first, then what still comes is read and dropped for a
    /// while. Closing with unread bytes would send a reset, which can destroy the response before
    /// the client reads it.
    async fn linger(&mut self) {
        let _ = self.client.shutdown().await;
        let discard = async {
            loop {
                self.upbuf.clear();
                self.upbuf.reserve(READ_CHUNK);
                if !matches!(self.client.read_buf(&mut self.upbuf).await, Ok(n) if n > 0) {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, discard).await;
    }

    /// Answers a failure itself, as hyper's path would, and counts it.
    async fn reply(
        &mut self,
        flag: Flag,
        stats: &Arc<DestStats>,
        head: &RequestHead,
        started: Instant,
        close: bool,
    ) -> bool {
        let view = View {
            buf: &self.inbuf,
            head,
            headers: &[],
        };
        let failure = (flag, Some(stats.clone()));
        self.proxy.count_local(
            &failure,
            Protocol::Http,
            (view.method(), view.path()),
            started,
        );
        let status = local_status(flag);
        let body = flag.describe();
        self.down.clear();
        let _ = std::io::Write::write_fmt(
            &mut self.down,
            format_args!(
                "HTTP/1.1 {} {}\r\ncontent-type: text/plain\r\nx-weft-reason: {}\r\ncontent-length: {}\r\n{}\r\n{body}",
                status.as_u16(),
                status.canonical_reason().unwrap_or_default(),
                flag.as_str(),
                body.len(),
                if close { "connection: close\r\n" } else { "" },
            ),
        );
        self.client.write_all(&self.down).await.is_ok() && !close
    }
}

/// Appends header lines.
fn write_lines(out: &mut Vec<u8>, buf: &[u8], spans: &[Span]) {
    for s in spans {
        out.extend_from_slice(&buf[s.name.clone()]);
        out.extend_from_slice(b": ");
        out.extend_from_slice(&buf[s.value.clone()]);
        out.extend_from_slice(b"\r\n");
    }
}

/// Counts a request of the fast path (always HTTP, never gRPC).
fn count(stats: &DestStats, code: u16, flag: Option<Flag>, started: Instant) {
    let outcome = Outcome {
        protocol: Protocol::Http,
        code,
        grpc_status: None,
        flag,
    };
    stats.record(outcome, started.elapsed());
}

/// Resolves when the route's timer fires; never without one.
async fn expiry(timer: &mut Timer) {
    match timer {
        Some(t) => t.as_mut().await,
        None => std::future::pending().await,
    }
}
