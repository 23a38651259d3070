//! The inbound capture listener (iptables PREROUTING redirect to 15006): traffic for the local
//! app, handled by the inbound listener's chain for the original port, or passed to the app as
//! plain TCP when no chain names the port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::config::Store;
use crate::http::Proxy;
use crate::outbound::capture::redirected_dst;

/// Name of the listener the control plane sends for the inbound side.
pub const INBOUND_LISTENER: &str = "inbound";

/// Accepts redirected inbound connections forever.
pub async fn run(listener: TcpListener, store: Arc<Store>, proxy: Proxy, own_ports: Vec<u16>) {
    let own_ports = Arc::new(own_ports);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = proxy.drain.signaled() => return,
        };
        let Ok((stream, peer)) = accepted else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let (store, proxy, own_ports) = (store.clone(), proxy.clone(), own_ports.clone());
        tokio::spawn(async move {
            let Some(dst) = redirected_dst(&stream, &own_ports) else {
                tracing::debug!(%peer, "not a redirected connection, or aimed at the proxy itself: closed");
                return;
            };
            let handler = store.load().listeners.get(INBOUND_LISTENER).and_then(|l| {
                l.by_port
                    .iter()
                    .find(|(p, _)| *p == dst.port())
                    .map(|(_, h)| h.clone())
            });
            match handler {
                Some(h) => crate::outbound::serve_connection(store, proxy, h, stream).await,
                None => passthrough(stream, dst).await,
            }
        });
    }
}

/// A port no chain names goes to where it was headed (the pod's own address), never to loopback,
/// so sockets the app keeps on localhost stay private, as in Istio since 1.10.
async fn passthrough(mut client: TcpStream, dst: SocketAddr) {
    if let Ok(mut upstream) = TcpStream::connect(dst).await {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    }
}
