//! The live snapshot: the config the xDS client applied, with an endpoint set per cluster
//! published alongside, in one `ArcSwap`. A connection or request loads it once, lock-free;
//! the xDS client replaces it whole.
//!
//! Endpoint sets hold what outlives a config swap (in-flight counts, latency, connection
//! pools, back-off), so publishing carries over the set of every cluster whose cluster and
//! endpoint assignment are the very objects it was built from, and builds the others anew
//! from their previous set: one change among thousands of clusters rebuilds one set.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::watch;

use crate::balance::EndpointSet;
use crate::config::{Assignment, Config, Map};
use crate::metrics::Metrics;

/// One published state: the config and the endpoint sets of its clusters.
#[derive(Debug, Default, Serialize)]
pub struct Snapshot {
    /// Listeners, routes and clusters, as converted from xDS.
    #[serde(flatten)]
    pub config: Config,
    /// Live endpoint sets by cluster name (balancer state survives config swaps).
    pub endpoints: Map<String, Arc<EndpointSet>>,
    /// The assignment each set was built from (`None`: none, or its cluster's own endpoints),
    /// so the next publish can tell an unchanged one.
    #[serde(skip)]
    built_from: Map<String, Option<Arc<Assignment>>>,
    /// Endpoints dialed with mTLS, by address, with their cluster: a connection captured on
    /// its way to a pod's own address (a headless Service's, a StatefulSet's) goes over mTLS to
    /// the identity the control plane listed there, not in plaintext around the mesh.
    #[serde(skip)]
    meshed: Map<std::net::SocketAddr, (String, Arc<crate::balance::Endpoint>)>,
}

impl Snapshot {
    /// The mTLS endpoint at `addr`, with its cluster's name, if any cluster lists one there.
    pub fn meshed_endpoint(
        &self,
        addr: std::net::SocketAddr,
    ) -> Option<&(String, Arc<crate::balance::Endpoint>)> {
        self.meshed.get(&addr)
    }
}

/// The live snapshot, and a count of swaps for whoever binds listeners from it.
#[derive(Debug)]
pub struct Store {
    current: ArcSwap<Snapshot>,
    version: watch::Sender<u64>,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            current: ArcSwap::from_pointee(Snapshot::default()),
            version: watch::channel(0).0,
        }
    }
}

impl Store {
    /// The current snapshot.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Publishes `config`, with each cluster's endpoints from `assignments` (by cluster name;
    /// a cluster that carries its own endpoints, or has none yet, is absent or `None`), and
    /// tells listeners to rebind. Returns how many endpoint sets were built anew.
    pub fn publish(
        &self,
        config: Config,
        assignments: &Map<String, Option<Arc<Assignment>>>,
        metrics: &Metrics,
    ) -> usize {
        let old = self.load();
        let mut endpoints = Map::default();
        let mut built_from = Map::default();
        let mut rebuilt = 0;
        let none = Assignment::new(Vec::new());
        for (name, c) in &config.clusters {
            let assignment = assignments.get(name).cloned().flatten();
            let previous = old.endpoints.get(name);
            let unchanged = old
                .config
                .clusters
                .get(name)
                .is_some_and(|o| Arc::ptr_eq(o, c))
                && old.built_from.get(name).is_some_and(|b| {
                    b.as_ref().map(Arc::as_ptr) == assignment.as_ref().map(Arc::as_ptr)
                });
            let set = match previous {
                Some(set) if unchanged => set.clone(),
                _ => {
                    rebuilt += 1;
                    let a: &Assignment = match (&c.static_endpoints, &assignment) {
                        (Some(s), _) => s,
                        (None, Some(a)) => a,
                        (None, None) => &none,
                    };
                    Arc::new(EndpointSet::new(
                        name,
                        &a.endpoints,
                        a.overprovisioning,
                        c.lb,
                        &c.transport,
                        previous.map(Arc::as_ref),
                        metrics,
                    ))
                }
            };
            endpoints.insert(name.clone(), set);
            built_from.insert(name.clone(), assignment);
        }
        let mut meshed = Map::default();
        for (name, set) in &endpoints {
            for ep in set.all() {
                if ep.security != crate::config::Security::Plaintext {
                    meshed
                        .entry(ep.addr)
                        .or_insert_with(|| (name.clone(), ep.clone()));
                }
            }
        }
        self.current.store(Arc::new(Snapshot {
            config,
            endpoints,
            built_from,
            meshed,
        }));
        self.version.send_modify(|v| *v += 1);
        rebuilt
    }

    /// Changes to the snapshot (the value counts swaps; 0 means none yet).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Whether a complete config has been applied.
    pub fn is_ready(&self) -> bool {
        *self.version.borrow() > 0
    }
}

/// Closes idle upstream connections of every endpoint in the live snapshot, every `every`.
pub async fn sweep(store: Arc<Store>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let snap = store.load();
        for (name, cluster) in &snap.config.clusters {
            let Some(set) = snap.endpoints.get(name) else {
                continue;
            };
            for ep in set.all() {
                ep.pool.evict_idle(cluster.idle_timeout, ep.busy());
            }
        }
    }
}
