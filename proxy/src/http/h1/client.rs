//! An HTTP/1.1 exchange in the fast path's manner for a request hyper's server parsed (one that
//! came over HTTP/2, from a client or from another sidecar): the head is written from the header
//! map onto a pooled fast-path connection, the response head is parsed in place, and the body is
//! read from the connection by the response body itself, as the server polls it. A bodiless request to an
//! HTTP/1.1 upstream so costs no second task, no channel and no client state machine; the
//! connection goes back to the endpoint's fast-path list when the body is read whole. A request
//! with a body keeps hyper's client, which streams it while the response comes.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use hyper::body::{Frame, SizeHint};
use tokio::io::AsyncWriteExt;

use super::chunked::Chunked;
use super::parse::{self, Framing, Span};
use crate::balance::Endpoint;
use crate::http::MAX_HEADER_BYTES;
use crate::upstream::body::BodyError;
use crate::upstream::conn::{Dialer, SendError};
use crate::upstream::pool::{self, Dial, RawConn};

/// Bytes read from the upstream at a time.
const READ_CHUNK: usize = 16 * 1024;

/// Sends the bodiless request `parts` (already in its HTTP/1.1 form: origin-form target, `Host`)
/// to `endpoint` over a fast-path connection, and reads the response head. A pooled connection
/// the upstream closed before answering gets an idempotent request again on a new one, as the
/// fast path's own exchange does.
pub async fn send(
    endpoint: &Endpoint,
    dialer: &Dialer,
    dial: Dial,
    parts: &http::request::Parts,
) -> Result<Response<RawBody>, SendError> {
    let mut head = Vec::with_capacity(256);
    write_head(&mut head, parts);
    let is_head = parts.method == http::Method::HEAD;
    let idempotent = pool::idempotent(parts.method.as_str().as_bytes());
    let mut retried = false;
    loop {
        let (mut upstream, reused) = match endpoint.pool.take_raw() {
            Some(c) => (c, true),
            None => {
                // Boxed: a new connection is rare, and its handshake's state would otherwise
                // sit in every request's future.
                let dialing = dialer.dial(
                    endpoint.addr,
                    &endpoint.security,
                    dial.connect_timeout,
                    false,
                );
                (RawConn::new(Box::pin(dialing).await?), false)
            }
        };
        let answer = match upstream.conn.write_all(&head).await {
            Ok(()) => response_head(&mut upstream, is_head).await,
            Err(_) => Err(NoHead::Stale),
        };
        match answer {
            Ok(head) => return answered(upstream, head),
            Err(NoHead::Stale) if reused && idempotent && !retried => retried = true,
            Err(NoHead::Stale) => return Err(SendError::Closed("closed before answering")),
            Err(NoHead::Cut) => return Err(SendError::Closed("closed mid-head")),
            Err(NoHead::Broken(why)) => return Err(SendError::Protocol(why)),
        }
    }
}

/// The request line and header lines, as hyper's client writes them for a bodiless request.
fn write_head(out: &mut Vec<u8>, parts: &http::request::Parts) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        // No body: no coding of one.
        if name == TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Why no response head came back.
enum NoHead {
    /// Closed or reset before a byte of answer.
    Stale,
    /// Closed partway through the head.
    Cut,
    /// Not HTTP the proxy can forward.
    Broken(&'static str),
}

/// Reads the response head into the connection's buffer, skipping 1xx heads.
async fn response_head(upstream: &mut RawConn, is_head: bool) -> Result<Head, NoHead> {
    let RawConn { conn, buf } = upstream;
    buf.clear();
    let mut heard = false;
    // Filled by the parser with the lines it keeps; the response's header map is built from them.
    // Sized for a common response, so it is allocated once.
    let mut spans = Vec::with_capacity(16);
    loop {
        if !buf.is_empty() {
            match parse::response(buf, is_head, &mut spans) {
                Ok(parse::Response::Done(resp)) => {
                    let headers = header_map(buf, &resp, &spans)
                        .ok_or(NoHead::Broken("response header not valid in a header map"))?;
                    let reason = reason_phrase(&buf[resp.reason.clone()], resp.status);
                    return Ok(Head {
                        resp,
                        headers,
                        reason,
                    });
                }
                Ok(parse::Response::Informational(n)) => {
                    buf.advance(n);
                    continue;
                }
                Ok(parse::Response::Partial) if buf.len() < MAX_HEADER_BYTES => {}
                Ok(parse::Response::Partial) => {
                    return Err(NoHead::Broken("response headers too large"));
                }
                Err(why) => return Err(NoHead::Broken(why)),
            }
        }
        buf.reserve(READ_CHUNK);
        match tokio::io::AsyncReadExt::read_buf(conn, buf).await {
            Ok(n) if n > 0 => heard = true,
            _ if !heard => return Err(NoHead::Stale),
            _ => return Err(NoHead::Cut),
        }
    }
}

/// A parsed response head, the header map made of it, and its reason phrase when it is not the
/// status code's usual one.
struct Head {
    resp: parse::ResponseHead,
    headers: HeaderMap,
    reason: Option<hyper::ext::ReasonPhrase>,
}

/// The reason phrase to keep, as hyper's client keeps it: one that is not the code's canonical
/// phrase (an empty one included) goes downstream as it came.
fn reason_phrase(reason: &[u8], status: u16) -> Option<hyper::ext::ReasonPhrase> {
    let canonical = StatusCode::from_u16(status).ok()?.canonical_reason();
    if canonical.map(str::as_bytes) == Some(reason) {
        return None;
    }
    hyper::ext::ReasonPhrase::try_from(reason).ok()
}

/// The header lines the parser kept, as a header map: the framing is this hop's now (the body
/// is decoded here), so `Transfer-Encoding` is left out, and a restated length is set once.
fn header_map(buf: &[u8], resp: &parse::ResponseHead, spans: &[Span]) -> Option<HeaderMap> {
    let mut headers = HeaderMap::with_capacity(spans.len() + 1);
    for s in spans {
        let name = HeaderName::from_bytes(&buf[s.name.clone()]).ok()?;
        if name == TRANSFER_ENCODING {
            continue;
        }
        headers.append(name, HeaderValue::from_bytes(&buf[s.value.clone()]).ok()?);
    }
    if let Some(n) = resp.restated_length {
        headers.insert(CONTENT_LENGTH, n.into());
    }
    Some(headers)
}

/// The response, its body reading on from what came with the head.
fn answered(mut upstream: RawConn, head: Head) -> Result<Response<RawBody>, SendError> {
    let Head {
        resp,
        headers,
        reason,
    } = head;
    let status =
        StatusCode::from_u16(resp.status).map_err(|_| SendError::Protocol("invalid status"))?;
    upstream.buf.advance(resp.len);
    let left = match resp.framing {
        Framing::Empty | Framing::Length(0) => Left::Done,
        Framing::Length(n) => Left::Length(n),
        Framing::Chunked => Left::Chunked(Chunked::default(), Vec::new()),
        Framing::UntilClose => Left::UntilClose,
    };
    let mut body = RawBody {
        conn: Some(upstream),
        left,
        reusable: resp.reusable,
    };
    if matches!(body.left, Left::Done) {
        body.finish();
    }
    let mut out = Response::new(body);
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    if let Some(r) = reason {
        out.extensions_mut().insert(r);
    }
    Ok(out)
}

/// What is left of a response body.
#[derive(Debug)]
enum Left {
    /// This many bytes.
    Length(u64),
    /// Chunks up to the last, and the trailer lines read so far.
    Chunked(Chunked, Vec<u8>),
    /// Whatever comes until the upstream closes.
    UntilClose,
    /// Nothing: the body is whole.
    Done,
}

/// A response body read from a fast-path connection as it is polled. Once whole, the connection
/// can carry another request ([`RawBody::reusable`]); dropped before that, it is closed.
#[derive(Debug)]
pub struct RawBody {
    /// The connection, with what was read of the body and not yet handed on; `None` once it
    /// cannot be reused.
    conn: Option<RawConn>,
    left: Left,
    /// Whether the connection may carry another request once the body is whole.
    reusable: bool,
}

impl RawBody {
    /// The connection, if the body was read whole and it may carry another request.
    pub fn reusable(&mut self) -> Option<RawConn> {
        match self.left {
            Left::Done => self.conn.take(),
            _ => None,
        }
    }

    /// The body is whole: the connection stays only if it can be reused and the upstream sent
    /// nothing past the body (an upstream not speaking HTTP/1.1 the proxy trusts).
    fn finish(&mut self) {
        self.left = Left::Done;
        if !self.reusable || self.conn.as_ref().is_some_and(|c| !c.buf.is_empty()) {
            self.conn = None;
        }
    }

    /// The next frame from what is buffered, if there is one.
    fn buffered(&mut self) -> Result<Option<Frame<Bytes>>, BodyError> {
        let Some(raw) = self.conn.as_mut() else {
            return Ok(None);
        };
        let buf = &mut raw.buf;
        if buf.is_empty() {
            return Ok(None);
        }
        let frame = match &mut self.left {
            Left::Done => return Ok(None),
            Left::UntilClose => Frame::data(buf.split().freeze()),
            Left::Length(n) => {
                let take = (*n).min(buf.len() as u64);
                *n -= take;
                let data = buf.split_to(take as usize).freeze();
                if *n == 0 {
                    self.finish();
                }
                Frame::data(data)
            }
            Left::Chunked(chunked, trailers) => {
                let (read, data) = chunked
                    .decode(buf, Some(trailers))
                    .map_err(|_| "upstream sent malformed chunked coding")?;
                let mut piece: BytesMut = buf.split_to(read);
                if chunked.is_done() {
                    let trailers = std::mem::take(trailers);
                    self.finish();
                    if !trailers.is_empty() {
                        return Ok(Some(Frame::trailers(trailer_map(&trailers))));
                    }
                }
                match data {
                    Some(r) => {
                        piece.advance(r.start);
                        Frame::data(piece.freeze())
                    }
                    None => return Ok(None),
                }
            }
        };
        Ok(Some(frame))
    }
}

/// Trailer lines (each ending in CRLF, as the chunked scanner checked them) as a header map.
fn trailer_map(lines: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in lines.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            map.append(n, v);
        }
    }
    map
}

impl hyper::body::Body for RawBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        loop {
            // A chunked body's sizes and line ends give no frame: read on past them.
            while this.conn.as_ref().is_some_and(|c| !c.buf.is_empty())
                && !matches!(this.left, Left::Done)
            {
                if let Some(frame) = this.buffered()? {
                    return Poll::Ready(Some(Ok(frame)));
                }
            }
            if matches!(this.left, Left::Done) {
                return Poll::Ready(None);
            }
            let Some(raw) = this.conn.as_mut() else {
                return Poll::Ready(Some(Err("upstream closed mid-body".into())));
            };
            raw.buf.reserve(READ_CHUNK);
            let read = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut raw.conn),
                cx,
                &mut raw.buf
            ));
            match read {
                Ok(n) if n > 0 => {}
                Ok(_) if matches!(this.left, Left::UntilClose) => {
                    this.left = Left::Done;
                    this.conn = None;
                    return Poll::Ready(None);
                }
                // The cut is told on the next poll: the server first sends what it holds
                // of the body (it drops it on an error), as when hyper's client reads for it.
                _ => {
                    this.conn = None;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.left, Left::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.left {
            Left::Done => SizeHint::with_exact(0),
            Left::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::io::AsyncReadExt;

    /// An upstream whose n-th connection answers each request it reads whole with the next of
    /// the n-th list of answers (`None`: closes instead), closing after the last; it reports
    /// each connection it accepts.
    async fn upstream(
        conns: Vec<Vec<Option<&'static [u8]>>>,
    ) -> (
        std::net::SocketAddr,
        tokio::sync::mpsc::UnboundedReceiver<()>,
    ) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (accepted, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut conns = conns.into_iter();
            while let Ok((mut s, _)) = l.accept().await {
                let _ = accepted.send(());
                let mut answers = conns.next().unwrap_or_default().into_iter();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let mut chunk = [0u8; 1024];
                        let n = s.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            let Some(Some(a)) = answers.next() else {
                                return;
                            };
                            s.write_all(a).await.unwrap();
                            if answers.len() == 0 {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (addr, rx)
    }

    /// An upstream answering one request with `answer`, then closing.
    async fn once(answer: &'static [u8]) -> Endpoint {
        Endpoint::plain(upstream(vec![vec![Some(answer)]]).await.0)
    }

    fn get(method: &str) -> http::request::Parts {
        let req = http::Request::builder()
            .method(method)
            .uri("/x")
            .header("host", "svc")
            .body(())
            .unwrap();
        req.into_parts().0
    }

    fn dial() -> Dial {
        Dial {
            http2: false,
            negotiate: false,
            connect_timeout: std::time::Duration::from_secs(1),
        }
    }

    /// Sends `method` and reads the whole response: status, headers, data, trailers, and the
    /// connection if it may be reused.
    async fn exchange(
        endpoint: &Endpoint,
        method: &str,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>, Option<HeaderMap>, bool), String> {
        let dialer = Dialer::new(None);
        let resp = send(endpoint, &dialer, dial(), &get(method))
            .await
            .map_err(|e| e.to_string())?;
        let (parts, mut body) = resp.into_parts();
        let (mut data, mut trailers) = (Vec::new(), None);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| e.to_string())?;
            if let Some(d) = frame.data_ref() {
                data.extend_from_slice(d);
            }
            if let Some(t) = frame.trailers_ref() {
                trailers = Some(t.clone());
            }
        }
        let conn = body.reusable();
        let reused = conn.is_some();
        if let Some(c) = conn {
            endpoint.pool.put_back_raw(c);
        }
        Ok((parts.status, parts.headers, data, trailers, reused))
    }

    #[tokio::test]
    async fn bodies_of_every_framing_are_read_whole_and_the_connection_kept_when_it_can_be() {
        let (addr, mut accepted) = upstream(vec![vec![
            Some(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: 1\r\n\r\nhello"),
            Some(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\ngrpc-status: 0\r\n\r\n"),
            Some(b"HTTP/1.1 204 Nothing\r\n\r\n"),
            Some(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n"),
            Some(b"HTTP/1.1 200 OK\r\ncontent-length: 2, 2\r\nconnection: close\r\n\r\nok"),
        ]])
        .await;
        let endpoint = Endpoint::plain(addr);
        let (status, headers, data, trailers, reused) = exchange(&endpoint, "GET").await.unwrap();
        assert_eq!(
            (status, &data[..], reused),
            (StatusCode::OK, &b"hello"[..], true)
        );
        assert_eq!(headers.get("x-a").unwrap(), "1");
        let (_, headers, data, trailers2, reused) = exchange(&endpoint, "GET").await.unwrap();
        assert_eq!((&data[..], reused), (&b"abcde"[..], true));
        assert!(trailers.is_none());
        assert!(
            !headers.contains_key(TRANSFER_ENCODING),
            "the body is decoded here"
        );
        assert_eq!(trailers2.unwrap().get("grpc-status").unwrap(), "0");
        let resp = send(&endpoint, &Dialer::new(None), dial(), &get("GET"))
            .await
            .unwrap();
        let reason = resp.extensions().get::<hyper::ext::ReasonPhrase>().unwrap();
        assert_eq!(
            (resp.status(), reason.as_bytes()),
            (StatusCode::NO_CONTENT, &b"Nothing"[..])
        );
        let mut body = resp.into_body();
        assert!(body.frame().await.is_none());
        endpoint.pool.put_back_raw(body.reusable().unwrap());
        // A HEAD answer's length says what a GET would get; nothing follows it.
        let (_, headers, data, _, reused) = exchange(&endpoint, "HEAD").await.unwrap();
        assert_eq!(
            (
                headers.get(CONTENT_LENGTH).unwrap().as_bytes(),
                data.len(),
                reused
            ),
            (&b"3"[..], 0, true)
        );
        // A repeated length is stated once; `connection: close` ends the connection's reuse.
        let (_, headers, data, _, reused) = exchange(&endpoint, "GET").await.unwrap();
        assert_eq!(
            (
                headers.get_all(CONTENT_LENGTH).iter().count(),
                &data[..],
                reused
            ),
            (1, &b"ok"[..], false)
        );
        // All of it on one connection.
        accepted.recv().await.unwrap();
        assert!(accepted.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_body_read_until_close_ends_at_the_close_and_a_cut_one_is_an_error() {
        let endpoint = once(b"HTTP/1.1 200 OK\r\n\r\nuntil close").await;
        let (_, _, data, _, reused) = exchange(&endpoint, "GET").await.unwrap();
        assert_eq!((&data[..], reused), (&b"until close"[..], false));

        let endpoint = once(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort").await;
        let err = exchange(&endpoint, "GET").await.unwrap_err();
        assert!(err.contains("closed mid-body"), "{err}");

        let endpoint = once(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n").await;
        let err = exchange(&endpoint, "GET").await.unwrap_err();
        assert!(err.contains("malformed chunked"), "{err}");

        let endpoint = once(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n").await;
        let err = exchange(&endpoint, "GET").await.unwrap_err();
        assert!(err.starts_with("upstream: "), "{err}");
    }

    #[tokio::test]
    async fn a_pooled_connection_closed_under_an_idempotent_request_is_replaced_once() {
        // The first connection answers once, then closes on the next request (a keep-alive
        // timeout racing it); the request goes again on a second connection.
        let (addr, mut accepted) = upstream(vec![
            vec![Some(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\na"), None],
            vec![Some(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nb")],
            vec![None],
        ])
        .await;
        let endpoint = Endpoint::plain(addr);
        let (_, _, data, _, reused) = exchange(&endpoint, "GET").await.unwrap();
        assert_eq!((&data[..], reused), (&b"a"[..], true));
        let (_, _, data, _, _) = exchange(&endpoint, "GET").await.unwrap();
        assert_eq!(&data[..], b"b");
        // Not a second time: a new connection closed unanswered fails the request.
        let err = exchange(&endpoint, "GET").await.unwrap_err();
        assert!(err.contains("closed before answering"), "{err}");
        for _ in 0..3 {
            accepted.recv().await.unwrap();
        }
        assert!(accepted.try_recv().is_err());
    }

    #[test]
    fn the_head_is_written_as_hypers_client_writes_a_bodiless_request() {
        let mut parts = get("GET");
        parts
            .headers
            .insert("transfer-encoding", HeaderValue::from_static("chunked"));
        parts.headers.append("x-b", HeaderValue::from_static("1"));
        parts.headers.append("x-b", HeaderValue::from_static("2"));
        let mut out = Vec::new();
        write_head(&mut out, &parts);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /x HTTP/1.1\r\nhost: svc\r\nx-b: 1\r\nx-b: 2\r\n\r\n"
        );
    }
}
