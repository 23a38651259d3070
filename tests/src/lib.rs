//! Helpers for weft's end-to-end tests: find and start the real binaries, wait for ports, read
//! HTTP endpoints. Every test starts real processes; nothing here imitates a weft component.

pub mod fake_kube;
pub mod netns;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Path of a workspace binary (`weft`, `weft-proxy`). `cargo test --workspace` builds them; when
/// a test runs alone and the binary is missing or older than its sources, it is built first.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let path = dir.join(name);
    let (crate_dir, package) = match name {
        "weft" => ("control-plane", "weft-control-plane"),
        "weft-proxy" => ("proxy", "weft-proxy"),
        other => panic!("unknown binary {other}"),
    };
    let built = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    let stale = built.is_none_or(|b| newest(&repo_root().join(crate_dir).join("src")) > Some(b));
    if stale {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", package, "--bin", name])
            .current_dir(repo_root())
            .status()
            .expect("cargo runs");
        assert!(status.success(), "cargo build --bin {name} failed");
    }
    path
}

/// A workload token for `shop/<service_account>` from the CA in `ca_dir`, as `weft token
/// create` (the binary at `weft`) prints it, written to `<dir>/<service_account>.token`; the
/// file's path, for `weft-proxy --ca-token-file`.
pub fn token_file(weft: &Path, ca_dir: &Path, service_account: &str, dir: &Path) -> String {
    let out = Command::new(weft)
        .args([
            "token",
            "create",
            "--namespace",
            "shop",
            "--service-account",
        ])
        .arg(service_account)
        .arg("--ca-dir")
        .arg(ca_dir)
        .output()
        .expect("weft token create runs");
    assert!(
        out.status.success(),
        "weft token create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir.join(format!("{service_account}.token"));
    std::fs::write(&path, out.stdout).expect("write the token");
    path.to_string_lossy().into_owned()
}

/// The newest modification time of any file under `dir`.
fn newest(dir: &Path) -> Option<std::time::SystemTime> {
    let mut best = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let p = entry.path();
        let t = if p.is_dir() {
            newest(&p)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        best = best.max(t);
    }
    best
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repo")
        .to_path_buf()
}

/// A free TCP port on 127.0.0.1, for a process a test starts to bind. Taken below the kernel's
/// ephemeral range (32768 and up by default) and never the same one twice in a test binary: a
/// port picked from the ephemeral range could be handed by the kernel to a parallel test's
/// `bind(0)` or outgoing connection before the process bound it, and the test would talk to a
/// stranger (seen as an empty reply from another proxy's capture listener).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const HIGH: u32 = 32_767;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Spread test binaries that run at the same time apart.
    let _ = NEXT.compare_exchange(
        0,
        LOW + (std::process::id() % 100) * 100,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in LOW..=HIGH {
        let candidate = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = LOW + (candidate - LOW) % (HIGH - LOW + 1);
        if TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
    panic!("no free port between {LOW} and {HIGH}")
}

/// Calls `done` every 50 ms until it says so; panics with `what` once `timeout` has passed.
/// Blocks the calling thread and reads the wall clock, on purpose: synchronous tests wait with
/// it for real processes, which run on real time.
#[allow(clippy::disallowed_types, clippy::disallowed_methods)] // a sync wait on real processes
pub fn wait_until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) {
    wait_until(timeout, &format!("nothing listens on {addr}"), || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    });
}

/// A GET over plain HTTP/1.0: status code and body.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

/// A child process killed when dropped, so a failing test leaves nothing running.
#[derive(Debug)]
pub struct Proc(pub Child);

impl Proc {
    /// Spawns `cmd` with stdout piped (for readiness lines) and stderr inherited (for logs).
    pub fn spawn(cmd: &mut Command) -> Self {
        Self::spawn_logging(cmd, Stdio::inherit())
    }

    /// Like [`Proc::spawn`], its stderr (the log) going to `stderr`.
    pub fn spawn_logging(cmd: &mut Command, stderr: Stdio) -> Self {
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        Self(child)
    }

    /// Reads one line of the child's stdout.
    pub fn read_line(&mut self) -> String {
        use std::io::BufRead;
        let out = self.0.stdout.as_mut().expect("stdout piped");
        let mut line = String::new();
        std::io::BufReader::new(out)
            .read_line(&mut line)
            .expect("read child stdout");
        line
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `weft serve` on a registry directory, with its ports.
#[derive(Debug)]
pub struct ControlPlane {
    /// The process.
    pub proc: Proc,
    /// ADS address.
    pub xds: SocketAddr,
    /// Admin address.
    pub admin: SocketAddr,
}

impl ControlPlane {
    /// Starts `weft serve --registry dir` on free ports and waits for `/ready`.
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, &[])
    }

    /// Like [`ControlPlane::start`], with extra command-line arguments.
    pub fn start_with(dir: &Path, extra: &[&str]) -> Self {
        let xds: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let proc = Proc::spawn(
            Command::new(bin("weft"))
                .arg("serve")
                .arg("--registry")
                .arg(dir)
                .arg("--xds-addr")
                .arg(xds.to_string())
                .arg("--admin-addr")
                .arg(admin.to_string())
                .args(extra)
                // One CA for every test's control plane, as replicas of one mesh share theirs.
                .env("WEFT_CA_DIR", std::env::temp_dir().join("weft-e2e-ca"))
                .env("WEFT_LOG", "info"),
        );
        wait_until(Duration::from_secs(20), "weft never became ready", || {
            matches!(http_get(admin, "/ready"), Ok((200, _)))
        });
        Self { proc, xds, admin }
    }
}

/// A running `weft-proxy` with its admin and health ports.
#[derive(Debug)]
pub struct Sidecar {
    /// The process.
    pub proc: Proc,
    /// Admin address (`/config_dump`, `/clusters`, `/logging`).
    pub admin: SocketAddr,
    /// Health address (`/ready`, `/live`).
    pub health: SocketAddr,
}

impl Sidecar {
    /// Starts `weft-proxy` for `node_id` against `xds` and waits until it is ready.
    pub fn start(xds: SocketAddr, node_id: &str) -> Self {
        Self::start_with(xds, node_id, &[])
    }

    /// Like [`Sidecar::start`], with extra command-line arguments.
    pub fn start_with(xds: SocketAddr, node_id: &str, extra: &[&str]) -> Self {
        Self::start_logging(xds, node_id, extra, None)
    }

    /// Like [`Sidecar::start_with`], its log written to `log` when given.
    pub fn start_logging(
        xds: SocketAddr,
        node_id: &str,
        extra: &[&str],
        log: Option<std::fs::File>,
    ) -> Self {
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let health: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let stderr = log.map_or_else(Stdio::inherit, Stdio::from);
        let proc = Proc::spawn_logging(
            Command::new(bin("weft-proxy"))
                .arg("--xds-addr")
                .arg(xds.to_string())
                .arg("--node-id")
                .arg(node_id)
                .arg("--admin-addr")
                .arg(admin.to_string())
                .arg("--health-addr")
                .arg(health.to_string())
                .arg("--outbound-capture-addr")
                .arg(format!("127.0.0.1:{}", free_port()))
                .arg("--inbound-capture-addr")
                .arg(format!("127.0.0.1:{}", free_port()))
                .args(extra)
                .env(
                    "WEFT_LOG",
                    std::env::var("WEFT_TEST_PROXY_LOG").unwrap_or_else(|_| "info".into()),
                ),
            stderr,
        );
        wait_until(
            Duration::from_secs(20),
            "weft-proxy never became ready",
            || matches!(http_get(health, "/ready"), Ok((200, _))),
        );
        Self {
            proc,
            admin,
            health,
        }
    }
}

/// A TCP server on 127.0.0.1 that answers each line it reads with `<prefix><line>`, a thread per
/// connection, until the process ends: an opaque-TCP upstream whose answers say who gave them.
pub fn line_echo(prefix: &'static str) -> SocketAddr {
    use std::io::{BufRead, BufReader, Write};
    let server = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = server.local_addr().expect("addr");
    std::thread::spawn(move || {
        for s in server.incoming().flatten() {
            std::thread::spawn(move || {
                let Ok(mut w) = s.try_clone() else { return };
                for line in BufReader::new(s).lines() {
                    let Ok(line) = line else { return };
                    if w.write_all(format!("{prefix}{line}\n").as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// An HTTP/1.1 + HTTP/2 server on 127.0.0.1 that answers every request with `name` in the body
/// and an `x-backend` header, and echoes the request's `x-request-id`; paths under `/api/slow`
/// answer after one second. Runs on its own thread until the process ends.
pub fn named_backend(name: &'static str) -> SocketAddr {
    backend(name).addr
}

/// [`named_backend`], with a count of the requests it received.
pub fn counting_backend(
    name: &'static str,
) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let b = backend(name);
    (b.addr, b.requests)
}

/// What a [`backend`] has seen.
#[derive(Clone, Debug)]
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests received.
    pub requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// TCP connections accepted.
    pub connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Request bodies that broke off before their end (the sender went away).
    pub aborted_bodies: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Backend {
    /// A counter's current value.
    pub fn get(counter: &std::sync::atomic::AtomicUsize) -> usize {
        counter.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// [`named_backend`] with every counter; it also answers with the `Host`/`:authority` it saw in
/// `x-seen-host` and its HTTP version in `x-seen-version`, and reads request bodies to their end.
/// Paths under `/stall` get their headers and a first chunk at once, and the rest 10 s later.
pub fn backend(name: &'static str) -> Backend {
    use http_body_util::{BodyExt, Full};
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use std::sync::atomic::Ordering::SeqCst;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let b = Backend {
        addr: listener.local_addr().expect("addr"),
        requests: Default::default(),
        connections: Default::default(),
        aborted_bodies: Default::default(),
    };
    listener.set_nonblocking(true).expect("nonblocking");
    let seen = b.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                seen.connections.fetch_add(1, SeqCst);
                let seen = seen.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        seen.requests.fetch_add(1, SeqCst);
                        let aborted = seen.aborted_bodies.clone();
                        async move {
                            if req.uri().path().starts_with("/api/slow") {
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                            let host = req
                                .uri()
                                .authority()
                                .map(|a| a.to_string())
                                .or_else(|| {
                                    req.headers()
                                        .get("host")
                                        .and_then(|h| h.to_str().ok())
                                        .map(str::to_string)
                                })
                                .unwrap_or_default();
                            let version = format!("{:?}", req.version());
                            let id = req.headers().get("x-request-id").cloned();
                            let stall = req.uri().path().starts_with("/stall");
                            let body_bytes = match req.into_body().collect().await {
                                Ok(b) => b.to_bytes().len(),
                                Err(_) => {
                                    aborted.fetch_add(1, SeqCst);
                                    0
                                }
                            };
                            let body = if stall {
                                let (tx, rx) = tokio::sync::mpsc::channel(2);
                                tokio::spawn(async move {
                                    let chunk = |b: &'static str| {
                                        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(
                                            bytes::Bytes::from(b),
                                        ))
                                    };
                                    let _ = tx.send(chunk("first ")).await;
                                    tokio::time::sleep(Duration::from_secs(10)).await;
                                    let _ = tx.send(chunk("last")).await;
                                });
                                http_body_util::StreamBody::new(
                                    tokio_stream::wrappers::ReceiverStream::new(rx),
                                )
                                .boxed()
                            } else {
                                Full::new(bytes::Bytes::from(name)).boxed()
                            };
                            let mut resp = hyper::Response::new(body);
                            let h = resp.headers_mut();
                            h.insert("x-backend", name.parse().expect("ascii"));
                            h.insert("x-seen-version", version.parse().expect("ascii"));
                            if let Ok(v) = host.parse() {
                                h.insert("x-seen-host", v);
                            }
                            if let Some(id) = id {
                                h.insert("x-seen-request-id", id);
                            }
                            h.insert("x-seen-body-bytes", body_bytes.into());
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
    });
    b
}

/// The Python interpreter the interop tests use (`$PYTHON`, else `python3`).
pub fn python() -> Command {
    Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
}

/// A real grpcio server (tests/interop/grpc_backend.py) on 127.0.0.1:`port` answering with `name`.
pub fn grpc_backend(port: u16, name: &str) -> Proc {
    let mut p = Proc::spawn(
        python()
            .arg(repo_root().join("tests/interop/grpc_backend.py"))
            .arg(format!("127.0.0.1:{port}"))
            .arg(name),
    );
    assert_eq!(
        p.read_line().trim(),
        "ready",
        "gRPC backend {name} did not start"
    );
    p
}

/// Runs a Python snippet (`python -c script args...`) that talks to the mesh, and returns what it
/// printed; a failing script fails the test with its stderr.
pub fn python_script(script: &str, args: &[&str]) -> String {
    let out = python()
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Paths fetched on one connection, curl options, headers shown, what curl must see: a case of
/// the tests that hold the fast path and hyper's path to the same answers.
pub type CurlCase<'a> = (&'a [&'a str], &'a [&'a str], &'a [&'a str], &'a str);

/// curl's view of one or more HTTP/1.1 requests to `bind` (`Host: up`) on one connection: exit
/// code, then each response's status line, the headers named in `show` (trailers too), and the
/// body.
pub fn curl_shown(bind: SocketAddr, paths: &[&str], extra: &[&str], show: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "-i", "--http1.1", "--max-time", "5"])
        .args(extra)
        .args(paths.iter().map(|p| format!("http://{bind}{p}")))
        .args(["-H", "Host: up"])
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut seen = format!("exit {}\n", out.status.code().unwrap_or(-1));
    for line in text.split("\r\n") {
        let lower = line.to_ascii_lowercase();
        let shown = line.starts_with("HTTP/")
            || show.iter().any(|h| lower.contains(&format!("{h}:")))
            || (!line.is_empty() && !line.contains(':'));
        if shown {
            seen.push_str(line.trim_end());
            seen.push('\n');
        }
    }
    seen
}

/// A seeded random mix of `count` requests sent by Python's http.client to `bind` on one
/// connection (`Host: up`): methods, request bodies (none, a length, chunked; up to 70 KB) and
/// paths `/r/<shape>/<n>` with `shape` drawn from `shapes` and `n` up to 200,000. Prints per
/// request: method, path, status, `x-got`, the answer's framing when `framing` (a length,
/// chunked or none: the HTTP/1.1 fast path sends a body read until close as it came, where
/// hyper chunks it), its length and a digest; a request that fails prints `error` and opens a
/// new connection.
pub fn random_mix(
    bind: SocketAddr,
    seed: &str,
    count: u32,
    shapes: &[&str],
    framing: bool,
) -> String {
    let script = "import http.client, random, sys, json, hashlib\n\
        host, port = sys.argv[1].rsplit(':', 1)\n\
        rnd = random.Random(int(sys.argv[2]))\n\
        count, shapes, show = int(sys.argv[3]), sys.argv[4].split(','), sys.argv[5] == 'true'\n\
        c = http.client.HTTPConnection(host, int(port), timeout=10)\n\
        out = []\n\
        for i in range(count):\n\
        \x20   method = rnd.choice(['GET', 'GET', 'POST', 'PUT', 'DELETE', 'HEAD'])\n\
        \x20   shape = rnd.choice(shapes)\n\
        \x20   path = '/r/%s/%d' % (shape, rnd.choice([0, 1, 700, 5000, 40000, 200000]))\n\
        \x20   body = None\n\
        \x20   if method in ('POST', 'PUT'):\n\
        \x20       size = rnd.choice([0, 10, 3000, 70000])\n\
        \x20       body = b'q' * size\n\
        \x20       if rnd.random() < 0.3:\n\
        \x20           body = [p for p in (body[:size // 2], body[size // 2:]) if p]\n\
        \x20   try:\n\
        \x20       c.request(method, path, body=body, headers={'Host': 'up'})\n\
        \x20       r = c.getresponse()\n\
        \x20       data = r.read()\n\
        \x20       framing = 'length' if r.getheader('content-length') else ('chunked' if r.getheader('transfer-encoding') else 'none')\n\
        \x20       out.append([method, path, r.status, r.getheader('x-got')] + ([framing] if show else []) + [len(data), hashlib.md5(data).hexdigest()[:8]])\n\
        \x20   except Exception as e:\n\
        \x20       out.append([method, path, 'error', type(e).__name__])\n\
        \x20       c.close()\n\
        print(json.dumps(out))\n";
    let args = [
        bind.to_string(),
        seed.to_string(),
        count.to_string(),
        shapes.join(","),
        framing.to_string(),
    ];
    python_script(script, &args.each_ref().map(String::as_str))
}

/// A running mesh of one Service reached through an explicit listener (see [`one_service`]).
pub struct OneService {
    /// The control plane.
    pub cp: ControlPlane,
    /// The client pod's sidecar (`web-0.shop`).
    pub sidecar: Sidecar,
    /// Where the sidecar's explicit listener for the Service is bound.
    pub bind: SocketAddr,
    /// The registry directory, removed on drop.
    pub dir: tempfile::TempDir,
}

/// Starts `weft serve` and a sidecar (with `sidecar_args`) for the client pod `web-0.shop`, whose
/// `Sidecar` binds an explicit listener for Service `service`, port `port` named `port_name`
/// (which decides its protocol), with one endpoint on 127.0.0.1 at each of `endpoint_ports`;
/// `extra` adds YAML documents (an HTTPRoute, a TrafficPolicy).
pub fn one_service(
    service: &str,
    port: u16,
    port_name: &str,
    endpoint_ports: &[u16],
    extra: &str,
    sidecar_args: &[&str],
) -> OneService {
    one_service_logging(
        service,
        port,
        port_name,
        endpoint_ports,
        extra,
        sidecar_args,
        None,
    )
}

/// [`one_service`], the sidecar's log written to `log` when given.
pub fn one_service_logging(
    service: &str,
    port: u16,
    port_name: &str,
    endpoint_ports: &[u16],
    extra: &str,
    sidecar_args: &[&str],
    log: Option<std::fs::File>,
) -> OneService {
    let bind: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let slices: String = endpoint_ports
        .iter()
        .map(|endpoint_port| {
            format!(
                r#"
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {service}-{endpoint_port}, namespace: shop, labels: {{kubernetes.io/service-name: {service}}}}}
addressType: IPv4
ports: [{{name: {port_name}, port: {endpoint_port}}}]
endpoints: [{{addresses: ["127.0.0.1"]}}]
"#
            )
        })
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("mesh.yaml"),
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: web-0, namespace: shop, labels: {{app: web}}}}
spec: {{containers: [{{name: web}}]}}
status: {{podIP: 127.0.0.9}}
---
apiVersion: weft.io/v1alpha1
kind: Sidecar
metadata: {{name: web, namespace: shop}}
spec: {{outboundListeners: [{{bind: "{bind}", service: {service}, port: {port}}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: {service}, namespace: shop}}
spec: {{clusterIP: 127.41.0.9, ports: [{{name: {port_name}, port: {port}}}]}}
{slices}{extra}"#
        ),
    )
    .expect("write mesh");
    let cp = ControlPlane::start(dir.path());
    let sidecar = Sidecar::start_logging(cp.xds, "web-0.shop", sidecar_args, log);
    wait_for_port(bind, Duration::from_secs(10));
    OneService {
        cp,
        sidecar,
        bind,
        dir,
    }
}

/// Service `up` (HTTP, port 80) at `upstream`, through a sidecar with the HTTP/1 fast path on
/// (`fast`) or off (hyper for every request): the two paths that must treat requests alike.
pub fn http1_path(upstream: SocketAddr, fast: bool) -> OneService {
    let flag = if fast { "true" } else { "false" };
    one_service(
        "up",
        80,
        "http",
        &[upstream.port()],
        "",
        &["--http1-fast-path", flag],
    )
}
