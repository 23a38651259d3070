//! Registries: sources of Kubernetes objects, turned into [`Mesh`] snapshots.
//!
//! Every source fills an [`Objects`]; [`build::build`] interprets it. A source publishes a new Mesh
//! only when it differs from the last one, and never publishes after a failed load: the last good
//! Mesh stays in force.

pub mod build;
mod debounce;
pub mod file;
pub mod kube;
mod objects;
mod status;

use std::path::PathBuf;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};

pub use self::build::build;
pub use self::debounce::Debounce;
pub use self::objects::{Duplicate, Object, Objects, ParseError};
pub use self::status::{Freshness, Status, Warning};
use crate::model::Mesh;

/// The latest good Mesh; `None` until the first load succeeds.
pub type MeshTx = watch::Sender<Option<Arc<Mesh>>>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// Registry health: as Prometheus sees it, and as the admin endpoint says it ([`Status`]).
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    objects: Family<KindLabel, Gauge>,
    errors: Counter,
    builds: Counter,
    updates: Counter,
    /// How current each kind is, and the standing warnings.
    pub status: Status,
}

impl Metrics {
    /// Creates the metrics and registers them.
    pub fn register(reg: &mut Registry) -> Self {
        let m = Self::default();
        reg.register_collector(Box::new(status::StatusCollector(m.status.clone())));
        reg.register(
            "weft_registry_objects",
            "Objects read, by kind",
            m.objects.clone(),
        );
        reg.register(
            "weft_registry_errors",
            "Loads or watches that failed; the last good mesh stayed in force",
            m.errors.clone(),
        );
        reg.register(
            "weft_registry_builds",
            "Meshes built from the input (changes weft does not read build none)",
            m.builds.clone(),
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

/// Builds the Mesh and publishes it if it changed. Returns whether it did. `warnings` are the
/// source's own (files, objects it could not read), standing beside the build's.
pub fn publish(
    tx: &MeshTx,
    objects: &Objects,
    warnings: Vec<Warning>,
    trust_domain: &str,
    metrics: &Metrics,
) -> bool {
    metrics.observe(objects);
    metrics.builds.inc();
    let (mesh, built) = build(objects, trust_domain);
    metrics
        .status
        .set_warnings(warnings.into_iter().chain(built));
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
    debounce: Debounce,
    metrics: Metrics,
    tx: MeshTx,
) -> anyhow::Result<()> {
    let (changed_tx, mut changed_rx) = mpsc::channel(1);
    file::watch(&dir, debounce, changed_tx)?;
    let mut cache = file::Cache::default();
    loop {
        match cache.load_dir(&dir) {
            Ok((objects, warnings)) => {
                let warnings = warnings.into_iter().map(|w| Warning {
                    kind: "File".into(),
                    object: format!("{}:{}", w.path.display(), w.line),
                    message: w.reason,
                });
                if publish(&tx, &objects, warnings.collect(), &trust_domain, &metrics) {
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
