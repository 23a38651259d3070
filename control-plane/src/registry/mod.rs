//! Registries: sources of Kubernetes objects, turned into [`Mesh`] snapshots.
//!
//! Every source fills an [`Objects`]; [`build::build`] interprets it. A source publishes a new Mesh
//! only when it differs from the last one, and never publishes after a failed load: the last good
//! Mesh stays in force.

pub mod build;
pub mod file;
pub mod kube;
mod objects;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};

pub use self::build::{Warning, build};
pub use self::objects::{Duplicate, Object, Objects, ParseError};
use crate::model::Mesh;

/// The latest good Mesh; `None` until the first load succeeds.
pub type MeshTx = watch::Sender<Option<Arc<Mesh>>>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// Registry health, as Prometheus sees it.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    objects: Family<KindLabel, Gauge>,
    errors: Counter,
    warnings: Gauge,
    updates: Counter,
}

impl Metrics {
    /// Creates the metrics and registers them.
    pub fn register(reg: &mut Registry) -> Self {
        let m = Self::default();
        reg.register(
            "weft_registry_objects",
            "Objects read, by kind",
            m.objects.clone(),
        );
        reg.register(
            "weft_registry_errors",
            "Loads that failed; the last good mesh stayed in force",
            m.errors.clone(),
        );
        reg.register(
            "weft_registry_warnings",
            "Problems in the current input that dropped part of it",
            m.warnings.clone(),
        );
        reg.register(
            "weft_registry_updates",
            "New meshes published",
            m.updates.clone(),
        );
        m
    }

    fn observe(&self, objects: &Objects) {
        for (kind, n) in objects.counts() {
            self.objects
                .get_or_create(&KindLabel { kind })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}

/// Builds the Mesh and publishes it if it changed. Returns whether it did.
pub fn publish(tx: &MeshTx, objects: &Objects, trust_domain: &str, metrics: &Metrics) -> bool {
    metrics.observe(objects);
    let (mesh, warnings) = build(objects, trust_domain);
    for w in &warnings {
        tracing::warn!(target: "weft::registry", "{w}");
    }
    metrics
        .warnings
        .set(i64::try_from(warnings.len()).unwrap_or(i64::MAX));
    let changed = tx.send_if_modified(|cur| {
        if cur.as_deref() == Some(&mesh) {
            return false;
        }
        *cur = Some(Arc::new(mesh));
        true
    });
    if changed {
        metrics.updates.inc();
    }
    changed
}

/// Watches a directory and publishes its Mesh until `tx` has no receivers.
pub async fn run_file(
    dir: PathBuf,
    trust_domain: String,
    metrics: Metrics,
    tx: MeshTx,
) -> anyhow::Result<()> {
    let (changed_tx, mut changed_rx) = mpsc::channel(1);
    file::watch(&dir, Duration::from_millis(100), changed_tx)?;
    let mut cache = file::Cache::default();
    loop {
        match cache.load_dir(&dir) {
            Ok((objects, warnings)) => {
                for w in &warnings {
                    tracing::warn!(target: "weft::registry", "{w}");
                }
                if publish(&tx, &objects, &trust_domain, &metrics) {
                    tracing::info!(dir = %dir.display(), "mesh updated");
                }
            }
            Err(e) => {
                metrics.errors.inc();
                tracing::error!(target: "weft::registry", "{e}; keeping the last good mesh");
            }
        }
        tokio::select! {
            r = changed_rx.recv() => if r.is_none() { return Ok(()) },
            () = tx.closed() => return Ok(()),
        }
    }
}
