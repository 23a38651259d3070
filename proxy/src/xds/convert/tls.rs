//! Transport sockets: the mTLS between sidecars, asked for in xDS's own shape (as Istio asks it
//! of Envoy) so the decision shows in config dumps. weft-proxy's certificates come from its
//! in-process identity, named as SDS secrets: `default` (its certificate and key) and `ROOTCA`
//! (the mesh roots). A TLS context that asks for anything else (inline certificates, other
//! secrets, TLS below 1.3, a server without client certificates) is refused by field, never
//! carried in plaintext.

use weft_proto::names::{CERTIFICATE_SECRET, ROOTS_SECRET};
use weft_proto::xds::config::core::v3::TransportSocket;
use weft_proto::xds::config::core::v3::transport_socket::ConfigType;
use weft_proto::xds::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, SubjectAltNameMatcher, TlsParameters,
    UpstreamTlsContext, common_tls_context, subject_alt_name_matcher, tls_parameters::TlsProtocol,
};

use super::*;

const TLS_SOCKET: &str = "envoy.transport_sockets.tls";
const RAW_SOCKET: &str = "envoy.transport_sockets.raw_buffer";
const UPSTREAM_TLS: &str = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
const DOWNSTREAM_TLS: &str = "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
const RAW_BUFFER: &str = "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer";

/// What a transport socket asks for.
pub(super) enum Socket<T> {
    /// Plaintext (`raw_buffer`).
    Plain,
    /// TLS with this context.
    Tls(T),
}

/// Reads a transport socket: `raw_buffer`, or TLS with a context of type `type_name`.
fn socket<M: Message + Default>(
    ctx: &Ctx<'_>,
    field: &str,
    ts: &TransportSocket,
    type_name: &str,
) -> Result<Socket<M>, Invalid> {
    match &ts.config_type {
        Some(ConfigType::TypedConfig(any)) if any.type_url.ends_with(RAW_BUFFER) => {
            Ok(Socket::Plain)
        }
        Some(ConfigType::TypedConfig(any)) => Ok(Socket::Tls(ctx.unpack(
            &format!("{field}.typed_config"),
            any,
            type_name,
        )?)),
        None if ts.name == RAW_SOCKET => Ok(Socket::Plain),
        None if ts.name == TLS_SOCKET => Err(ctx.err(
            format!("{field}.typed_config"),
            "a TLS transport socket needs its context",
        )),
        None => Err(ctx.err(
            format!("{field}.name"),
            format!("transport socket {:?} is not supported", ts.name),
        )),
    }
}

/// An upstream transport socket: plaintext, or mTLS with the SPIFFE IDs a peer may present
/// (empty: any of the mesh's).
pub(super) fn upstream(
    ctx: &Ctx<'_>,
    field: &str,
    ts: &TransportSocket,
) -> Result<Socket<Vec<String>>, Invalid> {
    let tls: UpstreamTlsContext = match socket(ctx, field, ts, UPSTREAM_TLS)? {
        Socket::Plain => return Ok(Socket::Plain),
        Socket::Tls(t) => t,
    };
    let field = format!("{field}.typed_config");
    let supported = UpstreamTlsContext {
        common_tls_context: tls.common_tls_context.clone(),
        // A name to send, which weft's peers do not need; harmless to accept.
        sni: tls.sni.clone(),
        max_session_keys: tls.max_session_keys,
        ..Default::default()
    };
    if tls != supported {
        return Err(ctx.err(
            field,
            "only common_tls_context and sni are supported in an UpstreamTlsContext",
        ));
    }
    let common = tls
        .common_tls_context
        .as_ref()
        .ok_or_else(|| ctx.err(format!("{field}.common_tls_context"), "missing"))?;
    common_context(ctx, &format!("{field}.common_tls_context"), common).map(Socket::Tls)
}

/// A filter chain's transport socket: plaintext, or mTLS, which must require a client
/// certificate (weft-proxy has no certificate for a host name to serve plain TLS with).
pub(super) fn downstream(
    ctx: &Ctx<'_>,
    field: &str,
    ts: &TransportSocket,
) -> Result<Socket<()>, Invalid> {
    let tls: DownstreamTlsContext = match socket(ctx, field, ts, DOWNSTREAM_TLS)? {
        Socket::Plain => return Ok(Socket::Plain),
        Socket::Tls(t) => t,
    };
    let field = format!("{field}.typed_config");
    if !tls.require_client_certificate.is_some_and(|b| b.value) {
        return Err(ctx.err(
            format!("{field}.require_client_certificate"),
            "weft-proxy serves mTLS only: client certificates are required",
        ));
    }
    let supported = DownstreamTlsContext {
        common_tls_context: tls.common_tls_context.clone(),
        require_client_certificate: tls.require_client_certificate,
        ..Default::default()
    };
    if tls != supported {
        return Err(ctx.err(
            field,
            "only common_tls_context and require_client_certificate are supported in a DownstreamTlsContext",
        ));
    }
    let common = tls
        .common_tls_context
        .as_ref()
        .ok_or_else(|| ctx.err(format!("{field}.common_tls_context"), "missing"))?;
    let ids = common_context(ctx, &format!("{field}.common_tls_context"), common)?;
    if !ids.is_empty() {
        return Err(ctx.err(
            format!("{field}.common_tls_context.combined_validation_context"),
            "matching client SANs is authorization's (RBAC), not the TLS context's",
        ));
    }
    Ok(Socket::Tls(()))
}

/// The certificate and roots from weft's own secrets, TLS 1.3; the SPIFFE IDs a peer may have.
fn common_context(
    ctx: &Ctx<'_>,
    field: &str,
    c: &CommonTlsContext,
) -> Result<Vec<String>, Invalid> {
    let supported = CommonTlsContext {
        tls_params: c.tls_params.clone(),
        tls_certificate_sds_secret_configs: c.tls_certificate_sds_secret_configs.clone(),
        alpn_protocols: c.alpn_protocols.clone(),
        validation_context_type: c.validation_context_type.clone(),
        ..Default::default()
    };
    if *c != supported {
        return Err(ctx.err(
            field,
            "certificates come from SDS secrets `default` and `ROOTCA` only (no inline certificates or providers)",
        ));
    }
    if let Some(p) = &c.tls_params {
        let v13 = TlsProtocol::TlSv13 as i32;
        let auto = TlsProtocol::TlsAuto as i32;
        let ok =
            *p == TlsParameters {
                tls_minimum_protocol_version: p.tls_minimum_protocol_version,
                tls_maximum_protocol_version: p.tls_maximum_protocol_version,
                ..Default::default()
            } && [auto, v13].contains(&p.tls_maximum_protocol_version)
                && p.tls_minimum_protocol_version <= v13;
        if !ok {
            return Err(ctx.err(
                format!("{field}.tls_params"),
                "weft-proxy speaks TLS 1.3 only, with its own cipher suites",
            ));
        }
    }
    match c.tls_certificate_sds_secret_configs.as_slice() {
        [SdsSecretConfig { name, .. }] if name == CERTIFICATE_SECRET => {}
        _ => {
            return Err(ctx.err(
                format!("{field}.tls_certificate_sds_secret_configs"),
                format!("exactly one secret, {CERTIFICATE_SECRET:?}, the workload's certificate"),
            ));
        }
    }
    use common_tls_context::ValidationContextType as V;
    let roots_named = |s: Option<&SdsSecretConfig>, at: &str| match s {
        Some(s) if s.name == ROOTS_SECRET => Ok(()),
        _ => Err(ctx.err(
            format!("{field}.{at}"),
            format!("the roots are secret {ROOTS_SECRET:?}, the mesh's"),
        )),
    };
    match &c.validation_context_type {
        Some(V::ValidationContextSdsSecretConfig(s)) => {
            roots_named(Some(s), "validation_context_sds_secret_config")?;
            Ok(Vec::new())
        }
        Some(V::CombinedValidationContext(combined)) => {
            let at = "combined_validation_context";
            roots_named(
                combined.validation_context_sds_secret_config.as_ref(),
                &format!("{at}.validation_context_sds_secret_config"),
            )?;
            let Some(default) = &combined.default_validation_context else {
                return Ok(Vec::new());
            };
            let only_sans = weft_proto::xds::extensions::transport_sockets::tls::v3::CertificateValidationContext {
                match_typed_subject_alt_names: default.match_typed_subject_alt_names.clone(),
                ..Default::default()
            };
            if *default != only_sans {
                return Err(ctx.err(
                    format!("{field}.{at}.default_validation_context"),
                    "only match_typed_subject_alt_names is supported",
                ));
            }
            default
                .match_typed_subject_alt_names
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    spiffe_id(ctx, &format!("{field}.{at}.default_validation_context.match_typed_subject_alt_names[{i}]"), m)
                })
                .collect()
        }
        _ => Err(ctx.err(
            format!("{field}.validation_context_type"),
            format!("the peer is checked against secret {ROOTS_SECRET:?} (validation_context_sds_secret_config or combined_validation_context)"),
        )),
    }
}

/// A URI SAN matched exactly: a SPIFFE ID.
fn spiffe_id(ctx: &Ctx<'_>, field: &str, m: &SubjectAltNameMatcher) -> Result<String, Invalid> {
    let uri = m.san_type == subject_alt_name_matcher::SanType::Uri as i32;
    match &m.matcher {
        Some(StringMatcher {
            match_pattern: Some(string_matcher::MatchPattern::Exact(id)),
            ignore_case: false,
        }) if uri && id.starts_with("spiffe://") => Ok(id.clone()),
        _ => Err(ctx.err(
            field,
            "only URI SANs matched exactly against a spiffe:// ID are supported",
        )),
    }
}
