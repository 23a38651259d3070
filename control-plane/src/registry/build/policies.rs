//! TrafficPolicies onto the Services they target.

use super::*;

pub(super) fn attach_policies(
    objects: &Objects,
    services: &mut BTreeMap<Key, Service>,
    b: &mut Builder,
) {
    for (key, tp) in &objects.traffic_policies {
        let spec = &tp.spec;
        let policy = TrafficPolicy {
            load_balancer: match spec.load_balancer {
                None | Some(LoadBalancerKind::LeastRequest) => LoadBalancer::LeastRequest,
                Some(LoadBalancerKind::RoundRobin) => LoadBalancer::RoundRobin,
                Some(LoadBalancerKind::Random) => LoadBalancer::Random,
            },
            limits: spec
                .connection_pool
                .as_ref()
                .map(|c| ConnectionLimits {
                    max_connections: c.max_connections,
                    max_pending_requests: c.max_pending_requests,
                    max_requests: c.max_requests,
                    max_retries: c.max_retries,
                    idle_timeout: duration(
                        b,
                        "TrafficPolicy",
                        key,
                        "connectionPool.idleTimeout",
                        c.idle_timeout.as_deref(),
                    ),
                    h2_upgrade: c.h2_upgrade,
                })
                .unwrap_or_default(),
            outlier_detection: spec.outlier_detection.as_ref().map(|o| OutlierDetection {
                consecutive_5xx: o.consecutive_5xx_errors.unwrap_or(5),
                interval: duration(b, "TrafficPolicy", key, "interval", o.interval.as_deref())
                    .unwrap_or(Duration::from_secs(10)),
                base_ejection_time: duration(
                    b,
                    "TrafficPolicy",
                    key,
                    "baseEjectionTime",
                    o.base_ejection_time.as_deref(),
                )
                .unwrap_or(Duration::from_secs(30)),
                max_ejection_percent: o.max_ejection_percent.unwrap_or(10).min(100),
            }),
            timeout: duration(b, "TrafficPolicy", key, "timeout", spec.timeout.as_deref()),
            retry: spec.retry.as_ref().map(|r| {
                let codes: Vec<i64> = r.codes.iter().map(|c| i64::from(*c)).collect();
                retry(
                    b,
                    "TrafficPolicy",
                    key,
                    i64::from(r.attempts),
                    &codes,
                    r.backoff.as_deref(),
                )
            }),
        };
        for target in &spec.target_refs {
            if !is_service_ref(Some(&target.group), Some(&target.kind)) {
                b.warn(
                    "TrafficPolicy",
                    key,
                    format!("targetRef {} {}: only Services", target.kind, target.name),
                );
                continue;
            }
            let svc_key = Key::new(&key.namespace, &target.name);
            match services.get_mut(&svc_key) {
                Some(svc) if svc.policy.is_none() => svc.policy = Some(policy.clone()),
                Some(_) => b.warn(
                    "TrafficPolicy",
                    key,
                    format!("Service {svc_key} already has a TrafficPolicy: ignored for it"),
                ),
                None => b.warn(
                    "TrafficPolicy",
                    key,
                    format!("Service {svc_key} does not exist"),
                ),
            }
        }
    }
}
