//! Wiring of `weft serve`: registry -> snapshots -> ADS and admin servers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;

use crate::xds::{AdsServer, Connections, SnapshotRx};
use crate::{admin, ca, registry, xds};

/// How often the Kubernetes registry looks again for a kind it cannot read (a CRD not installed
/// yet or deleted, a role without it): a CRD installed again is read within a few seconds,
/// and a `404` for a kind that is not there costs the API server next to nothing.
const KUBE_PROBE_EVERY: Duration = Duration::from_secs(2);

/// Where the mesh comes from.
#[derive(Clone)]
pub enum Source {
    /// A directory of Kubernetes YAML, watched.
    Files(PathBuf),
    /// A Kubernetes API server, reflected.
    Kubernetes(kube::Client),
}

/// Settings of a running control plane.
#[derive(Clone)]
pub struct Config {
    /// Registry.
    pub source: Source,
    /// ADS (gRPC) listen address.
    pub xds_addr: SocketAddr,
    /// Admin (HTTP) listen address.
    pub admin_addr: SocketAddr,
    /// SPIFFE trust domain.
    pub trust_domain: String,
    /// How a burst of registry changes becomes one push.
    pub debounce: registry::Debounce,
    /// The mesh CA.
    pub ca: CaConfig,
    /// xDS and the CA over TLS too (port 15012), with a certificate from the mesh CA.
    pub xds_tls: Option<TlsPort>,
}

/// Where the TLS port listens and the names its certificate carries.
#[derive(Clone, Debug)]
pub struct TlsPort {
    /// Listen address.
    pub addr: SocketAddr,
    /// DNS names or IP addresses sidecars reach the control plane by.
    pub names: Vec<String>,
}

/// Settings of the mesh CA.
#[derive(Clone, Debug)]
pub struct CaConfig {
    /// Where its key and certificate are.
    pub source: ca::Source,
    /// More roots to trust (PEM file).
    pub extra_roots: Option<PathBuf>,
    /// Workload certificate lifetimes.
    pub lifetimes: ca::Lifetimes,
}

impl CaConfig {
    /// A CA whose root is kept in `dir`, with default lifetimes.
    pub fn in_dir(dir: PathBuf) -> Self {
        Self {
            source: ca::Source::Dir(dir),
            extra_roots: None,
            lifetimes: ca::Lifetimes::default(),
        }
    }
}

/// A started control plane.
#[derive(Debug)]
pub struct Running {
    /// Bound ADS address.
    pub xds_addr: SocketAddr,
    /// Bound address of the TLS port, if it serves one.
    pub xds_tls_addr: Option<SocketAddr>,
    /// Bound admin address.
    pub admin_addr: SocketAddr,
    /// Current snapshot.
    pub snapshots: SnapshotRx,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops every task of this control plane.
    pub fn shutdown(self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Binds both listeners and starts the registry, the snapshot builder and both servers.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let mut reg = Registry::default();
    let registry_metrics = registry::Metrics::register(&mut reg);
    let registry_status = registry_metrics.status.clone();
    let xds_metrics = xds::Metrics::register(&mut reg);
    let connections = Connections::default();
    let ca_metrics = ca::service::Metrics::register(&mut reg);
    // A CA that cannot start is said at once, naming the file: a mesh without it could not
    // give any sidecar an identity.
    let (extra, td, lifetimes) = (
        config.ca.extra_roots.as_deref(),
        &config.trust_domain,
        config.ca.lifetimes,
    );
    let authority = match (&config.ca.source, &config.source) {
        (ca::Source::Secret { namespace, name }, Source::Kubernetes(client)) => {
            let secret = (namespace.as_str(), name.as_str());
            ca::Authority::load_secret(client, secret, extra, td, lifetimes).await?
        }
        (source, _) => ca::Authority::load(source, extra, td, lifetimes)?,
    };
    let authenticator = match &config.source {
        Source::Files(_) => ca::service::Authenticator::Tokens,
        Source::Kubernetes(client) => ca::service::Authenticator::Kubernetes(client.clone()),
    };
    let authority = Arc::new(authority);
    let bundle = authority.trust_bundle_pem();
    // Made before anything starts, so a certificate that cannot be issued stops the start.
    let tls_port = match &config.xds_tls {
        Some(t) => Some((
            TcpListener::bind(t.addr).await?,
            crate::tls::Port::new(authority.clone(), t.names.clone())?,
        )),
        None => None,
    };
    let ca_service = ca::CaService::new(authority, authenticator, ca_metrics);

    let (mesh_tx, mesh_rx) = watch::channel(None);
    let (snap_tx, snap_rx) = watch::channel(None);
    let mut tasks = Vec::new();

    match config.source {
        Source::Kubernetes(client) => {
            let settings = registry::kube::Settings {
                trust_domain: config.trust_domain.clone(),
                debounce: config.debounce,
                probe_every: KUBE_PROBE_EVERY,
            };
            // The roots where every namespace's pods can mount them (Istio's
            // `istio-ca-root-cert`).
            tasks.push(tokio::spawn(ca::bundle::publish(client.clone(), bundle)));
            tasks.push(tokio::spawn(registry::kube::run(
                client,
                settings,
                registry_metrics,
                mesh_tx,
            )));
        }
        Source::Files(dir) => {
            let td = config.trust_domain.clone();
            let debounce = config.debounce;
            tasks.push(tokio::spawn(async move {
                let run = registry::run_file(dir, td, debounce, registry_metrics, mesh_tx);
                if let Err(e) = run.await {
                    tracing::error!("file registry stopped: {e:#}");
                }
            }));
        }
    }
    tasks.push(tokio::spawn(xds::snapshot::run(mesh_rx, snap_tx)));

    let admin_addr = admin::bind(
        config.admin_addr,
        admin::Admin {
            registry: Arc::new(reg),
            snapshots: snap_rx.clone(),
            connections: connections.clone(),
            registry_status,
        },
    )
    .await?;

    let listener = TcpListener::bind(config.xds_addr).await?;
    let xds_addr = listener.local_addr()?;
    let ads = AdsServer::new(snap_rx.clone(), xds_metrics, connections);
    let mut xds_tls_addr = None;
    if let Some((listener, port)) = tls_port {
        xds_tls_addr = Some(listener.local_addr()?);
        let (ads, ca_service) = (ads.clone(), ca_service.clone());
        tasks.push(tokio::spawn(async move {
            let result = tonic::transport::Server::builder()
                .http2_keepalive_interval(Some(Duration::from_secs(30)))
                .add_service(ads.into_service())
                .add_service(ca_service.into_service())
                .serve_with_incoming(port.incoming(listener))
                .await;
            if let Err(e) = result {
                tracing::error!("xDS TLS server stopped: {e}");
            }
        }));
    }
    tasks.push(tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_service(ads.into_service())
            .add_service(ca_service.into_service())
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
        if let Err(e) = result {
            tracing::error!("xDS server stopped: {e}");
        }
    }));
    tracing::info!(%xds_addr, ?xds_tls_addr, %admin_addr, "weft control plane serving");
    Ok(Running {
        xds_addr,
        xds_tls_addr,
        admin_addr,
        snapshots: snap_rx,
        tasks,
    })
}
