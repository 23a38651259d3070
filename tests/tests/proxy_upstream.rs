//! weft-proxy's upstream side end to end: pooled HTTP/1.1 connections reused and closed when idle,
//! one multiplexed HTTP/2 connection that carries the Service's authority, and a client that goes
//! away mid-body taking its upstream request with it.

// Synchronous tests of real processes: they wait on the wall clock, blocking their thread.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use weft_e2e::{Backend, ControlPlane, Sidecar, backend, free_port, http_get, one_service};

fn mesh(api: SocketAddr, fast: SocketAddr, api_bind: SocketAddr, fast_bind: SocketAddr) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: web-0, namespace: shop, labels: {{app: web}}}}
spec: {{containers: [{{name: web}}]}}
status: {{podIP: 127.0.0.1}}
---
apiVersion: weft.io/v1alpha1
kind: Sidecar
metadata: {{name: web, namespace: shop}}
spec:
  outboundListeners:
    - {{bind: "{api_bind}", service: api, port: 80}}
    - {{bind: "{fast_bind}", service: fast, port: 81}}
---
apiVersion: v1
kind: Service
metadata: {{name: api, namespace: shop}}
spec: {{clusterIP: 127.41.0.1, ports: [{{name: http, port: 80}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: fast, namespace: shop}}
spec: {{clusterIP: 127.41.0.2, ports: [{{name: http2, port: 81}}]}}
---
apiVersion: weft.io/v1alpha1
kind: TrafficPolicy
metadata: {{name: api, namespace: shop}}
spec:
  targetRefs: [{{kind: Service, name: api}}]
  connectionPool: {{idleTimeout: 1s}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: api, namespace: shop}}
spec:
  parentRefs: [{{kind: Service, name: api, port: 80}}]
  rules:
    - matches: [{{path: {{type: PathPrefix, value: /stall}}}}]
      timeouts: {{request: 500ms}}
      backendRefs: [{{name: api, port: 80}}]
    - backendRefs: [{{name: api, port: 80}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: api-a, namespace: shop, labels: {{kubernetes.io/service-name: api}}}}
addressType: IPv4
ports: [{{name: http, port: {api_port}}}]
endpoints: [{{addresses: ["127.0.0.1"]}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: fast-a, namespace: shop, labels: {{kubernetes.io/service-name: fast}}}}
addressType: IPv4
ports: [{{name: http2, port: {fast_port}}}]
endpoints: [{{addresses: ["127.0.0.1"]}}]
"#,
        api_port = api.port(),
        fast_port = fast.port(),
    )
}

struct Setup {
    _cp: ControlPlane,
    sidecar: Sidecar,
    _dir: tempfile::TempDir,
    api: Backend,
    fast: Backend,
    api_bind: SocketAddr,
    fast_bind: SocketAddr,
}

fn setup() -> Setup {
    let (api, fast) = (backend("api"), backend("fast"));
    let api_bind: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let fast_bind: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mesh.yaml"),
        mesh(api.addr, fast.addr, api_bind, fast_bind),
    )
    .unwrap();
    let cp = ControlPlane::start(dir.path());
    let sidecar = Sidecar::start(cp.xds, "web-0.shop");
    weft_e2e::wait_for_port(api_bind, Duration::from_secs(10));
    weft_e2e::wait_for_port(fast_bind, Duration::from_secs(10));
    Setup {
        _cp: cp,
        sidecar,
        _dir: dir,
        api,
        fast,
        api_bind,
        fast_bind,
    }
}

/// curl fetching `n` URLs (in parallel if asked); returns every response's headers and body.
fn curl(addr: SocketAddr, path: &str, n: usize, parallel: bool, extra: &[&str]) -> String {
    let url = format!("http://{addr}{path}");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-i", "--max-time", "10"]);
    if parallel {
        cmd.args(["--parallel", "--parallel-immediate", "--parallel-max", "20"]);
    }
    cmd.args(extra);
    for _ in 0..n {
        cmd.arg(&url);
    }
    let out = cmd.output().expect("curl runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Idle HTTP/1.1 connections to the `api` endpoint, from the proxy's `/clusters`.
fn idle_http1(sidecar: &Sidecar) -> u64 {
    let (_, body) = http_get(sidecar.admin, "/clusters").unwrap();
    let clusters: serde_json::Value = serde_json::from_str(&body).unwrap();
    clusters["outbound|80||api.shop.svc.cluster.local"]["endpoints"][0]["idle_http1"]
        .as_u64()
        .unwrap_or_else(|| panic!("{body}"))
}

#[test]
fn http1_connections_are_reused_then_closed_when_idle() {
    let s = setup();
    // Three client connections one after another, ten requests each: one upstream connection.
    for _ in 0..3 {
        let out = curl(s.api_bind, "/a", 10, false, &[]);
        assert_eq!(out.matches("HTTP/1.1 200").count(), 10, "{out}");
    }
    assert_eq!(Backend::get(&s.api.requests), 30);
    assert_eq!(Backend::get(&s.api.connections), 1);
    assert_eq!(idle_http1(&s.sidecar), 1);

    // The TrafficPolicy's 1 s idle timeout closes it; the next request dials a new one.
    wait_until("the idle connection to be closed", || {
        idle_http1(&s.sidecar) == 0
    });
    curl(s.api_bind, "/b", 1, false, &[]);
    assert_eq!(Backend::get(&s.api.connections), 2);
}

#[test]
fn http2_upstream_is_one_connection_carrying_the_service_authority() {
    let s = setup();
    let out = curl(s.fast_bind, "/g", 20, true, &["-H", "Host: fast.shop"]);
    assert_eq!(out.matches("HTTP/1.1 200").count(), 20, "{out}");
    assert_eq!(out.matches("x-seen-version: HTTP/2.0").count(), 20, "{out}");
    // The upstream sees the authority the client addressed, not the endpoint's address.
    assert_eq!(
        out.matches("x-seen-host: fast.shop\r\n").count(),
        20,
        "{out}"
    );
    assert_eq!(Backend::get(&s.fast.connections), 1);
}

#[test]
fn client_gone_mid_body_cancels_the_upstream_request() {
    let s = setup();
    let mut c = TcpStream::connect(s.api_bind).unwrap();
    c.write_all(b"POST /upload HTTP/1.1\r\nHost: api\r\nContent-Length: 10000000\r\n\r\n")
        .unwrap();
    c.write_all(&[b'x'; 65536]).unwrap();
    wait_until("the request to reach the upstream", || {
        Backend::get(&s.api.requests) == 1
    });
    drop(c);
    wait_until("the upstream body to be cut off", || {
        Backend::get(&s.api.aborted_bodies) == 1
    });
    // The broken connection is not reused: the next request works.
    let out = curl(s.api_bind, "/after", 1, false, &[]);
    assert!(out.contains("HTTP/1.1 200"), "{out}");
    assert_eq!(Backend::get(&s.api.requests), 2);
}

#[test]
fn route_timeout_cuts_off_a_response_whose_body_stalls() {
    let s = setup();
    let started = Instant::now();
    let out = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "8"])
        .arg(format!("http://{}/stall", s.api_bind))
        .output()
        .unwrap();
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    // Headers and the first chunk arrived; the rest never did, and curl saw the cut.
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("first") && !text.contains("last"), "{text}");
    assert!(!out.status.success(), "curl should see a truncated body");
    assert!(
        took < Duration::from_secs(5),
        "cut after {took:?}, want ~0.5 s"
    );
    let (_, metrics) = http_get(s.sidecar.health, "/metrics").unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("weft_requests_total{")
                && l.contains("response_flags=\"UT\"")
                && l.contains("response_code=\"200\"")),
        "{metrics}"
    );
}

#[test]
fn client_gone_before_the_response_is_counted_dc() {
    let s = setup();
    let mut c = TcpStream::connect(s.api_bind).unwrap();
    c.write_all(b"GET /api/slow HTTP/1.1\r\nHost: api\r\n\r\n")
        .unwrap();
    wait_until("the request to reach the upstream", || {
        Backend::get(&s.api.requests) == 1
    });
    drop(c);
    wait_until("the abandoned request to be counted", || {
        let (_, metrics) = http_get(s.sidecar.health, "/metrics").unwrap();
        metrics.lines().any(|l| {
            l.starts_with("weft_requests_total{")
                && l.contains("response_flags=\"DC\"")
                && l.contains("response_code=\"0\"")
                && l.ends_with(" 1")
        })
    });
}

/// An iptables rule dropping SYNs to a loopback port, removed on drop: connects there hang.
struct Blackhole(u16);

impl Blackhole {
    fn rule(&self, op: &str) -> std::process::Output {
        Command::new("iptables")
            .args([op, "INPUT", "-p", "tcp", "-d", "127.0.0.1", "--dport"])
            .arg(self.0.to_string())
            .args(["-j", "DROP"])
            .output()
            .expect("iptables runs (root)")
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        let _ = self.rule("-D");
    }
}

/// A mesh of one Service `name` (port `port`, named `port_name`: the name declares the protocol)
/// whose one endpoint is 127.0.0.1:`endpoint_port`, reached through an explicit listener; returns
/// the running control plane and sidecar, the listener address, and the registry directory.
#[test]
fn requests_queued_behind_a_failed_http2_dial_fail_with_it() {
    let port = free_port();
    let hole = Blackhole(port);
    let out = hole.rule("-I");
    assert!(out.status.success(), "{out:?}");
    let mesh = one_service("stuck", 81, "http2", &[port], "", &[]);
    let bind = mesh.bind;
    // Three requests at once: one dials (and times out after the cluster's 5 s connect timeout);
    // the two queued behind it fail with it rather than dialing (and waiting) in turn.
    let started = Instant::now();
    let clients: Vec<_> = (0..3)
        .map(|_| std::thread::spawn(move || curl(bind, "/", 1, false, &[])))
        .collect();
    for c in clients {
        let out = c.join().unwrap();
        assert!(out.starts_with("HTTP/1.1 503"), "{out}");
        assert!(out.contains("x-weft-reason: UF"), "{out}");
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(9), "took {took:?}");
}

#[test]
fn tcp_bytes_are_counted_as_they_flow_and_an_upstream_reset_is_passed_on() {
    use std::io::Read;
    // Reads the client's hello, answers 1,000 bytes, then closes with a reset.
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = server.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in server.incoming().flatten() {
            let mut s = s;
            let mut hello = [0u8; 5];
            let _ = s.read_exact(&mut hello);
            let _ = s.write_all(&[b'x'; 1000]);
            std::thread::sleep(Duration::from_secs(1));
            let _ = nix::sys::socket::setsockopt(
                &s,
                nix::sys::socket::sockopt::Linger,
                &nix::libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                },
            );
        }
    });
    let mesh = one_service("db", 5432, "tcp-pg", &[upstream.port()], "", &[]);
    let (sidecar, bind) = (&mesh.sidecar, mesh.bind);
    let scrape = || http_get(sidecar.health, "/metrics").unwrap().1;
    let counter = |text: &str, name: &str| -> u64 {
        text.lines()
            .filter(|l| {
                l.starts_with(&format!("{name}{{"))
                    && l.contains("destination_service=\"db.shop.svc.cluster.local\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let settled = |text: &str| {
        let opened = counter(text, "weft_tcp_connections_opened_total");
        opened >= 1 && opened == counter(text, "weft_tcp_connections_closed_total")
    };
    // The readiness probe above was a connection too: start from the counters once it is done.
    wait_until("the probe connection to close", || settled(&scrape()));
    let before = scrape();
    let mut c = TcpStream::connect(bind).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"hello").unwrap();
    let mut got = vec![0u8; 1000];
    c.read_exact(&mut got).unwrap();
    // Counted while the connection is still open (the server holds it another second).
    let open = scrape();
    let delta = |text: &str, name: &str| counter(text, name) - counter(&before, name);
    assert_eq!(
        delta(&open, "weft_tcp_connections_closed_total"),
        0,
        "{open}"
    );
    assert_eq!(delta(&open, "weft_tcp_sent_bytes_total"), 1000, "{open}");
    assert_eq!(delta(&open, "weft_tcp_received_bytes_total"), 5, "{open}");
    let closed_before = counter(&before, "weft_tcp_connections_closed_total");
    wait_until("the reset connection to be counted", || {
        counter(&scrape(), "weft_tcp_connections_closed_total") == closed_before + 1
    });
    let after = scrape();
    assert_eq!(
        delta(&after, "weft_tcp_connections_opened_total"),
        1,
        "{after}"
    );
    assert_eq!(delta(&after, "weft_tcp_sent_bytes_total"), 1000, "{after}");
    assert_eq!(delta(&after, "weft_tcp_received_bytes_total"), 5, "{after}");
    // The upstream's reset reaches the client as a reset, not as a clean end of the stream.
    let err = c
        .read(&mut got)
        .expect_err("the reset reached the client as a clean end");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
}

#[test]
fn a_dead_endpoint_is_passed_over_instead_of_preferred() {
    // Two endpoints, one refusing connections. Round robin (to be sure the dead one is tried)
    // would send it every other request; after its first failure it is passed over for a
    // back-off instead. The default balancer does the same: a fast failure would otherwise look
    // like a fast endpoint to its latency EWMA (unit test in balance/mod.rs).
    let live = backend("live");
    let dead = free_port();
    let policy = "---
apiVersion: weft.io/v1alpha1
kind: TrafficPolicy
metadata: {name: pair, namespace: shop}
spec: {targetRefs: [{kind: Service, name: pair}], loadBalancer: RoundRobin}
";
    let mesh = one_service("pair", 80, "http", &[live.addr.port(), dead], policy, &[]);
    let (sidecar, bind) = (&mesh.sidecar, mesh.bind);
    let out = curl(bind, "/", 100, false, &[]);
    let ok = out.matches("HTTP/1.1 200").count();
    let failed = out.matches("HTTP/1.1 503").count();
    assert_eq!(ok + failed, 100, "{out}");
    // Round robin alone would fail 50. The back-off (1 s, then 2 s) outlasts these 100 requests
    // unless the machine stalls.
    assert!((1..=3).contains(&failed), "{failed} failed: {out}");
    let clusters = http_get(sidecar.admin, "/clusters").unwrap().1;
    assert!(
        clusters.contains(&format!("\"consecutive_failures\": {failed}")),
        "{clusters}"
    );
}

/// A raw-socket upstream that reports the bytes of each request (its head, and its body: by its
/// Content-Length, or chunked up to the last chunk) and answers `ok`, one request per connection
/// (it says `connection: close`).
fn recording_upstream() -> (SocketAddr, std::sync::mpsc::Receiver<String>) {
    use std::io::Read;
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = server.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for s in server.incoming().flatten() {
            let mut s = s;
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            let done = |got: &[u8]| {
                let text = String::from_utf8_lossy(got).to_ascii_lowercase();
                let Some(head) = text.find("\r\n\r\n") else {
                    return false;
                };
                let length = text[..head]
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                match length {
                    Some(n) => got.len() >= head + 4 + n,
                    None => text.ends_with("0\r\n\r\n") || !text.contains("chunked"),
                }
            };
            while !done(&got) {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let _ = tx.send(String::from_utf8_lossy(&got).into_owned());
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nx-internal: secret\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok");
        }
    });
    (upstream, rx)
}

/// Sends the classic smuggling shape, a request framed both by length and by chunks, and reads
/// the answer to the end: the proxy must close the connection, well before the read timeout.
fn send_framed_twice(bind: SocketAddr) -> String {
    use std::io::Read;
    let mut c = TcpStream::connect(bind).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(
        b"POST / HTTP/1.1\r\nHost: cte\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n0\r\n\r\n",
    )
    .unwrap();
    let started = Instant::now();
    let mut resp = String::new();
    c.read_to_string(&mut resp).unwrap();
    assert!(started.elapsed() < Duration::from_secs(4), "{resp}");
    resp
}

#[test]
fn content_length_with_chunked_is_refused_400_and_nothing_goes_upstream() {
    // RFC 9112 §6.1 lets a server refuse it, as Envoy does by default; the connection closes.
    let (upstream, rx) = recording_upstream();
    let mesh = one_service("cte", 80, "http", &[upstream.port()], "", &[]);
    let resp = send_framed_twice(mesh.bind);
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(
        resp.to_ascii_lowercase().contains("x-weft-reason: dpe"),
        "{resp}"
    );
    assert!(rx.recv_timeout(Duration::from_millis(500)).is_err());
    // Counted, with its flag, against no destination.
    let metrics = http_get(mesh.sidecar.health, "/metrics").unwrap().1;
    let refused = metrics
        .lines()
        .find(|l| l.starts_with("weft_requests_total") && l.contains("response_flags=\"DPE\""));
    assert!(
        refused.is_some_and(|l| l.contains("response_code=\"400\"") && l.ends_with(" 1")),
        "{metrics}"
    );
    // A request after it, on a new connection, is served.
    let (status, body) = http_get(mesh.bind, "/").unwrap();
    assert_eq!((status, body.as_str()), (200, "ok"));
}

#[test]
fn content_length_with_chunked_goes_upstream_chunked_only_on_hypers_path() {
    // With the fast path off, hyper reads it: Transfer-Encoding wins (RFC 9112 §6.3), and the
    // connection closes after the response. The upstream must get one unambiguous framing.
    let (upstream, rx) = recording_upstream();
    let mesh = one_service(
        "cte",
        80,
        "http",
        &[upstream.port()],
        "",
        &["--http1-fast-path", "false"],
    );
    let resp = send_framed_twice(mesh.bind);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.ends_with("ok"), "{resp}");
    let seen = rx
        .recv_timeout(Duration::from_secs(5))
        .unwrap()
        .to_ascii_lowercase();
    assert!(seen.contains("transfer-encoding: chunked"), "{seen}");
    assert!(!seen.contains("content-length"), "{seen}");
    assert!(seen.contains("hello"), "{seen}");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    use std::io::Read;
    let s = setup();
    // Three requests in one write, before any response: answered one after another, in order.
    let mut c = TcpStream::connect(s.api_bind).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut burst = String::new();
    for i in 1..=3 {
        burst += &format!("GET /p{i} HTTP/1.1\r\nHost: api\r\nx-request-id: req-{i}\r\n\r\n");
    }
    burst += "GET /last HTTP/1.1\r\nHost: api\r\nx-request-id: req-4\r\nConnection: close\r\n\r\n";
    c.write_all(burst.as_bytes()).unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    let ids: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("x-seen-request-id: "))
        .collect();
    assert_eq!(ids, ["req-1", "req-2", "req-3", "req-4"], "{out}");
    assert_eq!(out.matches("HTTP/1.1 200").count(), 4, "{out}");
}

#[test]
fn a_large_upload_over_http2_both_ways_is_carried_whole() {
    // 16 MiB from an HTTP/2 client to an HTTP/2 upstream: far beyond the 64 KiB initial windows on
    // both legs, so it only arrives whole if the proxy honours flow control on each side.
    let s = setup();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("upload");
    std::fs::write(&file, vec![b'x'; 16 << 20]).unwrap();
    let out = curl(
        s.fast_bind,
        "/upload",
        1,
        false,
        &[
            "--http2-prior-knowledge",
            "-H",
            "Host: fast.shop",
            "--data-binary",
            &format!("@{}", file.display()),
        ],
    );
    assert!(out.starts_with("HTTP/2 200"), "{out}");
    assert!(out.contains("x-seen-version: HTTP/2.0"), "{out}");
    assert!(
        out.contains(&format!("x-seen-body-bytes: {}", 16 << 20)),
        "{out}"
    );
}

#[test]
fn tcp_half_close_reaches_the_upstream_and_the_answer_still_comes_back() {
    use std::io::Read;
    // Reads until the client's EOF, then answers with what it got: works only if the proxy passes
    // the client's FIN upstream while keeping the way back open.
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = server.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in server.incoming().flatten() {
            let mut s = s;
            let mut got = Vec::new();
            let _ = s.read_to_end(&mut got);
            let _ = s.write_all(format!("got {} bytes", got.len()).as_bytes());
        }
    });
    let mesh = one_service("sink", 7000, "tcp", &[upstream.port()], "", &[]);
    let bind = mesh.bind;
    let mut c = TcpStream::connect(bind).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(&[b'y'; 100_000]).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "got 100000 bytes");
}

#[test]
fn an_idle_tcp_connection_is_closed_after_the_policy_idle_timeout_and_a_busy_one_is_not() {
    use std::io::{BufRead, BufReader, Read};
    let upstream = weft_e2e::line_echo("");
    let policy = "---
apiVersion: weft.io/v1alpha1
kind: TrafficPolicy
metadata: {name: echo, namespace: shop}
spec: {targetRefs: [{kind: Service, name: echo}], connectionPool: {idleTimeout: 1s}}
";
    // A declared TCP port, and one left to detection (`db`: no protocol prefix) whose client
    // turns out not to speak HTTP: its listener's TCP chain carries the same timeout.
    for port_name in ["tcp", "db"] {
        let mesh = one_service("echo", 7001, port_name, &[upstream.port()], policy, &[]);
        let bind = mesh.bind;
        let c = TcpStream::connect(bind).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
        let mut r = BufReader::new(c.try_clone().unwrap());
        // Busy for 2 s, a line every 300 ms: twice the idle timeout, and still open.
        for i in 0..7 {
            (&c).write_all(format!("ping {i}\n").as_bytes()).unwrap();
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            assert_eq!(line, format!("ping {i}\n"), "{port_name}");
            std::thread::sleep(Duration::from_millis(300));
        }
        // Then quiet: the proxy closes it between 1 and 1.5 s after the last byte (it looks
        // four times per timeout); the last byte was 300 ms before this point.
        let quiet = Instant::now();
        let mut rest = Vec::new();
        assert_eq!(
            r.read_to_end(&mut rest).unwrap(),
            0,
            "{port_name}: closed without data"
        );
        let waited = quiet.elapsed();
        assert!(
            waited >= Duration::from_millis(600) && waited < Duration::from_secs(4),
            "{port_name}: {waited:?}"
        );
    }
}

#[test]
fn a_service_whose_endpoints_are_not_ready_is_503_uh() {
    // An endpoint that exists but is not ready (a failing readiness probe) takes no traffic.
    let app = backend("app");
    let not_ready = format!(
        r#"
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: cold-a, namespace: shop, labels: {{kubernetes.io/service-name: cold}}}}
addressType: IPv4
ports: [{{name: http, port: {}}}]
endpoints: [{{addresses: ["127.0.0.1"], conditions: {{ready: false}}}}]
"#,
        app.addr.port()
    );
    let mesh = one_service("cold", 80, "http", &[], &not_ready, &[]);
    let out = curl(mesh.bind, "/", 3, false, &[]);
    assert_eq!(out.matches("HTTP/1.1 503").count(), 3, "{out}");
    assert_eq!(out.matches("x-weft-reason: UH").count(), 3, "{out}");
    assert!(out.contains("no healthy upstream"), "{out}");
    let metrics = http_get(mesh.sidecar.health, "/metrics").unwrap().1;
    assert!(
        metrics.lines().any(|l| l.starts_with("weft_requests_total")
            && l.contains("response_flags=\"UH\"")
            && l.contains("response_code=\"503\"")
            && l.ends_with(" 3")),
        "{metrics}"
    );
}

#[test]
fn logging_changes_the_filter_at_run_time_and_refuses_unknown_levels() {
    let mesh = one_service("log", 80, "http", &[], "", &[]);
    let admin = mesh.sidecar.admin;
    let post = |query: &str| {
        let out = Command::new("curl")
            .args(["-sS", "-X", "POST", "-w", "\n%{http_code}"])
            .arg(format!("http://{admin}/logging{query}"))
            .output()
            .expect("curl runs");
        String::from_utf8(out.stdout).unwrap()
    };
    // Envoy's level words, and a logger by name.
    assert!(post("?level=warning").ends_with("active filter: warn\n\n200"));
    let out = post("?weft_proxy::xds=debug");
    assert!(
        out.ends_with("active filter: warn,weft_proxy::xds=debug\n\n200"),
        "{out}"
    );
    // A misspelt level changes nothing (tracing alone would read it as a target and silence
    // every log line).
    let out = post("?level=verbose");
    assert!(
        out.ends_with("400") && out.contains("unknown log level"),
        "{out}"
    );
    let (status, listed) = http_get(admin, "/logging").unwrap();
    assert_eq!(status, 200);
    assert!(
        listed.contains("active filter: warn,weft_proxy::xds=debug"),
        "{listed}"
    );
}

#[test]
fn httproute_header_modifiers_edit_requests_and_responses() {
    let (upstream, rx) = recording_upstream();
    let route = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: hdr, namespace: shop}
spec:
  parentRefs: [{kind: Service, name: hdr, port: 80}]
  rules:
    - filters:
        - type: RequestHeaderModifier
          requestHeaderModifier:
            set: [{name: X-Env, value: canary}]
            add: [{name: x-a, value: "1"}]
            remove: [x-debug]
        - type: ResponseHeaderModifier
          responseHeaderModifier:
            add: [{name: x-served-by, value: weft}]
            remove: [x-internal]
      backendRefs: [{name: hdr, port: 80}]
"#;
    let mesh = one_service("hdr", 80, "http", &[upstream.port()], route, &[]);
    let out = curl(
        mesh.bind,
        "/",
        1,
        false,
        &["-H", "x-debug: 1", "-H", "x-env: prod", "-H", "x-a: 0"],
    );
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let resp = out.to_ascii_lowercase();
    assert!(resp.contains("x-served-by: weft"), "{out}");
    assert!(!resp.contains("x-internal"), "{out}");
    let seen = rx
        .recv_timeout(Duration::from_secs(5))
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        seen.contains("x-env: canary") && !seen.contains("x-env: prod"),
        "{seen}"
    );
    assert!(seen.contains("x-a: 0") && seen.contains("x-a: 1"), "{seen}");
    assert!(!seen.contains("x-debug"), "{seen}");
}

/// [`one_service`] with `route` for Service `name` (port 80, HTTP) and one endpoint at
/// `upstream_port`: once with the HTTP/1 fast path, once with hyper's alone, each started as the
/// loop reaches it.
fn on_both_http1_paths<'a>(
    name: &'a str,
    upstream_port: u16,
    route: &'a str,
) -> impl Iterator<Item = weft_e2e::OneService> + 'a {
    ["true", "false"].into_iter().map(move |fast| {
        one_service(
            name,
            80,
            "http",
            &[upstream_port],
            route,
            &["--http1-fast-path", fast],
        )
    })
}

#[test]
fn a_backend_refs_header_modifiers_apply_to_its_requests_before_the_rules() {
    let (upstream, rx) = recording_upstream();
    let route = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: hdr, namespace: shop}
spec:
  parentRefs: [{kind: Service, name: hdr, port: 80}]
  rules:
    - filters:
        - type: RequestHeaderModifier
          requestHeaderModifier: {set: [{name: x-rule, value: r}], remove: [x-drop]}
      backendRefs:
        - name: hdr
          port: 80
          filters:
            - type: RequestHeaderModifier
              requestHeaderModifier: {set: [{name: x-backend, value: b}, {name: x-drop, value: "1"}]}
            - type: ResponseHeaderModifier
              responseHeaderModifier: {add: [{name: x-via, value: b}]}
"#;
    // Both paths: the fast path hands requests with edits to hyper.
    for mesh in on_both_http1_paths("hdr", upstream.port(), route) {
        let out = curl(mesh.bind, "/", 1, false, &[]);
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.to_ascii_lowercase().contains("x-via: b"), "{out}");
        let seen = rx
            .recv_timeout(Duration::from_secs(5))
            .unwrap()
            .to_ascii_lowercase();
        assert!(
            seen.contains("x-backend: b") && seen.contains("x-rule: r"),
            "{seen}"
        );
        // The rule's removal comes after the backend's set, as Envoy orders them.
        assert!(!seen.contains("x-drop"), "{seen}");
    }
}

#[test]
fn httproute_url_rewrites_and_redirects_as_curl_sees_them() {
    let (upstream, rx) = recording_upstream();
    let route = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: rw, namespace: shop}
spec:
  parentRefs: [{kind: Service, name: rw, port: 80}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /old}}]
      filters:
        - type: URLRewrite
          urlRewrite: {hostname: api.example, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}
      backendRefs: [{name: rw, port: 80}]
    - matches: [{path: {type: Exact, value: /fixed}}]
      filters:
        - type: URLRewrite
          urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /replaced}}
      backendRefs: [{name: rw, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /legacy}}]
      filters:
        - type: RequestRedirect
          requestRedirect:
            scheme: https
            hostname: www.example
            path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}
            statusCode: 301
        - type: ResponseHeaderModifier
          responseHeaderModifier: {add: [{name: x-served-by, value: weft}]}
    - matches: [{path: {type: PathPrefix, value: /here}}]
      filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /there}}}]
    - backendRefs: [{name: rw, port: 80}]
"#;
    let mesh = one_service("rw", 80, "http", &[upstream.port()], route, &[]);
    let seen = |what: &str| {
        rx.recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("{what} reached the upstream"))
            .to_ascii_lowercase()
    };

    let out = curl(mesh.bind, "/old/a/b?q=1", 1, false, &[]);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let head = seen("/old/a/b");
    assert!(head.starts_with("get /new/a/b?q=1 http/1.1\r\n"), "{head}");
    assert!(head.contains("\r\nhost: api.example\r\n"), "{head}");
    // The matched prefix is a whole segment: /old alone becomes /new.
    curl(mesh.bind, "/old", 1, false, &[]);
    assert!(seen("/old").starts_with("get /new http/1.1"));

    curl(mesh.bind, "/fixed?x=y", 1, false, &[]);
    let head = seen("/fixed");
    assert!(head.starts_with("get /replaced?x=y http/1.1"), "{head}");
    assert!(head.contains(&format!("host: {}", mesh.bind)), "{head}");

    // Redirects are answered by the proxy: nothing goes upstream.
    let out = curl(mesh.bind, "/legacy/item?id=7", 1, false, &[]).to_ascii_lowercase();
    assert!(out.starts_with("http/1.1 301"), "{out}");
    assert!(
        out.contains("\r\nlocation: https://www.example/v2/item?id=7\r\n"),
        "{out}"
    );
    assert!(out.contains("x-served-by: weft"), "{out}");
    let out = curl(mesh.bind, "/here/x?k", 1, false, &[]).to_ascii_lowercase();
    assert!(out.starts_with("http/1.1 302"), "{out}");
    let port = mesh.bind.port();
    assert!(
        out.contains(&format!(
            "\r\nlocation: http://127.0.0.1:{port}/there?k\r\n"
        )),
        "{out}"
    );
    // curl follows it, to the proxy again and on to the catch-all rule.
    let out = curl(mesh.bind, "/here", 1, false, &["-L"]);
    assert!(out.contains("HTTP/1.1 200"), "{out}");
    assert!(seen("the followed redirect").starts_with("get /there http/1.1"));
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());

    // An HTTP/1.0 request without Host leaves a redirect nowhere to send the client: 400.
    {
        use std::io::Read;
        let mut c = TcpStream::connect(mesh.bind).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(b"GET /here/x HTTP/1.0\r\n\r\n").unwrap();
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.0 400"), "{out}");
        assert!(!out.to_ascii_lowercase().contains("location:"), "{out}");
    }

    // Untouched paths keep theirs (the fast path carries them).
    curl(mesh.bind, "/other", 1, false, &[]);
    assert!(seen("/other").starts_with("get /other http/1.1"));
    let metrics = http_get(mesh.sidecar.health, "/metrics").unwrap().1;
    let redirects: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("weft_requests_total") && l.contains("response_code=\"30"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(redirects, 3, "{metrics}");
}

#[test]
fn httproute_request_mirror_copies_requests_with_their_bodies() {
    let (shadow, copies) = recording_upstream();
    let primary = backend("primary");
    let route = format!(
        r#"
---
apiVersion: v1
kind: Service
metadata: {{name: shadow, namespace: shop}}
spec: {{clusterIP: 127.41.0.10, ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: shadow-1, namespace: shop, labels: {{kubernetes.io/service-name: shadow}}}}
addressType: IPv4
ports: [{{name: http, port: {}}}]
endpoints: [{{addresses: ["127.0.0.1"]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: mirror, namespace: shop}}
spec:
  parentRefs: [{{kind: Service, name: mirrored, port: 80}}]
  rules:
    - filters:
        - type: RequestMirror
          requestMirror: {{backendRef: {{name: shadow, port: 80}}}}
      backendRefs: [{{name: mirrored, port: 80}}]
"#,
        shadow.port()
    );
    let mesh = one_service("mirrored", 80, "http", &[primary.addr.port()], &route, &[]);
    // The client gets the real upstream's answer; the mirror gets a copy, body and all, its
    // host marked as a shadow's.
    let body = "x".repeat(100_000);
    let out = curl(
        mesh.bind,
        "/upload?id=7",
        1,
        false,
        &["-H", "Host: mirrored.shop", "--data-binary", &body],
    );
    assert!(
        out.starts_with("HTTP/1.1 200") && out.ends_with("primary"),
        "{out}"
    );
    assert_eq!(Backend::get(&primary.requests), 1);
    let copy = copies.recv_timeout(Duration::from_secs(5)).expect("a copy");
    let lower = copy.to_ascii_lowercase();
    assert!(
        lower.starts_with("post /upload?id=7 http/1.1\r\n"),
        "{copy:.300}"
    );
    assert!(
        lower.contains("\r\nhost: mirrored.shop-shadow\r\n"),
        "{copy:.300}"
    );
    assert!(
        copy.ends_with(&body),
        "the copy's body is {} bytes",
        copy.len()
    );
    // A bodiless GET is copied too.
    curl(mesh.bind, "/get", 1, false, &["-H", "Host: mirrored.shop"]);
    let copy = copies.recv_timeout(Duration::from_secs(5)).expect("a copy");
    assert!(
        copy.to_ascii_lowercase().starts_with("get /get http/1.1"),
        "{copy}"
    );
    assert_eq!(Backend::get(&primary.requests), 2);
    // A client speaking HTTP/2 is mirrored too, over the mirror cluster's own protocol.
    let out = curl(
        mesh.bind,
        "/h2",
        1,
        false,
        &[
            "--http2-prior-knowledge",
            "-H",
            "Host: mirrored.shop",
            "-d",
            "abc",
        ],
    );
    assert!(
        out.starts_with("HTTP/2 200") && out.ends_with("primary"),
        "{out}"
    );
    let copy = copies.recv_timeout(Duration::from_secs(5)).expect("a copy");
    assert!(
        copy.to_ascii_lowercase().starts_with("post /h2 http/1.1"),
        "{copy}"
    );
    assert!(copy.ends_with("abc"), "{copy}");
}

#[test]
fn a_low_open_file_limit_is_raised_to_the_hard_limit() {
    // Started as a host's service manager often starts one: soft limit 256, hard limit higher.
    let port = || format!("127.0.0.1:{}", free_port());
    let health = port();
    let proc = weft_e2e::Proc::spawn(
        Command::new("sh")
            .args(["-c", "ulimit -Sn 256 && exec \"$@\"", "sh"])
            .arg(weft_e2e::bin("weft-proxy"))
            .args(["--xds-addr", "127.0.0.1:1", "--node-id", "host-0.shop"])
            .args(["--admin-addr", &port(), "--health-addr", &health])
            .args(["--outbound-capture-addr", &port()])
            .args(["--inbound-capture-addr", &port()]),
    );
    weft_e2e::wait_for_port(health.parse().unwrap(), Duration::from_secs(10));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", proc.0.id())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert!(numbers[0] != "256" && numbers[0] == numbers[1], "{line}");
}

#[test]
fn response_header_edits_reach_the_proxys_own_answers_too() {
    // As Envoy's router does: a route's response headers go on a 503 the proxy answers itself.
    let dead = free_port();
    let route = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: gone, namespace: shop}
spec:
  parentRefs: [{kind: Service, name: gone, port: 80}]
  rules:
    - filters:
        - type: ResponseHeaderModifier
          responseHeaderModifier: {add: [{name: x-served-by, value: weft}]}
      backendRefs: [{name: gone, port: 80}]
"#;
    let mesh = one_service("gone", 80, "http", &[dead], route, &[]);
    let out = curl(mesh.bind, "/", 1, false, &[]).to_ascii_lowercase();
    assert!(out.starts_with("http/1.1 503"), "{out}");
    assert!(out.contains("x-weft-reason: uf"), "{out}");
    assert!(out.contains("x-served-by: weft"), "{out}");
}

/// Gateway API's failure rules as curl sees them: a backendRef to a Service that does not exist
/// keeps its share of the split, answered 500 (not sent to the other backend); a rule with a
/// filter weft cannot apply answers 500 and forwards nothing (an auth filter fails closed); a
/// rule without backendRefs sends to the Service it is attached to.
#[test]
fn unresolved_backends_get_their_share_of_500s_and_a_filter_weft_cannot_apply_refuses_its_rule() {
    let upstream = backend("fail");
    let seen = || Backend::get(&upstream.requests);
    let route = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: fail, namespace: shop}
spec:
  parentRefs: [{kind: Service, name: fail, port: 80}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /split}}]
      backendRefs: [{name: fail, port: 80}, {name: gone, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /auth}}]
      filters: [{type: ExtensionRef, extensionRef: {group: example.com, kind: Auth, name: a}}]
      backendRefs: [{name: fail, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /parent}}]
"#;
    for mesh in on_both_http1_paths("fail", upstream.addr.port(), route) {
        let before = seen();
        let out = curl(mesh.bind, "/split", 200, false, &[]);
        let (ok, failed) = (
            out.matches("HTTP/1.1 200").count(),
            out.matches("HTTP/1.1 500").count(),
        );
        // Binomial(200, 1/2): 60..=140 is more than five standard deviations either way.
        assert_eq!(ok + failed, 200, "{out}");
        assert!((60..=140).contains(&failed), "{ok} ok, {failed} 500");
        assert!(out.contains("x-weft-reason: NC"), "{out}");
        assert_eq!(seen() - before, ok);
        let out = curl(mesh.bind, "/auth", 1, false, &[]);
        assert!(out.starts_with("HTTP/1.1 500"), "{out}");
        assert!(out.contains("ExtensionRef"), "{out}");
        assert_eq!(seen() - before, ok, "the refused request was forwarded");
        let out = curl(mesh.bind, "/parent", 1, false, &[]);
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert_eq!(seen() - before, ok + 1);
    }
}

/// Paths are routed and forwarded without dot segments (Envoy's `normalize_path`, which the
/// control plane turns on as Istio does): `/public/../admin` is `/admin`, never a way past the
/// rule for `/admin`.
#[test]
fn dot_segments_are_removed_before_a_request_is_routed() {
    let (upstream, rx) = recording_upstream();
    let route = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: paths, namespace: shop}
spec:
  parentRefs: [{kind: Service, name: paths, port: 80}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /public}}]
      backendRefs: [{name: paths, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /admin}}]
      filters: [{type: ExtensionRef, extensionRef: {group: example.com, kind: Auth, name: a}}]
      backendRefs: [{name: paths, port: 80}]
"#;
    for mesh in on_both_http1_paths("paths", upstream.port(), route) {
        let out = curl(mesh.bind, "/public/../admin", 1, false, &["--path-as-is"]);
        assert!(out.starts_with("HTTP/1.1 500"), "{out}");
        let out = curl(
            mesh.bind,
            "/public/./a/%2e%2e/b?q=1",
            1,
            false,
            &["--path-as-is"],
        );
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        let seen = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(seen.starts_with("GET /public/b?q=1 HTTP/1.1"), "{seen}");
        assert!(rx.try_recv().is_err(), "the /admin request was forwarded");
    }
}

/// An upstream that answers HEAD without framing and then closes, unread, a moment later (as a
/// server does whose GET would have been closed-delimited), and answers anything else `ok` with
/// its length, keeping the connection.
fn unframed_head_upstream() -> SocketAddr {
    use std::io::Read;
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in server.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                    if head.starts_with("head ") {
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\n");
                        std::thread::sleep(Duration::from_millis(200));
                        return; // closed, whatever was sent meanwhile
                    }
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    while got.len() < end + 4 + length {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    got.drain(..end + 4 + length);
                    if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A HEAD answered without framing, then a POST on the same client connection: on hyper's path
/// (the fast path off) the POST must not be sent on the upstream connection the HEAD used,
/// which its server is about to close (a POST cannot be sent again, so that race was a 502).
#[test]
fn a_post_after_an_unframed_head_answer_takes_a_new_upstream_connection() {
    use std::io::{BufRead, BufReader, Read};
    let upstream = unframed_head_upstream();
    let mesh = one_service(
        "head",
        80,
        "http",
        &[upstream.port()],
        "",
        &["--http1-fast-path", "false"],
    );
    let c = TcpStream::connect(mesh.bind).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut w = c.try_clone().unwrap();
    let mut r = BufReader::new(c);
    // The response head, and its body by its length.
    let mut answer = || {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            head.push_str(&line);
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        let length = head
            .to_ascii_lowercase()
            .lines()
            .find_map(|l| {
                l.strip_prefix("content-length:")
                    .map(str::trim)
                    .map(String::from)
            })
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        r.read_exact(&mut body).unwrap();
        head
    };
    for round in 0..3 {
        w.write_all(b"HEAD / HTTP/1.1\r\nHost: head\r\n\r\n")
            .unwrap();
        let head = answer();
        assert!(head.starts_with("HTTP/1.1 200"), "round {round}: {head}");
        w.write_all(b"POST / HTTP/1.1\r\nHost: head\r\nContent-Length: 3\r\n\r\nabc")
            .unwrap();
        let post = answer();
        assert!(post.starts_with("HTTP/1.1 200"), "round {round}: {post}");
    }
}
