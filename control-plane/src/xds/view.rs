//! What one proxy is sent: the resources of the Services it can reach plus its own, kept up to date
//! from snapshot to snapshot with as little work as the change allows.
//!
//! A node that sees every Service (no `Sidecar` scope: gRPC clients, Envoys, unscoped proxies)
//! does not copy them: it reads the snapshot's shared index and keeps only its own resources, so a
//! thousand such clients cost one index, not a thousand.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use super::snapshot::Snapshot;
use crate::model::{Key, SidecarScope, Workload};
use crate::translate::{self, Client, Resource, ResourceType};

/// Resource names that changed in one update, per type.
pub type Changed = [HashSet<String>; 4];

/// The resources one node sees, by type and name.
#[derive(Debug, Default)]
pub struct NodeView {
    /// The listener shape this node reads.
    client: Client,
    snapshot: Option<Arc<Snapshot>>,
    workload: Option<Arc<Workload>>,
    scope: Option<Arc<SidecarScope>>,
    /// Services in scope; `None` means all, read from the snapshot's shared index.
    visible: Option<BTreeSet<Key>>,
    own: Vec<Arc<Resource>>,
    /// Per type: the node's own resources, plus (when scoped) the visible Services' resources.
    resources: [HashMap<String, Arc<Resource>>; 4],
}

impl NodeView {
    /// An empty view for a client of this kind.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            ..Default::default()
        }
    }

    fn shared(&self) -> Option<&Snapshot> {
        self.snapshot.as_deref().filter(|_| self.visible.is_none())
    }

    /// The resource of a type and name, if this node sees it.
    pub fn get(&self, kind: ResourceType, name: &str) -> Option<&Arc<Resource>> {
        let i = kind.index();
        self.resources[i]
            .get(name)
            .or_else(|| self.shared()?.get(self.client, kind, name))
    }

    /// Every resource of a type this node sees; its own stand in for shared ones of the same
    /// name (a namespace's consumer routes).
    pub fn iter(&self, kind: ResourceType) -> impl Iterator<Item = (&String, &Arc<Resource>)> {
        let own = &self.resources[kind.index()];
        let shared = self
            .shared()
            .into_iter()
            .flat_map(move |s| s.iter(self.client, kind))
            .filter(move |(n, _)| !own.contains_key(*n));
        own.iter().chain(shared)
    }

    /// The clusters an update changed that the node still has: a new version of each, which
    /// Envoy keeps warming until its endpoints are sent again (the xDS protocol's note on EDS).
    pub fn updated_clusters(&self, changed: &Changed) -> BTreeSet<String> {
        changed[ResourceType::Cluster.index()]
            .iter()
            .filter(|n| self.get(ResourceType::Cluster, n).is_some())
            .cloned()
            .collect()
    }

    /// Generation of the snapshot applied last (0 before the first).
    pub fn generation(&self) -> u64 {
        self.snapshot.as_ref().map_or(0, |s| s.generation)
    }

    fn versions(&self) -> [HashMap<String, String>; 4] {
        ResourceType::ALL.map(|t| {
            self.iter(t)
                .map(|(n, r)| (n.clone(), r.version.clone()))
                .collect()
        })
    }

    /// Moves to `snap` and returns what changed. One generation ahead with the node's own inputs
    /// unchanged touches only the changed Services; anything else rebuilds the view and diffs.
    pub fn update(&mut self, snap: &Arc<Snapshot>, node_id: &str) -> Changed {
        let mesh = &snap.mesh;
        let workload = translate::node_workload(mesh, node_id).cloned();
        let scope = workload.as_ref().and_then(|w| mesh.scope_for(w)).cloned();
        let visible = translate::visible_services(mesh, scope.as_deref());
        // The node's own: its inbound side and listeners, and the route configurations its
        // namespace's consumer routes make (translated once per Service, in the snapshot).
        let own = workload
            .as_ref()
            .map(|w| {
                let mut own = translate::node_resources(mesh, w);
                let translated = |k: &Key| snap.services.get(k).map(Arc::as_ref);
                own.extend(translate::consumer_resources(
                    mesh,
                    (w, self.client),
                    visible.as_ref(),
                    translated,
                ));
                own
            })
            .unwrap_or_default();
        let incremental = match (&self.snapshot, &snap.changed) {
            (Some(prev), Some(_)) => {
                prev.generation + 1 == snap.generation
                    && workload == self.workload
                    && scope == self.scope
                    && visible == self.visible
            }
            _ => false,
        };
        let mut changed: Changed = Default::default();
        if incremental {
            let prev = self.snapshot.clone().expect("checked above");
            let keys = snap.changed.as_ref().expect("checked above");
            let mut old: Vec<Arc<Resource>> = Vec::new();
            let mut new: Vec<Arc<Resource>> = Vec::new();
            let mut old_shared = Vec::new();
            let mut new_shared = Vec::new();
            for key in keys {
                if visible.as_ref().is_some_and(|v| !v.contains(key)) {
                    continue;
                }
                let (o, n) = if visible.is_some() {
                    (&mut old, &mut new)
                } else {
                    (&mut old_shared, &mut new_shared)
                };
                let client = self.client;
                o.extend(
                    prev.services
                        .get(key)
                        .into_iter()
                        .flat_map(|s| s.for_client(client).cloned()),
                );
                n.extend(
                    snap.services
                        .get(key)
                        .into_iter()
                        .flat_map(|s| s.for_client(client).cloned()),
                );
            }
            // The node's own last: they stand in for Service resources of the same name.
            old.append(&mut self.own);
            new.extend(own.iter().cloned());
            self.replace(&old, &new, &mut changed);
            diff(&old_shared, &new_shared, &mut changed);
        } else {
            let before = self.versions();
            let mut fresh: [HashMap<String, Arc<Resource>>; 4] = Default::default();
            let scoped = visible.as_ref().map(|v| {
                snap.services
                    .iter()
                    .filter(|(k, _)| v.contains(*k))
                    .flat_map(|(_, s)| s.for_client(self.client))
            });
            for r in scoped.into_iter().flatten().chain(own.iter()) {
                fresh[r.kind.index()].insert(r.name.clone(), r.clone());
            }
            self.resources = fresh;
            self.snapshot = Some(snap.clone());
            self.visible = visible.clone();
            let after = self.versions();
            for i in 0..4 {
                for (name, v) in &after[i] {
                    if before[i].get(name) != Some(v) {
                        changed[i].insert(name.clone());
                    }
                }
                for name in before[i].keys() {
                    if !after[i].contains_key(name) {
                        changed[i].insert(name.clone());
                    }
                }
            }
        }
        self.own = own;
        self.snapshot = Some(snap.clone());
        self.workload = workload;
        self.scope = scope;
        self.visible = visible;
        changed
    }

    /// Swaps `old` for `new` in the node's own maps, recording what changed.
    fn replace(&mut self, old: &[Arc<Resource>], new: &[Arc<Resource>], changed: &mut Changed) {
        for r in old {
            self.resources[r.kind.index()].remove(&r.name);
        }
        for r in new {
            self.resources[r.kind.index()].insert(r.name.clone(), r.clone());
        }
        diff(old, new, changed);
    }
}

/// Records names whose version differs between `old` and `new`, or that are in only one.
fn diff(old: &[Arc<Resource>], new: &[Arc<Resource>], changed: &mut Changed) {
    let mut before: HashMap<(usize, &str), &str> = old
        .iter()
        .map(|r| ((r.kind.index(), r.name.as_str()), r.version.as_str()))
        .collect();
    for r in new {
        let i = r.kind.index();
        if before.remove(&(i, r.name.as_str())) != Some(r.version.as_str()) {
            changed[i].insert(r.name.clone());
        }
    }
    for (i, name) in before.into_keys() {
        changed[i].insert(name.to_string());
    }
}
