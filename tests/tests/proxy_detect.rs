//! Ports whose protocol is not declared (no `appProtocol`, no known name prefix), reached through
//! explicit outbound listeners: the proxy sniffs the first bytes. HTTP is routed, HTTP/2 (gRPC)
//! goes upstream as HTTP/2, and anything else, including server-first protocols whose client
//! waits for a banner, is carried as opaque TCP.

// Synchronous tests of real processes: they wait on the wall clock, blocking their thread.
#![allow(clippy::disallowed_types)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use weft_e2e::{OneService, free_port, grpc_backend, one_service, python_script};

/// One Service on an undeclared port behind an explicit listener, with one endpoint; a detection
/// timeout long enough that "at once" and "after the timeout" differ clearly.
fn mesh(name: &str, port: u16, port_name: &str, endpoint: u16) -> OneService {
    one_service(
        name,
        port,
        port_name,
        &[endpoint],
        "",
        &["--detect-timeout-ms", "2000"],
    )
}

#[test]
fn server_first_and_opaque_tcp_on_an_undeclared_port_are_carried_as_tcp() {
    // Greets first (as SMTP or MySQL do), then echoes lines.
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = server.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in server.incoming().flatten() {
            std::thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                let _ = w.write_all(b"220 hello\r\n");
                for line in BufReader::new(s).lines() {
                    let Ok(line) = line else { return };
                    let _ = w.write_all(format!("{line}\n").as_bytes());
                }
            });
        }
    });
    let mesh = mesh("mail", 2525, "mail", upstream);
    let bind = mesh.bind;

    // The client waits for the banner: nothing to sniff, so after the detection timeout the
    // connection is opaque TCP.
    let c = TcpStream::connect(bind).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = BufReader::new(c.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "220 hello\r\n");
    (&c).write_all(b"EHLO me\n").unwrap();
    line.clear();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "EHLO me\n");

    // A client that speaks first, but not HTTP: opaque TCP at once, not after the timeout.
    let started = std::time::Instant::now();
    let mut c = TcpStream::connect(bind).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"\x00\x01binary\n").unwrap();
    let mut got = vec![0u8; b"220 hello\r\n\x00\x01binary\n".len()];
    c.read_exact(&mut got).unwrap();
    assert_eq!(got, b"220 hello\r\n\x00\x01binary\n");
    assert!(started.elapsed() < Duration::from_millis(1500));
}

#[test]
fn grpc_on_an_undeclared_port_reaches_its_server_over_http2() {
    // A gRPC server on a port named `api`: nothing says HTTP/2, so the proxy must speak to it in
    // the protocol its client used (Istio's USE_DOWNSTREAM_PROTOCOL for sniffed ports).
    let port = free_port();
    let _server = grpc_backend(port, "g");
    let mesh = mesh("greeter", 50051, "api", port);
    let bind = mesh.bind;
    let script = "import grpc, sys\n\
        ch = grpc.insecure_channel(sys.argv[1])\n\
        print(ch.unary_unary('/weft.test.Echo/Who')(b'', timeout=5).decode())\n";
    let out = python_script(script, &[&bind.to_string()]);
    assert_eq!(out.trim(), "g");
}

#[test]
fn tls_on_an_undeclared_port_passes_through_untouched() {
    // An app speaking TLS end to end (openssl's test server, a self-signed certificate): the
    // proxy sees a ClientHello, carries the connection as opaque TCP, and curl completes the
    // handshake with the server itself.
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
        ])
        .arg("/CN=tls-app")
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let port = free_port();
    let _server = weft_e2e::Proc::spawn(
        std::process::Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept"])
            .arg(port.to_string())
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key),
    );
    weft_e2e::wait_for_port(
        SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(10),
    );
    let mesh = mesh("secure", 8443, "web", port);
    let bind = mesh.bind;
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-k",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{ssl_verify_result}",
        ])
        .arg(format!("https://{bind}/"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // s_server -www answers 200; the certificate curl saw is the app's own (self-signed: 18).
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200 18");
}
