//! CDS: a Cluster becomes weft-proxy's [`Cluster`]: balancing, timeouts, the HTTP version spoken
//! upstream, where its endpoints come from (EDS, static, DNS).

use super::*;

pub(super) fn lb_from_policy(ctx: &Ctx<'_>, c: &xc::Cluster) -> Result<LbPolicy, Invalid> {
    if let Some(p) = &c.load_balancing_policy {
        for pol in &p.policies {
            let url = pol
                .typed_extension_config
                .as_ref()
                .and_then(|t| t.typed_config.as_ref())
                .map(|a| a.type_url.as_str())
                .unwrap_or_default();
            let lb = match url.rsplit('.').next() {
                Some("LeastRequest") => LbPolicy::LeastRequest,
                Some("RoundRobin") => LbPolicy::RoundRobin,
                Some("Random") => LbPolicy::Random,
                _ => continue,
            };
            return Ok(lb);
        }
        return Err(ctx.err(
            "load_balancing_policy.policies",
            "none of the policies is supported",
        ));
    }
    match cluster::LbPolicy::try_from(c.lb_policy) {
        Ok(cluster::LbPolicy::RoundRobin) => Ok(LbPolicy::RoundRobin),
        Ok(cluster::LbPolicy::LeastRequest) => Ok(LbPolicy::LeastRequest),
        Ok(cluster::LbPolicy::Random) => Ok(LbPolicy::Random),
        _ => Err(ctx.err("lb_policy", format!("{} is not supported", c.lb_policy))),
    }
}

/// mTLS as Istio's auto-mTLS asks it: per endpoint by `transport_socket_matches`, else for
/// the whole cluster by `transport_socket`.
pub(super) fn transport(ctx: &Ctx<'_>, c: &xc::Cluster) -> Result<Transport, Invalid> {
    let security = |field: &str, ts: &_| -> Result<Security, Invalid> {
        Ok(match tls::upstream(ctx, field, ts)? {
            tls::Socket::Plain => Security::Plaintext,
            tls::Socket::Tls(ids) => Security::Mtls {
                peer_ids: Arc::from(ids),
            },
        })
    };
    let mut transport = Transport::default();
    if let Some(ts) = &c.transport_socket {
        transport.default = security("transport_socket", ts)?;
    }
    for (i, m) in c.transport_socket_matches.iter().enumerate() {
        let field = format!("transport_socket_matches[{i}]");
        let ts = m
            .transport_socket
            .as_ref()
            .ok_or_else(|| ctx.err(format!("{field}.transport_socket"), "missing"))?;
        let security = security(&format!("{field}.transport_socket"), ts)?;
        let mut criteria = Vec::new();
        for (k, v) in m.r#match.iter().flat_map(|s| &s.fields) {
            match &v.kind {
                Some(Kind::StringValue(s)) => criteria.push((k.clone(), s.clone())),
                _ => {
                    return Err(ctx.err(
                        format!("{field}.match.{k}"),
                        "only string values are supported",
                    ));
                }
            }
        }
        transport.matches.push(TransportMatch {
            name: m.name.clone(),
            criteria,
            security,
        });
    }
    Ok(transport)
}

impl TryFrom<&xc::Cluster> for Cluster {
    type Error = Invalid;

    fn try_from(c: &xc::Cluster) -> Result<Self, Invalid> {
        let ctx = Ctx(&c.name);
        let transport = transport(&ctx, c)?;
        // Active health checking: accepting it would leave endpoints it should fail in use.
        refuse(&ctx, "", [("health_checks", !c.health_checks.is_empty())])?;
        let kind = match c.cluster_discovery_type {
            Some(cluster::ClusterDiscoveryType::Type(t)) => {
                cluster::DiscoveryType::try_from(t).ok()
            }
            None => Some(cluster::DiscoveryType::Static),
            Some(_) => None,
        };
        let mut dns = None;
        let (eds, static_endpoints) = match kind {
            Some(cluster::DiscoveryType::Eds) => {
                let source = c
                    .eds_cluster_config
                    .as_ref()
                    .and_then(|e| e.eds_config.as_ref());
                if !over_ads(source) {
                    return Err(ctx.err("eds_cluster_config.eds_config", NOT_OVER_ADS));
                }
                // Istio names the assignment `outbound|port|subset|host` under other cluster
                // names; Envoy subscribes to `service_name` when set.
                let service = c
                    .eds_cluster_config
                    .as_ref()
                    .map(|e| e.service_name.as_str())
                    .filter(|s| !s.is_empty())
                    .unwrap_or(&c.name);
                (Some(service.to_string()), None)
            }
            Some(cluster::DiscoveryType::Static) => {
                // None is a cluster of no endpoints, as Envoy has it (Istio's BlackHoleCluster).
                let eps = match &c.load_assignment {
                    Some(cla) => endpoints(&ctx, cla)?,
                    None => Assignment::new(Vec::new()),
                };
                (None, Some(eps))
            }
            // Where each connection was headed, known only when it comes.
            Some(cluster::DiscoveryType::OriginalDst) => (None, None),
            Some(t @ (cluster::DiscoveryType::StrictDns | cluster::DiscoveryType::LogicalDns)) => {
                let logical = t == cluster::DiscoveryType::LogicalDns;
                dns = Some(Arc::new(dns_targets(&ctx, c, logical)?));
                (None, None)
            }
            _ => {
                return Err(ctx.err(
                    "type",
                    "only EDS, STATIC, STRICT_DNS, LOGICAL_DNS and ORIGINAL_DST clusters are supported",
                ));
            }
        };
        // The deprecated cluster field many servers still send to mark gRPC upstreams;
        // `typed_extension_protocol_options`, when present, decides.
        #[allow(deprecated)]
        let mut upstream_http = match c.http2_protocol_options {
            Some(_) => UpstreamHttp::Http2,
            None => UpstreamHttp::Http1,
        };
        let mut idle_timeout = DEFAULT_IDLE_TIMEOUT;
        for (k, any) in &c.typed_extension_protocol_options {
            if k != HTTP_OPTIONS {
                return Err(ctx.err(
                    format!("typed_extension_protocol_options[{k}]"),
                    "not supported",
                ));
            }
            let opts: HttpProtocolOptions =
                ctx.unpack("typed_extension_protocol_options", any, HTTP_OPTIONS)?;
            if let Some(t) = opts
                .common_http_protocol_options
                .as_ref()
                .and_then(|c| c.idle_timeout.as_ref())
            {
                // Envoy reads zero as "never"; a connection that is never closed is what an
                // hour amounts to for a sidecar, and keeps the sweeper's arithmetic simple.
                idle_timeout = match duration(t) {
                    Duration::ZERO => Duration::from_secs(3600),
                    d => d,
                };
            }
            use http_protocol_options::UpstreamProtocolOptions as Upstream;
            use http_protocol_options::explicit_http_config::ProtocolConfig;
            upstream_http = match opts.upstream_protocol_options {
                None => UpstreamHttp::Http1,
                Some(Upstream::ExplicitHttpConfig(e)) => match e.protocol_config {
                    Some(ProtocolConfig::Http2ProtocolOptions(_)) => UpstreamHttp::Http2,
                    Some(ProtocolConfig::HttpProtocolOptions(_)) | None => UpstreamHttp::Http1,
                    Some(ProtocolConfig::Http3ProtocolOptions(_)) => {
                        return Err(ctx.err(
                            "typed_extension_protocol_options.upstream_protocol_options",
                            "HTTP/3 is not supported",
                        ));
                    }
                },
                Some(Upstream::UseDownstreamProtocolConfig(_)) => UpstreamHttp::Downstream,
                // ALPN picks the version, and plaintext has none: HTTP/1.1 there, as Envoy's.
                Some(Upstream::AutoConfig(_)) => UpstreamHttp::Negotiated,
            };
        }
        let original_dst = kind == Some(cluster::DiscoveryType::OriginalDst);
        Ok(Self {
            transport,
            name: c.name.clone(),
            // An ORIGINAL_DST cluster's balancer is the connection itself (CLUSTER_PROVIDED).
            lb: match original_dst {
                true => LbPolicy::LeastRequest,
                false => lb_from_policy(&ctx, c)?,
            },
            original_dst,
            upstream_http,
            connect_timeout: c
                .connect_timeout
                .as_ref()
                .map_or(Duration::from_secs(5), duration),
            idle_timeout,
            static_endpoints,
            eds,
            dns,
        })
    }
}

/// The names a STRICT_DNS or LOGICAL_DNS cluster resolves, from its `load_assignment`, which
/// holds host names where an EDS one holds addresses.
pub(super) fn dns_targets(
    ctx: &Ctx<'_>,
    c: &xc::Cluster,
    logical: bool,
) -> Result<DnsTargets, Invalid> {
    #[allow(deprecated)]
    let custom_resolver = [
        ("dns_resolvers", !c.dns_resolvers.is_empty()),
        ("dns_resolution_config", c.dns_resolution_config.is_some()),
        (
            "typed_dns_resolver_config",
            c.typed_dns_resolver_config.is_some(),
        ),
    ];
    // Lookups go through the system resolver: another one asked for would be silently unused.
    refuse(ctx, "", custom_resolver)?;
    let cla = c.load_assignment.as_ref().ok_or_else(|| {
        ctx.err(
            "load_assignment",
            "missing: a DNS cluster names its hosts there",
        )
    })?;
    let mut hosts = Vec::new();
    for (i, loc) in cla.endpoints.iter().enumerate() {
        for (j, lb) in loc.lb_endpoints.iter().enumerate() {
            let field =
                format!("load_assignment.endpoints[{i}].lb_endpoints[{j}].endpoint.address");
            // A host the control plane says is not healthy is left out (its name is not
            // looked up, so it cannot count in its priority's health as an EDS endpoint does).
            if health(lb) != Some(true) {
                continue;
            }
            let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = &lb.host_identifier else {
                return Err(ctx.err(field, "missing"));
            };
            let address = ep
                .address
                .as_ref()
                .ok_or_else(|| ctx.err(&field, "missing"))?;
            let (host, port) = host_port(ctx, &field, address)?;
            if host.is_empty() {
                return Err(ctx.err(format!("{field}.address"), "empty"));
            }
            hosts.push(DnsHost {
                host: host.to_string(),
                port,
                weight: weight(lb),
                priority: loc.priority,
            });
        }
    }
    // As Envoy: a LOGICAL_DNS cluster is one logical host.
    if logical && hosts.len() != 1 {
        return Err(ctx.err(
            "load_assignment",
            "a LOGICAL_DNS cluster has exactly one endpoint",
        ));
    }
    use cluster::DnsLookupFamily as F;
    let family = match F::try_from(c.dns_lookup_family) {
        Ok(F::Auto) => DnsFamily::Auto,
        Ok(F::V4Only) => DnsFamily::V4Only,
        Ok(F::V6Only) => DnsFamily::V6Only,
        Ok(F::V4Preferred) => DnsFamily::V4Preferred,
        Ok(F::All) => DnsFamily::All,
        Err(_) => return Err(ctx.err("dns_lookup_family", "unknown value")),
    };
    // Envoy's default is 5 s, and it refuses anything under 1 ms. (Deprecated for the DNS
    // cluster extension, which go-control-plane's example and most servers do not send yet.)
    #[allow(deprecated)]
    let refresh = c
        .dns_refresh_rate
        .as_ref()
        .map_or(Duration::from_secs(5), duration);
    if refresh <= Duration::from_millis(1) {
        return Err(ctx.err("dns_refresh_rate", "must be more than 1ms"));
    }
    Ok(DnsTargets {
        hosts,
        family,
        refresh,
        logical,
    })
}

// === Endpoints ===
