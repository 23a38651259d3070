//! Hop-by-hop headers (RFC 9110 §7.6.1): meaningful for one connection only, never forwarded.

use http::HeaderMap;
use http::header::Entry;
use http::header::{CONNECTION, HeaderName, TE, UPGRADE};

/// The protocol a request asks to upgrade to (`Connection: upgrade` plus `Upgrade: <protocol>`).
pub fn upgrade(headers: &HeaderMap) -> Option<http::HeaderValue> {
    let asks = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(UPGRADE).cloned()).flatten()
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    // A match on the (lowercase) name: a length switch and one compare, cheaper than comparing
    // against each candidate in turn.
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "transfer-encoding"
            | "upgrade"
    )
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
        .collect();
    let keep_te = headers
        .get(TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
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
mod tests {
    use super::*;

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
