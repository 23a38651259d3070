//! What the registry knows about its own input: how fresh each kind is, and which warnings stand.
//!
//! A source that cannot be read keeps serving its last mesh; this is where that is said, so an
//! operator sees it (`weft_registry_sync_age_seconds`, `/ready`'s body) instead of a mesh that is
//! silently old. Warnings are said once: when one first appears and when it is gone, not on every
//! rebuild, and all that stand are listed at `/debug/warnings`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use serde::Serialize;
use tokio::time::Instant;

/// Something in the input that weft ignored, and why.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Warning {
    /// Kind of the object it is about (`HTTPRoute`, `Pod`, ...; `File` for a registry file).
    pub kind: String,
    /// The object: `namespace/name` (a file: `path:line`).
    pub object: String,
    /// What was dropped and why.
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.kind, self.object, self.message)
    }
}

/// How current a kind's objects are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// Listed and watched: what the mesh holds is what the source holds.
    Current,
    /// The cluster does not serve the kind (its CRD is not installed): read as empty.
    NotServed,
    /// Cannot be read since `since`; its last objects stay in force.
    Stale {
        /// When it was last known current.
        since: Instant,
        /// Why it cannot be read now.
        why: String,
    },
}

#[derive(Default)]
struct Inner {
    kinds: BTreeMap<String, Freshness>,
    warnings: BTreeSet<Warning>,
}

/// The registry's view of its own health, shared with metrics and the admin endpoint.
#[derive(Clone, Default)]
pub struct Status(Arc<Mutex<Inner>>);

impl std::fmt::Debug for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Status").finish_non_exhaustive()
    }
}

impl Status {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records how current `kind` is; returns the state it replaced.
    pub fn set_sync(&self, kind: &str, sync: Freshness) -> Option<Freshness> {
        self.lock().kinds.insert(kind.to_string(), sync)
    }

    /// How current `kind` is, if it was said.
    pub fn sync(&self, kind: &str) -> Option<Freshness> {
        self.lock().kinds.get(kind).cloned()
    }

    /// Every kind that is stale, with how long it has been and why.
    pub fn stale(&self) -> Vec<(String, Duration, String)> {
        self.lock()
            .kinds
            .iter()
            .filter_map(|(kind, s)| match s {
                Freshness::Stale { since, why } => {
                    Some((kind.clone(), since.elapsed(), why.clone()))
                }
                _ => None,
            })
            .collect()
    }

    /// Every kind the cluster does not serve.
    pub fn not_served(&self) -> Vec<String> {
        let inner = self.lock();
        let absent = inner
            .kinds
            .iter()
            .filter(|(_, s)| **s == Freshness::NotServed);
        absent.map(|(kind, _)| kind.clone()).collect()
    }

    /// Replaces the standing warnings with `now`: what is new is logged as a warning, what is
    /// gone as resolved, what stands is not said again.
    pub fn set_warnings(&self, now: impl IntoIterator<Item = Warning>) {
        let now: BTreeSet<Warning> = now.into_iter().collect();
        let mut inner = self.lock();
        for w in now.difference(&inner.warnings) {
            tracing::warn!(target: "weft::registry", "{w}");
        }
        for w in inner.warnings.difference(&now) {
            tracing::info!(target: "weft::registry", "resolved: {w}");
        }
        inner.warnings = now;
    }

    /// The warnings that stand, by kind and object.
    pub fn warnings(&self) -> Vec<Warning> {
        self.lock().warnings.iter().cloned().collect()
    }
}

/// `weft_registry_sync_age_seconds` and `weft_registry_warnings`, read from a [`Status`] at
/// scrape time.
#[derive(Debug)]
pub(super) struct StatusCollector(pub(super) Status);

impl Collector for StatusCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (ages, warnings) = {
            let inner = self.0.lock();
            let ages: Vec<(String, f64)> = inner
                .kinds
                .iter()
                .map(|(kind, s)| match s {
                    Freshness::Stale { since, .. } => (kind.clone(), since.elapsed().as_secs_f64()),
                    _ => (kind.clone(), 0.0),
                })
                .collect();
            let mut warnings: BTreeMap<String, i64> = BTreeMap::new();
            for w in &inner.warnings {
                *warnings.entry(w.kind.clone()).or_default() += 1;
            }
            (ages, warnings)
        };
        let mut m = encoder.encode_descriptor(
            "weft_registry_sync_age_seconds",
            "Seconds since the kind was last known current (0 while it is); its last objects stay in force meanwhile",
            None,
            MetricType::Gauge,
        )?;
        for (kind, age) in ages {
            m.encode_family(&[("kind", kind.as_str())])?
                .encode_gauge(&age)?;
        }
        let mut m = encoder.encode_descriptor(
            "weft_registry_warnings",
            "Standing problems in the input that dropped part of it, by the kind of object they are about",
            None,
            MetricType::Gauge,
        )?;
        for (kind, n) in &warnings {
            m.encode_family(&[("kind", kind.as_str())])?
                .encode_gauge(n)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(object: &str, message: &str) -> Warning {
        Warning {
            kind: "HTTPRoute".into(),
            object: object.into(),
            message: message.into(),
        }
    }

    #[test]
    fn standing_warnings_are_replaced_whole() {
        let s = Status::default();
        s.set_warnings([w("ns/a", "bad regex"), w("ns/b", "no such port")]);
        s.set_warnings([w("ns/a", "bad regex"), w("ns/c", "no such Service")]);
        let objects: Vec<String> = s.warnings().into_iter().map(|w| w.object).collect();
        assert_eq!(objects, ["ns/a", "ns/c"]);
    }

    #[test]
    fn only_stale_kinds_have_an_age() {
        let s = Status::default();
        s.set_sync("Pod", Freshness::Current);
        s.set_sync("TCPRoute", Freshness::NotServed);
        s.set_sync(
            "Service",
            Freshness::Stale {
                since: Instant::now(),
                why: "connection refused".into(),
            },
        );
        let stale: Vec<String> = s.stale().into_iter().map(|(k, _, _)| k).collect();
        assert_eq!(stale, ["Service"]);
        assert_eq!(s.not_served(), ["TCPRoute"]);
    }
}
