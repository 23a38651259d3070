//! Graceful drain, in two steps. Draining (`POST /drain`, a preStop hook): `/ready` turns 503 so
//! the endpoint leaves load balancers, and HTTP connections are told to close after their current
//! request, but listeners keep accepting: the app still runs, and peers still send until they see
//! the endpoint gone. Stopping (SIGTERM, which drains first if nothing did): inbound listeners
//! stop accepting, and the proxy exits once every connection (inbound, outbound, passthrough and
//! upgraded tunnels alike) is done or the drain timeout passes. Outbound listeners accept until
//! the exit, as Istio's do: an app that is itself shutting down still reaches its upstreams.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::watch;

/// Shared drain state: the two flags connections and accept loops watch, and a count of open
/// connections.
#[derive(Clone, Debug)]
pub struct Drain {
    draining: watch::Sender<bool>,
    /// The same as `draining`, read per request without the watch channel's lock.
    is_draining: Arc<AtomicBool>,
    stopped: watch::Sender<bool>,
    open: Arc<AtomicUsize>,
}

impl Default for Drain {
    fn default() -> Self {
        Self {
            draining: watch::channel(false).0,
            is_draining: Arc::new(AtomicBool::new(false)),
            stopped: watch::channel(false).0,
            open: Arc::new(AtomicUsize::new(0)),
        }
    }
}

/// Counts one open connection until dropped.
#[derive(Debug)]
pub struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drain {
    /// Resolves once draining has begun: connections close after their current request.
    pub async fn signaled(&self) {
        let mut rx = self.draining.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }

    /// Resolves once the proxy stops: inbound listeners stop accepting.
    pub async fn stopped(&self) {
        let mut rx = self.stopped.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }

    /// Whether draining has begun.
    pub fn is_draining(&self) -> bool {
        self.is_draining.load(Ordering::Relaxed)
    }

    /// Registers an open connection.
    pub fn open(&self) -> Open {
        self.open.fetch_add(1, Ordering::Relaxed);
        Open(self.open.clone())
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Starts draining: unready, connections close after their request, listeners still accept.
    pub fn start(&self) {
        self.is_draining.store(true, Ordering::Relaxed);
        self.draining.send_replace(true);
    }

    /// Drains (if `start` has not), stops accepting, and waits for open connections to finish,
    /// at most `timeout`. Returns how many were still open when it gave up.
    pub async fn drain(&self, timeout: Duration) -> usize {
        self.start();
        self.stopped.send_replace(true);
        let deadline = tokio::time::Instant::now() + timeout;
        while self.open_connections() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.open_connections()
    }
}
