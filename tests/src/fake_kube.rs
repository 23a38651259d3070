//! An in-process Kubernetes API server for the registry's tests and benchmarks: the real
//! list/watch protocol (JSON lists with resourceVersion, newline-delimited watch events,
//! bookmarks, `410 Gone`) over real HTTP, with its state in memory, and the failures a real one
//! goes through: restarts, outages, CRDs deleted and installed again, permissions taken away.
//! kube-rs' client talks to it as to any API server; no part of weft is imitated.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;

/// The Services' path.
pub const SERVICES: &str = "/api/v1/services";
/// The EndpointSlices' path.
pub const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
/// The Pods' path.
pub const PODS: &str = "/api/v1/pods";
/// The HTTPRoutes' path.
pub const HTTP_ROUTES: &str = "/apis/gateway.networking.k8s.io/v1/httproutes";
/// The GRPCRoutes' path.
pub const GRPC_ROUTES: &str = "/apis/gateway.networking.k8s.io/v1/grpcroutes";
/// The TCPRoutes' path.
pub const TCP_ROUTES: &str = "/apis/gateway.networking.k8s.io/v1alpha2/tcproutes";
/// The Namespaces' path.
pub const NAMESPACES: &str = "/api/v1/namespaces";
/// The ConfigMaps' path (listed and watched here; written one by one at their own paths).
pub const CONFIG_MAPS: &str = "/api/v1/configmaps";

/// Every path it serves, with its apiVersion and kind. weft.io's CRDs are absent: a cluster
/// where they are not installed must read as one with none of their objects.
const SERVED: [(&str, &str, &str); 8] = [
    (NAMESPACES, "v1", "Namespace"),
    (SERVICES, "v1", "Service"),
    (PODS, "v1", "Pod"),
    (SLICES, "discovery.k8s.io/v1", "EndpointSlice"),
    (HTTP_ROUTES, "gateway.networking.k8s.io/v1", "HTTPRoute"),
    (GRPC_ROUTES, "gateway.networking.k8s.io/v1", "GRPCRoute"),
    (TCP_ROUTES, "gateway.networking.k8s.io/v1alpha2", "TCPRoute"),
    (CONFIG_MAPS, "v1", "ConfigMap"),
];

fn type_of(path: &str) -> Option<(&'static str, &'static str, &'static str)> {
    SERVED.into_iter().find(|(p, _, _)| *p == path)
}

fn key(obj: &Value) -> String {
    format!(
        "{}/{}",
        obj["metadata"]["namespace"].as_str().unwrap_or(""),
        obj["metadata"]["name"].as_str().unwrap_or("")
    )
}

#[derive(Default)]
struct Kind {
    items: BTreeMap<String, Value>,
    watchers: Vec<mpsc::UnboundedSender<Value>>,
    /// Every event since the watch cache started, with its resourceVersion: a watch resumed
    /// from an older version gets those after it first, as from a real API server.
    history: Vec<(u64, Value)>,
}

#[derive(Default)]
struct State {
    rv: u64,
    kinds: HashMap<&'static str, Kind>,
    gates: HashMap<&'static str, Arc<Notify>>,
    /// Kinds answered with this status (404: CRD not installed; 403: not allowed) instead.
    refused: HashMap<&'static str, u16>,
    /// Connections are dropped as they are accepted: the API server is down.
    down: bool,
    /// A watch from a resourceVersion below this one is answered `410 Gone`: the watch cache
    /// of a restarted API server starts here.
    oldest_watchable: u64,
    /// Requests received, by path (lists and watches alike).
    requests: HashMap<String, u64>,
    /// Secrets, by `namespace/name` (read and created one by one, not listed or watched).
    secrets: BTreeMap<String, Value>,
    /// Service-account tokens the TokenReview API knows: the user name and audiences of each.
    tokens: HashMap<String, (String, Vec<String>)>,
}

/// The fake API server: clone it to keep a handle on its state while it serves.
#[derive(Clone, Default)]
pub struct FakeApi(Arc<Mutex<State>>);

impl FakeApi {
    fn state(&self) -> MutexGuard<'_, State> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn event(&self, path: &'static str, kind: &str, mut obj: Value, store: bool) {
        let mut st = self.state();
        st.rv += 1;
        let rv = st.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let k = st.kinds.entry(path).or_default();
        if kind == "DELETED" {
            k.items.remove(&key(&obj));
        } else if store {
            k.items.insert(key(&obj), obj.clone());
        }
        let ev = json!({"type": kind, "object": obj});
        k.watchers.retain(|w| w.send(ev.clone()).is_ok());
        k.history.push((rv, ev));
    }

    /// Creates or replaces an object, telling the watchers.
    pub fn apply(&self, path: &'static str, obj: Value) {
        let exists = self
            .state()
            .kinds
            .get(path)
            .is_some_and(|k| k.items.contains_key(&key(&obj)));
        self.event(path, if exists { "MODIFIED" } else { "ADDED" }, obj, true);
    }

    /// Deletes an object, telling the watchers.
    pub fn delete(&self, path: &'static str, obj: Value) {
        self.event(path, "DELETED", obj, false);
    }

    /// Changes state without telling watchers: only a re-list can see it.
    pub fn delete_silently(&self, path: &'static str, obj: &Value) {
        let mut st = self.state();
        st.rv += 1;
        st.kinds.entry(path).or_default().items.remove(&key(obj));
    }

    /// Sends a bookmark to `path`'s watchers.
    pub fn bookmark(&self, path: &'static str) {
        let (_, api_version, kind) = type_of(path).expect("a served path");
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
    pub fn expire(&self, path: &'static str) {
        let mut st = self.state();
        let k = st.kinds.entry(path).or_default();
        for w in k.watchers.drain(..) {
            let _ = w.send(gone());
        }
    }

    /// Holds `path`'s list requests until the returned handle is notified.
    pub fn gate(&self, path: &'static str) -> Arc<Notify> {
        let n = Arc::new(Notify::new());
        self.state().gates.insert(path, n.clone());
        n
    }

    /// Answers `path` with `code` (404: its CRD deleted or not installed; 403: not allowed;
    /// 500), or normally again with `None`. A 404 deletes its objects, as deleting a CRD does,
    /// and every refusal ends the kind's open watches.
    pub fn refuse(&self, path: &'static str, code: Option<u16>) {
        let mut st = self.state();
        match code {
            Some(code) => {
                st.refused.insert(path, code);
                let k = st.kinds.entry(path).or_default();
                if code == 404 {
                    k.items.clear();
                }
                k.watchers.clear();
            }
            None => {
                st.refused.remove(path);
            }
        }
    }

    /// Takes the API server down (connections dropped as they come) or brings it back. Going
    /// down ends every open watch, as a restart does; coming back, its watch cache starts
    /// afresh, so a watch resumed from before answers `410 Gone`.
    pub fn set_down(&self, down: bool) {
        let mut st = self.state();
        st.down = down;
        if down {
            for k in st.kinds.values_mut() {
                k.watchers.clear();
            }
        } else {
            st.rv += 1;
            st.oldest_watchable = st.rv;
            for k in st.kinds.values_mut() {
                k.history.clear();
            }
        }
    }

    /// Makes `token` a service-account token of `username` (`system:serviceaccount:ns:sa`)
    /// for `audiences`, as TokenReview will say.
    pub fn token(&self, token: &str, username: &str, audiences: &[&str]) {
        let audiences = audiences.iter().map(|a| a.to_string()).collect();
        self.state()
            .tokens
            .insert(token.to_string(), (username.to_string(), audiences));
    }

    /// The Secret `namespace/name`, if one was created.
    pub fn secret(&self, namespace: &str, name: &str) -> Option<Value> {
        self.state()
            .secrets
            .get(&format!("{namespace}/{name}"))
            .cloned()
    }

    /// An object of a listed kind, by namespace and name.
    pub fn object(&self, path: &'static str, namespace: &str, name: &str) -> Option<Value> {
        let st = self.state();
        st.kinds
            .get(path)?
            .items
            .get(&format!("{namespace}/{name}"))
            .cloned()
    }

    /// Answers the requests that are not a kind's list or watch: a Secret read or created, a
    /// ConfigMap applied, a TokenReview; `None` for the rest.
    async fn one_object(
        &self,
        method: &hyper::Method,
        path: &str,
        body: Bytes,
    ) -> Option<hyper::Response<BoxBody<Bytes, Infallible>>> {
        let status = |code: u16, reason: &str, message: String| {
            let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "reason": reason, "code": code, "message": message});
            respond(code, Full::new(Bytes::from(body.to_string())).boxed())
        };
        let ok = |code: u16, v: Value| respond(code, Full::new(Bytes::from(v.to_string())).boxed());
        if path == "/apis/authentication.k8s.io/v1/tokenreviews" && method == hyper::Method::POST {
            let mut review: Value = serde_json::from_slice(&body).ok()?;
            let token = review["spec"]["token"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let asked: Vec<String> = review["spec"]["audiences"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let known = self.state().tokens.get(&token).cloned();
            review["status"] = match known {
                Some((username, audiences)) => {
                    let common: Vec<&String> =
                        asked.iter().filter(|a| audiences.contains(a)).collect();
                    if asked.is_empty() || !common.is_empty() {
                        json!({"authenticated": true, "user": {"username": username}, "audiences": common})
                    } else {
                        json!({"authenticated": false, "error": "token audiences are invalid for the target audiences"})
                    }
                }
                None => json!({"authenticated": false, "error": "invalid bearer token"}),
            };
            return Some(ok(201, review));
        }
        let rest = path.strip_prefix("/api/v1/namespaces/")?;
        let (namespace, rest) = rest.split_once('/')?;
        if let Some(name) = rest.strip_prefix("configmaps/") {
            // Server-side apply: created, or replaced by what the manager says (weft's maps
            // have no other manager here).
            if method != hyper::Method::PATCH {
                return None;
            }
            if self.state().refused.get(CONFIG_MAPS) == Some(&403) {
                return Some(status(
                    403,
                    "Forbidden",
                    format!("configmaps \"{name}\" is forbidden"),
                ));
            }
            let mut obj: Value = serde_json::from_slice(&body).ok()?;
            obj["metadata"]["namespace"] = json!(namespace);
            obj["metadata"]["name"] = json!(name);
            self.apply(CONFIG_MAPS, obj.clone());
            return Some(ok(200, obj));
        }
        let name = rest.strip_prefix("secrets")?;
        match (method, name.strip_prefix('/')) {
            (&hyper::Method::GET, Some(name)) => {
                let found = self.secret(namespace, name);
                Some(match found {
                    Some(v) => ok(200, v),
                    None => status(404, "NotFound", format!("secrets \"{name}\" not found")),
                })
            }
            (&hyper::Method::POST, None) => {
                let mut obj: Value = serde_json::from_slice(&body).ok()?;
                let name = obj["metadata"]["name"].as_str()?.to_string();
                let mut st = self.state();
                let key = format!("{namespace}/{name}");
                if st.secrets.contains_key(&key) {
                    return Some(status(
                        409,
                        "AlreadyExists",
                        format!("secrets \"{name}\" already exists"),
                    ));
                }
                st.rv += 1;
                obj["metadata"]["namespace"] = json!(namespace);
                obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
                st.secrets.insert(key, obj.clone());
                Some(ok(201, obj))
            }
            _ => None,
        }
    }

    /// How many requests `path` has had.
    pub fn requests(&self, path: &str) -> u64 {
        self.state().requests.get(path).copied().unwrap_or(0)
    }

    async fn handle(
        &self,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> Result<hyper::Response<BoxBody<Bytes, Infallible>>, std::io::Error> {
        if self.state().down {
            // Down: the connection is cut, as a stopped server's are.
            return Err(std::io::ErrorKind::ConnectionReset.into());
        }
        Ok(self.respond_to(req).await)
    }

    async fn respond_to(
        &self,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> hyper::Response<BoxBody<Bytes, Infallible>> {
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        *self.state().requests.entry(path.clone()).or_default() += 1;
        let method = req.method().clone();
        if method != hyper::Method::GET
            || path.contains("/secrets")
            || path.contains("tokenreviews")
        {
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return match self.one_object(&method, &path, body).await {
                Some(r) => r,
                None => respond(405, Full::new(Bytes::from_static(b"{}")).boxed()),
            };
        }
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
            return respond(code, Full::new(Bytes::from(body.to_string())).boxed());
        };
        let param = |name: &str| {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .map(str::to_string)
        };
        if matches!(param("watch").as_deref(), Some("true" | "1")) {
            let (tx, rx) = mpsc::unbounded_channel::<Value>();
            {
                let mut st = self.state();
                let from: u64 = param("resourceVersion")
                    .and_then(|rv| rv.parse().ok())
                    .unwrap_or(0);
                if from < st.oldest_watchable {
                    let _ = tx.send(gone());
                } else {
                    let k = st.kinds.entry(path).or_default();
                    for (_, ev) in k.history.iter().filter(|(rv, _)| *rv > from) {
                        let _ = tx.send(ev.clone());
                    }
                    k.watchers.push(tx);
                }
            }
            return respond(200, watch_body(rx));
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
        respond(200, Full::new(Bytes::from(body.to_string())).boxed())
    }

    /// Serves on a loopback port; returns its URL.
    pub async fn serve(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("bound address");
        let api = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                if api.state().down {
                    drop(stream);
                    continue;
                }
                let api = api.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let api = api.clone();
                        async move { api.handle(req).await }
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

/// The watch event a watch from a compacted resourceVersion gets.
fn gone() -> Value {
    json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": "too old resource version", "reason": "Expired", "code": 410}})
}

/// A watch response: one JSON event a line, as they come; it ends after an `ERROR` event or
/// when the server drops the watch.
fn watch_body(mut rx: mpsc::UnboundedReceiver<Value>) -> BoxBody<Bytes, Infallible> {
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
    StreamBody::new(ReceiverStream::new(frames_rx)).boxed()
}

fn respond(
    status: u16,
    body: BoxBody<Bytes, Infallible>,
) -> hyper::Response<BoxBody<Bytes, Infallible>> {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body)
        .expect("static response parts are valid")
}

/// A Service `ns/<name>` with one HTTP port, 80.
pub fn service(name: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "ns"},
        "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
}

/// The EndpointSlice of Service `ns/<name>`, with one ready endpoint at `ip`:8080.
pub fn slice(name: &str, ip: &str) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{name}-x"), "namespace": "ns", "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}]})
}

/// A running, ready Pod `ns/<name>` at `ip`, labelled `app: <app>`, with an annotation `note`
/// (which weft does not read) and a status as the kubelet writes it.
pub fn pod(name: &str, app: &str, ip: &str, note: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "ns", "labels": {"app": app},
            "annotations": {"note": note}},
        "spec": {"serviceAccountName": app, "containers": [{"name": "app", "image": "app:1",
            "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0,
                "image": "app:1", "imageID": "app@sha256:1"}]}})
}

/// An HTTPRoute `ns/<name>` on Service `ns/<service>` sending `weight` of 100 to `canary`.
pub fn canary_route(name: &str, service: &str, canary: &str, weight: u32) -> Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": service}],
            "rules": [{"backendRefs": [
                {"name": service, "port": 80, "weight": 100 - weight},
                {"name": canary, "port": 80, "weight": weight}]}]}})
}
