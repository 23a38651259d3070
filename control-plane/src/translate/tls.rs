//! mTLS in xDS's own shape, as Istio asks it of Envoy, so the decision is visible in config
//! dumps and readable by any xDS client: clusters carry `transport_socket_matches` (endpoints
//! marked `tlsMode: weft` get an UpstreamTlsContext naming the SPIFFE IDs they may present),
//! and inbound ports carry mTLS filter chains with a DownstreamTlsContext. Certificates are the
//! SDS secrets `default` and `ROOTCA`, which the sidecar serves from its own identity.

use std::collections::BTreeSet;

use weft_proto::google::protobuf::{BoolValue, Struct, Value, value::Kind};
use weft_proto::names::{CERTIFICATE_SECRET, ROOTS_SECRET, TLS_MODE, TLS_MODE_KEY};
use weft_proto::xds::config::cluster::v3::cluster::TransportSocketMatch;
use weft_proto::xds::config::core::v3::TransportSocket;
use weft_proto::xds::config::core::v3::transport_socket::ConfigType;
use weft_proto::xds::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
use weft_proto::xds::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
    SubjectAltNameMatcher, TlsParameters, UpstreamTlsContext, common_tls_context,
    subject_alt_name_matcher, tls_parameters::TlsProtocol,
};
use weft_proto::xds::r#type::matcher::v3::{StringMatcher, string_matcher};

use super::{ads, any};
use crate::model::ServicePort;

/// The metadata filter an endpoint's transport socket match is read from.
pub const TRANSPORT_SOCKET_MATCH: &str = "envoy.transport_socket_match";

fn secret(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.into(),
        sds_config: Some(ads()),
    }
}

/// What a sidecar negotiates by ALPN on mTLS: HTTP/2 first, so HTTP/1 requests between sidecars
/// share one connection.
const ALPN: [&str; 2] = ["h2", "http/1.1"];

/// The workload's certificate and the mesh roots, TLS 1.3; peers by SPIFFE ID when given; the
/// ALPN protocols offered.
fn common(peer_ids: &BTreeSet<&str>, alpn: &[&str]) -> CommonTlsContext {
    let sans = peer_ids
        .iter()
        .map(|id| SubjectAltNameMatcher {
            san_type: subject_alt_name_matcher::SanType::Uri as i32,
            matcher: Some(StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Exact(id.to_string())),
                ignore_case: false,
            }),
            ..Default::default()
        })
        .collect();
    CommonTlsContext {
        tls_params: Some(TlsParameters {
            tls_minimum_protocol_version: TlsProtocol::TlSv13 as i32,
            tls_maximum_protocol_version: TlsProtocol::TlSv13 as i32,
            ..Default::default()
        }),
        tls_certificate_sds_secret_configs: vec![secret(CERTIFICATE_SECRET)],
        alpn_protocols: alpn.iter().map(|p| p.to_string()).collect(),
        validation_context_type: Some(
            common_tls_context::ValidationContextType::CombinedValidationContext(
                common_tls_context::CombinedCertificateValidationContext {
                    default_validation_context: Some(CertificateValidationContext {
                        match_typed_subject_alt_names: sans,
                        ..Default::default()
                    }),
                    validation_context_sds_secret_config: Some(secret(ROOTS_SECRET)),
                    ..Default::default()
                },
            ),
        ),
        ..Default::default()
    }
}

fn socket(type_url: &str, msg: &impl prost::Message) -> TransportSocket {
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(ConfigType::TypedConfig(any(type_url, msg))),
    }
}

/// A Service port's transport socket matches: its endpoints with a sidecar (`tlsMode: weft`) are
/// dialed with mTLS and must present one of the port's endpoints' identities; the rest
/// plaintext. None when no endpoint has a sidecar. `offer_h2`: HTTP/1 to them is multiplexed over
/// HTTP/2 where ALPN agrees.
pub fn upstream(port: &ServicePort, offer_h2: bool) -> Vec<TransportSocketMatch> {
    if !port.endpoints.iter().any(|e| e.mtls) {
        return Vec::new();
    }
    let ids: BTreeSet<&str> = port
        .endpoints
        .iter()
        .filter(|e| e.mtls)
        .filter_map(|e| e.identity.as_deref())
        .collect();
    // An HTTP/1 port's cluster that upgrades offers HTTP/2 (`auto_config`); other ports speak
    // what they speak, and offer nothing.
    let alpn: &[&str] = match port.protocol {
        crate::model::Protocol::Http1 if offer_h2 => &ALPN,
        _ => &[],
    };
    let tls = UpstreamTlsContext {
        common_tls_context: Some(common(&ids, alpn)),
        ..Default::default()
    };
    vec![
        TransportSocketMatch {
            name: format!("{TLS_MODE_KEY}-{TLS_MODE}"),
            r#match: Some(weft_mode()),
            transport_socket: Some(socket(
                "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                &tls,
            )),
        },
        TransportSocketMatch {
            name: format!("{TLS_MODE_KEY}-disabled"),
            r#match: Some(Struct::default()),
            transport_socket: Some(TransportSocket {
                name: "envoy.transport_sockets.raw_buffer".into(),
                config_type: Some(ConfigType::TypedConfig(any(
                    "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer",
                    &RawBuffer::default(),
                ))),
            }),
        },
    ]
}

/// The mTLS socket of an inbound chain: a client certificate from the mesh is required.
pub fn downstream() -> TransportSocket {
    let tls = DownstreamTlsContext {
        common_tls_context: Some(common(&BTreeSet::new(), &ALPN)),
        require_client_certificate: Some(BoolValue { value: true }),
        ..Default::default()
    };
    socket(
        "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        &tls,
    )
}

/// An endpoint's `envoy.transport_socket_match` metadata: `tlsMode: weft` when it has a sidecar.
pub fn endpoint_match(mtls: bool) -> Option<(String, Struct)> {
    mtls.then(|| (TRANSPORT_SOCKET_MATCH.to_string(), weft_mode()))
}

/// `tlsMode: weft`: what a sidecar's endpoint says, and what its cluster's mTLS match asks for.
fn weft_mode() -> Struct {
    let mode = Value {
        kind: Some(Kind::StringValue(TLS_MODE.into())),
    };
    Struct {
        fields: [(TLS_MODE_KEY.to_string(), mode)].into(),
    }
}
