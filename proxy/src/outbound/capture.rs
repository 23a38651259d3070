//! The outbound capture listener (iptables OUTPUT redirect to 15001): recover the original
//! destination, find the Service it belongs to, and carry the connection as that Service's port
//! declares (HTTP, TCP, or detect); destinations the mesh does not know pass through untouched
//! (Istio's ALLOW_ANY) unless the policy is registry-only.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

use crate::capture::{Direction, accept_redirected};
use crate::detect::Detected;
use crate::http::{Proxy, RouteSource, Routes};
use crate::store::Store;

/// What to do with traffic to destinations the mesh does not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutboundPolicy {
    /// Forward as plain TCP to where the app was going.
    AllowAny,
    /// Refuse it: HTTP requests get 502, anything else a reset (Istio's REGISTRY_ONLY).
    RegistryOnly,
}

/// Settings of the capture listener.
#[derive(Clone, Debug)]
pub struct Capture {
    /// Unknown destinations.
    pub policy: OutboundPolicy,
    /// The capture ports: a destination on one of them at this host's address is refused, or
    /// the proxy could forward to itself forever.
    pub own_ports: Vec<u16>,
}

/// Accepts redirected outbound connections for as long as the proxy runs.
pub async fn run(listener: TcpListener, store: Arc<Store>, proxy: Proxy, capture: Capture) {
    let own_ports: Arc<[u16]> = capture.own_ports.clone().into();
    let p = proxy.clone();
    accept_redirected(
        listener,
        &p,
        Direction::Outbound,
        own_ports,
        // Outbound connections come from the local app in plaintext: nothing to note of them.
        move |stream, dst, _| handle(stream, dst, store.clone(), proxy.clone(), capture.clone()),
    )
    .await;
}

async fn handle(
    stream: TcpStream,
    dst: SocketAddr,
    store: Arc<Store>,
    proxy: Proxy,
    capture: Capture,
) {
    let listener = store.load().config.listener_for(dst).cloned();
    let Some(listener) = listener else {
        // A pod called by its own address, of a Service without listeners there: carried as
        // opaque TCP over mTLS to the identity the control plane listed for that address, so
        // it works under STRICT (and is not plaintext around the mesh).
        let meshed = store.load().meshed_endpoint(dst).map(|(c, _)| c.clone());
        if let Some(cluster) = meshed {
            let refused = &proxy.metrics().unrouted().tcp;
            let idle = Some(crate::config::TCP_IDLE_TIMEOUT);
            let route = crate::tcp::Route {
                cluster: &cluster,
                pinned: Some(dst),
                original: Some(dst),
                idle_timeout: idle,
            };
            let forwarded = crate::tcp::forward(&store, &proxy.dialer, route, stream, refused);
            if let Err(e) = forwarded.await {
                tracing::debug!(%dst, "mTLS to a pod address ended: {e}");
            }
            return;
        }
        match capture.policy {
            OutboundPolicy::AllowAny => {
                let stats = &proxy.metrics().passthrough(false).tcp;
                let timeout = crate::tcp::PASSTHROUGH_CONNECT_TIMEOUT;
                crate::tcp::passthrough(stream, dst, timeout, stats).await;
            }
            OutboundPolicy::RegistryOnly => refuse(stream, dst, proxy).await,
        }
        return;
    };
    let Some(handler) = listener.handler.clone() else {
        return;
    };
    let pinned = match (&listener.cluster, listener.original_dst) {
        (Some(own), true) => Some((dst, own.clone())),
        _ => None,
    };
    let fallback = listener.fallback.clone();
    let sniffing = proxy.sniffing(listener.sniffing);
    if let Some((handler, detected)) =
        crate::serve::choose(&stream, listener.protocol, handler, fallback, sniffing).await
    {
        let accepted = crate::serve::Accepted {
            detected,
            pinned,
            peer: None,
        };
        crate::serve::serve_connection(store, proxy, handler, stream, accepted).await;
    }
}

/// Refuses a connection to a destination the mesh does not know, as Istio's REGISTRY_ONLY does:
/// an HTTP client gets a 502 for each request, which says why, where a bare close would look
/// like a crashed server; anything else (TLS, a server-first protocol) is reset. Both are counted
/// against `BlackHoleCluster`.
async fn refuse(stream: TcpStream, dst: SocketAddr, proxy: Proxy) {
    tracing::info!(%dst, flags = "NR", "destination not in the mesh registry: refused");
    match crate::detect::detect(&stream, Some(proxy.detect_timeout)).await {
        d @ (Detected::Http1 | Detected::Http2) => {
            let _ = stream.set_nodelay(true);
            let source = RouteSource {
                routes: Routes::Blocked,
                pinned: None,
                normalize_path: false,
                peer: None,
            };
            crate::serve::serve_http(proxy, source, stream, Some(d)).await;
        }
        Detected::Tls | Detected::Opaque | Detected::TimedOut => {
            let tcp = &proxy.metrics().blackhole().tcp;
            tcp.open();
            let _ = stream.set_zero_linger();
            drop(stream);
            tcp.close();
        }
    }
}
