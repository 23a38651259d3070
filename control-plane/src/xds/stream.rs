//! The life of one ADS stream, shared by both variants (state of the world and Delta): the
//! stream's requests in order and the snapshots as they come, each to the variant's handler,
//! until either ends the stream; and what a stream's first request tells about its client.

use std::sync::Arc;

use tokio::sync::mpsc;
use tonic::{Status, Streaming};
use weft_proto::xds::config::core::v3::Node;

use super::StreamCtx;
use super::view::NodeView;
use super::{Snapshot, SnapshotRx};
use crate::translate::{Client, ResourceType};

/// One stream's state, as both variants keep it: `T`, the variant's state per resource type;
/// `R`, its response message.
pub(super) struct Stream<T, R> {
    pub(super) ctx: StreamCtx,
    /// The node, once the first request named it.
    pub(super) node: Option<String>,
    /// What of the current snapshot this node is sent.
    pub(super) view: NodeView,
    pub(super) types: [T; 4],
    /// The last nonce sent.
    pub(super) nonce: u64,
    pub(super) tx: mpsc::Sender<Result<R, Status>>,
}

impl<T: Default, R> Stream<T, R> {
    /// A stream that answers through `tx`.
    pub(super) fn new(ctx: StreamCtx, tx: mpsc::Sender<Result<R, Status>>) -> Self {
        Self {
            ctx,
            node: None,
            view: NodeView::default(),
            types: Default::default(),
            nonce: 0,
            tx,
        }
    }
}

impl<T, R> Stream<T, R> {
    /// The node's id (empty before the first request).
    pub(super) fn node(&self) -> &str {
        self.node.as_deref().unwrap_or_default()
    }
}

/// What a variant does with its stream's requests and with new snapshots; `false` ends the
/// stream.
pub(super) trait Variant {
    /// The variant's request message.
    type Request: prost::Message + Default + 'static;
    /// Its name in logs.
    const NAME: &'static str;

    fn on_request(
        &mut self,
        req: Self::Request,
        snapshots: &mut SnapshotRx,
    ) -> impl Future<Output = bool> + Send;

    fn on_snapshot(&mut self, snap: Option<Arc<Snapshot>>) -> impl Future<Output = bool> + Send;
}

/// Runs a stream until the client goes, or a handler ends it. A snapshot builder that is gone
/// leaves the stream serving what it has.
pub(super) async fn run<V: Variant>(
    mut stream: V,
    mut requests: Streaming<V::Request>,
    mut snapshots: SnapshotRx,
) {
    let mut snapshots_open = true;
    loop {
        let ok = tokio::select! {
            req = requests.message() => match req {
                Ok(Some(req)) => stream.on_request(req, &mut snapshots).await,
                Ok(None) => false,
                Err(status) => {
                    tracing::debug!(%status, "{} stream ended", V::NAME);
                    false
                }
            },
            changed = snapshots.changed(), if snapshots_open => {
                if changed.is_err() {
                    snapshots_open = false;
                    true
                } else {
                    let snap = snapshots.borrow_and_update().clone();
                    stream.on_snapshot(snap).await
                }
            }
        };
        if !ok {
            return;
        }
    }
}

/// A stream's first request: the node it is for, and its view of the current snapshot, in the
/// shape its kind of client reads (`Client::of`: told by the node, or by a first Listener
/// request by name rather than the wildcard).
pub(super) fn first_request(
    node: Option<&Node>,
    type_url: &str,
    names: &[String],
    snapshots: &mut SnapshotRx,
) -> (String, NodeView) {
    let id = node.map(|n| n.id.clone()).unwrap_or_default();
    let mut view = NodeView::default();
    if let Some(first) = ResourceType::from_type_url(type_url) {
        let wildcard = names.is_empty() || names.iter().any(|n| n == "*");
        view = NodeView::new(Client::of(node, first, wildcard));
    }
    let snap = snapshots.borrow_and_update().clone();
    if let Some(snap) = snap {
        view.update(&snap, &id);
    }
    (id, view)
}
