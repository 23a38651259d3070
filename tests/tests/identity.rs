//! A sidecar's workload identity from the real `weft` CA: its certificate at start (not ready
//! before), shown at `/certs` and in metrics, renewed at half-life, and renewal retried while the
//! CA is away, without the proxy losing readiness; and both over TLS for a sidecar given the
//! mesh root, which no impostor certificate passes.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use weft_e2e::{ControlPlane, Proc, Sidecar, bin, free_port, http_get};

/// A token for `shop/web` from the CA the test control planes share.
fn token(dir: &Path) -> String {
    let ca = std::env::temp_dir().join("weft-e2e-ca");
    weft_e2e::token_file(&bin("weft"), &ca, "web", dir)
}

fn certs(admin: SocketAddr) -> serde_json::Value {
    serde_json::from_str(&http_get(admin, "/certs").unwrap().1).unwrap()
}

fn until(what: &str, secs: u64, ok: impl FnMut() -> bool) {
    weft_e2e::wait_until(Duration::from_secs(secs), &format!("timed out: {what}"), ok);
}

/// `weft-proxy` for `shop/web` against `xds`, with its admin and health ports and `extra`: for a
/// sidecar a test watches while it is not ready ([`Sidecar`] waits until it is).
fn unready_sidecar(
    xds: SocketAddr,
    admin: SocketAddr,
    health: SocketAddr,
    extra: &[&str],
) -> Command {
    let mut cmd = Command::new(bin("weft-proxy"));
    cmd.args(["--xds-addr", &xds.to_string(), "--node-id", "web-0.shop"])
        .args(["--admin-addr", &admin.to_string()])
        .args(["--health-addr", &health.to_string()])
        .arg("--outbound-capture-addr")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--inbound-capture-addr")
        .arg(format!("127.0.0.1:{}", free_port()))
        .args(extra);
    cmd
}

/// Runs `cmd` to its end, which must be a success; its standard output.
fn ran(cmd: &mut Command) -> String {
    let out = cmd.stdin(std::process::Stdio::null()).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?}: {said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    said
}

fn registry() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mesh.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web-0, namespace: shop}\nspec: {serviceAccountName: web, containers: [{name: web}]}\nstatus: {podIP: 127.0.0.9}\n",
    )
    .unwrap();
    dir
}

#[test]
fn a_sidecar_gets_its_identity_at_start_and_renews_it_at_half_life() {
    let reg = registry();
    let cp = ControlPlane::start(reg.path());
    let token = token(reg.path());
    let sidecar = Sidecar::start_with(
        cp.xds,
        "web-0.shop",
        &["--ca-token-file", &token, "--cert-ttl-secs", "4"],
    );
    let first = certs(sidecar.admin);
    assert_eq!(
        first["identity"], "spiffe://cluster.local/ns/shop/sa/web",
        "{first}"
    );
    assert_eq!(
        first["chain"][0]["sans"][0],
        "spiffe://cluster.local/ns/shop/sa/web"
    );
    assert_eq!(first["trust_bundle"].as_array().unwrap().len(), 1);
    let serial = first["chain"][0]["serial"].clone();
    let metrics = http_get(sidecar.health, "/metrics").unwrap().1;
    let expiry: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("weft_proxy_identity_cert_expiry_seconds "))
        .unwrap_or_else(|| panic!("{metrics}"))
        .parse()
        .unwrap();
    assert!(expiry > 0.0 && expiry <= 4.0, "{expiry}");
    // Half-life of 4 s: a new certificate within a few seconds.
    until("a renewed certificate", 8, || {
        certs(sidecar.admin)["chain"][0]["serial"] != serial
    });
    let (status, _) = http_get(sidecar.health, "/ready").unwrap();
    assert_eq!(status, 200);
}

#[test]
fn without_its_ca_a_sidecar_waits_unready_then_retries_renewal_while_ready() {
    let reg = registry();
    let token = token(reg.path());
    let xds: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let health: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _proxy = Proc::spawn(&mut unready_sidecar(
        xds,
        admin,
        health,
        &["--ca-token-file", &token, "--cert-ttl-secs", "6"],
    ));
    until("the health port", 20, || http_get(health, "/ready").is_ok());
    let (status, body) = http_get(health, "/ready").unwrap();
    assert_eq!(
        (status, body.as_str()),
        (503, "waiting for a workload certificate\n")
    );
    let serve = || {
        Proc::spawn(
            Command::new(bin("weft"))
                .arg("serve")
                .arg("--registry")
                .arg(reg.path())
                .args(["--xds-addr", &xds.to_string()])
                .args(["--admin-addr", &format!("127.0.0.1:{}", free_port())])
                .env("WEFT_CA_DIR", std::env::temp_dir().join("weft-e2e-ca")),
        )
    };
    let cp = serve();
    until("ready once the CA answers", 20, || {
        http_get(health, "/ready").is_ok_and(|(s, _)| s == 200)
    });
    let serial = certs(admin)["chain"][0]["serial"].clone();
    drop(cp);
    // Renewal falls due at 3 s and fails: said in metrics, and the proxy stays ready.
    until("a failed renewal", 10, || {
        http_get(health, "/metrics")
            .unwrap()
            .1
            .contains("weft_proxy_identity_requests_total{result=\"failed\"}")
    });
    assert_eq!(http_get(health, "/ready").unwrap().0, 200);
    let _cp = serve();
    until("a renewed certificate once the CA is back", 40, || {
        certs(admin)["chain"][0]["serial"] != serial
    });
}

/// The mesh root, as an operator hands it to sidecars: `weft ca root` of the CA the test
/// control planes share, its certificate without its key.
fn mesh_root(dir: &Path) -> std::path::PathBuf {
    let pem = ran(Command::new(bin("weft"))
        .args(["ca", "root", "--ca-dir"])
        .arg(std::env::temp_dir().join("weft-e2e-ca")));
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    assert!(!pem.contains("PRIVATE KEY"), "{pem}");
    let path = dir.join("root.pem");
    std::fs::write(&path, pem).unwrap();
    path
}

#[test]
fn a_sidecar_given_the_mesh_root_gets_config_and_identity_over_tls_and_no_impostor_gets_its_token()
{
    let reg = registry();
    let tls: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cp = ControlPlane::start_with(reg.path(), &["--xds-tls-addr", &tls.to_string()]);
    let token = token(reg.path());
    let root = mesh_root(reg.path());
    let root_arg = root.to_str().unwrap();

    // A real TLS client sees the certificate chain to the mesh root, for the name asked, with
    // HTTP/2 offered.
    let said = ran(Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &tls.to_string(),
            "-servername",
            "localhost",
        ])
        .args([
            "-CAfile",
            root_arg,
            "-verify_return_error",
            "-verify_hostname",
            "localhost",
        ])
        .args(["-alpn", "h2", "-tls1_3"]));
    assert!(said.contains("Verify return code: 0 (ok)"), "{said}");
    assert!(said.contains("ALPN protocol: h2"), "{said}");

    // The sidecar gets both its certificate and its config over the TLS port.
    let sidecar = Sidecar::start_with(
        tls,
        "web-0.shop",
        &["--xds-root-cert", root_arg, "--ca-token-file", &token],
    );
    assert_eq!(
        certs(sidecar.admin)["identity"],
        "spiffe://cluster.local/ns/shop/sa/web"
    );
    let metrics = http_get(cp.admin, "/metrics").unwrap().1;
    assert!(
        metrics.contains("weft_ca_requests_total{result=\"signed\"} 1"),
        "{metrics}"
    );

    // A sidecar whose root is another CA's does not take the control plane for its own: it
    // never sends its token (nothing more is signed) and never becomes ready.
    let other = reg.path().join("other.pem");
    ran(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=other", "-keyout"])
        .arg(reg.path().join("other.key"))
        .arg("-out")
        .arg(&other));
    let log = reg.path().join("impostor.log");
    let health: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _doubter = Proc::spawn_logging(
        &mut unready_sidecar(
            tls,
            admin,
            health,
            &[
                "--xds-root-cert",
                other.to_str().unwrap(),
                "--ca-token-file",
                &token,
            ],
        ),
        std::fs::File::create(&log).unwrap().into(),
    );
    until("the impostor-wary sidecar to say why", 20, || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("UnknownIssuer"))
    });
    assert_eq!(http_get(health, "/ready").unwrap().0, 503);
    let metrics = http_get(cp.admin, "/metrics").unwrap().1;
    assert!(
        metrics.contains("weft_ca_requests_total{result=\"signed\"} 1"),
        "{metrics}"
    );
}
