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
    ServicePort, SidecarScope, StringMatch, TcpRoute, TrafficPolicy, UrlRewrite, Workload,
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
    let mut services = services(objects, &workloads, &mut b);
    attach_policies(objects, &mut services, &mut b);
    attach_routes(objects, &mut services, &mut b);
    attach_tcp_routes(objects, &mut services, &mut b);
    set_workload_protocols(&services, &mut workloads);
    let sidecars = sidecars(objects, &services, &mut b);
    // Read and checked, but nothing enforces them yet (the identity and authorization work):
    // said once per object, so nobody takes a STRICT mode or a deny rule for applied.
    for key in objects.authorization_policies.keys() {
        b.warn(
            "AuthorizationPolicy",
            key,
            "not enforced yet: weft does not apply authorization policies",
        );
    }
    for key in objects.mesh_tls.keys() {
        b.warn(
            "MeshTLS",
            key,
            "not enforced yet: weft does not set up mutual TLS between proxies",
        );
    }
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

fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    let mut ips: Vec<IpAddr> = status
        .pod_ips
        .iter()
        .flatten()
        .filter_map(|p| p.ip.parse().ok())
        .collect();
    if let Some(ip) = status.pod_ip.as_deref().and_then(|s| s.parse().ok())
        && !ips.contains(&ip)
    {
        ips.insert(0, ip);
    }
    ips
}

fn workloads(objects: &Objects, td: &str) -> BTreeMap<Key, Workload> {
    let mut out = BTreeMap::new();
    for (key, pod) in &objects.pods {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            continue;
        }
        let spec = pod.spec.as_ref();
        let sa = spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".to_string());
        // A Pod without an address yet (pending, being scheduled) is normal life: it is a
        // workload once it has one, and nothing to warn about.
        let ips = pod_ips(pod);
        let ports = spec
            .into_iter()
            .flat_map(|s| &s.containers)
            .flat_map(|c| c.ports.iter().flatten())
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .filter_map(|p| {
                Some(WorkloadPort {
                    port: u16::try_from(p.container_port).ok()?,
                    protocol: Protocol::from_port(None, p.name.as_deref().unwrap_or_default()),
                })
            })
            .collect();
        out.insert(
            key.clone(),
            Workload {
                key: key.clone(),
                ips,
                labels: pod.metadata.labels.clone().unwrap_or_default(),
                identity: spiffe_id(td, &key.namespace, &sa),
                service_account: sa,
                ports,
            },
        );
    }
    out
}

fn services(
    objects: &Objects,
    workloads: &BTreeMap<Key, Workload>,
    b: &mut Builder,
) -> BTreeMap<Key, Service> {
    let by_ip: HashMap<IpAddr, &Workload> = workloads
        .values()
        .flat_map(|w| w.ips.iter().map(move |ip| (*ip, w)))
        .collect();

    // EndpointSlices grouped by the Service they belong to.
    let mut slices: BTreeMap<Key, Vec<&EndpointSlice>> = BTreeMap::new();
    for (key, slice) in &objects.endpoint_slices {
        let owner = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"));
        match owner {
            Some(svc)
                if objects
                    .services
                    .contains_key(&Key::new(&key.namespace, svc)) =>
            {
                slices
                    .entry(Key::new(&key.namespace, svc))
                    .or_default()
                    .push(slice)
            }
            Some(svc) => b.warn(
                "EndpointSlice",
                key,
                format!(
                    "its Service {}/{svc} does not exist: ignored",
                    key.namespace
                ),
            ),
            None => b.warn(
                "EndpointSlice",
                key,
                "no kubernetes.io/service-name label: ignored",
            ),
        }
    }

    let mut out = BTreeMap::new();
    for (key, svc) in &objects.services {
        let Some(spec) = &svc.spec else {
            b.warn("Service", key, "no spec: ignored");
            continue;
        };
        if spec.type_.as_deref() == Some("ExternalName") {
            b.warn("Service", key, "ExternalName Services are not meshed");
            continue;
        }
        let mut cluster_ips: Vec<IpAddr> = spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
            .filter_map(|ip| ip.parse().ok())
            .collect();
        // `clusterIP` repeats the first of `clusterIPs`: keep each address once, in order.
        let mut seen = std::collections::HashSet::new();
        cluster_ips.retain(|ip| seen.insert(*ip));
        let svc_slices = slices.get(key).map(Vec::as_slice).unwrap_or_default();
        let mut ports = Vec::new();
        for p in spec.ports.iter().flatten() {
            if p.protocol.as_deref().unwrap_or("TCP") != "TCP" {
                continue;
            }
            let Ok(port) = u16::try_from(p.port) else {
                b.warn("Service", key, format!("port {} out of range", p.port));
                continue;
            };
            let name = p.name.clone().unwrap_or_default();
            let endpoints = match (&spec.selector, svc_slices) {
                // No EndpointSlice controller wrote any (a file registry on plain hosts): the
                // endpoints are the ready Pods the selector picks, as that controller would make.
                (Some(selector), []) if !selector.is_empty() => {
                    selected(objects, key, spec, p, workloads)
                }
                _ => endpoints(svc_slices, &name, &by_ip, workloads),
            };
            ports.push(ServicePort {
                protocol: Protocol::from_port(p.app_protocol.as_deref(), &name),
                endpoints,
                name,
                port,
                routes: Vec::new(),
                consumer_routes: BTreeMap::new(),
                tcp_route: None,
                consumer_tcp_routes: BTreeMap::new(),
            });
        }
        out.insert(
            key.clone(),
            Service {
                key: key.clone(),
                cluster_ips,
                headless: spec.cluster_ip.as_deref() == Some("None"),
                ports,
                policy: None,
            },
        );
    }
    out
}

/// The endpoints of Service `key`'s port `port` as the EndpointSlice controller makes them: the
/// Pods of its namespace whose labels include the selector and that have an address of one of
/// the Service's IP families, at `targetPort` (a number or a container port's name; the port
/// itself by default). Ready Pods are healthy (a Pod without status conditions, as a host's
/// file entry is written, counts as ready; `publishNotReadyAddresses` makes every Pod ready); a
/// terminating one drains, used only while nothing is ready, as `endpoints` treats slices.
fn selected(
    objects: &Objects,
    key: &Key,
    spec: &k8s_openapi::api::core::v1::ServiceSpec,
    port: &k8s_openapi::api::core::v1::ServicePort,
    workloads: &BTreeMap<Key, Workload>,
) -> Vec<Endpoint> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let selector = spec.selector.clone().unwrap_or_default();
    let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
    // The Service's families, from `ipFamilies` or else its cluster IPs; any, for neither.
    let families: Vec<bool> = match &spec.ip_families {
        Some(f) if !f.is_empty() => f.iter().map(|f| f == "IPv6").collect(),
        _ => spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
            .filter_map(|ip| ip.parse::<IpAddr>().ok())
            .map(|ip| ip.is_ipv6())
            .collect(),
    };
    let mut out = Vec::new();
    for (pod_key, pod) in &objects.pods {
        let Some(w) = workloads.get(pod_key) else {
            continue;
        };
        let picked = pod_key.namespace == key.namespace
            && selector.iter().all(|(k, v)| w.labels.get(k) == Some(v));
        let ready = publish_not_ready
            || pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                .is_none_or(|c| c.status == "True");
        if !picked || !ready {
            continue;
        }
        let health = match pod.metadata.deletion_timestamp {
            Some(_) => Health::Draining,
            None => Health::Healthy,
        };
        let target = match &port.target_port {
            None => u16::try_from(port.port).ok(),
            Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
            Some(IntOrString::String(name)) => pod
                .spec
                .iter()
                .flat_map(|s| &s.containers)
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok()),
        };
        let Some(target) = target else {
            continue;
        };
        let ips = w
            .ips
            .iter()
            .filter(|ip| families.is_empty() || families.contains(&ip.is_ipv6()));
        for ip in ips {
            out.push(Endpoint {
                ip: *ip,
                port: target,
                health,
                identity: Some(w.identity.clone()),
                workload: Some(w.key.clone()),
                workload_name: Some(w.metrics_name()),
                zone: None,
            });
        }
    }
    if out.iter().any(|e| e.health == Health::Healthy) {
        out.retain(|e| e.health == Health::Healthy);
    }
    out.sort_by_key(|e| (e.ip, e.port));
    out
}

/// The endpoints of one Service port: ready ones, or serving-but-terminating ones while none is
/// ready (so a rolling update never leaves a window with nothing to send to).
fn endpoints(
    slices: &[&EndpointSlice],
    port_name: &str,
    by_ip: &HashMap<IpAddr, &Workload>,
    workloads: &BTreeMap<Key, Workload>,
) -> Vec<Endpoint> {
    let mut out: Vec<Endpoint> = Vec::new();
    for slice in slices {
        let Some(port) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().unwrap_or_default() == port_name)
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for ep in &slice.endpoints {
            let cond = ep.conditions.clone().unwrap_or_default();
            let ready = cond.ready.unwrap_or(true);
            let serving = cond.serving.unwrap_or(ready);
            let terminating = cond.terminating.unwrap_or(false);
            let health = if ready && !terminating {
                Health::Healthy
            } else if serving {
                Health::Draining
            } else {
                continue;
            };
            let pod_key = ep
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .and_then(|r| {
                    let ns = r.namespace.clone().or(slice.metadata.namespace.clone())?;
                    Some(Key::new(ns, r.name.clone()?))
                });
            for addr in &ep.addresses {
                let Ok(ip) = addr.parse::<IpAddr>() else {
                    continue;
                };
                if out.iter().any(|e| e.ip == ip && e.port == port) {
                    continue;
                }
                let workload = pod_key
                    .as_ref()
                    .and_then(|k| workloads.get(k))
                    .or_else(|| by_ip.get(&ip).copied());
                out.push(Endpoint {
                    ip,
                    port,
                    health,
                    identity: workload.map(|w| w.identity.clone()),
                    workload: workload.map(|w| w.key.clone()),
                    workload_name: workload.map(Workload::metrics_name),
                    zone: ep.zone.clone(),
                });
            }
        }
    }
    if out.iter().any(|e| e.health == Health::Healthy) {
        out.retain(|e| e.health == Health::Healthy);
    }
    out.sort_by_key(|e| (e.ip, e.port));
    out
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

fn is_service_ref(group: Option<&str>, kind: Option<&str>) -> bool {
    matches!(group, None | Some("" | "core")) && kind.unwrap_or("Service") == "Service"
}

/// A parentRef written `{kind: Service, name: ...}` without a group: the Gateway API CRD
/// fills in its default group, `gateway.networking.k8s.io`, which has no Service kind. Read as
/// the core Service the user meant, as file mode reads it before any defaulting, so a route
/// works the same from a file and from the API server; the route is told to say `group: ""`.
fn is_defaulted_service_ref(group: Option<&str>, kind: Option<&str>) -> bool {
    group == Some("gateway.networking.k8s.io") && kind == Some("Service")
}

/// `port` of Service `svc`, which a backendRef (or mirror) names, or why it does not resolve.
/// A route may send to any namespace's Services without a ReferenceGrant: in the mesh a route
/// only changes where traffic to a Service its clients can reach anyway goes (GEP-1294).
fn resolve(services: &BTreeMap<Key, Service>, svc: &Key, port: Option<u16>) -> Result<u16, String> {
    let port = port.ok_or_else(|| format!("backendRef {svc} has no port"))?;
    match services.get(svc) {
        Some(s) if s.port(port).is_some() => Ok(port),
        Some(_) => Err(format!("backendRef {svc} has no port {port}")),
        None => Err(format!("backendRef Service {svc} does not exist")),
    }
}

fn attach_policies(objects: &Objects, services: &mut BTreeMap<Key, Service>, b: &mut Builder) {
    for (key, tp) in &objects.traffic_policies {
        let spec = &tp.spec;
        let policy = TrafficPolicy {
            load_balancer: match spec.load_balancer {
                None | Some(LoadBalancerKind::LeastRequest) => LoadBalancer::LeastRequest,
                Some(LoadBalancerKind::RoundRobin) => LoadBalancer::RoundRobin,
                Some(LoadBalancerKind::Random) => LoadBalancer::Random,
            },
            limits: spec
                .connection_pool
                .as_ref()
                .map(|c| ConnectionLimits {
                    max_connections: c.max_connections,
                    max_pending_requests: c.max_pending_requests,
                    max_requests: c.max_requests,
                    max_retries: c.max_retries,
                    idle_timeout: duration(
                        b,
                        "TrafficPolicy",
                        key,
                        "connectionPool.idleTimeout",
                        c.idle_timeout.as_deref(),
                    ),
                })
                .unwrap_or_default(),
            outlier_detection: spec.outlier_detection.as_ref().map(|o| OutlierDetection {
                consecutive_5xx: o.consecutive_5xx_errors.unwrap_or(5),
                interval: duration(b, "TrafficPolicy", key, "interval", o.interval.as_deref())
                    .unwrap_or(Duration::from_secs(10)),
                base_ejection_time: duration(
                    b,
                    "TrafficPolicy",
                    key,
                    "baseEjectionTime",
                    o.base_ejection_time.as_deref(),
                )
                .unwrap_or(Duration::from_secs(30)),
                max_ejection_percent: o.max_ejection_percent.unwrap_or(10).min(100),
            }),
            timeout: duration(b, "TrafficPolicy", key, "timeout", spec.timeout.as_deref()),
            retry: spec.retry.as_ref().map(|r| {
                let codes: Vec<i64> = r.codes.iter().map(|c| i64::from(*c)).collect();
                retry(
                    b,
                    "TrafficPolicy",
                    key,
                    i64::from(r.attempts),
                    &codes,
                    r.backoff.as_deref(),
                )
            }),
        };
        for target in &spec.target_refs {
            if !is_service_ref(Some(&target.group), Some(&target.kind)) {
                b.warn(
                    "TrafficPolicy",
                    key,
                    format!("targetRef {} {}: only Services", target.kind, target.name),
                );
                continue;
            }
            let svc_key = Key::new(&key.namespace, &target.name);
            match services.get_mut(&svc_key) {
                Some(svc) if svc.policy.is_none() => svc.policy = Some(policy.clone()),
                Some(_) => b.warn(
                    "TrafficPolicy",
                    key,
                    format!("Service {svc_key} already has a TrafficPolicy: ignored for it"),
                ),
                None => b.warn(
                    "TrafficPolicy",
                    key,
                    format!("Service {svc_key} does not exist"),
                ),
            }
        }
    }
}

fn attach_routes(objects: &Objects, services: &mut BTreeMap<Key, Service>, b: &mut Builder) {
    // GRPCRoutes are HTTPRoutes matching `/<service>/<method>` paths: read as such, so both kinds
    // share every check and the translation.
    let mut grpc = Vec::new();
    for (key, route) in &objects.grpc_routes {
        match grpc::as_http_route(route) {
            Ok(r) => grpc.push((key, r)),
            Err(why) => b.warn("GRPCRoute", key, format!("ignored: {why}")),
        }
    }
    // Older routes win ties, then namespace/name, as Gateway API orders conflicts.
    let mut routes: Vec<(&str, &Key, &HttpRoute)> = objects
        .http_routes
        .iter()
        .map(|(k, r)| ("HTTPRoute", k, r))
        .chain(grpc.iter().map(|(k, r)| ("GRPCRoute", *k, r)))
        .collect();
    routes.sort_by_key(|(kind, k, r)| {
        (
            r.metadata.creation_timestamp.clone().map(|t| t.0),
            *k,
            *kind,
        )
    });
    // GEP-1426: where a GRPCRoute and an HTTPRoute attach to the same Service port, the
    // GRPCRoute is kept and the HTTPRoute ignored there, as Linkerd does.
    let grpc_parents: Vec<(Parent, &Key)> = grpc
        .iter()
        .flat_map(|(key, route)| service_parents(key, route).map(move |parent| (parent, *key)))
        .collect();
    for (kind, key, route) in routes {
        let parent_refs = route.spec.parent_refs.iter().flatten();
        let parents = parent_refs.map(|p| parent_ref(key, p.into()));
        let parents = attachable((kind, key), parents, services, b);
        // A route of Gateways only is another implementation's: not read, not warned about.
        if parents.is_empty() {
            continue;
        }
        let rules = route_rules((kind, key), route, services, b);
        for parent in parents {
            let parent_key = parent.service.clone();
            let Some(svc) = services.get_mut(&parent_key) else {
                b.warn(
                    kind,
                    key,
                    format!("parent Service {parent_key} does not exist"),
                );
                continue;
            };
            let mut attached = false;
            for port in &mut svc.ports {
                if !parent.wants(port) {
                    continue;
                }
                let held = grpc_parents
                    .iter()
                    .find(|(g, _)| g.service == parent_key && g.wants(port));
                if let (Some((_, grpc_key)), "HTTPRoute") = (held, kind) {
                    b.warn(
                        kind,
                        key,
                        format!(
                            "not attached to port {} of Service {parent_key}: GRPCRoute \
                             {grpc_key} is, and takes precedence (GEP-1426)",
                            port.port
                        ),
                    );
                    attached = true;
                    continue;
                }
                let parent_port = port.port;
                attached = true;
                // A route from another namespace is that namespace's consumer route.
                let producer = key.namespace == parent_key.namespace;
                // A consumer route none of whose rules stands is no route, as a producer's is.
                if !producer && rules.is_empty() {
                    continue;
                }
                let routes = match producer {
                    true => &mut port.routes,
                    false => port
                        .consumer_routes
                        .entry(key.namespace.clone())
                        .or_default(),
                };
                routes.extend(rules.iter().cloned().map(|mut r| {
                    // GAMMA: a rule without backendRefs sends to the Service it is on.
                    if r.backends.is_empty() && r.redirect.is_none() {
                        r.backends
                            .push(Backend::to(parent_key.clone(), parent_port));
                    }
                    r
                }));
            }
            if !attached {
                let which = parent.which("HTTP");
                b.warn(
                    kind,
                    key,
                    format!("parent Service {parent_key} has no {which} port"),
                );
            }
        }
    }
}

/// TCPRoutes attached to Services: where the connections of their TCP ports (and of ports left
/// to detection, which a TCPRoute makes opaque) go. A port takes one TCPRoute, and one per consumer namespace: the
/// oldest, as Gateway API orders conflicts; a TCPRoute has no matches to tell rules apart, so
/// only its first rule applies.
fn attach_tcp_routes(objects: &Objects, services: &mut BTreeMap<Key, Service>, b: &mut Builder) {
    const KIND: &str = "TCPRoute";
    let mut routes: Vec<(&Key, &TcpRouteObject)> = objects.tcp_routes.iter().collect();
    routes.sort_by_key(|(k, r)| (r.metadata.creation_timestamp.clone().map(|t| t.0), *k));
    for (key, route) in routes {
        let parent_refs = route.spec.parent_refs.iter().flatten();
        let parents = parent_refs.map(|p| parent_ref(key, p.into()));
        let parents = attachable((KIND, key), parents, services, b);
        if parents.is_empty() {
            continue;
        }
        let Some(tcp) = tcp_route(key, route, services, b) else {
            continue;
        };
        for parent in parents {
            let Some(svc) = services.get_mut(&parent.service) else {
                let why = format!("parent Service {} does not exist", parent.service);
                b.warn(KIND, key, why);
                continue;
            };
            let mut attached = false;
            for port in &mut svc.ports {
                if !parent.names(port) || !(parent.named() || port.protocol.carries_tcp()) {
                    continue;
                }
                attached = true;
                if !port.protocol.carries_tcp() {
                    let why = format!(
                        "port {} of Service {} speaks {}: a TCPRoute does not apply to it",
                        port.port,
                        parent.service,
                        port.protocol.as_str()
                    );
                    b.warn(KIND, key, why);
                    continue;
                }
                // A route from another namespace is that namespace's consumer route.
                let producer = key.namespace == parent.service.namespace;
                // GEP-1294: where routes of several types bind one port, the HTTP (and gRPC)
                // ones are applied and the TCP ones ignored.
                // (An HTTP route on a TCP port applies to nothing, so it takes nothing.)
                let http = port.protocol.is_http()
                    && match producer {
                        true => !port.routes.is_empty(),
                        false => port.consumer_routes.contains_key(&key.namespace),
                    };
                if http {
                    let why = format!(
                        "not attached to port {} of Service {}: an HTTPRoute or GRPCRoute is, \
                         and takes precedence (GEP-1294)",
                        port.port, parent.service
                    );
                    b.warn(KIND, key, why);
                    continue;
                }
                let held = match producer {
                    true => port.tcp_route.as_ref(),
                    false => port.consumer_tcp_routes.get(&key.namespace),
                };
                if let Some(held) = held.filter(|h| h.origin != tcp.origin) {
                    let why = format!(
                        "not attached to port {} of Service {}: TCPRoute {} is, and is older",
                        port.port, parent.service, held.origin
                    );
                    b.warn(KIND, key, why);
                    continue;
                }
                match producer {
                    true => port.tcp_route = Some(tcp.clone()),
                    false => {
                        let ns = key.namespace.clone();
                        port.consumer_tcp_routes.insert(ns, tcp.clone());
                    }
                }
            }
            if !attached {
                let which = parent.which("TCP");
                let why = format!("parent Service {} has no {which} port", parent.service);
                b.warn(KIND, key, why);
            }
        }
    }
}

/// A TCPRoute's first rule as weighted backends, each checked as an HTTPRoute's are; `None`
/// (said) when it has no rule or no backendRef.
fn tcp_route(
    key: &Key,
    route: &TcpRouteObject,
    services: &BTreeMap<Key, Service>,
    b: &mut Builder,
) -> Option<TcpRoute> {
    const KIND: &str = "TCPRoute";
    let rules = &route.spec.rules;
    if rules.len() > 1 {
        let why = format!(
            "only the first of its {} rules applies: TCPRoute rules have no matches",
            rules.len()
        );
        b.warn(KIND, key, why);
    }
    let Some(rule) = rules.first().filter(|r| !r.backend_refs.is_empty()) else {
        b.warn(KIND, key, "ignored: it needs a rule with a backendRef");
        return None;
    };
    let mut backends = Vec::new();
    for br in &rule.backend_refs {
        let service = Key::new(br.namespace.as_deref().unwrap_or(&key.namespace), &br.name);
        let port = br.port.and_then(|p| u16::try_from(p).ok());
        let unresolved = if is_service_ref(br.group.as_deref(), br.kind.as_deref()) {
            resolve(services, &service, port).err()
        } else {
            Some(format!(
                "backendRef {}: only Services are supported",
                br.name
            ))
        };
        if let Some(why) = &unresolved {
            b.warn(
                KIND,
                key,
                format!("{why}; its share of connections is refused"),
            );
        }
        backends.push(Backend {
            weight: u32::try_from(br.weight.unwrap_or(1).max(0)).unwrap_or(0),
            unresolved: unresolved.is_some(),
            ..Backend::to(service, port.unwrap_or_default())
        });
    }
    if backends.iter().all(|b| b.weight == 0) {
        b.warn(
            KIND,
            key,
            "every backendRef has weight 0; its connections are refused",
        );
    }
    Some(TcpRoute {
        origin: key.to_string(),
        backends,
    })
}

/// A Service a route attaches to, and which of its ports: by number, by name (`sectionName`),
/// both, or (neither) every HTTP port.
struct Parent {
    service: Key,
    port: Option<i32>,
    section: Option<String>,
    /// Written without a group and defaulted to the Gateway API's (see
    /// [`is_defaulted_service_ref`]).
    defaulted_group: bool,
}

impl Parent {
    /// Whether it names its port(s) by number or name, rather than taking every port a route
    /// of its kind can apply to.
    fn named(&self) -> bool {
        self.port.is_some() || self.section.is_some()
    }

    /// Whether `port` is one it names (every port, when it names none).
    fn names(&self, port: &ServicePort) -> bool {
        self.port.is_none_or(|p| i32::from(port.port) == p)
            && self.section.as_ref().is_none_or(|s| *s == port.name)
    }

    /// Whether an HTTP (or gRPC) route attaches to `port`: one named, else every HTTP port.
    fn wants(&self, port: &ServicePort) -> bool {
        self.names(port) && (self.named() || port.protocol.is_http())
    }

    /// The port(s) it names, for a warning that the Service has none such; `kind` ("HTTP",
    /// "TCP") when it names none.
    fn which(&self, kind: &str) -> String {
        match (self.port, &self.section) {
            (Some(p), _) => p.to_string(),
            (None, Some(name)) => format!("{name:?}"),
            (None, None) => kind.to_string(),
        }
    }
}

/// The Services a route attaches to; parents of other kinds (Gateways) are not the mesh's
/// business.
fn service_parents<'a>(key: &'a Key, route: &'a HttpRoute) -> impl Iterator<Item = Parent> + 'a {
    let refs = route.spec.parent_refs.iter().flatten();
    refs.filter_map(move |p| parent_ref(key, p.into()).ok())
}

/// The fields of a parentRef, of whichever route kind.
struct ParentFields<'a> {
    group: Option<&'a str>,
    kind: Option<&'a str>,
    namespace: Option<&'a str>,
    name: &'a str,
    port: Option<i32>,
    section: Option<&'a String>,
}

macro_rules! parent_fields {
    ($($t:ty),*) => {$(
        impl<'a> From<&'a $t> for ParentFields<'a> {
            fn from(p: &'a $t) -> Self {
                Self {
                    group: p.group.as_deref(),
                    kind: p.kind.as_deref(),
                    namespace: p.namespace.as_deref(),
                    name: &p.name,
                    port: p.port,
                    section: p.section_name.as_ref(),
                }
            }
        }
    )*};
}
parent_fields!(HttpRouteParentRefs, TcpRouteParentRefs);

/// The Service a parentRef of route `key` names, or, for any other kind, the Service it would
/// name had it said `kind: Service`, when it said no kind at all: Gateway API's default kind is
/// Gateway, which the mesh does not serve, but a user who wrote a Service's name most likely
/// meant that Service (see [`attachable`]).
fn parent_ref(key: &Key, p: ParentFields) -> Result<Parent, Option<Key>> {
    let service = Key::new(p.namespace.unwrap_or(&key.namespace), p.name);
    let defaulted_group = is_defaulted_service_ref(p.group, p.kind);
    let core = matches!(p.group, None | Some("" | "core"));
    match p.kind {
        Some("Service") if core || defaulted_group => Ok(Parent {
            service,
            port: p.port,
            section: p.section.cloned(),
            defaulted_group,
        }),
        None if core || p.group == Some("gateway.networking.k8s.io") => Err(Some(service)),
        _ => Err(None),
    }
}

/// The Service parents of route `(kind, key)`, with a warning for each parentRef that names a
/// Service only by default: its group (read as the core Service it meant), or its kind (read as
/// the Gateway the spec says it is, so not attached; said when such a Service exists).
fn attachable(
    (kind, key): (&str, &Key),
    parents: impl Iterator<Item = Result<Parent, Option<Key>>>,
    services: &BTreeMap<Key, Service>,
    b: &mut Builder,
) -> Vec<Parent> {
    let mut out = Vec::new();
    for parent in parents {
        match parent {
            Ok(p) => {
                if p.defaulted_group {
                    b.warn(
                        kind,
                        key,
                        format!(
                            "parentRef to Service {} has group gateway.networking.k8s.io (the \
                             default when none is written): read as the core Service; write \
                             group: \"\"",
                            p.service.name
                        ),
                    );
                }
                out.push(p);
            }
            Err(Some(svc)) if services.contains_key(&svc) => b.warn(
                kind,
                key,
                format!(
                    "parentRef {} has no kind, so it names a Gateway (the default), not Service \
                     {svc}: not attached; write kind: Service and group: \"\"",
                    svc.name
                ),
            ),
            Err(_) => {}
        }
    }
    out
}

fn route_rules(
    (kind, key): (&str, &Key),
    route: &HttpRoute,
    services: &BTreeMap<Key, Service>,
    b: &mut Builder,
) -> Vec<RouteRule> {
    let mut out = Vec::new();
    for (i, rule) in route.spec.rules.iter().flatten().enumerate() {
        let origin = format!("{key}#{i}");
        match route_rule((kind, key), rule, &origin, services, b) {
            Ok(r) => out.push(r),
            Err(why) => b.warn(kind, key, format!("rule {i} dropped: {why}")),
        }
    }
    out
}

/// The edits of a Request- or ResponseHeaderModifier (two types of one shape).
macro_rules! header_edits {
    ($m:expr) => {
        HeaderEdits {
            set: pairs($m.set.iter().flatten().map(|h| (&h.name, &h.value))),
            add: pairs($m.add.iter().flatten().map(|h| (&h.name, &h.value))),
            remove: $m
                .remove
                .iter()
                .flatten()
                .map(|n| n.to_ascii_lowercase())
                .collect(),
        }
    };
}

/// The filters a backendRef may carry that weft applies: header modifiers, as Istio does.
fn backend_modifier(t: &HttpRouteRulesBackendRefsFiltersType) -> bool {
    matches!(
        t,
        HttpRouteRulesBackendRefsFiltersType::RequestHeaderModifier
            | HttpRouteRulesBackendRefsFiltersType::ResponseHeaderModifier
    )
}

fn route_rule(
    (kind, key): (&str, &Key),
    rule: &HttpRouteRules,
    origin: &str,
    services: &BTreeMap<Key, Service>,
    b: &mut Builder,
) -> Result<RouteRule, String> {
    let failure_status = if kind == "GRPCRoute" { 503 } else { 500 };
    let matches = match rule.matches.as_deref() {
        None | Some([]) => vec![RouteMatch {
            path: Some(PathMatch::Prefix("/".into())),
            ..RouteMatch::default()
        }],
        Some(ms) => ms.iter().map(route_match).collect::<Result<_, _>>()?,
    };
    // Header modifiers, mirrors, URL rewrites and redirects of the rule apply, and header
    // modifiers of single backends; any other filter refuses the rule (below).
    let (mut request_headers, mut response_headers) =
        (HeaderEdits::default(), HeaderEdits::default());
    let (mut rewrite, mut redirect) = (None, None);
    let mut mirrors = Vec::new();
    let mut unapplied = Vec::new();
    for f in rule.filters.iter().flatten() {
        match f.r#type {
            HttpRouteRulesFiltersType::RequestMirror => {
                if let Some(m) = &f.request_mirror {
                    // A mirror that cannot be resolved is said and left out; the rule stands.
                    match request_mirror(key, m, services) {
                        Ok(m) => mirrors.push(m),
                        Err(why) => b.warn(kind, key, format!("RequestMirror ignored: {why}")),
                    }
                }
            }
            HttpRouteRulesFiltersType::UrlRewrite => {
                if let Some(u) = &f.url_rewrite {
                    let path = u.path.as_ref().map(|p| {
                        let full =
                            p.r#type == HttpRouteRulesFiltersUrlRewritePathType::ReplaceFullPath;
                        path_modifier(full, &p.replace_full_path, &p.replace_prefix_match)
                    });
                    rewrite = Some(UrlRewrite {
                        hostname: u.hostname.as_deref().map(hostname).transpose()?,
                        path: path.transpose()?,
                    });
                }
            }
            HttpRouteRulesFiltersType::RequestRedirect => {
                if let Some(r) = &f.request_redirect {
                    redirect = Some(request_redirect(r)?);
                }
            }
            HttpRouteRulesFiltersType::RequestHeaderModifier => {
                if let Some(m) = &f.request_header_modifier {
                    request_headers = allowed_edits(b, (kind, key), header_edits!(m));
                }
            }
            HttpRouteRulesFiltersType::ResponseHeaderModifier => {
                if let Some(m) = &f.response_header_modifier {
                    response_headers = allowed_edits(b, (kind, key), header_edits!(m));
                }
            }
            ref other => unapplied.push(format!("{other:?}")),
        }
    }
    unapplied.extend(
        rule.backend_refs
            .iter()
            .flatten()
            .flat_map(|br| br.filters.iter().flatten())
            .filter(|f| !backend_modifier(&f.r#type))
            .map(|f| format!("{:?} on a backendRef", f.r#type)),
    );
    // Gateway API: a filter that cannot be applied must not be skipped; the requests it would
    // have handled get an error instead (an auth filter fails closed).
    let mut refused = None;
    if !unapplied.is_empty() {
        let why = format!("unsupported filters: {}", unapplied.join(", "));
        b.warn(
            kind,
            key,
            format!("{why}; the rule answers {failure_status} instead of forwarding"),
        );
        refused = Some(why);
    }
    if rewrite.is_some() && redirect.is_some() {
        return Err("URLRewrite and RequestRedirect cannot both be in one rule".into());
    }
    let by_prefix = |p: &Option<PathModifier>| matches!(p, Some(PathModifier::Prefix(_)));
    let prefix_modified = rewrite
        .as_ref()
        .is_some_and(|r: &UrlRewrite| by_prefix(&r.path))
        || redirect
            .as_ref()
            .is_some_and(|r: &Redirect| by_prefix(&r.path));
    if prefix_modified
        && matches
            .iter()
            .any(|m| !matches!(m.path, Some(PathMatch::Prefix(_))))
    {
        return Err("ReplacePrefixMatch needs every match of the rule to be a PathPrefix".into());
    }
    if redirect.is_some() && rule.backend_refs.as_ref().is_some_and(|b| !b.is_empty()) {
        return Err("RequestRedirect cannot be used with backendRefs".into());
    }
    // A backendRef that does not resolve keeps its weight: Gateway API gives its share of the
    // requests a 500 rather than sending it to the other backends. No backendRefs at all (and no
    // redirect) leaves `backends` empty: the rule then sends to the Service it is attached to.
    let mut backends = Vec::new();
    for br in rule.backend_refs.iter().flatten() {
        let svc_key = Key::new(br.namespace.as_deref().unwrap_or(&key.namespace), &br.name);
        let port = br.port.and_then(|p| u16::try_from(p).ok());
        let unresolved = if !is_service_ref(br.group.as_deref(), br.kind.as_deref()) {
            Some(format!(
                "backendRef {}: only Services are supported",
                br.name
            ))
        } else {
            resolve(services, &svc_key, port).err()
        };
        if let Some(why) = &unresolved {
            b.warn(
                kind,
                key,
                format!("{why}; its share of requests gets {failure_status}"),
            );
        }
        let (mut request_headers, mut response_headers) =
            (HeaderEdits::default(), HeaderEdits::default());
        for f in br.filters.iter().flatten() {
            if let Some(m) = &f.request_header_modifier {
                request_headers = allowed_edits(b, (kind, key), header_edits!(m));
            }
            if let Some(m) = &f.response_header_modifier {
                response_headers = allowed_edits(b, (kind, key), header_edits!(m));
            }
        }
        backends.push(Backend {
            service: svc_key,
            port: port.unwrap_or_default(),
            weight: u32::try_from(br.weight.unwrap_or(1).max(0)).unwrap_or(0),
            request_headers,
            response_headers,
            unresolved: unresolved.is_some(),
        });
    }
    if redirect.is_none() && !backends.is_empty() && backends.iter().all(|b| b.weight == 0) {
        let why = "every backendRef has weight 0".to_string();
        b.warn(
            kind,
            key,
            format!("{why}; the rule answers {failure_status}"),
        );
        refused.get_or_insert(why);
    }
    let timeouts = rule.timeouts.as_ref();
    Ok(RouteRule {
        origin: origin.to_string(),
        matches,
        backends,
        timeout: duration(
            b,
            kind,
            key,
            "timeouts.request",
            timeouts.and_then(|t| t.request.as_deref()),
        ),
        backend_timeout: duration(
            b,
            kind,
            key,
            "timeouts.backendRequest",
            timeouts.and_then(|t| t.backend_request.as_deref()),
        )
        .filter(|d| !d.is_zero()),
        retry: rule.retry.as_ref().map(|r| {
            retry(
                b,
                kind,
                key,
                r.attempts.unwrap_or(1),
                r.codes.as_deref().unwrap_or_default(),
                r.backoff.as_deref(),
            )
        }),
        request_headers,
        response_headers,
        rewrite,
        redirect,
        mirrors,
        refused,
        failure_status,
    })
}

/// A RequestMirror's Service port and share (`percent`, or `fraction` of a denominator that
/// defaults to 100; every request without either).
fn request_mirror(
    key: &Key,
    m: &HttpRouteRulesFiltersRequestMirror,
    services: &BTreeMap<Key, Service>,
) -> Result<Mirror, String> {
    let r = &m.backend_ref;
    if !is_service_ref(r.group.as_deref(), r.kind.as_deref()) {
        return Err(format!(
            "backendRef {}: only Services are supported",
            r.name
        ));
    }
    let svc = Key::new(r.namespace.as_deref().unwrap_or(&key.namespace), &r.name);
    let port = resolve(services, &svc, r.port.and_then(|p| u16::try_from(p).ok()))?;
    let per_million = match (m.percent, &m.fraction) {
        (None, None) => 1_000_000,
        (Some(p), None) if (0..=100).contains(&p) => p as u32 * 10_000,
        (None, Some(f)) => {
            let d = f.denominator.unwrap_or(100);
            if d <= 0 || f.numerator < 0 || f.numerator > d {
                return Err(format!("fraction {}/{d} is not a share", f.numerator));
            }
            (i64::from(f.numerator) * 1_000_000 / i64::from(d)) as u32
        }
        (Some(p), None) => return Err(format!("percent {p} is not 0 to 100")),
        (Some(_), Some(_)) => return Err("percent and fraction are exclusive".into()),
    };
    Ok(Mirror {
        service: svc,
        port,
        per_million,
    })
}

/// A ReplaceFullPath or ReplacePrefixMatch modifier, checked: the value its type names is there
/// and is a path.
fn path_modifier(
    full: bool,
    full_path: &Option<String>,
    prefix: &Option<String>,
) -> Result<PathModifier, String> {
    let (value, field) = if full {
        (full_path, "replaceFullPath")
    } else {
        (prefix, "replacePrefixMatch")
    };
    let value = match value.as_deref() {
        // Gateway API: an empty prefix replacement drops the prefix (`/foo/bar` to `/bar`).
        Some("") if !full => "/",
        Some(v) => v,
        None => return Err(format!("path modifier without {field}")),
    };
    if !value.starts_with('/') || value.chars().any(|c| c.is_ascii_control() || c == ' ') {
        return Err(format!("{field} {value:?} is not a path"));
    }
    Ok(if full {
        PathModifier::Full(value.to_string())
    } else {
        PathModifier::Prefix(value.to_string())
    })
}

/// A hostname as Gateway API's `PreciseHostname` allows it: DNS labels, no port, no wildcard.
fn hostname(h: &str) -> Result<String, String> {
    let valid = !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if valid {
        Ok(h.to_ascii_lowercase())
    } else {
        Err(format!("hostname {h:?} is not a DNS name"))
    }
}

fn request_redirect(r: &HttpRouteRulesFiltersRequestRedirect) -> Result<Redirect, String> {
    let status = match r.status_code {
        None => 302,
        Some(c @ (301 | 302 | 303 | 307 | 308)) => c as u16,
        Some(c) => {
            return Err(format!(
                "redirect statusCode {c} is not 301, 302, 303, 307 or 308"
            ));
        }
    };
    let port = r
        .port
        .map(|p| {
            u16::try_from(p)
                .ok()
                .filter(|p| *p > 0)
                .ok_or(format!("redirect port {p}"))
        })
        .transpose()?;
    let path = r.path.as_ref().map(|p| {
        let full = p.r#type == HttpRouteRulesFiltersRequestRedirectPathType::ReplaceFullPath;
        path_modifier(full, &p.replace_full_path, &p.replace_prefix_match)
    });
    Ok(Redirect {
        scheme: r.scheme.as_ref().map(|s| {
            match s {
                HttpRouteRulesFiltersRequestRedirectScheme::Http => "http",
                HttpRouteRulesFiltersRequestRedirectScheme::Https => "https",
            }
            .to_string()
        }),
        hostname: r.hostname.as_deref().map(hostname).transpose()?,
        path: path.transpose()?,
        port,
        status,
    })
}

/// `edits` without the headers a route may not change (the proxy would refuse the whole route
/// table for them): `Host`, which routing and the upstream's virtual hosting read, and the
/// message framing.
fn allowed_edits(
    b: &mut Builder,
    (kind, key): (&str, &Key),
    mut edits: HeaderEdits,
) -> HeaderEdits {
    let fixed = |n: &str| {
        n.starts_with(':') || matches!(n, "host" | "content-length" | "transfer-encoding")
    };
    let mut dropped: Vec<String> = Vec::new();
    let mut keep = |n: &String| {
        let ok = !fixed(n);
        if !ok {
            dropped.push(n.clone());
        }
        ok
    };
    edits.set.retain(|(n, _)| keep(n));
    edits.add.retain(|(n, _)| keep(n));
    edits.remove.retain(|n| keep(n));
    if !dropped.is_empty() {
        b.warn(
            kind,
            key,
            format!(
                "a header modifier may not change {}: ignored",
                dropped.join(", ")
            ),
        );
    }
    edits
}

/// (name, value) pairs of a header modifier; names are case-insensitive, so kept in lower case.
fn pairs<'a>(it: impl Iterator<Item = (&'a String, &'a String)>) -> Vec<(String, String)> {
    it.map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
        .collect()
}

fn check_regex(re: &str) -> Result<(), String> {
    regex::Regex::new(re)
        .map(|_| ())
        .map_err(|e| format!("invalid regular expression {re:?}: {e}"))
}

fn string_match(regex: bool, value: &str) -> Result<StringMatch, String> {
    if regex {
        check_regex(value)?;
        Ok(StringMatch::Regex(value.to_string()))
    } else {
        Ok(StringMatch::Exact(value.to_string()))
    }
}

fn route_match(m: &HttpRouteRulesMatches) -> Result<RouteMatch, String> {
    let path = match &m.path {
        None => Some(PathMatch::Prefix("/".into())),
        Some(p) => {
            let value = p.value.clone().unwrap_or_else(|| "/".into());
            if !value.starts_with('/')
                && p.r#type != Some(HttpRouteRulesMatchesPathType::RegularExpression)
            {
                return Err(format!("path {value:?} must start with '/'"));
            }
            Some(match p.r#type {
                Some(HttpRouteRulesMatchesPathType::Exact) => PathMatch::Exact(value),
                None | Some(HttpRouteRulesMatchesPathType::PathPrefix) => {
                    let trimmed = value.trim_end_matches('/');
                    PathMatch::Prefix(if trimmed.is_empty() {
                        "/".into()
                    } else {
                        trimmed.into()
                    })
                }
                Some(HttpRouteRulesMatchesPathType::RegularExpression) => {
                    check_regex(&value)?;
                    PathMatch::Regex(value)
                }
            })
        }
    };
    // Gateway API: of matches on one header (names case-insensitive) or one query parameter
    // (case-sensitive), only the first counts.
    let mut seen = std::collections::HashSet::new();
    let headers = m
        .headers
        .iter()
        .flatten()
        .filter(|h| seen.insert(h.name.to_ascii_lowercase()))
        .map(|h| {
            Ok(HeaderMatch {
                name: h.name.to_ascii_lowercase(),
                value: string_match(
                    h.r#type == Some(HttpRouteRulesMatchesHeadersType::RegularExpression),
                    &h.value,
                )?,
            })
        })
        .collect::<Result<_, String>>()?;
    let mut seen = std::collections::HashSet::new();
    let query = m
        .query_params
        .iter()
        .flatten()
        .filter(|q| seen.insert(q.name.as_str()))
        .map(|q| {
            Ok(QueryMatch {
                name: q.name.clone(),
                value: string_match(
                    q.r#type == Some(HttpRouteRulesMatchesQueryParamsType::RegularExpression),
                    &q.value,
                )?,
            })
        })
        .collect::<Result<_, String>>()?;
    let method = m.method.as_ref().map(|meth| {
        serde_json::to_value(meth)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    });
    Ok(RouteMatch {
        path,
        headers,
        method,
        query,
    })
}

/// Inbound protocols follow the Services that select the workload, where they say more than the
/// container port name does.
fn set_workload_protocols(
    services: &BTreeMap<Key, Service>,
    workloads: &mut BTreeMap<Key, Workload>,
) {
    for svc in services.values() {
        for port in &svc.ports {
            for ep in &port.endpoints {
                let Some(w) = ep.workload.as_ref().and_then(|k| workloads.get_mut(k)) else {
                    continue;
                };
                match w.ports.iter_mut().find(|p| p.port == ep.port) {
                    Some(wp) if wp.protocol == Protocol::Detect => wp.protocol = port.protocol,
                    Some(_) => {}
                    None => w.ports.push(WorkloadPort {
                        port: ep.port,
                        protocol: port.protocol,
                    }),
                }
            }
        }
    }
    for w in workloads.values_mut() {
        w.ports.sort_by_key(|p| p.port);
        w.ports.dedup_by_key(|p| p.port);
    }
}

fn host_pattern(own_namespace: &str, host: &str) -> HostPattern {
    let (ns, name) = host.split_once('/').unwrap_or((".", host));
    HostPattern {
        namespace: if ns == "." { own_namespace } else { ns }.to_string(),
        name: name.to_string(),
    }
}

fn sidecars(
    objects: &Objects,
    services: &BTreeMap<Key, Service>,
    b: &mut Builder,
) -> Vec<SidecarScope> {
    let mut out = Vec::new();
    for (key, sc) in &objects.sidecars {
        let mut listeners = Vec::new();
        for l in &sc.spec.outbound_listeners {
            let Ok(bind) = l.bind.parse::<SocketAddr>() else {
                b.warn(
                    "Sidecar",
                    key,
                    format!("outbound listener bind {:?} is not ip:port", l.bind),
                );
                continue;
            };
            // `name`, `name.ns`, `name.ns.svc` or the full `name.ns.svc.cluster.local`.
            let host = l.service.trim_end_matches(".svc.cluster.local");
            let host = host.trim_end_matches(".svc");
            let (name, ns) = host.split_once('.').unwrap_or((host, &key.namespace));
            let service = Key::new(ns, name);
            match services.get(&service) {
                None => b.warn(
                    "Sidecar",
                    key,
                    format!(
                        "outbound listener {bind}: no Service {service}; not bound until there is"
                    ),
                ),
                Some(svc) if svc.port(l.port).is_none() => b.warn(
                    "Sidecar",
                    key,
                    format!(
                        "outbound listener {bind}: Service {service} has no port {}",
                        l.port
                    ),
                ),
                Some(_) => {}
            }
            listeners.push(OutboundListener {
                bind,
                service,
                port: l.port,
            });
        }
        out.push(SidecarScope {
            key: key.clone(),
            selector: Selector(sc.spec.workload_selector.match_labels.clone()),
            hosts: sc
                .spec
                .egress
                .iter()
                .map(|h| host_pattern(&key.namespace, h))
                .collect(),
            listeners,
        });
    }
    out
}

mod grpc;
#[cfg(test)]
mod tests;
