//! The names of the resources translation makes, in one place: listeners refer to clusters and
//! route configurations by these, and routes to clusters, so each kind's module reads them here
//! rather than from another's.

use std::net::SocketAddr;

use crate::model::{Backend, Key, fqdn};

/// Name of the per-proxy inbound listener.
pub const INBOUND_LISTENER: &str = "inbound";

/// Where inbound connections to ports no chain names go: where they were headed (Istio's name).
pub const INBOUND_PASSTHROUGH_CLUSTER: &str = "InboundPassthroughCluster";

/// `outbound|<port>||<fqdn>`, Istio's name, which dashboards and users already know.
pub fn cluster_name(service: &Key, port: u16) -> String {
    weft_proto::names::service_cluster(&fqdn(service), port)
}

/// `inbound|<port>||`: the local app behind the sidecar.
pub fn inbound_cluster_name(port: u16) -> String {
    weft_proto::names::inbound_cluster(port)
}

/// `<fqdn>:<port>`, the name gRPC clients ask for when dialing `xds:///<fqdn>:<port>`; also
/// the name of the port's route configuration.
pub fn service_listener_name(service: &Key, port: u16) -> String {
    weft_proto::names::service_listener(&fqdn(service), port)
}

/// `outbound|<bind>`, for a listener weft-proxy binds itself.
pub fn explicit_name(bind: SocketAddr) -> String {
    format!("outbound|{bind}")
}

/// The cluster a backend's share goes to. An unresolved backend gets a name no client has a
/// cluster for: its share fails (Envoy answers it with `cluster_not_found_response_code`)
/// instead of moving to the other backends.
pub fn backend_cluster_name(b: &Backend) -> String {
    match b.unresolved {
        false => cluster_name(&b.service, b.port),
        true => format!("unresolved|{}|{}", b.service, b.port),
    }
}
