//! Objects -> Mesh: interprets Kubernetes objects the way Kubernetes and GAMMA define them.
//!
//! Pure and total: a bad reference drops only what it touches, with a [`Warning`] naming it.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use gateway_api::experimental::httproutes::{
    HttpRoute, HttpRouteParentRefs, HttpRouteRules, HttpRouteRulesBackendRefsFiltersType,
    HttpRouteRulesFiltersRequestMirror, HttpRouteRulesFiltersRequestRedirect,
    HttpRouteRulesFiltersRequestRedirectPathType, HttpRouteRulesFiltersRequestRedirectScheme,
    HttpRouteRulesFiltersType, HttpRouteRulesFiltersUrlRewritePathType, HttpRouteRulesMatches,
    HttpRouteRulesMatchesHeadersType, HttpRouteRulesMatchesPathType,
    HttpRouteRulesMatchesQueryParamsType,
};
use gateway_api::experimental::tcproutes::{TcpRoute as TcpRouteObject, TcpRouteParentRefs};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::{Objects, Warning};
use crate::crd::LoadBalancerKind;
use crate::model::{
    Backend, ConnectionLimits, Endpoint, HeaderEdits, HeaderMatch, Health, HostPattern, Key,
    LoadBalancer, Mesh, Mirror, OutboundListener, OutlierDetection, PathMatch, PathModifier,
    Protocol, QueryMatch, Redirect, RouteMatch, RouteRetry, RouteRule, Selector, Service,
    ServicePort, SidecarScope, StringMatch, TcpRoute, TlsMode, TrafficPolicy, UrlRewrite, Workload,
    WorkloadPort,
};

struct Builder {
    warnings: Vec<Warning>,
}

impl Builder {
    fn warn(&mut self, kind: &str, key: &Key, message: impl Into<String>) {
        self.warnings.push(Warning {
            kind: kind.to_string(),
            object: key.to_string(),
            message: message.into(),
        });
    }
}

/// Builds the Mesh the objects describe, with a warning for everything that had to be dropped.
pub fn build(objects: &Objects, trust_domain: &str) -> (Mesh, Vec<Warning>) {
    let mut b = Builder {
        warnings: Vec::new(),
    };
    let mut workloads = workloads(objects, trust_domain);
    set_tls_modes(objects, &mut workloads, &mut b);
    set_authorization(objects, &mut workloads, trust_domain, &mut b);
    let mut services = services(objects, &workloads, &mut b);
    attach_policies(objects, &mut services, &mut b);
    attach_routes(objects, &mut services, &mut b);
    attach_tcp_routes(objects, &mut services, &mut b);
    set_workload_protocols(&services, &mut workloads);
    let sidecars = sidecars(objects, &services, &mut b);
    let mut consumers: BTreeMap<String, Vec<Key>> = BTreeMap::new();
    for svc in services.values() {
        let namespaces: std::collections::BTreeSet<&String> = svc
            .ports
            .iter()
            .flat_map(ServicePort::consumer_namespaces)
            .collect();
        for ns in namespaces {
            consumers
                .entry(ns.clone())
                .or_default()
                .push(svc.key.clone());
        }
    }
    let mesh = Mesh {
        trust_domain: trust_domain.to_string(),
        services: services
            .into_iter()
            .map(|(k, s)| (k, Arc::new(s)))
            .collect(),
        workloads: workloads
            .into_iter()
            .map(|(k, w)| (k, Arc::new(w)))
            .collect(),
        sidecars: sidecars.into_iter().map(Arc::new).collect(),
        consumers,
    };
    (mesh, b.warnings)
}

/// `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
pub fn spiffe_id(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
}
fn duration(
    b: &mut Builder,
    kind: &str,
    key: &Key,
    field: &str,
    value: Option<&str>,
) -> Option<Duration> {
    let value = value?;
    match value.parse::<gateway_api::Duration>() {
        Ok(d) => Some(Duration::from_nanos(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
        )),
        Err(e) => {
            b.warn(
                kind,
                key,
                format!("{field}: invalid duration {value:?}: {e}"),
            );
            None
        }
    }
}
fn retry(
    b: &mut Builder,
    kind: &str,
    key: &Key,
    attempts: i64,
    codes: &[i64],
    backoff: Option<&str>,
) -> RouteRetry {
    RouteRetry {
        attempts: u32::try_from(attempts.max(0)).unwrap_or(u32::MAX),
        codes: codes
            .iter()
            .filter_map(|c| u32::try_from(*c).ok())
            .collect(),
        backoff: duration(b, kind, key, "retry.backoff", backoff),
    }
}
/// (name, value) pairs of a header modifier; names are case-insensitive, so kept in lower case.
fn pairs<'a>(it: impl Iterator<Item = (&'a String, &'a String)>) -> Vec<(String, String)> {
    it.map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
        .collect()
}

#[macro_use]
mod parents;
mod authorization;
mod http_route;
mod policies;
mod services;
mod sidecars;
mod tcp_route;
mod workloads;

use self::{
    authorization::*, http_route::*, parents::*, policies::*, services::*, sidecars::*,
    tcp_route::*, workloads::*,
};

mod grpc;
#[cfg(test)]
mod tests;
