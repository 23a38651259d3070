//! Interop: gRPC's proxyless xDS client (Python grpcio, written by nobody here) resolves a Service
//! through `weft serve` and splits calls between two real gRPC backends by HTTPRoute weights.

// Synchronous tests of real processes: they wait on the wall clock, blocking their thread.
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use weft_e2e::{ControlPlane, free_port, grpc_backend, python, repo_root};

fn mesh(port_a: u16, port_b: u16) -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: greeter, namespace: demo}}
spec: {{clusterIP: 127.30.0.1, ports: [{{name: grpc, port: 50051, appProtocol: grpc}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: greeter-a, namespace: demo}}
spec: {{clusterIP: 127.30.0.2, ports: [{{name: grpc, port: 50051, appProtocol: grpc}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: greeter-b, namespace: demo}}
spec: {{clusterIP: 127.30.0.3, ports: [{{name: grpc, port: 50051, appProtocol: grpc}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: greeter-a-1, namespace: demo, labels: {{kubernetes.io/service-name: greeter-a}}}}
addressType: IPv4
ports: [{{name: grpc, port: {port_a}}}]
endpoints: [{{addresses: [127.0.0.1]}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: greeter-b-1, namespace: demo, labels: {{kubernetes.io/service-name: greeter-b}}}}
addressType: IPv4
ports: [{{name: grpc, port: {port_b}}}]
endpoints: [{{addresses: [127.0.0.1]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: greeter-split, namespace: demo}}
spec:
  parentRefs: [{{group: "", kind: Service, name: greeter, port: 50051}}]
  rules:
    - backendRefs:
        - {{name: greeter-a, port: 50051, weight: 80}}
        - {{name: greeter-b, port: 50051, weight: 20}}
"#
    )
}

#[test]
fn grpc_proxyless_client_resolves_and_splits_by_weight() {
    let dir = tempfile::tempdir().unwrap();
    let (port_a, port_b) = (free_port(), free_port());
    std::fs::write(dir.path().join("mesh.yaml"), mesh(port_a, port_b)).unwrap();
    let _a = grpc_backend(port_a, "a");
    let _b = grpc_backend(port_b, "b");
    let cp = ControlPlane::start(dir.path());

    let bootstrap = dir.path().join("bootstrap.json");
    std::fs::write(
        &bootstrap,
        format!(
            r#"{{"xds_servers": [{{"server_uri": "{}", "channel_creds": [{{"type": "insecure"}}],
                 "server_features": ["xds_v3"]}}],
               "node": {{"id": "grpc-client.demo", "locality": {{}}}}}}"#,
            cp.xds
        ),
    )
    .unwrap();

    let calls = 1000;
    let out = python()
        .arg(repo_root().join("tests/interop/grpc_xds_client.py"))
        .arg("greeter.demo.svc.cluster.local:50051")
        .arg(calls.to_string())
        .env("GRPC_XDS_BOOTSTRAP", &bootstrap)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "grpc client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let counts: std::collections::HashMap<String, u32> =
        serde_json_lite(&String::from_utf8_lossy(&out.stdout));
    let a = counts.get("a").copied().unwrap_or(0);
    let b = counts.get("b").copied().unwrap_or(0);
    assert_eq!(a + b, calls, "{counts:?}");
    // 80/20 over 1000 calls: sd ~12.6, so +-60 is beyond 4.7 sd.
    assert!((740..=860).contains(&a), "split a={a} b={b}, want ~800/200");

    // The control plane saw the client ACK what it sent.
    std::thread::sleep(Duration::from_millis(100));
    let (_, conns) = weft_e2e::http_get(cp.admin, "/debug/connections").unwrap();
    assert!(
        !conns.contains("last_nack\": \""),
        "gRPC NACKed something: {conns}"
    );
}

/// Parses the client's flat `{"name": count}` output.
fn serde_json_lite(s: &str) -> std::collections::HashMap<String, u32> {
    s.trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .split(',')
        .filter(|kv| !kv.trim().is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once(':').expect("key: value");
            (
                k.trim().trim_matches('"').to_string(),
                v.trim().parse().expect("count"),
            )
        })
        .collect()
}
