//! weft-proxy end to end: real `weft serve` on a file registry, real `weft-proxy`, real HTTP
//! backends, real clients (curl, and a keep-alive client for the statistics).

// Synchronous tests of real processes: they wait on the wall clock, blocking their thread.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use weft_e2e::{ControlPlane, Sidecar, free_port, named_backend};

fn mesh(v1: SocketAddr, v2: SocketAddr, bind: SocketAddr, weights: (u32, u32)) -> String {
    let (w1, w2) = weights;
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: web-0, namespace: shop, labels: {{app: web}}}}
spec: {{serviceAccountName: web, containers: [{{name: web, ports: [{{containerPort: 8080}}]}}]}}
status: {{podIP: 127.0.0.1}}
---
apiVersion: weft.io/v1alpha1
kind: Sidecar
metadata: {{name: web, namespace: shop}}
spec:
  workloadSelector: {{matchLabels: {{app: web}}}}
  egress: ["./reviews"]
  outboundListeners: [{{bind: "{bind}", service: reviews, port: 9080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: reviews, namespace: shop}}
spec: {{clusterIP: 127.40.0.1, ports: [{{name: http, port: 9080}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: reviews-v1, namespace: shop}}
spec: {{clusterIP: 127.40.0.2, ports: [{{name: http, port: 9080}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: reviews-v2, namespace: shop}}
spec: {{clusterIP: 127.40.0.3, ports: [{{name: http, port: 9080}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: reviews-v1-a, namespace: shop, labels: {{kubernetes.io/service-name: reviews-v1}}}}
addressType: IPv4
ports: [{{name: http, port: {p1}}}]
endpoints: [{{addresses: ["{ip1}"]}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: reviews-v2-a, namespace: shop, labels: {{kubernetes.io/service-name: reviews-v2}}}}
addressType: IPv4
ports: [{{name: http, port: {p2}}}]
endpoints: [{{addresses: ["{ip2}"]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: reviews, namespace: shop}}
spec:
  parentRefs: [{{kind: Service, name: reviews, port: 9080}}]
  rules:
    - matches: [{{path: {{type: PathPrefix, value: /api}}, headers: [{{name: x-canary, value: "yes"}}]}}]
      backendRefs: [{{name: reviews-v2, port: 9080}}]
    - matches: [{{path: {{type: PathPrefix, value: /api}}}}]
      backendRefs:
        - {{name: reviews-v1, port: 9080, weight: {w1}}}
        - {{name: reviews-v2, port: 9080, weight: {w2}}}
"#,
        p1 = v1.port(),
        ip1 = v1.ip(),
        p2 = v2.port(),
        ip2 = v2.ip(),
    )
}

fn write(dir: &Path, text: &str) {
    let tmp = dir.join(".mesh.yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, dir.join("mesh.yaml")).unwrap();
}

/// A minimal HTTP/1.1 keep-alive client: many requests on one connection.
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    fn open(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        Self {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        }
    }

    /// Sends a GET; returns (status, headers lowercased, body).
    fn get(&mut self, path: &str, extra: &str) -> (u16, Vec<(String, String)>, String) {
        let req = format!("GET {path} HTTP/1.1\r\nHost: reviews\r\n{extra}\r\n");
        self.writer.write_all(req.as_bytes()).unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let status: u16 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            self.reader.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap();
            headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body).unwrap();
        (status, headers, String::from_utf8(body).unwrap())
    }
}

fn count_v1(addr: SocketAddr, n: usize) -> usize {
    let mut c = Conn::open(addr);
    (0..n)
        .filter(|_| {
            let (status, _, body) = c.get("/api/reviews", "");
            assert_eq!(status, 200);
            body == "v1"
        })
        .count()
}

#[test]
fn canary_split_header_route_and_live_reweighting() {
    canary(&[]);
}

/// The same over state-of-the-world xDS, which weft's control plane serves too, as the form
/// some other control planes serve alone.
#[test]
fn canary_and_live_reweighting_over_state_of_the_world_xds() {
    canary(&["--xds-protocol", "sotw"]);
}

fn canary(sidecar_args: &[&str]) {
    let (v1, v2) = (named_backend("v1"), named_backend("v2"));
    let bind: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &mesh(v1, v2, bind, (90, 10)));
    let cp = ControlPlane::start(dir.path());
    let proxy = Sidecar::start_with(cp.xds, "web-0.shop", sidecar_args);
    weft_e2e::wait_for_port(bind, Duration::from_secs(10));

    // curl, a client nobody here wrote.
    let out = Command::new("curl")
        .args(["-sS", "-i", &format!("http://{bind}/api/x")])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("x-seen-request-id:"),
        "proxy adds x-request-id: {text}"
    );

    // 90/10 over 2,000 requests: sd ~13.4, so 1800 +- 70 is beyond 5 sd.
    let v1_count = count_v1(bind, 2000);
    assert!(
        (1730..=1870).contains(&v1_count),
        "v1 got {v1_count} of 2000, want ~1800"
    );

    // A header match beats the split (same path prefix, more headers: Gateway API precedence).
    let mut c = Conn::open(bind);
    for _ in 0..50 {
        let (status, _, body) = c.get("/api/reviews", "x-canary: yes\r\n");
        assert_eq!((status, body.as_str()), (200, "v2"));
    }
    // No rule matches /other: 404 with the reason.
    let (status, headers, _) = c.get("/other", "");
    assert_eq!(status, 404);
    assert!(
        headers.contains(&("x-weft-reason".into(), "NR".into())),
        "{headers:?}"
    );

    // Re-weight under live traffic: no request may fail.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut c = Conn::open(bind);
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, _, _) = c.get("/api/live", "");
                assert_eq!(status, 200, "request {n} failed during the config change");
                n += 1;
            }
            n
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    write(dir.path(), &mesh(v1, v2, bind, (50, 50)));
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = traffic.join().expect("no failed request");
    assert!(sent > 100, "only {sent} requests during the change");
    let v1_count = count_v1(bind, 2000);
    assert!(
        (860..=1140).contains(&v1_count),
        "after re-weighting v1 got {v1_count} of 2000, want ~1000"
    );

    // The stream is of the form asked for, and no request of it went stale (a SotW request
    // with an old nonce is ignored by the server, so a subscription sent with one is lost).
    let (_, scrape) = weft_e2e::http_get(cp.admin, "/metrics").unwrap();
    let api = match sidecar_args.contains(&"sotw") {
        true => "sotw",
        false => "delta",
    };
    let open = format!("weft_xds_connected_proxies{{api=\"{api}\"}} 1");
    assert!(scrape.contains(&open), "{open} not in:\n{scrape}");
    assert!(scrape.contains("weft_xds_stale_nonces_total 0"), "{scrape}");

    // The admin endpoint shows the applied config.
    let (status, dump) = weft_e2e::http_get(proxy.admin, "/config_dump").unwrap();
    assert_eq!(status, 200);
    assert!(
        dump.contains("outbound|9080||reviews-v2.shop.svc.cluster.local"),
        "{dump}"
    );
}

/// The value of every `weft_requests_total` sample carrying all of `labels`, summed.
fn requests_total(scrape: &str, labels: &[&str]) -> u64 {
    scrape
        .lines()
        .filter(|l| l.starts_with("weft_requests_total{") && labels.iter().all(|w| l.contains(w)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn metrics_count_each_version_and_flag_and_pass_promtool() {
    let (v1, v2) = (named_backend("v1"), named_backend("v2"));
    let bind: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &mesh(v1, v2, bind, (90, 10)));
    let cp = ControlPlane::start(dir.path());
    let proxy = Sidecar::start(cp.xds, "web-0.shop");
    weft_e2e::wait_for_port(bind, Duration::from_secs(10));
    let v1_count = count_v1(bind, 500) as u64;
    let mut c = Conn::open(bind);
    for _ in 0..3 {
        assert_eq!(c.get("/nowhere", "").0, 404);
    }
    let scrape = || weft_e2e::http_get(proxy.health, "/metrics").unwrap().1;
    let v1_label = "destination_service=\"reviews-v1.shop.svc.cluster.local\"";
    let v2_label = "destination_service=\"reviews-v2.shop.svc.cluster.local\"";
    // A request is counted when its response body is done, a moment after the client has it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let text = loop {
        let text = scrape();
        let counted = requests_total(&text, &[v1_label]) + requests_total(&text, &[v2_label]);
        if counted == 500 || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let ok = [
        "reporter=\"source\"",
        "response_code=\"200\"",
        "response_flags=\"-\"",
    ];
    assert_eq!(
        requests_total(&text, &[&ok[..], &[v1_label]].concat()),
        v1_count,
        "{text}"
    );
    assert_eq!(
        requests_total(&text, &[&ok[..], &[v2_label]].concat()),
        500 - v1_count,
        "{text}"
    );
    assert_eq!(
        requests_total(
            &text,
            &[
                "response_flags=\"NR\"",
                "response_code=\"404\"",
                "source_workload=\"web-0\""
            ]
        ),
        3,
        "{text}"
    );
    assert!(text.contains("weft_proxy_xds_connected 1"), "{text}");

    // Prometheus' own checker accepts the exposition.
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package) is installed");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The health port is reachable from outside the pod: no config there, and a client that
    // sends nothing is let go after 10 s, not held for good.
    assert_eq!(
        weft_e2e::http_get(proxy.health, "/config_dump").unwrap().0,
        404
    );
    let mut silent = std::net::TcpStream::connect(proxy.health).unwrap();
    silent
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut byte = [0u8; 1];
    assert_eq!(std::io::Read::read(&mut silent, &mut byte).unwrap(), 0);
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

#[test]
fn no_endpoint_is_503_and_dead_upstream_is_503_uf() {
    let dead: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let live = named_backend("v2");
    let bind: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // v1's only endpoint refuses connections; all traffic goes to v1.
    write(dir.path(), &mesh(dead, live, bind, (1, 0)));
    let cp = ControlPlane::start(dir.path());
    let _proxy = Sidecar::start(cp.xds, "web-0.shop");
    weft_e2e::wait_for_port(bind, Duration::from_secs(10));
    let mut c = Conn::open(bind);
    let (status, headers, _) = c.get("/api/x", "");
    assert_eq!(status, 503);
    assert!(
        headers.contains(&("x-weft-reason".into(), "UF".into())),
        "{headers:?}"
    );
    // The connection stays usable and other routes still work.
    let (status, _, body) = c.get("/api/x", "x-canary: yes\r\n");
    assert_eq!((status, body.as_str()), (200, "v2"));
}

/// Sends raw bytes on a fresh connection; returns what came back before the proxy closed or
/// 3 s passed.
fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn malformed_and_smuggling_requests_are_refused_before_the_upstream() {
    let (v1, hits1) = weft_e2e::counting_backend("v1");
    let (v2, hits2) = weft_e2e::counting_backend("v2");
    let bind: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &mesh(v1, v2, bind, (1, 1)));
    let cp = ControlPlane::start(dir.path());
    let _proxy = Sidecar::start_with(cp.xds, "web-0.shop", &["--http-header-timeout-ms", "1000"]);
    weft_e2e::wait_for_port(bind, Duration::from_secs(10));

    let big = format!(
        "GET /api/x HTTP/1.1\r\nHost: r\r\nx-big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "bad request line",
            b"GARBAGE\r\n\r\n".to_vec(),
            "HTTP/1.1 400",
        ),
        (
            "bad header line",
            b"GET /api/x HTTP/1.1\r\nHost: r\r\nno colon here\r\n\r\n".to_vec(),
            "HTTP/1.1 400",
        ),
        (
            "transfer-encoding that is not chunked",
            b"POST /api/x HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: gzip\r\n\r\nxx".to_vec(),
            "HTTP/1.1 400",
        ),
        (
            "two different content-lengths",
            b"POST /api/x HTTP/1.1\r\nHost: r\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"
                .to_vec(),
            "HTTP/1.1 400",
        ),
        ("oversized headers", big.into_bytes(), "HTTP/1.1 431"),
        (
            "HTTP/1.1 without Host",
            b"GET /api/x HTTP/1.1\r\n\r\n".to_vec(),
            "HTTP/1.1 400",
        ),
        (
            "CONNECT (no route tunnels)",
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n".to_vec(),
            "HTTP/1.1 404",
        ),
        (
            "two Host headers",
            b"GET /api/x HTTP/1.1\r\nHost: r\r\nHost: evil\r\n\r\n".to_vec(),
            "HTTP/1.1 400",
        ),
        // Just over the 60 KiB limit, in one write: the parsed head is measured, not the buffer.
        (
            "headers just over 60 KiB",
            format!(
                "GET /api/x HTTP/1.1\r\nHost: r\r\nx-big: {}\r\n\r\n",
                "a".repeat(61 * 1024)
            )
            .into_bytes(),
            "HTTP/1.1 431",
        ),
    ];
    for (what, bytes, want) in cases {
        let got = raw(bind, &bytes);
        assert!(got.starts_with(want), "{what}: got {got:?}");
    }
    assert_eq!(
        hits1.load(std::sync::atomic::Ordering::Relaxed)
            + hits2.load(std::sync::atomic::Ordering::Relaxed),
        0
    );

    // Headers one byte a second: cut off after the header timeout.
    let mut s = TcpStream::connect(bind).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = std::time::Instant::now();
    let mut closed = false;
    for b in b"GET /api/x HTTP/1.1\r\nHost: slow\r\n".iter() {
        if s.write_all(&[*b]).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
        if started.elapsed() > Duration::from_secs(4) {
            break;
        }
    }
    if !closed {
        let mut buf = Vec::new();
        let n = s.read_to_end(&mut buf).unwrap_or(0);
        closed = n == 0 || String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 408");
    }
    assert!(closed, "slow client was not disconnected");
    assert!(started.elapsed() < Duration::from_secs(4));
}

/// A drain timeout no test waits for: a proxy that exits within seconds of SIGTERM exited because
/// nothing was left open, not because the drain gave up.
const LONG_DRAIN: [&str; 2] = ["--drain-timeout-ms", "60000"];

/// Sends the sidecar SIGTERM.
fn sigterm(proxy: &Sidecar) {
    let pid = proxy.proc.0.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success());
}

/// Waits for the sidecar to exit with success, at most 3 s (well within [`LONG_DRAIN`]): `why`
/// says what should have let it.
fn exits_cleanly(proxy: &mut Sidecar, why: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        if let Some(status) = proxy.proc.0.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{why}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The mesh with one backend (`v1`) behind both versions, its control plane and sidecar, and
/// where the sidecar listens; for tests of the sidecar's own life.
fn one_backend() -> (tempfile::TempDir, ControlPlane, Sidecar, SocketAddr) {
    let v = named_backend("v1");
    let bind: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &mesh(v, v, bind, (1, 1)));
    let cp = ControlPlane::start(dir.path());
    let proxy = Sidecar::start_with(cp.xds, "web-0.shop", &LONG_DRAIN);
    weft_e2e::wait_for_port(bind, Duration::from_secs(10));
    (dir, cp, proxy, bind)
}

#[test]
fn sigterm_drains_requests_in_flight_serves_outbound_until_exit_then_exits() {
    let (_dir, _cp, mut proxy, bind) = one_backend();

    let in_flight = std::thread::spawn(move || {
        let mut c = Conn::open(bind);
        let resp = c.get("/api/slow", "");
        // After the request in flight, the proxy closes the connection.
        let mut rest = Vec::new();
        let closed = c
            .reader
            .read_to_end(&mut rest)
            .map(|_| rest.is_empty())
            .unwrap_or(false);
        (resp, closed)
    });
    std::thread::sleep(Duration::from_millis(300));
    sigterm(&proxy);
    std::thread::sleep(Duration::from_millis(200));
    // Not ready: the endpoint leaves load balancers.
    let ready = weft_e2e::http_get(proxy.health, "/ready").unwrap();
    assert_eq!((ready.0, ready.1.as_str()), (503, "draining\n"));
    // This is an outbound listener: the app, perhaps shutting down itself, still reaches its
    // upstreams while the proxy drains (as in Istio), one request per connection.
    let mut late = Conn::open(bind);
    let (status, headers, body) = late.get("/api/x", "");
    assert_eq!((status, body.as_str()), (200, "v1"));
    assert!(
        headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("connection") && v == "close"),
        "{headers:?}"
    );
    let ((status, _, body), closed) = in_flight.join().unwrap();
    assert_eq!((status, body.as_str()), (200, "v1"));
    assert!(closed, "connection not closed after the drained request");
    exits_cleanly(&mut proxy, "proxy did not exit after draining");
}

#[test]
fn post_drain_turns_unready_and_closes_connections_but_keeps_accepting_until_sigterm() {
    let (_dir, _cp, mut proxy, bind) = one_backend();
    let mut before = Conn::open(bind);
    assert_eq!(before.get("/api/x", "").0, 200);

    let drain = |method: &str| {
        let out = Command::new("curl")
            .args([
                "-sS",
                "-X",
                method,
                &format!("http://{}/drain", proxy.admin),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(drain("GET"), "POST /drain starts draining\n");
    assert_eq!(drain("POST"), "draining\n");
    let ready = weft_e2e::http_get(proxy.health, "/ready").unwrap();
    assert_eq!((ready.0, ready.1.as_str()), (503, "draining\n"));
    // The idle keep-alive connection from before is closed.
    let mut rest = Vec::new();
    assert_eq!(before.reader.read_to_end(&mut rest).unwrap(), 0);
    // The app's new connections still get through while it runs (a preStop hook), one request
    // each.
    let mut late = Conn::open(bind);
    let (status, headers, body) = late.get("/api/x", "");
    assert_eq!((status, body.as_str()), (200, "v1"));
    assert!(
        headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("connection") && v == "close"),
        "{headers:?}"
    );
    assert!(proxy.proc.0.try_wait().unwrap().is_none());

    // SIGTERM exits once nothing is open.
    sigterm(&proxy);
    exits_cleanly(&mut proxy, "no exit after SIGTERM");
    assert!(TcpStream::connect_timeout(&bind, Duration::from_millis(500)).is_err());
}

#[test]
fn websocket_upgrade_is_carried_end_to_end_and_drained_on_sigterm() {
    let ws_port = free_port();
    let mut ws = weft_e2e::Proc::spawn(
        Command::new("python3")
            .arg(weft_e2e::repo_root().join("tests/interop/backend.py"))
            .args(["ws", "127.0.0.1", &ws_port.to_string(), "echo:"]),
    );
    assert_eq!(ws.read_line().trim(), "ready");
    let ws_addr: SocketAddr = format!("127.0.0.1:{ws_port}").parse().unwrap();
    let bind: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &mesh(ws_addr, ws_addr, bind, (1, 0)));
    let cp = ControlPlane::start(dir.path());
    let mut proxy = Sidecar::start_with(cp.xds, "web-0.shop", &LONG_DRAIN);
    weft_e2e::wait_for_port(bind, Duration::from_secs(10));
    let script = "import sys\nfrom websockets.sync.client import connect\n\
        with connect(f'ws://{sys.argv[1]}/api/ws') as c:\n\
        \x20   for m in ['one', 'two', 'three']:\n\
        \x20       c.send(m)\n\
        \x20       print(c.recv())\n";
    assert_eq!(
        weft_e2e::python_script(script, &[&bind.to_string()]),
        "echo:one\necho:two\necho:three\n"
    );

    // A tunnel open when SIGTERM comes is drained like a request in flight: it keeps working,
    // and the proxy exits once it closes (it outlives the HTTP connection it came from).
    let script = "import sys, time\nfrom websockets.sync.client import connect\n\
        with connect(f'ws://{sys.argv[1]}/api/ws') as c:\n\
        \x20   for m in ['before', 'during']:\n\
        \x20       c.send(m)\n\
        \x20       print(c.recv(), flush=True)\n\
        \x20       time.sleep(1)\n";
    let mut tunnel = weft_e2e::Proc::spawn(
        weft_e2e::python()
            .arg("-c")
            .arg(script)
            .arg(bind.to_string()),
    );
    assert_eq!(tunnel.read_line().trim(), "echo:before");
    sigterm(&proxy);
    assert_eq!(tunnel.read_line().trim(), "echo:during");
    exits_cleanly(&mut proxy, "no exit once the tunnel closed");
}

#[test]
fn control_plane_killed_under_load_fails_no_request_and_is_rejoined() {
    let (v1, v2) = (named_backend("v1"), named_backend("v2"));
    let bind: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &mesh(v1, v2, bind, (1, 0)));
    let mut cp = ControlPlane::start(dir.path());
    let proxy = Sidecar::start(cp.xds, "web-0.shop");
    weft_e2e::wait_for_port(bind, Duration::from_secs(10));

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut c = Conn::open(bind);
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, _, _) = c.get("/api/x", "");
                assert_eq!(status, 200, "request {n} failed");
                n += 1;
            }
            n
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    cp.proc.0.kill().unwrap();
    cp.proc.0.wait().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // New connections are served from the last config too.
    assert_eq!(Conn::open(bind).get("/api/y", "").2, "v1");

    // A new control plane on the same address: the proxy reconnects and takes new config.
    let xds = cp.xds;
    let _cp2 = weft_e2e::Proc::spawn(
        Command::new(weft_e2e::bin("weft"))
            .args(["serve", "--registry"])
            .arg(dir.path())
            .args([
                "--xds-addr",
                &xds.to_string(),
                "--admin-addr",
                &format!("127.0.0.1:{}", free_port()),
            ]),
    );
    write(dir.path(), &mesh(v1, v2, bind, (0, 1)));
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut c = Conn::open(bind);
    while c.get("/api/z", "").2 != "v2" {
        assert!(
            std::time::Instant::now() < deadline,
            "proxy never took config from the new control plane"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = traffic
        .join()
        .expect("no request failed while the control plane was away");
    assert!(sent > 100, "{sent}");
    let (status, _) = weft_e2e::http_get(proxy.health, "/ready").unwrap();
    assert_eq!(status, 200);
}
