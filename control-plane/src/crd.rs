//! weft's own Kubernetes API: `weft.io/v1alpha1` custom resources.
//!
//! The Rust types are the source of truth: `weft crds` prints the CustomResourceDefinitions generated
//! from them, and both registries deserialize user objects into them.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Points a policy at a Service in the policy's namespace (Gateway API's `LocalPolicyTargetReference`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    /// API group; "" or "core" for a Service.
    #[serde(default)]
    pub group: String,
    /// Kind; only `Service` is understood.
    pub kind: String,
    /// Name of the target.
    pub name: String,
}

/// Selects workloads (pods) by labels.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSelector {
    /// Every pair must be among the pod's labels.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

/// Upstream behaviour for Services: balancing, circuit breaking, outlier detection, defaults.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(derive = "PartialEq")]
#[kube(
    group = "weft.io",
    version = "v1alpha1",
    kind = "TrafficPolicy",
    namespaced,
    shortname = "tp"
)]
#[serde(rename_all = "camelCase")]
pub struct TrafficPolicySpec {
    /// The Services (in this namespace) this policy applies to.
    pub target_refs: Vec<TargetRef>,
    /// `LeastRequest` (default), `RoundRobin` or `Random`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerKind>,
    /// Circuit-breaking limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPool>,
    /// Passive health checking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetectionSpec>,
    /// Retry budget: retries as a share of requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
    /// Default request timeout (Gateway API duration, e.g. `10s`) for routes that set none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Default retries for routes that set none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
}

/// Balancing algorithms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum LoadBalancerKind {
    /// Power of two choices, least outstanding requests, latency-weighted.
    LeastRequest,
    /// Round robin.
    RoundRobin,
    /// Uniform random.
    Random,
}

/// Circuit-breaking limits per Service.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionPool {
    /// Max TCP connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Max requests queued waiting for a connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<u32>,
    /// Max requests in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u32>,
    /// Max retries in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// How long an upstream connection may stay unused before the proxy closes it (Gateway API
    /// duration, e.g. `30s`; default 60 s). Keep it under the upstream's own keep-alive timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    /// Whether HTTP/1 requests to endpoints with a sidecar share one HTTP/2 mTLS connection
    /// per endpoint (default `true`: no handshake per concurrent request, one connection per
    /// peer). `false` keeps HTTP/1.1 over pooled keep-alive mTLS connections, which costs the
    /// sidecars less CPU per request (Istio's `h2UpgradePolicy: DO_NOT_UPGRADE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h2_upgrade: Option<bool>,
}

/// Outlier detection settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutlierDetectionSpec {
    /// Consecutive 5xx before ejection (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_5xx_errors: Option<u32>,
    /// Evaluation interval (default `10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Base ejection time (default `30s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<String>,
    /// Max share of endpoints ejected, percent (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<u32>,
}

/// Linkerd-style retry budget.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryBudget {
    /// Retries allowed per original request, e.g. 0.2.
    pub retry_ratio: f64,
    /// Retries always allowed per second.
    #[serde(default)]
    pub min_retries_per_second: u32,
}

/// Retry settings, shaped like HTTPRoute's `retry`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetrySpec {
    /// Attempts after the first.
    pub attempts: u32,
    /// Status codes to retry (default 502, 503, 504).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codes: Vec<u32>,
    /// Base backoff (Gateway API duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<String>,
}

/// Who may call the selected workloads. A request a DENY policy's rule matches is refused; a
/// workload no ALLOW policy selects allows the rest; once one selects it, what no ALLOW rule
/// matches is refused (Istio's AuthorizationPolicy semantics).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(derive = "PartialEq")]
#[kube(
    group = "weft.io",
    version = "v1alpha1",
    kind = "AuthorizationPolicy",
    namespaced,
    shortname = "authz"
)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationPolicySpec {
    /// Workloads in this namespace the policy protects; empty selects all.
    #[serde(default)]
    pub selector: WorkloadSelector,
    /// `ALLOW` (the default) or `DENY` what a rule matches.
    #[serde(default)]
    pub action: AuthorizationAction,
    /// The rules; a request matched by any is allowed (or, DENY, refused). An ALLOW policy
    /// with no rules allows nothing.
    #[serde(default)]
    pub rules: Vec<AuthorizationRule>,
}

/// What an AuthorizationPolicy does with what its rules match.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum AuthorizationAction {
    /// Allow it; refuse what no ALLOW rule matches.
    #[default]
    Allow,
    /// Refuse it.
    Deny,
}

/// One rule: every part that is set must match, and within a part any entry. Values take `*`
/// as a prefix or suffix wildcard, or alone for any.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationRule {
    /// Sources by SPIFFE identity (`spiffe://td/ns/<ns>/sa/<sa>`, `td/ns/<ns>/sa/<sa>` as
    /// Istio writes them, or `ns/<ns>/sa/<sa>` in this trust domain); `*`: any mesh workload.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    /// Sources by namespace (of their mesh identity: plaintext callers have none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Destination ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// HTTP methods. A rule with methods or paths matches no TCP connection: as an ALLOW
    /// rule it allows none, as a DENY rule it refuses every connection its other parts match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// HTTP paths (without the query); `/api/*` is a prefix, `*.css` a suffix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
}

/// Whether the selected workloads accept plaintext.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(derive = "PartialEq")]
#[kube(
    group = "weft.io",
    version = "v1alpha1",
    kind = "MeshTLS",
    plural = "meshtlses",
    namespaced
)]
#[serde(rename_all = "camelCase")]
pub struct MeshTLSSpec {
    /// Workloads in this namespace; empty selects the whole namespace.
    #[serde(default)]
    pub selector: WorkloadSelector,
    /// `STRICT` or `PERMISSIVE`.
    pub mode: TlsMode,
}

/// Inbound TLS modes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum TlsMode {
    /// mTLS only.
    Strict,
    /// mTLS or plaintext.
    #[default]
    Permissive,
}

/// Config scope and explicit listeners for the selected workloads.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(derive = "PartialEq")]
#[kube(group = "weft.io", version = "v1alpha1", kind = "Sidecar", namespaced)]
#[serde(rename_all = "camelCase")]
pub struct SidecarSpec {
    /// Workloads in this namespace; empty selects the whole namespace.
    #[serde(default)]
    pub workload_selector: WorkloadSelector,
    /// Services the workloads may reach, as `namespace/name` (`*` wildcards, `.` for this namespace).
    /// Their proxies are sent config for these only. Empty means all.
    #[serde(default)]
    pub egress: Vec<String>,
    /// Addresses the proxy binds itself, for hosts without iptables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbound_listeners: Vec<OutboundListenerSpec>,
}

/// `bind -> service:port`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutboundListenerSpec {
    /// Local `ip:port` the proxy listens on.
    pub bind: String,
    /// Target Service: `name` (this namespace) or `name.namespace`.
    pub service: String,
    /// Target Service port.
    pub port: u16,
}

/// The CustomResourceDefinitions of every weft kind, for `weft crds`.
pub fn definitions()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    use kube::CustomResourceExt;
    vec![
        TrafficPolicy::crd(),
        AuthorizationPolicy::crd(),
        MeshTLS::crd(),
        Sidecar::crd(),
    ]
}
