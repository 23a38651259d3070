//! The inbound capture listener (iptables PREROUTING redirect to 15006): traffic for the local
//! app, handled by the inbound listener's chain for the original port, or passed to the app as
//! plain TCP when no chain names the port.

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::Handler;
use crate::http::Proxy;
use crate::outbound::capture::{Direction, accept_redirected};
use crate::outbound::{choose, serve_connection};
use crate::store::Store;

/// Name of the listener the control plane sends for the inbound side.
pub const INBOUND_LISTENER: &str = "inbound";

/// Accepts redirected inbound connections until the proxy stops.
pub async fn run(listener: TcpListener, store: Arc<Store>, proxy: Proxy, own_ports: Vec<u16>) {
    accept_redirected(
        listener,
        (&proxy.clone(), Direction::Inbound),
        own_ports.into(),
        move |stream, dst| {
            let (store, proxy) = (store.clone(), proxy.clone());
            async move {
                let chain = store
                    .load()
                    .config
                    .listeners
                    .get(INBOUND_LISTENER)
                    .and_then(|l| {
                        let sniffing = proxy.sniffing(l.sniffing);
                        l.by_port
                            .iter()
                            .find(|c| c.port == dst.port())
                            .map(|c| (c.protocol, c.handler.clone(), c.fallback.clone(), sniffing))
                    });
                let Some((protocol, handler, fallback, sniffing)) = chain else {
                    // To where it was headed (the pod's own address), never to loopback, so
                    // sockets the app keeps on localhost stay private, as in Istio since 1.10.
                    let stats = &proxy.metrics().passthrough(true).tcp;
                    return crate::tcp::passthrough(stream, dst, stats).await;
                };
                let cluster = weft_proto::names::inbound_cluster(dst.port());
                // An undeclared port that turns out not to be HTTP goes to the app as its chain
                // for that says, else as opaque TCP.
                let fallback = fallback.unwrap_or_else(|| Handler::tcp_to(cluster.clone()));
                // To the pod address the connection was headed for when the inbound cluster
                // lists it, as Istio's original-destination inbound does; else to the
                // cluster's own endpoint (the pod's primary address, or loopback for a
                // workload whose IPs the control plane does not know).
                let known = store
                    .load()
                    .endpoints
                    .get(&cluster)
                    .is_some_and(|set| set.get(dst).is_some());
                let pinned = known.then(|| (dst, cluster.clone()));
                if let Some((handler, detected)) =
                    choose(&stream, protocol, handler, Some(fallback), sniffing).await
                {
                    serve_connection(store, proxy, handler, stream, (detected, pinned)).await;
                }
            }
        },
    )
    .await;
}
