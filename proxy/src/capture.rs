//! The capture listeners both directions share (iptables redirects to 15001 and 15006): bind
//! them, recover each connection's original destination, and accept redirected connections,
//! each in a span that names it. What a direction does with a connection is its own module's
//! (`outbound::capture`, `inbound`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{getsockopt, sockopt};
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;

use crate::http::Proxy;

/// The destination a redirected connection was headed for (`SO_ORIGINAL_DST`).
pub fn original_dst(stream: &TcpStream) -> std::io::Result<SocketAddr> {
    let local = stream.local_addr()?;
    if local.is_ipv4() {
        let sa = getsockopt(stream, sockopt::OriginalDst)?;
        let ip = Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr));
        Ok(SocketAddr::new(IpAddr::V4(ip), u16::from_be(sa.sin_port)))
    } else {
        let sa = getsockopt(stream, sockopt::Ip6tOriginalDst)?;
        let ip = Ipv6Addr::from(sa.sin6_addr.s6_addr);
        Ok(SocketAddr::new(IpAddr::V6(ip), u16::from_be(sa.sin6_port)))
    }
}

/// Binds a capture listener. The IPv4 wildcard also binds the IPv6 one on the same port (IPv6
/// only, so each family's redirected connections keep their own original-destination lookup), as
/// ip6tables redirects a dual-stack pod's IPv6 traffic there; a host without IPv6 gets IPv4 only.
pub fn bind(addr: SocketAddr) -> std::io::Result<Vec<TcpListener>> {
    let listen = |socket: tokio::net::TcpSocket, addr| {
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(1024)
    };
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    let first = listen(socket, addr)?;
    // The port it got, should `addr` ask for any (port 0).
    let port = first.local_addr()?.port();
    let mut listeners = vec![first];
    if addr.ip() == IpAddr::V4(Ipv4Addr::UNSPECIFIED) {
        let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
        let dual = tokio::net::TcpSocket::new_v6().and_then(|socket| {
            nix::sys::socket::setsockopt(&socket, sockopt::Ipv6V6Only, &true)?;
            listen(socket, v6)
        });
        match dual {
            Ok(l) => listeners.push(l),
            Err(e) => tracing::warn!(%v6, "no IPv6 capture: {e}"),
        }
    }
    Ok(listeners)
}

/// The original destination of a redirected connection, or `None` when the connection was not
/// redirected (it came straight to the capture port) or is headed for a capture port of this
/// host — both would make the proxy connect to itself. The same port on another pod is that
/// pod's business, and the proxy's other ports (a kubelet probe to 15020) are served, not loops.
pub fn redirected_dst(stream: &TcpStream, own_ports: &[u16]) -> Option<SocketAddr> {
    let dst = original_dst(stream).ok()?;
    let local = stream.local_addr().ok()?;
    let here = dst.ip().is_loopback() || dst.ip().is_unspecified() || dst.ip() == local.ip();
    (dst != local && !(here && own_ports.contains(&dst.port()))).then_some(dst)
}

/// Which traffic a capture listener carries, which decides when it stops accepting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// To the local app: accepted until the proxy stops, so peers move elsewhere.
    Inbound,
    /// From the local app: accepted for as long as the proxy runs, as Istio keeps outbound
    /// working through a drain, so an app still shutting down reaches its upstreams.
    Outbound,
}

impl Direction {
    /// The name logs give it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

/// Accepts redirected connections, and spawns `handle` for each with its original destination,
/// counted as open until it ends (a drain waits for it). Shared by the outbound and inbound
/// capture listeners.
pub async fn accept_redirected<F, Fut>(
    listener: TcpListener,
    proxy: &Proxy,
    direction: Direction,
    own_ports: Arc<[u16]>,
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr, crate::connections::Note) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let stopped = async {
        match direction {
            Direction::Inbound => proxy.drain.stopped().await,
            Direction::Outbound => std::future::pending().await,
        }
    };
    tokio::pin!(stopped);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut stopped => return,
        };
        let (stream, peer) = match accepted {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors (EMFILE), most likely: said, and retried after a pause
                // rather than in a loop that spins while the queued connection waits.
                tracing::warn!("capture accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        match redirected_dst(&stream, &own_ports) {
            Some(dst) => {
                let tracked = proxy.connections.open(direction.as_str(), peer, dst);
                let (open, serve) = (proxy.drain.open(), handle(stream, dst, tracked.note()));
                // Every line logged about this connection names it.
                // The peer's SPIFFE ID is recorded once an mTLS handshake gives it.
                let span = tracing::info_span!(
                    "conn",
                    dir = direction.as_str(),
                    %peer,
                    %dst,
                    peer_id = tracing::field::Empty
                );
                // Mapped, not awaited in an `async` block, which would hold the connection's
                // future twice (once captured, once awaited): the task is its whole memory.
                let served = futures::FutureExt::map(serve, move |()| drop((open, tracked)));
                tokio::spawn(served.instrument(span));
            }
            None => {
                tracing::debug!(%peer, "not a redirected connection, or aimed at the proxy itself: closed")
            }
        }
    }
}
