//! Traffic capture as in a pod: iptables in a network namespace redirects the app's connections to
//! weft-proxy (running as UID 1337, which the rules exclude), and a second namespace reaches the
//! pod over a veth pair. Real iptables, curl, Python servers; needs root (CI runs as root).

// Synchronous tests of real processes: they wait on the wall clock, blocking their thread.
#![allow(clippy::disallowed_methods)]

use weft_e2e::netns::{Netns, veth};
use weft_e2e::{Proc, bin};

const MESH: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web-0, namespace: shop, labels: {app: web}}
spec: {serviceAccountName: web, containers: [{name: web, ports: [{name: http, containerPort: 8080}, {name: http-admin, containerPort: 8081}]}]}
status: {podIP: 10.1.0.5}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-a, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.1.0.5], targetRef: {kind: Pod, name: web-0, namespace: shop}}]
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec: {clusterIP: 10.96.0.20, clusterIPs: [10.96.0.20, "fd00:96::20"], ports: [{name: http, port: 9080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: reviews-a, namespace: shop, labels: {kubernetes.io/service-name: reviews}}
addressType: IPv4
ports: [{name: http, port: 18081}]
endpoints: [{addresses: [127.0.0.1]}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec: {clusterIP: 10.96.0.30, ports: [{name: db, port: 3306}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: db-a, namespace: shop, labels: {kubernetes.io/service-name: db}}
addressType: IPv4
ports: [{name: db, port: 13306}]
endpoints: [{addresses: [127.0.0.1]}]
---
apiVersion: v1
kind: Service
metadata: {name: peers, namespace: shop}
spec: {clusterIP: None, ports: [{name: http, port: 7100}, {name: tcp-db, port: 7300}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: peers-a, namespace: shop, labels: {kubernetes.io/service-name: peers}}
addressType: IPv4
ports: [{name: http, port: 7100}, {name: tcp-db, port: 7300}]
endpoints: [{addresses: [10.1.0.9]}, {addresses: [10.1.0.10]}]
"#;

fn backend(ns: &Netns, args: &[&str]) -> Proc {
    ns.backend(args)
}

/// A pod's network namespace (10.1.0.5, fd00:1::5, a route for the Service range, Istio-style
/// capture rules) and a client namespace on the other end of a veth pair (10.1.0.9, 10.1.0.10,
/// fd00:1::9). `tag` (a letter) keeps the names of tests running at once apart.
fn pod_and_client(tag: &str) -> (Netns, Netns) {
    let pod = Netns::new(&format!("pod{tag}"));
    let client = Netns::new(&format!("cli{tag}"));
    // The pod's address and the Service range, as a CNI and kube-proxy would provide; dual
    // stack (the same over IPv6).
    let (veth_pod, _) = veth(
        &pod,
        &["10.1.0.5/24", "fd00:1::5/64"],
        &client,
        &["10.1.0.9/24", "10.1.0.10/24", "fd00:1::9/64"],
        tag,
    );
    // A route for the Service range: the packets never leave (the OUTPUT rule redirects them),
    // but without a route the kernel refuses to connect at all.
    pod.run(&["ip", "route", "add", "10.96.0.0/16", "dev", &veth_pod]);
    pod.run(&["ip", "-6", "route", "add", "fd00:96::/64", "dev", &veth_pod]);
    pod.capture();
    (pod, client)
}

/// `weft serve` on a registry of `mesh` and weft-proxy as UID 1337, with `proxy_args`, both in
/// `pod`, once the proxy is ready. The registry directory goes with them.
fn mesh_in(pod: &Netns, mesh: &str, proxy_args: &[&str]) -> (Proc, Proc, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), mesh).unwrap();
    let weft = bin("weft");
    let cp = Proc::spawn(
        pod.exec(&[
            weft.to_str().unwrap(),
            "serve",
            "--registry",
            dir.path().to_str().unwrap(),
        ])
        .env("WEFT_CA_DIR", std::env::temp_dir().join("weft-e2e-ca")),
    );
    let proxy = pod.sidecar("web-0.shop", proxy_args);
    (cp, proxy, dir)
}

#[test]
fn iptables_capture_outbound_inbound_detection_and_passthrough() {
    let (pod, client) = pod_and_client("a");
    let _reviews = backend(&pod, &["http", "127.0.0.1", "18081", "reviews"]);
    let _db = backend(&pod, &["banner", "127.0.0.1", "13306", "db-banner"]);
    // The app on the pod's address, where inbound traffic goes (Istio since 1.10; over IPv6 too,
    // to the primary address), and a port it keeps on localhost, which must stay private.
    let _app = backend(&pod, &["http", "10.1.0.5", "8080", "web-app"]);
    let _private = backend(&pod, &["http", "127.0.0.1", "8081", "private"]);
    // On a port no Service or container declares: inbound traffic passes through to it.
    let _undeclared = backend(&pod, &["http", "10.1.0.5", "9999", "undeclared-app"]);
    let _elsewhere = backend(&client, &["http", "10.1.0.9", "7000", "outside-the-mesh"]);
    // Another pod's server on a port a sidecar also uses (Prometheus scraping its 15020).
    let _other_15020 = backend(&client, &["http", "10.1.0.9", "15020", "other-pod-15020"]);
    // The pods of the headless Service `peers`, as a StatefulSet's would be.
    let _peer_a = backend(&client, &["http", "10.1.0.9", "7100", "peer-a"]);
    let _peer_b = backend(&client, &["http", "10.1.0.10", "7100", "peer-b"]);
    let _peer_a_tcp = backend(&client, &["banner", "10.1.0.9", "7300", "db-a"]);
    let _peer_b_tcp = backend(&client, &["banner", "10.1.0.10", "7300", "db-b"]);

    let _mesh = mesh_in(&pod, MESH, &[]);

    // Outbound HTTP to a Service's cluster IP, captured and routed; the same at its IPv6 cluster
    // IP (ip6tables redirect, IPv6 original destination).
    for url in ["http://10.96.0.20:9080/x", "http://[fd00:96::20]:9080/x"] {
        let out = pod.run(&["curl", "-sS", "-i", "--max-time", "5", url]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(text.starts_with("HTTP/1.1 200"), "{url}: {text}");
        assert!(text.ends_with("reviews"), "{url}: {text}");
        assert!(text.to_ascii_lowercase().contains("x-backend: reviews"));
    }

    // An undeclared-protocol port whose server speaks first: detection times out, opaque TCP.
    let probe = "import socket; s=socket.create_connection(('10.96.0.30',3306),timeout=5); \
                 print(s.recv(100).decode().strip()); s.sendall(b'ping\\n'); print(s.recv(100).decode().strip())";
    let out = pod.run(&["python3", "-c", probe]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "db-banner\nping\n");

    // A destination the mesh does not know passes through (ALLOW_ANY).
    let out = pod.run(&["curl", "-sS", "--max-time", "5", "http://10.1.0.9:7000/"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "outside-the-mesh");

    // A headless Service's pods, addressed one by one (a StatefulSet's clients pick their pod):
    // each connection stays on the pod it was addressed to, HTTP and TCP, and goes through the
    // mesh (counted against the Service), not around it.
    for (ip, name) in [("10.1.0.9", "peer-a"), ("10.1.0.10", "peer-b")] {
        for _ in 0..6 {
            let out = pod.run(&[
                "curl",
                "-sS",
                "--max-time",
                "5",
                &format!("http://{ip}:7100/"),
            ]);
            assert_eq!(String::from_utf8_lossy(&out.stdout), name);
        }
    }
    for (ip, banner) in [("10.1.0.9", "db-a"), ("10.1.0.10", "db-b")] {
        let probe = format!(
            "import socket\nfor _ in range(4):\n s=socket.create_connection(('{ip}',7300),timeout=5); print(s.recv(100).decode().strip()); s.close()"
        );
        let out = pod.run(&["python3", "-c", &probe]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{banner}\n").repeat(4)
        );
    }
    let out = pod.run(&["curl", "-sS", "http://127.0.0.1:15020/metrics"]);
    let scrape = String::from_utf8_lossy(&out.stdout).to_string();
    let peers = "destination_service=\"peers.shop.svc.cluster.local\"";
    let counted = |metric: &str| -> u64 {
        scrape
            .lines()
            .filter(|l| l.starts_with(metric) && l.contains(peers))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    assert_eq!(counted("weft_requests_total{"), 12, "{scrape}");
    assert_eq!(counted("weft_tcp_connections_opened_total{"), 8, "{scrape}");

    // Inbound from another host, over IPv4 and IPv6: PREROUTING capture, inbound listener, the
    // app on its port.
    for url in ["http://10.1.0.5:8080/", "http://[fd00:1::5]:8080/"] {
        let out = client.run(&["curl", "-sS", "-i", "--max-time", "5", url]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            text.starts_with("HTTP/1.1 200") && text.ends_with("web-app"),
            "{url}: {text}"
        );
    }
    // A port the app keeps on localhost is not reachable from outside through the sidecar.
    let out = client.run(&[
        "curl",
        "-sS",
        "-i",
        "--max-time",
        "5",
        "http://10.1.0.5:8081/",
    ]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    // A port nothing declares: passed through to the pod's own address, untouched.
    let out = client.run(&["curl", "-sS", "--max-time", "5", "http://10.1.0.5:9999/"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "undeclared-app");
    // Both passthroughs are counted, as Istio's PassthroughCluster and InboundPassthroughCluster.
    let out = pod.run(&["curl", "-sS", "http://127.0.0.1:15020/metrics"]);
    let scrape = String::from_utf8_lossy(&out.stdout).to_string();
    for service in ["PassthroughCluster", "InboundPassthroughCluster"] {
        assert!(
            scrape.lines().any(|l| {
                l.starts_with("weft_tcp_connections_opened_total{")
                    && l.contains(&format!("destination_service=\"{service}\""))
                    && l.ends_with(" 1")
            }),
            "{service}: {scrape}"
        );
    }
    // Port 15020 of another pod is that pod's: passed through, not refused as a loop.
    let out = pod.run(&["curl", "-sS", "--max-time", "5", "http://10.1.0.9:15020/"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "other-pod-15020");
}

/// Under `--outbound-policy registry-only` a destination the mesh does not know is refused as
/// Istio's REGISTRY_ONLY refuses it: HTTP gets a 502 that says why, anything else a reset, and
/// both are counted against `BlackHoleCluster`; nothing reaches the destination, and Services
/// the mesh knows work as before.
#[test]
fn registry_only_answers_http_to_unknown_destinations_with_502_and_resets_the_rest() {
    let (pod, client) = pod_and_client("b");
    let _reviews = backend(&pod, &["http", "127.0.0.1", "18081", "reviews"]);
    let _elsewhere = backend(&client, &["http", "10.1.0.9", "7000", "outside-the-mesh"]);
    let _elsewhere_tcp = backend(&client, &["banner", "10.1.0.9", "7400", "outside-db"]);
    let _mesh = mesh_in(&pod, MESH, &["--outbound-policy", "registry-only"]);

    let out = pod.run(&[
        "curl",
        "-sS",
        "-i",
        "--max-time",
        "5",
        "http://10.96.0.20:9080/x",
    ]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.starts_with("HTTP/1.1 200") && text.ends_with("reviews"),
        "{text}"
    );

    // Two requests on one connection, both refused: the connection stays usable, as a 502
    // from Istio's block_all virtual host does.
    let url = "http://10.1.0.9:7000/";
    let out = pod.run(&["curl", "-sS", "-i", "--max-time", "5", url, url]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(text.matches("HTTP/1.1 502").count(), 2, "{text}");
    assert!(text.contains("x-weft-reason: NR"), "{text}");
    assert!(!text.contains("outside-the-mesh"), "{text}");
    // HTTP/2 with prior knowledge (a gRPC client's way) is refused the same.
    let out = pod.run(&[
        "curl",
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{http_version}",
        "--max-time",
        "5",
        "--http2-prior-knowledge",
        url,
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "502 2");

    // A server-first protocol never sees the client: after detection, the connection is reset.
    let probe = "import socket\ns=socket.create_connection(('10.1.0.9',7400),timeout=5)\n\
                 try:\n print(repr(s.recv(100)))\nexcept ConnectionResetError:\n print('reset')";
    let out = pod.run(&["python3", "-c", probe]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "reset\n");

    let out = pod.run(&["curl", "-sS", "http://127.0.0.1:15020/metrics"]);
    let scrape = String::from_utf8_lossy(&out.stdout).to_string();
    let counted = |metric: &str, service: &str, extra: &str| -> u64 {
        let service = format!("destination_service=\"{service}\"");
        scrape
            .lines()
            .filter(|l| l.starts_with(metric) && l.contains(&service) && l.contains(extra))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let requests = "weft_requests_total{";
    let connections = "weft_tcp_connections_opened_total{";
    let status = "response_code=\"502\"";
    assert_eq!(counted(requests, "BlackHoleCluster", status), 3, "{scrape}");
    assert_eq!(counted(connections, "BlackHoleCluster", ""), 1, "{scrape}");
    assert_eq!(
        counted(connections, "PassthroughCluster", ""),
        0,
        "{scrape}"
    );
}
