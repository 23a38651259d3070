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

/// Whether a request may be sent again after a pooled connection closed under it: the
/// upstream pool's rule, the one the fast path's own retry keeps too.
pub use crate::upstream::pool::idempotent;

/// The header that names a request end to end, added where the client sent none.
pub const REQUEST_ID: &str = "x-request-id";

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
