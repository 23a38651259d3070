//! Opaque TCP forwarding, with half-close carried through.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::idle::Counted;
use crate::metrics::TcpStats;
use crate::store::Store;
use crate::stream::Stream;
use crate::upstream::conn::Dialer;

/// Where an opaque TCP connection goes.
#[derive(Clone, Copy, Debug)]
pub struct Route<'a> {
    /// The cluster.
    pub cluster: &'a str,
    /// The endpoint it must go to, rather than one the balancer picks (a headless Service's
    /// pod, the pod address an inbound connection was headed for).
    pub pinned: Option<SocketAddr>,
    /// Where the connection was headed: what an ORIGINAL_DST cluster dials.
    pub original: Option<SocketAddr>,
    /// A connection with no byte either way for this long is closed.
    pub idle_timeout: Option<Duration>,
}

/// Forwards `client` as `route` says: to an endpoint of its cluster (the `pinned` one, if
/// given, else the one the balancer picks), or for an ORIGINAL_DST cluster to where it was
/// headed, until both directions are closed or until no byte has moved either way for the idle
/// timeout, dialed by `dialer` (mTLS to an endpoint with a sidecar). A connection with nowhere
/// to go (no such cluster, no endpoint) is closed and counted into `refused`.
pub async fn forward<S: Stream>(
    store: &Arc<Store>,
    dialer: &Dialer,
    route: Route<'_>,
    client: S,
    refused: &TcpStats,
) -> std::io::Result<()> {
    let Route {
        cluster,
        pinned,
        original,
        idle_timeout,
    } = route;
    let (endpoint, timeout) = {
        let snap = store.load();
        let set = snap.endpoints.get(cluster);
        let Some(config) = snap.config.clusters.get(cluster) else {
            // A TCPRoute backend that does not resolve: its share is refused, as Gateway API says.
            tracing::info!(cluster, flags = "NC", "no such cluster: closing");
            refuse(client, refused);
            return Ok(());
        };
        let timeout = config.connect_timeout;
        if config.original_dst {
            let (Some(dst), Some(set)) = (original, set) else {
                tracing::info!(cluster, flags = "UH", "no original destination: closing");
                refuse(client, refused);
                return Ok(());
            };
            let stats = set.stats.clone();
            drop(snap);
            passthrough(client, dst, timeout, &stats.tcp).await;
            return Ok(());
        }
        let endpoint = match pinned {
            Some(addr) => set.and_then(|s| s.get(addr)),
            None => set.and_then(|s| s.pick()).cloned(),
        };
        match endpoint {
            Some(ep) => (ep, timeout),
            None => {
                tracing::info!(cluster, flags = "UH", "no endpoint: closing");
                refuse(client, refused);
                return Ok(());
            }
        }
    };
    let mut guard = endpoint.start();
    let upstream = match dialer
        .dial(endpoint.addr, &endpoint.security, timeout, false)
        .await
    {
        Ok(s) => s,
        Err(e) => {
            guard.failed();
            tracing::info!(cluster, endpoint = %endpoint.addr, flags = "UF", "connect failed: {e}");
            return Ok(());
        }
    };
    guard.answered();
    carry(client, upstream, &endpoint.stats.tcp, idle_timeout).await
}

/// Closes a connection that has nowhere to go, counted as opened and closed, so that refusals
/// show on a dashboard and not only in the log.
pub fn refuse<S: Stream>(client: S, stats: &TcpStats) {
    stats.open();
    drop(client);
    stats.close();
}

/// Copies bytes both ways (half-close carried through) until both directions are closed, or until
/// none has moved for `idle_timeout`, counting the connection and its bytes into `tcp`.
pub async fn carry<C: Stream, U: Stream>(
    client: C,
    upstream: U,
    tcp: &TcpStats,
    idle_timeout: Option<Duration>,
) -> std::io::Result<()> {
    tcp.open();
    // Counted as read: a long-lived connection shows its bytes while it lasts, and one that ends
    // in a reset still reports what it carried.
    let moved = AtomicU64::new(0);
    let mut client = Counted {
        inner: client,
        moved: &moved,
        bytes: Some(tcp.received_bytes()),
    };
    let mut upstream = Counted {
        inner: upstream,
        moved: &moved,
        bytes: Some(tcp.sent_bytes()),
    };
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    let result = match idle_timeout {
        Some(idle) => tokio::select! {
            r = copy => r.map(|_| ()),
            () = crate::idle::quiet_for(&moved, idle) => {
                tracing::debug!(?idle, "idle timeout: closing");
                Ok(())
            }
        },
        None => copy.await.map(|_| ()),
    };
    if result.is_err() {
        // One side reset (or failed): the other gets a reset too, not a clean end, so a
        // close-delimited stream that broke off is not taken for complete (as Envoy does).
        client.inner.reset_on_close();
        upstream.inner.reset_on_close();
    }
    tcp.close();
    result
}

/// How long a passthrough connection may take to connect: Istio's default `connectTimeout`.
/// The app's own connect already succeeded (to the capture port), so its timeout cannot help.
pub const PASSTHROUGH_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Carries a connection to where it was headed (a destination the mesh does not know, or an
/// inbound port no chain names), untouched, in plaintext, counted into `tcp`.
pub async fn passthrough<S: Stream>(
    client: S,
    dst: std::net::SocketAddr,
    connect_timeout: Duration,
    tcp: &TcpStats,
) {
    let upstream = match tokio::time::timeout(connect_timeout, TcpStream::connect(dst)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!(%dst, flags = "UF", "passthrough connect failed: {e}");
            return;
        }
        Err(_) => {
            tracing::info!(%dst, flags = "UF", "passthrough connect timed out");
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    if let Err(e) = carry(client, upstream, tcp, Some(crate::config::TCP_IDLE_TIMEOUT)).await {
        tracing::debug!(%dst, "passthrough ended: {e}");
    }
}
