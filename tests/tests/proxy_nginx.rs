//! weft-proxy in front of nginx (Debian's package), the upstream most people run: a large body
//! streamed through without being buffered, keep-alive reuse against nginx's own connection
//! handling, and an upstream that resets the connection answered 502 UR.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::time::Duration;

use weft_e2e::{ControlPlane, Proc, Sidecar, free_port, http_get};

fn mesh(
    upstream: SocketAddr,
    reset: SocketAddr,
    bind: SocketAddr,
    reset_bind: SocketAddr,
) -> String {
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
spec:
  outboundListeners:
    - {{bind: "{bind}", service: files, port: 80}}
    - {{bind: "{reset_bind}", service: broken, port: 80}}
---
apiVersion: v1
kind: Service
metadata: {{name: files, namespace: shop}}
spec: {{clusterIP: 127.42.0.1, ports: [{{name: http, port: 80}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: broken, namespace: shop}}
spec: {{clusterIP: 127.42.0.2, ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: files-a, namespace: shop, labels: {{kubernetes.io/service-name: files}}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints: [{{addresses: ["{ip}"]}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: broken-a, namespace: shop, labels: {{kubernetes.io/service-name: broken}}}}
addressType: IPv4
ports: [{{name: http, port: {reset_port}}}]
endpoints: [{{addresses: ["{reset_ip}"]}}]
"#,
        port = upstream.port(),
        ip = upstream.ip(),
        reset_port = reset.port(),
        reset_ip = reset.ip(),
    )
}

/// nginx serving `root` on `port`, in the foreground, its files under `dir`.
fn nginx(dir: &std::path::Path, root: &std::path::Path, port: u16) -> Proc {
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            // One process (no master): killing it leaves no orphaned worker behind.
            "daemon off; master_process off; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 256; }}\n\
             http {{ access_log off; keepalive_timeout 75s;\n\
               server {{ listen 127.0.0.1:{port}; root {root}; }} }}\n",
            d = dir.display(),
            root = root.display(),
        ),
    )
    .unwrap();
    let p = Proc::spawn(
        Command::new("nginx")
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.join("error.log")),
    );
    weft_e2e::wait_for_port(
        SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(10),
    );
    p
}

/// A server that reads a request and closes the connection with a TCP reset.
fn resetting_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut s = s;
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            // SO_LINGER 0: close() sends RST instead of FIN.
            let _ = nix::sys::socket::setsockopt(
                &s,
                nix::sys::socket::sockopt::Linger,
                &nix::libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                },
            );
            drop(s);
        }
    });
    addr
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn large_files_stream_from_nginx_and_resets_are_502() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("www");
    std::fs::create_dir(&root).unwrap();
    // 48 MiB, every MiB different: far more than the proxy may hold at once.
    let mib: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let big: Vec<u8> = (0..48u8)
        .flat_map(|n| mib.iter().map(move |b| b ^ n))
        .collect();
    std::fs::write(root.join("big.bin"), &big).unwrap();
    std::fs::write(root.join("index.html"), "hello from nginx\n").unwrap();
    let port = free_port();
    let _nginx = nginx(dir.path(), &root, port);

    let reg = dir.path().join("registry");
    std::fs::create_dir(&reg).unwrap();
    let bind: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let reset_bind: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    std::fs::write(
        reg.join("mesh.yaml"),
        mesh(
            SocketAddr::from(([127, 0, 0, 1], port)),
            resetting_server(),
            bind,
            reset_bind,
        ),
    )
    .unwrap();
    let cp = ControlPlane::start(&reg);
    let sidecar = Sidecar::start(cp.xds, "web-0.shop");
    weft_e2e::wait_for_port(bind, Duration::from_secs(10));

    // Keep-alive against nginx: many small requests, then the big file, byte for byte.
    for _ in 0..20 {
        let (status, body) = http_get(bind, "/index.html").unwrap();
        assert_eq!((status, body.as_str()), (200, "hello from nginx\n"));
    }
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "60", "-o", "-"])
        .arg(format!("http://{bind}/big.bin"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout.len(), big.len());
    assert!(out.stdout == big, "body changed on the way");
    // Streamed, not buffered: the proxy's peak RSS stays far below the 48 MiB it carried.
    let peak_mib = rss_kib(sidecar.proc.0.id()) / 1024;
    assert!(peak_mib < 32, "weft-proxy peaked at {peak_mib} MiB");

    // HTTP/1.0 without Host: the upstream leg is HTTP/1.1, which needs one (nginx answers 400
    // without); the proxy supplies it.
    let mut c = std::net::TcpStream::connect(bind).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").unwrap();
    let mut resp = String::new();
    let _ = c.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.0 200"), "{resp}");
    assert!(resp.ends_with("hello from nginx\n"), "{resp}");

    // An upstream that resets: 502 with the reason, and the listener keeps serving.
    let mut c = std::net::TcpStream::connect(reset_bind).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: broken\r\n\r\n")
        .unwrap();
    let mut resp = vec![0; 4096];
    let n = c.read(&mut resp).unwrap();
    let resp = String::from_utf8_lossy(&resp[..n]);
    assert!(resp.starts_with("HTTP/1.1 502"), "{resp}");
    assert!(
        resp.to_ascii_lowercase().contains("x-weft-reason: ur"),
        "{resp}"
    );
    let (status, _) = http_get(bind, "/index.html").unwrap();
    assert_eq!(status, 200);
}
