//! The mesh CA as a sidecar meets it: `CertificateService/Sign` on the xDS port of a running
//! control plane, with a workload token from `weft token create`, and every way of asking
//! wrongly refused. Also the CA's start-up through the real binary: a corrupt root stops it with
//! the file named.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use tonic::Code;
use weft_control_plane::ca::{self, Identity, token};
use weft_control_plane::server::{self, CaConfig, Source};
use weft_proto::weft::ca::v1::SignRequest;
use weft_proto::weft::ca::v1::certificate_service_client::CertificateServiceClient;

struct Harness {
    cp: server::Running,
    ca_dir: tempfile::TempDir,
    _registry: tempfile::TempDir,
}

async fn start() -> Harness {
    let registry = tempfile::tempdir().unwrap();
    let ca_dir = tempfile::tempdir().unwrap();
    let cp = server::start(server::Config {
        source: Source::Files(registry.path().to_path_buf()),
        xds_addr: "127.0.0.1:0".parse().unwrap(),
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        trust_domain: "example.org".into(),
        debounce: Default::default(),
        xds_tls: None,
        ca: CaConfig::in_dir(ca_dir.path().to_path_buf()),
    })
    .await
    .unwrap();
    Harness {
        cp,
        ca_dir,
        _registry: registry,
    }
}

/// A token as `weft token create` would print it, from the CA in `dir`.
fn token_from(dir: &Path, id: &Identity, audience: &str, ttl: Duration) -> String {
    let authority = ca::Authority::load(
        &ca::Source::Dir(dir.to_path_buf()),
        None,
        "unused",
        ca::Lifetimes::default(),
    )
    .unwrap();
    token::issue(authority.key_pkcs8(), id, audience, ttl).unwrap()
}

/// A CSR that asks for `san` (which the CA must ignore).
fn csr(san: &str) -> (KeyPair, String) {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let params = CertificateParams::new(vec![san.to_string()]).unwrap();
    let pem = params.serialize_request(&key).unwrap().pem().unwrap();
    (key, pem)
}

async fn sign(
    h: &Harness,
    bearer: Option<&str>,
    csr: &str,
    validity_seconds: i64,
) -> Result<weft_proto::weft::ca::v1::SignResponse, tonic::Status> {
    let mut client = CertificateServiceClient::connect(format!("http://{}", h.cp.xds_addr))
        .await
        .unwrap();
    let mut req = tonic::Request::new(SignRequest {
        csr: csr.into(),
        validity_seconds,
    });
    if let Some(b) = bearer {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {b}").parse().unwrap());
    }
    client.sign(req).await.map(tonic::Response::into_inner)
}

fn uri_sans(pem: &str) -> Vec<String> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    let cert = p.parse_x509().unwrap();
    cert.subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect()
}

#[tokio::test]
async fn a_token_gets_a_certificate_for_its_identity_whatever_the_csr_asks() {
    let h = start().await;
    let id = Identity::new("shop", "web").unwrap();
    let token = token_from(
        h.ca_dir.path(),
        &id,
        token::AUDIENCE,
        Duration::from_secs(60),
    );
    let (_, csr) = csr("spiffe://example.org/ns/kube-system/sa/admin");
    let resp = sign(&h, Some(&token), &csr, 5).await.unwrap();
    assert_eq!(resp.cert_chain.len(), 1);
    assert_eq!(resp.trust_bundle.len(), 1);
    assert_eq!(
        uri_sans(&resp.cert_chain[0]),
        ["URI(spiffe://example.org/ns/shop/sa/web)"]
    );
    let (_, p) = x509_parser::pem::parse_x509_pem(resp.cert_chain[0].as_bytes()).unwrap();
    let leaf = p.parse_x509().unwrap();
    let v = leaf.validity();
    assert_eq!(
        (v.not_after.to_datetime() - v.not_before.to_datetime()).whole_seconds(),
        5 + 60,
        "5 s asked, valid from a minute back"
    );
}

#[tokio::test]
async fn every_wrong_credential_and_csr_is_refused_and_counted() {
    let h = start().await;
    let id = Identity::new("shop", "web").unwrap();
    let (_, good_csr) = csr("x");
    let minute = Duration::from_secs(60);
    let other_ca = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Option<String>, &str, Code)> = vec![
        ("no token", None, &good_csr, Code::Unauthenticated),
        (
            "another audience",
            Some(token_from(h.ca_dir.path(), &id, "kubernetes", minute)),
            &good_csr,
            Code::Unauthenticated,
        ),
        (
            "expired",
            Some(token_from(
                h.ca_dir.path(),
                &id,
                token::AUDIENCE,
                Duration::ZERO,
            )),
            &good_csr,
            Code::Unauthenticated,
        ),
        (
            "another CA's token",
            Some(token_from(other_ca.path(), &id, token::AUDIENCE, minute)),
            &good_csr,
            Code::Unauthenticated,
        ),
        (
            "garbage token",
            Some("a.b.c".into()),
            &good_csr,
            Code::Unauthenticated,
        ),
        (
            "garbage CSR",
            Some(token_from(h.ca_dir.path(), &id, token::AUDIENCE, minute)),
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            Code::InvalidArgument,
        ),
    ];
    for (what, bearer, csr, code) in &cases {
        let err = sign(&h, bearer.as_deref(), csr, 0).await.unwrap_err();
        assert_eq!(err.code(), *code, "{what}: {err:?}");
    }
    let metrics = tokio::task::spawn_blocking({
        let admin = h.cp.admin_addr;
        move || weft_e2e::http_get(admin, "/metrics").unwrap().1
    })
    .await
    .unwrap();
    assert!(
        metrics.contains("weft_ca_requests_total{result=\"unauthenticated\"} 5"),
        "{metrics}"
    );
    assert!(
        metrics.contains("weft_ca_requests_total{result=\"bad_csr\"} 1"),
        "{metrics}"
    );
}

/// A token proven once is remembered (a sidecar shows the same one at every renewal), but
/// never past its own expiry.
#[tokio::test]
async fn a_remembered_token_still_expires() {
    let h = start().await;
    let id = Identity::new("shop", "web").unwrap();
    let token = token_from(
        h.ca_dir.path(),
        &id,
        token::AUDIENCE,
        Duration::from_secs(2),
    );
    let (_, csr) = csr("x");
    for _ in 0..3 {
        sign(&h, Some(&token), &csr, 0).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let err = sign(&h, Some(&token), &csr, 0).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
}

/// `weft token create` through the binary prints a token the CA in the same directory accepts;
/// `weft serve` on a corrupt root exits at once, naming the file.
#[tokio::test]
async fn the_cli_issues_tokens_and_a_corrupt_root_stops_the_control_plane() {
    let h = start().await;
    let out = Command::new(weft_e2e::bin("weft"))
        .args([
            "token",
            "create",
            "--namespace",
            "shop",
            "--service-account",
            "api",
        ])
        .arg("--ca-dir")
        .arg(h.ca_dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let (_, csr) = csr("x");
    let resp = sign(&h, Some(token.trim()), &csr, 0).await.unwrap();
    assert_eq!(
        uri_sans(&resp.cert_chain[0]),
        ["URI(spiffe://example.org/ns/shop/sa/api)"]
    );

    let bad = tempfile::tempdir().unwrap();
    std::fs::write(
        bad.path().join(ca::authority::ROOT_FILE),
        "not a certificate",
    )
    .unwrap();
    let registry = tempfile::tempdir().unwrap();
    let out = Command::new(weft_e2e::bin("weft"))
        .arg("serve")
        .arg("--registry")
        .arg(registry.path())
        .args(["--xds-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
        .arg("--ca-dir")
        .arg(bad.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("ca.pem") && stderr.contains("no CERTIFICATE"),
        "{stderr}"
    );
}

/// In Kubernetes the root lives in a Secret, created by the first replica and read by every
/// other and by every restart; a caller is who TokenReview says its service-account token is,
/// for audience `weft-ca` only.
mod kubernetes {
    use weft_e2e::fake_kube::FakeApi;

    use super::*;

    /// A control plane on the fake API server at `url`, its CA in Secret weft-system/weft-ca.
    async fn start(url: &str) -> Harness {
        let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
        let cp = server::start(server::Config {
            source: Source::Kubernetes(client),
            xds_addr: "127.0.0.1:0".parse().unwrap(),
            admin_addr: "127.0.0.1:0".parse().unwrap(),
            trust_domain: "example.org".into(),
            debounce: Default::default(),
            xds_tls: None,
            ca: CaConfig {
                source: ca::Source::Secret {
                    namespace: "weft-system".into(),
                    name: "weft-ca".into(),
                },
                extra_roots: None,
                lifetimes: ca::Lifetimes::default(),
            },
        })
        .await
        .unwrap();
        Harness {
            cp,
            ca_dir: tempfile::tempdir().unwrap(),
            _registry: tempfile::tempdir().unwrap(),
        }
    }

    #[tokio::test]
    async fn the_root_is_a_secret_and_callers_are_who_tokenreview_says() {
        let api = FakeApi::default();
        api.token("web-token", "system:serviceaccount:shop:web", &["weft-ca"]);
        api.token(
            "api-server-token",
            "system:serviceaccount:shop:web",
            &["https://kubernetes.default.svc"],
        );
        api.token("node-token", "system:node:n1", &["weft-ca"]);
        let url = api.serve().await;
        let first = start(&url).await;
        assert!(
            api.secret("weft-system", "weft-ca").is_some(),
            "no Secret made"
        );
        let (_, csr) = csr("spiffe://example.org/ns/kube-system/sa/admin");
        let resp = sign(&first, Some("web-token"), &csr, 0).await.unwrap();
        assert_eq!(
            uri_sans(&resp.cert_chain[0]),
            ["URI(spiffe://example.org/ns/shop/sa/web)"]
        );
        for bad in ["api-server-token", "node-token", "no-such-token"] {
            let err = sign(&first, Some(bad), &csr, 0).await.unwrap_err();
            assert_eq!(err.code(), Code::Unauthenticated, "{bad}: {err:?}");
        }
        // A restart, and a second replica, sign with the same root.
        let second = start(&url).await;
        let again = sign(&second, Some("web-token"), &csr, 0).await.unwrap();
        assert_eq!(again.trust_bundle, resp.trust_bundle);
    }

    /// Every namespace gets the roots in ConfigMap `weft-ca-root-cert`, as Istio's
    /// `istio-ca-root-cert`: a new namespace at once, and a map deleted or edited is written
    /// back; a terminating namespace is left alone.
    #[tokio::test]
    async fn every_namespace_gets_the_roots_in_a_config_map_kept_as_written() {
        use weft_control_plane::ca::bundle::{CONFIG_MAP, KEY};
        use weft_e2e::fake_kube::{CONFIG_MAPS, NAMESPACES};
        let api = FakeApi::default();
        let ns = |name: &str, phase: &str| {
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": name}, "status": {"phase": phase}})
        };
        api.apply(NAMESPACES, ns("shop", "Active"));
        api.apply(NAMESPACES, ns("billing", "Active"));
        let url = api.serve().await;
        let _cp = start(&url).await;
        let secret = api.secret("weft-system", "weft-ca").expect("a root Secret");
        let root =
            String::from_utf8(base64_decode(secret["data"]["ca.pem"].as_str().unwrap())).unwrap();
        let held = |namespace: &str| {
            api.object(CONFIG_MAPS, namespace, CONFIG_MAP)
                .and_then(|cm| cm["data"][KEY].as_str().map(str::to_string))
        };
        async fn wait(what: &str, check: impl Fn() -> bool) {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while !check() {
                assert!(tokio::time::Instant::now() < deadline, "{what}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        wait("no maps", || {
            held("shop").is_some() && held("billing").is_some()
        })
        .await;
        let bundle = held("shop").unwrap();
        assert!(
            bundle.starts_with("-----BEGIN CERTIFICATE-----"),
            "{bundle}"
        );
        assert!(
            !bundle.contains("PRIVATE KEY"),
            "the key must never leave the Secret"
        );
        assert!(
            root.contains(bundle.trim_end()),
            "the map holds the CA's root"
        );

        api.apply(NAMESPACES, ns("new", "Active"));
        wait("a new namespace got none", || {
            held("new").as_deref() == Some(&bundle)
        })
        .await;
        let map = api.object(CONFIG_MAPS, "shop", CONFIG_MAP).unwrap();
        api.delete(CONFIG_MAPS, map.clone());
        let written = || held("shop").as_deref() == Some(&bundle);
        wait("a deleted map was not written again", written).await;
        let mut edited = map;
        edited["data"][KEY] = serde_json::json!("not a certificate");
        api.apply(CONFIG_MAPS, edited);
        wait("an edited map was not put back", written).await;
        api.apply(NAMESPACES, ns("leaving", "Terminating"));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            held("leaving"),
            None,
            "a terminating namespace was written to"
        );
        // Deleted while the watch was lost (no event): the list after it finds the map missing.
        let map = api.object(CONFIG_MAPS, "billing", CONFIG_MAP).unwrap();
        api.delete_silently(CONFIG_MAPS, &map);
        api.expire(CONFIG_MAPS);
        let rewritten = || held("billing").as_deref() == Some(&bundle);
        wait("a map deleted unseen was not written again", rewritten).await;
        // Another weft's roots (a replica of a rollout that changes them) are not fought over.
        let mut other = api.object(CONFIG_MAPS, "shop", CONFIG_MAP).unwrap();
        other["data"][KEY] = serde_json::json!("ANOTHER BUNDLE\n");
        other["metadata"]["managedFields"] = serde_json::json!([{"manager": "weft",
            "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {}}}]);
        api.apply(CONFIG_MAPS, other);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(held("shop").as_deref(), Some("ANOTHER BUNDLE\n"));
    }

    /// Without permission to write ConfigMaps, the control plane says so and signs as before.
    #[tokio::test]
    async fn a_control_plane_that_may_not_write_config_maps_still_signs() {
        use weft_e2e::fake_kube::{CONFIG_MAPS, NAMESPACES};
        let api = FakeApi::default();
        api.token("web-token", "system:serviceaccount:shop:web", &["weft-ca"]);
        api.apply(
            NAMESPACES,
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
        );
        api.refuse(CONFIG_MAPS, Some(403));
        let url = api.serve().await;
        let cp = start(&url).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (_, csr) = csr("spiffe://example.org/ns/shop/sa/web");
        let resp = sign(&cp, Some("web-token"), &csr, 0).await.unwrap();
        assert_eq!(
            uri_sans(&resp.cert_chain[0]),
            ["URI(spiffe://example.org/ns/shop/sa/web)"]
        );
        assert!(
            api.object(CONFIG_MAPS, "shop", "weft-ca-root-cert")
                .is_none()
        );
    }

    fn base64_decode(s: &str) -> Vec<u8> {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.decode(s).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn replicas_starting_together_share_one_root() {
        let api = FakeApi::default();
        let url = api.serve().await;
        let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
        let loads = (0..6).map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let secret = ("weft-system", "together");
                let lifetimes = ca::Lifetimes::default();
                ca::Authority::load_secret(&client, secret, None, "td", lifetimes)
                    .await
                    .unwrap()
                    .trust_bundle()
                    .to_vec()
            })
        });
        let bundles: Vec<Vec<String>> = futures::future::join_all(loads)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert!(bundles.iter().all(|b| *b == bundles[0]), "two roots");
        let made = api.requests("/api/v1/namespaces/weft-system/secrets");
        assert!(made >= 1, "never created");
    }
}
