//! One kind's reflection: list, watch, list again; its store and how current it is.
//!
//! kube-runtime's watcher does the protocol (list, watch from the list's resourceVersion, re-list
//! after `410 Gone`); this task decides what each outcome means for the mesh:
//! - an event that changes nothing weft reads (see `relevant`) is stored and not signalled;
//! - `410 Gone` is listed again at once: it is how a watch learns that the API server restarted
//!   or compacted, not a failure to back off from;
//! - other errors are retried after a short, capped backoff (0.25 s doubling to 2 s), so a
//!   change written after an API-server restart arrives within seconds, not after kube-runtime's
//!   default backoff (up to 30 s, reset only after 2 minutes without errors); meanwhile the kind
//!   is stale: its last objects stay in force and [`Status`] says so;
//! - an optional kind the cluster stops serving (its CRD deleted: `404`) is read as empty, so
//!   its objects leave the mesh, and looked for every `probe_every` until it is served again;
//! - losing permission (`403`) is an error said once: the last objects stay.

use std::borrow::Cow;
use std::fmt::Debug;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::relevant::Relevant;
use crate::registry::Metrics;
use crate::registry::status::{Freshness, Status};

/// An object as the API server sent it: read as `K` (only what weft reads of it), or why it
/// could not be. Reflected in place of `K` itself because one object that does not fit weft's
/// types (a field or enum value of a newer Gateway API than weft knows) would otherwise fail the
/// decoding of its whole list, and the watcher would retry that list forever: no object of the
/// kind read, and, before the first mesh, none published at all. This way only that object is
/// left out, with a warning.
#[derive(Clone, Debug)]
pub(super) struct Lenient<K> {
    /// Name, namespace and resourceVersion: what the watcher and the store key on.
    meta: ObjectMeta,
    /// The object, reduced to what weft reads, or why it cannot be read.
    pub(super) object: Result<K, String>,
}

impl<'de, K: DeserializeOwned + Relevant> Deserialize<'de> for Lenient<K> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        let meta = value
            .get("metadata")
            .and_then(|m| ObjectMeta::deserialize(m).ok())
            .unwrap_or_default();
        let meta = ObjectMeta {
            name: meta.name,
            namespace: meta.namespace,
            resource_version: meta.resource_version,
            ..ObjectMeta::default()
        };
        let object = K::deserialize(value)
            .map(K::relevant)
            .map_err(|e| e.to_string());
        Ok(Self { meta, object })
    }
}

impl<K: Resource<DynamicType = ()>> Resource for Lenient<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.meta
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.meta
    }
}

/// A kind weft reflects.
pub(super) trait Kind:
    Resource<DynamicType = ()>
    + Relevant
    + Clone
    + PartialEq
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> Kind for K where
    K: Resource<DynamicType = ()>
        + Relevant
        + Clone
        + PartialEq
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static
{
}

/// What every kind's reflection shares.
#[derive(Clone)]
pub(super) struct Reflector {
    pub(super) client: Client,
    /// Signalled when a kind's objects changed in a way weft reads.
    pub(super) changes: mpsc::Sender<()>,
    pub(super) metrics: Metrics,
    pub(super) status: Status,
    /// How often a kind the cluster does not serve (or lets weft read) is looked for again.
    pub(super) probe_every: Duration,
}

/// Whether the cluster serves a kind to weft.
enum Served {
    Yes,
    /// `404`: the kind's CRD is not installed.
    No,
    /// `403`: weft's role may not list it.
    Forbidden(String),
    /// The API server did not say (restarting, unreachable).
    Unknown(String),
}

/// The retry delays after errors other than `410`: short, so the mesh is current again soon
/// after the API server is, and capped, so a long outage costs it one list per kind every 2 s.
fn backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(2))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// The status code an error carries, if the API server answered with one.
fn code(e: &watcher::Error) -> Option<u16> {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s.code),
        watcher::Error::WatchError(s) => Some(s.code),
        _ => None,
    }
}

impl Reflector {
    /// Starts reflecting `K` (an optional kind may not be served); its store is ready once
    /// its first list is in, or once it is known not to be served.
    pub(super) fn reflect<K: Kind>(
        &self,
        optional: bool,
        tasks: &mut tokio::task::JoinSet<()>,
    ) -> Store<Lenient<K>> {
        let (reader, writer) = reflector::store();
        // Every line the kind's task logs says which kind it is about.
        let span = tracing::info_span!("reflect", kind = %K::kind(&()));
        tasks.spawn(self.clone().run(optional, writer).instrument(span));
        reader
    }

    async fn served<K: Kind>(&self) -> Served {
        let api: Api<K> = Api::all(self.client.clone());
        match api.list_metadata(&ListParams::default().limit(1)).await {
            Ok(_) => Served::Yes,
            Err(kube::Error::Api(s)) if s.code == 404 => Served::No,
            Err(kube::Error::Api(s)) if s.code == 403 => Served::Forbidden(s.message),
            Err(e) => Served::Unknown(e.to_string()),
        }
    }

    async fn run<K: Kind>(self, optional: bool, mut writer: reflector::store::Writer<Lenient<K>>) {
        let kind = K::kind(&()).into_owned();
        let reader = writer.as_reader();
        // Whether the store has been filled once (made ready): not asked of the store itself,
        // whose readiness future keeps one waker only, the registry's.
        let mut ready = false;
        let mut tries = 0u32;
        loop {
            if self.changes.is_closed() {
                return;
            }
            let served = if optional {
                self.served::<K>().await
            } else {
                Served::Yes
            };
            match served {
                Served::Yes => {
                    self.watch(&kind, optional, &mut writer, &mut ready).await;
                    tries = 0;
                    continue;
                }
                Served::No => {
                    let was = self.status.set_sync(&kind, Freshness::NotServed);
                    if was != Some(Freshness::NotServed) {
                        let now = if was.is_some() { " any more" } else { "" };
                        tracing::warn!(
                            target: "weft::registry",
                            "{kind} is not served by this cluster{now} (CRD not installed?): \
                             read as empty until it is"
                        );
                    }
                    if !ready || !reader.state().is_empty() {
                        self.clear(&mut writer, &mut ready);
                    }
                }
                // Before the first mesh, a kind weft may not read (a role from an older
                // release) is read as empty: waiting for a list that cannot come would keep
                // the whole mesh from ever being published. Later, its last objects stay.
                Served::Forbidden(message) => {
                    self.stale(
                        &kind,
                        format!("may not be listed (403: {message}); grant list and watch on it"),
                    );
                    if !ready {
                        self.clear(&mut writer, &mut ready);
                    }
                }
                // At the start, asked again a few times before the kind is read as empty: a
                // blip then should not publish a first mesh without its routes.
                Served::Unknown(e) => {
                    tries += 1;
                    if !ready && tries <= 3 {
                        tokio::time::sleep(Duration::from_millis(250) * 2u32.pow(tries)).await;
                        continue;
                    }
                    self.stale(&kind, format!("cannot tell whether it is served: {e}"));
                    if !ready {
                        self.clear(&mut writer, &mut ready);
                    }
                }
            }
            tokio::time::sleep(self.probe_every).await;
        }
    }

    /// Lists and watches `kind` until it is not served any more (only an optional kind).
    async fn watch<K: Kind>(
        &self,
        kind: &str,
        optional: bool,
        writer: &mut reflector::store::Writer<Lenient<K>>,
        ready: &mut bool,
    ) {
        let api: Api<Lenient<K>> = Api::all(self.client.clone());
        let mut stream = std::pin::pin!(watcher::watcher(api, watcher::Config::default()));
        let mut delays = backoff();
        let mut current = false;
        while let Some(event) = stream.next().await {
            let e = match event {
                Ok(event) => {
                    if !current {
                        current = true;
                        delays = backoff();
                        if let Some(Freshness::Stale { .. }) =
                            self.status.set_sync(kind, Freshness::Current)
                        {
                            tracing::info!(target: "weft::registry", "{kind}: current again");
                        }
                    }
                    *ready |= matches!(event, Event::InitDone);
                    if apply(writer, event) {
                        let _ = self.changes.try_send(());
                    }
                    continue;
                }
                Err(e) => e,
            };
            self.metrics.errors.inc();
            match code(&e) {
                // The watch's resourceVersion is too old (the API server restarted, or etcd
                // compacted): the watcher lists again on its next step, at once.
                Some(410) => {
                    tracing::debug!(target: "weft::registry", "{kind}: {e}: listing again");
                    continue;
                }
                Some(404) if optional => return,
                Some(403) => {
                    current = false;
                    self.stale(
                        kind,
                        format!("may not be listed or watched any more (403: {e}); grant list and watch on it"),
                    );
                }
                // A watch cut off by its CRD's deletion was seen failing in odd ways first
                // (`invalid type: integer 404` from a real API server): asked plainly, such
                // a kind is not served, and is said so rather than as a watch failure.
                _ if optional && matches!(self.served::<K>().await, Served::No) => return,
                _ => {
                    current = false;
                    self.stale(kind, e.to_string());
                }
            }
            if self.changes.is_closed() {
                return;
            }
            tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(2))).await;
        }
    }

    /// Empties the store and makes it ready (the kind is read as having no objects), and
    /// signals the change.
    fn clear<K: Kind>(&self, writer: &mut reflector::store::Writer<Lenient<K>>, ready: &mut bool) {
        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitDone);
        *ready = true;
        let _ = self.changes.try_send(());
    }

    /// Marks `kind` stale (its last objects stay in force), saying so when it was not already.
    fn stale(&self, kind: &str, why: String) {
        let since = match self.status.sync(kind) {
            Some(Freshness::Stale { since, .. }) => since,
            _ => tokio::time::Instant::now(),
        };
        let was = self.status.set_sync(
            kind,
            Freshness::Stale {
                since,
                why: why.clone(),
            },
        );
        if !matches!(was, Some(Freshness::Stale { .. })) {
            tracing::error!(
                target: "weft::registry",
                "{kind}: {why}: keeping its last objects, retrying"
            );
        }
    }
}

/// Applies a watcher event to the store; returns whether it changed anything weft reads.
fn apply<K: Kind>(
    writer: &mut reflector::store::Writer<Lenient<K>>,
    event: Event<Lenient<K>>,
) -> bool {
    let changed = match &event {
        Event::Apply(new) => writer
            .as_reader()
            .get(&ObjectRef::from_obj(new))
            .is_none_or(|old| old.object != new.object),
        Event::Delete(_) | Event::InitDone => true,
        Event::Init | Event::InitApply(_) => false,
    };
    writer.apply_watcher_event(&event);
    changed
}
