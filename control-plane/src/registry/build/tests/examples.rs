//! `examples/shop` as the Mesh it describes: what its comments promise, read at the model.

use super::*;

fn shop() -> Mesh {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shop");
    let (objects, warnings) = crate::registry::file::load_dir(&dir).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let (mesh, warnings) = build(&objects, "cluster.local");
    assert!(warnings.is_empty(), "{warnings:?}");
    mesh
}

/// Reviews' canary: testers (`x-canary: yes`) always get v2, everyone else 90/10 with a
/// timeout and retries; the TrafficPolicy's balancer, limits and ejection, defaults filled in.
#[test]
fn the_shop_canary_and_traffic_policy() {
    let m = shop();
    let reviews = &m.services[&Key::new("shop", "reviews")];
    let rules = &reviews.port(9080).unwrap().routes;
    assert_eq!(rules.len(), 2);
    let testers = &rules[0];
    assert_eq!(
        testers.matches[0].headers,
        [HeaderMatch {
            name: "x-canary".into(),
            value: StringMatch::Exact("yes".into()),
        }]
    );
    assert_eq!(testers.matches[0].path, Some(PathMatch::Prefix("/".into())));
    assert_eq!(
        testers.backends,
        [Backend::to(Key::new("shop", "reviews-v2"), 9080)]
    );
    let split = &rules[1];
    let weights: Vec<(String, u32)> = split
        .backends
        .iter()
        .map(|b| (b.service.to_string(), b.weight))
        .collect();
    assert_eq!(
        weights,
        [
            ("shop/reviews-v1".to_string(), 90),
            ("shop/reviews-v2".to_string(), 10)
        ]
    );
    assert_eq!(split.timeout, Some(Duration::from_secs(5)));
    assert_eq!(
        split.retry,
        Some(RouteRetry {
            attempts: 2,
            codes: vec![503],
            backoff: Some(Duration::from_millis(25)),
        })
    );
    assert_eq!(
        reviews.policy,
        Some(TrafficPolicy {
            load_balancer: LoadBalancer::LeastRequest,
            limits: ConnectionLimits {
                max_connections: Some(100),
                max_pending_requests: Some(50),
                max_requests: None,
                max_retries: None,
                idle_timeout: Some(Duration::from_secs(30)),
                h2_upgrade: None,
            },
            outlier_detection: Some(OutlierDetection {
                consecutive_5xx: 5,
                interval: Duration::from_secs(10),
                base_ejection_time: Duration::from_secs(30),
                max_ejection_percent: 10,
            }),
            timeout: None,
            retry: None,
        })
    );
}

/// Ports, addresses and endpoints: a gRPC port by `appProtocol`, a TCP one by its name; each
/// endpoint with the identity and workload of the Pod its slice names.
#[test]
fn the_shop_services_and_their_endpoints() {
    let m = shop();
    let svc = |name: &str| &m.services[&Key::new("shop", name)];
    let greeter = svc("greeter");
    assert_eq!(
        greeter.cluster_ips,
        ["127.10.0.5".parse::<IpAddr>().unwrap()]
    );
    assert!(!greeter.headless);
    assert_eq!(greeter.ports[0].protocol, Protocol::Grpc);
    assert_eq!(svc("db").ports[0].protocol, Protocol::Tcp);
    assert_eq!(svc("web").ports[0].protocol, Protocol::Http1);
    let endpoint = |ip: &str, pod: &str| Endpoint {
        ip: ip.parse().unwrap(),
        port: 9080,
        health: Health::Healthy,
        identity: Some("spiffe://cluster.local/ns/shop/sa/reviews".into()),
        mtls: false,
        workload: Some(Key::new("shop", pod)),
        workload_name: Some(pod.into()),
        zone: None,
    };
    assert_eq!(
        svc("reviews").ports[0].endpoints,
        [
            endpoint("127.20.0.2", "reviews-v1-0"),
            endpoint("127.20.0.3", "reviews-v2-0")
        ]
    );
    let web = &m.workloads[&Key::new("shop", "web-0")];
    assert_eq!(web.ips, ["127.20.0.1".parse::<IpAddr>().unwrap()]);
    assert_eq!(
        web.ports,
        [WorkloadPort {
            port: 8080,
            protocol: Protocol::Http1
        }]
    );
}

/// web's Sidecar: it selects web's pods, reaches reviews and greeter in its own namespace (`./`),
/// and binds reviews on loopback.
#[test]
fn the_shop_sidecar() {
    let m = shop();
    let web = &m.workloads[&Key::new("shop", "web-0")];
    let scope = m.scope_for(web).expect("web's Sidecar");
    let hosts: Vec<String> = scope
        .hosts
        .iter()
        .map(|h| format!("{}/{}", h.namespace, h.name))
        .collect();
    assert_eq!(hosts, ["shop/reviews", "shop/greeter"]);
    assert_eq!(
        scope.listeners,
        [OutboundListener {
            bind: "127.0.0.1:19080".parse().unwrap(),
            service: Key::new("shop", "reviews"),
            port: 9080,
        }]
    );
    let reviews = &m.workloads[&Key::new("shop", "reviews-v1-0")];
    assert!(m.scope_for(reviews).is_none());
}
