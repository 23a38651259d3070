//! The Kubernetes registry: kube-rs reflectors for every kind weft reads.
//!
//! Nothing is published until every kind's initial list is in (never a half-synced view). Watch
//! errors, `410 Gone` included, are retried by kube-runtime's watcher, which re-lists; each error is
//! logged and counted. Optional kinds whose CRD is not installed (Gateway API, weft.io), or that
//! weft's role may not list, are read as empty, with a warning.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use gateway_api::experimental::grpcroutes::GrpcRoute;
use gateway_api::experimental::httproutes::HttpRoute;
use gateway_api::experimental::tcproutes::TcpRoute;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use super::grant::ReferenceGrant;
use super::objects::key_of;
use super::{MeshTx, Metrics, Objects, publish};
use crate::crd::{AuthorizationPolicy, MeshTLS, Sidecar, TrafficPolicy};
use crate::model::Key;

/// One reflected kind; `None` when its API is not served by the cluster.
type Reflected<K> = Option<Store<K>>;

struct Stores {
    namespaces: Reflected<Namespace>,
    services: Reflected<Service>,
    endpoint_slices: Reflected<EndpointSlice>,
    pods: Reflected<Pod>,
    http_routes: Reflected<HttpRoute>,
    grpc_routes: Reflected<GrpcRoute>,
    tcp_routes: Reflected<TcpRoute>,
    reference_grants: Reflected<ReferenceGrant>,
    traffic_policies: Reflected<TrafficPolicy>,
    authorization_policies: Reflected<AuthorizationPolicy>,
    mesh_tls: Reflected<MeshTLS>,
    sidecars: Reflected<Sidecar>,
}

/// Whether the API server serves this kind (a CRD may not be installed).
async fn served<K>(client: &Client) -> bool
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let api: Api<K> = Api::all(client.clone());
    match api.list_metadata(&ListParams::default().limit(1)).await {
        Err(kube::Error::Api(status)) if status.code == 404 => {
            tracing::warn!(
                target: "weft::registry",
                "{} is not served by this cluster (CRD not installed?): read as empty",
                K::kind(&())
            );
            false
        }
        // The cluster serves it, but weft's ClusterRole does not let it list the kind (a role
        // from an older release): waiting for a list that cannot come would keep the whole mesh
        // from ever being published.
        Err(kube::Error::Api(status)) if status.code == 403 => {
            tracing::warn!(
                target: "weft::registry",
                "{} may not be listed (403: {}): read as empty; grant list and watch on it",
                K::kind(&()),
                status.message
            );
            false
        }
        // Anything else (including a transient error) is the watcher's to retry.
        _ => true,
    }
}

async fn reflect<K>(
    client: &Client,
    optional: bool,
    changes: &mpsc::Sender<()>,
    metrics: &Metrics,
) -> Reflected<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    if optional && !served::<K>(client).await {
        return None;
    }
    let (reader, writer) = reflector::store();
    let api: Api<K> = Api::all(client.clone());
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
    Some(reader)
}

fn fill<K>(store: &Reflected<K>, map: &mut BTreeMap<Key, K>, default_namespace: &str)
where
    K: Resource<DynamicType = ()> + Clone,
{
    for obj in store.iter().flat_map(Store::state) {
        map.insert(
            key_of(obj.as_ref(), default_namespace),
            Arc::unwrap_or_clone(obj),
        );
    }
}

impl Stores {
    async fn wait_until_ready(&self) {
        macro_rules! wait {
            ($($f:ident),*) => {$(
                if let Some(s) = &self.$f {
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
            reference_grants,
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
        fill(&self.reference_grants, &mut o.reference_grants, "default");
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
/// coalesced: a rebuild waits for `quiet` without events.
pub async fn run(
    client: Client,
    trust_domain: String,
    metrics: Metrics,
    tx: MeshTx,
    quiet: Duration,
) {
    let (changes_tx, mut changes) = mpsc::channel(1);
    let stores = Stores {
        namespaces: reflect(&client, false, &changes_tx, &metrics).await,
        services: reflect(&client, false, &changes_tx, &metrics).await,
        endpoint_slices: reflect(&client, false, &changes_tx, &metrics).await,
        pods: reflect(&client, false, &changes_tx, &metrics).await,
        http_routes: reflect(&client, true, &changes_tx, &metrics).await,
        grpc_routes: reflect(&client, true, &changes_tx, &metrics).await,
        tcp_routes: reflect(&client, true, &changes_tx, &metrics).await,
        reference_grants: reflect(&client, true, &changes_tx, &metrics).await,
        traffic_policies: reflect(&client, true, &changes_tx, &metrics).await,
        authorization_policies: reflect(&client, true, &changes_tx, &metrics).await,
        mesh_tls: reflect(&client, true, &changes_tx, &metrics).await,
        sidecars: reflect(&client, true, &changes_tx, &metrics).await,
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
