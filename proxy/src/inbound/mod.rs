//! The inbound capture listener (iptables PREROUTING redirect to 15006): traffic for the local
//! app, handled by the inbound listener's chain for the original port, or passed to the app as
//! plain TCP when no chain names the port.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::config::Store;
use crate::http::Proxy;
use crate::outbound::capture::original_dst;

/// Name of the listener the control plane sends for the inbound side.
pub const INBOUND_LISTENER: &str = "inbound";

/// Accepts redirected inbound connections forever.
pub async fn run(listener: TcpListener, store: Arc<Store>, proxy: Proxy) {
    let own = listener.local_addr().ok();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = proxy.drain.signaled() => return,
        };
        let Ok((stream, peer)) = accepted else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let (store, proxy) = (store.clone(), proxy.clone());
        tokio::spawn(async move {
            let dst = match original_dst(&stream) {
                Ok(d) if Some(d) != own => d,
                _ => {
                    tracing::debug!(%peer, "inbound connection was not redirected: closed");
                    return;
                }
            };
            let handler = store.load().listeners.get(INBOUND_LISTENER).and_then(|l| {
                l.by_port
                    .iter()
                    .find(|(p, _)| *p == dst.port())
                    .map(|(_, h)| h.clone())
            });
            match handler {
                Some(h) => crate::outbound::serve_connection(store, proxy, h, stream).await,
                None => passthrough(stream, dst.port()).await,
            }
        });
    }
}

async fn passthrough(mut client: TcpStream, port: u16) {
    let app = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    if let Ok(mut upstream) = TcpStream::connect(app).await {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    }
}
