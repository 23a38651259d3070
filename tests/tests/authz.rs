//! AuthorizationPolicy between two sidecars in their own network namespaces, through the real
//! `weft serve` (as registry and CA) and weft-proxy: a request is allowed by the caller's
//! SPIFFE ID, method and path, refused with 403 otherwise (a DENY rule first); a TCP
//! connection is let in by the caller's ID and port, closed otherwise; plaintext callers have
//! no ID; each refusal is counted and logged with the peer's ID and the rule; and a policy
//! changed while connections stay open applies to their next request.

// Synchronous tests of real processes: they wait on the wall clock, blocking their thread.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::time::Duration;

use weft_e2e::netns::{Pods, TWO_PODS, curl_with, metrics};
use weft_e2e::wait_until;

/// Service `db` (10.96.0.41:9000, opaque TCP) on `api-0`'s port 9000.
const DB: &str = r#"
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec: {clusterIP: 10.96.0.41, ports: [{name: tcp-db, port: 9000}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: db-a, namespace: shop, labels: {kubernetes.io/service-name: db}}
addressType: IPv4
ports: [{name: tcp-db, port: 9000}]
endpoints: [{addresses: [10.2.0.5], targetRef: {kind: Pod, name: api-0, namespace: shop}}]
"#;

/// `web` may GET `/public/*` and open port 9000.
const ALLOW: &str = r#"
---
apiVersion: weft.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: api-readers, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  rules:
    - {principals: [ns/shop/sa/web], methods: [GET], paths: ["/public/*"]}
    - {principals: [ns/shop/sa/web], ports: [9000]}
"#;

/// Nobody may reach `/public/secret*` on port 8080. (Without the port, the rule would refuse
/// every TCP connection: a DENY rule keeps what a connection can match, as in Istio.)
const DENY: &str = r#"
---
apiVersion: weft.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: no-secrets, namespace: shop}
spec:
  action: DENY
  rules: [{ports: [8080], paths: ["/public/secret*"]}]
"#;

/// Nobody may open port 9000.
const NO_DB: &str = r#"
---
apiVersion: weft.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: no-db, namespace: shop}
spec:
  action: DENY
  rules: [{ports: [9000]}]
"#;

/// (status, body) of a request from the client pod: through its sidecar (mTLS, as `web`), or
/// `as_proxy` straight to the pod in plaintext.
fn request(pods: &Pods, as_proxy: bool, method: &str, url: &str) -> (u16, String) {
    let (ok, out) = curl_with(
        &pods.client,
        as_proxy,
        &["--path-as-is", "-X", method, "-w", "\n%{http_code}", url],
    );
    assert!(ok, "curl {method} {url} failed: {out}");
    let (body, code) = out.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_string())
}

/// The first line a TCP client reads from `ip`:`port` within 2 s: the banner, or nothing if
/// the connection is closed first.
fn tcp_banner(pods: &Pods, as_proxy: bool, ip: &str, port: u16) -> String {
    let script = format!("exec 3<>/dev/tcp/{ip}/{port} && read -t 2 -r line <&3; echo \"$line\"");
    let mut args = vec![];
    if as_proxy {
        args.extend([
            "setpriv",
            "--reuid",
            "1337",
            "--regid",
            "1337",
            "--clear-groups",
        ]);
    }
    args.extend(["bash", "-c", &script]);
    let out = pods.client.exec(&args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn counted(pods: &Pods, protocol: &str, decision: &str) -> u64 {
    let line = format!(
        "weft_proxy_authorization_decisions_total{{protocol=\"{protocol}\",decision=\"{decision}\"}} "
    );
    metrics(&pods.server)
        .lines()
        .find_map(|l| l.strip_prefix(line.as_str()))
        .map_or(0, |v| v.parse().unwrap())
}

#[test]
fn policies_allow_and_refuse_by_identity_method_path_and_port() {
    let pods = Pods::start("z", &[]);
    let _db = pods
        .server
        .backend(&["banner", "10.2.0.5", "9000", "db-banner"]);
    let registry = pods.registry().join("mesh.yaml");
    std::fs::write(&registry, format!("{TWO_PODS}{DB}{ALLOW}{DENY}")).unwrap();
    let api = "http://10.96.0.40";
    wait_until(Duration::from_secs(10), "the policy never applied", || {
        request(&pods, false, "GET", &format!("{api}/private")).0 == 403
    });

    // Through the sidecars, as `web`.
    let cases = [
        ("GET", "/public/items", 200, "api-app"),
        ("GET", "/private", 403, "RBAC: access denied"),
        ("DELETE", "/public/items", 403, "RBAC: access denied"),
        // The DENY rule comes first, whatever the ALLOW rules say.
        ("GET", "/public/secret-plans", 403, "RBAC: access denied"),
        // Judged as routed: dot segments removed first.
        ("GET", "/public/../private", 403, "RBAC: access denied"),
    ];
    for (method, path, status, body) in cases {
        let got = request(&pods, false, method, &format!("{api}{path}"));
        assert_eq!(got, (status, body.to_string()), "{method} {path}");
    }
    // Plaintext (PERMISSIVE lets it in) carries no identity: nothing allows it.
    let got = request(&pods, true, "GET", "http://10.2.0.5:8080/public/items");
    assert_eq!(got.0, 403, "{got:?}");

    // TCP: `web` over mTLS opens port 9000; plaintext is closed before the app sees it.
    assert_eq!(tcp_banner(&pods, false, "10.96.0.41", 9000), "db-banner");
    assert_eq!(tcp_banner(&pods, true, "10.2.0.5", 9000), "");
    assert_eq!(counted(&pods, "tcp", "allowed"), 1);
    assert_eq!(counted(&pods, "tcp", "denied"), 1);
    assert!(counted(&pods, "http", "allowed") >= 1);
    assert!(counted(&pods, "http", "denied") >= 5);

    // Each refusal is logged with who asked and which rule refused.
    let log = pods.server_log();
    let denied = |policy: &str, peer: &str| {
        log.lines().any(|l| {
            l.contains("denied by authorization policy")
                && l.contains(&format!("peer_id=\"{peer}\""))
                && l.contains(&format!("policy=\"{policy}\""))
        })
    };
    let web = "spiffe://cluster.local/ns/shop/sa/web";
    assert!(denied("shop/no-secrets[0]", web), "{log}");
    assert!(denied("none", web), "{log}");
    assert!(denied("none", "none"), "{log}");

    // Without the ALLOW policy, `/private` is allowed, on the connections the client's sidecar
    // keeps open to the server's (the policy is read per request, not per connection); the
    // DENY rule still holds.
    std::fs::write(&registry, format!("{TWO_PODS}{DB}{DENY}")).unwrap();
    let mtls_accepted = || {
        metrics(&pods.server)
            .lines()
            .find(|l| l.starts_with(r#"weft_proxy_inbound_connections_total{security="mtls""#))
            .map(str::to_string)
    };
    let mtls_before = mtls_accepted();
    wait_until(Duration::from_secs(10), "the ALLOW policy stayed", || {
        request(&pods, false, "GET", &format!("{api}/private")).0 == 200
    });
    assert_eq!(
        mtls_before,
        mtls_accepted(),
        "the policy change needed a new connection"
    );
    let got = request(&pods, false, "GET", &format!("{api}/public/secret"));
    assert_eq!(got.0, 403);

    // An open TCP connection lasts as long as policy allows it: a DENY written while it is
    // open closes it (its client reads the end, not a timeout), counted and logged.
    let script = "exec 3<>/dev/tcp/10.96.0.41/9000 && read -t 5 -r line <&3 && echo \"$line\" \
                  && if read -t 20 -r more <&3; then echo data; \
                  elif [ $? -gt 128 ]; then echo timeout; else echo closed; fi";
    let mut held = pods
        .client
        .exec(&["bash", "-c", script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(held.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "db-banner");
    let denied_before = counted(&pods, "tcp", "denied");
    std::fs::write(&registry, format!("{TWO_PODS}{DB}{DENY}{NO_DB}")).unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let _ = held.wait();
    assert_eq!(rest.trim(), "closed");
    assert_eq!(counted(&pods, "tcp", "denied"), denied_before + 1);
    assert!(
        pods.server_log().lines().any(|l| l
            .contains("open connection denied by a changed authorization policy")
            && l.contains(r#"policy="shop/no-db[0]""#)),
        "{}",
        pods.server_log()
    );
}
