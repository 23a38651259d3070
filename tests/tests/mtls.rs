//! mTLS between two sidecars, as in two pods: each in its own network namespace with Istio's
//! capture rules, each with a certificate from the real `weft` CA. What crosses between them is
//! captured with tcpdump and holds no byte of the request in plaintext; the server's sidecar
//! knows its peer's SPIFFE ID; PERMISSIVE lets plaintext in beside mTLS, and STRICT (a MeshTLS
//! written into the registry while everything runs) closes plaintext and refuses `openssl
//! s_client` without a certificate, while the sidecars' mTLS goes on.

// Synchronous tests of real processes: they wait on the wall clock, blocking their thread.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::process::{Command, Stdio};
use std::time::Duration;

use weft_e2e::netns::{Pods, TWO_PODS, curl, curl_with, metrics};
use weft_e2e::wait_until;

const STRICT: &str = r#"
---
apiVersion: weft.io/v1alpha1
kind: MeshTLS
metadata: {name: strict, namespace: shop}
spec: {mode: STRICT}
"#;

#[test]
fn sidecars_speak_mtls_that_carries_no_plaintext_and_strict_refuses_the_rest() {
    let pods = Pods::start("m", &[]);
    let (server, client, client_if, dir) = (&pods.server, &pods.client, &pods.client_if, &pods.dir);
    let registry = pods.registry();
    // A second server in the pod, on a port no Service or container declares.
    let _side = server.backend(&["http", "10.2.0.5", "9090", "side-port"]);

    // Everything that crosses the wire between the pods, while a request goes through.
    let pcap = dir.path().join("wire.pcap");
    let mut tcpdump = client
        .exec(&["tcpdump", "--immediate-mode", "-i", client_if, "-U", "-w"])
        .arg(&pcap)
        .args(["tcp", "port", "8080"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // It says "listening on ..." once it captures.
    let mut said = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(tcpdump.stderr.as_mut().unwrap()),
        &mut said,
    )
    .unwrap();
    assert!(said.contains("listening on"), "{said}");
    let marker = "/the-secret-path-7c1e";
    let (ok, body) = curl(client, false, &format!("http://10.96.0.40{marker}"));
    assert!(ok && body == "api-app", "{body}");
    wait_until(Duration::from_secs(5), "no mTLS connection counted", || {
        metrics(server).contains(
            r#"weft_proxy_inbound_connections_total{security="mtls",result="accepted"} 1"#,
        )
    });
    // The client's sidecar keeps the connection pooled: the server's lists it, with its peer.
    let listed = curl(server, false, "http://127.0.0.1:15000/debug/connections").1;
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["direction"] == "inbound"
                && c["security"] == "mtls"
                && c["peer"] == "spiffe://cluster.local/ns/shop/sa/web"),
        "{listed}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let _ = Command::new("kill").arg(tcpdump.id().to_string()).status();
    let _ = tcpdump.wait();
    let wire = std::fs::read(&pcap).unwrap();
    assert!(
        wire.windows(3).any(|w| w == [0x16, 0x03, 0x01]),
        "no TLS ClientHello on the wire ({} bytes captured)",
        wire.len()
    );
    for plain in [marker.as_bytes(), b"api-app", b"HTTP/1.1"] {
        assert!(
            !wire.windows(plain.len()).any(|w| w == plain),
            "{:?} crossed in plaintext",
            String::from_utf8_lossy(plain)
        );
    }

    // HTTP/1 requests between sidecars share one HTTP/2 mTLS connection: ten at once open no
    // second one, and each reaches the app as the HTTP/1.1 it was, with its Host.
    let urls: Vec<String> = (0..10)
        .map(|i| format!("http://10.96.0.40/slow/{i}"))
        .collect();
    // Bodies to /dev/null, one `-o` per URL: only the write-outs reach stdout, a line each.
    let mut args = vec![
        "-Z",
        "--parallel-max",
        "10",
        "-w",
        "%{http_code} %header{x-seen-version} %header{x-seen-host}\n",
    ];
    for url in &urls {
        args.extend(["-o", "/dev/null", url.as_str()]);
    }
    let (ok, out) = curl_with(client, false, &args);
    assert!(ok, "{out}");
    assert_eq!(
        out.lines()
            .filter(|l| *l == "200 HTTP/1.1 10.96.0.40")
            .count(),
        10,
        "{out}"
    );
    let accepted = |n: usize| {
        format!(r#"weft_proxy_inbound_connections_total{{security="mtls",result="accepted"}} {n}"#)
    };
    assert!(
        metrics(server).contains(&accepted(1)),
        "{}",
        metrics(server)
    );
    // An upgrade cannot ride HTTP/2: it goes as HTTP/1.1, its headers intact.
    let (ok, out) = curl_with(
        client,
        false,
        &[
            "-H",
            "Connection: Upgrade",
            "-H",
            "Upgrade: websocket",
            "-w",
            " %header{x-seen-version} %header{x-seen-upgrade}",
            "http://10.96.0.40/upgrade",
        ],
    );
    assert!(ok && out == "api-app HTTP/1.1 websocket", "{out}");
    assert!(
        metrics(server).contains(&accepted(2)),
        "{}",
        metrics(server)
    );

    // PERMISSIVE: a client without a sidecar still gets in, in plaintext, and is counted so.
    let (ok, body) = curl(client, true, "http://10.2.0.5:8080/");
    assert!(ok && body == "api-app", "{body}");
    assert!(metrics(server).contains(
        r#"weft_proxy_inbound_connections_total{security="plaintext",result="accepted"} 1"#
    ));
    // An undeclared port is reached through the sidecar's passthrough, to the original address.
    let (ok, body) = curl(client, true, "http://10.2.0.5:9090/");
    assert!(ok && body == "side-port", "{body}");

    // STRICT, written while everything runs: plaintext is closed, a TLS client without a
    // certificate is refused, and the sidecars' mTLS goes on.
    std::fs::write(registry.join("mesh.yaml"), format!("{TWO_PODS}{STRICT}")).unwrap();
    wait_until(Duration::from_secs(10), "plaintext still let in", || {
        !curl(client, true, "http://10.2.0.5:8080/").0
    });
    // STRICT covers the ports nobody declared as well: no way around it by port.
    let (ok, body) = curl(client, true, "http://10.2.0.5:9090/");
    assert!(!ok, "plaintext let in on an undeclared port: {body}");
    let s_client = client
        .exec(&[
            "setpriv",
            "--reuid",
            "1337",
            "--regid",
            "1337",
            "--clear-groups",
            "openssl",
            "s_client",
            "-connect",
            "10.2.0.5:8080",
            "-tls1_3",
            "-quiet",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = s_client.stdin.as_ref().unwrap();
        let _ = stdin.write_all(b"GET / HTTP/1.1\r\nHost: api\r\n\r\n");
    }
    let out = s_client.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        !stdout.contains("HTTP/1.1"),
        "answered without a certificate: {stdout}"
    );
    assert!(stderr.contains("alert"), "{stderr}");
    assert!(
        metrics(server).contains("weft_proxy_mtls_handshake_failures_total 1"),
        "{}",
        metrics(server)
    );
    let (ok, body) = curl(client, false, "http://10.96.0.40/again");
    assert!(ok && body == "api-app", "{body}");
    // A pod called by its own address goes through the client's sidecar over mTLS too.
    let (ok, body) = curl(client, false, "http://10.2.0.5:8080/by-pod-address");
    assert!(ok && body == "api-app", "{body}");
}

/// Certificates of 5 seconds, renewed every 2.5 s on both sides, for a minute of requests over
/// kept-alive and new connections: not one fails.
#[test]
fn certificates_rotate_under_load_without_a_failed_request() {
    let pods = Pods::start("r", &["--cert-ttl-secs", "5"]);
    let load = r#"
import http.client, sys, time
ok = fail = 0
end = time.time() + float(sys.argv[1])
kept = http.client.HTTPConnection("10.96.0.40", 80, timeout=5)
while time.time() < end:
    for fresh in (False, True):
        try:
            c = http.client.HTTPConnection("10.96.0.40", 80, timeout=5) if fresh else kept
            c.request("GET", "/rotating")
            r = c.getresponse()
            body = r.read()
            if r.status == 200 and body == b"api-app":
                ok += 1
            else:
                fail += 1
                print("bad", r.status, body, file=sys.stderr)
            if fresh:
                c.close()
        except Exception as e:
            fail += 1
            print("error", repr(e), file=sys.stderr)
            if not fresh:
                kept = http.client.HTTPConnection("10.96.0.40", 80, timeout=5)
    time.sleep(0.01)
print(ok, fail)
"#;
    let out = pods.client.run(&["python3", "-c", load, "60"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let counts: Vec<u64> = text
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(
        counts[1],
        0,
        "failed requests: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(counts[0] > 500, "only {} requests went through", counts[0]);
    for ns in [&pods.server, &pods.client] {
        let renewed: f64 = metrics(ns)
            .lines()
            .find_map(|l| l.strip_prefix(r#"weft_proxy_identity_requests_total{result="ok"} "#))
            .unwrap()
            .parse()
            .unwrap();
        assert!(renewed >= 15.0, "{renewed} certificates in a minute");
    }
}
