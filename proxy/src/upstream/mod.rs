//! Upstream connections: dialing endpoints and pooling what was dialed, and the bodies sent on
//! them. The leaf of the data path: it reads no config and knows no route; mTLS will wrap the
//! dial here.

pub mod body;
pub mod conn;
pub mod h2;
pub mod pool;

/// The most bytes of headers accepted in either direction, HTTP/1 or HTTP/2 (Envoy's default
/// `max_request_headers_kb`); more is a 431 from a client, a 502 from an upstream. HTTP/1 counts
/// the parsed head, so a head arriving whole in one read is held to it as well.
pub const MAX_HEADER_BYTES: usize = 60 * 1024;
