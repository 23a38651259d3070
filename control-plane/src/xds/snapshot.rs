//! Snapshots: a Mesh with its per-Service translation, versioned, shared by every stream.
//!
//! Building one reuses the previous snapshot's translation for every Service that did not change,
//! and records which did, so a stream one generation behind updates only those.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::time::Instant;

use tokio::sync::watch;

use crate::model::{Key, Mesh};
use crate::translate::{self, Client, Resource, ResourceType, ServiceResources};

/// One published state of the mesh.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases by one with each snapshot.
    pub generation: u64,
    /// The mesh it was built from.
    pub mesh: Arc<Mesh>,
    /// Translation of every Service.
    pub services: HashMap<Key, Arc<ServiceResources>>,
    /// Every Service resource by type and name, shared by the nodes that see all Services.
    pub index: [HashMap<String, Arc<Resource>>; 4],
    /// The listeners gRPC's clients read in place of `index`'s (`api_listener`s for HTTP ports),
    /// by name: only the differences, so a snapshot does not hold the listener index twice.
    pub grpc_listeners: HashMap<String, Arc<Resource>>,
    /// Services added, changed or removed since generation - 1; `None` when unknown (the first).
    pub changed: Option<HashSet<Key>>,
    /// Whether anything per-proxy (workloads, Sidecars) changed since generation - 1.
    pub nodes_changed: bool,
    /// When it was published, for push-latency metrics.
    pub published: Instant,
}

impl Snapshot {
    /// Translates `mesh`, reusing `prev`'s work for unchanged Services.
    pub fn build(mesh: Arc<Mesh>, prev: Option<&Snapshot>) -> Self {
        let mut services = HashMap::with_capacity(mesh.services.len());
        let mut changed = HashSet::new();
        for (key, svc) in &mesh.services {
            let reused = prev.and_then(|p| {
                let old = p.mesh.services.get(key)?;
                (Arc::ptr_eq(old, svc) || old == svc).then(|| p.services.get(key).cloned())?
            });
            let res = reused.unwrap_or_else(|| {
                changed.insert(key.clone());
                Arc::new(translate::service(svc))
            });
            services.insert(key.clone(), res);
        }
        if let Some(p) = prev {
            changed.extend(
                p.mesh
                    .services
                    .keys()
                    .filter(|k| !mesh.services.contains_key(*k))
                    .cloned(),
            );
        }
        let nodes_changed = prev
            .is_none_or(|p| p.mesh.workloads != mesh.workloads || p.mesh.sidecars != mesh.sidecars);
        let mut index: [HashMap<String, Arc<Resource>>; 4] = Default::default();
        for r in services.values().flat_map(|s| &s.resources) {
            index[r.kind.index()].insert(r.name.clone(), r.clone());
        }
        let grpc_listeners = services
            .values()
            .flat_map(|s| &s.grpc_listeners)
            .map(|r| (r.name.clone(), r.clone()))
            .collect();
        Self {
            generation: prev.map_or(1, |p| p.generation + 1),
            index,
            grpc_listeners,
            changed: prev.map(|_| changed),
            nodes_changed,
            services,
            mesh,
            published: Instant::now(),
        }
    }
}

impl Snapshot {
    /// What a client of this kind reads in place of the shared index's resources of `kind`.
    fn overrides(
        &self,
        client: Client,
        kind: ResourceType,
    ) -> Option<&HashMap<String, Arc<Resource>>> {
        (client == Client::Grpc && kind == ResourceType::Listener).then_some(&self.grpc_listeners)
    }

    /// A shared resource, as a client of this kind reads it.
    pub fn get(&self, client: Client, kind: ResourceType, name: &str) -> Option<&Arc<Resource>> {
        self.overrides(client, kind)
            .and_then(|o| o.get(name))
            .or_else(|| self.index[kind.index()].get(name))
    }

    /// Every shared resource of `kind`, as a client of this kind reads it.
    pub fn iter(
        &self,
        client: Client,
        kind: ResourceType,
    ) -> impl Iterator<Item = (&String, &Arc<Resource>)> {
        let over = self.overrides(client, kind);
        let base = &self.index[kind.index()];
        let replaced = base
            .iter()
            .map(move |(n, r)| (n, over.and_then(|o| o.get(n)).unwrap_or(r)));
        let added = over
            .into_iter()
            .flatten()
            .filter(move |(n, _)| !base.contains_key(*n));
        replaced.chain(added)
    }
}

/// The current snapshot; `None` until the registry's first successful load.
pub type SnapshotRx = watch::Receiver<Option<Arc<Snapshot>>>;

/// Turns registry meshes into snapshots. The registries debounce (a burst of changes is one
/// mesh); meshes published while a snapshot is being built are coalesced into the next one.
pub async fn run(
    mut meshes: watch::Receiver<Option<Arc<Mesh>>>,
    tx: watch::Sender<Option<Arc<Snapshot>>>,
) {
    let mut first = true;
    loop {
        if !first && meshes.changed().await.is_err() {
            return;
        }
        first = false;
        let Some(mesh) = meshes.borrow_and_update().clone() else {
            continue;
        };
        let prev = tx.borrow().clone();
        let t0 = Instant::now();
        let snap = tokio::task::spawn_blocking(move || Snapshot::build(mesh, prev.as_deref()))
            .await
            .expect("translation does not panic");
        tracing::info!(
            generation = snap.generation,
            services = snap.services.len(),
            changed = snap
                .changed
                .as_ref()
                .map_or(snap.services.len(), HashSet::len),
            elapsed_ms = t0.elapsed().as_millis() as u64,
            "snapshot built"
        );
        tx.send_replace(Some(Arc::new(snap)));
    }
}
