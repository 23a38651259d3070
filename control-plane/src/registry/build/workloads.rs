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
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let sidecar = labels
            .get(weft_proto::names::TLS_MODE_LABEL)
            .map(String::as_str)
            == Some(weft_proto::names::TLS_MODE);
        out.insert(
            key.clone(),
            Workload {
                key: key.clone(),
                ips,
                labels,
                identity: spiffe_id(td, &key.namespace, &sa),
                service_account: sa,
                ports,
                sidecar,
                tls_mode: TlsMode::Permissive,
                authorization: Vec::new(),
            },
        );
    }
    out
}
/// Each workload's inbound mTLS mode, from the MeshTLS objects of its namespace: one whose
/// selector names it wins over one for the whole namespace (an empty selector); of two equally
/// specific ones, the first by name, with a warning naming both.
pub(super) fn set_tls_modes(
    objects: &Objects,
    workloads: &mut BTreeMap<Key, Workload>,
    b: &mut Builder,
) {
    for w in workloads.values_mut() {
        let mut chosen: Option<(&Key, bool)> = None;
        for (key, m) in &objects.mesh_tls {
            if key.namespace != w.key.namespace {
                continue;
            }
            let labels = &m.spec.selector.match_labels;
            let specific = !labels.is_empty();
            if !labels.iter().all(|(k, v)| w.labels.get(k) == Some(v)) {
                continue;
            }
            match chosen {
                Some((_, was_specific)) if was_specific && !specific => {}
                Some((first, was_specific)) if was_specific == specific => {
                    b.warn(
                        "MeshTLS",
                        key,
                        format!(
                            "Pod {} is also selected by MeshTLS {first}, which wins",
                            w.key
                        ),
                    );
                }
                _ => chosen = Some((key, specific)),
            }
        }
        if let Some((key, _)) = chosen {
            w.tls_mode = match objects.mesh_tls[key].spec.mode {
                crate::crd::TlsMode::Strict => TlsMode::Strict,
                crate::crd::TlsMode::Permissive => TlsMode::Permissive,
            };
        }
    }
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
