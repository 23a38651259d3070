//! EDS: a ClusterLoadAssignment becomes an [`Assignment`]: endpoints with their priority, health
//! and weight.

use super::*;

/// Whether an endpoint may take traffic, as its EDS health says; `None` for DRAINING, which
/// Envoy excludes: it takes no traffic and does not count against its priority's health (half
/// a priority draining in a rollout must not send a third of the requests to another zone).
/// UNHEALTHY, DEGRADED and TIMEOUT take none but do count.
pub(super) fn health(lb: &LbEndpoint) -> Option<bool> {
    match HealthStatus::try_from(lb.health_status) {
        Ok(HealthStatus::Draining) => None,
        status => Some(matches!(
            status,
            Ok(HealthStatus::Healthy | HealthStatus::Unknown)
        )),
    }
}

/// An endpoint's relative weight: 1 unless set, and never 0.
pub(super) fn weight(lb: &LbEndpoint) -> u32 {
    lb.load_balancing_weight.map_or(1, |w| w.value.max(1))
}

/// The endpoints of an assignment, each with its priority and health, and the factor the
/// balancer stretches a priority's health by before moving load on (failover is the
/// balancer's).
pub(super) fn endpoints(ctx: &Ctx<'_>, cla: &ClusterLoadAssignment) -> Result<Assignment, Invalid> {
    // Envoy's validation refuses 0.
    let overprovisioning = cla
        .policy
        .as_ref()
        .and_then(|p| p.overprovisioning_factor.as_ref())
        .map_or(OVERPROVISIONING, |f| f.value);
    if overprovisioning == 0 {
        return Err(ctx.err("policy.overprovisioning_factor", "must be more than 0"));
    }
    let mut out = Vec::new();
    for (i, loc) in cla.endpoints.iter().enumerate() {
        for (j, lb) in loc.lb_endpoints.iter().enumerate() {
            let field = format!("endpoints[{i}].lb_endpoints[{j}]");
            let Some(healthy) = health(lb) else { continue };
            let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = &lb.host_identifier else {
                return Err(ctx.err(format!("{field}.endpoint"), "missing"));
            };
            let addr = ep
                .address
                .as_ref()
                .ok_or_else(|| ctx.err(format!("{field}.endpoint.address"), "missing"))?;
            out.push(EndpointConfig {
                addr: socket_addr(ctx, &format!("{field}.endpoint.address"), addr)?,
                weight: weight(lb),
                identity: weft_string(lb.metadata.as_ref(), "identity"),
                workload: (!ep.hostname.is_empty()).then(|| ep.hostname.clone()),
                priority: loc.priority,
                healthy,
                transport_match: transport_match(lb.metadata.as_ref()),
            });
        }
    }
    Ok(Assignment {
        endpoints: out,
        overprovisioning,
    })
}

/// The string fields of an endpoint's `envoy.transport_socket_match` metadata, which its
/// cluster's transport socket matches are met against.
pub(super) fn transport_match(md: Option<&Metadata>) -> Vec<(String, String)> {
    let Some(s) = md.and_then(|m| m.filter_metadata.get("envoy.transport_socket_match")) else {
        return Vec::new();
    };
    s.fields
        .iter()
        .filter_map(|(k, v)| match &v.kind {
            Some(Kind::StringValue(s)) => Some((k.clone(), s.clone())),
            _ => None,
        })
        .collect()
}

/// The endpoints of a ClusterLoadAssignment.
pub fn load_assignment(cla: &ClusterLoadAssignment) -> Result<Assignment, Invalid> {
    endpoints(&Ctx(&cla.cluster_name), cla)
}

// === Routes ===
