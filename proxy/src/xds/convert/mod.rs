//! xDS protos -> weft-proxy config, at the edge: one file per resource kind (`lds.rs`,
//! `cds.rs`, `eds.rs`, `rds.rs`), with what they share here (the error type, resource contexts,
//! addresses, durations, config sources, weft's metadata). Every error names the resource and
//! the field, and becomes the NACK's message.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use weft_proto::google::protobuf::{Any, value::Kind};
use weft_proto::xds::config::cluster::v3::{self as xc, cluster};
use weft_proto::xds::config::core::v3::{
    Address, HealthStatus, Metadata, TrafficDirection, address, config_source, socket_address,
};
use weft_proto::xds::config::endpoint::v3::{ClusterLoadAssignment, LbEndpoint, lb_endpoint};
use weft_proto::xds::config::listener::v3 as xl;
use weft_proto::xds::config::route::v3::{
    self as xr, header_matcher, query_parameter_matcher, route, route_action, route_match,
};
use weft_proto::xds::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use weft_proto::xds::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use weft_proto::xds::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use weft_proto::xds::r#type::matcher::v3::{StringMatcher, string_matcher};

use crate::config::authz::Authz;
use crate::config::edits::{Append, Edits, HeaderEdits, Put};
use crate::config::rewrite::{PathRewrite, Redirect, Rewrite};
use crate::config::route::{DirectResponse, MirrorPolicy};
use crate::config::{
    Assignment, Cluster, DnsFamily, DnsHost, DnsTargets, EndpointConfig, Handler, HeaderMatch,
    InboundTls, LbPolicy, Listener, OVERPROVISIONING, PathMatch, PortChain, Protocol, QueryMatch,
    Route, RouteTable, Security, Sniffing, StringMatch, TCP_IDLE_TIMEOUT, Transport,
    TransportMatch, UpstreamHttp, VirtualHost, WeightedCluster, route::full_regex,
};

/// A resource weft-proxy cannot apply.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{resource}: {field}: {reason}")]
pub struct Invalid {
    /// Resource name.
    pub resource: String,
    /// The offending field, as a proto path.
    pub field: String,
    /// Why.
    pub reason: String,
}

pub(super) struct Ctx<'a>(&'a str);

impl Ctx<'_> {
    pub(super) fn err(&self, field: impl Into<String>, reason: impl Into<String>) -> Invalid {
        Invalid {
            resource: self.0.to_string(),
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(super) fn unpack<M: Message + Default>(
        &self,
        field: &str,
        any: &Any,
        type_name: &str,
    ) -> Result<M, Invalid> {
        if any.type_url.rsplit('/').next() != Some(type_name) {
            return Err(self.err(field, format!("unsupported type {}", any.type_url)));
        }
        M::decode(&any.value[..]).map_err(|e| self.err(field, format!("cannot decode: {e}")))
    }
}

pub(super) const HCM: &str =
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
pub(super) const TCP_PROXY: &str = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
pub(super) const ROUTER: &str = "envoy.extensions.filters.http.router.v3.Router";
pub(super) const HTTP_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
/// Upstream idle timeout when the cluster sets none: under nginx's 75 s keep-alive, so the proxy
/// rather than the upstream usually closes an idle connection (no request lost to that race).
pub(super) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

pub(super) fn socket_addr(ctx: &Ctx<'_>, field: &str, a: &Address) -> Result<SocketAddr, Invalid> {
    let (host, port) = host_port(ctx, field, a)?;
    let ip: IpAddr = host
        .parse()
        .map_err(|_| ctx.err(format!("{field}.address"), format!("{host:?} is not an IP")))?;
    Ok(SocketAddr::new(ip, port))
}

/// The address (an IP, or for a DNS cluster a name) and port of a socket address.
pub(super) fn host_port<'a>(
    ctx: &Ctx<'_>,
    field: &str,
    a: &'a Address,
) -> Result<(&'a str, u16), Invalid> {
    let Some(address::Address::SocketAddress(sa)) = &a.address else {
        return Err(ctx.err(field, "only socket addresses are supported"));
    };
    let Some(socket_address::PortSpecifier::PortValue(port)) = sa.port_specifier else {
        return Err(ctx.err(format!("{field}.port_value"), "missing"));
    };
    let port =
        u16::try_from(port).map_err(|_| ctx.err(format!("{field}.port_value"), "out of range"))?;
    if !sa.resolver_name.is_empty() {
        return Err(ctx.err(
            format!("{field}.resolver_name"),
            "custom resolvers are not supported (weft-proxy uses the system resolver)",
        ));
    }
    Ok((&sa.address, port))
}

pub(super) fn weft_string(md: Option<&Metadata>, key: &str) -> Option<String> {
    let field = md?.filter_metadata.get("weft")?.fields.get(key)?;
    match &field.kind {
        Some(Kind::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

pub(super) fn duration(d: &weft_proto::google::protobuf::Duration) -> Duration {
    Duration::new(
        u64::try_from(d.seconds).unwrap_or(0),
        u32::try_from(d.nanos).unwrap_or(0),
    )
}

/// Whether a config source can be fetched over the one stream weft-proxy has: `ads`; `self` (the
/// server that sent the resource), which gRPC's xDS clients and some servers use for the same;
/// or a gRPC `api_config_source`, which go-control-plane's examples use and Envoy would fetch on
/// a stream of its own to the cluster it names, in practice the same control plane. REST and
/// file sources are not.
pub(super) fn over_ads(source: Option<&weft_proto::xds::config::core::v3::ConfigSource>) -> bool {
    use weft_proto::xds::config::core::v3::api_config_source::ApiType;
    match source.and_then(|s| s.config_source_specifier.as_ref()) {
        Some(
            config_source::ConfigSourceSpecifier::Ads(_)
            | config_source::ConfigSourceSpecifier::Self_(_),
        ) => true,
        Some(config_source::ConfigSourceSpecifier::ApiConfigSource(api)) => matches!(
            ApiType::try_from(api.api_type),
            Ok(ApiType::Grpc
                | ApiType::DeltaGrpc
                | ApiType::AggregatedGrpc
                | ApiType::AggregatedDeltaGrpc)
        ),
        _ => false,
    }
}

/// Why [`over_ads`] refused a config source.
pub(super) const NOT_OVER_ADS: &str = "only ADS, self and gRPC config sources are supported (weft-proxy fetches them on its ADS stream)";

// === Listener ===

mod cds;
mod eds;
mod lds;
mod rbac;
mod rds;
mod tls;

pub use self::eds::load_assignment;
use self::{eds::*, rds::*};

#[cfg(test)]
mod tests;
