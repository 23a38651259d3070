//! ADS protocol tests: the real control plane in-process, a real tonic xDS client, a real registry
//! directory edited on disk.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use weft_control_plane::server::{self, Running, Source};
use weft_proto::google::rpc::Status as RpcStatus;
use weft_proto::xds::config::core::v3::Node;
use weft_proto::xds::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
};

use weft_proto::resource::{CDS, EDS, LDS, RDS};

fn service(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: ns}}\n\
spec: {{clusterIP: {ip}, ports: [{{name: http, port: 80}}]}}\n---\n\
apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
metadata: {{name: {name}-1, namespace: ns, labels: {{kubernetes.io/service-name: {name}}}}}\n\
addressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: [{{addresses: [{ip}9]}}]\n"
    )
}

struct Harness {
    dir: tempfile::TempDir,
    cp: Running,
}

impl Harness {
    /// Services a (10.0.0.1) and b (10.0.0.2), one HTTP port each.
    async fn two_services() -> Self {
        Self::start(&[
            ("a.yaml", service("a", "10.0.0.1")),
            ("b.yaml", service("b", "10.0.0.2")),
        ])
        .await
    }

    async fn start(files: &[(&str, String)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let cp = server::start(server::Config {
            source: Source::Files(dir.path().to_path_buf()),
            xds_addr: "127.0.0.1:0".parse().unwrap(),
            admin_addr: "127.0.0.1:0".parse().unwrap(),
            trust_domain: "cluster.local".into(),
            debounce: weft_control_plane::registry::Debounce {
                quiet: Duration::from_millis(20),
                max: Duration::from_secs(1),
            },
            xds_tls: None,
            ca: server::CaConfig::in_dir(tempfile::tempdir().unwrap().keep()),
        })
        .await
        .unwrap();
        let mut rx = cp.snapshots.clone();
        tokio::time::timeout(Duration::from_secs(5), rx.wait_for(Option::is_some))
            .await
            .expect("first snapshot")
            .unwrap();
        Self { dir, cp }
    }

    fn write(&self, name: &str, text: &str) {
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(tmp, self.dir.path().join(name)).unwrap();
    }

    async fn client(&self) -> AggregatedDiscoveryServiceClient<tonic::transport::Channel> {
        AggregatedDiscoveryServiceClient::connect(format!("http://{}", self.cp.xds_addr))
            .await
            .unwrap()
    }

    async fn admin(&self, path: &str) -> String {
        http_get(&format!("{}", self.cp.admin_addr), path).await
    }
}

/// A minimal HTTP/1.0 GET, to read the admin endpoint without another client dependency.
async fn http_get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

fn node(id: &str) -> Option<Node> {
    Some(Node {
        id: id.into(),
        ..Default::default()
    })
}

async fn next<T>(stream: &mut Streaming<T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("a response within 5 s")
        .expect("stream ok")
        .expect("stream open")
}

// Absence is proved with a barrier, not by waiting (`Sotw::nothing_before_barrier`,
// `Delta::nothing_before_barrier`): after what must send nothing, the test sends a request the
// server must answer and asserts that the very next response is that answer. Sound because the
// server runs each stream as one task that takes the stream's requests in order and handles
// each to its end, sends included, before it takes the next request or a new snapshot, and
// sends every response on one channel (`xds/stream.rs` `run`): whatever an earlier request made
// the stream send, or a snapshot it took in before the barrier, comes before the barrier's
// answer. A change made through the registry must therefore have reached the stream before
// the barrier is sent: the test read a response that change caused on that stream, or it
// waits until the stream shows the change's generation (`took_in_current_snapshot`), or it
// knows that no snapshot came of it (`invalid_yaml_keeps_the_last_good_mesh`).

/// Waits until the stream of `node` has taken in the current snapshot, as `/debug/connections`
/// says: it records the generation before sending what the snapshot changes, so all of that is
/// sent before the answer to any request made from now on.
async fn took_in_current_snapshot(h: &Harness, node: &str) {
    let current =
        h.cp.snapshots
            .borrow()
            .as_ref()
            .expect("a snapshot")
            .generation;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let body = h.admin("/debug/connections").await;
        let json = body.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let conns: serde_json::Value = serde_json::from_str(json).unwrap();
        let generation = conns
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["node_id"] == node)
            .and_then(|c| c["generation"].as_u64());
        if generation >= Some(current) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// === State of the world ===

struct Sotw {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
    /// Barriers sent so far, and the version of the last one's answer.
    barriers: u32,
    barrier_version: Option<String>,
}

impl Sotw {
    /// A stream on which nothing is sent yet.
    async fn connect(h: &Harness) -> Self {
        let (tx, rx) = mpsc::channel(16);
        let rx = h
            .client()
            .await
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Self {
            tx,
            rx,
            barriers: 0,
            barrier_version: None,
        }
    }

    /// A stream of node `id` that has asked for every cluster.
    async fn open(h: &Harness, id: &str) -> Self {
        let s = Self::connect(h).await;
        s.send(DiscoveryRequest {
            node: node(id),
            type_url: CDS.into(),
            ..Default::default()
        })
        .await;
        s
    }

    async fn send(&self, r: DiscoveryRequest) {
        self.tx.send(r).await.unwrap();
    }

    /// The next `n` responses, each ACKed as it comes: (type, resource names).
    async fn take_acked(&mut self, n: usize) -> Vec<(String, Vec<String>)> {
        let mut seen = Vec::new();
        for _ in 0..n {
            let r = next(&mut self.rx).await;
            self.ack(&r.type_url, &r, &[]).await;
            seen.push((r.type_url.clone(), sotw_names(&r)));
        }
        seen
    }

    async fn ack(&self, type_url: &str, resp: &DiscoveryResponse, names: &[&str]) {
        self.send(DiscoveryRequest {
            type_url: type_url.into(),
            version_info: resp.version_info.clone(),
            response_nonce: resp.nonce.clone(),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .await;
    }

    /// Proves, without waiting, that the server sent nothing since the last response read
    /// (see above): the barrier asks for `existing` resources of type `t` and a name used once
    /// that names nothing, a new subscription the server must answer (a Cluster or Listener
    /// one even when nothing it names exists, as state of the world is full state for them);
    /// the next response must be that answer, with a version not seen before. `t` must be a
    /// type the test does not otherwise ask for, and nothing in `existing` may change. The
    /// answer is ACKed.
    async fn nothing_before_barrier(&mut self, t: &str, existing: &[&str]) {
        self.barriers += 1;
        let once = format!("barrier-{}.invalid:1", self.barriers);
        let mut names = existing.to_vec();
        names.push(&once);
        self.send(DiscoveryRequest {
            type_url: t.into(),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .await;
        let r = next(&mut self.rx).await;
        assert_eq!(
            (r.type_url.as_str(), sotw_names(&r)),
            (t, existing.iter().map(|s| s.to_string()).collect()),
            "a response came before the barrier's answer (left): nonce {}",
            r.nonce
        );
        assert_ne!(
            self.barrier_version.as_ref(),
            Some(&r.version_info),
            "the last barrier's answer again, not this one's: nonce {}",
            r.nonce
        );
        self.barrier_version = Some(r.version_info.clone());
        self.ack(t, &r, &names).await;
    }
}

fn sotw_names(r: &DiscoveryResponse) -> Vec<String> {
    use prost::Message;
    r.resources
        .iter()
        .map(|a| match a.type_url.as_str() {
            CDS => {
                weft_proto::xds::config::cluster::v3::Cluster::decode(&a.value[..])
                    .unwrap()
                    .name
            }
            LDS => {
                weft_proto::xds::config::listener::v3::Listener::decode(&a.value[..])
                    .unwrap()
                    .name
            }
            EDS => {
                weft_proto::xds::config::endpoint::v3::ClusterLoadAssignment::decode(&a.value[..])
                    .unwrap()
                    .cluster_name
            }
            other => panic!("unexpected {other}"),
        })
        .collect()
}

const A: &str = "outbound|80||a.ns.svc.cluster.local";
const B: &str = "outbound|80||b.ns.svc.cluster.local";

#[tokio::test]
async fn sotw_fetch_ack_update_and_removal() {
    let h = Harness::two_services().await;
    let mut s = Sotw::open(&h, "client-1").await;
    let cds = next(&mut s.rx).await;
    assert_eq!(cds.type_url, CDS);
    assert_eq!(sotw_names(&cds), [A, B]);
    s.ack(CDS, &cds, &[]).await;

    // Named EDS subscription.
    s.send(DiscoveryRequest {
        type_url: EDS.into(),
        resource_names: vec![A.into()],
        ..Default::default()
    })
    .await;
    let eds = next(&mut s.rx).await;
    assert_eq!(sotw_names(&eds), [A]);
    s.ack(EDS, &eds, &[A]).await;
    s.nothing_before_barrier(LDS, &[]).await;

    // Removing b: CDS (full state) comes without it; a's EDS is untouched so not resent.
    std::fs::remove_file(h.dir.path().join("b.yaml")).unwrap();
    let cds2 = next(&mut s.rx).await;
    assert_eq!(cds2.type_url, CDS);
    assert_eq!(sotw_names(&cds2), [A]);
    assert_ne!(cds2.version_info, cds.version_info);
    assert_ne!(cds2.nonce, cds.nonce);
    s.ack(CDS, &cds2, &[]).await;
    s.nothing_before_barrier(LDS, &[]).await;

    // An endpoint change of a: only EDS.
    h.write(
        "a.yaml",
        &service("a", "10.0.0.1").replace("[10.0.0.19]", "[10.0.0.19, 10.0.0.18]"),
    );
    let eds2 = next(&mut s.rx).await;
    assert_eq!(eds2.type_url, EDS);
    assert_ne!(eds2.version_info, eds.version_info);
    s.ack(EDS, &eds2, &[A]).await;
    s.nothing_before_barrier(LDS, &[]).await;

    let metrics = h.admin("/metrics").await;
    assert!(
        metrics.contains("weft_xds_connected_proxies{api=\"sotw\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn sotw_nack_is_not_resent_and_stale_nonces_are_ignored() {
    let h = Harness::start(&[("a.yaml", service("a", "10.0.0.1"))]).await;
    let mut s = Sotw::open(&h, "nacker").await;
    let cds = next(&mut s.rx).await;
    // NACK: keep the old version, report an error.
    s.send(DiscoveryRequest {
        type_url: CDS.into(),
        version_info: String::new(),
        response_nonce: cds.nonce.clone(),
        error_detail: Some(RpcStatus {
            code: 3,
            message: "cluster a: unsupported field".into(),
            details: vec![],
        }),
        ..Default::default()
    })
    .await;
    s.nothing_before_barrier(LDS, &[]).await;
    // A garbage nonce and an unknown type are ignored; the stream stays up.
    s.send(DiscoveryRequest {
        type_url: CDS.into(),
        response_nonce: "garbage".into(),
        ..Default::default()
    })
    .await;
    s.send(DiscoveryRequest {
        type_url: "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret".into(),
        ..Default::default()
    })
    .await;
    s.nothing_before_barrier(LDS, &[]).await;
    // The next change is sent.
    h.write("b.yaml", &service("b", "10.0.0.2"));
    let cds2 = next(&mut s.rx).await;
    assert_eq!(sotw_names(&cds2), [A, B]);
    let metrics = h.admin("/metrics").await;
    assert!(
        metrics.contains("weft_xds_nacks_total{type=\"cds\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("weft_xds_unknown_type_requests_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("weft_xds_stale_nonces_total 1"),
        "{metrics}"
    );
    // A scrape that does not ask for OpenMetrics (curl, promtool) gets the classic text format,
    // and promtool accepts it.
    assert!(metrics.contains("text/plain; version=0.0.4"), "{metrics}");
    let body = metrics.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package) runs");
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), body.as_bytes()).unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let conns = h.admin("/debug/connections").await;
    assert!(conns.contains("unsupported field"), "{conns}");
    assert!(conns.contains("\"node_id\": \"nacker\""), "{conns}");
}

#[tokio::test]
async fn sotw_reconnect_with_current_version_gets_nothing_new() {
    let h = Harness::start(&[("a.yaml", service("a", "10.0.0.1"))]).await;
    let version = {
        let mut s = Sotw::open(&h, "c").await;
        next(&mut s.rx).await.version_info
    };
    let mut s = Sotw::connect(&h).await;
    s.send(DiscoveryRequest {
        node: node("c"),
        type_url: CDS.into(),
        version_info: version,
        ..Default::default()
    })
    .await;
    s.nothing_before_barrier(LDS, &[]).await;
}

#[tokio::test]
async fn invalid_yaml_keeps_the_last_good_mesh() {
    let h = Harness::start(&[("a.yaml", service("a", "10.0.0.1"))]).await;
    let mut s = Sotw::open(&h, "c").await;
    let cds = next(&mut s.rx).await;
    s.ack(CDS, &cds, &[]).await;
    let mut snapshots = h.cp.snapshots.clone();
    snapshots.borrow_and_update();
    h.write(
        "a.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: a\n",
    );
    // The failed load is over once the registry counts it: no snapshot came of it, so the
    // stream had nothing to take in, and the barrier shows it sent nothing.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = h.admin("/metrics").await;
        if metrics.contains("weft_registry_errors_total 1") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !snapshots.has_changed().unwrap(),
        "a snapshot came of invalid YAML"
    );
    s.nothing_before_barrier(LDS, &[]).await;
    assert!(h.admin("/ready").await.starts_with("HTTP/1.0 200"));
    // Fixed: served again.
    h.write(
        "a.yaml",
        &format!(
            "{}---\n{}",
            service("a", "10.0.0.1"),
            service("c", "10.0.0.3")
        ),
    );
    let cds2 = next(&mut s.rx).await;
    assert_eq!(sotw_names(&cds2).len(), 2);
}

// === Delta ===

struct Delta {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    rx: Streaming<DeltaDiscoveryResponse>,
    /// Barriers sent so far.
    barriers: u32,
}

impl Delta {
    async fn open(h: &Harness, first: DeltaDiscoveryRequest) -> Self {
        let (tx, rx) = mpsc::channel(16);
        let rx = h
            .client()
            .await
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        tx.send(first).await.unwrap();
        Self {
            tx,
            rx,
            barriers: 0,
        }
    }

    async fn send(&self, r: DeltaDiscoveryRequest) {
        self.tx.send(r).await.unwrap();
    }

    async fn ack(&self, resp: &DeltaDiscoveryResponse) {
        self.send(DeltaDiscoveryRequest {
            type_url: resp.type_url.clone(),
            response_nonce: resp.nonce.clone(),
            ..Default::default()
        })
        .await;
    }

    /// Proves, without waiting, that the server sent nothing since the last response read
    /// (see above): the barrier subscribes to a RouteConfiguration by a name used once that
    /// names nothing, which the server must answer by saying it does not exist; the next
    /// response must be that answer. The answer is ACKed.
    async fn nothing_before_barrier(&mut self) {
        self.barriers += 1;
        let once = format!("barrier-{}.invalid:1", self.barriers);
        self.send(DeltaDiscoveryRequest {
            type_url: RDS.into(),
            resource_names_subscribe: vec![once.clone()],
            ..Default::default()
        })
        .await;
        let r = next(&mut self.rx).await;
        assert_eq!(
            (
                r.type_url.as_str(),
                delta_versions(&r),
                r.removed_resources.clone()
            ),
            (RDS, BTreeMap::new(), vec![once]),
            "a response came before the barrier's answer (left): nonce {}",
            r.nonce
        );
        self.ack(&r).await;
    }

    /// Subscribes to the endpoints of a and b, and ACKs the answer (both assignments).
    async fn subscribe_eds_a_and_b(&mut self) {
        self.send(DeltaDiscoveryRequest {
            type_url: EDS.into(),
            resource_names_subscribe: vec![A.into(), B.into()],
            ..Default::default()
        })
        .await;
        let eds = next(&mut self.rx).await;
        assert_eq!(eds.resources.len(), 2);
        self.ack(&eds).await;
    }
}

fn delta_versions(r: &DeltaDiscoveryResponse) -> BTreeMap<String, String> {
    r.resources
        .iter()
        .map(|x| (x.name.clone(), x.version.clone()))
        .collect()
}

/// A control plane with Services a and b, and a Delta stream that has asked for clusters.
async fn two_services_on_delta() -> (Harness, Delta) {
    let h = Harness::two_services().await;
    let d = Delta::open(
        &h,
        DeltaDiscoveryRequest {
            node: node("proxy-1"),
            type_url: CDS.into(),
            ..Default::default()
        },
    )
    .await;
    (h, d)
}

#[tokio::test]
async fn delta_sends_only_changes_and_removals() {
    let (h, mut d) = two_services_on_delta().await;
    let cds = next(&mut d.rx).await;
    let cds_versions = delta_versions(&cds);
    assert_eq!(cds_versions.keys().collect::<Vec<_>>(), [A, B]);
    d.ack(&cds).await;
    d.subscribe_eds_a_and_b().await;

    // One endpoint change: exactly one ClusterLoadAssignment, nothing else.
    h.write(
        "a.yaml",
        &service("a", "10.0.0.1").replace("[10.0.0.19]", "[10.0.0.17]"),
    );
    let eds2 = next(&mut d.rx).await;
    assert_eq!(eds2.type_url, EDS);
    assert_eq!(delta_versions(&eds2).keys().collect::<Vec<_>>(), [A]);
    d.ack(&eds2).await;
    d.nothing_before_barrier().await;

    // Removing b: CDS and EDS say so.
    std::fs::remove_file(h.dir.path().join("b.yaml")).unwrap();
    let r1 = next(&mut d.rx).await;
    assert_eq!(r1.type_url, CDS);
    assert_eq!(r1.removed_resources, [B]);
    assert!(r1.resources.is_empty());
    d.ack(&r1).await;
    let r2 = next(&mut d.rx).await;
    assert_eq!(r2.type_url, EDS);
    assert_eq!(r2.removed_resources, [B]);
    d.ack(&r2).await;

    // Subscribing to something that does not exist is answered once, as removed.
    d.send(DeltaDiscoveryRequest {
        type_url: EDS.into(),
        resource_names_subscribe: vec!["outbound|80||nope.ns.svc.cluster.local".into()],
        ..Default::default()
    })
    .await;
    let r3 = next(&mut d.rx).await;
    assert_eq!(
        r3.removed_resources,
        ["outbound|80||nope.ns.svc.cluster.local"]
    );
    d.ack(&r3).await;
    d.nothing_before_barrier().await;

    // Reconnect holding a's current version and b's stale one: only b's removal comes.
    let a_version = cds_versions[A].clone();
    let mut d2 = Delta::open(
        &h,
        DeltaDiscoveryRequest {
            node: node("proxy-1"),
            type_url: CDS.into(),
            initial_resource_versions: [(A.to_string(), a_version), (B.to_string(), "old".into())]
                .into(),
            ..Default::default()
        },
    )
    .await;
    let again = next(&mut d2.rx).await;
    assert!(again.resources.is_empty(), "{again:?}");
    assert_eq!(again.removed_resources, [B]);
}

/// The xDS protocol's incremental example: a wildcard stream that also names a resource keeps
/// the wildcard, and dropping the name while `*` still covers it gets the resource's state
/// again (what go-control-plane does), since the client may have let it go with the name. A
/// name the client never asked for cannot be dropped on its own: nothing comes.
#[tokio::test]
async fn delta_dropping_a_name_under_the_wildcard_resends_it() {
    let (_h, mut d) = two_services_on_delta().await;
    let cds = next(&mut d.rx).await;
    assert_eq!(delta_versions(&cds).keys().collect::<Vec<_>>(), [A, B]);
    d.ack(&cds).await;

    // Naming a (already held) resource sends it again: "must resend any newly requested".
    d.send(DeltaDiscoveryRequest {
        type_url: CDS.into(),
        resource_names_subscribe: vec![A.into()],
        ..Default::default()
    })
    .await;
    let named = next(&mut d.rx).await;
    assert_eq!(delta_versions(&named).keys().collect::<Vec<_>>(), [A]);
    d.ack(&named).await;

    // Dropping the name: `*` still covers a, so its state comes once more, unchanged.
    d.send(DeltaDiscoveryRequest {
        type_url: CDS.into(),
        resource_names_unsubscribe: vec![A.into()],
        ..Default::default()
    })
    .await;
    let again = next(&mut d.rx).await;
    assert_eq!(delta_versions(&again), delta_versions(&named));
    assert!(again.removed_resources.is_empty(), "{again:?}");
    d.ack(&again).await;
    d.nothing_before_barrier().await;

    // b was only ever covered by `*`: unsubscribing it by name changes nothing.
    d.send(DeltaDiscoveryRequest {
        type_url: CDS.into(),
        resource_names_unsubscribe: vec![B.into()],
        ..Default::default()
    })
    .await;
    d.nothing_before_barrier().await;

    // Leaving the wildcard while naming nothing sends nothing; naming b then brings it, as the
    // stream holds nothing any more.
    d.send(DeltaDiscoveryRequest {
        type_url: CDS.into(),
        resource_names_unsubscribe: vec!["*".into()],
        ..Default::default()
    })
    .await;
    d.nothing_before_barrier().await;
    d.send(DeltaDiscoveryRequest {
        type_url: CDS.into(),
        resource_names_subscribe: vec![B.into()],
        ..Default::default()
    })
    .await;
    let b = next(&mut d.rx).await;
    assert_eq!(delta_versions(&b).keys().collect::<Vec<_>>(), [B]);
}

#[tokio::test]
async fn delta_nack_keeps_stream_and_does_not_loop() {
    let h = Harness::start(&[("a.yaml", service("a", "10.0.0.1"))]).await;
    let mut d = Delta::open(
        &h,
        DeltaDiscoveryRequest {
            node: node("p"),
            type_url: CDS.into(),
            ..Default::default()
        },
    )
    .await;
    let cds = next(&mut d.rx).await;
    d.send(DeltaDiscoveryRequest {
        type_url: CDS.into(),
        response_nonce: cds.nonce.clone(),
        error_detail: Some(RpcStatus {
            code: 3,
            message: "no".into(),
            details: vec![],
        }),
        ..Default::default()
    })
    .await;
    d.nothing_before_barrier().await;
    h.write("b.yaml", &service("b", "10.0.0.2"));
    let next_push = next(&mut d.rx).await;
    assert_eq!(delta_versions(&next_push).keys().collect::<Vec<_>>(), [B]);
}

#[tokio::test]
async fn disconnects_are_cleaned_up() {
    let h = Harness::start(&[("a.yaml", service("a", "10.0.0.1"))]).await;
    {
        let mut d = Delta::open(
            &h,
            DeltaDiscoveryRequest {
                node: node("p"),
                type_url: CDS.into(),
                ..Default::default()
            },
        )
        .await;
        next(&mut d.rx).await;
        assert!(
            h.admin("/metrics")
                .await
                .contains("weft_xds_connected_proxies{api=\"delta\"} 1")
        );
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let m = h.admin("/metrics").await;
        if m.contains("weft_xds_connected_proxies{api=\"delta\"} 0") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        h.admin("/debug/connections")
            .await
            .split("\r\n\r\n")
            .nth(1)
            .unwrap()
            .trim(),
        "[]"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_streams() {
    let h = Harness::start(&[("a.yaml", service("a", "10.0.0.1"))]).await;
    let client = h.client().await;
    let mut streams = Vec::new();
    for i in 0..1000 {
        let (tx, rx) = mpsc::channel(4);
        tx.send(DeltaDiscoveryRequest {
            node: node(&format!("p{i}")),
            type_url: CDS.into(),
            ..Default::default()
        })
        .await
        .unwrap();
        let rx = client
            .clone()
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        streams.push((tx, rx));
    }
    for (_, rx) in &mut streams {
        assert_eq!(next(rx).await.resources.len(), 1);
    }
    // One change reaches all of them.
    h.write("b.yaml", &service("b", "10.0.0.2"));
    for (_, rx) in &mut streams {
        let r = next(rx).await;
        assert_eq!(delta_versions(&r).keys().collect::<Vec<_>>(), [B]);
    }
    assert!(
        h.admin("/metrics")
            .await
            .contains("weft_xds_connected_proxies{api=\"delta\"} 1000")
    );
}

#[tokio::test]
async fn large_delta_pushes_are_split_under_the_grpc_message_limit() {
    let yaml: String = (0..4000)
        .map(|i| {
            format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: big}}\n\
                 spec: {{clusterIP: 10.{}.{}.{}, ports: [{{name: http, port: 80}}]}}\n---\n",
                i / 65536,
                (i / 256) % 256,
                i % 256
            )
        })
        .collect();
    let h = Harness::start(&[("big.yaml", yaml)]).await;
    let mut d = Delta::open(
        &h,
        DeltaDiscoveryRequest {
            node: node("p"),
            type_url: LDS.into(),
            ..Default::default()
        },
    )
    .await;
    let mut names = std::collections::BTreeSet::new();
    let mut responses = 0;
    while names.len() < 4000 {
        let r = next(&mut d.rx).await;
        use prost::Message;
        assert!(
            r.encoded_len() < 2 << 20,
            "response of {} bytes",
            r.encoded_len()
        );
        names.extend(r.resources.iter().map(|x| x.name.clone()));
        responses += 1;
        d.ack(&r).await;
    }
    assert!(responses >= 2, "{responses} responses");
    d.nothing_before_barrier().await;
    let metrics = h.admin("/metrics").await;
    assert!(
        metrics.contains("weft_xds_stale_nonces_total 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn sotw_leftover_nonce_and_absent_listeners_are_answered() {
    let h = Harness::start(&[("a.yaml", service("a", "10.0.0.1"))]).await;
    let (tx, rx) = mpsc::channel(8);
    let mut stream = h
        .client()
        .await
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    // A reconnecting client that kept its last nonce from another stream is still answered.
    tx.send(DiscoveryRequest {
        node: node("grpc-client"),
        type_url: LDS.into(),
        response_nonce: "7".into(),
        resource_names: vec!["nope.ns.svc.cluster.local:80".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let first = next(&mut stream).await;
    assert!(
        first.resources.is_empty(),
        "absent listener: empty full-state answer"
    );
    // Asking for one more absent listener gets a new answer too (gRPC's does-not-exist signal).
    tx.send(DiscoveryRequest {
        type_url: LDS.into(),
        response_nonce: first.nonce.clone(),
        version_info: first.version_info.clone(),
        resource_names: vec![
            "nope.ns.svc.cluster.local:80".into(),
            "gone.ns.svc.cluster.local:80".into(),
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    let second = next(&mut stream).await;
    assert!(second.resources.is_empty());
    assert_ne!(second.version_info, first.version_info);
    // And a real one among them.
    tx.send(DiscoveryRequest {
        type_url: LDS.into(),
        response_nonce: second.nonce.clone(),
        version_info: second.version_info.clone(),
        resource_names: vec!["a.ns.svc.cluster.local:80".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let third = next(&mut stream).await;
    assert_eq!(sotw_names(&third), ["a.ns.svc.cluster.local:80"]);
}

/// One edit that replaces Service b with c: every addition goes out before any removal, and
/// listeners are removed before the clusters they sent traffic to, so a client applying each
/// response as it comes never holds a listener whose cluster is gone (make before break).
#[tokio::test]
async fn delta_pushes_additions_before_removals_and_listeners_before_clusters() {
    let (h, mut d) = two_services_on_delta().await;
    let cds = next(&mut d.rx).await;
    d.ack(&cds).await;
    d.send(DeltaDiscoveryRequest {
        type_url: LDS.into(),
        ..Default::default()
    })
    .await;
    let lds = next(&mut d.rx).await;
    assert!(!lds.resources.is_empty(), "{lds:?}");
    d.ack(&lds).await;
    d.subscribe_eds_a_and_b().await;

    h.write("b.yaml", &service("c", "10.0.0.3"));
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|(t, _, removed): &(String, usize, Vec<String>)| t == EDS && !removed.is_empty())
    {
        let r = next(&mut d.rx).await;
        d.ack(&r).await;
        seen.push((r.type_url.clone(), r.resources.len(), r.removed_resources));
    }
    let short = |t: &str| t.rsplit('.').next().unwrap().to_string();
    let order: Vec<(String, bool)> = seen
        .iter()
        .map(|(t, added, removed)| (short(t), *added > 0 && removed.is_empty()))
        .collect();
    let first_removal = order.iter().position(|(_, adds)| !adds).unwrap();
    assert!(
        order[first_removal..].iter().all(|(_, adds)| !adds),
        "an addition after a removal: {order:?}"
    );
    let removal_types: Vec<&str> = order[first_removal..]
        .iter()
        .map(|(t, _)| t.as_str())
        .collect();
    assert_eq!(
        removal_types,
        ["Listener", "Cluster", "ClusterLoadAssignment"],
        "{seen:?}"
    );
    let cds_removal = seen.iter().find(|(t, _, r)| t == CDS && !r.is_empty());
    assert_eq!(cds_removal.unwrap().2, [B]);
}

/// Services a and b, and a state-of-the-world stream of `node` that has received, and ACKed,
/// every cluster and every listener (wildcard CDS and LDS).
async fn two_services_on_sotw(node: &str) -> (Harness, Sotw, DiscoveryResponse, DiscoveryResponse) {
    let h = Harness::two_services().await;
    let mut s = Sotw::open(&h, node).await;
    let cds = next(&mut s.rx).await;
    s.ack(CDS, &cds, &[]).await;
    s.send(DiscoveryRequest {
        type_url: LDS.into(),
        ..Default::default()
    })
    .await;
    let lds = next(&mut s.rx).await;
    s.ack(LDS, &lds, &[]).await;
    (h, s, cds, lds)
}

/// The same edit on a state-of-the-world stream: the removed cluster stays in a first CDS response
/// (with the new one), the listeners move off it, and only then does a CDS response drop it.
#[tokio::test]
async fn sotw_drops_a_cluster_only_after_the_listeners_moved_off_it() {
    let (h, mut s, _, lds) = two_services_on_sotw("envoy-1").await;
    assert_eq!(
        sotw_names(&lds),
        ["a.ns.svc.cluster.local:80", "b.ns.svc.cluster.local:80"]
    );
    s.nothing_before_barrier(EDS, &[A]).await;

    h.write("b.yaml", &service("c", "10.0.0.3"));
    let seen = s.take_acked(3).await;
    s.nothing_before_barrier(EDS, &[A]).await;
    const C: &str = "outbound|80||c.ns.svc.cluster.local";
    let lds_after = vec![
        "a.ns.svc.cluster.local:80".to_string(),
        "c.ns.svc.cluster.local:80".to_string(),
    ];
    assert_eq!(
        seen,
        [
            (CDS.to_string(), vec![A.to_string(), B.into(), C.into()]),
            (LDS.to_string(), lds_after),
            (CDS.to_string(), vec![A.to_string(), C.into()]),
        ]
    );
}

/// The same after a reconnect: the client says which versions it holds, gets nothing resent, and
/// the edit still keeps the dropped cluster until the listeners have moved off it.
#[tokio::test]
async fn sotw_after_a_reconnect_still_drops_a_cluster_last() {
    let (h, first, cds, lds) = two_services_on_sotw("envoy-2").await;
    drop(first);
    let mut s = Sotw::connect(&h).await;
    for (t, held) in [(CDS, &cds), (LDS, &lds)] {
        s.send(DiscoveryRequest {
            node: node("envoy-2"),
            type_url: t.into(),
            version_info: held.version_info.clone(),
            ..Default::default()
        })
        .await;
    }
    s.nothing_before_barrier(EDS, &[A]).await;

    h.write("b.yaml", &service("c", "10.0.0.3"));
    let seen: Vec<(String, usize)> = s
        .take_acked(3)
        .await
        .into_iter()
        .map(|(t, names)| (t, names.len()))
        .collect();
    assert_eq!(
        seen,
        [
            (CDS.to_string(), 3),
            (LDS.to_string(), 2),
            (CDS.to_string(), 2)
        ]
    );
}

/// A Listener from a response, decoded.
fn listener(
    a: &weft_proto::google::protobuf::Any,
) -> weft_proto::xds::config::listener::v3::Listener {
    use prost::Message;
    weft_proto::xds::config::listener::v3::Listener::decode(&a.value[..]).unwrap()
}

fn ip_of(l: &weft_proto::xds::config::listener::v3::Listener) -> String {
    use weft_proto::xds::config::core::v3::address::Address;
    match l.address.as_ref().and_then(|a| a.address.as_ref()) {
        Some(Address::SocketAddress(sa)) => sa.address.clone(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn envoy_gets_listeners_with_filter_chains_and_grpc_gets_api_listeners() {
    let h = Harness::two_services().await;
    let with_agent = |id: &str, agent: &str| {
        Some(Node {
            id: id.into(),
            user_agent_name: agent.into(),
            ..Default::default()
        })
    };
    // Envoy, as a sidecar: the wildcard over Delta.
    let mut envoy = Delta::open(
        &h,
        DeltaDiscoveryRequest {
            node: with_agent("envoy-1", "envoy"),
            type_url: LDS.into(),
            ..Default::default()
        },
    )
    .await;
    let lds = next(&mut envoy.rx).await;
    let a = lds
        .resources
        .iter()
        .find(|r| r.name == "a.ns.svc.cluster.local:80")
        .expect("a's listener");
    let l = listener(a.resource.as_ref().unwrap());
    assert!(l.api_listener.is_none(), "{l:?}");
    assert_eq!(
        l.filter_chains[0].filters[0].name,
        "envoy.filters.network.http_connection_manager"
    );
    assert_eq!(ip_of(&l), "10.0.0.1");
    envoy.ack(&lds).await;

    // gRPC's proxyless client: state of the world, the listener it was given the name of.
    let mut grpc = Sotw::connect(&h).await;
    grpc.send(DiscoveryRequest {
        node: with_agent("grpc-1", "gRPC C-core linux"),
        type_url: LDS.into(),
        resource_names: vec!["a.ns.svc.cluster.local:80".into()],
        ..Default::default()
    })
    .await;
    let lds = next(&mut grpc.rx).await;
    assert_eq!(lds.resources.len(), 1);
    let l = listener(&lds.resources[0]);
    assert!(
        l.api_listener.is_some() && l.filter_chains.is_empty(),
        "{l:?}"
    );
    assert_eq!(ip_of(&l), "10.0.0.1");
    grpc.ack(LDS, &lds, &["a.ns.svc.cluster.local:80"]).await;

    // A change to the Service reaches each in its own shape.
    h.write("a.yaml", &service("a", "10.0.0.3"));
    let lds = next(&mut grpc.rx).await;
    let l = listener(&lds.resources[0]);
    assert!(l.api_listener.is_some(), "{l:?}");
    assert_eq!(ip_of(&l), "10.0.0.3");
    let update = loop {
        let r = next(&mut envoy.rx).await;
        envoy.ack(&r).await;
        if r.type_url == LDS {
            break r;
        }
    };
    let l = listener(update.resources[0].resource.as_ref().unwrap());
    assert!(
        l.api_listener.is_none() && !l.filter_chains.is_empty(),
        "{l:?}"
    );
    assert_eq!(ip_of(&l), "10.0.0.3");
}

const POLICY: &str = "apiVersion: weft.io/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: a, namespace: ns}\n\
spec: {targetRefs: [{kind: Service, name: a}], loadBalancer: RoundRobin}\n";

/// The protocol's note on EDS: a Cluster Envoy gets anew warms until its endpoints come again,
/// changed or not, so a policy change (a new Cluster, the same endpoints) sends both.
#[tokio::test]
async fn an_updated_cluster_is_followed_by_its_endpoints_on_delta() {
    let (h, mut d) = two_services_on_delta().await;
    let cds = next(&mut d.rx).await;
    d.ack(&cds).await;
    d.subscribe_eds_a_and_b().await;
    h.write("policy.yaml", POLICY);
    let cds = next(&mut d.rx).await;
    assert_eq!(cds.type_url, CDS);
    assert_eq!(delta_versions(&cds).keys().collect::<Vec<_>>(), [A]);
    d.ack(&cds).await;
    let eds = next(&mut d.rx).await;
    assert_eq!(eds.type_url, EDS);
    assert_eq!(delta_versions(&eds).keys().collect::<Vec<_>>(), [A]);
    d.ack(&eds).await;
    d.nothing_before_barrier().await;

    // A name asked for again is sent again, though the client holds it.
    d.send(DeltaDiscoveryRequest {
        type_url: EDS.into(),
        resource_names_subscribe: vec![B.into()],
        ..Default::default()
    })
    .await;
    let eds = next(&mut d.rx).await;
    assert_eq!(delta_versions(&eds).keys().collect::<Vec<_>>(), [B]);
}

#[tokio::test]
async fn an_updated_cluster_is_followed_by_its_endpoints_on_sotw() {
    let h = Harness::two_services().await;
    let mut s = Sotw::open(&h, "envoy-1").await;
    let cds = next(&mut s.rx).await;
    s.ack(CDS, &cds, &[]).await;
    s.send(DiscoveryRequest {
        type_url: EDS.into(),
        resource_names: vec![A.into(), B.into()],
        ..Default::default()
    })
    .await;
    let eds = next(&mut s.rx).await;
    s.ack(EDS, &eds, &[A, B]).await;
    h.write("policy.yaml", POLICY);
    let cds2 = next(&mut s.rx).await;
    assert_eq!(cds2.type_url, CDS);
    s.ack(CDS, &cds2, &[]).await;
    let eds2 = next(&mut s.rx).await;
    assert_eq!(eds2.type_url, EDS);
    // The same assignments (the same version), under a new nonce.
    assert_eq!(eds2.version_info, eds.version_info);
    assert_ne!(eds2.nonce, eds.nonce);
    assert_eq!(sotw_names(&eds2), [A, B]);
}

#[tokio::test]
async fn sotw_an_empty_list_after_names_is_no_longer_the_wildcard() {
    let h = Harness::two_services().await;
    let mut s = Sotw::open(&h, "client-1").await;
    let cds = next(&mut s.rx).await;
    assert_eq!(sotw_names(&cds).len(), 2);
    s.ack(CDS, &cds, &[A]).await;
    let one = next(&mut s.rx).await;
    assert_eq!(sotw_names(&one), [A]);
    s.ack(CDS, &one, &[]).await;
    let none = next(&mut s.rx).await;
    assert!(sotw_names(&none).is_empty(), "{:?}", sotw_names(&none));
}

/// The first route's cluster in a Delta RDS response of one RouteConfiguration.
fn first_cluster(r: &DeltaDiscoveryResponse) -> String {
    use prost::Message;
    use weft_proto::xds::config::route::v3::{RouteConfiguration, route, route_action};
    let rc =
        RouteConfiguration::decode(&r.resources[0].resource.as_ref().unwrap().value[..]).unwrap();
    match &rc.virtual_hosts[0].routes[0].action {
        Some(route::Action::Route(a)) => match &a.cluster_specifier {
            Some(route_action::ClusterSpecifier::Cluster(c)) => c.clone(),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

/// GEP-1294: an HTTPRoute in another namespace than its Service is a consumer route: clients in
/// that namespace get it (ahead of the producer's routes), and nobody else does, so one
/// namespace cannot redirect another's traffic. Edits reach the consumer's proxies.
#[tokio::test]
async fn a_consumer_route_reaches_only_its_namespaces_proxies() {
    let pod = |name: &str, ns: &str, ip: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}}}\n\
spec: {{containers: [{{name: app}}]}}\nstatus: {{podIP: {ip}}}\n"
        )
    };
    let route = |backend: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
metadata: {{name: to-b, namespace: consumer}}\n\
spec: {{parentRefs: [{{kind: Service, name: a, namespace: ns, port: 80}}], \
rules: [{{backendRefs: [{{name: {backend}, namespace: ns, port: 80}}]}}]}}\n"
        )
    };
    let h = Harness::start(&[
        ("a.yaml", service("a", "10.0.0.1")),
        ("b.yaml", service("b", "10.0.0.2")),
        (
            "pods.yaml",
            format!(
                "{}---\n{}",
                pod("c-0", "consumer", "10.2.0.1"),
                pod("o-0", "other", "10.3.0.1")
            ),
        ),
        ("route.yaml", route("b")),
    ])
    .await;
    let rds = |id: &str| DeltaDiscoveryRequest {
        node: node(id),
        type_url: RDS.into(),
        resource_names_subscribe: vec!["a.ns.svc.cluster.local:80".into()],
        ..Default::default()
    };
    let mut consumer = Delta::open(&h, rds("c-0.consumer")).await;
    let mut other = Delta::open(&h, rds("o-0.other")).await;
    let (c, o) = (next(&mut consumer.rx).await, next(&mut other.rx).await);
    assert_eq!(first_cluster(&c), "outbound|80||b.ns.svc.cluster.local");
    assert_eq!(first_cluster(&o), "outbound|80||a.ns.svc.cluster.local");
    consumer.ack(&c).await;
    other.ack(&o).await;

    // The consumer's route changes: its proxies follow; the others hear nothing.
    h.write("route.yaml", &route("a"));
    let c2 = next(&mut consumer.rx).await;
    assert_eq!(first_cluster(&c2), "outbound|80||a.ns.svc.cluster.local");
    assert_ne!(c2.resources[0].version, c.resources[0].version);
    took_in_current_snapshot(&h, "o-0.other").await;
    other.nothing_before_barrier().await;
}
