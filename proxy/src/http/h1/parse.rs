//! Reading HTTP/1.1 heads for the fast path: what the request asks, whether the fast path may carry
//! it, and which header lines go on to the next hop. Pure functions over the bytes read; nothing
//! here copies a header.

use std::mem::MaybeUninit;
use std::ops::Range;

use crate::http::MAX_HEADER_BYTES;
use crate::http::rules::{self, digits, tokens};

/// Most header lines in one head, as hyper's default; more goes to hyper, which answers 431.
const MAX_HEADERS: usize = 100;

/// A header line kept for the next hop: where its name and value sit in the buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    /// The name, as the peer wrote it.
    pub name: Range<usize>,
    /// The value, without surrounding whitespace.
    pub value: Range<usize>,
}

/// What parsing a head found.
#[derive(Debug, PartialEq)]
pub enum Parsed<T> {
    /// The head is not complete yet.
    Partial,
    /// A head the fast path carries.
    Done(T),
    /// Anything else: hyper serves the connection from here on, with its own answers to what is
    /// unusual or broken.
    Other,
    /// A request framed both by `Content-Length` and `Transfer-Encoding`, the classic smuggling
    /// shape: refused with a 400 and the connection closed (RFC 9112 §6.1 allows it, and Envoy
    /// does it), since hyper would quietly drop one of the two.
    Refused,
}

/// A request head the fast path carries: HTTP/1.1, origin-form, one `Host`, a body of one plain
/// framing if any, nothing to upgrade or negotiate.
#[derive(Debug, PartialEq)]
pub struct RequestHead {
    /// Bytes of the head, up to and including its empty line.
    pub len: usize,
    /// The method.
    pub method: Range<usize>,
    /// The request target (path and query).
    pub target: Range<usize>,
    /// The `Host` value.
    pub host: Range<usize>,
    /// How the body ends: [`Framing::Empty`], a length, or chunked.
    pub body: Framing,
    /// The client asked to close the connection after this response.
    pub close: bool,
    /// The client sent an `x-request-id`.
    pub has_request_id: bool,
}

impl RequestHead {
    /// Whether a retry on another connection is safe (RFC 9110 §9.2.2).
    pub fn idempotent(&self, buf: &[u8]) -> bool {
        rules::idempotent(&buf[self.method.clone()])
    }

    /// Whether the response has a body (RFC 9110 §9.3.2: never for HEAD).
    pub fn is_head(&self, buf: &[u8]) -> bool {
        &buf[self.method.clone()] == b"HEAD"
    }
}

/// Header names the fast path looks at; everything else passes through untouched.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Name {
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    /// Meant for this hop only (RFC 9110 §7.6.1), dropped: keep-alive, proxy-connection,
    /// proxy-authenticate, proxy-authorization.
    HopByHop,
    Te,
    Upgrade,
    Expect,
    ContentType,
    RequestId,
    Other,
}

fn name_of(name: &str) -> Name {
    // A length switch first: most names are ruled out without comparing a byte.
    let is = |s: &str| name.eq_ignore_ascii_case(s);
    match name.len() {
        2 if is("te") => Name::Te,
        4 if is("host") => Name::Host,
        6 if is("expect") => Name::Expect,
        7 if is("upgrade") => Name::Upgrade,
        10 if is("connection") => Name::Connection,
        12 if is("content-type") => Name::ContentType,
        12 if is(rules::REQUEST_ID) => Name::RequestId,
        14 if is("content-length") => Name::ContentLength,
        17 if is("transfer-encoding") => Name::TransferEncoding,
        // The rest of the hop-by-hop names, by the rule both paths share.
        10 | 16 | 18 | 19 if rules::is_hop_by_hop(name) => Name::HopByHop,
        _ => Name::Other,
    }
}

/// Where `part` (a slice of `buf`) starts in `buf`.
fn offset(buf: &[u8], part: &[u8]) -> usize {
    part.as_ptr() as usize - buf.as_ptr() as usize
}

fn range(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = offset(buf, part);
    start..start + part.len()
}

/// A request target the fast path forwards as is: origin-form of URI characters only (RFC 3986
/// unreserved, reserved but `#`, and `%`). Anything else goes to hyper, which decides.
fn plain_target(target: &[u8]) -> bool {
    target.first() == Some(&b'/')
        && target
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~:/?[]@!$&'()*+,;=%".contains(b))
}

/// Reads a request head from the start of `buf`. Header lines to forward are pushed to `kept`
/// (cleared first); hop-by-hop ones are left out.
pub fn request(buf: &[u8], kept: &mut Vec<Span>) -> Parsed<RequestHead> {
    kept.clear();
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut slots) {
        // A head over the limit that arrived whole in one read is hyper's to refuse (431).
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEADER_BYTES => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Ok(httparse::Status::Complete(_)) | Err(_) => return Parsed::Other,
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Parsed::Other;
    };
    let (mut host, mut close, mut has_request_id) = (None, false, false);
    let (mut length, mut chunked) = (None::<u64>, false);
    // Everything but the head's syntax is judged once all its lines are read, so a request framed
    // twice is refused whatever else it carries.
    let (mut lengths, mut codings) = (false, false);
    let mut hypers = version != 1 || method == "CONNECT" || !plain_target(target.as_bytes());
    for h in req.headers.iter() {
        let value = h.value.trim_ascii();
        match name_of(h.name) {
            Name::Host => {
                let fine = host.is_none()
                    && !value.is_empty()
                    && value.iter().all(|b| b.is_ascii_graphic());
                hypers |= !fine;
                host = Some(range(buf, value));
            }
            // One framing, stated once, goes upstream as it came. Anything more (two lengths, a
            // list, a sign, codings other than chunked) is a smuggling shape or a rarity: hyper
            // refuses or handles it.
            Name::ContentLength => {
                lengths = true;
                match digits(value) {
                    Some(n) if length.is_none() => length = Some(n),
                    _ => hypers = true,
                }
            }
            Name::TransferEncoding => {
                codings = true;
                if !chunked && value.eq_ignore_ascii_case(b"chunked") {
                    chunked = true;
                } else {
                    hypers = true;
                }
            }
            Name::Upgrade | Name::Expect => hypers = true,
            Name::ContentType if value.starts_with(b"application/grpc") => hypers = true,
            Name::Connection => {
                for t in tokens(value) {
                    if t.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if !t.eq_ignore_ascii_case(b"keep-alive") {
                        // It names further headers to drop, or asks for an upgrade.
                        hypers = true;
                    }
                }
                continue;
            }
            Name::HopByHop => continue,
            // `te: trailers` is end to end (gRPC needs it); other codings are this hop's. A
            // list naming trailers among others goes on as `te: trailers`: hyper's side
            // restates it (`headers::strip_hop_by_hop`), one rule for both paths.
            Name::Te if !value.eq_ignore_ascii_case(b"trailers") => {
                hypers |= rules::te_keeps_trailers(value);
                continue;
            }
            Name::RequestId => has_request_id = true,
            _ => {}
        }
        kept.push(Span {
            name: range(buf, h.name.as_bytes()),
            value: range(buf, value),
        });
    }
    if lengths && codings {
        return Parsed::Refused;
    }
    let (Some(host), false) = (host, hypers) else {
        return Parsed::Other;
    };
    let body = match (length, chunked) {
        (_, true) => Framing::Chunked,
        (None | Some(0), false) => Framing::Empty,
        (Some(n), false) => Framing::Length(n),
    };
    Parsed::Done(RequestHead {
        len,
        method: range(buf, method.as_bytes()),
        target: range(buf, target.as_bytes()),
        host,
        body,
        close,
        has_request_id,
    })
}

/// How a message body ends (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Framing {
    /// No body: a request without one; a response to HEAD, a 204, a 304.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked; passed through as it is, chunk by chunk.
    Chunked,
    /// Until the upstream closes the connection.
    UntilClose,
}

/// A response head, ready to forward.
#[derive(Debug, PartialEq)]
pub struct ResponseHead {
    /// Bytes of the head.
    pub len: usize,
    /// Status code.
    pub status: u16,
    /// The reason phrase.
    pub reason: Range<usize>,
    /// How the body ends.
    pub framing: Framing,
    /// Whether the upstream connection can carry another request after this response.
    pub reusable: bool,
    /// A `Content-Length` sent as a list or repeated (all equal), which is restated once: some
    /// clients (Go's) refuse the repeated form.
    pub restated_length: Option<u64>,
}

/// What reading a response head found.
#[derive(Debug, PartialEq)]
pub enum Response {
    /// Not complete yet.
    Partial,
    /// An informational (1xx) head of this many bytes, skipped as hyper's client does.
    Informational(usize),
    /// The final head.
    Done(ResponseHead),
}

/// Reads a response head from the start of `buf`, for a request that was a HEAD or not. An error
/// says why the upstream's answer is not HTTP the proxy can forward (a 502).
pub fn response(buf: &[u8], head: bool, kept: &mut Vec<Span>) -> Result<Response, &'static str> {
    kept.clear();
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEADER_BYTES => n,
        Ok(httparse::Status::Complete(_)) => return Err("response headers too large"),
        Ok(httparse::Status::Partial) => return Ok(Response::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err("too many response headers"),
        Err(_) => return Err("malformed response head"),
    };
    let (Some(version), Some(status)) = (resp.version, resp.code) else {
        return Err("malformed response head");
    };
    match status {
        101 => return Err("switched protocols unasked"),
        100..=199 => return Ok(Response::Informational(len)),
        200..=999 => {}
        _ => return Err("invalid status code"),
    }
    // A status line may end after the code (`HTTP/1.1 200`): httparse then hands back a static
    // empty reason, which is no part of `buf`.
    let reason = match resp.reason {
        Some(r) if !r.is_empty() => range(buf, r.as_bytes()),
        _ => 0..0,
    };
    // HTTP/1.0 closes unless told otherwise; it is simplest not to reuse it at all.
    let mut reusable = version == 1;
    let mut stated = rules::ResponseFraming::default();
    let mut named = false;
    for h in resp.headers.iter() {
        let value = h.value.trim_ascii();
        match name_of(h.name) {
            Name::Connection => {
                for t in tokens(value) {
                    if t.eq_ignore_ascii_case(b"close") {
                        reusable = false;
                    } else if !t.eq_ignore_ascii_case(b"keep-alive") {
                        named = true;
                    }
                }
                continue;
            }
            Name::HopByHop | Name::Te | Name::Upgrade => continue,
            Name::TransferEncoding => stated.transfer_encoding(value)?,
            Name::ContentLength => stated.content_length(value)?,
            _ => {}
        }
        kept.push(Span {
            name: range(buf, h.name.as_bytes()),
            value: range(buf, value),
        });
    }
    let rules::Framed {
        chunked,
        length,
        length_header,
        reusable: framed_once,
    } = stated.finish(version == 0)?;
    reusable &= framed_once;
    if length_header != rules::LengthHeader::AsSent {
        kept.retain(|s| name_of(str_at(buf, &s.name)) != Name::ContentLength);
    }
    if named {
        drop_named(buf, resp.headers, kept);
    }
    if head && chunked {
        // A HEAD answer has no body to frame: its framing is this hop's, and hyper's side
        // sends none either.
        kept.retain(|s| name_of(str_at(buf, &s.name)) != Name::TransferEncoding);
    }
    let framing = if head || status == 204 || status == 304 {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    // A HEAD answer with no framing of its own says the same GET would be read until close: the
    // server is about to close, and reusing the connection would race that close and fail the
    // next request when it cannot be retried (a POST).
    let unframed_head = head && !chunked && length.is_none() && status != 204 && status != 304;
    if framing == Framing::UntilClose || unframed_head {
        reusable = false;
    }
    Ok(Response::Done(ResponseHead {
        len,
        status,
        reason,
        framing,
        reusable,
        restated_length: match length_header {
            rules::LengthHeader::Restated(n) => Some(n),
            _ => None,
        },
    }))
}

fn str_at<'a>(buf: &'a [u8], r: &Range<usize>) -> &'a str {
    std::str::from_utf8(&buf[r.clone()]).unwrap_or_default()
}

/// Drops the headers a `Connection` header names (RFC 9110 §7.6.1); rare, so it may allocate.
/// The framing headers stay: the body is forwarded in the framing they state.
fn drop_named(buf: &[u8], headers: &[httparse::Header<'_>], kept: &mut Vec<Span>) {
    let named: Vec<&[u8]> = headers
        .iter()
        .filter(|h| name_of(h.name) == Name::Connection)
        .flat_map(|h| tokens(h.value))
        .filter(|t| {
            let name = std::str::from_utf8(t).unwrap_or_default();
            !matches!(name_of(name), Name::ContentLength | Name::TransferEncoding)
        })
        .collect();
    kept.retain(|s| {
        let name = &buf[s.name.clone()];
        !named.iter().any(|n| n.eq_ignore_ascii_case(name))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept_names(buf: &[u8], kept: &[Span]) -> Vec<String> {
        kept.iter()
            .map(|s| String::from_utf8_lossy(&buf[s.name.clone()]).into_owned())
            .collect()
    }

    #[test]
    fn requests_the_fast_path_carries_and_those_it_hands_to_hyper() {
        // (request, carried, headers forwarded)
        let cases: &[(&str, bool, &[&str])] = &[
            ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", true, &["Host"]),
            (
                "GET /x?y=1 HTTP/1.1\r\nhost: a:80\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\nProxy-Connection: x\r\nTE: gzip\r\naccept: */*\r\n\r\n",
                true,
                &["host", "accept"],
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nte: trailers\r\n\r\n",
                true,
                &["Host", "te"],
            ),
            (
                "DELETE / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
                true,
                &["Host", "Content-Length"],
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
                true,
                &["Host", "Content-Length"],
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n",
                true,
                &["Host", "Transfer-Encoding"],
            ),
            // HTTP/1.0, absolute-form, CONNECT, asterisk-form: hyper's.
            ("GET / HTTP/1.0\r\nHost: a\r\n\r\n", false, &[]),
            ("GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", false, &[]),
            ("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", false, &[]),
            ("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", false, &[]),
            // No Host, two Hosts, an empty one: hyper's path refuses them with its 400.
            ("GET / HTTP/1.1\r\n\r\n", false, &[]),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", false, &[]),
            ("GET / HTTP/1.1\r\nHost: \r\n\r\n", false, &[]),
            // Framings that are smuggling shapes or rare: two lengths (even equal), a list, a
            // sign, a length with chunked, codings other than chunked, chunked twice.
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
                false,
                &[],
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc",
                false,
                &[],
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc",
                false,
                &[],
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                false,
                &[],
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                false,
                &[],
            ),
            // Upgrades, expectations, gRPC, headers named by Connection.
            (
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
                false,
                &[],
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
                false,
                &[],
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nContent-Type: application/grpc\r\n\r\n",
                false,
                &[],
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: x-secret\r\nx-secret: 1\r\n\r\n",
                false,
                &[],
            ),
            // Targets with characters outside URI syntax, and a fragment.
            ("GET /a\"b HTTP/1.1\r\nHost: a\r\n\r\n", false, &[]),
            ("GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", false, &[]),
            // Malformed: hyper answers 400.
            ("GET / HTTP/1.1\r\nHost a\r\n\r\n", false, &[]),
            ("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", false, &[]),
        ];
        let big = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nx: {}\r\n\r\n",
            "a".repeat(MAX_HEADER_BYTES)
        );
        let cases = [cases, &[(big.as_str(), false, &[][..])]].concat();
        let mut kept = Vec::new();
        for (req, carried, names) in &cases {
            let got = request(req.as_bytes(), &mut kept);
            match got {
                Parsed::Done(_) => {
                    assert!(carried, "{req:?} should go to hyper");
                    assert_eq!(kept_names(req.as_bytes(), &kept), *names, "{req:?}");
                }
                Parsed::Other => assert!(!carried, "{req:?} should be carried"),
                Parsed::Partial => panic!("{req:?} is complete"),
                Parsed::Refused => panic!("{req:?} is not framed twice"),
            }
        }
    }

    #[test]
    fn a_request_framed_by_both_length_and_coding_is_refused() {
        let mut kept = Vec::new();
        for req in [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nContent-Length: 3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\ntransfer-encoding: chunked\r\n\r\n",
            // Whatever else would have sent it to hyper.
            "POST / HTTP/1.1\r\nUpgrade: h2c\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.0\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(
                request(req.as_bytes(), &mut kept),
                Parsed::Refused,
                "{req:?}"
            );
        }
    }

    #[test]
    fn a_request_head_names_its_parts() {
        let buf = b"\r\nHEAD /p?q HTTP/1.1\r\nHost:  shop.local \r\nConnection: close\r\nX-Request-Id: 7\r\n\r\nGET";
        let mut kept = Vec::new();
        let Parsed::Done(h) = request(buf, &mut kept) else {
            panic!("complete")
        };
        assert_eq!(&buf[h.method.clone()], b"HEAD");
        assert_eq!(&buf[h.target.clone()], b"/p?q");
        assert_eq!(&buf[h.host.clone()], b"shop.local");
        assert!(h.close && h.has_request_id && h.is_head(buf) && h.idempotent(buf));
        assert_eq!(h.body, Framing::Empty);
        assert_eq!(&buf[h.len..], b"GET", "pipelined bytes stay");
        let post = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc";
        let Parsed::Done(h) = request(post, &mut kept) else {
            panic!("complete")
        };
        assert_eq!((h.body, h.len), (Framing::Length(3), post.len() - 3));
        assert_eq!(request(b"GET / HTTP/1.1\r\nHo", &mut kept), Parsed::Partial);
    }

    #[test]
    fn response_framing_and_reuse() {
        // (response, HEAD request, framing, reusable, headers forwarded)
        let cases: &[(&str, bool, Framing, bool, &[&str])] = &[
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                false,
                Framing::Length(5),
                true,
                &["Content-Length"],
            ),
            // A HEAD answer's framing is this hop's: not forwarded, as hyper's side sends none.
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nx-a: 1\r\n\r\n",
                true,
                Framing::Empty,
                true,
                &["x-a"],
            ),
            // Restated once (`restated_length`), not forwarded as a list.
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
                false,
                Framing::Length(5),
                true,
                &[],
            ),
            // A Connection header naming the framing does not take it away.
            (
                "HTTP/1.1 200 OK\r\nConnection: content-length, x-a\r\nx-a: 1\r\nContent-Length: 5\r\n\r\n",
                false,
                Framing::Length(5),
                true,
                &["Content-Length"],
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
                false,
                Framing::Chunked,
                false,
                &["Transfer-Encoding"],
            ),
            // No reason phrase.
            (
                "HTTP/1.1 200\r\nContent-Length: 2\r\n\r\n",
                false,
                Framing::Length(2),
                true,
                &["Content-Length"],
            ),
            (
                "HTTP/1.1 200 OK\r\nServer: x\r\n\r\n",
                false,
                Framing::UntilClose,
                false,
                &["Server"],
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                true,
                Framing::Empty,
                true,
                &["Content-Length"],
            ),
            // A HEAD answer without framing: the GET would be read until close, so the server
            // closes next; the connection is not pooled.
            (
                "HTTP/1.1 200 OK\r\nx-a: 1\r\n\r\n",
                true,
                Framing::Empty,
                false,
                &["x-a"],
            ),
            (
                "HTTP/1.1 204 No Content\r\n\r\n",
                false,
                Framing::Empty,
                true,
                &[],
            ),
            (
                "HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n",
                false,
                Framing::Empty,
                true,
                &["ETag"],
            ),
            (
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
                false,
                Framing::Length(1),
                false,
                &["Content-Length"],
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n",
                false,
                Framing::Length(1),
                false,
                &["Content-Length"],
            ),
            (
                "HTTP/1.1 200 OK\r\nConnection: keep-alive, x-hop\r\nx-hop: 1\r\nKeep-Alive: timeout=5\r\nUpgrade: h2c\r\nContent-Length: 0\r\n\r\n",
                false,
                Framing::Length(0),
                true,
                &["Content-Length"],
            ),
        ];
        let mut kept = Vec::new();
        for (resp, head, framing, reusable, names) in cases {
            let Ok(Response::Done(h)) = response(resp.as_bytes(), *head, &mut kept) else {
                panic!("{resp:?} is a final response")
            };
            assert_eq!((h.framing, h.reusable), (*framing, *reusable), "{resp:?}");
            assert_eq!(kept_names(resp.as_bytes(), &kept), *names, "{resp:?}");
            assert!(resp.as_bytes().get(h.reason.clone()).is_some(), "{resp:?}");
        }
    }

    #[test]
    fn responses_that_cannot_be_forwarded() {
        let mut kept = Vec::new();
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: \r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 000 Zero\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: \r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: ,\r\n\r\n",
            "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            "SSH-2.0-OpenSSH\r\n\r\n",
        ] {
            assert!(
                response(bad.as_bytes(), false, &mut kept).is_err(),
                "{bad:?}"
            );
        }
        assert_eq!(
            response(
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200",
                false,
                &mut kept
            ),
            Ok(Response::Informational(25))
        );
        assert_eq!(
            response(b"HTTP/1.1 200 OK\r\n", false, &mut kept),
            Ok(Response::Partial)
        );
        let Ok(Response::Done(h)) = response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\ncontent-length: 2\r\n\r\nok",
            false,
            &mut kept,
        ) else {
            panic!("a final response")
        };
        assert_eq!((h.restated_length, kept.len()), (Some(2), 0));
        let Ok(Response::Done(h)) = response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2,\r\n\r\nok",
            false,
            &mut kept,
        ) else {
            panic!("a final response")
        };
        assert_eq!((h.restated_length, kept.len()), (Some(2), 0));
    }
}
