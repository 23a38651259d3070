//! Pods -> workloads: each Pod with an address, its identity and ports.

use super::*;

pub(super) fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
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
pub(super) fn workloads(objects: &Objects, td: &str) -> BTreeMap<Key, Workload> {
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
/// Inbound protocols follow the Services that select the workload, where they say more than the
/// container port name does.
pub(super) fn set_workload_protocols(
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
