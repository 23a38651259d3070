//! LDS: a Listener becomes weft-proxy's [`Listener`]: its chains per port, what each serves, how
//! detection waits, and what the listener is (inbound, its own cluster, its fallback).

use super::*;

pub(super) fn hcm_handler(
    ctx: &Ctx<'_>,
    field: &str,
    hcm: &HttpConnectionManager,
) -> Result<Handler, Invalid> {
    // RBAC filters run, in order, before the router, which ends the list (Envoy's terminal
    // filter); anything else a request would pass through is refused unless optional.
    let mut rbac = Vec::new();
    let mut routed = false;
    for (i, f) in hcm.http_filters.iter().enumerate() {
        let typed = match &f.config_type {
            Some(weft_proto::xds::extensions::filters::network::http_connection_manager::v3::http_filter::ConfigType::TypedConfig(a)) => Some(a),
            _ => None,
        };
        let is = |name: &str, type_name: &str| {
            typed.map_or(f.name == name, |a| {
                a.type_url.rsplit('/').next() == Some(type_name)
            })
        };
        let field = format!("{field}.http_filters[{i}]");
        if routed {
            return Err(ctx.err(field, "filters after the router never run"));
        }
        if is("envoy.filters.http.router", ROUTER) {
            routed = true;
        } else if is("envoy.filters.http.rbac", rbac::HTTP_RBAC) {
            // Disabled, it runs only where a route enables it, which weft-proxy does not do.
            if f.disabled {
                continue;
            }
            let any = typed.ok_or_else(|| ctx.err(&field, "needs typed_config"))?;
            rbac.push(rbac::http(ctx, &format!("{field}.typed_config"), any)?);
        } else if !f.is_optional {
            return Err(ctx.err(field, format!("filter {} is not supported", f.name)));
        }
    }
    let authz = Authz(rbac.into());
    let normalize_path = hcm.normalize_path.is_some_and(|b| b.value);
    match &hcm.route_specifier {
        Some(http_connection_manager::RouteSpecifier::Rds(rds)) => {
            if !over_ads(rds.config_source.as_ref()) {
                return Err(ctx.err(format!("{field}.rds.config_source"), NOT_OVER_ADS));
            }
            Ok(Handler::Http {
                route_config: rds.route_config_name.clone(),
                normalize_path,
                authz,
            })
        }
        Some(http_connection_manager::RouteSpecifier::RouteConfig(rc)) => Ok(Handler::HttpInline {
            table: Arc::new(RouteTable::try_from(rc)?),
            normalize_path,
            authz,
        }),
        _ => Err(ctx.err(
            format!("{field}.route_specifier"),
            "needs rds or route_config",
        )),
    }
}

pub(super) fn filter_handler(
    ctx: &Ctx<'_>,
    field: &str,
    chain: &xl::FilterChain,
) -> Result<Handler, Invalid> {
    // Network RBAC filters, then the one filter that serves the connection.
    let Some((filter, checks)) = chain.filters.split_last() else {
        return Err(ctx.err(format!("{field}.filters"), "needs a filter"));
    };
    let mut rbac = Vec::new();
    for (i, f) in checks.iter().enumerate() {
        let at = format!("{field}.filters[{i}]");
        let Some(xl::filter::ConfigType::TypedConfig(any)) = &f.config_type else {
            return Err(ctx.err(at, "needs typed_config"));
        };
        if any.type_url.rsplit('/').next() != Some(rbac::NETWORK_RBAC) {
            return Err(ctx.err(
                at,
                format!(
                    "filter {} is not supported (before the last filter, only {})",
                    f.name,
                    rbac::NETWORK_RBAC
                ),
            ));
        }
        rbac.push(rbac::network(ctx, &format!("{at}.typed_config"), any)?);
    }
    let last = chain.filters.len() - 1;
    let Some(xl::filter::ConfigType::TypedConfig(any)) = &filter.config_type else {
        return Err(ctx.err(format!("{field}.filters[{last}]"), "needs typed_config"));
    };
    let f = format!("{field}.filters[{last}].typed_config");
    if any.type_url.ends_with(HCM) {
        // A request is authorized by the connection manager's own RBAC filters, where the
        // request is known.
        if !rbac.is_empty() {
            return Err(ctx.err(
                format!("{field}.filters[0]"),
                "an HTTP chain is authorized by HTTP RBAC filters in its connection manager",
            ));
        }
        return hcm_handler(ctx, &f, &ctx.unpack::<HttpConnectionManager>(&f, any, HCM)?);
    }
    let tcp: TcpProxy = ctx.unpack(&f, any, TCP_PROXY)?;
    let clusters = match tcp.cluster_specifier {
        Some(tcp_proxy::ClusterSpecifier::Cluster(cluster)) => {
            vec![WeightedCluster::plain(cluster, 1)]
        }
        Some(tcp_proxy::ClusterSpecifier::WeightedClusters(w)) if !w.clusters.is_empty() => {
            let mut clusters = Vec::with_capacity(w.clusters.len());
            for (i, c) in w.clusters.into_iter().enumerate() {
                // Envoy's schema: every weight at least 1, every name set.
                if c.name.is_empty() || c.weight == 0 {
                    return Err(ctx.err(
                        format!("{f}.weighted_clusters.clusters[{i}]"),
                        "needs a name and a weight of at least 1",
                    ));
                }
                clusters.push(WeightedCluster::plain(c.name, c.weight));
            }
            clusters
        }
        Some(tcp_proxy::ClusterSpecifier::WeightedClusters(_)) => {
            return Err(ctx.err(
                format!("{f}.weighted_clusters.clusters"),
                "needs at least one cluster",
            ));
        }
        _ => {
            return Err(ctx.err(
                format!("{f}.cluster_specifier"),
                "only cluster and weighted_clusters are supported",
            ));
        }
    };
    Ok(Handler::Tcp {
        clusters,
        authz: Authz(rbac.into()),
        // Envoy: unset means an hour, zero means never.
        idle_timeout: match tcp.idle_timeout.as_ref().map(duration) {
            None => Some(TCP_IDLE_TIMEOUT),
            Some(Duration::ZERO) => None,
            Some(d) => Some(d),
        },
    })
}

/// The `weft.protocol` metadata at `field`; undeclared means detect.
pub(super) fn protocol(
    ctx: &Ctx<'_>,
    field: &str,
    md: Option<&Metadata>,
) -> Result<Protocol, Invalid> {
    match protocol_and_destination(ctx, field, md)? {
        (p, false) => Ok(p),
        (_, true) => Err(ctx.err(
            format!("{field}.weft.protocol"),
            "destination=original is for listeners only",
        )),
    }
}

/// `weft.protocol`, and whether it asks (`<protocol>; destination=original`, a headless
/// Service's listener) that connections stay on the endpoint they were addressed to.
pub(super) fn protocol_and_destination(
    ctx: &Ctx<'_>,
    field: &str,
    md: Option<&Metadata>,
) -> Result<(Protocol, bool), Invalid> {
    let Some(value) = weft_string(md, "protocol") else {
        return Ok((Protocol::Detect, false));
    };
    let err = |why: String| ctx.err(format!("{field}.weft.protocol"), why);
    let (name, param) = match value.split_once(';') {
        Some((n, p)) => (n.trim(), Some(p.trim())),
        None => (value.as_str(), None),
    };
    let protocol = Protocol::parse(name).ok_or_else(|| err(format!("unknown {value:?}")))?;
    match param {
        None => Ok((protocol, false)),
        Some("destination=original") => Ok((protocol, true)),
        Some(other) => Err(err(format!("unknown parameter {other:?}"))),
    }
}

pub(super) fn protocol_of_chain(
    ctx: &Ctx<'_>,
    field: &str,
    chain: &xl::FilterChain,
) -> Result<Protocol, Invalid> {
    protocol(ctx, &format!("{field}.metadata"), chain.metadata.as_ref())
}

/// The listener filters Istio and others put on every listener that change nothing weft-proxy
/// does not already do: TLS and HTTP detection, and recovering the original destination. By
/// name, or by the type of their config.
pub(super) const INSPECTORS: [(&str, &str); 3] = [
    (
        "envoy.filters.listener.tls_inspector",
        "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
    ),
    (
        "envoy.filters.listener.http_inspector",
        "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector",
    ),
    (
        "envoy.filters.listener.original_dst",
        "envoy.extensions.filters.listener.original_dst.v3.OriginalDst",
    ),
];

pub(super) fn inspects_only(f: &xl::ListenerFilter) -> bool {
    // The config's type decides when there is one, as in Envoy; the name otherwise.
    match &f.config_type {
        Some(xl::listener_filter::ConfigType::TypedConfig(a)) => {
            let message = a.type_url.rsplit('/').next();
            INSPECTORS.iter().any(|(_, m)| Some(*m) == message)
        }
        _ => INSPECTORS.iter().any(|(name, _)| f.name == *name),
    }
}

impl TryFrom<&xl::Listener> for Listener {
    type Error = Invalid;

    fn try_from(l: &xl::Listener) -> Result<Self, Invalid> {
        let ctx = Ctx(&l.name);
        for (i, f) in l.listener_filters.iter().enumerate() {
            if !inspects_only(f) {
                return Err(ctx.err(
                    format!("listener_filters[{i}]"),
                    format!("filter {} is not supported", f.name),
                ));
            }
        }
        let mut addresses = Vec::new();
        if let Some(a) = &l.address {
            addresses.push(socket_addr(&ctx, "address", a)?);
        }
        for (i, a) in l.additional_addresses.iter().enumerate() {
            if let Some(a) = &a.address {
                addresses.push(socket_addr(
                    &ctx,
                    &format!("additional_addresses[{i}].address"),
                    a,
                )?);
            }
        }
        let (protocol, original_dst) =
            protocol_and_destination(&ctx, "metadata", l.metadata.as_ref())?;
        let inbound = l.traffic_direction == TrafficDirection::Inbound as i32;
        // Per destination port (`None`: the default chain) and transport (mTLS or plaintext),
        // the chain matched on sniffed HTTP and the one for everything else, as Envoy's
        // protocol sniffing lays them out.
        let mut slots: Vec<((Option<u16>, bool), Protocol, Slot)> = Vec::new();
        if let Some(api) = &l.api_listener {
            let any = api
                .api_listener
                .as_ref()
                .ok_or_else(|| ctx.err("api_listener.api_listener", "missing"))?;
            let hcm: HttpConnectionManager = ctx.unpack("api_listener.api_listener", any, HCM)?;
            let h = hcm_handler(&ctx, "api_listener", &hcm)?;
            slots.push(((None, false), protocol, Slot::plain(h)));
        }
        for (i, chain) in l.filter_chains.iter().enumerate() {
            let field = format!("filter_chains[{i}]");
            let h = filter_handler(&ctx, &field, chain)?;
            let (port, sniffed, tls) = chain_match(&ctx, &field, chain)?;
            if tls && port.is_none() && !inbound {
                return Err(ctx.err(
                    format!("{field}.filter_chain_match.destination_port"),
                    "mTLS is served on the inbound listener's chains",
                ));
            }
            let key = (port, tls);
            let kind = if sniffed { "sniffed HTTP" } else { "other" };
            let taken = |what: &str| match port {
                Some(p) => ctx.err(
                    format!("{field}.filter_chain_match"),
                    format!("port {p} has two filter chains for {what} connections"),
                ),
                None => ctx.err(
                    field.clone(),
                    format!("two default filter chains for {what} connections"),
                ),
            };
            // A chain says its protocol when it stands for a port (the inbound listener's
            // default chains stand for the ports no other names); else the listener does.
            let chain_protocol = match (port, inbound) {
                (None, false) => protocol,
                _ => protocol_of_chain(&ctx, &field, chain)?,
            };
            let slot = match slots.iter_mut().find(|(k, ..)| *k == key) {
                Some((_, p, _)) if *p != chain_protocol => {
                    return Err(ctx.err(
                        format!("{field}.metadata.weft.protocol"),
                        "differs from the other chain of its port",
                    ));
                }
                Some((_, _, slot)) => slot,
                None => {
                    slots.push((key, chain_protocol, Slot::default()));
                    &mut slots.last_mut().expect("pushed").2
                }
            };
            let place = if sniffed {
                &mut slot.http
            } else {
                &mut slot.other
            };
            if place.is_some() {
                return Err(taken(kind));
            }
            *place = Some(h);
        }
        let mut handler = None;
        let mut fallback = None;
        let mut by_port: Vec<PortChain> = Vec::new();
        let mut defaults: Vec<PortChain> = Vec::new();
        for ((port, tls), chain_protocol, slot) in slots {
            let (h, f) = slot.split();
            // The inbound listener's default chains serve the ports no chain names (Istio's
            // passthrough chains), mTLS and all, as a port's chains do; another listener's
            // default chain is its handler.
            if port.is_none() && !inbound {
                (handler, fallback) = (Some(h), f);
                continue;
            }
            let place = match port {
                Some(_) => &mut by_port,
                None => &mut defaults,
            };
            let port = port.unwrap_or(0);
            // A port's app: what a chain with no fallback of its own falls back to.
            let cluster = weft_proto::names::inbound_cluster(port);
            let fallback = f.unwrap_or_else(|| closed_if_guarded(&h, cluster.clone()));
            let chain = PortChain {
                port,
                protocol: chain_protocol,
                handler: h,
                fallback,
                cluster,
                tls: if tls {
                    InboundTls::Strict
                } else {
                    InboundTls::Off
                },
            };
            // mTLS and plaintext chains of one port: PERMISSIVE, served alike once decrypted.
            match place.iter_mut().find(|c| c.port == port) {
                Some(other) => {
                    let alike = PortChain {
                        tls: other.tls,
                        ..chain
                    };
                    if *other != alike {
                        return Err(ctx.err(
                            "filter_chains",
                            format!("port {port}'s mTLS and plaintext chains must serve alike"),
                        ));
                    }
                    other.tls = InboundTls::Permissive;
                }
                None => place.push(chain),
            }
        }
        let other_ports = defaults.pop();
        // Authorization is enforced where weft-proxy knows who the client is: the inbound
        // listener's chains. Anywhere else a policy would be silently not applied.
        let unenforced = [&handler, &fallback]
            .into_iter()
            .flatten()
            .chain(
                by_port
                    .iter()
                    .filter(|_| !inbound)
                    .flat_map(|c| [&c.handler, &c.fallback]),
            )
            .any(|h| !h.authz().is_empty());
        if unenforced {
            return Err(ctx.err(
                "filter_chains",
                "RBAC filters are enforced only on the per-port chains of an INBOUND listener",
            ));
        }
        if handler.is_none() && by_port.is_empty() && other_ports.is_none() {
            return Err(ctx.err("filter_chains", "no api_listener and no filter chain"));
        }
        let bind = l.api_listener.is_none()
            && l.bind_to_port.is_none_or(|b| b.value)
            && !addresses.is_empty();
        // The Service port a listener stands for: a captured one is named after it
        // (`<fqdn>:<port>`), a bound one routes by its route configuration, of the same name.
        let cluster = match (&handler, bind) {
            (Some(Handler::Http { route_config, .. }), true) => {
                weft_proto::names::cluster_of_service_listener(route_config)
            }
            (_, true) => None,
            (_, false) => weft_proto::names::cluster_of_service_listener(&l.name),
        };
        let fallback = fallback.or_else(|| cluster.clone().map(Handler::tcp_to));
        Ok(Self {
            name: l.name.clone(),
            addresses,
            protocol,
            handler,
            fallback,
            by_port,
            other_ports,
            cluster,
            inbound,
            bind,
            original_dst,
            sniffing: sniffing(l),
        })
    }
}

/// What serves the connections of an inbound port with no chain of its own for what is not
/// HTTP: opaque TCP to the app, unless the HTTP chain authorizes its requests, whose rules a
/// connection cannot be judged by: then nothing is let through that way.
fn closed_if_guarded(http: &Handler, cluster: String) -> Handler {
    let mut tcp = Handler::tcp_to(cluster);
    if !http.authz().is_empty()
        && let Handler::Tcp { authz, .. } = &mut tcp
    {
        *authz = Authz(Arc::from([crate::config::authz::Rbac {
            action: crate::config::authz::Action::Allow,
            policies: Vec::new(),
        }]));
    }
    tcp
}

/// The listener's detection wait, when it sets one. Unset, weft-proxy keeps its own default
/// (`--detect-timeout-ms`, then opaque TCP) rather than Envoy's 15 s and a close, which would
/// hold a server-first protocol for 15 s and then drop it.
pub(super) fn sniffing(l: &xl::Listener) -> Option<Sniffing> {
    let timeout = duration(l.listener_filters_timeout.as_ref()?);
    Some(Sniffing {
        timeout: (!timeout.is_zero()).then_some(timeout),
        close_on_timeout: !l.continue_on_listener_filters_timeout,
    })
}

/// A port's chains: the one for connections sniffed as HTTP and the one for the rest.
#[derive(Default)]
pub(super) struct Slot {
    http: Option<Handler>,
    other: Option<Handler>,
}

impl Slot {
    fn plain(h: Handler) -> Self {
        Self {
            http: None,
            other: Some(h),
        }
    }

    /// The handler, and what serves connections that are not HTTP when a separate chain says.
    fn split(self) -> (Handler, Option<Handler>) {
        match (self.http, self.other) {
            (Some(http), other) => (http, other),
            (None, Some(other)) => (other, None),
            (None, None) => unreachable!("a slot is made with a chain"),
        }
    }
}

/// A chain's destination port, whether it is matched on sniffed HTTP application protocols
/// (sniffed inside the TLS for an mTLS chain), and whether it is an mTLS chain: matched on
/// `transport_protocol: tls` with a TLS transport socket (a TLS socket on a chain that also
/// matched plaintext, or the reverse, is refused). Any other condition would be silently
/// ignored, so it is refused by name.
pub(super) fn chain_match(
    ctx: &Ctx<'_>,
    field: &str,
    chain: &xl::FilterChain,
) -> Result<(Option<u16>, bool, bool), Invalid> {
    let tls = match &chain.transport_socket {
        None => false,
        Some(ts) => matches!(
            tls::downstream(ctx, &format!("{field}.transport_socket"), ts)?,
            tls::Socket::Tls(())
        ),
    };
    let default = xl::FilterChainMatch::default();
    let m = chain.filter_chain_match.as_ref().unwrap_or(&default);
    match (m.transport_protocol.as_str(), tls) {
        ("tls", true) | ("" | "raw_buffer", false) => {}
        ("tls", false) => {
            return Err(ctx.err(
                format!("{field}.transport_socket"),
                "a chain matched on TLS needs a TLS transport socket (plaintext is not served as TLS)",
            ));
        }
        (_, true) => {
            return Err(ctx.err(
                format!("{field}.filter_chain_match.transport_protocol"),
                "an mTLS chain is matched on transport_protocol \"tls\"",
            ));
        }
        (other, false) => {
            return Err(ctx.err(
                format!("{field}.filter_chain_match.transport_protocol"),
                format!("{other:?} is not supported (\"tls\" or \"raw_buffer\")"),
            ));
        }
    }
    let supported = xl::FilterChainMatch {
        destination_port: m.destination_port,
        application_protocols: m.application_protocols.clone(),
        transport_protocol: m.transport_protocol.clone(),
        ..Default::default()
    };
    if *m != supported {
        return Err(ctx.err(
            format!("{field}.filter_chain_match"),
            "only destination_port, transport_protocol and application_protocols are supported",
        ));
    }
    if let Some(p) = m
        .application_protocols
        .iter()
        .find(|p| !weft_proto::names::SNIFFED_HTTP.contains(&p.as_str()))
    {
        return Err(ctx.err(
            format!("{field}.filter_chain_match.application_protocols"),
            format!("{p:?} is not sniffed; only http/1.0, http/1.1 and h2c are"),
        ));
    }
    let port = m
        .destination_port
        .map(|p| {
            u16::try_from(p.value).map_err(|_| {
                ctx.err(
                    format!("{field}.filter_chain_match.destination_port"),
                    "out of range",
                )
            })
        })
        .transpose()?;
    Ok((port, !m.application_protocols.is_empty(), tls))
}

// === Cluster ===
