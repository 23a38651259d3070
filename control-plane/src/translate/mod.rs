//! Mesh -> xDS v3 resources. Pure: no I/O, no clocks, no randomness, so table tests pin it down.
//!
//! Resources are built per Service (shared by every proxy that can reach it, and rebuilt only when
//! that Service changes) plus a few per proxy (its inbound listener, its explicit listeners).
//! Names follow Istio's where users meet them: clusters are `outbound|<port>||<fqdn>`, listeners and
//! route configurations `<fqdn>:<port>` (the name gRPC's proxyless clients ask for).

mod authz;
mod cluster;
mod endpoint;
mod listener;
mod names;
mod route;
#[cfg(test)]
mod tests;
mod tls;

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use prost::Message;
use weft_proto::google::protobuf::{Any, Struct, Value, value::Kind};
use weft_proto::xds::config::core::v3::{
    AggregatedConfigSource, ApiVersion, ConfigSource, Metadata, config_source,
};

use crate::model::{Key, Mesh, Service, SidecarScope, Workload};

pub use self::names::{cluster_name, inbound_cluster_name};

pub use weft_proto::ResourceType;

/// One encoded xDS resource with its content version.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    /// Its type.
    pub kind: ResourceType,
    /// Resource name, unique within its type.
    pub name: String,
    /// Hash of the encoded body: equal bodies, equal versions, on every control-plane replica.
    pub version: String,
    /// The message, packed.
    pub body: Any,
}

impl Resource {
    fn new<M: Message>(kind: ResourceType, name: String, msg: &M) -> Arc<Self> {
        let value = msg.encode_to_vec();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        value.hash(&mut h);
        Arc::new(Self {
            kind,
            name,
            version: format!("{:016x}", h.finish()),
            body: Any {
                type_url: kind.type_url().to_string(),
                value,
            },
        })
    }
}

/// Which shape of a Service's HTTP listeners an xDS client reads: the two cannot share one
/// resource, since Envoy drops any listener with an `api_listener` that comes over LDS, and
/// gRPC's proxyless clients read nothing else.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Client {
    /// Envoy, weft-proxy and any client not known to be gRPC: listeners at addresses, with
    /// filter chains.
    #[default]
    Envoy,
    /// gRPC's proxyless clients: `api_listener`s.
    Grpc,
}

impl Client {
    /// Tells a client by what its first request says: gRPC names itself in `user_agent_name`
    /// (`gRPC C-core ...`, `gRPC Go`, `gRPC Java`) and Istio's proxyless bootstrap in the
    /// `GENERATOR` metadata; a client that says neither is taken for gRPC only if it opens with
    /// a Listener request naming resources, never with the wildcard a sidecar asks for.
    pub fn of(
        node: Option<&weft_proto::xds::config::core::v3::Node>,
        first: ResourceType,
        wildcard: bool,
    ) -> Self {
        let agent = node.map_or("", |n| n.user_agent_name.as_str());
        let generator = node
            .and_then(|n| n.metadata.as_ref())
            .and_then(|m| m.fields.get("GENERATOR"))
            .and_then(|v| match &v.kind {
                Some(Kind::StringValue(s)) => Some(s.as_str()),
                _ => None,
            });
        let grpc = agent
            .get(..5)
            .is_some_and(|p| p.eq_ignore_ascii_case("grpc "))
            || generator == Some("grpc")
            || (agent.is_empty() && first == ResourceType::Listener && !wildcard);
        if grpc { Self::Grpc } else { Self::Envoy }
    }
}

/// Everything translated from one Service.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceResources {
    /// Resources of every type, as every client but gRPC's reads them.
    pub resources: Vec<Arc<Resource>>,
    /// The HTTP listeners as gRPC's clients read them, by the same names.
    pub grpc_listeners: Vec<Arc<Resource>>,
    /// By namespace: the route configurations proxies there read instead of the shared ones of
    /// the same names, because that namespace has consumer routes on the Service.
    pub consumer_routes: BTreeMap<String, Vec<Arc<Resource>>>,
    /// By namespace: the listeners its consumer routes change (a TCPRoute's split, or HTTP
    /// routes on a port the producer's TCPRoute makes opaque). Not for gRPC's clients, which
    /// read a port's `api_listener` and never its `tcp_proxy`.
    pub consumer_listeners: BTreeMap<String, Vec<Arc<Resource>>>,
}

impl ServiceResources {
    /// The resources a client of this kind is sent.
    pub fn for_client(&self, client: Client) -> impl Iterator<Item = &Arc<Resource>> {
        let variants: &[Arc<Resource>] = match client {
            Client::Envoy => &[],
            Client::Grpc => &self.grpc_listeners,
        };
        self.resources
            .iter()
            .filter(move |r| {
                r.kind != ResourceType::Listener || !variants.iter().any(|v| v.name == r.name)
            })
            .chain(variants)
    }
}

/// Translates one Service: per port a cluster, its endpoints, a listener and a route configuration.
pub fn service(svc: &Service) -> ServiceResources {
    let (mut resources, mut grpc_listeners) = (Vec::new(), Vec::new());
    let mut consumer_routes: BTreeMap<String, Vec<Arc<Resource>>> = BTreeMap::new();
    let mut consumer_listeners: BTreeMap<String, Vec<Arc<Resource>>> = BTreeMap::new();
    for port in &svc.ports {
        let name = cluster_name(&svc.key, port.port);
        resources.push(Resource::new(
            ResourceType::Cluster,
            name.clone(),
            &cluster::outbound(svc, port),
        ));
        resources.push(Resource::new(
            ResourceType::Endpoint,
            name,
            &endpoint::load_assignment(svc, port),
        ));
        let listener_name = names::service_listener_name(&svc.key, port.port);
        let shared = listener::service(svc, port, None);
        if let Some(l) = &shared {
            resources.push(Resource::new(
                ResourceType::Listener,
                listener_name.clone(),
                l,
            ));
        }
        // A consumer route may change the listener itself (a TCPRoute's split, or the HTTP
        // routes of a namespace that keeps a port the producer's TCPRoute makes opaque): its
        // namespace then gets a listener of its own.
        let namespaces: BTreeSet<&String> = port.consumer_namespaces().collect();
        for ns in namespaces {
            let own = listener::service(svc, port, Some(ns));
            if let Some(l) = own.filter(|l| Some(l) != shared.as_ref()) {
                consumer_listeners
                    .entry(ns.clone())
                    .or_default()
                    .push(Resource::new(
                        ResourceType::Listener,
                        listener_name.clone(),
                        &l,
                    ));
            }
        }
        if let Some(l) = listener::service_api(svc, port) {
            grpc_listeners.push(Resource::new(
                ResourceType::Listener,
                listener_name.clone(),
                &l,
            ));
        }
        if port.protocol.is_http() {
            for ns in port.consumer_routes.keys() {
                consumer_routes
                    .entry(ns.clone())
                    .or_default()
                    .push(Resource::new(
                        ResourceType::Route,
                        listener_name.clone(),
                        &route::for_consumers(svc, port, ns),
                    ));
            }
            resources.push(Resource::new(
                ResourceType::Route,
                listener_name,
                &route::service(svc, port),
            ));
        }
    }
    ServiceResources {
        resources,
        grpc_listeners,
        consumer_routes,
        consumer_listeners,
    }
}

/// The route configurations (and listeners) a workload reads in place of the shared ones: those
/// of the Services it can reach (`visible`, `None` for all) on which its namespace has consumer
/// routes, each translated once per Service (`translated` finds it). A gRPC client gets only the
/// route configurations.
pub fn consumer_resources<'a>(
    mesh: &Mesh,
    (workload, client): (&Workload, Client),
    visible: Option<&BTreeSet<Key>>,
    translated: impl Fn(&Key) -> Option<&'a ServiceResources>,
) -> Vec<Arc<Resource>> {
    let ns = &workload.key.namespace;
    mesh.consumers
        .get(ns)
        .into_iter()
        .flatten()
        .filter(|k| visible.is_none_or(|v| v.contains(*k)))
        .filter_map(translated)
        .flat_map(|res| {
            let listeners = match client {
                Client::Envoy => res.consumer_listeners.get(ns),
                Client::Grpc => None,
            };
            res.consumer_routes
                .get(ns)
                .into_iter()
                .chain(listeners)
                .flatten()
        })
        .cloned()
        .collect()
}

/// Resources only one proxy gets: its inbound side and the listeners its `Sidecar` asks for.
pub fn node_resources(mesh: &Mesh, workload: &Workload) -> Vec<Arc<Resource>> {
    // A workload that declares no port, accepts plaintext and selects no authorization gets no
    // inbound listener: its proxy passes inbound traffic straight through. Any other gets one,
    // whose passthrough chains apply its mTLS mode and policies to the ports it did not declare.
    let mut out = Vec::new();
    if listener::needs_inbound(workload) {
        out.push(Resource::new(
            ResourceType::Listener,
            names::INBOUND_LISTENER.to_string(),
            &listener::inbound(workload),
        ));
        out.push(Resource::new(
            ResourceType::Cluster,
            names::INBOUND_PASSTHROUGH_CLUSTER.to_string(),
            &cluster::inbound_passthrough(),
        ));
    }
    for port in &workload.ports {
        out.push(Resource::new(
            ResourceType::Cluster,
            inbound_cluster_name(port.port),
            &cluster::inbound(port, &workload.ips),
        ));
    }
    if let Some(scope) = mesh.scope_for(workload) {
        for l in &scope.listeners {
            let Some(svc) = mesh.services.get(&l.service) else {
                continue;
            };
            let Some(port) = svc.port(l.port) else {
                continue;
            };
            out.push(Resource::new(
                ResourceType::Listener,
                names::explicit_name(l.bind),
                &listener::explicit(l.bind, svc, port, &workload.key.namespace),
            ));
        }
    }
    out
}

/// Which Services a proxy is sent. `None` means all of them.
pub fn visible_services(mesh: &Mesh, scope: Option<&SidecarScope>) -> Option<BTreeSet<Key>> {
    let scope = scope.filter(|s| !s.hosts.is_empty())?;
    let mut seen: BTreeSet<Key> = mesh
        .services
        .keys()
        .filter(|k| scope.allows(k))
        .cloned()
        .collect();
    seen.extend(scope.listeners.iter().map(|l| l.service.clone()));
    // A reachable Service's routes may split to others (canary): those must come along.
    let mut queue: Vec<Key> = seen.iter().cloned().collect();
    while let Some(key) = queue.pop() {
        let Some(svc) = mesh.services.get(&key) else {
            continue;
        };
        // Consumer routes count only for the scope's own namespace: they are its proxies'.
        let ns = &scope.key.namespace;
        let rules = svc.ports.iter().flat_map(|p| {
            let consumer = p.consumer_routes.get(ns);
            p.routes.iter().chain(consumer.into_iter().flatten())
        });
        let http = rules.flat_map(|r| {
            let mirrors = r.mirrors.iter().map(|m| &m.service);
            r.backends.iter().map(|b| &b.service).chain(mirrors)
        });
        let tcp = svc.ports.iter().flat_map(|p| {
            let route = p.tcp_route_for(Some(ns));
            route
                .into_iter()
                .flat_map(|r| r.backends.iter().map(|b| &b.service))
        });
        for b in http.chain(tcp) {
            if seen.insert(b.clone()) {
                queue.push(b.clone());
            }
        }
    }
    Some(seen)
}

/// The workload a node id stands for: `<pod>.<namespace>`, or Istio's
/// `sidecar~<ip>~<pod>.<namespace>~<domain>`.
pub fn node_workload<'m>(mesh: &'m Mesh, node_id: &str) -> Option<&'m Arc<Workload>> {
    let id = match node_id.split('~').collect::<Vec<_>>().as_slice() {
        [_, _, pod, _] => pod,
        _ => node_id,
    };
    mesh.workload_for_node(id)
}

/// Everything one proxy is sent, by type and name: the whole translation for one node, used by
/// tests and `/debug/config_dump` (the xDS server builds the same thing incrementally).
pub fn for_node(
    mesh: &Mesh,
    node_id: &str,
) -> BTreeMap<ResourceType, BTreeMap<String, Arc<Resource>>> {
    for_client(mesh, node_id, Client::Envoy)
}

/// [`for_node`] for a client of a given kind.
pub fn for_client(
    mesh: &Mesh,
    node_id: &str,
    client: Client,
) -> BTreeMap<ResourceType, BTreeMap<String, Arc<Resource>>> {
    let workload = node_workload(mesh, node_id);
    let visible = visible_services(
        mesh,
        workload.and_then(|w| mesh.scope_for(w)).map(Arc::as_ref),
    );
    let mut out: BTreeMap<ResourceType, BTreeMap<String, Arc<Resource>>> = BTreeMap::new();
    let translated: BTreeMap<&Key, ServiceResources> = mesh
        .services
        .iter()
        .filter(|(k, _)| visible.as_ref().is_none_or(|v| v.contains(k)))
        .map(|(k, s)| (k, service(s)))
        .collect();
    let shared = translated
        .values()
        .flat_map(|res| res.for_client(client).cloned());
    let own = workload
        .map(|w| {
            let mut own = node_resources(mesh, w);
            own.extend(consumer_resources(
                mesh,
                (w, client),
                visible.as_ref(),
                |k| translated.get(k),
            ));
            own
        })
        .unwrap_or_default();
    for r in shared.chain(own) {
        out.entry(r.kind).or_default().insert(r.name.clone(), r);
    }
    out
}

/// `ConfigSource` that says "over the same ADS stream".
fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

/// Packs a message into an `Any` with its type URL.
fn any<M: Message>(type_url: &str, msg: &M) -> Any {
    Any {
        type_url: format!("type.googleapis.com/{type_url}"),
        value: msg.encode_to_vec(),
    }
}

/// `filter_metadata["weft"] = {key: value}`, where weft-proxy finds what Envoy's schema has no field
/// for. One entry per map on purpose: protobuf maps are `HashMap`s that encode in random order, and
/// a resource's version is the hash of its encoding, so every map weft emits holds a single entry.
fn weft_metadata(key: &str, value: String) -> Metadata {
    let fields = [(
        key.to_string(),
        Value {
            kind: Some(Kind::StringValue(value)),
        },
    )]
    .into();
    Metadata {
        filter_metadata: [("weft".to_string(), Struct { fields })].into(),
        ..Default::default()
    }
}

/// A protobuf `Duration` from a std one.
fn duration(d: std::time::Duration) -> weft_proto::google::protobuf::Duration {
    weft_proto::google::protobuf::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}
