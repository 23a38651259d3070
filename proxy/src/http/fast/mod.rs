//! The HTTP/1.1 fast path: the common request (HTTP/1.1 keep-alive, origin-form, no body or a
//! small one of one plain framing) proxied in the connection's own task. To an HTTP/1.1 upstream
//! it goes as bytes: the head is parsed in place, routed, and forwarded with its hop-by-hop lines
//! left out, its body behind it; the response head is forwarded the same way and its body copied
//! as it arrives. No header map, no second task per upstream connection, no channel between them:
//! this is where hyper's generality cost the most per request. To an HTTP/2 upstream (another
//! sidecar) it goes as a stream on the endpoint's shared connection (`h2.rs`).
//!
//! Anything else (a large or streamed body, an upgrade, HTTP/1.0, a malformed or oversized head, a
//! route that fails or edits the request) hands the connection, with the bytes read so far, to
//! hyper for the rest of its life. So every unusual or hostile request keeps hyper's checks and answers,
//! uploads stream both ways at once as hyper's client does, and the proxy's own replies for
//! routing failures come from one place.

mod buffers;
mod h2;
mod prefixed;
mod view;

use std::pin::Pin;
use std::sync::Arc;
use tokio::time::Instant;

use crate::stream::Stream;
use crate::upstream::pool::RawConn;
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use prefixed::Prefixed;
use view::View;

use self::h2::Exchanged;
use super::h1::chunked;
use super::h1::parse::{self, Framing, Parsed, RequestHead, Response, ResponseHead, Span};
use super::reply::write_http1;
use super::{
    Asked, Carrier, Counting, Decision, MAX_HEADER_BYTES, Proxy, RouteSource, Routed, Target,
};
use crate::balance::InFlight;
use crate::config::route::RequestView;
use crate::metrics::{DestStats, Flag, Outcome, RequestProtocol};

/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 16 * 1024;

/// Pipelined bytes read ahead while a response is awaited; past this the client waits.
const READ_AHEAD: usize = 2 * MAX_HEADER_BYTES;

/// The largest request body the fast path waits for and sends whole; larger ones, chunked ones
/// that did not come whole with their head, and ones slower than `BODY_WAIT` are streamed by
/// hyper.
const MAX_BODY: usize = 64 * 1024;

/// How long the fast path waits for the rest of a small body before hyper streams it instead:
/// long enough for one that is merely split across packets.
const BODY_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// What became of a connection the fast path served.
#[derive(Debug)]
pub enum Served<S> {
    /// It is closed.
    Closed,
    /// hyper serves the rest of it, starting with the request the fast path routed, if it did.
    Handoff(Prefixed<S>, Option<Routed>),
}

/// Why no response head came back.
enum NoHead {
    /// The upstream closed or reset before sending a byte: a pooled connection it had given up
    /// on, so an idempotent request may go again on a new one.
    Stale,
    /// It answered with something that is not HTTP the proxy can forward.
    Broken(&'static str),
    /// It closed partway through its head.
    Cut,
    /// The route's timeout passed.
    Timeout,
    /// The client went away.
    ClientGone,
}

/// The request being served.
struct Current {
    head: RequestHead,
    /// Bytes of it in `inbuf`: head and body.
    len: usize,
    started: Instant,
    /// Close the connection after the response.
    close: bool,
}

/// A connection's buffers, reused from one request to the next.
struct Conn<'p, S> {
    proxy: &'p Proxy,
    client: S,
    /// Bytes from the client: the current request, then anything pipelined behind it.
    inbuf: BytesMut,
    /// The client has closed its side; what is in `inbuf` is all there will be.
    client_done: bool,
    /// The request going upstream, kept for a retry.
    up_head: Vec<u8>,
    /// What goes downstream next.
    down: Vec<u8>,
    /// Header lines to forward, of the head being handled.
    spans: Vec<Span>,
}

/// Whether a head's whole body is in `buf` after it: its length if so.
enum Body {
    Whole(usize),
    /// More is to come, and the fast path may wait for it.
    Partial,
    /// hyper's: too large to hold, or malformed (hyper answers 400).
    Other,
}

fn body_of(head: &RequestHead, buf: &[u8]) -> Body {
    if let Framing::Length(n) = head.body
        && n > MAX_BODY as u64
    {
        return Body::Other;
    }
    let after = &buf[head.len..];
    match Left::new(head.body).feed(after) {
        Ok((n, true)) => Body::Whole(n),
        // A client that announced its length sends it; one streaming chunks may be waiting for
        // the response before it ends its body, which only hyper's full-duplex path can serve.
        Ok(_) if after.len() < MAX_BODY && head.body != Framing::Chunked => Body::Partial,
        _ => Body::Other,
    }
}

/// Serves HTTP/1.1 requests on `client` until it closes or needs hyper. `late`: accepted while
/// the proxy drains, so it serves one request and closes.
pub async fn serve<S: Stream>(
    proxy: &Proxy,
    source: &RouteSource,
    client: S,
    late: bool,
) -> Served<S> {
    let mut conn = Conn {
        proxy,
        client,
        inbuf: BytesMut::new(),
        client_done: false,
        up_head: Vec::new(),
        down: Vec::new(),
        spans: Vec::new(),
    };
    let handoff = |conn: Conn<'_, S>| Served::Handoff(Prefixed::new(conn.client, conn.inbuf), None);
    let header_timeout = proxy.header_timeout;
    // One timer for the connection, re-armed only when it fires before a head is overdue: arming
    // a timer per request costs more than parsing the head.
    let mut header_timer = std::pin::pin!(tokio::time::sleep(header_timeout));
    let mut drained = std::pin::pin!(proxy.drain.signaled());
    let mut draining = late;
    loop {
        let waiting_since = Instant::now();
        // A head, and its body if it has one; the header timeout covers both. A head whose body
        // is still coming is kept (its spans are offsets, valid as the buffer grows), not parsed
        // again on every read.
        let mut parsed: Option<RequestHead> = None;
        let mut waiting_for_body = false;
        let (head, body) = loop {
            if parsed.is_none() && !conn.inbuf.is_empty() {
                match parse::request(&conn.inbuf, &mut conn.spans) {
                    Parsed::Done(head) => parsed = Some(head),
                    Parsed::Partial if conn.inbuf.len() < MAX_HEADER_BYTES => {}
                    Parsed::Refused => {
                        conn.refuse().await;
                        return Served::Closed;
                    }
                    _ => return handoff(conn),
                }
            }
            if let Some(head) = &parsed {
                match body_of(head, &conn.inbuf) {
                    Body::Whole(n) => break (parsed.take().expect("parsed"), n),
                    // A body that trickles in is not held: past a short wait hyper streams it.
                    Body::Partial if !waiting_for_body => {
                        waiting_for_body = true;
                        let wait = BODY_WAIT.min(header_timeout);
                        header_timer.as_mut().reset(Instant::now() + wait);
                    }
                    Body::Partial => {}
                    Body::Other => return handoff(conn),
                }
            }
            if conn.client_done {
                return Served::Closed;
            }
            tokio::select! {
                biased;
                read = conn.read_client() => {
                    if !matches!(read, Ok(n) if n > 0) {
                        return Served::Closed;
                    }
                }
                () = header_timer.as_mut() => {
                    if waiting_for_body {
                        return handoff(conn);
                    }
                    let overdue = waiting_since + header_timeout;
                    if Instant::now() >= overdue {
                        tracing::debug!("no request head within {header_timeout:?}; closing");
                        return Served::Closed;
                    }
                    header_timer.as_mut().reset(overdue);
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
            if source.normalize_path && crate::http::path::needs_normalizing(view.path()) {
                // Rare: hyper's path rewrites it, then routes.
                let io = Prefixed::new(conn.client, conn.inbuf);
                return Served::Handoff(io, None);
            }
            proxy.target(source, view.str(&head.host), &view, false)
        };
        let carried = match &target {
            // A chunked body is sent on as it came, which only HTTP/1.1 can carry.
            Ok(Decision::Forward(t)) => t
                .carrier()
                .filter(|c| *c == Carrier::Http1 || head.body != Framing::Chunked),
            _ => None,
        };
        let (carrier, target) = match (carried, target) {
            (Some(c), Ok(Decision::Forward(t))) => (c, t),
            // hyper's path answers routing failures and redirects, edits headers and URLs,
            // and mirrors.
            (_, decided) => {
                let io = Prefixed::new(conn.client, conn.inbuf);
                return Served::Handoff(io, Some(Routed(decided)));
            }
        };
        let current = Current {
            close: head.close || draining,
            len: head.len + body,
            head,
            started,
        };
        let len = current.len;
        let open = match carrier {
            Carrier::Http1 => conn.exchange(&current, target).await,
            // Boxed: an HTTP/2 exchange's state (the stream, its answer, a dial at times) is
            // larger than the rest of a connection's, and would size every connection's task,
            // idle ones too (`tests::a_connections_state_stays_small`).
            Carrier::Http2 => match Box::pin(conn.exchange_h2(&current, target)).await {
                Exchanged::Done(open) => open,
                Exchanged::Declined(target) => {
                    let io = Prefixed::new(conn.client, conn.inbuf);
                    let decided = Routed(Ok(Decision::Forward(target)));
                    return Served::Handoff(io, Some(decided));
                }
            },
        };
        if !open {
            return Served::Closed;
        }
        conn.inbuf.advance(len);
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

/// The route's timer, when it has a timeout; pinned in the request's own future, not allocated.
type Timer<'a> = Pin<&'a mut Option<tokio::time::Sleep>>;

impl<S: Stream> Conn<'_, S> {
    /// Forwards one request and its response. Whether the client connection stays open.
    async fn exchange(&mut self, req: &Current, target: Target) -> bool {
        let head = &req.head;
        self.write_upstream_head(head);
        self.up_head
            .extend_from_slice(&self.inbuf[head.len..req.len]);
        let Target {
            endpoint,
            dial,
            timeout,
            edits: _,
            rewrite: _,
            mirrors: _,
        } = target;
        let mut guard = endpoint.start();
        let mut timer = std::pin::pin!(timeout.map(|t| tokio::time::sleep_until(req.started + t)));
        let is_head = head.is_head(&self.inbuf);
        let idempotent = head.idempotent(&self.inbuf);
        let mut retried = false;
        let (upstream, resp) = loop {
            let (mut upstream, reused) = match endpoint.pool.take_raw() {
                Some(c) => (c, true),
                None => {
                    // Boxed: a new connection is rare, and its handshake's state would
                    // otherwise sit in every connection's task.
                    let connect = Box::pin(self.proxy.dialer.dial(
                        endpoint.addr,
                        &endpoint.security,
                        dial.connect_timeout,
                        false,
                    ));
                    let connected = tokio::select! {
                        biased;
                        () = expiry(timer.as_mut()) => {
                            return self.reply(req, Flag::UpstreamTimeout, &endpoint.stats).await;
                        }
                        c = connect => c,
                    };
                    match connected {
                        Ok(c) => (RawConn::new(c), false),
                        Err(e) => {
                            tracing::debug!(endpoint = %endpoint.addr, "upstream error: {e}");
                            // Only a refused or unreachable endpoint is backed off from.
                            guard.failed();
                            let flag = Flag::UpstreamConnectFailure;
                            return self.reply(req, flag, &endpoint.stats).await;
                        }
                    }
                }
            };
            let written = tokio::select! {
                biased;
                () = expiry(timer.as_mut()) => Err(NoHead::Timeout),
                w = upstream.conn.write_all(&self.up_head) => w.map_err(|_| NoHead::Stale),
            };
            let answer = match written {
                Ok(()) => {
                    self.response_head(&mut upstream, req, is_head, timer.as_mut())
                        .await
                }
                Err(e) => Err(e),
            };
            let flag = match answer {
                Ok(resp) => break (upstream, resp),
                // What hyper's pool and browsers do for a pooled connection closed under them.
                Err(NoHead::Stale) if reused && idempotent && !retried => {
                    retried = true;
                    continue;
                }
                Err(NoHead::ClientGone) => {
                    count(
                        &endpoint.stats,
                        0,
                        Some(Flag::DownstreamClosed),
                        req.started,
                    );
                    return false;
                }
                Err(NoHead::Timeout) => Flag::UpstreamTimeout,
                Err(NoHead::Stale) => {
                    tracing::debug!(endpoint = %endpoint.addr, "upstream closed before answering");
                    Flag::UpstreamReset
                }
                Err(NoHead::Broken(why)) => {
                    tracing::debug!(endpoint = %endpoint.addr, "upstream error: {why}");
                    Flag::UpstreamProtocolError
                }
                Err(NoHead::Cut) => {
                    tracing::debug!(endpoint = %endpoint.addr, "upstream closed mid-head");
                    Flag::UpstreamReset
                }
            };
            return self.reply(req, flag, &endpoint.stats).await;
        };
        guard.answered();
        // The start of the body came with the head; a chunked one broken already gets a 502, as
        // nothing has gone downstream yet.
        let mut body = Left::new(resp.framing);
        let Ok(first) = body.feed(&upstream.buf[resp.len..]) else {
            tracing::debug!(endpoint = %endpoint.addr, "upstream sent malformed chunked coding");
            return self
                .reply(req, Flag::UpstreamProtocolError, &endpoint.stats)
                .await;
        };
        let close =
            req.close || resp.framing == Framing::UntilClose || self.proxy.drain.is_draining();
        self.write_downstream_head(&upstream.buf, &resp, close);
        let relayed = Relay {
            resp,
            body,
            first,
            close,
        };
        self.relay(req, upstream, relayed, guard, timer.as_mut())
            .await
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
            out.extend_from_slice(super::rules::REQUEST_ID.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(super::rules::new_request_id(&mut id).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }

    fn write_downstream_head(&mut self, buf: &[u8], resp: &ResponseHead, close: bool) {
        let out = &mut self.down;
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
        if let Some(n) = resp.restated_length {
            let _ = std::io::Write::write_fmt(out, format_args!("content-length: {n}\r\n"));
        }
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }

    /// What the client sent while a response is awaited or relayed: pipelined bytes, taken, or
    /// its leaving, noticed. `Ok(false)`: stop watching (enough read ahead, or the client closed
    /// its side after sending whole requests, which are still served, as hyper does).
    fn client_read(&mut self, req: &Current, read: std::io::Result<usize>) -> Result<bool, NoHead> {
        match read {
            Ok(0) if self.inbuf.len() > req.len => {
                self.client_done = true;
                Ok(false)
            }
            Ok(0) | Err(_) => Err(NoHead::ClientGone),
            Ok(_) => Ok(self.inbuf.len() < READ_AHEAD),
        }
    }

    /// Reads more of the client's bytes. A connection that waits between requests (nothing
    /// buffered) gives its buffer back meanwhile and takes one again when bytes come.
    async fn read_client(&mut self) -> std::io::Result<usize> {
        std::future::poll_fn(|cx| {
            if self.inbuf.is_empty() {
                if self.inbuf.capacity() == 0 {
                    self.inbuf = buffers::take();
                }
                self.inbuf.reserve(buffers::SIZE);
            } else {
                self.inbuf.reserve(READ_CHUNK);
            }
            let read =
                tokio_util::io::poll_read_buf(Pin::new(&mut self.client), cx, &mut self.inbuf);
            if read.is_pending() && self.inbuf.is_empty() {
                buffers::give(std::mem::take(&mut self.inbuf));
            }
            read
        })
        .await
    }

    /// Reads the response head into the upstream's buffer, skipping 1xx heads, while watching
    /// the client: one that closes abandons the request.
    async fn response_head(
        &mut self,
        upstream: &mut RawConn,
        req: &Current,
        is_head: bool,
        mut timer: Timer<'_>,
    ) -> Result<ResponseHead, NoHead> {
        let RawConn { conn, buf } = upstream;
        buf.clear();
        let mut heard = false;
        let mut watching = !self.client_done;
        loop {
            if !buf.is_empty() {
                match parse::response(buf, is_head, &mut self.spans) {
                    Ok(Response::Done(resp)) => return Ok(resp),
                    Ok(Response::Informational(n)) => {
                        buf.advance(n);
                        continue;
                    }
                    Ok(Response::Partial) if buf.len() < MAX_HEADER_BYTES => {}
                    Ok(Response::Partial) => {
                        return Err(NoHead::Broken("response headers too large"));
                    }
                    Err(why) => return Err(NoHead::Broken(why)),
                }
            }
            buf.reserve(READ_CHUNK);
            // The timer first: an upstream that never stops sending must not starve it.
            tokio::select! {
                biased;
                () = expiry(timer.as_mut()) => return Err(NoHead::Timeout),
                read = conn.read_buf(buf) => match read {
                    Ok(n) if n > 0 => heard = true,
                    _ if !heard => return Err(NoHead::Stale),
                    _ => return Err(NoHead::Cut),
                },
                // Cancel-safe: a read that loses the race has read nothing.
                read = self.client.read_buf(&mut self.inbuf), if watching => {
                    watching = self.client_read(req, read)?;
                }
            }
        }
    }

    /// Sends the response head (in `down`) and the body after it, as the upstream sends it; then
    /// counts the request and pools the upstream connection if it can carry another. A client
    /// that leaves meanwhile ends it (a long poll must not hold the upstream for nobody).
    async fn relay(
        &mut self,
        req: &Current,
        mut upstream: RawConn,
        relay: Relay,
        guard: InFlight,
        mut timer: Timer<'_>,
    ) -> bool {
        let Relay {
            resp,
            mut body,
            first: (mut take, mut done),
            close,
        } = relay;
        let stats = &guard.endpoint().stats;
        let (code, started) = (resp.status, req.started);
        // Bytes past the end of the response: the upstream is not speaking HTTP/1.1 we trust.
        let mut reusable = resp.reusable && resp.len + take == upstream.buf.len();
        // The head goes out with the first piece of body, in one write.
        let first = &upstream.buf[resp.len..resp.len + take];
        if crate::stream::write_both(&mut self.client, &self.down, first)
            .await
            .is_err()
        {
            count(stats, code, Some(Flag::DownstreamClosed), started);
            return false;
        }
        let mut watching = !self.client_done;
        while !done {
            upstream.buf.clear();
            upstream.buf.reserve(READ_CHUNK);
            // The timer first: an upstream that never stops sending must not starve it.
            let read = tokio::select! {
                biased;
                () = expiry(timer.as_mut()) => {
                    count(stats, code, Some(Flag::UpstreamTimeout), started);
                    return self.abort(resp.framing);
                }
                read = upstream.conn.read_buf(&mut upstream.buf) => read,
                read = self.client.read_buf(&mut self.inbuf), if watching => {
                    match self.client_read(req, read) {
                        Ok(more) => watching = more,
                        Err(_) => {
                            count(stats, code, Some(Flag::DownstreamClosed), started);
                            return false;
                        }
                    }
                    continue;
                }
            };
            match read {
                Ok(n) if n > 0 => {}
                Ok(_) if resp.framing == Framing::UntilClose => break,
                _ => {
                    tracing::debug!("upstream closed mid-body");
                    count(stats, code, Some(Flag::UpstreamReset), started);
                    return self.abort(resp.framing);
                }
            }
            let Ok(fed) = body.feed(&upstream.buf) else {
                tracing::debug!("upstream sent malformed chunked coding");
                count(stats, code, Some(Flag::UpstreamProtocolError), started);
                return self.abort(resp.framing);
            };
            (take, done) = fed;
            reusable &= take == upstream.buf.len();
            if self.client.write_all(&upstream.buf[..take]).await.is_err() {
                count(stats, code, Some(Flag::DownstreamClosed), started);
                return false;
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

    /// Ends a connection whose response broke off mid-body. A body read until close ends with a
    /// reset, not a FIN, which would make it look complete; one with a length or chunks shows its
    /// cut by itself. Always `false` (the connection is done).
    fn abort(&mut self, framing: Framing) -> bool {
        if framing == Framing::UntilClose {
            self.client.reset_on_close();
        }
        false
    }

    /// Answers a failure itself, as hyper's path would, and counts it. Whether the client
    /// connection stays open.
    async fn reply(&mut self, req: &Current, flag: Flag, stats: &Arc<DestStats>) -> bool {
        let view = View {
            buf: &self.inbuf,
            head: &req.head,
            headers: &[],
        };
        let failure = (flag, Some(stats.clone()));
        let asked = Asked {
            method: view.method(),
            authority: view.str(&req.head.host),
            path: view.path(),
        };
        self.proxy
            .count_local(&failure, asked, Counting::http(req.started));
        let is_head = req.head.is_head(&self.inbuf);
        write_http1(&mut self.down, flag, flag.describe(), req.close, is_head);
        self.client.write_all(&self.down).await.is_ok() && !req.close
    }

    /// Refuses a request that is framed twice (DPE, 400) and closes the connection, reading what
    /// the client still sends for a moment first, so its unread body does not turn the close into
    /// a reset that destroys the answer (nginx's lingering close).
    async fn refuse(&mut self) {
        let flag = Flag::DownstreamProtocolError;
        let started = Instant::now();
        // The head parsed again for the log line's method, Host and path (a rare path), in a
        // scope that ends before the first await, so its header slots are not kept in the future.
        {
            let mut headers = [httparse::EMPTY_HEADER; 100];
            let mut req = httparse::Request::new(&mut headers);
            let _ = req.parse(&self.inbuf);
            let host = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("host"))
                .map(|h| String::from_utf8_lossy(h.value));
            let asked = Asked {
                method: req.method.unwrap_or_default(),
                authority: host.as_deref().unwrap_or_default(),
                path: req.path.unwrap_or_default(),
            };
            self.proxy
                .count_local(&(flag, None), asked, Counting::http(started));
        }
        let why = "bad request: both content-length and transfer-encoding\n";
        write_http1(&mut self.down, flag, why, true, false);
        if self.client.write_all(&self.down).await.is_err() || self.client.shutdown().await.is_err()
        {
            return;
        }
        let _ = tokio::time::timeout(LINGER, async {
            loop {
                self.inbuf.clear();
                self.inbuf.reserve(READ_CHUNK);
                if !matches!(self.client.read_buf(&mut self.inbuf).await, Ok(n) if n > 0) {
                    break;
                }
            }
        })
        .await;
    }
}

/// How long a refused client's further bytes are read and dropped before its connection closes.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// A response on its way downstream: its head, what is left of its body after the `first` piece
/// (bytes of the body that came with the head, and whether they end it), and whether the client
/// connection closes after it.
struct Relay {
    resp: ResponseHead,
    body: Left,
    first: (usize, bool),
    close: bool,
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
        protocol: RequestProtocol::Http,
        code,
        grpc_status: None,
        flag,
    };
    stats.record(outcome, started.elapsed());
}

/// Resolves when the route's timer fires; never without one.
async fn expiry(timer: Timer<'_>) {
    match timer.as_pin_mut() {
        Some(t) => t.await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection's task holds this future whole, idle between requests too: its size is what
    /// each open client connection costs beside its buffers (the memory benchmark's 1,000 idle
    /// connections). What a request needs only while in flight (a dial, a handshake, hyper's
    /// state) is boxed, so the future stays the size of the states it waits in.
    #[tokio::test]
    async fn a_connections_state_stays_small() {
        let node = crate::metrics::Node {
            workload: "w".into(),
            namespace: "n".into(),
        };
        let timeouts = (
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(1),
        );
        let proxy = Proxy::new(
            Arc::new(crate::store::Store::default()),
            Arc::new(crate::metrics::Metrics::new(node)),
            timeouts,
            crate::drain::Drain::default(),
        );
        let source = RouteSource {
            routes: super::super::Routes::Blocked,
            pinned: None,
            normalize_path: false,
            peer: None,
        };
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let size = std::mem::size_of_val(&serve(&proxy, &source, client, false));
        // 2,352 bytes in a debug build (2,288 in release) when this was written; an HTTP/2
        // exchange inline made it 2,528 (+0.2 KiB for every connection, idle ones too).
        assert!(size <= 2400, "fast::serve's future is {size} bytes");
    }
}
