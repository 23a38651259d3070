//! Admin (127.0.0.1 only): `/config_dump`, `/clusters`, `/logging?level=`, and everything the
//! health port serves: `/ready` (a complete config is applied), `/live`, `/metrics` (Prometheus).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::TcpListener;

use crate::store::Store;

mod logging;

pub use logging::{Apply, LogFilter};

/// What the admin endpoints read.
#[derive(Clone)]
pub struct Admin {
    /// The live config.
    pub store: Arc<Store>,
    /// What `/metrics` renders.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The log filter, changed at run time by `/logging`.
    pub log: Arc<LogFilter>,
    /// Drain state: a draining proxy is not ready, so the endpoint stops getting new traffic.
    pub drain: crate::drain::Drain,
    /// The connections accepted and open (`/debug/connections`).
    pub connections: Arc<crate::connections::Connections>,
    /// The workload identity, when the proxy has one to get: not ready until it has a
    /// certificate; `/certs` shows it.
    pub identity: Option<Arc<crate::identity::Identity>>,
    /// Serve the config and log endpoints too (the loopback admin port), not only health and
    /// metrics.
    pub full: bool,
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(body.into()))
        .expect("static parts are valid")
}

fn json(value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(value) {
        Ok(b) => reply(StatusCode::OK, "application/json", b),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            e.to_string(),
        ),
    }
}

impl Admin {
    fn handle(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        match req.uri().path() {
            "/ready" if self.drain.is_draining() => {
                reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "draining\n")
            }
            "/ready"
                if self
                    .identity
                    .as_ref()
                    .is_some_and(|i| i.current().is_none()) =>
            {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "waiting for a workload certificate\n",
                )
            }
            "/ready" if self.store.is_ready() => reply(StatusCode::OK, "text/plain", "ready\n"),
            "/ready" => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "waiting for the first complete config\n",
            ),
            "/live" => reply(StatusCode::OK, "text/plain", "live\n"),
            "/metrics" => {
                let accept = req
                    .headers()
                    .get(header::ACCEPT)
                    .and_then(|a| a.to_str().ok());
                let (body, content_type) =
                    weft_proto::exposition::negotiate(self.metrics.render(true), accept);
                reply(StatusCode::OK, content_type, body)
            }
            _ if !self.full => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
            "/config_dump" => json(&*self.store.load()),
            "/clusters" => json(&self.store.load().endpoints),
            "/debug/connections" => json(&self.connections.view()),
            "/certs" => match &self.identity {
                Some(i) => json(&i.view()),
                None => json(&serde_json::json!({
                    "identity": null,
                    "reason": "no CA token given (--ca-token-file): mTLS is off",
                })),
            },
            "/logging" => match self.log.handle(req.uri().query()) {
                Ok(text) => reply(StatusCode::OK, "text/plain", text),
                Err(e) => reply(StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n")),
            },
            // A preStop hook's way to drain before SIGTERM (Envoy's graceful
            // `/drain_listeners`): unready, connections close after their request, listeners
            // still accept; SIGTERM stops them and exits.
            "/drain" if req.method() == hyper::Method::POST => {
                self.drain.start();
                reply(StatusCode::OK, "text/plain", "draining\n")
            }
            "/drain" => reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "POST /drain starts draining\n",
            ),
            _ => reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                "try /ready /live /config_dump /clusters /certs /debug/connections /logging?level= /drain (POST)\n",
            ),
        }
    }
}

/// Binds `addr` and serves the admin endpoints on it; returns the bound address.
pub async fn bind(addr: SocketAddr, admin: Admin) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    // The health port is open to the pod network: the shared server lets go of clients that
    // send nothing and backs off when descriptors run out.
    tokio::spawn(weft_proto::admin_server::serve(listener, move |req| {
        admin.handle(req)
    }));
    Ok(local)
}
