//! State-of-the-world streams (`StreamAggregatedResources`).
//!
//! Per type: the subscription, and the version and nonce of the last response. A request whose
//! nonce is not the last one sent is stale and ignored, as the protocol says. A response is sent
//! when the client's set of resources would change, so a NACKed version is never resent: the next
//! response waits for the next change.
//!
//! Make before break: a change that removes clusters first sends them once more, alongside the
//! new ones, then the listeners and routes that moved off them, and only then the clusters without
//! them, so a client that applies each response as it comes never routes to a cluster it has
//! dropped (the order the xDS protocol's eventual-consistency section asks of an ADS server).

use std::sync::Arc;
use tokio::time::Instant;

use weft_proto::xds::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};

use super::stream::{self, Variant, first_request};
use super::view::Changed;
use super::{Snapshot, SnapshotRx, Subscription, digest};
use crate::translate::{Resource, ResourceType};

/// A sotw stream: its per-type state, answering in `DiscoveryResponse`s.
pub(super) type Stream = stream::Stream<TypeState, DiscoveryResponse>;

#[derive(Debug, Default)]
pub(super) struct TypeState {
    sub: Option<Subscription>,
    /// Version of the last response sent (or the client's, after a reconnect, when equal).
    version: Option<String>,
    nonce: Option<String>,
    sent_at: Option<Instant>,
    /// Wildcard entered by an empty first request (legacy): later empty lists keep it.
    legacy_wildcard: bool,
    /// The resources of the last response, sorted by name: what the client holds.
    sent: Vec<Arc<Resource>>,
}

impl Variant for Stream {
    type Request = DiscoveryRequest;
    const NAME: &'static str = "sotw";

    /// Handles one request; false ends the stream.
    async fn on_request(&mut self, req: DiscoveryRequest, snapshots: &mut SnapshotRx) -> bool {
        if self.node.is_none() {
            let names = &req.resource_names;
            let (node, view) = first_request(req.node.as_ref(), &req.type_url, names, snapshots);
            (self.node, self.view) = (Some(node), view);
            self.ctx.set_node(self.node(), self.view.generation());
        }
        let Some(t) = ResourceType::from_type_url(&req.type_url) else {
            self.ctx.record_unknown_type(self.node(), &req.type_url);
            return true;
        };
        let st = &mut self.types[t.index()];
        // A nonce on a type this stream has never answered is a leftover from an earlier stream:
        // the request is treated as the type's first.
        if !req.response_nonce.is_empty() && st.nonce.is_some() {
            if st.nonce.as_deref() != Some(req.response_nonce.as_str()) {
                self.ctx.metrics().stale_nonces.inc();
                tracing::debug!(
                    node = self.node(),
                    nonce = req.response_nonce,
                    "stale nonce: ignored"
                );
                return true;
            }
            match &req.error_detail {
                Some(err) => {
                    let msg = err.message.clone();
                    self.ctx
                        .record_nack(t, self.node.as_deref().unwrap_or_default(), &msg);
                }
                None => {
                    let sent_at = st.sent_at.take();
                    self.ctx.record_ack(t, &req.version_info, sent_at);
                }
            }
        }
        let st = &mut self.types[t.index()];
        let first = st.sub.is_none();
        let names: std::collections::BTreeSet<String> = req
            .resource_names
            .iter()
            .filter(|n| n.as_str() != "*")
            .cloned()
            .collect();
        if first {
            st.legacy_wildcard = req.resource_names.is_empty();
        } else if !req.resource_names.is_empty() {
            // Once names are asked for, an empty list means none (the protocol's example).
            st.legacy_wildcard = false;
        }
        let wildcard = req.resource_names.iter().any(|n| n == "*")
            || (req.resource_names.is_empty() && st.legacy_wildcard);
        let sub = Subscription { wildcard, names };
        if first && !req.version_info.is_empty() {
            // A reconnecting client says what it holds; no need to resend the same.
            st.version = Some(req.version_info.clone());
        }
        let changed = st.sub.as_ref() != Some(&sub);
        self.ctx.record_subscription(t, &sub);
        st.sub = Some(sub);
        if changed || first {
            return self.respond(t, None, &[], false).await;
        }
        true
    }

    async fn on_snapshot(&mut self, snap: Option<Arc<Snapshot>>) -> bool {
        let (Some(snap), Some(node)) = (snap, self.node.clone()) else {
            return true;
        };
        let first = self.view.generation() == 0;
        let changed: Changed = self.view.update(&snap, &node);
        self.ctx.set_node(&node, snap.generation);
        let mut dropped_clusters = false;
        // Each updated cluster's assignment goes out after it, changed or not.
        let warming = self.view.updated_clusters(&changed);
        for t in ResourceType::ALL {
            let Some(sub) = &self.types[t.index()].sub else {
                continue;
            };
            let warms = t == ResourceType::Endpoint && warming.iter().any(|n| sub.contains(n));
            let touched = first || warms || changed[t.index()].iter().any(|n| sub.contains(n));
            if !touched {
                continue;
            }
            let retained = match t {
                ResourceType::Cluster => self.dropped(t),
                _ => Vec::new(),
            };
            dropped_clusters |= !retained.is_empty();
            if !self
                .respond(t, Some(snap.published), &retained, warms)
                .await
            {
                return false;
            }
        }
        // Listeners and routes have moved off the dropped clusters: now they can go.
        !dropped_clusters
            || self
                .respond(ResourceType::Cluster, Some(snap.published), &[], false)
                .await
    }
}

impl Stream {
    /// What the client holds of `t` and the view no longer has: resources this update removes.
    fn dropped(&self, t: ResourceType) -> Vec<Arc<Resource>> {
        self.types[t.index()]
            .sent
            .iter()
            .filter(|r| self.view.get(t, &r.name).is_none())
            .cloned()
            .collect()
    }

    /// Sends the client's current set of `t`, plus `retained` (resources it is to keep a little
    /// longer), if that differs from what it has, or anyway when `force`d.
    async fn respond(
        &mut self,
        t: ResourceType,
        published: Option<Instant>,
        retained: &[Arc<Resource>],
        force: bool,
    ) -> bool {
        if self.view.generation() == 0 {
            return true; // nothing known yet; the first snapshot will answer
        }
        let st = &self.types[t.index()];
        let Some(sub) = &st.sub else { return true };
        let mut resources: Vec<&Arc<Resource>> = if sub.wildcard {
            self.view.iter(t).map(|(_, r)| r).collect()
        } else {
            sub.names
                .iter()
                .filter_map(|n| self.view.get(t, n))
                .collect()
        };
        resources.extend(retained);
        if resources.is_empty() && !t.sotw_full_state() && st.version.is_none() {
            return true; // RDS/EDS: absence is not announced in state of the world
        }
        resources.sort_by(|a, b| a.name.cmp(&b.name));
        // Named subscriptions fold the names asked for into the version, so asking for one more
        // absent Listener or Cluster still gets the (full-state) answer that says it is absent.
        let mut version = digest(resources.iter().copied());
        if !sub.wildcard {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            version.hash(&mut h);
            sub.names.hash(&mut h);
            version = format!("{:016x}", h.finish());
        }
        if !force && st.version.as_deref() == Some(version.as_str()) {
            // A reconnecting client said it holds this version: it holds these resources, which
            // a later removal must know to keep them until listeners have moved off.
            if st.sent.is_empty() {
                self.types[t.index()].sent = resources.into_iter().cloned().collect();
            }
            return true;
        }
        self.nonce += 1;
        let nonce = self.nonce.to_string();
        let resp = DiscoveryResponse {
            version_info: version.clone(),
            resources: resources.iter().map(|r| r.body.clone()).collect(),
            type_url: t.type_url().to_string(),
            nonce: nonce.clone(),
            ..Default::default()
        };
        self.ctx.record_push(t, &resources);
        if let Some(p) = published {
            self.ctx
                .metrics()
                .push_latency
                .observe(p.elapsed().as_secs_f64());
        }
        let st = &mut self.types[t.index()];
        st.version = Some(version);
        st.nonce = Some(nonce);
        st.sent_at = Some(Instant::now());
        st.sent = resources.into_iter().cloned().collect();
        self.tx.send(Ok(resp)).await.is_ok()
    }
}
