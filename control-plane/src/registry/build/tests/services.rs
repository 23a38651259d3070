//! Services, endpoints and workloads as Kubernetes defines them.

use super::*;

/// An EndpointSlice's conditions: a ready endpoint is healthy; one serving while terminating
/// drains and stays only while nothing is ready; one not serving is left out. Each is at the
/// slice's port for the Service port's name.
#[test]
fn terminating_endpoints_stay_only_while_nothing_is_ready() {
    let slice = |ready: bool, terminating: bool| {
        format!(
            "{API}---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: api-1, namespace: ns, labels: {{kubernetes.io/service-name: api}}}}
addressType: IPv4
ports: [{{name: http, port: 8080}}]
endpoints:
  - addresses: [10.1.0.1]
    conditions: {{ready: {ready}, serving: true, terminating: {terminating}}}
  - addresses: [10.1.0.2]
    conditions: {{ready: false, serving: true, terminating: true}}
  - addresses: [10.1.0.3]
    conditions: {{ready: false, serving: false, terminating: false}}
"
        )
    };
    let healthy = |ip: &str| (ip.to_string(), 8080, Health::Healthy);
    let draining = |ip: &str| (ip.to_string(), 8080, Health::Draining);
    let cases = [
        // (first endpoint ready?, terminating?) -> endpoints
        (true, false, vec![healthy("10.1.0.1")]),
        (
            false,
            true,
            vec![draining("10.1.0.1"), draining("10.1.0.2")],
        ),
    ];
    for (ready, terminating, want) in cases {
        let (mesh, warnings) = build_yaml(&slice(ready, terminating));
        assert!(warnings.is_empty(), "{warnings:?}");
        let got: Vec<(String, u16, Health)> = mesh.services[&Key::new("ns", "api")].ports[0]
            .endpoints
            .iter()
            .map(|e| (e.ip.to_string(), e.port, e.health))
            .collect();
        assert_eq!(got, want, "ready={ready} terminating={terminating}");
    }
}

/// `clusterIP: None` is a headless Service, with no virtual IP; its endpoints are each address
/// once, in order, however the slices list them.
#[test]
fn a_headless_service_has_no_cluster_ip_and_each_endpoint_once() {
    let yaml = "apiVersion: v1
kind: Service
metadata: {name: db, namespace: ns}
spec: {clusterIP: None, ports: [{name: tcp-pg, port: 5432}, {name: http, port: 8080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: db-1, namespace: ns, labels: {kubernetes.io/service-name: db}}
addressType: IPv4
ports: [{name: tcp-pg, port: 5432}]
endpoints: [{addresses: [10.1.0.6]}, {addresses: [10.1.0.5]}, {addresses: [10.1.0.5]}]
";
    let (mesh, warnings) = build_yaml(yaml);
    assert!(warnings.is_empty(), "{warnings:?}");
    let db = &mesh.services[&Key::new("ns", "db")];
    assert!(db.headless);
    assert!(db.cluster_ips.is_empty());
    let at = |i: usize| -> Vec<String> {
        db.ports[i]
            .endpoints
            .iter()
            .map(|e| format!("{}:{}", e.ip, e.port))
            .collect()
    };
    assert_eq!(at(0), ["10.1.0.5:5432", "10.1.0.6:5432"]);
    // The slice has no port by the HTTP port's name: no endpoints there.
    assert!(at(1).is_empty());
}

/// A Pod's container ports are its workload's, each protocol from the port name (`web` says
/// nothing, so it is detected); a Pod without ports has none.
#[test]
fn workload_ports_take_their_protocol_from_the_container_port_name() {
    let yaml = "apiVersion: v1
kind: Pod
metadata: {name: c-0, namespace: ns, labels: {app: c}}
spec: {containers: [{name: c, ports: [{name: web, containerPort: 8080}, {name: http, containerPort: 8081}]}]}
status: {podIP: 10.1.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: job-0, namespace: ns, labels: {app: job}}
spec: {containers: [{name: c}]}
status: {podIP: 10.1.0.9}
";
    let (mesh, warnings) = build_yaml(yaml);
    assert!(warnings.is_empty(), "{warnings:?}");
    let port = |port, protocol| WorkloadPort { port, protocol };
    assert_eq!(
        mesh.workloads[&Key::new("ns", "c-0")].ports,
        [port(8080, Protocol::Detect), port(8081, Protocol::Http1)]
    );
    assert!(mesh.workloads[&Key::new("ns", "job-0")].ports.is_empty());
}

/// A Sidecar's egress hosts are `namespace/name` patterns, `./` its own namespace; without a
/// workload selector it selects every workload of its namespace, and no other.
#[test]
fn sidecar_egress_hosts_and_the_workloads_a_sidecar_selects() {
    let yaml = "apiVersion: weft.io/v1alpha1
kind: Sidecar
metadata: {name: o, namespace: other}
spec: {egress: [./api, ns/db, '*/web']}
---
apiVersion: v1
kind: Pod
metadata: {name: o-0, namespace: other}
spec: {containers: [{name: app}]}
status: {podIP: 10.3.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: t-0, namespace: team}
spec: {containers: [{name: app}]}
status: {podIP: 10.2.0.1}
";
    let (mesh, warnings) = build_yaml(yaml);
    assert!(warnings.is_empty(), "{warnings:?}");
    let hosts: Vec<String> = mesh.sidecars[0]
        .hosts
        .iter()
        .map(|h| format!("{}/{}", h.namespace, h.name))
        .collect();
    assert_eq!(hosts, ["other/api", "ns/db", "*/web"]);
    let scope = |pod: &Key| mesh.scope_for(&mesh.workloads[pod]).map(|s| s.key.clone());
    assert_eq!(
        scope(&Key::new("other", "o-0")),
        Some(Key::new("other", "o"))
    );
    assert_eq!(scope(&Key::new("team", "t-0")), None);
}
