//! The Kubernetes registry: kube-rs reflectors for every kind weft reads.
//!
//! Nothing is published until every kind's initial list is in (never a half-synced view). Watch
//! errors, `410 Gone` included, are retried by kube-runtime's watcher, which re-lists; each error is
//! logged and counted. Optional kinds whose CRD is not installed (Gateway API, weft.io), or that
//! weft's role may not list, are read as empty, with a warning, and looked for again now and
//! then: a CRD installed (or a role granted) later is read from then on, without a restart.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use gateway_api::experimental::grpcroutes::GrpcRoute;
use gateway_api::experimental::httproutes::HttpRoute;
use gateway_api::experimental::tcproutes::TcpRoute;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use super::objects::key_of;
use super::{MeshTx, Metrics, Objects, publish};
use crate::crd::{AuthorizationPolicy, MeshTLS, Sidecar, TrafficPolicy};
use crate::model::Key;

/// One reflected kind: empty while its API is not served (or not listable), set once its
/// initial list is in.
type Reflected<K> = Arc<OnceLock<Store<Lenient<K>>>>;

/// An object as the API server sent it: read as `K`, or why it could not be. Reflected in place
/// of `K` itself because one object that does not fit weft's types (a field or enum value of a
/// newer Gateway API than weft knows) would otherwise fail the decoding of its whole list, and
/// the watcher would retry that list forever: no object of the kind read, and, before the
/// first mesh, none published at all. This way only that object is left out, with a warning.
#[derive(Clone, Debug)]
struct Lenient<K> {
    meta: ObjectMeta,
    object: Result<K, String>,
}

impl<'de, K: DeserializeOwned> Deserialize<'de> for Lenient<K> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        let meta = value
            .get("metadata")
            .and_then(|m| ObjectMeta::deserialize(m).ok())
            .unwrap_or_default();
        let object = K::deserialize(value).map_err(|e| e.to_string());
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

struct Stores {
    namespaces: Reflected<Namespace>,
    services: Reflected<Service>,
    endpoint_slices: Reflected<EndpointSlice>,
    pods: Reflected<Pod>,
    http_routes: Reflected<HttpRoute>,
    grpc_routes: Reflected<GrpcRoute>,
    tcp_routes: Reflected<TcpRoute>,
    traffic_policies: Reflected<TrafficPolicy>,
    authorization_policies: Reflected<AuthorizationPolicy>,
    mesh_tls: Reflected<MeshTLS>,
    sidecars: Reflected<Sidecar>,
}

/// Whether the API server serves this kind (a CRD may not be installed); `say`: warn if not.
async fn served<K>(client: &Client, say: bool) -> bool
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let api: Api<K> = Api::all(client.clone());
    match api.list_metadata(&ListParams::default().limit(1)).await {
        Err(kube::Error::Api(status)) if status.code == 404 => {
            if say {
                tracing::warn!(
                    target: "weft::registry",
                    "{} is not served by this cluster (CRD not installed?): read as empty \
                     until it is",
                    K::kind(&())
                );
            }
            false
        }
        // The cluster serves it, but weft's ClusterRole does not let it list the kind (a role
        // from an older release): waiting for a list that cannot come would keep the whole mesh
        // from ever being published.
        Err(kube::Error::Api(status)) if status.code == 403 => {
            if say {
                tracing::warn!(
                    target: "weft::registry",
                    "{} may not be listed (403: {}): read as empty until it may; grant list \
                     and watch on it",
                    K::kind(&()),
                    status.message
                );
            }
            false
        }
        Ok(_) => true,
        // Any other error (the API server restarting, a network blip): asked again a few
        // times; a kind that still cannot be told served is read as empty until a later look,
        // rather than holding back the first mesh on a list that may never come.
        Err(e) => {
            for attempt in 1..=3u32 {
                tokio::time::sleep(Duration::from_millis(250) * 2u32.pow(attempt)).await;
                if api
                    .list_metadata(&ListParams::default().limit(1))
                    .await
                    .is_ok()
                {
                    return true;
                }
            }
            if say {
                tracing::warn!(
                    target: "weft::registry",
                    "cannot tell whether {} is served ({e}): read as empty until it answers",
                    K::kind(&())
                );
            }
            false
        }
    }
}

/// The kind's reflector, started now if the kind is required or served, else as soon as a
/// look every `probe_every` finds it served.
async fn reflect<K>(
    client: &Client,
    optional: bool,
    changes: &mpsc::Sender<()>,
    metrics: &Metrics,
    probe_every: Duration,
) -> Reflected<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let slot: Reflected<K> = Arc::default();
    if !optional || served::<K>(client, true).await {
        let _ = slot.set(start(client, changes, metrics));
        return slot;
    }
    let (client, changes, metrics, later) = (
        client.clone(),
        changes.clone(),
        metrics.clone(),
        slot.clone(),
    );
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(probe_every).await;
            if changes.is_closed() {
                return;
            }
            if served::<K>(&client, false).await {
                let store = start(&client, &changes, &metrics);
                // Read only once its list is in: never a half-listed kind.
                let _ = store.wait_until_ready().await;
                let _ = later.set(store);
                tracing::info!(target: "weft::registry", "{} is served now: read", K::kind(&()));
                let _ = changes.try_send(());
                return;
            }
        }
    });
    slot
}

/// Starts reflecting the kind; its store fills as the initial list comes in.
fn start<K>(client: &Client, changes: &mpsc::Sender<()>, metrics: &Metrics) -> Store<Lenient<K>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let api: Api<Lenient<K>> = Api::all(client.clone());
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    );
    let changes = changes.clone();
    let metrics = metrics.clone();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => {
                    let _ = changes.try_send(());
                }
                Err(e) => {
                    metrics.errors.inc();
                    tracing::warn!(target: "weft::registry", kind = %K::kind(&()), "watch error (retrying): {e}");
                }
            }
        }
    });
    reader
}

/// The objects of a kind that could be read, by key; each that could not is left out, said.
fn fill<K>(store: &Reflected<K>, map: &mut BTreeMap<Key, K>, default_namespace: &str)
where
    K: Resource<DynamicType = ()> + Clone,
{
    for obj in store.get().iter().flat_map(|s| s.state()) {
        let key = key_of(obj.as_ref(), default_namespace);
        match &obj.object {
            Ok(k) => {
                map.insert(key, k.clone());
            }
            Err(why) => tracing::warn!(
                target: "weft::registry",
                "{} {key}: cannot be read: {why}: ignored",
                K::kind(&())
            ),
        }
    }
}

impl Stores {
    async fn wait_until_ready(&self) {
        macro_rules! wait {
            ($($f:ident),*) => {$(
                if let Some(s) = self.$f.get() {
                    let _ = s.wait_until_ready().await;
                }
            )*};
        }
        wait!(
            namespaces,
            services,
            endpoint_slices,
            pods,
            http_routes,
            grpc_routes,
            tcp_routes,
            traffic_policies,
            authorization_policies,
            mesh_tls,
            sidecars
        );
    }

    fn objects(&self) -> Objects {
        let mut o = Objects::default();
        fill(&self.namespaces, &mut o.namespaces, "");
        fill(&self.services, &mut o.services, "default");
        fill(&self.endpoint_slices, &mut o.endpoint_slices, "default");
        fill(&self.pods, &mut o.pods, "default");
        fill(&self.http_routes, &mut o.http_routes, "default");
        fill(&self.grpc_routes, &mut o.grpc_routes, "default");
        fill(&self.tcp_routes, &mut o.tcp_routes, "default");
        fill(&self.traffic_policies, &mut o.traffic_policies, "default");
        fill(
            &self.authorization_policies,
            &mut o.authorization_policies,
            "default",
        );
        fill(&self.mesh_tls, &mut o.mesh_tls, "default");
        fill(&self.sidecars, &mut o.sidecars, "default");
        o
    }
}

/// Reflects the cluster and publishes its Mesh until `tx` has no receivers. Bursts of events are
/// coalesced: a rebuild waits for `quiet` without events. An optional kind not served at the
/// start is looked for again every `probe_every`.
pub async fn run(
    client: Client,
    trust_domain: String,
    metrics: Metrics,
    tx: MeshTx,
    (quiet, probe_every): (Duration, Duration),
) {
    let (changes_tx, mut changes) = mpsc::channel(1);
    let stores = Stores {
        namespaces: reflect(&client, false, &changes_tx, &metrics, probe_every).await,
        services: reflect(&client, false, &changes_tx, &metrics, probe_every).await,
        endpoint_slices: reflect(&client, false, &changes_tx, &metrics, probe_every).await,
        pods: reflect(&client, false, &changes_tx, &metrics, probe_every).await,
        http_routes: reflect(&client, true, &changes_tx, &metrics, probe_every).await,
        grpc_routes: reflect(&client, true, &changes_tx, &metrics, probe_every).await,
        tcp_routes: reflect(&client, true, &changes_tx, &metrics, probe_every).await,
        traffic_policies: reflect(&client, true, &changes_tx, &metrics, probe_every).await,
        authorization_policies: reflect(&client, true, &changes_tx, &metrics, probe_every).await,
        mesh_tls: reflect(&client, true, &changes_tx, &metrics, probe_every).await,
        sidecars: reflect(&client, true, &changes_tx, &metrics, probe_every).await,
    };
    drop(changes_tx);
    tokio::select! {
        () = stores.wait_until_ready() => {}
        () = tx.closed() => return,
    }
    tracing::info!(target: "weft::registry", "initial lists complete");
    loop {
        publish(&tx, &stores.objects(), &trust_domain, &metrics);
        tokio::select! {
            r = changes.recv() => if r.is_none() { return },
            () = tx.closed() => return,
        }
        while let Ok(Some(())) = tokio::time::timeout(quiet, changes.recv()).await {}
    }
}
