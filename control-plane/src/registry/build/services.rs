//! Services and their endpoints: from EndpointSlices, or the ready Pods a selector picks.

use super::*;

pub(super) fn services(
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
pub(super) fn selected(
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
                mtls: w.sidecar,
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
pub(super) fn endpoints(
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
                    mtls: workload.is_some_and(|w| w.sidecar),
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
