//! The inbound capture listener (iptables PREROUTING redirect to 15006): traffic for the local
//! app, handled by the inbound listener's chain for the original port, or passed to the app as
//! plain TCP when no chain names the port.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

use crate::config::Store;
use crate::http::Proxy;
use crate::outbound::capture::accept_redirected;

/// Name of the listener the control plane sends for the inbound side.
pub const INBOUND_LISTENER: &str = "inbound";

/// Accepts redirected inbound connections until the proxy drains.
pub async fn run(listener: TcpListener, store: Arc<Store>, proxy: Proxy, own_ports: Vec<u16>) {
    accept_redirected(
        listener,
        &proxy.clone(),
        own_ports.into(),
        move |stream, dst| {
            let (store, proxy) = (store.clone(), proxy.clone());
            async move {
                let handler = store.load().listeners.get(INBOUND_LISTENER).and_then(|l| {
                    l.by_port
                        .iter()
                        .find(|(p, _)| *p == dst.port())
                        .map(|(_, h)| h.clone())
                });
                match handler {
                    Some(h) => {
                        crate::outbound::serve_connection(store, proxy, h, stream, None).await
                    }
                    None => passthrough(stream, dst).await,
                }
            }
        },
    )
    .await;
}

/// A port no chain names goes to where it was headed (the pod's own address), never to loopback,
/// so sockets the app keeps on localhost stay private, as in Istio since 1.10.
async fn passthrough(mut client: TcpStream, dst: SocketAddr) {
    if let Ok(mut upstream) = TcpStream::connect(dst).await {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    }
}
