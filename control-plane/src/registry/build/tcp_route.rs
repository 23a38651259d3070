//! TCPRoutes onto the opaque ports of their Services: weighted backends, one per connection.

use super::*;

/// TCPRoutes attached to Services: where the connections of their TCP ports (and of ports left
/// to detection, which a TCPRoute makes opaque) go. A port takes one TCPRoute, and one per consumer namespace: the
/// oldest, as Gateway API orders conflicts; a TCPRoute has no matches to tell rules apart, so
/// only its first rule applies.
pub(super) fn attach_tcp_routes(
    objects: &Objects,
    services: &mut BTreeMap<Key, Service>,
    b: &mut Builder,
) {
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
pub(super) fn tcp_route(
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
