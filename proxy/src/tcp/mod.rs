//! Opaque TCP forwarding, with half-close carried through.

use std::sync::Arc;

use tokio::net::TcpStream;

use crate::config::Store;

/// Forwards `client` to an endpoint of `cluster` until both directions are closed.
pub async fn forward(
    store: &Arc<Store>,
    cluster: &str,
    mut client: TcpStream,
) -> std::io::Result<()> {
    let (endpoint, timeout) = {
        let config = store.load();
        let set = config.endpoints.get(cluster);
        let timeout = config.clusters.get(cluster).map(|c| c.connect_timeout);
        match (set.and_then(|s| s.pick()), timeout) {
            (Some(ep), Some(t)) => (ep.clone(), t),
            _ => {
                tracing::info!(cluster, flags = "UH", "no endpoint: closing");
                return Ok(());
            }
        }
    };
    let _guard = endpoint.start();
    let mut upstream = match tokio::time::timeout(timeout, TcpStream::connect(endpoint.addr)).await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!(cluster, endpoint = %endpoint.addr, flags = "UF", "connect failed: {e}");
            return Ok(());
        }
        Err(_) => {
            tracing::info!(cluster, endpoint = %endpoint.addr, flags = "UF", "connect timed out");
            return Ok(());
        }
    };
    let _ = upstream.set_nodelay(true);
    let tcp = &endpoint.stats.tcp;
    tcp.open();
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((received, sent)) => {
            tcp.close(sent, received);
            Ok(())
        }
        Err(e) => {
            tcp.close(0, 0);
            Err(e)
        }
    }
}
