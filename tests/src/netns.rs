//! Network namespaces for tests that need real routing and iptables: a namespace per pod, veth
//! pairs between them, Istio-style capture rules, and the real servers and sidecars run inside.
//! Needs root (CI runs as root).

use std::process::{Command, Output};
use std::time::Duration;

use crate::{Proc, bin, repo_root};

/// Runs a command to completion; panics with its stderr if it fails.
pub fn run(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns(pub String);

impl Netns {
    /// A new namespace with loopback up; `tag` keeps the names of tests running at once apart.
    pub fn new(tag: &str) -> Self {
        let name = format!("weft-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(&["ip", "netns", "add", &name]);
        run(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Self(name)
    }

    /// A command to run inside.
    pub fn exec(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).args(args);
        c
    }

    /// Runs a command inside to completion; panics if it fails.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", &self.0];
        full.extend_from_slice(args);
        run(&full)
    }

    /// Istio's capture rules: outbound TCP to 15001, inbound to 15006, the proxy's own traffic
    /// (UID 1337) and loopback left alone; IPv4 and IPv6.
    pub fn capture(&self) {
        for (tables, loopback) in [("iptables", "127.0.0.1/32"), ("ip6tables", "::1/128")] {
            for rule in [
                "-A OUTPUT -p tcp -m owner --uid-owner 1337 -j RETURN",
                &format!("-A OUTPUT -p tcp -d {loopback} -j RETURN"),
                "-A OUTPUT -p tcp -j REDIRECT --to-ports 15001",
                "-A PREROUTING -p tcp -j REDIRECT --to-ports 15006",
            ] {
                let mut args = vec![tables, "-t", "nat"];
                args.extend(rule.split(' '));
                self.run(&args);
            }
        }
    }

    /// A real server from `tests/interop/backend.py`, once it says it is ready.
    pub fn backend(&self, args: &[&str]) -> Proc {
        let script = repo_root().join("tests/interop/backend.py");
        let mut full = vec!["python3", script.to_str().expect("utf-8 path")];
        full.extend_from_slice(args);
        let mut p = Proc::spawn(&mut self.exec(&full));
        assert_eq!(p.read_line().trim(), "ready");
        p
    }

    /// weft-proxy inside, as UID 1337 (which the capture rules exclude), with its health port
    /// on 127.0.0.1:15020, once it is ready.
    pub fn sidecar(&self, node_id: &str, args: &[&str]) -> Proc {
        self.sidecar_of(&bin("weft-proxy"), node_id, args)
    }

    /// [`Netns::sidecar`] with the weft-proxy binary at `proxy` (a bench's release build).
    pub fn sidecar_of(&self, proxy: &std::path::Path, node_id: &str, args: &[&str]) -> Proc {
        let mut full = vec![
            "setpriv",
            "--reuid",
            "1337",
            "--regid",
            "1337",
            "--clear-groups",
            proxy.to_str().expect("utf-8 path"),
            "--node-id",
            node_id,
            "--health-addr",
            "127.0.0.1:15020",
        ];
        full.extend_from_slice(args);
        let p = Proc::spawn(&mut self.exec(&full));
        let ready = || {
            self.exec(&[
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "http://127.0.0.1:15020/ready",
            ])
            .output()
            .is_ok_and(|o| o.stdout == b"200")
        };
        crate::wait_until(
            Duration::from_secs(20),
            "weft-proxy never became ready",
            ready,
        );
        p
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// Two pods of namespace `shop`, each labelled as running weft's sidecar: `api-0` (service
/// account `api`, 10.2.0.5, serving HTTP on 8080 behind Service `api`, 10.96.0.40:80) and its
/// client `web-0` (service account `web`, 10.2.0.9): the mesh of the mTLS tests and bench.
pub const TWO_PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: api-0, namespace: shop, labels: {app: api, security.weft.io/tlsMode: weft}}
spec: {serviceAccountName: api, containers: [{name: api, ports: [{name: http, containerPort: 8080}]}]}
status: {podIP: 10.2.0.5}
---
apiVersion: v1
kind: Pod
metadata: {name: web-0, namespace: shop, labels: {app: web, security.weft.io/tlsMode: weft}}
spec: {serviceAccountName: web, containers: [{name: web}]}
status: {podIP: 10.2.0.9}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec: {clusterIP: 10.96.0.40, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: api-a, namespace: shop, labels: {kubernetes.io/service-name: api}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.2.0.5], targetRef: {kind: Pod, name: api-0, namespace: shop}}]
"#;

/// A veth pair between `a` and `b`, up, with `a_addrs` and `b_addrs` (CIDR) on each end;
/// `tag` keeps the interface names of tests running at once apart. Returns the interface
/// names (`a`'s, `b`'s).
pub fn veth(
    a: &Netns,
    a_addrs: &[&str],
    b: &Netns,
    b_addrs: &[&str],
    tag: &str,
) -> (String, String) {
    let end_a = format!("va{tag}{}", std::process::id() % 100_000);
    let end_b = format!("vb{tag}{}", std::process::id() % 100_000);
    run(&[
        "ip", "link", "add", &end_a, "netns", &a.0, "type", "veth", "peer", "name", &end_b,
        "netns", &b.0,
    ]);
    for (ns, end, addrs) in [(a, &end_a, a_addrs), (b, &end_b, b_addrs)] {
        for addr in addrs {
            if addr.contains(':') {
                ns.run(&["ip", "-6", "addr", "add", addr, "dev", end, "nodad"]);
            } else {
                ns.run(&["ip", "addr", "add", addr, "dev", end]);
            }
        }
        ns.run(&["ip", "link", "set", end, "up"]);
    }
    (end_a, end_b)
}
