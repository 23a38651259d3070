//! EDS: the endpoints of one Service port, grouped by zone, each with its workload identity.

use std::collections::BTreeMap;

use weft_proto::google::protobuf::UInt32Value;
use weft_proto::xds::config::core::v3::{
    Address, HealthStatus, Locality, Metadata, SocketAddress, address,
    socket_address::PortSpecifier,
};
use weft_proto::xds::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};

use super::{cluster_name, weft_metadata};
use crate::model::{Service, ServicePort};

/// An endpoint's identity (`weft.identity`), and `envoy.transport_socket_match` `tlsMode: weft`
/// when it runs a sidecar.
fn metadata(ep: &crate::model::Endpoint) -> Option<Metadata> {
    let mut md = ep.identity.clone().map(|id| weft_metadata("identity", id));
    if let Some((key, value)) = super::tls::endpoint_match(ep.mtls) {
        md.get_or_insert_default()
            .filter_metadata
            .insert(key, value);
    }
    md
}

/// The load assignment for one Service port.
///
/// Every endpoint listed is marked HEALTHY: the model already left out terminating endpoints
/// unless nothing else is ready, and in that case clients must use them (Envoy and gRPC both skip
/// DRAINING ones). Each locality's weight is its endpoint count, because gRPC ignores localities
/// without a weight and Envoy then balances in proportion to size.
pub fn load_assignment(svc: &Service, port: &ServicePort) -> ClusterLoadAssignment {
    let mut by_zone: BTreeMap<&str, Vec<LbEndpoint>> = BTreeMap::new();
    for ep in &port.endpoints {
        let endpoint = Endpoint {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: ep.ip.to_string(),
                    port_specifier: Some(PortSpecifier::PortValue(u32::from(ep.port))),
                    ..Default::default()
                })),
            }),
            // `<workload>.<namespace>`: what the proxy's metrics report as the destination
            // workload (one map entry more in the metadata would make versions unstable).
            hostname: match (&ep.workload, &ep.workload_name) {
                (Some(key), Some(name)) => format!("{name}.{}", key.namespace),
                _ => String::new(),
            },
            ..Default::default()
        };
        by_zone
            .entry(ep.zone.as_deref().unwrap_or_default())
            .or_default()
            .push(LbEndpoint {
                host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(endpoint)),
                health_status: HealthStatus::Healthy as i32,
                metadata: metadata(ep),
                load_balancing_weight: Some(UInt32Value { value: 1 }),
            });
    }
    ClusterLoadAssignment {
        cluster_name: cluster_name(&svc.key, port.port),
        endpoints: by_zone
            .into_iter()
            .map(|(zone, lb_endpoints)| LocalityLbEndpoints {
                locality: Some(Locality {
                    zone: zone.to_string(),
                    ..Default::default()
                }),
                load_balancing_weight: Some(UInt32Value {
                    value: u32::try_from(lb_endpoints.len()).unwrap_or(u32::MAX),
                }),
                lb_endpoints,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}
