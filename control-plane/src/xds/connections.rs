//! Who is connected and what each stream has accepted, for `/debug/connections`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use serde::Serialize;

/// One open stream.
#[derive(Clone, Debug, Serialize)]
pub struct Connection {
    /// Node id the client sent.
    pub node_id: String,
    /// `sotw` or `delta`.
    pub api: &'static str,
    /// Remote address.
    pub peer: String,
    /// Seconds since the epoch at connect.
    pub connected_at: u64,
    /// Snapshot generation last applied to this stream.
    pub generation: u64,
    /// Per type (cds, eds, lds, rds).
    pub types: BTreeMap<&'static str, TypeStatus>,
}

/// One type on one stream.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TypeStatus {
    /// Wildcard subscription.
    pub wildcard: bool,
    /// Names subscribed explicitly.
    pub subscribed: usize,
    /// Responses sent.
    pub pushes: u64,
    /// Responses ACKed.
    pub acks: u64,
    /// Last version ACKed (SotW) or last nonce ACKed (delta).
    pub last_ack: Option<String>,
    /// Responses NACKed.
    pub nacks: u64,
    /// The client's message for the last NACK.
    pub last_nack: Option<String>,
}

/// The table of open streams, shared by the server and the admin endpoint.
#[derive(Clone, Debug, Default)]
pub struct Connections(Arc<Mutex<BTreeMap<u64, Connection>>>);

impl Connections {
    /// Locks the table; every holder only reads or updates one entry.
    pub fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Connection>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a stream.
    pub fn open(&self, id: u64, api: &'static str, peer: String) {
        let connected_at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.lock().insert(
            id,
            Connection {
                node_id: String::new(),
                api,
                peer,
                connected_at,
                generation: 0,
                types: BTreeMap::new(),
            },
        );
    }

    /// Updates a stream's entry.
    pub fn update(&self, id: u64, f: impl FnOnce(&mut Connection)) {
        if let Some(c) = self.lock().get_mut(&id) {
            f(c);
        }
    }

    /// Removes a stream.
    pub fn close(&self, id: u64) {
        self.lock().remove(&id);
    }
}
