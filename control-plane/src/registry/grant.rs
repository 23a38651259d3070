//! Gateway API ReferenceGrants: which routes may send to Services of another namespace.
//!
//! A route's backendRef (or mirror) into another namespace is valid only when a ReferenceGrant in
//! that namespace lets routes of its kind and namespace in: without one, a namespace could pull
//! another's traffic to itself, or reach Services it was never meant to. Gateway API gives a
//! reference that is not permitted the same answer as one to a missing Service.

use gateway_api::experimental::referencegrants::{ReferenceGrantFrom, ReferenceGrantTo};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Objects;
use crate::model::Key;

/// The group routes are of, as a grant's `from` names it.
const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// `gateway.networking.k8s.io/v1beta1` ReferenceGrant: the version every Gateway API release
/// serves (`v1` is newer and not yet on most clusters), so the one the Kubernetes registry
/// watches. Files may say `v1` too: both have this shape.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1beta1",
    kind = "ReferenceGrant",
    namespaced
)]
pub struct ReferenceGrantSpec {
    /// The namespaces and kinds whose references are let in; any one suffices.
    pub from: Vec<ReferenceGrantFrom>,
    /// The kinds (and, optionally, names) in this namespace they may refer to.
    pub to: Vec<ReferenceGrantTo>,
}

/// The grants of every namespace, checked when a route's reference is resolved.
pub struct Grants<'a> {
    objects: &'a Objects,
}

impl<'a> Grants<'a> {
    /// The grants among `objects`.
    pub fn new(objects: &'a Objects) -> Self {
        Self { objects }
    }

    /// Whether a route of `kind` in namespace `from` may refer to Service `to`: always within its
    /// own namespace, else when a grant in `to`'s namespace lets it in.
    pub fn permits(&self, kind: &str, from: &str, to: &Key) -> bool {
        from == to.namespace
            || self
                .objects
                .reference_grants
                .iter()
                .filter(|(key, _)| key.namespace == to.namespace)
                .any(|(_, grant)| {
                    let spec = &grant.spec;
                    spec.from
                        .iter()
                        .any(|f| f.group == GATEWAY_GROUP && f.kind == kind && f.namespace == from)
                        && spec.to.iter().any(|t| {
                            matches!(t.group.as_str(), "" | "core")
                                && t.kind == "Service"
                                && t.name.as_ref().is_none_or(|n| *n == to.name)
                        })
                })
    }
}
