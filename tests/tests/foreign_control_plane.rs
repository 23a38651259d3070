//! weft-proxy configured by a control plane that is not weft's: a small Python one
//! (tests/interop/sotw_control_plane.py) that serves only state-of-the-world ADS and lays its
//! config out as go-control-plane's example does (RDS and EDS from a gRPC `api_config_source`).

// Synchronous tests of real processes: they wait on the wall clock, blocking their thread.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use weft_e2e::{Proc, Sidecar, free_port, http_get, named_backend, python, repo_root};

/// The control plane's stdout, a line at a time, with every line seen kept.
struct Lines {
    rx: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    fn of(p: &mut Proc) -> Self {
        let out = p.0.stdout.take().expect("stdout piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            rx,
            seen: Vec::new(),
        }
    }

    /// The first line from now on that `want` takes.
    fn until(&mut self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.rx.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "no {what} from the control plane; it saw:\n{:#?}",
                    self.seen
                )
            });
            self.seen.push(line.clone());
            if want(&line) {
                return line;
            }
        }
    }
}

/// An ACK of `version` for `type_name`: the version, and no error.
fn ack(type_name: &str, version: u32) -> impl Fn(&str) -> bool {
    let start = format!("{type_name} version={version} ");
    move |l: &str| l.starts_with(&start) && l.ends_with("error=")
}

fn body_at(addr: SocketAddr) -> Option<String> {
    body_of(addr, "/")
}

fn body_of(addr: SocketAddr, path: &str) -> Option<String> {
    match http_get(addr, path) {
        Ok((200, body)) => Some(body),
        _ => None,
    }
}

fn eventually_answers(addr: SocketAddr, path: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while body_of(addr, path).as_deref() != Some(want) {
        assert!(Instant::now() < deadline, "{addr} never answered {want}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_sotw_only_control_plane_in_go_control_plane_shapes_configures_the_proxy() {
    let (one, two) = (named_backend("one"), named_backend("two"));
    let (xds_port, listener_port) = (free_port(), free_port());
    let mut cp = Proc::spawn(
        python()
            .arg(repo_root().join("tests/interop/sotw_control_plane.py"))
            .args([xds_port, listener_port, one.port(), two.port()].map(|p| p.to_string()))
            .stdin(Stdio::piped()),
    );
    let mut lines = Lines::of(&mut cp);
    lines.until("ready", |l| l == "ready");
    let mut tell = |line: &str| {
        let stdin = cp.0.stdin.as_mut().expect("stdin piped");
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .unwrap();
    };

    // Delta is refused; the proxy falls back to state of the world, takes the HTTP connection
    // manager's routes and the cluster's endpoints from the gRPC config sources, and is ready.
    let xds: SocketAddr = format!("127.0.0.1:{xds_port}").parse().unwrap();
    let proxy = Sidecar::start(xds, "web-0.shop");
    let bind: SocketAddr = format!("127.0.0.1:{listener_port}").parse().unwrap();
    eventually_answers(bind, "/", "one");
    let types = [
        "Listener",
        "Cluster",
        "RouteConfiguration",
        "ClusterLoadAssignment",
    ];
    let mut unacked = types.to_vec();
    while !unacked.is_empty() {
        let line = lines.until(&format!("ACKs of {unacked:?}"), |l| {
            types.iter().any(|t| ack(t, 1)(l))
        });
        unacked.retain(|t| !ack(t, 1)(&line));
    }

    // The endpoint moves: the next push applies, and is ACKed.
    tell("backend 1");
    eventually_answers(bind, "/", "two");
    lines.until(
        "an ACK of the new endpoint",
        ack("ClusterLoadAssignment", 2),
    );
    // The example's LOGICAL_DNS cluster: `localhost`, resolved by the proxy, is the first
    // backend whatever EDS says.
    assert_eq!(body_of(bind, "/dns").as_deref(), Some("one"));

    // A cluster weft-proxy cannot serve (TLS asked for): NACKed naming it, with the version
    // still in force; the config in force goes on serving.
    tell("bad");
    let nack = lines.until("a NACK", |l| {
        l.starts_with("Cluster version=2 ") && !l.ends_with("error=")
    });
    assert!(
        nack.contains("tls_cluster") && nack.contains("transport_socket"),
        "{nack}"
    );
    assert_eq!(body_at(bind).as_deref(), Some("two"));
    let (_, scrape) = http_get(proxy.admin, "/metrics").unwrap();
    assert!(
        scrape.contains("weft_proxy_xds_rejected_total{type=\"Cluster\"} 1"),
        "{scrape}"
    );

    // Fixed: the next version is ACKed.
    tell("good");
    lines.until("an ACK of the fixed clusters", ack("Cluster", 4));
    let (status, dump) = http_get(proxy.admin, "/config_dump").unwrap();
    assert_eq!(status, 200);
    assert!(dump.contains("example_proxy_cluster"), "{dump}");
    assert!(!dump.contains("tls_cluster"), "{dump}");
    // A new cluster, and a route to it: the server pushes every type at once, so the proxy asks
    // for the new cluster's endpoints while the server's EDS push is on its way. That request
    // carries the nonce of the push before, which the server ignores (as go-control-plane does),
    // and this server answers by version alone; the proxy sees the push leave its new name
    // unanswered and asks again, so the cluster is served at once, not after the 15 s initial
    // fetch timeout with no endpoints.
    tell("more");
    eventually_answers(bind, "/extra", "one");
    lines.until("an ACK of both clusters' endpoints", |l| {
        ack("ClusterLoadAssignment", 5)(l)
            && l.contains("names=example_proxy_cluster,extra_cluster")
    });
    let stale: Vec<&String> = lines
        .seen
        .iter()
        .filter(|l| l.ends_with(" stale"))
        .collect();
    assert!(
        !stale.is_empty(),
        "the race this step is for did not happen: {:#?}",
        lines.seen
    );
}
