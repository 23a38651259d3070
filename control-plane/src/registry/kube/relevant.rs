//! What weft reads of each kind, kept at the door: the rest of an object is dropped as it is
//! received.
//!
//! On a real cluster most events change nothing weft reads: a Pod's status heartbeat, an
//! annotation another controller writes, a route's status, the resourceVersion every write
//! bumps. With those fields gone, such an event leaves the stored object equal to the one before,
//! and an equal object triggers no rebuild and no push. Holding less also keeps a large
//! cluster's Pods from costing the control plane their whole specs in memory.

use gateway_api::experimental::grpcroutes::GrpcRoute;
use gateway_api::experimental::httproutes::HttpRoute;
use gateway_api::experimental::tcproutes::TcpRoute;
use k8s_openapi::api::core::v1::{
    Container, Namespace, Pod, PodCondition, PodSpec, PodStatus, Service,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::crd::{AuthorizationPolicy, MeshTLS, Sidecar, TrafficPolicy};

/// An object reduced to what the registry's build reads of it.
pub trait Relevant {
    /// The object without the fields weft never reads.
    fn relevant(self) -> Self;
}

/// The metadata weft reads: identity, labels (selectors), age (oldest route wins), deletion
/// (a terminating Pod drains).
fn meta(m: ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        labels: m.labels,
        creation_timestamp: m.creation_timestamp,
        deletion_timestamp: m.deletion_timestamp,
        ..ObjectMeta::default()
    }
}

/// Kinds whose `status` weft never reads (it is written by others, and changes often).
macro_rules! without_status {
    ($($t:ty),*) => {$(
        impl Relevant for $t {
            fn relevant(mut self) -> Self {
                self.metadata = meta(self.metadata);
                self.status = None;
                self
            }
        }
    )*};
}

without_status!(Namespace, Service, HttpRoute, GrpcRoute, TcpRoute);

/// Kinds of which weft reads all but the metadata it does not use.
macro_rules! whole_spec {
    ($($t:ty),*) => {$(
        impl Relevant for $t {
            fn relevant(mut self) -> Self {
                self.metadata = meta(self.metadata);
                self
            }
        }
    )*};
}

whole_spec!(
    EndpointSlice,
    TrafficPolicy,
    AuthorizationPolicy,
    MeshTLS,
    Sidecar
);

impl Relevant for Pod {
    /// Its service account and container ports (identity, named target ports), and of its
    /// status the phase, addresses and readiness.
    fn relevant(self) -> Self {
        let spec = self.spec.map(|s| PodSpec {
            service_account_name: s.service_account_name,
            containers: s
                .containers
                .into_iter()
                .map(|c| Container {
                    name: c.name,
                    ports: c.ports,
                    ..Container::default()
                })
                .collect(),
            ..PodSpec::default()
        });
        let status = self.status.map(|s| PodStatus {
            phase: s.phase,
            pod_ip: s.pod_ip,
            pod_ips: s.pod_ips,
            conditions: s.conditions.map(|c| {
                c.into_iter()
                    .filter(|c| c.type_ == "Ready")
                    .map(|c| PodCondition {
                        type_: c.type_,
                        status: c.status,
                        ..PodCondition::default()
                    })
                    .collect()
            }),
            ..PodStatus::default()
        });
        Pod {
            metadata: meta(self.metadata),
            spec,
            status,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::build;
    use crate::registry::objects::Objects;
    use serde_json::json;

    fn pod(extra: serde_json::Value) -> Pod {
        let mut v = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-0", "namespace": "shop", "labels": {"app": "web"},
                "resourceVersion": "1", "annotations": {"note": "a"}},
            "spec": {"serviceAccountName": "web", "containers": [{"name": "app", "image": "web:1",
                "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}],
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "image": "web:1",
                    "imageID": "x", "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}});
        json_patch(&mut v, extra);
        serde_json::from_value(v).unwrap()
    }

    fn json_patch(v: &mut serde_json::Value, patch: serde_json::Value) {
        match (v, patch) {
            (serde_json::Value::Object(v), serde_json::Value::Object(p)) => {
                for (k, p) in p {
                    json_patch(v.entry(k).or_insert(serde_json::Value::Null), p);
                }
            }
            (v, p) => *v = p,
        }
    }

    #[test]
    fn what_weft_does_not_read_leaves_a_pod_equal() {
        let base = pod(json!({})).relevant();
        let same = [
            json!({"metadata": {"resourceVersion": "2", "annotations": {"note": "b"}}}),
            json!({"status": {"containerStatuses": [{"name": "app", "ready": true, "restartCount": 3,
                "image": "web:1", "imageID": "y"}]}}),
            json!({"status": {"conditions": [{"type": "Ready", "status": "True",
                "lastTransitionTime": "2026-02-01T00:00:00Z"}, {"type": "Initialized", "status": "True"}]}}),
            json!({"spec": {"containers": [{"name": "app", "image": "web:2",
                "ports": [{"name": "http", "containerPort": 8080}]}]}}),
        ];
        for patch in same {
            assert_eq!(pod(patch.clone()).relevant(), base, "{patch}");
        }
        let different = [
            json!({"metadata": {"labels": {"app": "web", "version": "v2"}}}),
            json!({"status": {"podIP": "10.0.0.6", "podIPs": [{"ip": "10.0.0.6"}]}}),
            json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
            json!({"status": {"phase": "Succeeded"}}),
            json!({"spec": {"serviceAccountName": "other"}}),
            json!({"metadata": {"deletionTimestamp": "2026-03-01T00:00:00Z"}}),
        ];
        for patch in different {
            assert_ne!(pod(patch.clone()).relevant(), base, "{patch}");
        }
    }

    /// The reduced Pod and Service build the same mesh as the whole ones (the Service selects
    /// the Pod, at a named target port): nothing the build reads is dropped.
    #[test]
    fn reduced_objects_build_the_same_mesh() {
        let whole = pod(json!({}));
        let svc: Service = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "shop", "annotations": {"a": "b"}},
            "spec": {"clusterIP": "10.96.0.1", "selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
            "status": {"loadBalancer": {}}}))
        .unwrap();
        let objects = |pod: Pod, svc: Service| {
            let mut o = Objects::default();
            o.pods.insert(crate::model::Key::new("shop", "web-0"), pod);
            o.services
                .insert(crate::model::Key::new("shop", "web"), svc);
            o
        };
        let (mesh, _) = build(&objects(whole.clone(), svc.clone()), "cluster.local");
        assert_eq!(
            mesh.services.values().next().unwrap().ports[0]
                .endpoints
                .len(),
            1
        );
        let (reduced, _) = build(&objects(whole.relevant(), svc.relevant()), "cluster.local");
        assert_eq!(mesh, reduced);
    }
}
