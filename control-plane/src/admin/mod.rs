//! The control plane's admin endpoint: `/ready`, `/metrics`, `/debug/connections`,
//! `/debug/config_dump?node=ID`.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use prometheus_client::registry::Registry;
use prost::Message;
use serde_json::json;
use tokio::net::TcpListener;
use weft_proto::xds::config::{
    cluster::v3::Cluster, endpoint::v3::ClusterLoadAssignment, listener::v3::Listener,
    route::v3::RouteConfiguration,
};

use crate::registry;
use crate::translate::{self, ResourceType};
use crate::xds::{Connections, SnapshotRx};

/// What the admin endpoint reads.
#[derive(Clone)]
pub struct Admin {
    /// Metrics of every module.
    pub registry: Arc<Registry>,
    /// Current snapshot.
    pub snapshots: SnapshotRx,
    /// Open xDS streams.
    pub connections: Connections,
    /// How current the registry's kinds are, and its standing warnings.
    pub registry_status: registry::Status,
}

/// Binds `addr` and serves; returns the bound address (useful with port 0).
pub async fn bind(addr: SocketAddr, admin: Admin) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    // The proxy's admin server, hardened once for both: silent clients let go, accept errors
    // (descriptors exhausted) backed off instead of spun on.
    tokio::spawn(weft_proto::admin_server::serve(listener, move |req| {
        admin.handle(req)
    }));
    Ok(local)
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(body.into()))
        .expect("static response parts are valid")
}

fn json_response(value: &serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(
            serde_json::to_vec_pretty(value).unwrap_or_default(),
        )))
        .expect("static response parts are valid")
}

impl Admin {
    fn handle(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        match req.uri().path() {
            "/ready" => match self.snapshots.borrow().as_ref() {
                Some(s) => text(StatusCode::OK, self.ready(s.generation)),
                None => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: waiting for the registry's first sync\n",
                ),
            },
            "/live" => text(StatusCode::OK, "live\n"),
            "/metrics" => {
                let mut out = String::new();
                match prometheus_client::encoding::text::encode(&mut out, &self.registry) {
                    Ok(()) => {
                        // Prometheus asks for OpenMetrics; curl and promtool get the classic text.
                        let accept = req
                            .headers()
                            .get(header::ACCEPT)
                            .and_then(|a| a.to_str().ok());
                        let (body, content_type) = weft_proto::exposition::negotiate(out, accept);
                        Response::builder()
                            .header(header::CONTENT_TYPE, content_type)
                            .body(Full::new(Bytes::from(body)))
                            .expect("static response parts are valid")
                    }
                    Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
                }
            }
            "/debug/warnings" => json_response(&json!(self.registry_status.warnings())),
            "/debug/connections" => {
                let conns = self.connections.lock().clone();
                json_response(&json!(conns.into_values().collect::<Vec<_>>()))
            }
            "/debug/config_dump" => {
                let node = req
                    .uri()
                    .query()
                    .and_then(|q| {
                        q.split('&')
                            .find_map(|kv| kv.strip_prefix("node="))
                            .map(str::to_string)
                    })
                    .unwrap_or_default();
                let Some(snap) = self.snapshots.borrow().clone() else {
                    return text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n");
                };
                json_response(&config_dump(&snap.mesh, &node, snap.generation))
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "try /ready, /metrics, /debug/warnings, /debug/connections, \
                 /debug/config_dump?node=ID\n",
            ),
        }
    }
}

impl Admin {
    /// `/ready`'s body once a mesh is served: its generation, and what of it may be old. A
    /// stale kind does not make the control plane unready: its last mesh is the best there is,
    /// and proxies cut off from every control plane would be worse off.
    fn ready(&self, generation: u64) -> String {
        let mut body = format!("ready: generation {generation}\n");
        for (kind, age, why) in self.registry_status.stale() {
            body += &format!(
                "stale: {kind}: not current for {}s ({why}); its last objects stay in force\n",
                age.as_secs()
            );
        }
        for kind in self.registry_status.not_served() {
            body += &format!("not served: {kind} (CRD not installed?): read as empty\n");
        }
        body
    }
}

/// A readable dump of what `node` is sent.
fn config_dump(mesh: &crate::model::Mesh, node: &str, generation: u64) -> serde_json::Value {
    let workload = translate::node_workload(mesh, node).map(|w| w.key.to_string());
    let mut types = serde_json::Map::new();
    for (t, resources) in translate::for_node(mesh, node) {
        let list: Vec<_> = resources
            .values()
            .map(|r| {
                let body = &r.body.value[..];
                let decoded = match t {
                    ResourceType::Cluster => Cluster::decode(body).map(|m| format!("{m:?}")),
                    ResourceType::Endpoint => {
                        ClusterLoadAssignment::decode(body).map(|m| format!("{m:?}"))
                    }
                    ResourceType::Listener => Listener::decode(body).map(|m| format!("{m:?}")),
                    ResourceType::Route => {
                        RouteConfiguration::decode(body).map(|m| format!("{m:?}"))
                    }
                };
                json!({
                    "name": r.name,
                    "version": r.version,
                    "resource": decoded.unwrap_or_else(|e| e.to_string()),
                })
            })
            .collect();
        types.insert(t.short().to_string(), json!(list));
    }
    json!({
        "node": node,
        "workload": workload,
        "generation": generation,
        "resources": types,
    })
}
