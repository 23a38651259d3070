//! What a port speaks, decided the way Kubernetes users declare it.

/// Application protocol of a port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Unknown: the proxy sniffs the first bytes.
    #[default]
    Detect,
    /// HTTP/1.1 (HTTP/2 from the client is still accepted).
    Http1,
    /// HTTP/2 cleartext (h2c) end to end.
    Http2,
    /// gRPC: HTTP/2 with trailers.
    Grpc,
    /// Opaque TCP (including TLS the app terminates itself).
    Tcp,
}

impl Protocol {
    /// From `appProtocol` if set, else from the port name (`http`, `http-*`, `grpc-*`, `tcp-*`, ...),
    /// as Istio and Linkerd read them.
    pub fn from_port(app_protocol: Option<&str>, name: &str) -> Self {
        if let Some(p) = app_protocol.and_then(Self::parse) {
            return p;
        }
        // gRPC-Web is HTTP/1.1 to the app (Istio reads it so), not the `grpc` of its prefix.
        let lower = name.to_ascii_lowercase();
        if lower == "grpc-web" || lower.starts_with("grpc-web-") {
            return Self::Http1;
        }
        let prefix = name.split_once('-').map_or(name, |(p, _)| p);
        Self::parse(prefix).unwrap_or_default()
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "http" | "http1" | "kubernetes.io/ws" => Self::Http1,
            "http2" | "h2c" | "kubernetes.io/h2c" => Self::Http2,
            // gRPC-Web is carried over HTTP/1.1 by browsers, and most apps serve it so.
            "grpc-web" => Self::Http1,
            "grpc" => Self::Grpc,
            // WebSocket over TLS is TLS on the wire: opaque to the proxy, as `https` is.
            "tcp" | "tls" | "https" | "kubernetes.io/wss" | "mongo" | "mysql" | "redis"
            | "postgres" => Self::Tcp,
            _ => return None,
        })
    }

    /// Whether requests on this port are routed per request (anything but opaque TCP, since a port
    /// left to detection is most often HTTP and the proxy falls back to TCP by itself).
    pub fn is_http(self) -> bool {
        !matches!(self, Self::Tcp)
    }

    /// Whether connections may be carried as opaque TCP (a TCP port, or one left to detection,
    /// for what is not HTTP): what a TCPRoute can apply to.
    pub fn carries_tcp(self) -> bool {
        matches!(self, Self::Tcp | Self::Detect)
    }

    /// Whether upstream connections should use HTTP/2.
    pub fn is_h2(self) -> bool {
        matches!(self, Self::Http2 | Self::Grpc)
    }

    /// Lowercase name used in xDS metadata and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Detect => "detect",
            Self::Http1 => "http",
            Self::Http2 => "http2",
            Self::Grpc => "grpc",
            Self::Tcp => "tcp",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Protocol::{self, *};

    #[test]
    fn from_port() {
        let cases: &[(Option<&str>, &str, Protocol)] = &[
            (None, "http", Http1),
            (None, "http-web", Http1),
            (None, "grpc-api", Grpc),
            (None, "grpc-web", Http1),
            (None, "grpc-web-ui", Http1),
            (Some("grpc-web"), "api", Http1),
            (None, "http2", Http2),
            (None, "tcp-db", Tcp),
            (None, "https", Tcp),
            (None, "", Detect),
            (None, "web", Detect),
            (Some("kubernetes.io/h2c"), "web", Http2),
            (Some("kubernetes.io/ws"), "web", Http1),
            (Some("kubernetes.io/wss"), "http-web", Tcp),
            (Some("grpc"), "tcp-x", Grpc),
            (Some("unknown"), "http", Http1),
            (Some("TCP"), "http", Tcp),
        ];
        for (app, name, want) in cases {
            assert_eq!(Protocol::from_port(*app, name), *want, "{app:?} {name}");
        }
    }
}
