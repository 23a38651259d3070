//! Config changes end to end: a registry file edit goes through `weft serve` (file watch, mesh
//! model, translation, debounce, Delta xDS) to a real weft-proxy, and this bench times when the
//! requests it carries change backend, under live traffic, with a large mesh loaded.
//!
//! Two nginx origins answer `a` and `b`. Service `web` has an HTTPRoute whose backends are
//! `web-a` and `web-b`; `--services` more Services (`--endpoints` each) fill the mesh the proxy
//! holds. The bench first times weft-proxy from start to `/ready`, then under open-loop traffic
//! makes `--changes` route edits (all weight to the other backend: RDS) and as many endpoint
//! edits (`web-a`'s EndpointSlice moved to the other origin: EDS), each written the way a tool
//! does (a new file renamed into place). For each it prints when the first response came from
//! the new backend and when the old one answered last, counted from the rename; and the failed
//! requests of the whole run, which must be none.
//!
//! `cargo build --release --bins && ./target/release/config-bench` (needs nginx).

// A synchronous benchmark: std threads, paced and measured by the wall clock.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use weft_bench::{
    Proc, free_port, http_get, nginx, quantile, read_response, rss_mib, spawn, wait_port,
    workspace_bin, write_file,
};

/// Options.
#[derive(clap::Parser)]
#[command(about = "registry edit -> weft serve -> xDS -> weft-proxy, timed under live traffic")]
struct Opts {
    /// Services besides the routed one, all visible to the proxy (unless `--scoped`).
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// Endpoints of each of those Services.
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// Route edits, and as many endpoint edits.
    #[arg(long, default_value_t = 20)]
    changes: usize,
    /// Requests per second through the proxy while the config changes.
    #[arg(long, default_value_t = 500)]
    rate: u64,
    /// Client connections carrying them.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// `weft serve --debounce-ms`.
    #[arg(long, default_value_t = 100)]
    debounce_ms: u64,
    /// Scope the proxy to `web` with a Sidecar `egress` list, so it holds none of the others.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    scoped: bool,
}

/// The two origins; a response's last body byte says which one answered.
const BACKENDS: [u8; 2] = [b'a', b'b'];

/// `--services` Services with `--endpoints` endpoints each, in one file as `kubectl get -o yaml`
/// would list them. The addresses are never dialled.
fn filler(services: usize, endpoints: usize) -> String {
    let mut text = String::new();
    for i in 0..services {
        let cluster_ip = Ipv4Addr::from(0x0a60_0001 + i as u32);
        text.push_str(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: b}}\n\
             spec: {{clusterIP: {cluster_ip}, ports: [{{name: http, port: 80, targetPort: 8080}}]}}\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: svc-{i}-a, namespace: b, labels: {{kubernetes.io/service-name: svc-{i}}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints:\n"
        ));
        for j in 0..endpoints {
            let ip = Ipv4Addr::from(0x0a00_0001 + (i * endpoints + j) as u32);
            text.push_str(&format!(
                "  - {{addresses: [\"{ip}\"], conditions: {{ready: true}}}}\n"
            ));
        }
        text.push_str("---\n");
    }
    text
}

/// The workload, its Sidecar (an outbound listener for `web`) and the three routed Services.
fn web(bind: SocketAddr, origin_b: SocketAddr, scoped: bool) -> String {
    let egress = if scoped { "egress: [\"./web\"], " } else { "" };
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: bench-0, namespace: b, labels: {{app: bench}}}}\n\
         spec: {{containers: [{{name: c}}]}}\nstatus: {{podIP: 127.0.0.2}}\n---\n\
         apiVersion: weft.io/v1alpha1\nkind: Sidecar\nmetadata: {{name: s, namespace: b}}\n\
         spec: {{{egress}outboundListeners: [{{bind: \"{bind}\", service: web, port: 80}}]}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: b}}\n\
         spec: {{clusterIP: 127.99.0.1, ports: [{{name: http, port: 80}}]}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: web-a, namespace: b}}\n\
         spec: {{clusterIP: 127.99.0.2, ports: [{{name: http, port: 80}}]}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: web-b, namespace: b}}\n\
         spec: {{clusterIP: 127.99.0.3, ports: [{{name: http, port: 80}}]}}\n---\n\
         {}",
        slice("web-b", origin_b)
    )
}

/// The EndpointSlice of `service`: one endpoint, `at`.
fn slice(service: &str, at: SocketAddr) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {service}-1, namespace: b, labels: {{kubernetes.io/service-name: {service}}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: {port}}}]\nendpoints: [{{addresses: [\"{ip}\"]}}]\n",
        port = at.port(),
        ip = at.ip()
    )
}

/// `web`'s HTTPRoute, all weight on backend `to` (0: `web-a`, 1: `web-b`).
fn route(to: usize) -> String {
    let (wa, wb) = if to == 0 { (100, 0) } else { (0, 100) };
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: web, namespace: b}}\n\
         spec:\n  parentRefs: [{{kind: Service, name: web, port: 80}}]\n  rules:\n\
         \x20   - backendRefs:\n\
         \x20       - {{name: web-a, port: 80, weight: {wa}}}\n\
         \x20       - {{name: web-b, port: 80, weight: {wb}}}\n"
    )
}

/// Replaces `dir/name` the way editors and sync tools do: a new file renamed over the old, so
/// the control plane never reads half of it. Returns when the rename was done.
fn replace(dir: &Path, name: &str, text: &str) -> Instant {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.sync_all().unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
    Instant::now()
}

/// What the traffic threads saw, as nanoseconds since `epoch`.
struct Seen {
    epoch: Instant,
    /// When each backend last answered.
    last: [AtomicU64; 2],
    ok: AtomicU64,
    failed: AtomicU64,
    stop: AtomicBool,
}

impl Seen {
    fn ns(&self, t: Instant) -> u64 {
        u64::try_from(t.duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Open-loop traffic through the proxy until `seen.stop`: `rate` requests per second over
/// `conns` keep-alive connections, each answer stamped on its backend.
fn traffic(
    addr: SocketAddr,
    rate: u64,
    conns: usize,
    seen: Arc<Seen>,
) -> Vec<std::thread::JoinHandle<Histogram<u64>>> {
    let interval = Duration::from_secs_f64(conns as f64 / rate as f64);
    (0..conns)
        .map(|c| {
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut conn: Option<std::net::TcpStream> = None;
                let mut previous_done = Instant::now();
                let mut buf = Vec::with_capacity(4096);
                let mut hist = Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3).unwrap();
                let mut due = Instant::now() + interval.mul_f64(c as f64 / conns as f64);
                while !seen.stop.load(Ordering::Relaxed) {
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    // Charged from when it was due, or from when this thread woke if later
                    // (its own oversleep is not the proxy's doing); the connection being busy
                    // with an earlier, slow request is.
                    let from = Instant::now().min(due.max(previous_done));
                    due += interval;
                    let stream = match conn.take() {
                        Some(s) => Ok(s),
                        None => std::net::TcpStream::connect(addr).inspect(|s| {
                            let _ = s.set_nodelay(true);
                        }),
                    };
                    let answer = stream.and_then(|mut s| {
                        s.write_all(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")?;
                        let status = read_response(&mut s, &mut buf)?;
                        Ok((s, status))
                    });
                    previous_done = Instant::now();
                    let ns = u64::try_from((previous_done - from).as_nanos()).unwrap_or(u64::MAX);
                    let _ = hist.record(ns.clamp(1_000, 60_000_000_000));
                    match answer {
                        Ok((s, 200)) => {
                            let now = seen.ns(previous_done);
                            if let Some(b) = BACKENDS.iter().position(|b| buf.last() == Some(b)) {
                                seen.last[b].fetch_max(now, Ordering::Relaxed);
                            }
                            seen.ok.fetch_add(1, Ordering::Relaxed);
                            conn = Some(s);
                        }
                        _ => {
                            seen.failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                hist
            })
        })
        .collect()
}

/// One change: from the rename to the first answer of the new backend, and to the last answer
/// of the old one (in ms).
struct Change {
    first_new: f64,
    last_old: f64,
}

/// Makes a change with `apply` (which returns when its file was renamed into place) that
/// moves traffic from backend `from` to `1 - from`, and times it. `None` if the new backend had
/// not answered after 10 s.
fn timed(seen: &Seen, from: usize, apply: impl FnOnce() -> Instant) -> Option<Change> {
    let to = 1 - from;
    let t0 = apply();
    let since = seen.ns(t0);
    let deadline = t0 + Duration::from_secs(10);
    let first = loop {
        let last = seen.last[to].load(Ordering::Relaxed);
        if last > since {
            break last;
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    // Let requests already sent to the old backend finish before reading its last answer.
    std::thread::sleep(Duration::from_millis(300));
    let last_old = seen.last[from].load(Ordering::Relaxed).max(since);
    let ms = |ns: u64| (ns - since) as f64 / 1e6;
    Some(Change {
        first_new: ms(first),
        last_old: ms(last_old),
    })
}

fn print_changes(kind: &str, changes: &[Option<Change>]) {
    let timed_out = changes.iter().filter(|c| c.is_none()).count();
    let first: Vec<f64> = changes.iter().flatten().map(|c| c.first_new).collect();
    let last: Vec<f64> = changes.iter().flatten().map(|c| c.last_old).collect();
    let q = |v: &[f64], q: f64| quantile(v.to_vec(), q);
    println!(
        "{kind:<10} {:>8.1} {:>8.1} {:>8.1}   {:>8.1} {:>8.1} {:>8.1}   {:>6}",
        q(&first, 0.5),
        q(&first, 0.9),
        q(&first, 1.0),
        q(&last, 0.5),
        q(&last, 0.9),
        q(&last, 1.0),
        timed_out
    );
}

fn main() {
    let o = <Opts as clap::Parser>::parse();
    let dir = tempfile::tempdir().unwrap();
    let mut origin_procs: Vec<Proc> = Vec::new();
    let origins: Vec<SocketAddr> = BACKENDS
        .iter()
        .map(|b| {
            let port = free_port();
            origin_procs.push(nginx(
                Command::new("nginx"),
                dir.path(),
                &format!("origin-{}", *b as char),
                port,
                "",
                &format!("return 200 '{}';", *b as char),
            ));
            SocketAddr::from(([127, 0, 0, 1], port))
        })
        .collect();

    let reg = dir.path().join("registry");
    std::fs::create_dir_all(&reg).unwrap();
    let bind = SocketAddr::from(([127, 0, 0, 1], free_port()));
    write_file(&reg, "filler.yaml", &filler(o.services, o.endpoints));
    write_file(&reg, "web.yaml", &web(bind, origins[1], o.scoped));
    write_file(&reg, "web-a.yaml", &slice("web-a", origins[0]));
    write_file(&reg, "route.yaml", &route(0));

    let xds = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let started = Instant::now();
    let cp = spawn(
        Command::new(workspace_bin("weft"))
            .args(["serve", "--registry"])
            .arg(&reg)
            .args(["--xds-addr", &xds.to_string()])
            .args(["--admin-addr", &format!("127.0.0.1:{}", free_port())])
            .args(["--debounce-ms", &o.debounce_ms.to_string()]),
    );
    wait_port(xds);
    let cp_listening = started.elapsed();
    let (admin, health) = (
        SocketAddr::from(([127, 0, 0, 1], free_port())),
        SocketAddr::from(([127, 0, 0, 1], free_port())),
    );
    let proxy_started = Instant::now();
    let proxy: Proc = spawn(Command::new(workspace_bin("weft-proxy")).args([
        "--xds-addr",
        &xds.to_string(),
        "--node-id",
        "bench-0.b",
        "--admin-addr",
        &admin.to_string(),
        "--health-addr",
        &health.to_string(),
        "--outbound-capture-addr",
        &format!("127.0.0.1:{}", free_port()),
        "--inbound-capture-addr",
        &format!("127.0.0.1:{}", free_port()),
        "--log",
        &std::env::var("BENCH_PROXY_LOG").unwrap_or_else(|_| "warn".into()),
    ]));
    let ready = loop {
        if matches!(http_get(health, "/ready"), Ok((200, _))) {
            break proxy_started.elapsed();
        }
        assert!(
            proxy_started.elapsed() < Duration::from_secs(60),
            "weft-proxy not ready after 60 s (BENCH_LOGS=1 shows why)"
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    wait_port(bind);
    let clusters = http_get(admin, "/clusters")
        .ok()
        .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok());
    let (n_clusters, n_endpoints) = clusters
        .as_ref()
        .and_then(|v| v.as_object())
        .map(|m| {
            let eps: usize = m
                .values()
                .map(|c| c["endpoints"].as_array().map_or(0, |a| a.len()))
                .sum();
            (m.len(), eps)
        })
        .unwrap_or((0, 0));
    let proxy_idle = rss_mib(proxy.0.id()).0;

    println!(
        "# weft config bench: {} Services x {} endpoints{} + the routed one, {} req/s over {} connections",
        o.services,
        o.endpoints,
        if o.scoped {
            " (out of the proxy's scope)"
        } else {
            ", all in the proxy's scope"
        },
        o.rate,
        o.connections
    );
    println!(
        "weft serve listening after {:.0} ms; weft-proxy ready {:.0} ms after it started, holding {n_clusters} clusters, {n_endpoints} endpoints",
        cp_listening.as_secs_f64() * 1e3,
        ready.as_secs_f64() * 1e3
    );
    println!(
        "RSS with that config: weft serve {:.1} MiB, weft-proxy {:.1} MiB",
        rss_mib(cp.0.id()).0,
        proxy_idle
    );

    let seen = Arc::new(Seen {
        epoch: Instant::now(),
        last: [AtomicU64::new(0), AtomicU64::new(0)],
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let threads = traffic(bind, o.rate, o.connections, seen.clone());
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        seen.last[0].load(Ordering::Relaxed) > 0 && seen.last[1].load(Ordering::Relaxed) == 0,
        "traffic should start on web-a only"
    );
    // Route edits: all weight to the other backend, and back.
    let mut on = 0;
    let mut routes = Vec::new();
    for _ in 0..o.changes {
        routes.push(timed(&seen, on, || {
            replace(&reg, "route.yaml", &route(1 - on))
        }));
        on = 1 - on;
    }
    if on == 1 {
        timed(&seen, 1, || replace(&reg, "route.yaml", &route(0)));
    }
    // Endpoint edits: web-a's one endpoint moved from origin a to origin b, and back.
    let mut on = 0;
    let mut endpoints = Vec::new();
    for _ in 0..o.changes {
        endpoints.push(timed(&seen, on, || {
            replace(&reg, "web-a.yaml", &slice("web-a", origins[1 - on]))
        }));
        on = 1 - on;
    }
    seen.stop.store(true, Ordering::Relaxed);
    let mut latency = Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3).unwrap();
    for t in threads {
        latency.add(t.join().unwrap()).unwrap();
    }

    println!(
        "\n## file renamed -> traffic moved, ms ({} changes each; the control plane waits 100 ms of file quiet, then {} ms of debounce)",
        o.changes, o.debounce_ms
    );
    println!(
        "{:<10} {:>8} {:>8} {:>8}   {:>8} {:>8} {:>8}   {:>6}",
        "change", "new p50", "p90", "max", "old p50", "p90", "max", "missed"
    );
    print_changes("route", &routes);
    print_changes("endpoint", &endpoints);
    println!(
        "\nrequests: {} ok, {} failed; latency through the proxy while its config changed: p50 {:.0} µs, p99 {:.0} µs, p99.9 {:.0} µs, max {:.0} µs",
        seen.ok.load(Ordering::Relaxed),
        seen.failed.load(Ordering::Relaxed),
        latency.value_at_quantile(0.5) as f64 / 1e3,
        latency.value_at_quantile(0.99) as f64 / 1e3,
        latency.value_at_quantile(0.999) as f64 / 1e3,
        latency.max() as f64 / 1e3,
    );
    println!(
        "peak RSS: weft serve {:.1} MiB, weft-proxy {:.1} MiB",
        rss_mib(cp.0.id()).1,
        rss_mib(proxy.0.id()).1
    );
    drop(origin_procs);
}
