//! Translation as the pure function it is: `model` values written here in, xDS out, a file per
//! resource. What the registry makes of YAML (Gateway API's fields, defaults, warnings) is tested
//! in the registry, against the Mesh it builds; `end_to_end.rs` alone runs `examples/shop`
//! through both.

mod authz;
mod cluster;
mod end_to_end;
mod endpoint;
mod listener;
mod node;
mod route;

use std::net::IpAddr;
use std::time::Duration;

use prost::Message;
use weft_proto::xds::config::core::v3::{Address, address};
use weft_proto::xds::config::listener::v3::{Listener, filter};
use weft_proto::xds::config::route::v3::{RouteConfiguration, route_match};
use weft_proto::xds::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use weft_proto::xds::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};

use super::*;
use crate::model::{
    Backend, Endpoint, HeaderEdits, HeaderMatch, Health, HostPattern, OutboundListener, PathMatch,
    Protocol, QueryMatch, RouteMatch, RouteRule, Selector, ServicePort, StringMatch, TcpRoute,
    TlsMode, TrafficPolicy, WorkloadPort,
};

// === Model values ===

/// A Service built port by port: `service("ns", "api").ip("10.0.0.1").port(80, Protocol::Http1)`;
/// what follows a `port` (endpoints, routes) goes on that port.
struct ServiceBuilder(Service);

fn service(namespace: &str, name: &str) -> ServiceBuilder {
    ServiceBuilder(Service {
        key: Key::new(namespace, name),
        cluster_ips: Vec::new(),
        headless: false,
        ports: Vec::new(),
        policy: None,
    })
}

impl ServiceBuilder {
    fn ip(mut self, ip: &str) -> Self {
        self.0.cluster_ips.push(ip.parse().unwrap());
        self
    }

    /// `clusterIP: None`: no virtual IP, clients address the pods.
    fn headless(mut self) -> Self {
        self.0.headless = true;
        self
    }

    fn policy(mut self, policy: TrafficPolicy) -> Self {
        self.0.policy = Some(policy);
        self
    }

    /// A port named after its protocol, with nothing on it yet.
    fn port(mut self, port: u16, protocol: Protocol) -> Self {
        self.0.ports.push(ServicePort {
            name: protocol.as_str().to_string(),
            port,
            protocol,
            endpoints: Vec::new(),
            routes: Vec::new(),
            consumer_routes: BTreeMap::new(),
            tcp_route: None,
            consumer_tcp_routes: BTreeMap::new(),
        });
        self
    }

    fn last(&mut self) -> &mut ServicePort {
        self.0.ports.last_mut().expect("a port first")
    }

    fn endpoints(mut self, endpoints: impl IntoIterator<Item = Endpoint>) -> Self {
        self.last().endpoints.extend(endpoints);
        self
    }

    /// Producer routes.
    fn routes(mut self, rules: impl IntoIterator<Item = RouteRule>) -> Self {
        self.last().routes.extend(rules);
        self
    }

    /// The routes of clients in `namespace`.
    fn consumer_routes(
        mut self,
        namespace: &str,
        rules: impl IntoIterator<Item = RouteRule>,
    ) -> Self {
        let routes = self.last().consumer_routes.entry(namespace.into());
        routes.or_default().extend(rules);
        self
    }

    fn tcp_route(mut self, route: TcpRoute) -> Self {
        self.last().tcp_route = Some(route);
        self
    }

    fn consumer_tcp_route(mut self, namespace: &str, route: TcpRoute) -> Self {
        self.last()
            .consumer_tcp_routes
            .insert(namespace.into(), route);
        self
    }

    fn build(self) -> Service {
        self.0
    }
}

/// A Mesh of the Services, workloads and Sidecars added to it.
#[derive(Default)]
struct MeshBuilder(Mesh);

fn mesh() -> MeshBuilder {
    MeshBuilder::default()
}

impl MeshBuilder {
    fn service(mut self, s: ServiceBuilder) -> Self {
        let s = s.build();
        self.0.services.insert(s.key.clone(), Arc::new(s));
        self
    }

    fn workload(mut self, w: Workload) -> Self {
        self.0.workloads.insert(w.key.clone(), Arc::new(w));
        self
    }

    fn sidecar(mut self, s: SidecarScope) -> Self {
        self.0.sidecars.push(Arc::new(s));
        self
    }

    /// The Mesh, with `consumers` listed from the Services' consumer routes as the registry
    /// lists them.
    fn build(mut self) -> Mesh {
        for svc in self.0.services.values() {
            let namespaces: BTreeSet<&String> = svc
                .ports
                .iter()
                .flat_map(ServicePort::consumer_namespaces)
                .collect();
            for ns in namespaces {
                let list = self.0.consumers.entry(ns.clone()).or_default();
                list.push(svc.key.clone());
            }
        }
        self.0.trust_domain = "cluster.local".into();
        self.0
    }
}

/// A ready endpoint of no known workload.
fn endpoint(ip: &str, port: u16) -> Endpoint {
    Endpoint {
        ip: ip.parse().unwrap(),
        port,
        health: Health::Healthy,
        identity: None,
        mtls: false,
        workload: None,
        workload_name: None,
        zone: None,
    }
}

/// Pod `name` in `namespace` at `ip`, with no labels and no ports.
fn workload(namespace: &str, name: &str, ip: &str) -> Workload {
    Workload {
        key: Key::new(namespace, name),
        ips: vec![ip.parse::<IpAddr>().unwrap()],
        labels: BTreeMap::new(),
        service_account: "default".into(),
        identity: format!("spiffe://cluster.local/ns/{namespace}/sa/default"),
        ports: Vec::new(),
        sidecar: false,
        tls_mode: TlsMode::Permissive,
        authorization: Vec::new(),
    }
}

fn workload_port(port: u16, protocol: Protocol) -> WorkloadPort {
    WorkloadPort { port, protocol }
}

/// A Sidecar in `namespace` selecting every workload there, letting them reach `hosts`
/// (`namespace/name` patterns).
fn sidecar(namespace: &str, hosts: &[&str]) -> SidecarScope {
    SidecarScope {
        key: Key::new(namespace, "sidecar"),
        selector: Selector::default(),
        hosts: hosts
            .iter()
            .map(|h| {
                let (namespace, name) = h.split_once('/').unwrap();
                HostPattern {
                    namespace: namespace.into(),
                    name: name.into(),
                }
            })
            .collect(),
        listeners: Vec::<OutboundListener>::new(),
    }
}

/// A rule of `origin` (`namespace/route#index`) that forwards what `matches` match to `backends`,
/// with nothing else set.
fn rule(
    origin: &str,
    matches: impl IntoIterator<Item = RouteMatch>,
    backends: impl IntoIterator<Item = Backend>,
) -> RouteRule {
    RouteRule {
        origin: origin.into(),
        matches: matches.into_iter().collect(),
        backends: backends.into_iter().collect(),
        timeout: None,
        backend_timeout: None,
        retry: None,
        request_headers: HeaderEdits::default(),
        response_headers: HeaderEdits::default(),
        rewrite: None,
        redirect: None,
        mirrors: Vec::new(),
        refused: None,
        failure_status: 500,
    }
}

/// All of port `port` of Service `namespace/name`.
fn to(namespace: &str, name: &str, port: u16) -> Backend {
    Backend::to(Key::new(namespace, name), port)
}

/// `to`, with a weight.
fn weighted(namespace: &str, name: &str, port: u16, weight: u32) -> Backend {
    Backend {
        weight,
        ..to(namespace, name, port)
    }
}

fn prefix(path: &str) -> RouteMatch {
    RouteMatch {
        path: Some(PathMatch::Prefix(path.into())),
        ..Default::default()
    }
}

fn exact(path: &str) -> RouteMatch {
    RouteMatch {
        path: Some(PathMatch::Exact(path.into())),
        ..Default::default()
    }
}

fn header(name: &str, value: &str) -> HeaderMatch {
    HeaderMatch {
        name: name.into(),
        value: StringMatch::Exact(value.into()),
    }
}

fn query(name: &str, value: &str) -> QueryMatch {
    QueryMatch {
        name: name.into(),
        value: StringMatch::Exact(value.into()),
    }
}

/// (name, value) pairs, as header edits hold them.
fn pairs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn secs(s: u64) -> Option<Duration> {
    Some(Duration::from_secs(s))
}

// === Reading what comes out ===

type Resources = BTreeMap<ResourceType, BTreeMap<String, Arc<Resource>>>;

/// One Service's resources, as a client that is not gRPC reads them.
fn of_service(svc: ServiceBuilder) -> Resources {
    let mut out = Resources::new();
    for r in super::service(&svc.build()).for_client(Client::Envoy) {
        out.entry(r.kind)
            .or_default()
            .insert(r.name.clone(), r.clone());
    }
    out
}

fn get<M: Message + Default>(res: &Resources, t: ResourceType, name: &str) -> M {
    let r = res
        .get(&t)
        .and_then(|m| m.get(name))
        .unwrap_or_else(|| panic!("no {t:?} {name}"));
    M::decode(&r.body.value[..]).unwrap()
}

fn names(res: &Resources, t: ResourceType) -> Vec<&str> {
    res.get(&t)
        .into_iter()
        .flat_map(|m| m.keys())
        .map(String::as_str)
        .collect()
}

fn listener(res: &Resources, name: &str) -> Listener {
    get(res, ResourceType::Listener, name)
}

fn route_config(res: &Resources, name: &str) -> RouteConfiguration {
    get(res, ResourceType::Route, name)
}

/// `ip:port` of an address.
fn socket(a: Option<&Address>) -> String {
    use weft_proto::xds::config::core::v3::socket_address::PortSpecifier;
    match a.and_then(|a| a.address.as_ref()) {
        Some(address::Address::SocketAddress(sa)) => match sa.port_specifier {
            Some(PortSpecifier::PortValue(p)) => format!("{}:{p}", sa.address),
            ref other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

/// The listener's HTTP connection manager and where it sits, for Envoy's shape and gRPC's.
fn hcm_of(l: &Listener) -> (HttpConnectionManager, Option<String>) {
    let any = match &l.api_listener {
        Some(api) => api.api_listener.clone().unwrap(),
        None => match l.filter_chains[0].filters[0].config_type.clone() {
            Some(filter::ConfigType::TypedConfig(any)) => any,
            other => panic!("{other:?}"),
        },
    };
    let addr = match l.address.as_ref().and_then(|a| a.address.as_ref()) {
        Some(address::Address::SocketAddress(sa)) => Some(sa.address.clone()),
        _ => None,
    };
    (HttpConnectionManager::decode(&any.value[..]).unwrap(), addr)
}

/// The filter chains of a listener: (destination port, application protocols, filter name).
fn chains(l: &Listener) -> Vec<(Option<u32>, Vec<String>, &str)> {
    l.filter_chains
        .iter()
        .map(|c| {
            let m = c.filter_chain_match.clone().unwrap_or_default();
            let port = m.destination_port.map(|p| p.value);
            (port, m.application_protocols, c.filters[0].name.as_str())
        })
        .collect()
}

/// Where the `tcp_proxy` of a listener's `chain` sends connections.
fn tcp_target(l: &Listener, chain: usize) -> (TcpProxy, Option<tcp_proxy::ClusterSpecifier>) {
    let Some(filter::ConfigType::TypedConfig(any)) = &l.filter_chains[chain].filters[0].config_type
    else {
        panic!("{l:?}")
    };
    let proxy = TcpProxy::decode(&any.value[..]).unwrap();
    let target = proxy.cluster_specifier.clone();
    (proxy, target)
}

/// The action of the route that matches exactly `path`.
fn action_for_path(
    rc: &RouteConfiguration,
    path: &str,
) -> weft_proto::xds::config::route::v3::route::Action {
    rc.virtual_hosts[0]
        .routes
        .iter()
        .find(|r| {
            r.r#match.as_ref().unwrap().path_specifier
                == Some(route_match::PathSpecifier::Path(path.into()))
        })
        .and_then(|r| r.action.clone())
        .unwrap_or_else(|| panic!("no route for {path}"))
}
