//! The ADS server: `envoy.service.discovery.v3.AggregatedDiscoveryService`, state of the world and
//! delta, following Envoy's xDS protocol (versions, nonces, ACK/NACK, wildcard and named
//! subscriptions, removal).
//!
//! Each stream is one task that owns its state: the node's [`view::NodeView`] and per-type
//! subscriptions. It wakes on a request or on a new [`snapshot::Snapshot`] and sends only what
//! changed for its node.

pub mod connections;
mod delta;
pub mod metrics;
pub mod snapshot;
mod sotw;
mod stream;
pub mod view;

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use weft_proto::xds::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    aggregated_discovery_service_server::{
        AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
    },
};

pub use self::connections::Connections;
pub use self::metrics::Metrics;
pub use self::snapshot::{Snapshot, SnapshotRx};
use crate::translate::{Resource, ResourceType};

/// Responses queued per stream before the stream task waits for the client to read. Small: a
/// response can be a megabyte, and a thousand slow clients must not pin a gigabyte of buffers.
const STREAM_BUFFER: usize = 2;

/// The ADS service. Cheap to clone: every stream holds one.
#[derive(Clone, Debug)]
pub struct AdsServer {
    snapshots: SnapshotRx,
    metrics: Metrics,
    connections: Connections,
    next_id: Arc<AtomicU64>,
}

impl AdsServer {
    /// Serves the snapshots of `snapshots`.
    pub fn new(snapshots: SnapshotRx, metrics: Metrics, connections: Connections) -> Self {
        Self {
            snapshots,
            metrics,
            connections,
            next_id: Arc::new(AtomicU64::new(1)),
        }
    }

    /// The tonic service to mount on a gRPC server.
    pub fn into_service(self) -> AggregatedDiscoveryServiceServer<Self> {
        AggregatedDiscoveryServiceServer::new(self)
            .max_decoding_message_size(16 << 20)
            .max_encoding_message_size(usize::MAX)
    }

    fn open(&self, api: &'static str, peer: Option<std::net::SocketAddr>) -> StreamCtx {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.connections
            .open(id, api, peer.map(|p| p.to_string()).unwrap_or_default());
        self.metrics
            .connected
            .get_or_create(&metrics::ApiLabel { api })
            .inc();
        StreamCtx {
            id,
            api,
            server: self.clone(),
        }
    }
}

/// Per-stream handle to shared server state; closing bookkeeping happens on drop.
struct StreamCtx {
    id: u64,
    api: &'static str,
    server: AdsServer,
}

impl StreamCtx {
    fn metrics(&self) -> &Metrics {
        &self.server.metrics
    }

    fn type_label(t: ResourceType) -> metrics::TypeLabel {
        metrics::TypeLabel { r#type: t.short() }
    }

    fn record_push(&self, t: ResourceType, resources: &[&Arc<Resource>]) {
        let label = Self::type_label(t);
        let m = self.metrics();
        m.pushes.get_or_create(&label).inc();
        m.resources_pushed
            .get_or_create(&label)
            .inc_by(resources.len() as u64);
        let bytes: usize = resources.iter().map(|r| r.body.value.len()).sum();
        m.push_bytes.get_or_create(&label).inc_by(bytes as u64);
        self.update(t, |s| s.pushes += 1);
    }

    fn record_nack(&self, t: ResourceType, node: &str, message: &str) {
        tracing::warn!(node, r#type = t.short(), "NACK: {message}");
        self.metrics()
            .nacks
            .get_or_create(&Self::type_label(t))
            .inc();
        self.update(t, |s| {
            s.nacks += 1;
            s.last_nack = Some(message.to_string());
        });
    }

    fn record_ack(&self, t: ResourceType, what: &str, sent_at: Option<tokio::time::Instant>) {
        if let Some(at) = sent_at {
            self.metrics()
                .ack_latency
                .observe(at.elapsed().as_secs_f64());
        }
        self.update(t, |s| {
            s.acks += 1;
            s.last_ack = Some(what.to_string());
        });
    }

    fn record_unknown_type(&self, node: &str, url: &str) {
        tracing::warn!(
            node,
            type_url = url,
            "request for a type weft does not serve: ignored"
        );
        self.metrics().unknown_types.inc();
    }

    fn record_subscription(&self, t: ResourceType, sub: &Subscription) {
        self.update(t, |s| {
            s.wildcard = sub.wildcard;
            s.subscribed = sub.names.len();
        });
    }

    fn update(&self, t: ResourceType, f: impl FnOnce(&mut connections::TypeStatus)) {
        self.server
            .connections
            .update(self.id, |c| f(c.types.entry(t.short()).or_default()));
    }

    fn set_node(&self, node: &str, generation: u64) {
        self.server.connections.update(self.id, |c| {
            c.node_id = node.to_string();
            c.generation = generation;
        });
    }
}

impl Drop for StreamCtx {
    fn drop(&mut self) {
        self.server.connections.close(self.id);
        self.server
            .metrics
            .connected
            .get_or_create(&metrics::ApiLabel { api: self.api })
            .dec();
    }
}

/// What a client asked for of one type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subscription {
    /// Everything of the type (`*`, or an empty first request).
    pub wildcard: bool,
    /// Names asked for explicitly.
    pub names: BTreeSet<String>,
}

impl Subscription {
    /// Whether `name` is covered.
    pub fn contains(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }
}

/// A version string for a set of resources: equal sets, equal versions.
fn digest<'a>(resources: impl IntoIterator<Item = &'a Arc<Resource>>) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for r in resources {
        r.name.hash(&mut h);
        r.version.hash(&mut h);
    }
    format!("{:016x}", h.finish())
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsServer {
    type StreamAggregatedResourcesStream = ResponseStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let ctx = self.open("sotw", request.remote_addr());
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let snapshots = ctx.server.snapshots.clone();
        let stream = sotw::Stream::new(ctx, tx);
        tokio::spawn(stream::run(stream, request.into_inner(), snapshots));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let ctx = self.open("delta", request.remote_addr());
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let snapshots = ctx.server.snapshots.clone();
        let stream = delta::Stream::new(ctx, tx);
        tokio::spawn(stream::run(stream, request.into_inner(), snapshots));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
