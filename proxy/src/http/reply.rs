//! Replies the proxy makes itself ("local replies", with a reason code in `x-weft-reason`): one
//! place for what a failure is answered with, rendered for hyper's path (a `Response`) and for
//! the fast path (bytes), so the two answer alike. A gRPC client gets a gRPC status.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;

use super::body::{Body, GRPC_STATUS};
use crate::config::route::DirectResponse;
use crate::metrics::{Flag, RequestProtocol};

/// The status the proxy answers with itself for a failure it names by its `response_flags` flag.
pub(super) fn status(flag: Flag) -> StatusCode {
    match flag {
        Flag::NoRoute => StatusCode::NOT_FOUND,
        Flag::NoCluster | Flag::NoHealthyUpstream | Flag::UpstreamConnectFailure => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        // Istio answers 502 where REGISTRY_ONLY blocks an HTTP request.
        Flag::UpstreamReset | Flag::UpstreamProtocolError | Flag::Unregistered => {
            StatusCode::BAD_GATEWAY
        }
        Flag::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        Flag::Unauthorized => StatusCode::FORBIDDEN,
        Flag::DownstreamProtocolError => StatusCode::BAD_REQUEST,
        Flag::UnsupportedTransferCoding => StatusCode::NOT_IMPLEMENTED,
        // Nobody is left to answer; nginx's "client closed request", for logs only.
        Flag::DownstreamClosed => StatusCode::from_u16(499).expect("valid status"),
    }
}

/// The `grpc-status` a gRPC client gets for a local reply: gRPC's own mapping of the HTTP status
/// (doc/http-grpc-status-mapping.md), as Envoy applies it: 404 UNIMPLEMENTED, 502/503/504
/// UNAVAILABLE.
fn grpc_status(status: StatusCode) -> u8 {
    match status.as_u16() {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

/// The status and `grpc-status` a local reply is counted with: a gRPC client's is HTTP 200.
pub(super) fn codes(status: StatusCode, protocol: RequestProtocol) -> (u16, Option<u8>) {
    match protocol {
        RequestProtocol::Grpc => (200, Some(grpc_status(status))),
        RequestProtocol::Http => (status.as_u16(), None),
    }
}

/// The proxy's own answer to a failure. A gRPC client gets a trailers-only response (HTTP 200,
/// `grpc-status`, `grpc-message`), which its library turns into a status code and message; anyone
/// else gets the HTTP status and a line of text.
pub(super) fn for_failure(flag: Flag, protocol: RequestProtocol) -> Response<Body> {
    let direct = DirectResponse {
        status: status(flag),
        body: Bytes::from_static(flag.describe().as_bytes()),
    };
    response(&direct, Some(flag), protocol)
}

/// A reply of the proxy's own, as [`for_failure`] describes it (a route's fixed answer, a
/// redirect, a failure); `flag` says why, when it is a failure.
pub(super) fn response(
    direct: &DirectResponse,
    flag: Option<Flag>,
    protocol: RequestProtocol,
) -> Response<Body> {
    let mut reply = Response::builder();
    if let Some(flag) = flag {
        reply = reply.header("x-weft-reason", flag.as_str());
        if matches!(
            flag,
            Flag::DownstreamProtocolError | Flag::UnsupportedTransferCoding
        ) {
            // A client that broke HTTP once is not trusted with the rest of the connection.
            reply = reply.header(http::header::CONNECTION, "close");
        }
    }
    if protocol == RequestProtocol::Grpc {
        let grpc = grpc_status(direct.status);
        let message = String::from_utf8_lossy(direct.body.trim_ascii_end());
        let message = HeaderValue::try_from(message.as_ref())
            .unwrap_or_else(|_| HeaderValue::from_static("local reply"));
        return reply
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(GRPC_STATUS, u16::from(grpc))
            .header("grpc-message", message)
            .body(Body::Local(Full::new(Bytes::new())))
            .expect("static parts are valid");
    }
    if !direct.body.is_empty() {
        reply = reply.header(http::header::CONTENT_TYPE, "text/plain");
    }
    reply
        .status(direct.status)
        .body(Body::Local(Full::new(direct.body.clone())))
        .expect("static parts are valid")
}

/// The fast path's rendering of a failure reply, as bytes: writes the proxy's own answer for
/// `flag` into `out`: its status, the reason, `body` (left out
/// for HEAD, whatever the length says), and whether the connection closes after it.
pub(super) fn write_http1(out: &mut Vec<u8>, flag: Flag, body: &str, close: bool, is_head: bool) {
    let status = status(flag);
    out.clear();
    let _ = std::io::Write::write_fmt(
        out,
        format_args!(
            "HTTP/1.1 {} {}\r\ncontent-type: text/plain\r\nx-weft-reason: {}\r\ncontent-length: {}\r\n{}\r\n{}",
            status.as_u16(),
            status.canonical_reason().unwrap_or_default(),
            flag.as_str(),
            body.len(),
            if close { "connection: close\r\n" } else { "" },
            if is_head { "" } else { body },
        ),
    );
}
