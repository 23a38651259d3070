//! The Kubernetes registry against an in-process API server that speaks the real list/watch
//! protocol: JSON lists with resourceVersion, newline-delimited watch events, bookmarks, `410 Gone`.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use weft_control_plane::model::{Key, Mesh};
use weft_control_plane::registry;

const SERVICES: &str = "/api/v1/services";
const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
const PODS: &str = "/api/v1/pods";
const GRPC_ROUTES: &str = "/apis/gateway.networking.k8s.io/v1/grpcroutes";
const TCP_ROUTES: &str = "/apis/gateway.networking.k8s.io/v1alpha2/tcproutes";

#[derive(Default)]
struct Kind {
    items: BTreeMap<String, Value>,
    watchers: Vec<mpsc::UnboundedSender<Value>>,
}

#[derive(Default)]
struct State {
    rv: u64,
    kinds: HashMap<&'static str, Kind>,
    gates: HashMap<&'static str, Arc<Notify>>,
    /// Kinds answered with this status (404: CRD not installed; 403: not allowed) instead.
    refused: HashMap<&'static str, u16>,
}

/// A fake API server: the real protocol, state held in memory.
#[derive(Clone, Default)]
struct FakeApi(Arc<Mutex<State>>);

const SERVED: [(&str, &str, &str); 8] = [
    ("/api/v1/namespaces", "v1", "Namespace"),
    (SERVICES, "v1", "Service"),
    (PODS, "v1", "Pod"),
    (SLICES, "discovery.k8s.io/v1", "EndpointSlice"),
    (
        "/apis/gateway.networking.k8s.io/v1/httproutes",
        "gateway.networking.k8s.io/v1",
        "HTTPRoute",
    ),
    (GRPC_ROUTES, "gateway.networking.k8s.io/v1", "GRPCRoute"),
    (TCP_ROUTES, "gateway.networking.k8s.io/v1alpha2", "TCPRoute"),
    // weft.io CRDs are deliberately absent: "not installed" must read as empty.
    ("/api/v1/configmaps", "v1", "ConfigMap"),
];

fn type_of(path: &str) -> Option<(&'static str, &'static str, &'static str)> {
    SERVED.into_iter().find(|(p, _, _)| *p == path)
}

fn key(obj: &Value) -> String {
    format!(
        "{}/{}",
        obj["metadata"]["namespace"].as_str().unwrap_or(""),
        obj["metadata"]["name"].as_str().unwrap()
    )
}

impl FakeApi {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }

    fn event(&self, path: &'static str, kind: &str, mut obj: Value, store: bool) {
        let mut st = self.state();
        st.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
        let k = st.kinds.entry(path).or_default();
        if kind == "DELETED" {
            k.items.remove(&key(&obj));
        } else if store {
            k.items.insert(key(&obj), obj.clone());
        }
        let ev = json!({"type": kind, "object": obj});
        k.watchers.retain(|w| w.send(ev.clone()).is_ok());
    }

    fn apply(&self, path: &'static str, obj: Value) {
        let exists = self
            .state()
            .kinds
            .get(path)
            .is_some_and(|k| k.items.contains_key(&key(&obj)));
        self.event(path, if exists { "MODIFIED" } else { "ADDED" }, obj, true);
    }

    fn delete(&self, path: &'static str, obj: Value) {
        self.event(path, "DELETED", obj, false);
    }

    /// Changes state without telling watchers: only a re-list can see it.
    fn delete_silently(&self, path: &'static str, obj: &Value) {
        let mut st = self.state();
        st.rv += 1;
        st.kinds.entry(path).or_default().items.remove(&key(obj));
    }

    fn bookmark(&self, path: &'static str) {
        let (_, api_version, kind) = type_of(path).unwrap();
        let rv = self.state().rv.to_string();
        let ev = json!({"type": "BOOKMARK", "object": {"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": rv}}});
        self.state()
            .kinds
            .entry(path)
            .or_default()
            .watchers
            .retain(|w| w.send(ev.clone()).is_ok());
    }

    /// Ends every watch of `path` with `410 Gone`, as etcd compaction does.
    fn expire(&self, path: &'static str) {
        let ev = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": "too old resource version", "reason": "Expired", "code": 410}});
        let mut st = self.state();
        let k = st.kinds.entry(path).or_default();
        for w in k.watchers.drain(..) {
            let _ = w.send(ev.clone());
        }
    }

    /// Holds `path`'s list requests until the returned handle is notified.
    fn gate(&self, path: &'static str) -> Arc<Notify> {
        let n = Arc::new(Notify::new());
        self.state().gates.insert(path, n.clone());
        n
    }

    async fn handle(
        &self,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> hyper::Response<BoxBody<Bytes, Infallible>> {
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let served = type_of(&path);
        let refused = served.and_then(|(p, _, _)| self.state().refused.get(p).copied());
        let (Some((path, api_version, kind)), None) = (served, refused) else {
            let (code, reason) = match refused {
                Some(403) => (403, "Forbidden"),
                Some(500) => (500, "InternalError"),
                _ => (404, "NotFound"),
            };
            let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code,
                "message": format!("{reason}: {path}")});
            return hyper::Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.to_string())).boxed())
                .unwrap();
        };
        if query
            .split('&')
            .any(|kv| kv == "watch=true" || kv == "watch=1")
        {
            let (tx, mut rx) = mpsc::unbounded_channel::<Value>();
            self.state()
                .kinds
                .entry(path)
                .or_default()
                .watchers
                .push(tx);
            let (frames_tx, frames_rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
            tokio::spawn(async move {
                while let Some(ev) = rx.recv().await {
                    let last = ev["type"] == "ERROR";
                    let line = format!("{ev}\n");
                    if frames_tx
                        .send(Ok(Frame::data(Bytes::from(line))))
                        .await
                        .is_err()
                        || last
                    {
                        return;
                    }
                }
            });
            return hyper::Response::builder()
                .header("content-type", "application/json")
                .body(StreamBody::new(ReceiverStream::new(frames_rx)).boxed())
                .unwrap();
        }
        let gate = self.state().gates.get(path).cloned();
        if let Some(g) = gate {
            g.notified().await;
            self.state().gates.remove(path);
        }
        let st = self.state();
        let items: Vec<Value> = st
            .kinds
            .get(path)
            .map(|k| k.items.values().cloned().collect())
            .unwrap_or_default();
        let body = json!({"apiVersion": api_version, "kind": format!("{kind}List"),
            "metadata": {"resourceVersion": st.rv.to_string()}, "items": items});
        hyper::Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())).boxed())
            .unwrap()
    }

    async fn serve(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let api = self.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let api = api.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let api = api.clone();
                        async move { Ok::<_, Infallible>(api.handle(req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        format!("http://{addr}")
    }
}

fn service(name: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "ns"},
        "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
}

fn slice(name: &str, ip: &str) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{name}-x"), "namespace": "ns", "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}]})
}

/// The Kubernetes registry against the API server at `url` (20 ms debounce, a look for kinds it
/// could not read every 100 ms), and the meshes it publishes.
fn reflect(url: &str) -> watch::Receiver<Option<Arc<Mesh>>> {
    let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    let (tx, rx) = watch::channel(None);
    let metrics =
        registry::Metrics::register(&mut prometheus_client::registry::Registry::default());
    tokio::spawn(registry::kube::run(
        client,
        "cluster.local".into(),
        metrics,
        tx,
        (Duration::from_millis(20), Duration::from_millis(100)),
    ));
    rx
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

    // Pods have not listed yet: nothing may be published.
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
    api.state().refused.insert(TCP_ROUTES, 404);
    api.state().refused.insert(GRPC_ROUTES, 403);
    const HTTP_ROUTES: &str = "/apis/gateway.networking.k8s.io/v1/httproutes";
    api.state().refused.insert(HTTP_ROUTES, 500);
    let url = api.serve().await;
    let mut rx = reflect(&url);
    until(&mut rx, "the mesh, without the kinds it cannot read", |m| {
        m.services.len() == 4
    })
    .await;

    // The CRD is installed and a route applied: read at the next look.
    api.state().refused.remove(TCP_ROUTES);
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
    api.state().refused.remove(GRPC_ROUTES);
    until(&mut rx, "the GRPCRoute", |m| {
        !m.services[&Key::new("ns", "api")].ports[0]
            .routes
            .is_empty()
    })
    .await;

    // The failing kind answers again.
    api.state().refused.remove(HTTP_ROUTES);
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
    const HTTP_ROUTES: &str = "/apis/gateway.networking.k8s.io/v1/httproutes";
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
