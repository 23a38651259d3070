//! Sidecars: what each selected workload may reach, and its explicit outbound listeners.

use super::*;

pub(super) fn host_pattern(own_namespace: &str, host: &str) -> HostPattern {
    let (ns, name) = host.split_once('/').unwrap_or((".", host));
    HostPattern {
        namespace: if ns == "." { own_namespace } else { ns }.to_string(),
        name: name.to_string(),
    }
}
pub(super) fn sidecars(
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
