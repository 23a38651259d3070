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

    /// Inbound ports the sidecar never sees, as Istio's `excludeInboundPorts`: call before
    /// [`Netns::capture`], whose redirect would otherwise come first.
    pub fn exclude_inbound(&self, ports: &[u16]) {
        for tables in ["iptables", "ip6tables"] {
            for port in ports {
                let port = port.to_string();
                self.run(&[
                    tables,
                    "-t",
                    "nat",
                    "-A",
                    "PREROUTING",
                    "-p",
                    "tcp",
                    "--dport",
                    &port,
                    "-j",
                    "RETURN",
                ]);
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
        self.sidecar_logging(proxy, node_id, args, None)
    }

    /// [`Netns::sidecar_of`], its log written to `log` when given.
    pub fn sidecar_logging(
        &self,
        proxy: &std::path::Path,
        node_id: &str,
        args: &[&str],
        log: Option<std::fs::File>,
    ) -> Proc {
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
        let stderr = log.map_or_else(std::process::Stdio::inherit, std::process::Stdio::from);
        let p = Proc::spawn_logging(&mut self.exec(&full), stderr);
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

/// curl inside `ns` (as the proxy's UID when `as_proxy`, past the capture rules): (exit
/// success, body).
pub fn curl(ns: &Netns, as_proxy: bool, url: &str) -> (bool, String) {
    curl_with(ns, as_proxy, &[url])
}

/// [`curl`] with more arguments (the URL among them).
pub fn curl_with(ns: &Netns, as_proxy: bool, curl_args: &[&str]) -> (bool, String) {
    let mut args = vec![];
    if as_proxy {
        // As UID 1337, the capture rules let it past the client's own sidecar.
        args.extend([
            "setpriv",
            "--reuid",
            "1337",
            "--regid",
            "1337",
            "--clear-groups",
        ]);
    }
    args.extend(["curl", "-sS", "--max-time", "5"]);
    args.extend_from_slice(curl_args);
    let out = ns.exec(&args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The sidecar's metrics (health port 15020).
pub fn metrics(ns: &Netns) -> String {
    curl(ns, false, "http://127.0.0.1:15020/metrics").1
}

/// Two pods (`api-0` serving on 10.2.0.5:8080, `web-0` its client at 10.2.0.9), each with
/// capture rules and a sidecar certified by `weft serve` (in the server pod); `proxy_args` go to
/// both sidecars.
pub struct Pods {
    /// `api-0`'s namespace.
    pub server: Netns,
    /// `web-0`'s namespace.
    pub client: Netns,
    /// The client's end of the link between them.
    pub client_if: String,
    /// Registry, CA and logs.
    pub dir: tempfile::TempDir,
    _procs: Vec<Proc>,
}

impl Pods {
    /// Starts both pods; `tag` keeps the names of tests running at once apart. The server's
    /// sidecar logs to [`Pods::server_log`].
    pub fn start(tag: &str, proxy_args: &[&str]) -> Self {
        let server = Netns::new(&format!("{tag}-api"));
        let client = Netns::new(&format!("{tag}-web"));
        let (server_if, client_if) =
            veth(&server, &["10.2.0.5/24"], &client, &["10.2.0.9/24"], tag);
        // The control plane shares the server's namespace (a pod of its own in a cluster): its
        // port is not the workload's, so the workload's STRICT mode and policies do not cover it.
        server.exclude_inbound(&[15010]);
        for (ns, end) in [(&server, &server_if), (&client, &client_if)] {
            ns.run(&["ip", "route", "add", "10.96.0.0/16", "dev", end]);
            ns.capture();
        }
        let dir = tempfile::tempdir().unwrap();
        let registry = dir.path().join("registry");
        let ca = dir.path().join("ca");
        std::fs::create_dir(&registry).unwrap();
        std::fs::write(registry.join("mesh.yaml"), TWO_PODS).unwrap();
        let api_token = crate::token_file(&bin("weft"), &ca, "api", dir.path());
        let web_token = crate::token_file(&bin("weft"), &ca, "web", dir.path());
        let app = server.backend(&["http", "10.2.0.5", "8080", "api-app"]);
        let weft = bin("weft");
        let cp = Proc::spawn(
            server
                .exec(&[weft.to_str().unwrap(), "serve", "--registry"])
                .arg(&registry)
                .args(["--xds-addr", "0.0.0.0:15010", "--ca-dir"])
                .arg(&ca),
        );
        let mut args = vec![
            "--xds-addr",
            "127.0.0.1:15010",
            "--ca-token-file",
            &api_token,
        ];
        args.extend_from_slice(proxy_args);
        let log = std::fs::File::create(dir.path().join("api-sidecar.log")).unwrap();
        let api = server.sidecar_logging(&bin("weft-proxy"), "api-0.shop", &args, Some(log));
        // The client's sidecar reaches the control plane as a pod reaches any address outside
        // the mesh.
        let mut args = vec![
            "--xds-addr",
            "10.2.0.5:15010",
            "--ca-token-file",
            &web_token,
        ];
        args.extend_from_slice(proxy_args);
        let web = client.sidecar("web-0.shop", &args);
        Self {
            server,
            client,
            client_if,
            dir,
            _procs: vec![app, cp, api, web],
        }
    }

    /// The registry directory `weft serve` watches.
    pub fn registry(&self) -> std::path::PathBuf {
        self.dir.path().join("registry")
    }

    /// What the server's sidecar has logged so far.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("api-sidecar.log")).unwrap_or_default()
    }
}
