//! The Kubernetes registry: a reflection of every kind weft reads, and the mesh they build.
//!
//! Nothing is published until every kind's initial list is in (never a half-synced view), or,
//! for an optional kind (Gateway API, weft.io), until it is known not to be served. Each kind is
//! reflected by its own task (`kind.rs`: errors, `410 Gone`, CRDs that come and go, staleness);
//! this module turns their stores into meshes, a burst of changes into one rebuild.

mod kind;
mod relevant;

use std::collections::BTreeMap;
use std::time::Duration;

use gateway_api::experimental::grpcroutes::GrpcRoute;
use gateway_api::experimental::httproutes::HttpRoute;
use gateway_api::experimental::tcproutes::TcpRoute;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::runtime::reflector::Store;
use tokio::sync::mpsc;

use self::kind::{Kind, Lenient, Reflector};
use super::objects::key_of;
use super::{Debounce, MeshTx, Metrics, Objects, Warning, publish};
use crate::crd::{AuthorizationPolicy, MeshTLS, Sidecar, TrafficPolicy};
use crate::model::Key;

/// The objects of a kind that could be read, by key; each that could not is left out, with a
/// warning.
fn fill<K: Kind>(
    store: &Store<Lenient<K>>,
    map: &mut BTreeMap<Key, K>,
    warnings: &mut Vec<Warning>,
) {
    for obj in store.state() {
        // The API server names the namespace of every namespaced object.
        let key = key_of(obj.as_ref(), "");
        match &obj.object {
            Ok(k) => {
                map.insert(key, k.clone());
            }
            Err(why) => warnings.push(Warning {
                kind: K::kind(&()).into_owned(),
                object: key.to_string(),
                message: format!("cannot be read: {why}: ignored"),
            }),
        }
    }
}

/// Every kind weft reads, as reflected.
struct Stores {
    namespaces: Store<Lenient<Namespace>>,
    services: Store<Lenient<Service>>,
    endpoint_slices: Store<Lenient<EndpointSlice>>,
    pods: Store<Lenient<Pod>>,
    http_routes: Store<Lenient<HttpRoute>>,
    grpc_routes: Store<Lenient<GrpcRoute>>,
    tcp_routes: Store<Lenient<TcpRoute>>,
    traffic_policies: Store<Lenient<TrafficPolicy>>,
    authorization_policies: Store<Lenient<AuthorizationPolicy>>,
    mesh_tls: Store<Lenient<MeshTLS>>,
    sidecars: Store<Lenient<Sidecar>>,
}

/// Lists every kind's `$f` field, in one place for the three things done to each.
macro_rules! each_kind {
    ($m:ident!($($args:tt)*)) => {
        $m!($($args)*;
            namespaces, services, endpoint_slices, pods, http_routes, grpc_routes, tcp_routes,
            traffic_policies, authorization_policies, mesh_tls, sidecars)
    };
}

impl Stores {
    async fn wait_until_ready(&self) {
        macro_rules! wait {
            ($s:ident; $($f:ident),*) => {$(
                let _ = $s.$f.wait_until_ready().await;
            )*};
        }
        each_kind!(wait!(self));
    }

    fn objects(&self) -> (Objects, Vec<Warning>) {
        let mut o = Objects::default();
        let mut w = Vec::new();
        macro_rules! fill_all {
            ($s:ident; $($f:ident),*) => {$(
                fill(&$s.$f, &mut o.$f, &mut w);
            )*};
        }
        each_kind!(fill_all!(self));
        (o, w)
    }
}

/// What the Kubernetes registry needs besides its client.
#[derive(Clone, Debug)]
pub struct Settings {
    /// SPIFFE trust domain of the workloads' identities.
    pub trust_domain: String,
    /// How a burst of changes becomes one rebuild.
    pub debounce: Debounce,
    /// How often a kind the cluster does not serve, or does not let weft read, is looked for
    /// again.
    pub probe_every: Duration,
}

/// Reflects the cluster and publishes its Mesh until `tx` has no receivers.
pub async fn run(client: Client, settings: Settings, metrics: Metrics, tx: MeshTx) {
    let (changes_tx, mut changes) = mpsc::channel(1);
    let reflector = Reflector {
        client,
        changes: changes_tx,
        status: metrics.status.clone(),
        metrics: metrics.clone(),
        probe_every: settings.probe_every,
    };
    // Every kind's task ends with this one (the set aborts them when dropped).
    let mut tasks = tokio::task::JoinSet::new();
    let stores = Stores {
        namespaces: reflector.reflect(false, &mut tasks),
        services: reflector.reflect(false, &mut tasks),
        endpoint_slices: reflector.reflect(false, &mut tasks),
        pods: reflector.reflect(false, &mut tasks),
        http_routes: reflector.reflect(true, &mut tasks),
        grpc_routes: reflector.reflect(true, &mut tasks),
        tcp_routes: reflector.reflect(true, &mut tasks),
        traffic_policies: reflector.reflect(true, &mut tasks),
        authorization_policies: reflector.reflect(true, &mut tasks),
        mesh_tls: reflector.reflect(true, &mut tasks),
        sidecars: reflector.reflect(true, &mut tasks),
    };
    drop(reflector);
    tokio::select! {
        () = stores.wait_until_ready() => {}
        () = tx.closed() => return,
    }
    tracing::info!(target: "weft::registry", "initial lists complete");
    loop {
        let (objects, warnings) = stores.objects();
        publish(&tx, &objects, warnings, &settings.trust_domain, &metrics);
        tokio::select! {
            r = changes.recv() => if r.is_none() { return },
            () = tx.closed() => return,
        }
        if !settings.debounce.settle(&mut changes).await {
            return;
        }
    }
}
