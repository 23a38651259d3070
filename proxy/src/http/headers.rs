//! Hop-by-hop headers (RFC 9110 §7.6.1): meaningful for one connection only, never forwarded.

use http::HeaderMap;
use http::header::Entry;
use http::header::{CONNECTION, COOKIE, HeaderName, TE, TRANSFER_ENCODING, UPGRADE};

/// The protocol a request asks to upgrade to (`Connection: upgrade` plus `Upgrade: <protocol>`).
/// An offer of `h2c` alone (what `curl --http2` sends over cleartext) is not taken up: as in Envoy,
/// the request is served as HTTP/1.1 and its upstream never sees the offer, whose
/// `HTTP2-Settings` is hop-by-hop and would be gone.
pub fn upgrade(headers: &HeaderMap) -> Option<http::HeaderValue> {
    let asks = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    let protocol = headers.get(UPGRADE).filter(|_| asks)?;
    let h2c = protocol
        .as_bytes()
        .trim_ascii()
        .eq_ignore_ascii_case(b"h2c");
    (!h2c).then(|| protocol.clone())
}

/// Whether a message's `Transfer-Encoding` is anything but one `chunked`. The HTTP library
/// takes the last chunked off and lets the rest through, and the proxy, which does not decode
/// them, would forward the bytes without saying how they are coded.
pub fn other_transfer_coding(headers: &HeaderMap) -> bool {
    let mut codings = headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty());
    match codings.next() {
        None => false,
        Some(first) => !first.eq_ignore_ascii_case(b"chunked") || codings.next().is_some(),
    }
}

/// Joins the `cookie` fields an HTTP/2 client may split one cookie list into (RFC 9113 §8.2.3)
/// into the single field HTTP/1.1 allows, as the RFC asks of a hop to HTTP/1.1: servers that
/// join repeated fields with commas would read the cookies wrong.
pub fn join_cookies(headers: &mut HeaderMap) {
    let mut all = headers.get_all(COOKIE).iter();
    if all.next().is_none() || all.next().is_none() {
        return;
    }
    let joined = headers
        .get_all(COOKIE)
        .iter()
        .map(http::HeaderValue::as_bytes)
        .collect::<Vec<_>>()
        .join(&b"; "[..]);
    if let Ok(v) = http::HeaderValue::from_bytes(&joined) {
        headers.insert(COOKIE, v);
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    super::rules::is_hop_by_hop(name.as_str())
}

/// Removes the hop-by-hop headers and those the `Connection` header names. `te: trailers` is kept:
/// gRPC needs it end to end.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none, or only `Connection: keep-alive|close` (which names no other
    // header): one pass over the names settles both without a hash lookup per candidate.
    let (mut hop, mut only_connection) = (false, true);
    for name in headers.keys().filter(|n| is_hop_by_hop(n)) {
        hop = true;
        only_connection &= name == CONNECTION;
    }
    if !hop {
        return;
    }
    if only_connection
        && let Entry::Occupied(connection) = headers.entry(CONNECTION)
        && connection.iter().all(|v| {
            v.as_bytes().eq_ignore_ascii_case(b"keep-alive")
                || v.as_bytes().eq_ignore_ascii_case(b"close")
        })
    {
        // One hash lookup both reads and removes it.
        connection.remove();
        return;
    }
    // `Connection` may name further headers; its usual tokens name none (keep-alive is removed
    // below anyway), so only other tokens are parsed.
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| {
            !["keep-alive", "close", "upgrade", "te"]
                .iter()
                .any(|k| t.eq_ignore_ascii_case(k))
        })
        .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
        // Host is never this hop's alone: routing read it, and the upstream must get it.
        .filter(|n| n != http::header::HOST)
        .collect();
    let keep_te = headers
        .get_all(TE)
        .iter()
        .any(|v| super::rules::te_keeps_trailers(v.as_bytes()));
    // Remove what is present, found in one pass, instead of a hashed remove per candidate.
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_hop_by_hop(n) || named.contains(n))
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }
    if keep_te {
        headers.insert(TE, http::HeaderValue::from_static("trailers"));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A header map of `pairs`, in order (repeated names appended).
    pub(crate) fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn websocket_is_an_upgrade_and_h2c_is_not() {
        let ws = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert_eq!(upgrade(&ws).unwrap(), "websocket");
        let h2c = map(&[
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAAQCAAAAAAIAAAAA"),
        ]);
        assert!(upgrade(&h2c).is_none());
        // `Upgrade` without `Connection: upgrade` asks for nothing.
        assert!(upgrade(&map(&[("upgrade", "websocket")])).is_none());
    }

    #[test]
    fn split_cookies_are_joined_in_order_and_a_single_one_is_untouched() {
        let mut h = map(&[("cookie", "a=1"), ("x", "y"), ("cookie", "b=2; c=3")]);
        join_cookies(&mut h);
        assert_eq!(
            h.get_all(COOKIE).iter().collect::<Vec<_>>(),
            ["a=1; b=2; c=3"]
        );
        let mut one = map(&[("cookie", "a=1")]);
        join_cookies(&mut one);
        assert_eq!(one.get(COOKIE).unwrap(), "a=1");
    }

    #[test]
    fn codings_other_than_chunked_are_found_in_any_transfer_encoding_line() {
        let cases: &[(&[(&'static str, &'static str)], bool)] = &[
            (&[], false),
            (&[("transfer-encoding", "chunked")], false),
            (&[("transfer-encoding", "Chunked")], false),
            (&[("transfer-encoding", "gzip, chunked")], true),
            (
                &[
                    ("transfer-encoding", "gzip"),
                    ("transfer-encoding", "chunked"),
                ],
                true,
            ),
            (&[("transfer-encoding", "identity")], true),
            (&[("transfer-encoding", "chunked, chunked")], true),
        ];
        for (pairs, other) in cases {
            assert_eq!(other_transfer_coding(&map(pairs)), *other, "{pairs:?}");
        }
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, "close, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(TE, "trailers, deflate".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        // End to end in RFC 9110 (hop-by-hop only in RFC 2616): it announces the trailers.
        h.insert("trailer", "grpc-status".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.get("trailer").unwrap(), "grpc-status");
        assert!(h.get("x-secret").is_none());
        assert!(h.get(CONNECTION).is_none());
        assert!(h.get("keep-alive").is_none());
        assert_eq!(h.get(TE).unwrap(), "trailers");
        assert_eq!(h.get("x-kept").unwrap(), "1");
    }

    #[test]
    fn host_is_never_hop_by_hop() {
        let mut h = map(&[("host", "up"), ("connection", "Host, x-a"), ("x-a", "1")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.get("host").unwrap(), "up");
        assert!(!h.contains_key("x-a") && !h.contains_key("connection"));
    }

    #[test]
    fn a_bare_keep_alive_connection_header_goes_and_nothing_else() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, "Keep-Alive".parse().unwrap());
        h.insert("content-length", "3".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert!(h.get(CONNECTION).is_none());
        assert_eq!(h.len(), 1);
        // Nothing hop-by-hop: untouched.
        let before = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
    }
}
