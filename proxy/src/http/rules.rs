//! The HTTP rules both HTTP/1 paths keep, written once: the fast path (`fast/`, bytes) and
//! hyper's path (`mod.rs`, `headers.rs`, `pool.rs`, header maps) each call these, so a rule
//! cannot drift between them. `tests/tests/http_rules.rs` sends one corpus through both.

/// Whether a header name (any case) is meant for one hop only (RFC 9110 §7.6.1), never
/// forwarded as it came. `te` is among them: of it only `trailers` goes on
/// ([`te_keeps_trailers`]). A length switch first: most names are ruled out without comparing
/// a byte.
pub fn is_hop_by_hop(name: &str) -> bool {
    let is = |s: &str| name.eq_ignore_ascii_case(s);
    match name.len() {
        2 => is("te"),
        7 => is("upgrade"),
        10 => is("connection") || is("keep-alive"),
        16 => is("proxy-connection"),
        17 => is("transfer-encoding"),
        18 => is("proxy-authenticate"),
        19 => is("proxy-authorization"),
        _ => false,
    }
}

/// Whether a `TE` value lists `trailers`, which goes on as `te: trailers` (gRPC needs it end
/// to end); every other transfer coding it names is this hop's.
pub fn te_keeps_trailers(value: &[u8]) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"))
}

/// The items of a comma-separated header value, trimmed, empty items skipped (RFC 9110 §5.6.1).
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// A `Content-Length` value: digits only (no sign, no list), as RFC 9110 §8.6 has it.
pub fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// How an upstream's response is framed, read from its framing headers (RFC 9112 §6.3) by one
/// rule for both paths: fed each `Transfer-Encoding` and `Content-Length` value as it comes,
/// then [`finish`](Self::finish)ed into what to forward.
#[derive(Debug, Default)]
pub struct ResponseFraming {
    chunked: bool,
    length: Option<u64>,
    lengths: u32,
    listed: bool,
}

/// What a response's framing headers settle.
#[derive(Debug, PartialEq)]
pub struct Framed {
    /// The body is chunked.
    pub chunked: bool,
    /// The length stated, if any (ignored when chunked).
    pub length: Option<u64>,
    /// What becomes of the `Content-Length` header.
    pub length_header: LengthHeader,
    /// Whether the connection may carry another message: not after one framed twice.
    pub reusable: bool,
}

/// What is forwarded of a response's `Content-Length`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LengthHeader {
    /// Forwarded as sent (or there is none).
    AsSent,
    /// Dropped: `Transfer-Encoding` overrides it and it must not be forwarded (RFC 9112 §6.3).
    Dropped,
    /// Sent as a list or repeated, all equal: restated once (RFC 9110 §8.6), as some clients
    /// (Go's) refuse the repeated form.
    Restated(u64),
}

impl ResponseFraming {
    /// One `Transfer-Encoding` value: chunked once and nothing else, as Envoy insists. The proxy
    /// does not decode other codings, and a body they would frame by closing is a guess.
    pub fn transfer_encoding(&mut self, value: &[u8]) -> Result<(), &'static str> {
        for t in tokens(value) {
            if self.chunked || !t.eq_ignore_ascii_case(b"chunked") {
                return Err("unsupported transfer coding");
            }
            self.chunked = true;
        }
        if !self.chunked {
            return Err("unsupported transfer coding");
        }
        Ok(())
    }

    /// One `Content-Length` value: digits, or a list of equal digits.
    pub fn content_length(&mut self, value: &[u8]) -> Result<(), &'static str> {
        let value = value.trim_ascii();
        self.listed |= !value.iter().all(u8::is_ascii_digit);
        if tokens(value).next().is_none() {
            return Err("invalid content-length");
        }
        for t in tokens(value) {
            let n = digits(t).ok_or("invalid content-length")?;
            if self.length.is_some_and(|l| l != n) {
                return Err("conflicting content-length");
            }
            self.length = Some(n);
            self.lengths += 1;
        }
        Ok(())
    }

    /// The framing, for a response of HTTP/1.0 (`http10`) or later.
    pub fn finish(self, http10: bool) -> Result<Framed, &'static str> {
        if self.chunked && http10 {
            // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
            return Err("transfer-encoding in an HTTP/1.0 response");
        }
        let (length_header, reusable) = match (self.chunked, self.length) {
            // A connection that framed a message twice (a smuggling shape) carries no other.
            (true, Some(_)) => (LengthHeader::Dropped, false),
            (false, Some(n)) if self.lengths > 1 || self.listed => {
                (LengthHeader::Restated(n), true)
            }
            _ => (LengthHeader::AsSent, true),
        };
        Ok(Framed {
            chunked: self.chunked,
            length: self.length,
            length_header,
            reusable,
        })
    }
}

/// [`ResponseFraming`] over a header map (hyper's path).
pub fn response_framing(headers: &http::HeaderMap, http10: bool) -> Result<Framed, &'static str> {
    let mut stated = ResponseFraming::default();
    for v in headers.get_all(http::header::TRANSFER_ENCODING) {
        stated.transfer_encoding(v.as_bytes())?;
    }
    for v in headers.get_all(http::header::CONTENT_LENGTH) {
        stated.content_length(v.as_bytes())?;
    }
    stated.finish(http10)
}

/// Whether a request may be sent again after a pooled connection closed under it: the
/// upstream pool's rule, the one the fast path's own retry keeps too.
pub use crate::upstream::pool::idempotent;

/// The header that names a request end to end, added where the client sent none (declared with
/// the HTTP/2 client, which sends it unindexed).
pub use crate::upstream::h2::REQUEST_ID;

/// A new request id (a random UUID, lowercase), written into `buf`.
pub fn new_request_id(buf: &mut [u8; uuid::fmt::Hyphenated::LENGTH]) -> &str {
    uuid::Uuid::new_v4().hyphenated().encode_lower(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_names_are_found_in_any_case_and_nothing_else() {
        let hop_by_hop = [
            "connection",
            "keep-alive",
            "proxy-authenticate",
            "proxy-authorization",
            "proxy-connection",
            "te",
            "transfer-encoding",
            "upgrade",
        ];
        for name in hop_by_hop {
            assert!(is_hop_by_hop(name), "{name}");
            assert!(is_hop_by_hop(&name.to_ascii_uppercase()), "{name}");
        }
        for name in [
            "host",
            "content-length",
            "x-upgrade",
            "tee",
            "keep-alivez",
            "cookie",
        ] {
            assert!(!is_hop_by_hop(name), "{name}");
        }
    }

    #[test]
    fn response_framing_is_read_by_one_rule() {
        use LengthHeader::*;
        type Case<'a> = (
            &'a [&'a str],
            &'a [&'a str],
            bool,
            Result<(bool, Option<u64>, LengthHeader, bool), &'a str>,
        );
        let table: &[Case<'_>] = &[
            (&[], &[], false, Ok((false, None, AsSent, true))),
            (&[], &["5"], false, Ok((false, Some(5), AsSent, true))),
            (
                &[],
                &["5, 5"],
                false,
                Ok((false, Some(5), Restated(5), true)),
            ),
            (
                &[],
                &["5", "5"],
                false,
                Ok((false, Some(5), Restated(5), true)),
            ),
            (&[], &["5", "6"], false, Err("conflicting content-length")),
            (&[], &["5, 6"], false, Err("conflicting content-length")),
            (&[], &["+5"], false, Err("invalid content-length")),
            (&[], &[""], false, Err("invalid content-length")),
            (&["chunked"], &[], false, Ok((true, None, AsSent, true))),
            (
                &["Chunked"],
                &["5"],
                false,
                Ok((true, Some(5), Dropped, false)),
            ),
            (
                &["chunked"],
                &["5, 5"],
                false,
                Ok((true, Some(5), Dropped, false)),
            ),
            (
                &["gzip, chunked"],
                &[],
                false,
                Err("unsupported transfer coding"),
            ),
            (
                &["chunked", "chunked"],
                &[],
                false,
                Err("unsupported transfer coding"),
            ),
            (
                &["chunked, chunked"],
                &[],
                false,
                Err("unsupported transfer coding"),
            ),
            (&[""], &[], false, Err("unsupported transfer coding")),
            (
                &["chunked"],
                &[],
                true,
                Err("transfer-encoding in an HTTP/1.0 response"),
            ),
            (&[], &["5"], true, Ok((false, Some(5), AsSent, true))),
        ];
        for (te, cl, http10, want) in table {
            let mut f = ResponseFraming::default();
            let got = te
                .iter()
                .try_for_each(|v| f.transfer_encoding(v.as_bytes()))
                .and_then(|()| cl.iter().try_for_each(|v| f.content_length(v.as_bytes())))
                .and_then(|()| f.finish(*http10))
                .map(|f| (f.chunked, f.length, f.length_header, f.reusable));
            assert_eq!(got, *want, "{te:?} {cl:?} http10={http10}");
        }
    }

    #[test]
    fn a_header_map_is_read_by_the_same_rule() {
        for (stated, want) in [
            (&["5, 5"][..], LengthHeader::Restated(5)),
            (&["5", "5"], LengthHeader::Restated(5)),
            (&["5,5"], LengthHeader::Restated(5)),
            (&["5"], LengthHeader::AsSent),
        ] {
            let mut h = http::HeaderMap::new();
            for v in stated {
                h.append(
                    http::header::CONTENT_LENGTH,
                    http::HeaderValue::from_static(v),
                );
            }
            let framed = response_framing(&h, false).unwrap();
            assert_eq!(framed.length_header, want, "{stated:?}");
        }
        let mut h = http::HeaderMap::new();
        h.append(
            http::header::TRANSFER_ENCODING,
            http::HeaderValue::from_static("chunked"),
        );
        h.append(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from_static("3"),
        );
        let framed = response_framing(&h, false).unwrap();
        assert_eq!(
            (framed.length_header, framed.reusable),
            (LengthHeader::Dropped, false)
        );
        h.insert(
            http::header::TRANSFER_ENCODING,
            http::HeaderValue::from_static("gzip"),
        );
        assert!(response_framing(&h, false).is_err());
    }

    #[test]
    fn trailers_are_kept_from_any_te_list_that_names_them() {
        let table: &[(&[u8], bool)] = &[
            (b"trailers", true),
            (b"Trailers", true),
            (b"trailers, gzip", true),
            (b"gzip , trailers", true),
            (b"gzip", false),
            (b"", false),
            (b"trailersx", false),
        ];
        for (value, kept) in table {
            assert_eq!(
                te_keeps_trailers(value),
                *kept,
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
    }

    #[test]
    fn only_idempotent_methods_are_sent_again() {
        for m in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] {
            assert!(idempotent(m.as_bytes()), "{m}");
        }
        for m in ["POST", "PATCH", "CONNECT", "get"] {
            assert!(!idempotent(m.as_bytes()), "{m}");
        }
    }
}
