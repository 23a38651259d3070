//! The inbound capture listener (iptables PREROUTING redirect to 15006): traffic for the local
//! app, handled by the inbound listener's chain for the original port (or its chain for ports
//! no other names), or passed to the app as plain TCP when there is none.

use std::sync::Arc;

use futures::future::Either;
use tokio::net::TcpListener;

use crate::capture::{Direction, accept_redirected};
use crate::config::authz::Peer;
use crate::http::Proxy;
use crate::serve::{InboundPort, serve_inbound};
use crate::store::Store;

/// Accepts redirected inbound connections until the proxy stops.
pub async fn run(listener: TcpListener, store: Arc<Store>, proxy: Proxy, own_ports: Vec<u16>) {
    let p = proxy.clone();
    accept_redirected(
        listener,
        &p,
        Direction::Inbound,
        own_ports.into(),
        move |stream, dst, note| {
            // The chain is chosen here and the connection's future returned as it is, not
            // awaited inside an `async` block that would keep a second copy of what it was
            // given: the spawned task is all of a connection's memory.
            let (store, proxy) = (store.clone(), proxy.clone());
            let snap = store.load();
            let chain = snap.config.inbound.as_ref().and_then(|l| {
                let chain = l.chain_for_port(dst.port())?;
                Some((chain.clone(), proxy.sniffing(l.sniffing)))
            });
            let Some((chain, sniffing)) = chain else {
                // To where it was headed (the pod's own address), never to loopback, so
                // sockets the app keeps on localhost stay private, as in Istio since 1.10.
                // Boxed, as it is rare.
                return Either::Right(Box::pin(async move {
                    let stats = &proxy.metrics().passthrough(true).tcp;
                    let timeout = crate::tcp::PASSTHROUGH_CONNECT_TIMEOUT;
                    crate::tcp::passthrough(stream, dst, timeout, stats).await;
                }));
            };
            // To the pod address the connection was headed for when the port's cluster
            // lists it, as Istio's original-destination inbound does; else to the
            // cluster's own endpoint (the pod's primary address, or loopback for a
            // workload whose IPs the control plane does not know).
            let known = snap
                .endpoints
                .get(&chain.cluster)
                .is_some_and(|set| set.get(dst).is_some());
            drop(snap);
            let pinned = known.then(|| (dst, chain.cluster.clone()));
            let port = InboundPort {
                protocol: chain.protocol,
                handler: chain.handler,
                fallback: chain.fallback,
                sniffing,
                tls: chain.tls,
            };
            let peer = Peer {
                principal: None,
                source: stream
                    .peer_addr()
                    .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |a| a.ip()),
                destination: dst,
            };
            Either::Left(serve_inbound(
                store, proxy, stream, port, pinned, peer, note,
            ))
        },
    )
    .await;
}
