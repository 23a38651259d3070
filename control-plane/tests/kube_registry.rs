//! The Kubernetes registry against an in-process API server that speaks the real list/watch
//! protocol (`weft_e2e::fake_kube`): JSON lists with resourceVersion, newline-delimited watch
//! events, bookmarks, `410 Gone`, restarts, outages, CRDs that come and go.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;
use weft_control_plane::model::{Key, Mesh};
use weft_control_plane::registry::{self, Debounce};
use weft_e2e::fake_kube::{
    FakeApi, GRPC_ROUTES, HTTP_ROUTES, PODS, SERVICES, SLICES, TCP_ROUTES, canary_route, pod,
    service, slice,
};

/// The Kubernetes registry against the API server at `url` (20 ms debounce, a look for kinds it
/// could not read every 100 ms), and the meshes it publishes.
fn reflect(url: &str) -> watch::Receiver<Option<Arc<Mesh>>> {
    let settings = registry::kube::Settings {
        trust_domain: "cluster.local".into(),
        debounce: Debounce {
            quiet: Duration::from_millis(20),
            max: Duration::from_secs(1),
        },
        probe_every: Duration::from_millis(100),
    };
    reflect_with(url, settings, "").0
}

/// The registry's meshes and its metrics (and status), as `settings` say.
fn reflect_with(
    url: &str,
    settings: registry::kube::Settings,
    test: &str,
) -> (watch::Receiver<Option<Arc<Mesh>>>, Metrics) {
    let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    let (tx, rx) = watch::channel(None);
    let mut reg = prometheus_client::registry::Registry::default();
    let metrics = registry::Metrics::register(&mut reg);
    let span = tracing::info_span!("test", name = test);
    tokio::spawn(registry::kube::run(client, settings, metrics.clone(), tx).instrument(span));
    (
        rx,
        Metrics {
            reg: Arc::new(reg),
            status: metrics.status,
        },
    )
}

/// The registry's metrics as Prometheus reads them, and its status.
struct Metrics {
    reg: Arc<prometheus_client::registry::Registry>,
    status: registry::Status,
}

impl Metrics {
    /// The value of the series `name` (with its labels, as exposed), 0 if absent.
    fn get(&self, series: &str) -> f64 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.reg).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0.0, |v| v.parse().unwrap())
    }
}

async fn until(
    rx: &mut watch::Receiver<Option<Arc<Mesh>>>,
    what: &str,
    f: impl Fn(&Mesh) -> bool,
) -> Arc<Mesh> {
    let got = tokio::time::timeout(
        Duration::from_secs(10),
        rx.wait_for(|m| m.as_deref().is_some_and(&f)),
    )
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for: {what}"))
    .unwrap();
    got.clone().unwrap()
}

#[tokio::test]
async fn lists_then_watches_relists_after_410_and_never_publishes_half_synced() {
    let api = FakeApi::default();
    api.apply(SERVICES, service("a", "10.0.0.1"));
    api.apply(SLICES, slice("a", "10.1.0.1"));
    let pods_gate = api.gate(PODS);
    let url = api.serve().await;

    let mut rx = reflect(&url);

    // Pods have not listed yet: nothing may be published. Waited for, as every absence in
    // this file: the registry answers no request that could serve as a barrier, and a change
    // sent as one would be debounced together with what it is to rule out.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        rx.borrow().is_none(),
        "published before every initial list was in"
    );
    pods_gate.notify_one();
    let mesh = until(&mut rx, "initial sync", |m| m.services.len() == 1).await;
    assert_eq!(
        mesh.services[&Key::new("ns", "a")].ports[0].endpoints.len(),
        1
    );

    // Watch events apply.
    api.apply(SERVICES, service("b", "10.0.0.2"));
    api.apply(SLICES, slice("b", "10.1.0.2"));
    until(&mut rx, "b with its endpoint", |m| {
        m.services
            .get(&Key::new("ns", "b"))
            .is_some_and(|s| s.ports[0].endpoints.len() == 1)
    })
    .await;
    api.bookmark(SERVICES);
    api.delete(SLICES, slice("b", "10.1.0.2"));
    until(&mut rx, "b without endpoints", |m| {
        m.services
            .get(&Key::new("ns", "b"))
            .is_some_and(|s| s.ports[0].endpoints.is_empty())
    })
    .await;

    // A GRPCRoute, as a user applies it, routes b's calls by method.
    api.apply(
        GRPC_ROUTES,
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
            "metadata": {"name": "by-method", "namespace": "ns"},
            "spec": {"parentRefs": [{"kind": "Service", "name": "b"}],
                "rules": [{"matches": [{"method": {"service": "pkg.Svc", "method": "Get"}}],
                    "backendRefs": [{"name": "b", "port": 80}]}]}}),
    );
    until(&mut rx, "b routed by the GRPCRoute", |m| {
        m.services.get(&Key::new("ns", "b")).is_some_and(|s| {
            s.ports[0].routes.first().is_some_and(|r| {
                r.matches[0].path
                    == Some(weft_control_plane::model::PathMatch::Exact(
                        "/pkg.Svc/Get".into(),
                    ))
            })
        })
    })
    .await;

    // A change the watch never reported, then 410 Gone: the re-list must catch it.
    api.delete_silently(SERVICES, &service("a", "10.0.0.1"));
    api.expire(SERVICES);
    until(&mut rx, "a gone after re-list", |m| {
        !m.services.contains_key(&Key::new("ns", "a"))
            && m.services.contains_key(&Key::new("ns", "b"))
    })
    .await;
}

/// An optional kind the cluster does not serve yet (its CRD not installed: 404), weft may not
/// list (403) or that keeps failing (500) is read as empty without holding the mesh back, and
/// read once it is served (or permitted, or answers), with no restart.
#[tokio::test]
async fn kinds_served_or_permitted_later_are_read_without_a_restart() {
    let api = FakeApi::default();
    let tcp = |name: &str, ns: &str, ip: &str| {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": ip, "ports": [{"name": "tcp-db", "port": 5432, "protocol": "TCP"}]}})
    };
    api.apply(SERVICES, tcp("db", "ns", "10.0.0.1"));
    api.apply(SERVICES, tcp("db-v2", "team", "10.0.0.2"));
    api.apply(SERVICES, service("api", "10.0.0.3"));
    api.apply(SERVICES, service("web", "10.0.0.4"));
    api.refuse(TCP_ROUTES, Some(404));
    api.refuse(GRPC_ROUTES, Some(403));
    api.refuse(HTTP_ROUTES, Some(500));
    let url = api.serve().await;
    let mut rx = reflect(&url);
    until(&mut rx, "the mesh, without the kinds it cannot read", |m| {
        m.services.len() == 4
    })
    .await;

    // The CRD is installed and a route applied: read at the next look.
    api.refuse(TCP_ROUTES, None);
    api.apply(
        TCP_ROUTES,
        json!({"apiVersion": "gateway.networking.k8s.io/v1alpha2", "kind": "TCPRoute",
            "metadata": {"name": "to-v2", "namespace": "ns"},
            "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "db"}],
                "rules": [{"backendRefs": [{"name": "db-v2", "namespace": "team", "port": 5432}]}]}}),
    );
    until(&mut rx, "the TCPRoute", |m| {
        m.services[&Key::new("ns", "db")].ports[0]
            .tcp_route
            .as_ref()
            .is_some_and(|r| r.backends[0].service == Key::new("team", "db-v2"))
    })
    .await;

    // The role is granted GRPCRoutes, and one is there.
    api.apply(
        GRPC_ROUTES,
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
            "metadata": {"name": "calls", "namespace": "ns"},
            "spec": {"parentRefs": [{"kind": "Service", "name": "api"}],
                "rules": [{"backendRefs": [{"name": "api", "port": 80}]}]}}),
    );
    api.refuse(GRPC_ROUTES, None);
    until(&mut rx, "the GRPCRoute", |m| {
        !m.services[&Key::new("ns", "api")].ports[0]
            .routes
            .is_empty()
    })
    .await;

    // The failing kind answers again.
    api.refuse(HTTP_ROUTES, None);
    api.apply(
        HTTP_ROUTES,
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": {"parentRefs": [{"kind": "Service", "name": "web", "port": 80}],
                "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}}),
    );
    until(&mut rx, "the HTTPRoute", |m| {
        m.services[&Key::new("ns", "web")].ports[0]
            .routes
            .iter()
            .any(|r| r.origin == "ns/web#0")
    })
    .await;
}

/// An object that does not fit weft's types (here an HTTPRoute with a filter type of a newer
/// Gateway API, and a Service whose port is not a number) is left out alone: the rest of its
/// list is read and the mesh is published.
#[tokio::test]
async fn an_object_weft_cannot_read_leaves_out_only_itself() {
    let api = FakeApi::default();
    api.apply(SERVICES, service("a", "10.0.0.1"));
    api.apply(
        SERVICES,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "odd", "namespace": "ns"},
            "spec": {"ports": [{"name": "http", "port": "eighty"}]}}),
    );
    let route = |name: &str, filter: &str| {
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "a"}],
                "rules": [{"filters": [{"type": filter, "requestHeaderModifier": {"set": [{"name": "x-by", "value": name}]}}],
                    "backendRefs": [{"name": "a", "port": 80}]}]}})
    };
    api.apply(HTTP_ROUTES, route("future", "FromTheFuture"));
    api.apply(HTTP_ROUTES, route("today", "RequestHeaderModifier"));
    let url = api.serve().await;
    let mut rx = reflect(&url);
    let mesh = until(&mut rx, "the mesh without the unreadable objects", |m| {
        m.services.len() == 1
    })
    .await;
    let origins: Vec<&str> = mesh.services[&Key::new("ns", "a")].ports[0]
        .routes
        .iter()
        .map(|r| r.origin.as_str())
        .collect();
    assert_eq!(origins, ["ns/today#0"]);
    // The watch goes on: a later event of the kind still applies.
    api.apply(SERVICES, service("b", "10.0.0.2"));
    until(&mut rx, "b", |m| m.services.len() == 2).await;
}

/// Production's settings: 100 ms of quiet, 1 s at most, a kind that is not there looked for
/// every 2 s.
fn production() -> registry::kube::Settings {
    registry::kube::Settings {
        trust_domain: "cluster.local".into(),
        debounce: Debounce::default(),
        probe_every: Duration::from_secs(2),
    }
}

/// The weight `route` gives to Service `canary` on `ns/web`, if the route is there.
fn canary_weight(m: &Mesh) -> Option<u32> {
    let port = &m.services.get(&Key::new("ns", "web"))?.ports[0];
    let route = port.routes.first()?;
    route
        .backends
        .iter()
        .find(|b| b.service == Key::new("ns", "canary"))
        .map(|b| b.weight)
}

/// A mesh of `web` and `canary`, with `pods` Pods of app `web`.
fn web_and_canary(api: &FakeApi, pods: usize) {
    api.apply(SERVICES, service("web", "10.0.0.1"));
    api.apply(SERVICES, service("canary", "10.0.0.2"));
    for i in 0..pods {
        let ip = format!("10.1.{}.{}", i / 250, i % 250 + 1);
        api.apply(PODS, pod(&format!("web-{i}"), "web", &ip, "0"));
    }
}

/// A Pod changed every 50 ms for 10 s in a way weft reads (a label) keeps a quiet-time debounce
/// from ever firing; with the bounded one, meshes keep coming, and a route change made in the
/// middle is published within the maximum (1 s) and a margin.
#[tokio::test]
async fn a_steady_stream_of_changes_does_not_hold_a_route_change_back() {
    let api = FakeApi::default();
    web_and_canary(&api, 3);
    api.apply(HTTP_ROUTES, canary_route("split", "web", "canary", 10));
    let url = api.serve().await;
    let (mut rx, _metrics) = reflect_with(&url, production(), "steady");
    until(&mut rx, "the route", |m| canary_weight(m) == Some(10)).await;

    let churn = {
        let api = api.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            for n in 0..200u32 {
                tick.tick().await;
                let mut p = pod("web-0", "web", "10.1.0.1", "0");
                p["metadata"]["labels"]["tick"] = json!(n.to_string());
                api.apply(PODS, p);
            }
        })
    };
    // Meshes keep coming during the stream.
    let t0 = Instant::now();
    let mut published = 0;
    while t0.elapsed() < Duration::from_secs(4) {
        if tokio::time::timeout(Duration::from_millis(1500), rx.changed())
            .await
            .is_ok()
        {
            published += 1;
        }
    }
    assert!(
        published >= 3,
        "{published} meshes in 4 s of steady changes"
    );
    // A route change in the middle of it.
    api.apply(HTTP_ROUTES, canary_route("split", "web", "canary", 50));
    let t0 = Instant::now();
    until(&mut rx, "the new weight", |m| canary_weight(m) == Some(50)).await;
    let took = t0.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "the change took {took:?} under a steady stream of events"
    );
    assert!(!churn.is_finished(), "the stream ended before the change");
    churn.await.unwrap();
}

/// Pod updates that touch nothing weft reads (an annotation, the kubelet's container statuses,
/// the resourceVersion every write bumps) build no mesh at all; a label change does.
#[tokio::test]
async fn events_that_change_nothing_weft_reads_build_nothing() {
    let api = FakeApi::default();
    web_and_canary(&api, 3);
    let url = api.serve().await;
    let (mut rx, metrics) = reflect_with(&url, production(), "noop");
    until(&mut rx, "the mesh", |m| m.workloads.len() == 3).await;
    // Let the first build's debounce pass.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let builds = metrics.get("weft_registry_builds_total");
    for n in 0..100 {
        let mut p = pod("web-1", "web", "10.1.0.2", &n.to_string());
        p["status"]["containerStatuses"][0]["restartCount"] = json!(n);
        api.apply(PODS, p);
    }
    // Waited for: the label change below would be debounced into one build with any these
    // set off, so it cannot serve as a barrier.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        metrics.get("weft_registry_builds_total"),
        builds,
        "a change weft does not read built a mesh"
    );
    let mut p = pod("web-1", "web", "10.1.0.2", "x");
    p["metadata"]["labels"]["version"] = json!("v2");
    api.apply(PODS, p);
    until(&mut rx, "the new label", |m| {
        m.workloads[&Key::new("ns", "web-1")].labels.get("version") == Some(&"v2".to_string())
    })
    .await;
    assert_eq!(metrics.get("weft_registry_builds_total"), builds + 1.0);
}

/// An API server that goes down for 3 s (every watch ends, connections are refused) and comes
/// back with a fresh watch cache (a resumed watch gets `410 Gone`): meanwhile every kind is
/// stale, said in the metrics and the status, and the last mesh stays; a change written while
/// it was down is published within 5 s of its coming back.
#[tokio::test]
async fn a_restarted_api_server_is_read_again_within_seconds() {
    let api = FakeApi::default();
    web_and_canary(&api, 1);
    let url = api.serve().await;
    let (mut rx, metrics) = reflect_with(&url, production(), "restart");
    until(&mut rx, "the mesh", |m| m.services.len() == 2).await;
    assert_eq!(
        metrics.get(r#"weft_registry_sync_age_seconds{kind="Service"}"#),
        0.0
    );

    api.set_down(true);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stale: Vec<String> = metrics.status.stale().into_iter().map(|s| s.0).collect();
    assert!(stale.contains(&"Service".to_string()), "stale: {stale:?}");
    assert!(metrics.get(r#"weft_registry_sync_age_seconds{kind="Service"}"#) >= 1.0);
    assert_eq!(
        rx.borrow().as_ref().unwrap().services.len(),
        2,
        "the last mesh stays"
    );
    // Written while it is down (in etcd, where the restarted server finds it).
    api.apply(SERVICES, service("api", "10.0.0.3"));

    api.set_down(false);
    let t0 = Instant::now();
    until(&mut rx, "the Service written during the outage", |m| {
        m.services.contains_key(&Key::new("ns", "api"))
    })
    .await;
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "took {took:?} after the restart"
    );
    // Current again, everywhere, soon after.
    let t0 = Instant::now();
    while !metrics.status.stale().is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{:?}",
            metrics.status.stale()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        metrics.get(r#"weft_registry_sync_age_seconds{kind="Service"}"#),
        0.0
    );
}

/// Deleting the HTTPRoute CRD while weft runs takes its routes out of the mesh and is said as
/// "not served"; installed again, its routes are back within 5 s.
#[tokio::test]
async fn a_crd_deleted_and_installed_again_is_followed() {
    let log = Log::capture();
    let api = FakeApi::default();
    web_and_canary(&api, 1);
    api.apply(HTTP_ROUTES, canary_route("split", "web", "canary", 10));
    let url = api.serve().await;
    let (mut rx, metrics) = reflect_with(&url, production(), "crd");
    until(&mut rx, "the route", |m| canary_weight(m) == Some(10)).await;

    api.refuse(HTTP_ROUTES, Some(404));
    until(&mut rx, "the routes gone with their CRD", |m| {
        canary_weight(m).is_none()
    })
    .await;
    assert!(
        metrics
            .status
            .not_served()
            .contains(&"HTTPRoute".to_string())
    );
    assert!(
        metrics.status.stale().is_empty(),
        "{:?}",
        metrics.status.stale()
    );
    // Said as what it is, once, not as a watch failure.
    let lines = log.of("crd");
    assert_eq!(
        log.count("crd", "HTTPRoute is not served by this cluster any more"),
        1,
        "{lines:#?}"
    );
    assert_eq!(log.count("crd", "ERROR"), 0, "{lines:#?}");

    api.refuse(HTTP_ROUTES, None);
    api.apply(HTTP_ROUTES, canary_route("split", "web", "canary", 20));
    let t0 = Instant::now();
    until(&mut rx, "the route of the CRD installed again", |m| {
        canary_weight(m) == Some(20)
    })
    .await;
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t0.elapsed()
    );
    assert!(
        !metrics
            .status
            .not_served()
            .contains(&"HTTPRoute".to_string())
    );
}

/// A role that loses list and watch on Services while weft runs: an error naming the kind and
/// the 403, the last Services stay in the mesh, and the kind reads as stale until the role is
/// fixed.
#[tokio::test]
async fn lost_permission_keeps_the_last_objects_and_says_so() {
    let api = FakeApi::default();
    web_and_canary(&api, 1);
    let url = api.serve().await;
    let (mut rx, metrics) = reflect_with(&url, production(), "permission");
    until(&mut rx, "the mesh", |m| m.services.len() == 2).await;

    api.refuse(SERVICES, Some(403));
    let t0 = Instant::now();
    let why = loop {
        if let Some((_, _, why)) = metrics
            .status
            .stale()
            .into_iter()
            .find(|s| s.0 == "Service")
        {
            break why;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "never said stale");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(why.contains("403"), "{why}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        rx.borrow().as_ref().unwrap().services.len(),
        2,
        "the last mesh stays"
    );

    api.refuse(SERVICES, None);
    api.apply(SERVICES, service("api", "10.0.0.3"));
    until(&mut rx, "Services read again", |m| m.services.len() == 3).await;
    assert!(metrics.status.stale().is_empty());
}

/// Every log line of this test binary: one global subscriber (a scoped one misses events
/// whose callsites another test's thread registered first). Each test that reads it runs its
/// registry in a span of its own name, which every line the registry logs carries.
#[derive(Clone, Copy)]
struct Log;

static LINES: Mutex<Vec<u8>> = Mutex::new(Vec::new());

impl std::io::Write for Log {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        LINES.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    /// Starts capturing (once per binary).
    fn capture() -> Self {
        let _ = tracing_subscriber::fmt()
            .with_writer(|| Log)
            .with_ansi(false)
            .try_init();
        Log
    }

    /// The lines logged within the span of test `test`.
    fn of(self, test: &str) -> Vec<String> {
        let span = format!("test{{name={test:?}}}");
        String::from_utf8_lossy(&LINES.lock().unwrap())
            .lines()
            .filter(|l| l.contains(&span))
            .map(str::to_string)
            .collect()
    }

    /// How many of test `test`'s lines contain `needle`.
    fn count(self, test: &str, needle: &str) -> usize {
        self.of(test).iter().filter(|l| l.contains(needle)).count()
    }
}

/// A warning that stands over several rebuilds is logged once, and once more when it is gone;
/// a Pod without an address yet is no warning at all. The status lists what stands.
#[tokio::test]
async fn a_standing_warning_is_said_once() {
    let log = Log::capture();
    let api = FakeApi::default();
    web_and_canary(&api, 1);
    api.apply(HTTP_ROUTES, canary_route("split", "web", "missing", 10));
    let mut pending = pod("web-pending", "web", "", "0");
    pending["status"] = json!({"phase": "Pending"});
    api.apply(PODS, pending);
    let url = api.serve().await;
    let (mut rx, metrics) = reflect_with(&url, production(), "warnings");
    until(&mut rx, "the mesh", |m| m.services.len() == 2).await;
    // Four more rebuilds, each changing the mesh.
    for i in 0..4 {
        api.apply(
            SERVICES,
            service(&format!("more-{i}"), &format!("10.0.1.{i}")),
        );
        until(&mut rx, "one more Service", |m| m.services.len() == 3 + i).await;
    }
    let warned = "HTTPRoute ns/split";
    assert_eq!(
        log.count("warnings", warned),
        1,
        "{:#?}",
        log.of("warnings")
    );
    assert_eq!(
        log.count("warnings", "web-pending"),
        0,
        "a pending Pod was warned of"
    );
    let standing = metrics.status.warnings();
    assert_eq!(standing.len(), 1, "{standing:?}");
    assert_eq!(
        (standing[0].kind.as_str(), standing[0].object.as_str()),
        ("HTTPRoute", "ns/split")
    );
    assert_eq!(
        metrics.get(r#"weft_registry_warnings{kind="HTTPRoute"}"#),
        1.0
    );

    api.apply(HTTP_ROUTES, canary_route("split", "web", "canary", 10));
    until(&mut rx, "the fixed route", |m| canary_weight(m) == Some(10)).await;
    assert_eq!(log.count("warnings", &format!("resolved: {warned}")), 1);
    assert!(metrics.status.warnings().is_empty());
}

/// `weft serve --kubernetes`'s admin endpoint says what the registry knows of itself: `/ready`
/// stays 200 while the API server is down (the last mesh is served) and names the stale kinds,
/// `/debug/warnings` lists the standing warnings with the object each is about.
#[tokio::test]
async fn the_admin_endpoint_says_what_is_stale_and_what_is_warned() {
    use weft_control_plane::server;
    let api = FakeApi::default();
    web_and_canary(&api, 1);
    api.apply(HTTP_ROUTES, canary_route("split", "web", "missing", 10));
    let url = api.serve().await;
    let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    let cp = server::start(server::Config {
        source: server::Source::Kubernetes(client),
        xds_addr: "127.0.0.1:0".parse().unwrap(),
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        trust_domain: "cluster.local".into(),
        debounce: Debounce::default(),
        xds_tls: None,
        ca: server::CaConfig::in_dir(tempfile::tempdir().unwrap().keep()),
    })
    .await
    .unwrap();
    let admin = cp.admin_addr;
    let get = |path: &'static str| {
        tokio::task::spawn_blocking(move || weft_e2e::http_get(admin, path).unwrap())
    };
    let mut snapshots = cp.snapshots.clone();
    tokio::time::timeout(Duration::from_secs(10), snapshots.wait_for(Option::is_some))
        .await
        .unwrap()
        .unwrap();
    let (status, body) = get("/debug/warnings").await.unwrap();
    assert_eq!(status, 200);
    let warnings: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(warnings[0]["kind"], "HTTPRoute", "{body}");
    assert_eq!(warnings[0]["object"], "ns/split", "{body}");
    assert!(
        warnings[0]["message"].as_str().unwrap().contains("missing"),
        "{body}"
    );

    api.set_down(true);
    let t0 = Instant::now();
    loop {
        let (status, body) = get("/ready").await.unwrap();
        assert_eq!(status, 200, "{body}");
        if body.contains("stale: Service") {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, metrics) = get("/metrics").await.unwrap();
    assert!(
        metrics.contains(r#"weft_registry_sync_age_seconds{kind="Service"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"weft_registry_warnings{kind="HTTPRoute"} 1"#),
        "{metrics}"
    );
}
