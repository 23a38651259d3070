//! Delta streams (`DeltaAggregatedResources`), what weft-proxy uses.
//!
//! Per type: the subscription and the version of every resource the client holds. A push carries
//! only resources whose version differs from the client's, and `removed_resources` for those it
//! holds that are gone (or that it asked for by name and do not exist). Subscription changes are
//! processed whatever their nonce; the nonce only tells an ACK or NACK from a stale one.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use tokio::time::Instant;

use weft_proto::xds::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource as XdsResource,
};

use super::stream::{self, Variant, first_request};
use super::{Snapshot, SnapshotRx, Subscription};
use crate::translate::{Resource, ResourceType};

/// A delta stream: its per-type state, answering in `DeltaDiscoveryResponse`s.
pub(super) type Stream = stream::Stream<TypeState, DeltaDiscoveryResponse>;

/// Encoded resource bytes per response, well under gRPC's default 4 MiB receive limit.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

#[derive(Debug, Default)]
pub(super) struct TypeState {
    sub: Option<Subscription>,
    /// Name -> version the client holds (or was last sent).
    known: HashMap<String, String>,
    /// Named subscriptions already told "does not exist".
    told_absent: HashSet<String>,
    /// Responses sent and not yet ACKed or NACKed, oldest first.
    pending: VecDeque<(String, Instant)>,
    /// The subscription's first response is still owed (no snapshot yet when it came).
    owes_first: bool,
}

/// Which changes a push carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Updates,
    Removals,
    Both,
}

/// The order removals go out in after a snapshot: what refers to a resource goes before it.
const REMOVAL_ORDER: [ResourceType; 4] = [
    ResourceType::Listener,
    ResourceType::Route,
    ResourceType::Cluster,
    ResourceType::Endpoint,
];

impl Variant for Stream {
    type Request = DeltaDiscoveryRequest;
    const NAME: &'static str = "delta";

    async fn on_request(&mut self, req: DeltaDiscoveryRequest, snapshots: &mut SnapshotRx) -> bool {
        if self.node.is_none() {
            let names = &req.resource_names_subscribe;
            let (node, view) = first_request(req.node.as_ref(), &req.type_url, names, snapshots);
            (self.node, self.view) = (Some(node), view);
            self.ctx.set_node(self.node(), self.view.generation());
        }
        let Some(t) = ResourceType::from_type_url(&req.type_url) else {
            self.ctx.record_unknown_type(self.node(), &req.type_url);
            return true;
        };
        let node = self.node().to_string();
        let st = &mut self.types[t.index()];
        if !req.response_nonce.is_empty() {
            if let Some(pos) = st
                .pending
                .iter()
                .position(|(n, _)| *n == req.response_nonce)
            {
                // This answer settles that response and any older one still pending.
                let (_, sent_at) = st
                    .pending
                    .drain(..=pos)
                    .next_back()
                    .expect("pos is in range");
                match &req.error_detail {
                    Some(err) => self.ctx.record_nack(t, &node, &err.message),
                    None => self.ctx.record_ack(t, &req.response_nonce, Some(sent_at)),
                }
            } else {
                self.ctx.metrics().stale_nonces.inc();
            }
        }
        let st = &mut self.types[t.index()];
        // Names whose state must be (re)considered for this request's response.
        let mut candidates: BTreeSet<String> = BTreeSet::new();
        let mut all = false;
        match &mut st.sub {
            None => {
                let wildcard = req.resource_names_subscribe.is_empty()
                    || req.resource_names_subscribe.iter().any(|n| n == "*");
                let names: BTreeSet<String> = req
                    .resource_names_subscribe
                    .iter()
                    .filter(|n| n.as_str() != "*")
                    .cloned()
                    .collect();
                st.known = req.initial_resource_versions.clone();
                st.sub = Some(Subscription { wildcard, names });
                st.owes_first = true;
                all = true;
            }
            Some(sub) => {
                // A name asked for again is sent again, held or not: the client may have
                // dropped it (the xDS protocol's "must still provide those resources").
                for n in &req.resource_names_subscribe {
                    if n == "*" {
                        all |= !sub.wildcard;
                        sub.wildcard = true;
                    } else {
                        sub.names.insert(n.clone());
                        candidates.insert(n.clone());
                    }
                }
                let mut dropped = Vec::new();
                for n in &req.resource_names_unsubscribe {
                    if n == "*" {
                        sub.wildcard = false;
                    } else if sub.names.remove(n) {
                        dropped.push(n.clone());
                    }
                }
                // The client drops what it no longer watches; so do we.
                let sub = sub.clone();
                st.known.retain(|name, _| sub.contains(name));
                // A name dropped while `*` still covers it: the client may have let it go with
                // the name, so its state is sent again (the resource, or its removal), as
                // go-control-plane does. The empty version differs from every real one.
                if sub.wildcard {
                    for n in dropped {
                        st.known.insert(n.clone(), String::new());
                        candidates.insert(n);
                    }
                }
                st.told_absent.retain(|name| sub.names.contains(name));
            }
        }
        if let Some(sub) = &self.types[t.index()].sub {
            self.ctx.record_subscription(t, sub);
        }
        if all {
            return self.push(t, None, None, Part::Both, &candidates).await;
        }
        if candidates.is_empty() {
            return true;
        }
        self.push(t, Some(&candidates), None, Part::Both, &candidates)
            .await
    }

    async fn on_snapshot(&mut self, snap: Option<Arc<Snapshot>>) -> bool {
        let (Some(snap), Some(node)) = (snap, self.node.clone()) else {
            return true;
        };
        let changed = self.view.update(&snap, &node);
        self.ctx.set_node(&node, snap.generation);
        // Make before break, as the xDS protocol asks of a server: every addition and update
        // first (clusters, endpoints, listeners, routes), then every removal (listeners and
        // routes before the clusters they sent traffic to), so a client applying each
        // response as it comes never holds a listener or route whose cluster is gone.
        let parts = ResourceType::ALL
            .map(|t| (t, Part::Updates))
            .into_iter()
            .chain(REMOVAL_ORDER.map(|t| (t, Part::Removals)));
        // Every name of a type whose first answer is owed, else the changed ones; decided once,
        // so both parts look at the same names.
        let mut names: Vec<Option<BTreeSet<String>>> = ResourceType::ALL
            .iter()
            .map(|t| {
                (!self.types[t.index()].owes_first)
                    .then(|| changed[t.index()].iter().cloned().collect())
            })
            .collect();
        // Each updated cluster's assignment is sent after it, changed or not.
        let warming = self.view.updated_clusters(&changed);
        if let Some(n) = &mut names[ResourceType::Endpoint.index()] {
            n.extend(warming.iter().cloned());
        }
        let none = BTreeSet::new();
        for (t, part) in parts {
            if self.types[t.index()].sub.is_none() {
                continue;
            }
            let forced = if t == ResourceType::Endpoint {
                &warming
            } else {
                &none
            };
            let names = names[t.index()].as_ref();
            if !self
                .push(t, names, Some(snap.published), part, forced)
                .await
            {
                return false;
            }
        }
        true
    }
}

impl Stream {
    /// Sends what differs between the view and the client for `names` (all names when `None`):
    /// the `part` of it asked for. Names in `forced` are sent even if the client holds them.
    async fn push(
        &mut self,
        t: ResourceType,
        names: Option<&BTreeSet<String>>,
        published: Option<Instant>,
        part: Part,
        forced: &BTreeSet<String>,
    ) -> bool {
        if self.view.generation() == 0 {
            return true; // no snapshot yet: the first one answers
        }
        let i = t.index();
        let st = &mut self.types[i];
        let Some(sub) = st.sub.clone() else {
            return true;
        };
        let owes_first = part != Part::Removals && std::mem::take(&mut st.owes_first);
        let candidates: BTreeSet<String> = match names {
            Some(n) => n.clone(),
            None => self
                .view
                .iter(t)
                .map(|(n, _)| n)
                .filter(|n| sub.contains(n))
                .chain(st.known.keys())
                .chain(sub.names.iter())
                .cloned()
                .collect(),
        };
        let mut resources: Vec<&Arc<Resource>> = Vec::new();
        let mut removed = Vec::new();
        for name in candidates {
            if !sub.contains(&name) {
                continue;
            }
            match self.view.get(t, &name) {
                Some(_) if part == Part::Removals => {}
                None if part == Part::Updates => {}
                Some(r) => {
                    st.told_absent.remove(&name);
                    if st.known.get(&name) != Some(&r.version) || forced.contains(&name) {
                        st.known.insert(name, r.version.clone());
                        resources.push(r);
                    }
                }
                None => {
                    if st.known.remove(&name).is_some()
                        || (sub.names.contains(&name) && st.told_absent.insert(name.clone()))
                    {
                        removed.push(name);
                    }
                }
            }
        }
        if resources.is_empty() && removed.is_empty() && !owes_first {
            return true;
        }
        if let Some(p) = published {
            self.ctx
                .metrics()
                .push_latency
                .observe(p.elapsed().as_secs_f64());
        }
        self.ctx.record_push(t, &resources);
        // Large pushes go out in several responses so none exceeds what clients accept by default
        // (gRPC's 4 MiB); removals ride with the first.
        let mut batches: Vec<Vec<&Arc<Resource>>> = vec![Vec::new()];
        let mut size = 0;
        for r in resources {
            let len = r.body.value.len() + r.name.len() + r.version.len();
            if size + len > MAX_RESPONSE_BYTES && !batches.last().is_some_and(Vec::is_empty) {
                batches.push(Vec::new());
                size = 0;
            }
            size += len;
            batches.last_mut().expect("never empty").push(r);
        }
        let mut removed = Some(removed);
        for batch in batches {
            self.nonce += 1;
            let nonce = self.nonce.to_string();
            let resp = DeltaDiscoveryResponse {
                system_version_info: self.view.generation().to_string(),
                resources: batch
                    .iter()
                    .map(|r| XdsResource {
                        name: r.name.clone(),
                        version: r.version.clone(),
                        resource: Some(r.body.clone()),
                        ..Default::default()
                    })
                    .collect(),
                type_url: t.type_url().to_string(),
                removed_resources: removed.take().unwrap_or_default(),
                nonce: nonce.clone(),
                ..Default::default()
            };
            let pending = &mut self.types[i].pending;
            pending.push_back((nonce, Instant::now()));
            // A client that never answers must not grow this without bound.
            if pending.len() > 64 {
                pending.pop_front();
            }
            if self.tx.send(Ok(resp)).await.is_err() {
                return false;
            }
        }
        true
    }
}
