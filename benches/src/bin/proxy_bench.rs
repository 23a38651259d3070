//! Data-plane bench: the same HTTP/1.1 keep-alive hop through weft-proxy, nginx and HAProxy, and
//! no hop at all, side by side in one run.
//!
//! The origin is nginx returning a 1 KB body. The load generator is open loop, one blocking thread
//! per connection: requests are scheduled at a constant rate, and a request the system under test
//! delayed (its connection still busy) is charged from its scheduled time, so a stalled proxy pays
//! for every request it holds up (no coordinated omission). Saturation is measured closed loop. For
//! every proxy it reports p50/p99/max, CPU seconds per 1,000 requests and RSS (idle and peak), and
//! ratios to the direct path and to nginx.
//!
//! Needs nginx and haproxy (`apt-get install nginx haproxy`) and release builds of weft and
//! weft-proxy: `cargo build --release --bins && cargo run --release -p weft-bench --bin proxy-bench`.
//! Options: `--rates 1000,5000` `--seconds 10` `--connections 16` `--saturation-seconds 5`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use weft_bench::{
    Proc, cpu_seconds, free_port, quantile, read_response, rss_mib, spawn, wait_port,
    workspace_bin, write_file,
};

use hdrhistogram::Histogram;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Options; every figure is printed per path, side by side.
#[derive(clap::Parser)]
#[command(about = "weft-proxy, nginx and HAProxy side by side on one HTTP/1.1 keep-alive hop")]
struct Opts {
    /// Open-loop request rates (req/s), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
    rates: Vec<u64>,
    /// Seconds per open-loop measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Client connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Seconds of the closed-loop saturation measurement.
    #[arg(long, default_value_t = 5)]
    saturation_seconds: u64,
    /// Pin the proxy under test to one core and everything else to the other.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pin: bool,
    /// Only the saturation phase (for profiling).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    saturation_only: bool,
    /// Runs of each measurement, interleaved across the paths; the median is printed.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    rounds: u64,
    /// Internal: run as the byte relay (`LISTEN,UPSTREAM`) the bench starts as its bare-hop path.
    #[arg(long, hide = true, value_delimiter = ',')]
    relay: Vec<SocketAddr>,
}

fn opts() -> Opts {
    <Opts as clap::Parser>::parse()
}

/// The core the proxies under test run on; the generator, the origin and `weft serve` share the
/// other, so a proxy never competes with the load it is measured under.
const PROXY_CORE: &str = "1";
const LOAD_CORE: &str = "0";

/// `program` started on `core` (through taskset, which execs it: the pid is the program's).
fn on_core(pin: bool, core: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    if pin {
        let mut c = Command::new("taskset");
        c.args(["-c", core]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// nginx (one worker), either serving the 1 KB origin or proxying to `upstream`.
fn nginx(dir: &Path, tag: &str, port: u16, upstream: Option<SocketAddr>, pin: bool) -> Proc {
    let (upstream_block, location) = match upstream {
        None => (String::new(), format!("return 200 '{}';", "x".repeat(1024))),
        Some(u) => (
            format!("upstream up {{ server {u}; keepalive 64; }}"),
            "proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\";"
                .to_string(),
        ),
    };
    let core = if upstream.is_some() {
        PROXY_CORE
    } else {
        LOAD_CORE
    };
    weft_bench::nginx(
        on_core(pin, core, "nginx"),
        dir,
        tag,
        port,
        &upstream_block,
        &location,
    )
}

/// A hop with no proxy work: this program re-run as a byte relay, on the proxies' core.
fn relay(port: u16, upstream: SocketAddr, pin: bool) -> Proc {
    let listen = SocketAddr::from(([127, 0, 0, 1], port));
    let p = spawn(
        on_core(pin, PROXY_CORE, std::env::current_exe().unwrap())
            .arg("--relay")
            .arg(format!("{listen},{upstream}")),
    );
    wait_port(listen);
    p
}

/// Relays every connection accepted on `listen` to a new connection to `upstream` on one
/// current-thread tokio runtime, as weft-proxy runs: per request one read and one write each way,
/// and no HTTP at all. What this path adds over the direct one is what the machine charges any
/// hop on such a runtime (two more loopback sends, two more wake-ups), and what a proxy adds over
/// it is its own work.
fn run_relay(listen: SocketAddr, upstream: SocketAddr) -> ! {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("relay runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .expect("relay binds");
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let Ok(mut server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    })
}

fn haproxy(dir: &Path, port: u16, upstream: SocketAddr, pin: bool) -> Proc {
    let conf = format!(
        "global\n  nbthread 1\n  maxconn 4096\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n  option http-keep-alive\n\
         frontend f\n  bind 127.0.0.1:{port}\n  default_backend b\nbackend b\n  http-reuse always\n  server s1 {upstream}\n"
    );
    let path = write_file(dir, "haproxy.cfg", &conf);
    let p = spawn(
        on_core(pin, PROXY_CORE, "haproxy")
            .arg("-f")
            .arg(path)
            .arg("-db"),
    );
    wait_port(SocketAddr::from(([127, 0, 0, 1], port)));
    p
}

/// weft serve + weft-proxy with an explicit listener on `port` forwarding to `upstream`.
fn weft(dir: &Path, port: u16, upstream: SocketAddr, pin: bool) -> (Proc, Proc) {
    let mesh = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: bench-0, namespace: b, labels: {{app: bench}}}}\n\
         spec: {{containers: [{{name: c}}]}}\nstatus: {{podIP: 127.0.0.1}}\n---\n\
         apiVersion: weft.io/v1alpha1\nkind: Sidecar\nmetadata: {{name: s, namespace: b}}\n\
         spec: {{outboundListeners: [{{bind: \"127.0.0.1:{port}\", service: origin, port: 80}}]}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: origin, namespace: b}}\n\
         spec: {{clusterIP: 127.99.0.1, ports: [{{name: http, port: 80}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: origin-a, namespace: b, labels: {{kubernetes.io/service-name: origin}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: {up}}}]\nendpoints: [{{addresses: [\"{ip}\"]}}]\n",
        up = upstream.port(),
        ip = upstream.ip()
    );
    let reg = dir.join("registry");
    std::fs::create_dir_all(&reg).unwrap();
    write_file(&reg, "mesh.yaml", &mesh);
    let xds = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let cp = spawn(
        on_core(pin, LOAD_CORE, workspace_bin("weft"))
            .args(["serve", "--registry"])
            .arg(&reg)
            .args([
                "--xds-addr",
                &xds.to_string(),
                "--admin-addr",
                &format!("127.0.0.1:{}", free_port()),
            ]),
    );
    wait_port(xds);
    let proxy = spawn(on_core(pin, PROXY_CORE, workspace_bin("weft-proxy")).args([
        "--xds-addr",
        &xds.to_string(),
        "--node-id",
        "bench-0.b",
        "--admin-addr",
        &format!("127.0.0.1:{}", free_port()),
        "--health-addr",
        &format!("127.0.0.1:{}", free_port()),
        "--outbound-capture-addr",
        &format!("127.0.0.1:{}", free_port()),
        "--inbound-capture-addr",
        &format!("127.0.0.1:{}", free_port()),
        "--log",
        "warn",
    ]));
    wait_port(SocketAddr::from(([127, 0, 0, 1], port)));
    (cp, proxy)
}

const REQUEST: &[u8] = b"GET /bench HTTP/1.1\r\nHost: origin\r\n\r\n";

/// One blocking keep-alive connection: a thread blocked in `read` wakes the moment the response
/// lands, so the generator adds no scheduler of its own to the measurement.
struct Conn {
    stream: std::net::TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn open(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = std::net::TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(8192),
        })
    }

    fn get(&mut self) -> std::io::Result<u16> {
        self.stream.write_all(REQUEST)?;
        read_response(&mut self.stream, &mut self.buf)
    }
}

/// Async twin of [`Conn`] for the closed loop, where one thread drives every connection.
struct AsyncConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl AsyncConn {
    async fn open(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(8192),
        })
    }

    async fn get(&mut self) -> std::io::Result<u16> {
        self.stream.write_all(REQUEST).await?;
        self.buf.clear();
        let mut chunk = [0u8; 4096];
        loop {
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
            if let Ok(status) =
                read_response(&mut std::io::Cursor::new(&self.buf[..]), &mut Vec::new())
            {
                return Ok(status);
            }
        }
    }
}

struct Run {
    /// Latencies in nanoseconds.
    hist: Histogram<u64>,
    errors: u64,
    requests: u64,
    elapsed: Duration,
}

fn new_hist() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(100, 60_000_000_000, 3).unwrap()
}

/// Open loop: `rate` requests per second for `secs`, spread over `conns` connections, each driven
/// by its own thread.
///
/// A request is charged from its scheduled time when the system under test made it late (the
/// connection was still busy with the previous response: no coordinated omission), and from the
/// moment it was written when only the generator's own wake-up was late (a sleeping thread wakes
/// up to ~50 µs after its deadline, which is not the proxy's doing).
#[allow(clippy::disallowed_types, clippy::disallowed_methods)] // std threads paced by the wall clock
fn open_loop(addr: SocketAddr, rate: u64, secs: u64, conns: usize) -> Run {
    let total = rate * secs;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = std::time::Instant::now() + Duration::from_millis(50);
    let threads: Vec<_> = (0..conns)
        .map(|c| {
            std::thread::spawn(move || {
                let mut hist = new_hist();
                let mut errors = 0;
                let mut conn = Conn::open(addr).ok();
                let mut previous_done = start;
                for i in (c as u64..total).step_by(conns) {
                    let due = start + interval.mul_f64(i as f64);
                    let now = std::time::Instant::now();
                    if now < due {
                        std::thread::sleep(due - now);
                    }
                    let from = if previous_done > due {
                        due
                    } else {
                        std::time::Instant::now()
                    };
                    let ok = match conn.as_mut() {
                        Some(cn) => matches!(cn.get(), Ok(200)),
                        None => false,
                    };
                    previous_done = std::time::Instant::now();
                    if !ok {
                        errors += 1;
                        conn = Conn::open(addr).ok();
                    }
                    let ns = u64::try_from((previous_done - from).as_nanos()).unwrap_or(u64::MAX);
                    let _ = hist.record(ns.clamp(100, 60_000_000_000));
                }
                (hist, errors)
            })
        })
        .collect();
    let mut hist = new_hist();
    let mut errors = 0;
    for t in threads {
        let (h, e) = t.join().unwrap();
        hist.add(h).unwrap();
        errors += e;
    }
    Run {
        hist,
        errors,
        requests: total,
        elapsed: start.elapsed(),
    }
}

/// Closed loop: every connection sends back to back for `secs`.
async fn closed_loop(addr: SocketAddr, secs: u64, conns: usize) -> Run {
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        tasks.push(tokio::spawn(async move {
            let mut hist = new_hist();
            let (mut n, mut errors) = (0u64, 0u64);
            let Ok(mut conn) = AsyncConn::open(addr).await else {
                return (hist, 0, 1);
            };
            while Instant::now() < end {
                let t = Instant::now();
                match conn.get().await {
                    Ok(200) => {
                        n += 1;
                        let _ = hist.record(
                            u64::try_from(t.elapsed().as_nanos())
                                .unwrap_or(100)
                                .max(100),
                        );
                    }
                    _ => {
                        errors += 1;
                        match AsyncConn::open(addr).await {
                            Ok(c) => conn = c,
                            Err(_) => break,
                        }
                    }
                }
            }
            (hist, n, errors)
        }));
    }
    let mut hist = new_hist();
    let (mut requests, mut errors) = (0, 0);
    for t in tasks {
        let (h, n, e) = t.await.unwrap();
        hist.add(h).unwrap();
        requests += n;
        errors += e;
    }
    Run {
        hist,
        errors,
        requests,
        elapsed: start.elapsed(),
    }
}

struct Target {
    name: &'static str,
    addr: SocketAddr,
    pid: Option<u32>,
}

#[derive(Default, Clone)]
struct Row {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    cpu_per_1k: f64,
    errors: u64,
    /// p50 and p99 over the direct path's of the same round, which ran seconds before: a
    /// minute when the machine is slow lands on both, and cancels.
    added_p50: f64,
    added_p99: f64,
}

/// The median of `values` (the upper one of an even count).
fn median(values: Vec<f64>) -> f64 {
    quantile(values, 0.5)
}

impl Row {
    /// One row for several rounds of the same path: medians, the worst max, all errors.
    fn median_of(rounds: &[Row]) -> Row {
        let field = |f: fn(&Row) -> f64| median(rounds.iter().map(f).collect());
        Row {
            p50: field(|r| r.p50),
            p90: field(|r| r.p90),
            p99: field(|r| r.p99),
            max: rounds.iter().map(|r| r.max).fold(0.0, f64::max),
            cpu_per_1k: field(|r| r.cpu_per_1k),
            errors: rounds.iter().map(|r| r.errors).sum(),
            added_p50: field(|r| r.added_p50),
            added_p99: field(|r| r.added_p99),
        }
    }
}

fn main() {
    let o = opts();
    if let [listen, upstream] = o.relay[..] {
        run_relay(listen, upstream);
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("bench runtime")
        .block_on(bench(o));
}

async fn bench(o: Opts) {
    if o.pin {
        // This process (and every thread it starts later) runs on the load core.
        let status = Command::new("taskset")
            .args(["-a", "-p", "-c", LOAD_CORE])
            .arg(std::process::id().to_string())
            .stdout(Stdio::null())
            .status()
            .expect("taskset (util-linux) runs");
        assert!(status.success(), "taskset failed: try --pin false");
    }
    let dir = tempfile::tempdir().unwrap();
    let origin_port = free_port();
    let origin = SocketAddr::from(([127, 0, 0, 1], origin_port));
    let _origin = nginx(dir.path(), "origin", origin_port, None, o.pin);
    let (weft_port, nginx_port, haproxy_port, relay_port) =
        (free_port(), free_port(), free_port(), free_port());
    let (_cp, weft_proxy) = weft(dir.path(), weft_port, origin, o.pin);
    let nginx_proxy = nginx(dir.path(), "proxy", nginx_port, Some(origin), o.pin);
    let haproxy_proxy = haproxy(dir.path(), haproxy_port, origin, o.pin);
    let relay_proxy = relay(relay_port, origin, o.pin);
    let targets = [
        Target {
            name: "direct",
            addr: origin,
            pid: None,
        },
        Target {
            name: "weft-proxy",
            addr: SocketAddr::from(([127, 0, 0, 1], weft_port)),
            pid: Some(weft_proxy.0.id()),
        },
        Target {
            name: "nginx",
            addr: SocketAddr::from(([127, 0, 0, 1], nginx_port)),
            pid: Some(nginx_proxy.0.id()),
        },
        Target {
            name: "haproxy",
            addr: SocketAddr::from(([127, 0, 0, 1], haproxy_port)),
            pid: Some(haproxy_proxy.0.id()),
        },
        Target {
            name: "relay",
            addr: SocketAddr::from(([127, 0, 0, 1], relay_port)),
            pid: Some(relay_proxy.0.id()),
        },
    ];
    // nginx runs without a master (one process that does the work, and no orphaned worker when
    // the bench ends), so every pid is the process to measure.
    let pids: Vec<Option<u32>> = targets.iter().map(|t| t.pid).collect();
    println!(
        "# weft proxy bench: HTTP/1.1 keep-alive, 1 KB responses, {} connections, origin nginx (1 worker)",
        o.connections
    );
    for (t, pid) in targets.iter().zip(&pids) {
        if let Some(p) = pid {
            println!("idle RSS {:<10} {:>6.1} MiB", t.name, rss_mib(*p).0);
        }
    }
    let weft_idle_rss = rss_mib(weft_proxy.0.id()).0;
    // Warm every path (pools, lazy init).
    for t in &targets {
        let _ = open_loop(t.addr, 500, 1, o.connections);
    }
    let mut rate_rows: Vec<(u64, Vec<Row>)> = Vec::new();
    let rates = if o.saturation_only {
        &[][..]
    } else {
        &o.rates[..]
    };
    // Rounds interleave the paths (direct, weft, nginx, HAProxy, direct, ...), so a minute when a
    // neighbour takes the machine lands on every path rather than on one.
    let of_rounds = if o.rounds > 1 {
        format!(", median of {} interleaved rounds", o.rounds)
    } else {
        String::new()
    };
    for &rate in rates {
        let mut runs: Vec<Vec<Row>> = vec![Vec::new(); targets.len()];
        for _ in 0..o.rounds {
            for (i, (t, pid)) in targets.iter().zip(&pids).enumerate() {
                let cpu0 = pid.map(cpu_seconds);
                let run = open_loop(t.addr, rate, o.seconds, o.connections);
                let cpu = pid
                    .map(|p| cpu_seconds(p) - cpu0.unwrap_or(0.0))
                    .unwrap_or(0.0);
                let us = |q: f64| run.hist.value_at_quantile(q) as f64 / 1000.0;
                let mut row = Row {
                    p50: us(0.5),
                    p90: us(0.9),
                    p99: us(0.99),
                    max: run.hist.max() as f64 / 1000.0,
                    cpu_per_1k: cpu / run.requests as f64 * 1000.0,
                    errors: run.errors,
                    ..Row::default()
                };
                // The direct path runs first in every round.
                if let Some(direct) = runs[0].last().filter(|_| i > 0) {
                    row.added_p50 = row.p50 - direct.p50;
                    row.added_p99 = row.p99 - direct.p99;
                }
                runs[i].push(row);
            }
        }
        rate_rows.push((rate, runs.iter().map(|r| Row::median_of(r)).collect()));
    }
    for (rate, rows) in &rate_rows {
        println!(
            "\n## open loop, {rate} req/s for {} s (latency in µs, from scheduled start{of_rounds}; added: over the direct run of the same round)",
            o.seconds
        );
        println!(
            "{:<11} {:>8} {:>8} {:>8} {:>9} {:>12} {:>7}  {:>16} {:>16} {:>16} {:>16}",
            "path",
            "p50",
            "p90",
            "p99",
            "max",
            "cpu s/1k req",
            "errors",
            "added p50/p99",
            "vs direct",
            "added vs nginx",
            "over relay"
        );
        let (direct, nginx) = (rows[0].clone(), rows[2].clone());
        let relay = targets
            .iter()
            .position(|t| t.name == "relay")
            .map(|i| rows[i].clone())
            .unwrap_or_default();
        for (t, r) in targets.iter().zip(rows) {
            let added = format!("{:+.1}/{:+.1}", r.added_p50, r.added_p99);
            let over_relay = if t.name == "direct" || t.name == "relay" {
                "-".to_string()
            } else {
                format!(
                    "{:+.1}/{:+.1}",
                    r.added_p50 - relay.added_p50,
                    r.added_p99 - relay.added_p99
                )
            };
            let (vs_direct, vs_nginx) = if t.name == "direct" {
                ("-".to_string(), "-".to_string())
            } else {
                (
                    format!("{:.2}x/{:.2}x", r.p50 / direct.p50, r.p99 / direct.p99),
                    format!(
                        "{:.2}x/{:.2}x",
                        r.added_p50 / nginx.added_p50.max(1.0),
                        r.added_p99 / nginx.added_p99.max(1.0)
                    ),
                )
            };
            let cpu = if t.pid.is_some() {
                format!("{:.4}", r.cpu_per_1k)
            } else {
                "-".into()
            };
            println!(
                "{:<11} {:>8.1} {:>8.1} {:>8.1} {:>9.0} {:>12} {:>7}  {:>16} {:>16} {:>16} {:>16}",
                t.name,
                r.p50,
                r.p90,
                r.p99,
                r.max,
                cpu,
                r.errors,
                added,
                vs_direct,
                vs_nginx,
                over_relay
            );
        }
    }
    println!(
        "\n## saturation, closed loop, {} connections for {} s{of_rounds}",
        o.connections, o.saturation_seconds
    );
    println!(
        "{:<11} {:>10} {:>10} {:>14} {:>10}",
        "path", "req/s", "proxy cpu", "req/s per core", "p99 µs"
    );
    // Per path and round: requests per second, proxy cores used, p99 in µs, errors.
    let mut saturation: Vec<Vec<(f64, f64, f64, u64)>> = vec![Vec::new(); targets.len()];
    for _ in 0..o.rounds {
        for (i, (t, pid)) in targets.iter().zip(&pids).enumerate() {
            let cpu0 = pid.map(cpu_seconds);
            let run = closed_loop(t.addr, o.saturation_seconds, o.connections).await;
            let secs = run.elapsed.as_secs_f64();
            let cores = pid
                .map(|p| (cpu_seconds(p) - cpu0.unwrap_or(0.0)) / secs)
                .unwrap_or(0.0);
            saturation[i].push((
                run.requests as f64 / secs,
                cores,
                run.hist.value_at_quantile(0.99) as f64 / 1000.0,
                run.errors,
            ));
        }
    }
    let mut per_core_of: Vec<f64> = vec![0.0; targets.len()];
    for (((t, pid), runs), per_core_out) in targets
        .iter()
        .zip(&pids)
        .zip(&saturation)
        .zip(per_core_of.iter_mut())
    {
        let rps = median(runs.iter().map(|r| r.0).collect());
        let p99 = median(runs.iter().map(|r| r.2).collect());
        let errors: u64 = runs.iter().map(|r| r.3).sum();
        if pid.is_some() {
            let cores = median(runs.iter().map(|r| r.1).collect());
            let per_core = median(runs.iter().map(|r| r.0 / r.1.max(0.01)).collect());
            *per_core_out = per_core;
            println!(
                "{:<11} {:>10.0} {:>10.2} {:>14.0} {:>10.0}",
                t.name, rps, cores, per_core, p99
            );
        } else {
            println!(
                "{:<11} {:>10.0} {:>10} {:>14} {:>10.0}",
                t.name, rps, "-", "-", p99
            );
        }
        if errors > 0 {
            println!("  ({errors} errors)");
        }
    }
    println!();
    for (t, pid) in targets.iter().zip(&pids) {
        if let Some(p) = pid {
            println!("peak RSS {:<10} {:>6.1} MiB", t.name, rss_mib(*p).1);
        }
    }
    let at_1k = rate_rows
        .iter()
        .find(|(rate, _)| *rate == 1000)
        .map(|(_, rows)| rows);
    print_goals(Goals {
        weft_1k: at_1k.map(|rows| rows[1].clone()),
        relay_1k: at_1k.and_then(|rows| rows.last().cloned()),
        idle_rss: weft_idle_rss,
        peak_rss: rss_mib(weft_proxy.0.id()).1,
        per_core: (per_core_of[1], per_core_of[2]),
    });
}

/// What the goals of the proxy issue are judged on, from this run.
struct Goals {
    /// weft-proxy's row at 1,000 req/s, if that rate ran.
    weft_1k: Option<Row>,
    /// The bare relay's row at 1,000 req/s: what any hop costs on this machine.
    relay_1k: Option<Row>,
    idle_rss: f64,
    peak_rss: f64,
    /// Saturation requests per second per core of proxy CPU: weft-proxy's and nginx's.
    per_core: (f64, f64),
}

/// Each goal of the proxy issue against this run's figure: met or missed.
fn print_goals(g: Goals) {
    // (goal, this run's figure, met, what else to say)
    let mut rows: Vec<(&str, String, bool, String)> = Vec::new();
    if let Some(w) = &g.weft_1k {
        let relay = g
            .relay_1k
            .as_ref()
            .map(|r| format!(" (bare relay: {:+.1}/{:+.1})", r.added_p50, r.added_p99))
            .unwrap_or_default();
        rows.push((
            "added p50 <= 40 µs at 1,000 req/s",
            format!("{:+.1}", w.added_p50),
            w.added_p50 <= 40.0,
            relay,
        ));
        rows.push((
            "added p99 <= 75 µs at 1,000 req/s",
            format!("{:+.1}", w.added_p99),
            w.added_p99 <= 75.0,
            String::new(),
        ));
        rows.push((
            "CPU <= 0.05 s per 1,000 req at 1,000/s",
            format!("{:.4}", w.cpu_per_1k),
            w.cpu_per_1k <= 0.05,
            String::new(),
        ));
    }
    let (weft, nginx) = g.per_core;
    rows.extend([
        (
            "idle RSS <= 10 MiB",
            format!("{:.1}", g.idle_rss),
            g.idle_rss <= 10.0,
            String::new(),
        ),
        (
            "peak RSS under load <= 20 MiB",
            format!("{:.1}", g.peak_rss),
            g.peak_rss <= 20.0,
            String::new(),
        ),
        (
            "saturation per core >= nginx's",
            format!("{:.2}x", weft / nginx.max(1.0)),
            weft >= nginx,
            String::new(),
        ),
    ]);
    println!("\n## goals (weft-proxy, this run)");
    for (goal, figure, met, extra) in rows {
        let verdict = if met { "met" } else { "missed" };
        println!("{goal:<39} {figure:>8}  {verdict}{extra}");
    }
}
