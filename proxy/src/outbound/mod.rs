//! Listeners the proxy binds itself (a `Sidecar`'s explicit outbound listeners, for hosts without
//! iptables). Bound and unbound as the config changes; each connection looks its handler up in the
//! config current when it arrives.

pub mod capture;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::http::Proxy;
use crate::serve::{Accepted, choose, serve_connection};
use crate::store::Store;

/// Accepts on an explicit (outbound) listener for as long as the proxy runs: an app still
/// shutting down while the proxy drains keeps reaching its upstreams, as in Istio.
async fn accept_loop(listener: TcpListener, name: String, store: Arc<Store>, proxy: Proxy) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(listener = name, "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let chosen = store.load().config.listeners.get(&name).and_then(|l| {
            let sniffing = proxy.sniffing(l.sniffing);
            Some((l.protocol, l.handler.clone()?, l.fallback.clone(), sniffing))
        });
        let Some((protocol, handler, fallback, sniffing)) = chosen else {
            continue; // removed since; drop the connection
        };
        let (store, proxy) = (store.clone(), proxy.clone());
        let open = proxy.drain.open();
        let to = stream.local_addr().unwrap_or(peer);
        let tracked = proxy.connections.open("outbound", peer, to);
        // Every line logged about this connection names it.
        let span = tracing::info_span!("conn", listener = name, %peer);
        let serve = async move {
            let _open = (open, tracked);
            if let Some((handler, detected)) =
                choose(&stream, protocol, handler, fallback, sniffing).await
            {
                let accepted = Accepted {
                    detected,
                    pinned: None,
                    peer: None,
                };
                serve_connection(store, proxy, handler, stream, accepted).await;
            }
        };
        tokio::spawn(serve.instrument(span));
    }
}

/// Keeps one accept loop per bound listener address in step with the config.
pub async fn run(store: Arc<Store>, proxy: Proxy) {
    let mut changes = store.subscribe();
    let mut bound: HashMap<(String, SocketAddr), JoinHandle<()>> = HashMap::new();
    loop {
        let snap = store.load();
        let wanted: Vec<(String, SocketAddr)> = snap
            .config
            .listeners
            .values()
            .filter(|l| l.bind && l.handler.is_some())
            .flat_map(|l| l.addresses.iter().map(|a| (l.name.clone(), *a)))
            .collect();
        bound.retain(|k, task| {
            let keep = wanted.contains(k);
            if !keep {
                task.abort();
                tracing::info!(listener = k.0, addr = %k.1, "unbound");
            }
            keep
        });
        for key in wanted {
            if bound.contains_key(&key) {
                continue;
            }
            match TcpListener::bind(key.1).await {
                Ok(l) => {
                    tracing::info!(listener = key.0, addr = %key.1, "listening");
                    let task =
                        tokio::spawn(accept_loop(l, key.0.clone(), store.clone(), proxy.clone()));
                    bound.insert(key, task);
                }
                // Retried on the next config change.
                Err(e) => tracing::error!(listener = key.0, addr = %key.1, "cannot bind: {e}"),
            }
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}
