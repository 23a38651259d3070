//! The raw Kubernetes objects a registry holds, before they are interpreted as a Mesh.

use std::collections::BTreeMap;

use gateway_api::experimental::grpcroutes::GrpcRoute;
use gateway_api::experimental::httproutes::HttpRoute;
use gateway_api::experimental::tcproutes::TcpRoute;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Resource;
use serde::de::DeserializeOwned;

use crate::crd::{AuthorizationPolicy, MeshTLS, Sidecar, TrafficPolicy};
use crate::model::Key;

/// Every object weft reads, by kind and namespace/name. Both registries fill one of these.
#[derive(Clone, Debug, Default)]
pub struct Objects {
    /// Namespaces (key namespace is "").
    pub namespaces: BTreeMap<Key, Namespace>,
    /// core/v1 Services.
    pub services: BTreeMap<Key, Service>,
    /// discovery.k8s.io/v1 EndpointSlices.
    pub endpoint_slices: BTreeMap<Key, EndpointSlice>,
    /// core/v1 Pods.
    pub pods: BTreeMap<Key, Pod>,
    /// gateway.networking.k8s.io/v1 HTTPRoutes.
    pub http_routes: BTreeMap<Key, HttpRoute>,
    /// gateway.networking.k8s.io/v1 GRPCRoutes.
    pub grpc_routes: BTreeMap<Key, GrpcRoute>,
    /// gateway.networking.k8s.io/v1alpha2 TCPRoutes.
    pub tcp_routes: BTreeMap<Key, TcpRoute>,
    /// weft.io TrafficPolicies.
    pub traffic_policies: BTreeMap<Key, TrafficPolicy>,
    /// weft.io AuthorizationPolicies.
    pub authorization_policies: BTreeMap<Key, AuthorizationPolicy>,
    /// weft.io MeshTLS objects.
    pub mesh_tls: BTreeMap<Key, MeshTLS>,
    /// weft.io Sidecars.
    pub sidecars: BTreeMap<Key, Sidecar>,
}

/// One object of a kind weft reads.
#[derive(Clone, Debug)]
pub enum Object {
    /// core/v1 Namespace.
    Namespace(Box<Namespace>),
    /// core/v1 Service.
    Service(Box<Service>),
    /// discovery.k8s.io/v1 EndpointSlice.
    EndpointSlice(Box<EndpointSlice>),
    /// core/v1 Pod.
    Pod(Box<Pod>),
    /// gateway.networking.k8s.io/v1 HTTPRoute.
    HttpRoute(Box<HttpRoute>),
    /// gateway.networking.k8s.io/v1 GRPCRoute.
    GrpcRoute(Box<GrpcRoute>),
    /// gateway.networking.k8s.io/v1alpha2 TCPRoute.
    TcpRoute(Box<TcpRoute>),
    /// weft.io/v1alpha1 TrafficPolicy.
    TrafficPolicy(Box<TrafficPolicy>),
    /// weft.io/v1alpha1 AuthorizationPolicy.
    AuthorizationPolicy(Box<AuthorizationPolicy>),
    /// weft.io/v1alpha1 MeshTLS.
    MeshTls(Box<MeshTLS>),
    /// weft.io/v1alpha1 Sidecar.
    Sidecar(Box<Sidecar>),
}

/// Why a document could not become an [`Object`].
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// `apiVersion`/`kind` name nothing weft reads; the document is skipped.
    #[error("unknown kind {kind} in {api_version}: skipped")]
    UnknownKind {
        /// The document's apiVersion.
        api_version: String,
        /// The document's kind.
        kind: String,
    },
    /// The document is of a known kind but does not fit its schema.
    #[error("{reason}")]
    Invalid {
        /// 1-based line within the document, when known.
        line: Option<usize>,
        /// What is wrong.
        reason: String,
    },
}

/// `value` as a `K`. The value was parsed from `doc`; only when it does not fit `K` is `doc`
/// parsed again, to say on which line (a value has no locations, and parsing twice every time
/// doubled the cost of loading a large registry).
/// Fields `K` has no place for are added to `ignored` (by path, `spec.ports.0.targetport`):
/// kubectl refuses them, so a misspelling must not pass without a word here.
fn typed<K: DeserializeOwned>(
    doc: &str,
    value: serde_yaml::Value,
    ignored: &mut Vec<String>,
) -> Result<Box<K>, ParseError> {
    let unknown = |path: serde_ignored::Path<'_>| {
        // serde_ignored marks each optional value it passes through with a `?` segment.
        let path = path.to_string();
        let path = path
            .split('.')
            .filter(|s| *s != "?")
            .collect::<Vec<_>>()
            .join(".");
        // kube's custom resources read their type from `apiVersion` and `kind` outside serde;
        // `status` is the API server's to write, not the user's.
        if !matches!(path.as_str(), "apiVersion" | "kind" | "status") {
            ignored.push(path);
        }
    };
    serde_ignored::deserialize(value, unknown)
        .map(Box::new)
        .map_err(|e| {
            let located = serde_yaml::from_str::<K>(doc).err();
            ParseError::Invalid {
                line: located
                    .as_ref()
                    .and_then(|l| l.location())
                    .map(|l| l.line()),
                reason: located.map_or_else(|| e.to_string(), |l| l.to_string()),
            }
        })
}

impl Object {
    /// Turns one YAML document, already parsed into `value`, into the object its `apiVersion`
    /// and `kind` name; the paths of fields that kind does not have go to `ignored`.
    pub fn from_document(
        api_version: &str,
        kind: &str,
        doc: &str,
        value: serde_yaml::Value,
        ignored: &mut Vec<String>,
    ) -> Result<Self, ParseError> {
        Ok(match (api_version, kind) {
            ("v1", "Namespace") => Self::Namespace(typed(doc, value, ignored)?),
            ("v1", "Service") => Self::Service(typed(doc, value, ignored)?),
            ("v1", "Pod") => Self::Pod(typed(doc, value, ignored)?),
            ("discovery.k8s.io/v1", "EndpointSlice") => {
                Self::EndpointSlice(typed(doc, value, ignored)?)
            }
            ("gateway.networking.k8s.io/v1" | "gateway.networking.k8s.io/v1beta1", "HTTPRoute") => {
                Self::HttpRoute(typed(doc, value, ignored)?)
            }
            ("gateway.networking.k8s.io/v1", "GRPCRoute") => {
                Self::GrpcRoute(typed(doc, value, ignored)?)
            }
            ("gateway.networking.k8s.io/v1alpha2", "TCPRoute") => {
                Self::TcpRoute(typed(doc, value, ignored)?)
            }
            ("weft.io/v1alpha1", "TrafficPolicy") => {
                Self::TrafficPolicy(typed(doc, value, ignored)?)
            }
            ("weft.io/v1alpha1", "AuthorizationPolicy") => {
                Self::AuthorizationPolicy(typed(doc, value, ignored)?)
            }
            ("weft.io/v1alpha1", "MeshTLS") => Self::MeshTls(typed(doc, value, ignored)?),
            ("weft.io/v1alpha1", "Sidecar") => Self::Sidecar(typed(doc, value, ignored)?),
            _ => {
                return Err(ParseError::UnknownKind {
                    api_version: api_version.to_string(),
                    kind: kind.to_string(),
                });
            }
        })
    }
}

/// Two documents named the same object.
#[derive(Debug, thiserror::Error)]
#[error("duplicate {kind} {key}: the first one is kept")]
pub struct Duplicate {
    /// Kind of the object.
    pub kind: String,
    /// Its namespace/name.
    pub key: Key,
}

pub(crate) fn key_of<K: Resource>(obj: &K, default_namespace: &str) -> Key {
    let meta = obj.meta();
    Key::new(
        meta.namespace.as_deref().unwrap_or(default_namespace),
        meta.name.as_deref().unwrap_or_default(),
    )
}

fn insert<K: Resource<DynamicType = ()>>(
    map: &mut BTreeMap<Key, K>,
    mut obj: K,
    default_namespace: &str,
) -> Result<(), Duplicate> {
    let key = key_of(&obj, default_namespace);
    if map.contains_key(&key) {
        return Err(Duplicate {
            kind: K::kind(&()).into_owned(),
            key,
        });
    }
    obj.meta_mut().namespace = Some(key.namespace.clone()).filter(|n| !n.is_empty());
    map.insert(key, obj);
    Ok(())
}

impl Objects {
    /// Adds an object; a namespaced object without a namespace lands in `default`. A second object
    /// with the same kind and name is refused.
    pub fn insert(&mut self, obj: Object) -> Result<(), Duplicate> {
        match obj {
            Object::Namespace(o) => insert(&mut self.namespaces, *o, ""),
            Object::Service(o) => insert(&mut self.services, *o, "default"),
            Object::EndpointSlice(o) => insert(&mut self.endpoint_slices, *o, "default"),
            Object::Pod(o) => insert(&mut self.pods, *o, "default"),
            Object::HttpRoute(o) => insert(&mut self.http_routes, *o, "default"),
            Object::GrpcRoute(o) => insert(&mut self.grpc_routes, *o, "default"),
            Object::TcpRoute(o) => insert(&mut self.tcp_routes, *o, "default"),
            Object::TrafficPolicy(o) => insert(&mut self.traffic_policies, *o, "default"),
            Object::AuthorizationPolicy(o) => {
                insert(&mut self.authorization_policies, *o, "default")
            }
            Object::MeshTls(o) => insert(&mut self.mesh_tls, *o, "default"),
            Object::Sidecar(o) => insert(&mut self.sidecars, *o, "default"),
        }
    }

    /// Object counts by kind, for metrics.
    pub fn counts(&self) -> [(&'static str, usize); 11] {
        [
            ("Namespace", self.namespaces.len()),
            ("Service", self.services.len()),
            ("EndpointSlice", self.endpoint_slices.len()),
            ("Pod", self.pods.len()),
            ("HTTPRoute", self.http_routes.len()),
            ("GRPCRoute", self.grpc_routes.len()),
            ("TCPRoute", self.tcp_routes.len()),
            ("TrafficPolicy", self.traffic_policies.len()),
            ("AuthorizationPolicy", self.authorization_policies.len()),
            ("MeshTLS", self.mesh_tls.len()),
            ("Sidecar", self.sidecars.len()),
        ]
    }
}
