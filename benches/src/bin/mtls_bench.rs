//! mTLS costs, side by side in one run, in two network namespaces as two pods (needs root,
//! iptables, nginx and release builds: `cargo build --release --bins &&
//! ./target/release/mtls-bench`):
//!
//! 1. **Handshakes per CPU-second**: a new connection per request, with a client certificate,
//!    to weft-proxy's inbound mTLS listener and to nginx (`ssl_verify_client on`, TLS 1.3,
//!    proxying to the same app), both with certificates from weft's CA. Goal: at least nginx's.
//! 2. **Memory**: the sidecar's RSS idle, then holding 1,000 idle mTLS connections (each after
//!    one request). Goal: at most 2x idle.
//! 3. **Two hops**: client -> sidecar -> sidecar -> app, over mTLS and over plaintext, and the
//!    direct path, open loop over keep-alive at each rate: added p99 and CPU per request of the
//!    two sidecars. Goals: mTLS p99 added at most 1.2x plaintext's, CPU at most 1.3x.
//!
//! The load runs in the client pod, as this binary again (`client ...`), since a process
//! cannot move itself into another network namespace.

#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_bench::{cpu_seconds, quantile, rss_mib, spawn, workspace_bin};
use weft_control_plane::ca::{self, Identity};
use weft_e2e::netns::{Netns, TWO_PODS, veth};

/// The pods' addresses in [`TWO_PODS`].
const POD: &str = "10.2.0.5";
const CLIENT: &str = "10.2.0.9";

/// Options.
#[derive(clap::Parser)]
#[command(about = "mTLS handshakes, memory and two-hop latency, weft-proxy beside nginx")]
struct Opts {
    /// Seconds of each handshake measurement.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent handshaking clients.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Open-loop rates of the two-hop measurement (req/s).
    #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
    rates: Vec<u64>,
    /// Seconds per open-loop measurement.
    #[arg(long, default_value_t = 10)]
    hop_seconds: u64,
    /// Rounds of the two-hop measurement, the paths taking turns; medians are compared.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Idle mTLS connections held for the memory measurement.
    #[arg(long, default_value_t = 1000)]
    idle: usize,
    /// Only the two-hop measurement (3): for iterating on the data path.
    #[arg(long)]
    hops_only: bool,
    /// Only handshakes and memory (1 and 2), without the two hops.
    #[arg(long, conflicts_with = "hops_only")]
    no_hops: bool,
    /// Records each sidecar with `perf record --call-graph dwarf` during round 0 of each two-hop path, into
    /// `<dir>/<rate>-<path>-<pod>.data` (`perf report -i ...` shows where its CPU went).
    #[arg(long)]
    perf: Option<PathBuf>,
    #[command(subcommand)]
    client: Option<Client>,
}

/// The load, run inside the client pod.
#[derive(clap::Subcommand)]
enum Client {
    /// New mTLS connection per request for `seconds`; prints the count.
    Handshakes {
        addr: SocketAddr,
        seconds: u64,
        concurrency: usize,
        pki: PathBuf,
    },
    /// Opens `count` mTLS connections (plaintext ones with `--plain`), one request on each,
    /// then holds them until stdin closes.
    Hold {
        addr: SocketAddr,
        count: usize,
        pki: PathBuf,
        #[arg(long)]
        plain: bool,
    },
    /// Open loop over `connections` keep-alive connections: prints p50, p99, max (µs), errors.
    OpenLoop {
        addr: SocketAddr,
        rate: u64,
        seconds: u64,
        connections: usize,
    },
}

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: api\r\n\r\n";

/// The client's mTLS config: `web`'s certificate, the mesh roots.
fn client_tls(pki: &Path) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let der = |name: &str| std::fs::read(pki.join(name)).unwrap();
    let chain = vec![CertificateDer::from(der("web.der"))];
    let key = PrivateKeyDer::from(PrivatePkcs8KeyDer::from(der("web.key.der")));
    let roots = vec![CertificateDer::from(der("root.der"))];
    weft_proxy::identity::tls::TlsConfigs::new(&chain, &key, &roots)
        .unwrap()
        .client
}

/// Reads one response with a `Content-Length` body.
async fn response<S: tokio::io::AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> bool {
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            return buf.starts_with(b"HTTP/1.1 200");
        }
    }
}

async fn mtls_request(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    buf: &mut Vec<u8>,
) -> Option<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let mut tls = connector.connect(name, tcp).await.ok()?;
    tls.write_all(REQUEST).await.ok()?;
    tls.flush().await.ok()?;
    response(&mut tls, buf).await.then_some(tls)
}

fn run_client(c: Client) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        match c {
            Client::Handshakes {
                addr,
                seconds,
                concurrency,
                pki,
            } => {
                let connector = tokio_rustls::TlsConnector::from(client_tls(&pki));
                let end = Instant::now() + Duration::from_secs(seconds);
                let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
                let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
                let tasks: Vec<_> = (0..concurrency)
                    .map(|_| {
                        let (connector, done, failed) =
                            (connector.clone(), done.clone(), failed.clone());
                        tokio::spawn(async move {
                            let mut buf = Vec::new();
                            while Instant::now() < end {
                                let counter = match mtls_request(&connector, addr, &mut buf).await {
                                    Some(_) => &done,
                                    None => &failed,
                                };
                                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
                println!(
                    "{} {}",
                    done.load(std::sync::atomic::Ordering::Relaxed),
                    failed.load(std::sync::atomic::Ordering::Relaxed)
                );
            }
            Client::Hold {
                addr,
                count,
                pki,
                plain,
            } => {
                let connector = tokio_rustls::TlsConnector::from(client_tls(&pki));
                let (mut held, mut plain_held) = (Vec::new(), Vec::new());
                let mut buf = Vec::new();
                for _ in 0..count {
                    if plain {
                        let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
                            continue;
                        };
                        if s.write_all(REQUEST).await.is_ok() && response(&mut s, &mut buf).await {
                            plain_held.push(s);
                        }
                    } else if let Some(c) = mtls_request(&connector, addr, &mut buf).await {
                        held.push(c);
                    }
                }
                println!("{}", held.len() + plain_held.len());
                let mut line = String::new();
                let _ = tokio::io::AsyncBufReadExt::read_line(
                    &mut tokio::io::BufReader::new(tokio::io::stdin()),
                    &mut line,
                )
                .await;
                drop((held, plain_held));
            }
            Client::OpenLoop {
                addr,
                rate,
                seconds,
                connections,
            } => {
                // As proxy-bench's open loop: a blocking thread per connection, each request
                // charged from its due time only when the one before it held it up.
                let (all, errors) = tokio::task::spawn_blocking(move || {
                    open_loop(addr, rate, seconds, connections)
                })
                .await
                .unwrap();
                println!(
                    "{:.0} {:.0} {:.0} {errors}",
                    quantile(all.clone(), 0.5),
                    quantile(all.clone(), 0.99),
                    quantile(all, 1.0)
                );
            }
        }
    });
}

/// Latencies (µs) and errors of `rate` requests a second for `seconds` over `connections`
/// keep-alive connections.
fn open_loop(addr: SocketAddr, rate: u64, seconds: u64, connections: usize) -> (Vec<f64>, u64) {
    use std::io::Write;
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    // A second of warm-up first: keep-alive latency is of warm connections, the sidecars'
    // upstream pools included (an mTLS one starts with a handshake per connection, which a cold
    // open loop would charge to every request queued behind it).
    let start = Instant::now() + Duration::from_secs(1);
    fn open(addr: SocketAddr) -> Option<std::net::TcpStream> {
        let s = std::net::TcpStream::connect(addr).ok()?;
        s.set_nodelay(true).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        Some(s)
    }
    let threads: Vec<_> = (0..connections)
        .map(|c| {
            std::thread::spawn(move || {
                let (mut lat, mut errors, mut buf) = (Vec::new(), 0u64, Vec::new());
                let mut conn = open(addr);
                while Instant::now() + Duration::from_millis(200) < start {
                    let warm = conn.as_mut().is_some_and(|s| {
                        s.write_all(REQUEST).is_ok()
                            && matches!(weft_bench::read_response(s, &mut buf), Ok(200))
                    });
                    if !warm {
                        conn = open(addr);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                let mut previous_done = start;
                for i in (c as u64..total).step_by(connections) {
                    let due = start + interval.mul_f64(i as f64);
                    let now = Instant::now();
                    if now < due {
                        std::thread::sleep(due - now);
                    }
                    let from = if previous_done > due {
                        due
                    } else {
                        Instant::now()
                    };
                    let ok = conn.as_mut().is_some_and(|s| {
                        s.write_all(REQUEST).is_ok()
                            && matches!(weft_bench::read_response(s, &mut buf), Ok(200))
                    });
                    previous_done = Instant::now();
                    if !ok {
                        errors += 1;
                        conn = open(addr);
                    }
                    lat.push((previous_done - from).as_secs_f64() * 1e6);
                }
                (lat, errors)
            })
        })
        .collect();
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in threads {
        let (l, e) = t.join().unwrap();
        all.extend(l);
        errors += e;
    }
    (all, errors)
}

/// weft's CA, and certificates from it written for nginx and the load: the server's (`api`)
/// as PEM for nginx, the client's (`web`) and the root as DER for rustls.
fn pki(dir: &Path) -> (PathBuf, PathBuf) {
    let ca_dir = dir.join("ca");
    let authority = ca::Authority::load(
        &ca::Source::Dir(ca_dir.clone()),
        None,
        "cluster.local",
        ca::Lifetimes::default(),
    )
    .unwrap();
    let pki = dir.join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    for sa in ["api", "web"] {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = CertificateParams::default()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        let signed = authority
            .sign(&csr, &Identity::new("shop", sa).unwrap(), None)
            .unwrap();
        std::fs::write(pki.join(format!("{sa}.pem")), &signed.chain[0]).unwrap();
        std::fs::write(pki.join(format!("{sa}.key")), key.serialize_pem()).unwrap();
        std::fs::write(pki.join(format!("{sa}.der")), pem_der(&signed.chain[0])).unwrap();
        std::fs::write(pki.join(format!("{sa}.key.der")), key.serialize_der()).unwrap();
    }
    let root = &authority.trust_bundle()[0];
    std::fs::write(pki.join("root.pem"), root).unwrap();
    std::fs::write(pki.join("root.der"), pem_der(root)).unwrap();
    (ca_dir, pki)
}

/// The DER of one PEM certificate.
fn pem_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// Runs this binary's `client` subcommand inside `ns`, as UID 1337 (past the capture rules)
/// unless `captured`.
fn client_cmd(ns: &Netns, captured: bool, args: &[String]) -> Command {
    let me = std::env::current_exe().unwrap();
    let mut full: Vec<String> = Vec::new();
    if !captured {
        full.extend(
            [
                "setpriv",
                "--reuid",
                "1337",
                "--regid",
                "1337",
                "--clear-groups",
            ]
            .map(String::from),
        );
    }
    full.push(me.to_string_lossy().into_owned());
    full.extend_from_slice(args);
    let refs: Vec<&str> = full.iter().map(String::as_str).collect();
    ns.exec(&refs)
}

fn output(mut cmd: Command) -> Vec<f64> {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect()
}

fn main() {
    let opts: Opts = clap::Parser::parse();
    if let Some(c) = opts.client {
        return run_client(c);
    }
    let dir = tempfile::tempdir().unwrap();
    // The load runs as UID 1337 and reads the client's certificate from here.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (ca_dir, pki) = pki(dir.path());
    let pod = Netns::new("bench-pod");
    let client = Netns::new("bench-cli");
    let (pod_if, cli_if) = veth(
        &pod,
        &[&format!("{POD}/24")],
        &client,
        &[&format!("{CLIENT}/24")],
        "b",
    );
    for (ns, end) in [(&pod, &pod_if), (&client, &cli_if)] {
        ns.run(&["ip", "route", "add", "10.96.0.0/16", "dev", end]);
    }
    // nginx's TLS port and the app's second port are the baselines; the control plane's port
    // is not the workload's.
    pod.exclude_inbound(&[8443, 8081, 15010]);
    pod.capture();
    client.capture();

    // The app: nginx returning 1 KB, on the pod's address.
    let body = "x".repeat(1024);
    let conf = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let d = dir.path().display();
    let app_conf = conf(
        "app.conf",
        format!(
            "daemon off; master_process off; pid {d}/app.pid; error_log {d}/app.err;\n\
             events {{ worker_connections 8192; }}\n\
             http {{ access_log off; keepalive_requests 1000000;\n\
               server {{ listen {POD}:8080; listen {POD}:8081; listen 127.0.0.1:8082; location / {{ return 200 '{body}'; }} }} }}\n"
        ),
    );
    let _app = spawn(&mut pod.exec(&["nginx", "-c", app_conf.to_str().unwrap()]));
    let p = pki.display();
    let tls_conf = conf(
        "tls.conf",
        format!(
            "daemon off; master_process off; pid {d}/tls.pid; error_log {d}/tls.err;\n\
             events {{ worker_connections 8192; }}\n\
             http {{ access_log off; keepalive_requests 1000000;\n\
               upstream app {{ server 127.0.0.1:8082; keepalive 64; }}\n\
               server {{ listen {POD}:8443 ssl; ssl_protocols TLSv1.3;\n\
                 ssl_certificate {p}/api.pem; ssl_certificate_key {p}/api.key;\n\
                 ssl_client_certificate {p}/root.pem; ssl_verify_client on;\n\
                 location / {{ proxy_pass http://app; proxy_http_version 1.1;\n\
                   proxy_set_header Connection \"\"; }} }} }}\n"
        ),
    );
    let nginx_tls = spawn(&mut pod.exec(&["nginx", "-c", tls_conf.to_str().unwrap()]));

    // weft: the control plane and the two sidecars.
    let registry = dir.path().join("registry");
    std::fs::create_dir(&registry).unwrap();
    std::fs::write(registry.join("mesh.yaml"), TWO_PODS).unwrap();
    let token = |sa| weft_e2e::token_file(&workspace_bin("weft"), &ca_dir, sa, dir.path());
    let (api_token, web_token) = (token("api"), token("web"));
    let weft = workspace_bin("weft");
    let _cp = spawn(
        pod.exec(&[weft.to_str().unwrap(), "serve", "--registry"])
            .arg(&registry)
            .args(["--xds-addr", "0.0.0.0:15010", "--ca-dir"])
            .arg(&ca_dir)
            .env("WEFT_LOG", "warn"),
    );
    let proxy = workspace_bin("weft-proxy");
    let api = pod.sidecar_of(
        &proxy,
        "api-0.shop",
        &[
            "--xds-addr",
            "127.0.0.1:15010",
            "--ca-token-file",
            &api_token,
            "--log",
            "warn",
        ],
    );
    let web = client.sidecar_of(
        &proxy,
        "web-0.shop",
        &[
            "--xds-addr",
            &format!("{POD}:15010"),
            "--ca-token-file",
            &web_token,
            "--log",
            "warn",
        ],
    );
    // `ip netns exec` and setpriv exec what they run: each child's pid is the program's.
    let (api_pid, web_pid, nginx_pid) = (api.0.id(), web.0.id(), nginx_tls.0.id());
    if !opts.hops_only {
        handshakes_and_memory(&opts, &client, dir.path(), (api_pid, nginx_pid));
    }
    if !opts.no_hops {
        hops(&opts, &client, &registry, (api_pid, web_pid));
    }
    drop((api, web));
}

/// Sections 1 and 2: handshakes per CPU-second beside nginx, then memory per idle connection.
fn handshakes_and_memory(
    opts: &Opts,
    client: &Netns,
    dir: &Path,
    (api_pid, nginx_pid): (u32, u32),
) {
    let pki_arg = dir.join("pki").to_string_lossy().into_owned();
    println!(
        "# 1. handshakes: a new mTLS connection per request, {} clients, {} s",
        opts.concurrency, opts.seconds
    );
    let mut results = Vec::new();
    for (name, addr, pid) in [
        ("weft-proxy", format!("{POD}:8080"), api_pid),
        ("nginx", format!("{POD}:8443"), nginx_pid),
    ] {
        let cpu = cpu_seconds(pid);
        let args = [
            addr,
            opts.seconds.to_string(),
            opts.concurrency.to_string(),
            pki_arg.to_string(),
        ];
        let mut full = vec!["handshakes".to_string()];
        full.extend(args);
        let r = output(client_cmd(client, false, &full));
        let cpu = cpu_seconds(pid) - cpu;
        let per_cpu = r[0] / cpu;
        println!(
            "{name:<11} {:>7.0} handshakes/s   {:>7.0} per CPU-second of the server   ({} failed, {cpu:.2} s CPU)",
            r[0] / opts.seconds as f64,
            per_cpu,
            r[1]
        );
        results.push(per_cpu);
        if r[1] > 0.0 && name == "nginx" {
            let log = std::fs::read_to_string(dir.join("tls.err")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(3).collect();
            eprintln!("nginx's error log ends: {tail:?}");
        }
    }
    println!(
        "weft-proxy / nginx handshakes per CPU-second: {:.2}x (goal >= 1)",
        results[0] / results[1]
    );

    println!(
        "\n# 2. memory: {} idle connections to the sidecar's inbound port",
        opts.idle
    );
    let hold = |plain: bool| {
        let (idle_rss, _) = rss_mib(api_pid);
        let mut args = vec![
            "hold".to_string(),
            format!("{POD}:8080"),
            opts.idle.to_string(),
            pki_arg.to_string(),
        ];
        if plain {
            args.push("--plain".into());
        }
        let mut holder = client_cmd(client, false, &args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let (held_rss, _) = rss_mib(api_pid);
        drop(holder.stdin.take());
        let _ = holder.wait();
        // Let the sidecar see them close before the next measurement.
        std::thread::sleep(Duration::from_millis(500));
        (idle_rss, held_rss, line.trim().to_string())
    };
    // mTLS first, on a sidecar that has held none yet: the goal is against its idle RSS.
    let (idle, mtls_rss, n) = hold(false);
    println!(
        "sidecar RSS idle {idle:.1} MiB, holding {n} mTLS connections {mtls_rss:.1} MiB ({:.1} KiB each): {:.2}x idle (goal <= 2)",
        (mtls_rss - idle) * 1024.0 / opts.idle as f64,
        mtls_rss / idle
    );
    let (before, plain_rss, n) = hold(true);
    println!(
        "then holding {n} plaintext connections {plain_rss:.1} MiB (from {before:.1} MiB: memory the mTLS ones freed is reused)"
    );
}

/// Section 3: the two hops, each path in turn per round, at each rate.
fn hops(opts: &Opts, client: &Netns, registry: &Path, (api_pid, web_pid): (u32, u32)) {
    println!("\n# 3. two hops over keep-alive, open loop: client -> sidecar -> sidecar -> app");
    // `mtls` multiplexes HTTP/1 over one HTTP/2 connection between the sidecars (the
    // default); `mtls-h1` keeps HTTP/1.1 over pooled keep-alive mTLS connections by policy.
    let set_path = |path: &str| {
        let mesh = match path {
            "mtls" => TWO_PODS.to_string(),
            "mtls-h1" => format!(
                "{TWO_PODS}---\napiVersion: weft.io/v1alpha1\nkind: TrafficPolicy\n\
                 metadata: {{name: api, namespace: shop}}\n\
                 spec: {{targetRefs: [{{kind: Service, name: api}}], connectionPool: {{h2Upgrade: false}}}}\n"
            ),
            _ => TWO_PODS.replace(", security.weft.io/tlsMode: weft", ""),
        };
        std::fs::write(registry.join("mesh.yaml"), mesh).unwrap();
        std::thread::sleep(Duration::from_secs(2));
    };
    for rate in &opts.rates {
        // Per path (direct, plaintext, mTLS): each round's p99 and CPU per request; the paths
        // take turns, and the medians are compared (one noisy run decides nothing).
        let paths = ["direct", "plaintext", "mtls", "mtls-h1"];
        let mut runs: Vec<(Vec<f64>, Vec<f64>)> = vec![Default::default(); paths.len()];
        for round in 0..opts.rounds {
            for (i, path) in paths.iter().enumerate() {
                let (addr, captured) = match *path {
                    "direct" => (format!("{POD}:8081"), false),
                    _ => ("10.96.0.40:80".to_string(), true),
                };
                if *path != "direct" {
                    set_path(path);
                }
                eprintln!("  {rate}/s {path} round {round} ...");
                let (c0, c1) = (cpu_seconds(api_pid), cpu_seconds(web_pid));
                let args = [
                    "open-loop".to_string(),
                    addr,
                    rate.to_string(),
                    opts.hop_seconds.to_string(),
                    "16".into(),
                ];
                // The direct path bypasses both sidecars: as UID 1337 past the client's, and to
                // the app's uncaptured port past the pod's.
                let perf = match (&opts.perf, round) {
                    (Some(dir), 0) if *path != "direct" => {
                        Some([("api", api_pid), ("web", web_pid)].map(|(pod, pid)| {
                            let out = dir.join(format!("{rate}-{path}-{pod}.data"));
                            spawn(
                                Command::new("perf")
                                    .args([
                                        "record",
                                        "--call-graph",
                                        "dwarf",
                                        "-F",
                                        "499",
                                        "-p",
                                        &pid.to_string(),
                                        "-o",
                                    ])
                                    .arg(out),
                            )
                        }))
                    }
                    _ => None,
                };
                let r = output(client_cmd(client, captured, &args));
                if let Some(recorders) = perf {
                    for mut r in recorders {
                        // perf writes its file on SIGINT.
                        let _ = Command::new("kill")
                            .args(["-INT", &r.0.id().to_string()])
                            .status();
                        let _ = r.0.wait();
                    }
                }
                let cpu = cpu_seconds(api_pid) - c0 + cpu_seconds(web_pid) - c1;
                let requests = (rate * opts.hop_seconds) as f64;
                println!(
                    "{rate:>5}/s {path:<9} p50 {:>6.0} µs  p99 {:>6.0} µs  max {:>7.0} µs  errors {}  sidecars' CPU {:>6.1} µs/request",
                    r[0],
                    r[1],
                    r[2],
                    r[3],
                    cpu / requests * 1e6
                );
                runs[i].0.push(r[1]);
                runs[i].1.push(cpu / requests);
            }
        }
        let median = |v: &Vec<f64>| quantile(v.clone(), 0.5);
        let added = |i: usize| median(&runs[i].0) - median(&runs[0].0);
        for (i, name) in [
            (2, "mTLS (HTTP/2 between sidecars)"),
            (3, "mTLS (HTTP/1.1 kept)"),
        ] {
            println!(
                "{rate:>5}/s medians of {} rounds: added p99 plaintext {:.0} µs, {name} {:.0} µs: {:.2}x (goal <= 1.2); sidecars' CPU per request {:.2}x (goal <= 1.3)",
                opts.rounds,
                added(1),
                added(i),
                added(i) / added(1),
                median(&runs[i].1) / median(&runs[1].1)
            );
        }
    }
}
