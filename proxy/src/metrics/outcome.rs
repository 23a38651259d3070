//! How a request ended, as metric labels: protocol, status, gRPC status, response flag.

/// `request_protocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestProtocol {
    /// HTTP/1.1 or HTTP/2.
    Http,
    /// gRPC (`content-type: application/grpc...`).
    Grpc,
}

impl RequestProtocol {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Grpc => "grpc",
        }
    }
}

/// `response_flags`: Envoy's short codes for why a request did not get an upstream's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flag {
    /// No route matched.
    NoRoute,
    /// The destination is not in the mesh and the policy is registry-only (Envoy's `NR` for a
    /// connection no filter chain matched).
    Unregistered,
    /// No such cluster.
    NoCluster,
    /// No healthy endpoint.
    NoHealthyUpstream,
    /// Connecting upstream failed.
    UpstreamConnectFailure,
    /// The upstream reset the connection or closed it before answering.
    UpstreamReset,
    /// The upstream's response was not HTTP the proxy can forward (bad head, bad framing, a
    /// transfer coding it cannot relay).
    UpstreamProtocolError,
    /// The route's timeout expired.
    UpstreamTimeout,
    /// The client went away before the response was done.
    DownstreamClosed,
    /// The request broke HTTP in a way the server library lets through (a missing or
    /// duplicated `Host`).
    DownstreamProtocolError,
    /// The request's body came in a transfer coding other than chunked (RFC 9112 §6.1's 501);
    /// Envoy counts it as `DPE` too.
    UnsupportedTransferCoding,
    /// An authorization policy refused the request (Envoy's RBAC filter answers 403, and has
    /// no flag of its own for it: `RBAC` is weft's).
    Unauthorized,
}

impl Flag {
    /// Envoy's flag, which dashboards and logs already use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoRoute | Self::Unregistered => "NR",
            Self::NoCluster => "NC",
            Self::NoHealthyUpstream => "UH",
            Self::UpstreamConnectFailure => "UF",
            Self::UpstreamReset => "UR",
            Self::UpstreamProtocolError => "UPE",
            Self::UpstreamTimeout => "UT",
            Self::DownstreamClosed => "DC",
            Self::DownstreamProtocolError | Self::UnsupportedTransferCoding => "DPE",
            Self::Unauthorized => "RBAC",
        }
    }

    /// What went wrong, in words, for the body (or `grpc-message`) of a local reply.
    pub fn describe(self) -> &'static str {
        match self {
            Self::NoRoute => "no route",
            Self::Unregistered => "destination not in the mesh registry",
            Self::NoCluster => "no cluster",
            Self::NoHealthyUpstream => "no healthy upstream",
            Self::UpstreamConnectFailure => "upstream connect failure",
            Self::UpstreamReset => "upstream reset",
            Self::UpstreamProtocolError => "upstream protocol error",
            Self::UpstreamTimeout => "upstream request timeout",
            Self::DownstreamClosed => "downstream closed",
            Self::DownstreamProtocolError => "bad request",
            Self::UnsupportedTransferCoding => "transfer coding not implemented",
            // Envoy's words, which clients and tests already look for.
            Self::Unauthorized => "RBAC: access denied",
        }
    }
}

/// One request's labelled outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// HTTP or gRPC.
    pub protocol: RequestProtocol,
    /// HTTP status (0 when no response was sent).
    pub code: u16,
    /// `grpc-status`, for gRPC.
    pub grpc_status: Option<u8>,
    /// Why the upstream's answer is missing, if it is.
    pub flag: Option<Flag>,
}
