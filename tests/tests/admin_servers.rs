//! The admin servers of both binaries (`weft`'s admin port, `weft-proxy`'s health port), one
//! implementation: with its file descriptors exhausted a process backs off instead of spinning
//! a core, clients that send half a request head are let go, and it serves again once
//! descriptors come free. Also the form of both binaries' log lines.

// Synchronous tests of real processes: they wait on the wall clock, blocking their thread.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use weft_e2e::{Proc, bin, free_port, http_get, wait_for_port};

fn addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

/// `weft serve` on the example mesh, its admin port, with at most 200 file descriptors.
fn control_plane(limit: bool, extra: &[&str]) -> (Command, SocketAddr) {
    let admin = addr();
    let mut cmd = Command::new("sh");
    let ulimit = if limit { "ulimit -n 200 && " } else { "" };
    cmd.args(["-c", &format!("{ulimit}exec \"$@\""), "sh"])
        .arg(bin("weft"))
        .args(["serve", "--registry"])
        .arg(weft_e2e::repo_root().join("examples/shop"))
        .args(["--xds-addr", &addr().to_string()])
        .args(["--admin-addr", &admin.to_string()])
        .args(extra);
    (cmd, admin)
}

/// `weft-proxy` (no control plane: never ready, but live), its health port, with at most 200
/// file descriptors (hard limit too, so it cannot raise them).
fn sidecar(limit: bool, extra: &[&str]) -> (Command, SocketAddr) {
    let health = addr();
    let mut cmd = Command::new("sh");
    let ulimit = if limit { "ulimit -n 200 && " } else { "" };
    cmd.args(["-c", &format!("{ulimit}exec \"$@\""), "sh"])
        .arg(bin("weft-proxy"))
        .args(["--xds-addr", "127.0.0.1:1", "--node-id", "web-0.shop"])
        .args(["--admin-addr", &addr().to_string()])
        .args(["--health-addr", &health.to_string()])
        .args(["--outbound-capture-addr", &addr().to_string()])
        .args(["--inbound-capture-addr", &addr().to_string()])
        .args(extra);
    (cmd, health)
}

/// CPU seconds a process has used (user and system), from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').unwrap().1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn exhaust_and_recover(cmd: &mut Command, port: SocketAddr, path: &str) {
    let proc = Proc::spawn(cmd);
    wait_for_port(port, Duration::from_secs(20));
    let pid = proc.0.id();
    // Half a request head each: the server must let these go.
    let started = Instant::now();
    let mut half: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut s = TcpStream::connect(port).unwrap();
            s.write_all(b"GET /live HTTP/1.1\r\nHost: x\r\n").unwrap();
            s
        })
        .collect();
    // More connections than it has descriptors: the rest wait in the listen backlog, and
    // accept fails with EMFILE for as long as they do.
    let flood: Vec<TcpStream> = (0..400)
        .map(|_| TcpStream::connect(port).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_seconds(pid) - before;
    assert!(
        used < 0.5,
        "{used:.2} s of CPU in 2 s with its descriptors exhausted: it spins"
    );
    for s in &mut half {
        s.set_read_timeout(Some(Duration::from_secs(25))).unwrap();
        let mut buf = [0u8; 256];
        // Closed (EOF), or reset; anything but an answer or a timeout.
        match s.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!("answered a half-sent head: {:?}", &buf[..n]),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
    }
    // The header timeout is 10 s; the rest is a loaded machine's slack.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "half-sent heads held for {:?}",
        started.elapsed()
    );
    drop(flood);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok((200, _)) = http_get(port, path) {
            break;
        }
        assert!(Instant::now() < deadline, "never served again");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_control_planes_admin_survives_exhausted_descriptors_and_silent_clients() {
    let (mut cmd, admin) = control_plane(true, &[]);
    exhaust_and_recover(&mut cmd, admin, "/ready");
}

#[test]
fn the_proxys_health_port_survives_exhausted_descriptors_and_silent_clients() {
    let (mut cmd, health) = sidecar(true, &[]);
    exhaust_and_recover(&mut cmd, health, "/live");
}

/// Log lines to a file or a pipe carry no colour codes; `--log-format json` makes each one
/// JSON object, with its level and message.
#[test]
fn log_lines_fit_where_they_go() {
    type Start = fn(bool, &[&str]) -> (Command, SocketAddr);
    for start in [control_plane as Start, sidecar as Start] {
        for json in [false, true] {
            let extra: &[&str] = if json { &["--log-format", "json"] } else { &[] };
            let (mut cmd, port) = start(false, extra);
            let mut child = cmd
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            wait_for_port(port, Duration::from_secs(20));
            std::thread::sleep(Duration::from_millis(300));
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            let log = String::from_utf8_lossy(&out.stderr);
            let lines: Vec<&str> = log.lines().filter(|l| !l.is_empty()).collect();
            assert!(!lines.is_empty(), "{cmd:?} logged nothing");
            assert!(!log.contains('\u{1b}'), "colour codes in a pipe: {log}");
            if json {
                for line in &lines {
                    let v: serde_json::Value = serde_json::from_str(line)
                        .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                    assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
                }
            }
        }
    }
}

/// Every line the proxy logs about a connection names it (a `conn` span with the listener and
/// the client's address), so a local reply can be traced to who asked.
#[test]
fn a_proxy_log_line_names_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.log");
    let log = std::fs::File::create(&path).unwrap();
    // One endpoint, on a port nobody listens on: the request gets a local 503.
    let dead = free_port();
    let mesh = weft_e2e::one_service_logging("up", 80, "http", &[dead], "", &[], Some(log));
    let mut s = TcpStream::connect(mesh.bind).unwrap();
    let client = s.local_addr().unwrap();
    s.write_all(b"GET /x HTTP/1.1\r\nHost: up\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(&path).unwrap();
        let line = text.lines().find(|l| l.contains("local reply 503"));
        if let Some(line) = line {
            assert!(line.contains("conn{"), "{line}");
            assert!(line.contains(&format!("peer={client}")), "{line}");
            break;
        }
        assert!(Instant::now() < deadline, "no local reply logged:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
