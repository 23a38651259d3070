//! gRPC through weft-proxy: a real grpcio client calls an explicit listener; the proxy routes over
//! HTTP/2 to real grpcio servers, trailers (grpc-status) intact, split by the HTTPRoute weights.

// Synchronous tests of real processes: they wait on the wall clock, blocking their thread.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::time::Duration;

use weft_e2e::{ControlPlane, Sidecar, free_port, grpc_backend, one_service, python_script};

/// A running mesh of [`greeter_mesh`] plus `route` (YAML documents): both grpcio servers, the
/// control plane and the client's sidecar, its listener up.
struct Greeters {
    bind: SocketAddr,
    proxy: Sidecar,
    _cp: ControlPlane,
    _servers: (weft_e2e::Proc, weft_e2e::Proc),
    _dir: tempfile::TempDir,
}

fn greeters(route: &str) -> Greeters {
    let (pa, pb) = (free_port(), free_port());
    let servers = (grpc_backend(pa, "a"), grpc_backend(pb, "b"));
    let bind: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mesh.yaml"),
        greeter_mesh(bind, pa, pb) + route,
    )
    .unwrap();
    let cp = ControlPlane::start(dir.path());
    let proxy = Sidecar::start(cp.xds, "client-0.demo");
    weft_e2e::wait_for_port(bind, Duration::from_secs(10));
    Greeters {
        bind,
        proxy,
        _cp: cp,
        _servers: servers,
        _dir: dir,
    }
}

/// The client pod `client-0.demo` whose Sidecar binds `bind` for Service `greeter` (gRPC, port
/// 50051), and the Services `greeter-a` and `greeter-b`, one grpcio server each (ports `pa`, `pb`).
fn greeter_mesh(bind: SocketAddr, pa: u16, pb: u16) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: client-0, namespace: demo, labels: {{app: client}}}}
spec: {{containers: [{{name: c}}]}}
status: {{podIP: 127.0.0.1}}
---
apiVersion: weft.io/v1alpha1
kind: Sidecar
metadata: {{name: client, namespace: demo}}
spec:
  outboundListeners: [{{bind: "{bind}", service: greeter, port: 50051}}]
---
apiVersion: v1
kind: Service
metadata: {{name: greeter, namespace: demo}}
spec: {{clusterIP: 127.50.0.1, ports: [{{name: grpc, port: 50051}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: greeter-a, namespace: demo}}
spec: {{clusterIP: 127.50.0.2, ports: [{{name: grpc, port: 50051}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: greeter-b, namespace: demo}}
spec: {{clusterIP: 127.50.0.3, ports: [{{name: grpc, port: 50051}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: a-1, namespace: demo, labels: {{kubernetes.io/service-name: greeter-a}}}}
addressType: IPv4
ports: [{{name: grpc, port: {pa}}}]
endpoints: [{{addresses: [127.0.0.1]}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: b-1, namespace: demo, labels: {{kubernetes.io/service-name: greeter-b}}}}
addressType: IPv4
ports: [{{name: grpc, port: {pb}}}]
endpoints: [{{addresses: [127.0.0.1]}}]
"#
    )
}

#[test]
fn grpc_calls_through_the_proxy_keep_trailers_and_follow_weights() {
    let route = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: split, namespace: demo}
spec:
  parentRefs: [{kind: Service, name: greeter, port: 50051}]
  rules:
    - backendRefs:
        - {name: greeter-a, port: 50051, weight: 75}
        - {name: greeter-b, port: 50051, weight: 25}
"#;
    let Greeters { bind, proxy, .. } = &greeters(route);
    let bind = *bind;

    let script = "import grpc, sys, collections\n\
        ch = grpc.insecure_channel(sys.argv[1])\n\
        who = ch.unary_unary('/weft.test.Echo/Who')\n\
        c = collections.Counter(who(b'', timeout=5).decode() for _ in range(400))\n\
        try:\n    ch.unary_unary('/weft.test.Echo/Missing')(b'', timeout=5)\n    code = 'OK'\n\
        except grpc.RpcError as e:\n    code = e.code().name\n\
        print(c['a'], c['b'], code)\n";
    let text = python_script(script, &[&bind.to_string()]);
    let parts: Vec<&str> = text.split_whitespace().collect();
    let (a, b): (u32, u32) = (parts[0].parse().unwrap(), parts[1].parse().unwrap());
    assert_eq!(a + b, 400);
    // 75/25 of 400: sd ~8.7, so 300 +- 40 is beyond 4.5 sd.
    assert!((260..=340).contains(&a), "a={a} b={b}");
    // A status carried only in trailers comes through: the server's UNIMPLEMENTED.
    assert_eq!(parts[2], "UNIMPLEMENTED", "{text}");

    // The metrics count gRPC by its status: 400 OK calls (0) and one UNIMPLEMENTED (12). A call
    // is counted when its stream ends, a moment after the client has it: allow a few scrapes.
    let mut scrape = String::new();
    for _ in 0..50 {
        scrape = weft_e2e::http_get(proxy.health, "/metrics").unwrap().1;
        if scrape.contains("grpc_response_status=\"12\"") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let grpc = |status: &str| -> u64 {
        scrape
            .lines()
            .filter(|l| {
                l.starts_with("weft_requests_total{")
                    && l.contains("request_protocol=\"grpc\"")
                    && l.contains(&format!("grpc_response_status=\"{status}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    assert_eq!(grpc("0"), 400, "{scrape}");
    assert_eq!(grpc("12"), 1, "{scrape}");
}

#[test]
fn grpcroute_routes_by_service_method_and_metadata() {
    let route = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: by-method, namespace: demo}
spec:
  parentRefs: [{kind: Service, name: greeter, port: 50051}]
  rules:
    - matches:
        - method: {service: weft.test.Echo, method: Who}
          headers: [{name: x-canary, value: "yes"}]
        - method: {type: RegularExpression, service: 'weft\.test\..*', method: "Co.nt"}
      backendRefs: [{name: greeter-b, port: 50051}]
    - matches: [{method: {service: weft.test.Echo, method: Who}}]
      backendRefs: [{name: greeter-a, port: 50051}]
"#;
    let Greeters { bind, .. } = &greeters(route);
    let bind = *bind;

    // Who without the metadata goes to a, with it to b; Count (by regex) to b; a method no rule
    // names has no route, which a gRPC client sees as UNIMPLEMENTED.
    let script = "import grpc, sys\n\
        ch = grpc.insecure_channel(sys.argv[1])\n\
        who = ch.unary_unary('/weft.test.Echo/Who')\n\
        plain = {who(b'', timeout=5).decode() for _ in range(20)}\n\
        canary = {who(b'', timeout=5, metadata=(('x-canary', 'yes'),)).decode() for _ in range(20)}\n\
        count = ch.unary_stream('/weft.test.Echo/Count')\n\
        streamed = {m.decode() for m in count(b'3', timeout=5)}\n\
        try:\n    ch.unary_unary('/weft.test.Echo/Echo')(b'', timeout=5)\n    code = 'OK'\n\
        except grpc.RpcError as e:\n    code = e.code().name\n\
        print(sorted(plain), sorted(canary), sorted(streamed), code)\n";
    let text = python_script(script, &[&bind.to_string()]);
    assert_eq!(
        text.trim(),
        "['a'] ['b'] ['b0', 'b1', 'b2'] UNIMPLEMENTED",
        "{text}"
    );
}

#[test]
fn grpc_clients_get_grpc_statuses_for_the_proxys_own_replies() {
    // The route covers one gRPC service only, and its one endpoint refuses connections.
    let dead = free_port();
    let route = "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: echo-only, namespace: shop}
spec:
  parentRefs: [{kind: Service, name: greeter, port: 50051}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /weft.test.Echo/}}]
      backendRefs: [{name: greeter, port: 50051}]
";
    let mesh = one_service("greeter", 50051, "grpc", &[dead], route, &[]);
    let (proxy, bind) = (&mesh.sidecar, mesh.bind);

    let script = "import grpc, sys\n\
        ch = grpc.insecure_channel(sys.argv[1])\n\
        for path in ['/weft.test.Echo/Who', '/other.Service/Call']:\n\
        \x20   try:\n\
        \x20       ch.unary_unary(path)(b'', timeout=5)\n\
        \x20       print('OK')\n\
        \x20   except grpc.RpcError as e:\n\
        \x20       print(e.code().name + '|' + e.details())\n";
    let text = python_script(script, &[&bind.to_string()]);
    let lines: Vec<&str> = text.lines().collect();
    // A dead endpoint is UNAVAILABLE (a status clients retry), no route is UNIMPLEMENTED; the
    // message says why, instead of grpcio's "Received http2 header with status: 503".
    assert_eq!(
        lines,
        [
            "UNAVAILABLE|upstream connect failure",
            "UNIMPLEMENTED|no route"
        ],
        "{text}"
    );

    let scrape = weft_e2e::http_get(proxy.health, "/metrics").unwrap().1;
    let counted = |flag: &str, status: &str| {
        scrape.lines().any(|l| {
            l.starts_with("weft_requests_total{")
                && l.contains("request_protocol=\"grpc\"")
                && l.contains("response_code=\"200\"")
                && l.contains(&format!("response_flags=\"{flag}\""))
                && l.contains(&format!("grpc_response_status=\"{status}\""))
                && l.ends_with(" 1")
        })
    };
    assert!(counted("UF", "14"), "{scrape}");
    assert!(counted("NR", "12"), "{scrape}");
}

#[test]
fn grpc_streams_flow_message_by_message_both_ways() {
    let port = free_port();
    let _server = grpc_backend(port, "s");
    let mesh = one_service("streams", 50051, "grpc", &[port], "", &[]);
    let bind = mesh.bind;

    // Server streaming: five messages 200 ms apart must arrive as they are sent, not together at
    // the end. Bidirectional: each message is sent only once the echo of the previous one came
    // back, which works only if the proxy passes each message on in both directions at once.
    let script = "import grpc, sys, time, queue\n\
        ch = grpc.insecure_channel(sys.argv[1])\n\
        t0 = time.monotonic()\n\
        times = [time.monotonic() - t0 for _ in ch.unary_stream('/weft.test.Echo/Count')(b'5', timeout=10)]\n\
        q = queue.Queue()\n\
        def requests():\n\
        \x20   for i in range(5):\n\
        \x20       yield f'm{i}'.encode()\n\
        \x20       q.get(timeout=5)\n\
        replies = []\n\
        for r in ch.stream_stream('/weft.test.Echo/Echo')(requests(), timeout=10):\n\
        \x20   replies.append(r.decode())\n\
        \x20   q.put(None)\n\
        print(len(times), times[0], times[-1], ','.join(replies))\n";
    let text = python_script(script, &[&bind.to_string()]);
    let parts: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(parts.len(), 4, "{text}");
    let (first, last): (f64, f64) = (parts[1].parse().unwrap(), parts[2].parse().unwrap());
    assert_eq!(parts[0], "5", "{text}");
    assert!(
        first < 0.5 && last >= 0.75,
        "first {first} s, last {last} s"
    );
    assert_eq!(parts[3], "m0,m1,m2,m3,m4");
}

#[test]
fn an_idle_http2_connection_is_sent_goaway_and_closed_after_the_idle_timeout() {
    use std::io::{Read, Write};
    let backend = weft_e2e::named_backend("h2");
    let mesh = weft_e2e::one_service(
        "idle",
        80,
        "http2",
        &[backend.port()],
        "",
        &["--http-idle-timeout-ms", "1000"],
    );
    let mut c = std::net::TcpStream::connect(mesh.bind).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(6)))
        .unwrap();
    // The client preface and an empty SETTINGS frame, then nothing.
    c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .unwrap();
    let started = std::time::Instant::now();
    // Frames (3 bytes of length, then type, flags, stream id), answered as a client would:
    // SETTINGS acknowledged, PINGs (which a graceful GOAWAY waits on) echoed.
    let mut types = Vec::new();
    let mut header = [0u8; 9];
    while c.read_exact(&mut header).is_ok() {
        let len =
            usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
        let mut payload = vec![0u8; len];
        c.read_exact(&mut payload).unwrap();
        let (kind, flags) = (header[3], header[4]);
        types.push(kind);
        match (kind, flags & 1) {
            (0x4, 0) => c.write_all(b"\0\0\0\x04\x01\0\0\0\0").unwrap(),
            (0x6, 0) => {
                c.write_all(b"\0\0\x08\x06\x01\0\0\0\0").unwrap();
                c.write_all(&payload).unwrap();
            }
            _ => {}
        }
    }
    let took = started.elapsed();
    assert!(types.contains(&0x7), "a GOAWAY among frames {types:?}");
    assert!(
        took >= std::time::Duration::from_millis(900) && took < std::time::Duration::from_secs(4),
        "closed after {took:?}, want ~1-1.25 s"
    );
}
