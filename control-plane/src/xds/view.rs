//! What one proxy is sent: the resources of the Services it can reach plus its own, kept up to date
//! from snapshot to snapshot with as little work as the change allows.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use super::snapshot::Snapshot;
use crate::model::{Key, SidecarScope, Workload};
use crate::translate::{self, Resource, ResourceType};

/// Resource names that changed in one update, per type.
pub type Changed = [HashSet<String>; 4];

/// The resources one node sees, by type and name.
#[derive(Debug, Default)]
pub struct NodeView {
    snapshot: Option<Arc<Snapshot>>,
    workload: Option<Arc<Workload>>,
    scope: Option<Arc<SidecarScope>>,
    visible: Option<BTreeSet<Key>>,
    own: Vec<Arc<Resource>>,
    /// Resources by type index, then name.
    pub resources: [HashMap<String, Arc<Resource>>; 4],
}

impl NodeView {
    /// The resource of a type and name, if this node sees it.
    pub fn get(&self, kind: ResourceType, name: &str) -> Option<&Arc<Resource>> {
        self.resources[kind.index()].get(name)
    }

    /// Generation of the snapshot applied last (0 before the first).
    pub fn generation(&self) -> u64 {
        self.snapshot.as_ref().map_or(0, |s| s.generation)
    }

    /// The workload the node stands for, if known.
    pub fn workload(&self) -> Option<&Arc<Workload>> {
        self.workload.as_ref()
    }

    /// Moves to `snap` and returns what changed. One generation ahead with the node's own inputs
    /// unchanged touches only the changed Services; anything else rebuilds the view and diffs.
    pub fn update(&mut self, snap: &Arc<Snapshot>, node_id: &str) -> Changed {
        let mesh = &snap.mesh;
        let workload = translate::node_workload(mesh, node_id).cloned();
        let scope = workload.as_ref().and_then(|w| mesh.scope_for(w)).cloned();
        let visible = translate::visible_services(mesh, scope.as_deref());
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
        let own = workload
            .as_ref()
            .map(|w| translate::node_resources(mesh, w))
            .unwrap_or_default();
        if incremental {
            let prev = self.snapshot.clone().expect("checked above");
            let keys = snap.changed.as_ref().expect("checked above");
            let mut old: Vec<Arc<Resource>> = std::mem::take(&mut self.own);
            let mut new: Vec<Arc<Resource>> = own.clone();
            for key in keys {
                if visible.as_ref().is_some_and(|v| !v.contains(key)) {
                    continue;
                }
                old.extend(
                    prev.services
                        .get(key)
                        .into_iter()
                        .flat_map(|s| s.resources.iter().cloned()),
                );
                new.extend(
                    snap.services
                        .get(key)
                        .into_iter()
                        .flat_map(|s| s.resources.iter().cloned()),
                );
            }
            self.replace(&old, &new, &mut changed);
        } else {
            let mut fresh: [HashMap<String, Arc<Resource>>; 4] = Default::default();
            let services = snap
                .services
                .iter()
                .filter(|(k, _)| visible.as_ref().is_none_or(|v| v.contains(*k)))
                .flat_map(|(_, s)| s.resources.iter());
            for r in services.chain(own.iter()) {
                fresh[r.kind.index()].insert(r.name.clone(), r.clone());
            }
            for i in 0..4 {
                for (name, r) in &fresh[i] {
                    if self.resources[i].get(name).map(|o| &o.version) != Some(&r.version) {
                        changed[i].insert(name.clone());
                    }
                }
                for name in self.resources[i].keys() {
                    if !fresh[i].contains_key(name) {
                        changed[i].insert(name.clone());
                    }
                }
            }
            self.resources = fresh;
        }
        self.own = own;
        self.snapshot = Some(snap.clone());
        self.workload = workload;
        self.scope = scope;
        self.visible = visible;
        changed
    }

    /// Swaps `old` for `new`, recording names whose version changed or that went away.
    fn replace(&mut self, old: &[Arc<Resource>], new: &[Arc<Resource>], changed: &mut Changed) {
        let mut removed: HashMap<(usize, &str), &str> = HashMap::new();
        for r in old {
            let i = r.kind.index();
            if self.resources[i].remove(&r.name).is_some() {
                removed.insert((i, r.name.as_str()), r.version.as_str());
            }
        }
        for r in new {
            let i = r.kind.index();
            self.resources[i].insert(r.name.clone(), r.clone());
            if removed.remove(&(i, r.name.as_str())) != Some(r.version.as_str()) {
                changed[i].insert(r.name.clone());
            }
        }
        for (i, name) in removed.into_keys() {
            changed[i].insert(name.to_string());
        }
    }
}
