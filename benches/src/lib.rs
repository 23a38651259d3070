//! What the benches share: child processes that die with the bench, free ports, figures from
//! `/proc`, and nginx as a one-process origin or proxy.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A child process killed on drop, so a failed bench leaves nothing running.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` with its output discarded (`BENCH_LOGS=1` shows its stderr).
pub fn spawn(cmd: &mut Command) -> Proc {
    let logs = if std::env::var_os("BENCH_LOGS").is_some() {
        Stdio::inherit()
    } else {
        Stdio::null()
    };
    Proc(
        cmd.stdout(Stdio::null())
            .stderr(logs)
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}")),
    )
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits (up to 5 s) until something accepts connections on `addr`.
#[allow(clippy::disallowed_methods)] // a sync wait for a real process to listen
pub fn wait_port(addr: SocketAddr) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("nothing listens on {addr} (set BENCH_LOGS=1 to see the processes' logs)");
}

/// CPU seconds (user + system) used so far by `pid` and its threads.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// (current, peak) resident set size of `pid`, in MiB.
pub fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let get = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (get("VmRSS:"), get("VmHWM:"))
}

/// The `q` quantile of `values` (0.5: the median, the upper one of an even count; 1: the
/// largest); NaN when there are none.
pub fn quantile(mut values: Vec<f64>, q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let at = ((values.len() as f64 - 1.0) * q).round();
    values
        .get(at.max(0.0) as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

/// A binary of this workspace, next to the running bench (`cargo build --release --bins`).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let p = exe.parent().unwrap().join(name);
    assert!(
        p.exists(),
        "{} missing: cargo build --release --bins first",
        p.display()
    );
    p
}

/// Writes `text` to `dir/name`.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    p
}

/// nginx as one process (no master, so the pid is the one doing the work and nothing is
/// orphaned), listening on 127.0.0.1:`port`, with `http` added to its `http` block and
/// `location` as the body of `location /`. `cmd` is `nginx` or a wrapper that execs it.
pub fn nginx(
    mut cmd: Command,
    dir: &Path,
    tag: &str,
    port: u16,
    http: &str,
    location: &str,
) -> Proc {
    let conf = format!(
        "daemon off; master_process off; pid {dir}/{tag}.pid; error_log {dir}/{tag}.err;\n\
         events {{ worker_connections 4096; }}\n\
         http {{ access_log off; keepalive_requests 1000000; {http}\n\
           server {{ listen 127.0.0.1:{port}; location / {{ {location} }} }}\n}}\n",
        dir = dir.display()
    );
    let path = write_file(dir, &format!("{tag}.conf"), &conf);
    let p = spawn(
        cmd.arg("-c")
            .arg(path)
            .arg("-e")
            .arg(dir.join(format!("{tag}.err"))),
    );
    wait_port(SocketAddr::from(([127, 0, 0, 1], port)));
    p
}

/// `GET path` on a new connection, read to its close: (status, body). For admin endpoints.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Reads one HTTP/1.1 response (headers and a `Content-Length` body) from `stream` into `buf`;
/// returns its status. Just enough HTTP for the bench.
pub fn read_response<R: Read>(stream: &mut R, buf: &mut Vec<u8>) -> std::io::Result<u16> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head =
                std::str::from_utf8(&buf[..end]).map_err(|_| std::io::ErrorKind::InvalidData)?;
            let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = stream.read(&mut chunk)?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok(status);
        }
    }
}
