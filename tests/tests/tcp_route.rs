//! TCPRoutes end to end: real `weft serve` on a file registry, real `weft-proxy`, real TCP
//! servers and clients. A TCP Service's connections split by weight (each connection to one
//! backend), an edit under live traffic moves the split without a failed connection, and a
//! backend that does not resolve has its connections closed, not sent elsewhere.

// Synchronous tests of real processes: they wait on the wall clock, blocking their thread.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use weft_e2e::{http_get, line_echo, one_service};

/// Opens a connection, sends one line, and returns who answered (`None`: closed unanswered).
fn who(addr: SocketAddr) -> Option<String> {
    let s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    (&s).write_all(b"ping\n").ok()?;
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).ok()?;
    let (name, rest) = line.trim_end().split_once(':')?;
    (rest == "ping").then(|| name.to_string())
}

/// How many of `n` connections `name` answered; every one must be answered.
fn answered_by(addr: SocketAddr, n: usize, name: &str) -> usize {
    (0..n)
        .map(|i| who(addr).unwrap_or_else(|| panic!("connection {i} was not answered")))
        .filter(|w| w == name)
        .count()
}

/// `db-v2` (a second Service with its own endpoint) and a TCPRoute on `db` with these weights
/// for `db`, `db-v2` and, if `gone` is set, a Service that does not exist.
fn route(v2_port: u16, (w1, w2, gone): (u32, u32, u32)) -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: db-v2, namespace: shop}}
spec: {{clusterIP: 127.41.0.10, ports: [{{name: tcp-db, port: 5432}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: db-v2-a, namespace: shop, labels: {{kubernetes.io/service-name: db-v2}}}}
addressType: IPv4
ports: [{{name: tcp-db, port: {v2_port}}}]
endpoints: [{{addresses: ["127.0.0.1"]}}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {{name: db-canary, namespace: shop}}
spec:
  parentRefs: [{{group: "", kind: Service, name: db, port: 5432}}]
  rules:
    - backendRefs:
        - {{name: db, port: 5432, weight: {w1}}}
        - {{name: db-v2, port: 5432, weight: {w2}}}
        - {{name: gone, port: 5432, weight: {gone}}}
"#
    )
}

fn write(dir: &std::path::Path, text: &str) {
    let tmp = dir.join(".route.yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, dir.join("route.yaml")).unwrap();
}

/// Waits until `n` connections in a row are all answered by `name`.
fn until_all(addr: SocketAddr, name: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while answered_by(addr, n, name) != n {
        assert!(Instant::now() < deadline, "never all {name}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_tcp_route_splits_connections_by_weight_and_moves_under_live_traffic() {
    let (v1, v2) = (line_echo("v1:").port(), line_echo("v2:").port());
    let mesh = one_service("db", 5432, "tcp-db", &[v1], "", &[]);
    let bind = mesh.bind;
    // Before any route: every connection to the Service's own endpoint.
    until_all(bind, "v1", 20);

    write(mesh.dir.path(), &route(v2, (75, 25, 0)));
    let deadline = Instant::now() + Duration::from_secs(15);
    while answered_by(bind, 20, "v2") == 0 {
        assert!(Instant::now() < deadline, "the split never applied");
        std::thread::sleep(Duration::from_millis(100));
    }
    // 400 connections at 25%: 100 expected, sd ~8.7; five sds either way.
    let n = 400;
    let to_v2 = n - answered_by(bind, n, "v1");
    assert!((57..=143).contains(&to_v2), "{to_v2} of {n} went to v2");

    // Live traffic from four clients while the split moves all the way to v2: no connection
    // goes unanswered.
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, done, failed) = (stop.clone(), done.clone(), failed.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match who(bind) {
                        Some(_) => done.fetch_add(1, Ordering::Relaxed),
                        None => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    write(mesh.dir.path(), &route(v2, (0, 1, 0)));
    until_all(bind, "v2", 50);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(done.load(Ordering::Relaxed) > 50);

    // A backend that does not resolve keeps its share: those connections are closed unanswered,
    // never sent to the other backend.
    write(mesh.dir.path(), &route(v2, (0, 1, 1)));
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = 0;
    while seen == 0 {
        assert!(
            Instant::now() < deadline,
            "the unresolved share never applied"
        );
        let got: Vec<Option<String>> = (0..20).map(|_| who(bind)).collect();
        assert!(got.iter().flatten().all(|w| w == "v2"), "{got:?}");
        seen = got.iter().filter(|w| w.is_none()).count();
    }
    let got: Vec<Option<String>> = (0..200).map(|_| who(bind)).collect();
    let refused = got.iter().filter(|w| w.is_none()).count();
    // 100 expected, sd ~7.1.
    assert!((64..=136).contains(&refused), "{refused} of 200 refused");
    // Each refusal is counted, against an unknown destination, not only logged.
    let (_, scrape) = http_get(mesh.sidecar.health, "/metrics").unwrap();
    let counted: u64 = scrape
        .lines()
        .filter(|l| {
            l.starts_with("weft_tcp_connections_opened_total{")
                && l.contains("destination_service=\"unknown\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(counted, (seen + refused) as u64, "{scrape}");
}
