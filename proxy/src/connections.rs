//! The connections the proxy has accepted and holds open, for `/debug/connections`: where each
//! came from and went, and whether it is mTLS (with the peer's SPIFFE ID) or plaintext, so an
//! operator can see that nothing unencrypted remains before turning a namespace STRICT.
//! Per connection, not per request: one map insert when it opens, one removal when it closes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

/// One open connection.
#[derive(Debug)]
pub struct Open {
    direction: &'static str,
    client: SocketAddr,
    to: SocketAddr,
    since: SystemTime,
    /// The peer's SPIFFE ID, once an mTLS handshake gave it.
    peer: OnceLock<String>,
}

/// Every open connection.
#[derive(Debug, Default)]
pub struct Connections {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Open>>>,
}

/// A connection's place in the table, given up when dropped.
#[derive(Debug)]
pub struct Tracked {
    table: Arc<Connections>,
    id: u64,
    open: Arc<Open>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        lock(&self.table.open).remove(&self.id);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Connections {
    /// Notes a connection from `client` headed for `to`, accepted `direction` (`inbound`,
    /// `outbound`), until the returned guard is dropped.
    pub fn open(
        self: &Arc<Self>,
        direction: &'static str,
        client: SocketAddr,
        to: SocketAddr,
    ) -> Tracked {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let open = Arc::new(Open {
            direction,
            client,
            to,
            since: SystemTime::now(),
            peer: OnceLock::new(),
        });
        lock(&self.open).insert(id, open.clone());
        Tracked {
            table: self.clone(),
            id,
            open,
        }
    }

    /// What `/debug/connections` shows, oldest first.
    pub fn view(&self) -> serde_json::Value {
        let mut all: Vec<(u64, Arc<Open>)> = lock(&self.open)
            .iter()
            .map(|(id, o)| (*id, o.clone()))
            .collect();
        all.sort_by_key(|(id, _)| *id);
        let now = SystemTime::now();
        all.iter()
            .map(|(id, o)| {
                serde_json::json!({
                    "id": id,
                    "direction": o.direction,
                    "client": o.client.to_string(),
                    "to": o.to.to_string(),
                    "security": if o.peer.get().is_some() { "mtls" } else { "plaintext" },
                    "peer": o.peer.get(),
                    "open_seconds": now.duration_since(o.since).map_or(0, |d| d.as_secs()),
                })
            })
            .collect()
    }
}

impl Tracked {
    /// A handle to note what the connection's handshake learns.
    pub fn note(&self) -> Note {
        Note(self.open.clone())
    }
}

/// Where a connection's handler notes what its mTLS handshake said.
#[derive(Clone, Debug)]
pub struct Note(Arc<Open>);

impl Note {
    /// Notes the SPIFFE ID the connection's mTLS peer presented.
    pub fn peer(&self, id: &str) {
        let _ = self.0.peer.set(id.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_listed_while_open_with_what_its_handshake_said() {
        let table = Arc::new(Connections::default());
        let addr = |p: u16| SocketAddr::from(([10, 0, 0, 1], p));
        let plain = table.open("inbound", addr(1), addr(80));
        let mtls = table.open("inbound", addr(2), addr(80));
        mtls.note().peer("spiffe://td/ns/a/sa/b");
        let view = table.view();
        assert_eq!(view[0]["security"], "plaintext");
        assert_eq!(view[1]["security"], "mtls");
        assert_eq!(view[1]["peer"], "spiffe://td/ns/a/sa/b");
        drop(mtls);
        assert_eq!(
            table.view().as_array().unwrap().len(),
            1,
            "closed ones leave"
        );
        drop(plain);
        assert!(table.view().as_array().unwrap().is_empty());
    }
}
