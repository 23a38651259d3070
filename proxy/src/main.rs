//! `weft-proxy`: the sidecar. Wiring only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, reload};
use weft_proxy::control_plane::ControlPlane;
use weft_proxy::metrics::{self, Metrics};
use weft_proxy::{admin, capture, http::Proxy, identity, inbound, outbound, store::Store, xds};

#[derive(Parser)]
#[command(name = "weft-proxy", version, about = "weft's sidecar proxy")]
struct Args {
    /// Address of weft's xDS server.
    #[arg(long, env = "WEFT_XDS_ADDR", default_value = "127.0.0.1:15010")]
    xds_addr: String,
    /// Milliseconds between HTTP/2 pings on the xDS connection; a control plane that does not
    /// answer one within a third of this (at most 10 s) is taken for gone and the proxy
    /// reconnects, where a lost node or a partition would leave a silent stream open for ever.
    /// The default is the most often grpc-go servers accept pings on a quiet stream (their
    /// `MinTime`, 5 min); weft's own server takes any, so lower it for faster detection. 0: off.
    #[arg(long, env = "WEFT_XDS_KEEPALIVE_MS", default_value_t = 300_000)]
    xds_keepalive_ms: u64,
    /// Which form of ADS to speak: `delta` (incremental), `sotw` (state of the world), or `auto`:
    /// Delta, and state of the world once the control plane answers that it does not serve Delta.
    #[arg(long, env = "WEFT_XDS_PROTOCOL", value_enum, default_value = "auto")]
    xds_protocol: xds::XdsProtocol,
    /// Node id: `<pod>.<namespace>` of the workload this proxy serves.
    #[arg(long, env = "WEFT_NODE_ID")]
    node_id: String,
    /// Workload name for metrics labels (a Deployment's name); default: the pod name of the node
    /// id.
    #[arg(long, env = "WEFT_WORKLOAD_NAME")]
    workload_name: Option<String>,
    /// Admin endpoint (/config_dump, /clusters, /logging); keep it on loopback.
    #[arg(long, env = "WEFT_ADMIN_ADDR", default_value = "127.0.0.1:15000")]
    admin_addr: SocketAddr,
    /// Health endpoint (/ready, /live) for kubelet probes.
    #[arg(long, env = "WEFT_HEALTH_ADDR", default_value = "0.0.0.0:15020")]
    health_addr: SocketAddr,
    /// Where iptables redirects the app's outbound connections (SO_ORIGINAL_DST recovers the real
    /// destination).
    #[arg(
        long,
        env = "WEFT_OUTBOUND_CAPTURE_ADDR",
        default_value = "0.0.0.0:15001"
    )]
    outbound_capture_addr: SocketAddr,
    /// Where iptables redirects connections to the app. `0.0.0.0` binds the IPv6 wildcard too.
    #[arg(
        long,
        env = "WEFT_INBOUND_CAPTURE_ADDR",
        default_value = "0.0.0.0:15006"
    )]
    inbound_capture_addr: SocketAddr,
    /// Outbound traffic to destinations the mesh does not know: pass it through, or refuse it.
    #[arg(
        long,
        env = "WEFT_OUTBOUND_POLICY",
        value_enum,
        default_value = "allow-any"
    )]
    outbound_policy: outbound::capture::OutboundPolicy,
    /// Milliseconds to wait for a client's first bytes on a port of undeclared protocol before
    /// treating the connection as opaque TCP (server-first protocols send nothing).
    #[arg(long, env = "WEFT_DETECT_TIMEOUT_MS", default_value_t = weft_proto::names::DETECT_TIMEOUT_MS)]
    detect_timeout_ms: u64,
    /// Milliseconds a client may take to send a request's headers before it is disconnected. The
    /// clock starts when an HTTP/1 connection waits for its next request, so this is also how long
    /// an idle keep-alive connection is kept: nginx's 60 s (`client_header_timeout`), long enough
    /// that app connection pools rarely reuse a connection just as the proxy closes it.
    #[arg(long, env = "WEFT_HTTP_HEADER_TIMEOUT_MS", default_value_t = 60_000)]
    http_header_timeout_ms: u64,
    /// Whether plain HTTP/1.1 requests (no body, to an HTTP/1.1 upstream) are proxied by weft's own
    /// byte-level fast path; `false` leaves every request to hyper. A switch for comparing the two.
    #[arg(long, env = "WEFT_HTTP1_FAST_PATH", default_value_t = true, action = clap::ArgAction::Set)]
    http1_fast_path: bool,
    /// Milliseconds an HTTP/2 connection from a client may carry nothing before it is closed
    /// (GOAWAY; open streams finish first): Envoy's default `idle_timeout`, one hour. Idle HTTP/1
    /// connections meet the header timeout instead.
    #[arg(long, env = "WEFT_HTTP_IDLE_TIMEOUT_MS", default_value_t = 3_600_000)]
    http_idle_timeout_ms: u64,
    /// Milliseconds to let connections in flight finish after SIGTERM.
    #[arg(long, env = "WEFT_DRAIN_TIMEOUT_MS", default_value_t = 5_000)]
    drain_timeout_ms: u64,
    /// Runtime threads. One (the default) keeps the sidecar on one core with no cross-thread
    /// wake-ups, which measured cheaper per request; more spreads load over cores.
    #[arg(long, env = "WEFT_WORKERS", default_value_t = 1)]
    workers: usize,
    /// Address of the mesh CA (`weft.ca.v1.CertificateService`); default: the xDS address, where
    /// `weft` serves both.
    #[arg(long, env = "WEFT_CA_ADDR")]
    ca_addr: Option<String>,
    /// The mesh root(s), PEM, that the control plane's certificate must chain to. Given, xDS
    /// and the CA are spoken over TLS (the control plane's `--xds-tls-addr`, 15012), so the
    /// token goes encrypted and only to the control plane; without it, plaintext (15010).
    #[arg(long, env = "WEFT_XDS_ROOT_CERT")]
    xds_root_cert: Option<std::path::PathBuf>,
    /// The name the control plane's certificate must carry; default: the host of --xds-addr
    /// (and of --ca-addr for the CA).
    #[arg(long, env = "WEFT_XDS_SERVER_NAME")]
    xds_server_name: Option<String>,
    /// The workload's credential for the CA: a Kubernetes service-account token projected for
    /// audience `weft-ca`, or a token from `weft token create`. Read again at each renewal.
    /// Without it the proxy has no workload identity and speaks no mTLS.
    #[arg(long, env = "WEFT_CA_TOKEN_FILE")]
    ca_token_file: Option<std::path::PathBuf>,
    /// Lifetime, in seconds, to ask the CA for; 0 takes the CA's default (24 h). Renewed at
    /// half-life.
    #[arg(long, env = "WEFT_CERT_TTL_SECS", default_value_t = 0)]
    cert_ttl_secs: u64,
    /// Log filter (tracing-subscriber EnvFilter syntax); changeable at run time via /logging.
    #[arg(long, env = "WEFT_LOG", default_value = "info")]
    log: String,
    /// Log lines as `text` (coloured only on a terminal) or `json` (one object a line, for
    /// log collectors).
    #[arg(long, env = "WEFT_LOG_FORMAT", default_value = "text")]
    log_format: weft_proto::logs::Format,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = if args.workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.workers)
            .enable_all()
            .build()?
    };
    runtime.block_on(run(args))
}

/// Raises the soft limit on open files to the hard one, as Envoy and Go's runtime do: each proxied
/// connection holds two descriptors, and hosts often start services at a soft limit of 1,024.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!(from = soft, to = hard, "raised the open-file limit"),
            Err(e) => tracing::warn!("open-file limit stays at {soft}: {e}"),
        },
        Ok(_) => {}
        Err(e) => tracing::warn!("reading the open-file limit: {e}"),
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let (filter, handle) = reload::Layer::new(EnvFilter::try_new(&args.log)?);
    tracing_subscriber::registry()
        .with(filter)
        .with(weft_proto::logs::layer(args.log_format))
        .init();
    raise_open_file_limit();
    let log = Arc::new(admin::LogFilter::new(
        &args.log,
        Arc::new(move |filter: &str| {
            let f = EnvFilter::try_new(filter).map_err(|e| e.to_string())?;
            handle.reload(f).map_err(|e| e.to_string())
        }),
    ));

    let store = Arc::new(Store::default());
    let (pod, namespace) = args
        .node_id
        .rsplit_once('.')
        .unwrap_or((args.node_id.as_str(), "default"));
    let mut metrics = Metrics::new(metrics::Node {
        workload: args
            .workload_name
            .clone()
            .unwrap_or_else(|| pod.to_string()),
        namespace: namespace.to_string(),
    });
    let control_plane = |addr: &str| -> anyhow::Result<ControlPlane> {
        let scheme = match args.xds_root_cert {
            Some(_) => "https",
            None => "http",
        };
        let url = match addr.contains("://") {
            true => addr.to_string(),
            false => format!("{scheme}://{addr}"),
        };
        match &args.xds_root_cert {
            Some(roots) => ControlPlane::tls(url, roots, args.xds_server_name.as_deref()),
            None => Ok(ControlPlane::plaintext(url)),
        }
    };
    let xds_control_plane = control_plane(&args.xds_addr)?;
    let ca_control_plane = match &args.ca_addr {
        Some(addr) => control_plane(addr)?,
        None => xds_control_plane.clone(),
    };
    let identity = args.ca_token_file.clone().map(|token_file| {
        let identity = Arc::new(identity::Identity::default());
        identity.register(metrics.registry_mut());
        let client = identity::ca::CaClient {
            control_plane: ca_control_plane,
            token_file,
            validity: (args.cert_ttl_secs > 0).then(|| Duration::from_secs(args.cert_ttl_secs)),
        };
        tokio::spawn(identity::rotate::run(client, identity.clone()));
        identity
    });
    if identity.is_none() {
        tracing::info!("no CA token (--ca-token-file): no workload identity, mTLS off");
    }
    let metrics = Arc::new(metrics);
    tokio::spawn(
        xds::Client::new(
            xds::Settings {
                control_plane: xds_control_plane,
                node_id: args.node_id.clone(),
                initial_fetch_timeout: xds::INITIAL_FETCH_TIMEOUT,
                keepalive: Duration::from_millis(args.xds_keepalive_ms),
                protocol: args.xds_protocol,
            },
            store.clone(),
            metrics.clone(),
        )
        .run(),
    );
    let drain = weft_proxy::drain::Drain::default();
    let connections = Arc::new(weft_proxy::connections::Connections::default());
    let admin = admin::Admin {
        store: store.clone(),
        metrics: metrics.clone(),
        log,
        drain: drain.clone(),
        connections: connections.clone(),
        identity: identity.clone(),
        full: true,
    };
    let admin_addr = admin::bind(args.admin_addr, admin.clone()).await?;
    // The health port is reachable from outside the pod (kubelet, Prometheus): health and metrics
    // only, never the config or the log control.
    let health = admin::Admin {
        full: false,
        ..admin
    };
    let health_addr = admin::bind(args.health_addr, health).await?;
    tracing::info!(node = args.node_id, %admin_addr, %health_addr, "weft-proxy starting");
    let mut proxy = Proxy::new(
        store.clone(),
        metrics.clone(),
        (
            Duration::from_millis(args.http_header_timeout_ms),
            Duration::from_millis(args.detect_timeout_ms),
        ),
        drain.clone(),
    );
    proxy.http1_fast_path = args.http1_fast_path;
    proxy.dialer = weft_proxy::upstream::conn::Dialer::new(identity.clone());
    proxy.identity = identity.clone();
    proxy.connections = connections;
    proxy.idle_timeout = Duration::from_millis(args.http_idle_timeout_ms);
    let outbound_capture = capture::bind(args.outbound_capture_addr)?;
    let inbound_capture = capture::bind(args.inbound_capture_addr)?;
    tracing::info!(
        outbound = %args.outbound_capture_addr,
        inbound = %args.inbound_capture_addr,
        "capture listeners bound"
    );
    let own_ports = vec![
        args.outbound_capture_addr.port(),
        args.inbound_capture_addr.port(),
    ];
    let capture = outbound::capture::Capture {
        policy: args.outbound_policy,
        own_ports: own_ports.clone(),
    };
    for listener in outbound_capture {
        tokio::spawn(outbound::capture::run(
            listener,
            store.clone(),
            proxy.clone(),
            capture.clone(),
        ));
    }
    for listener in inbound_capture {
        tokio::spawn(inbound::run(
            listener,
            store.clone(),
            proxy.clone(),
            own_ports.clone(),
        ));
    }
    tokio::spawn(weft_proxy::store::sweep(
        store.clone(),
        Duration::from_secs(1),
    ));
    tokio::spawn(outbound::run(store, proxy));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!(open = drain.open_connections(), "SIGTERM: draining");
    let left = drain
        .drain(Duration::from_millis(args.drain_timeout_ms))
        .await;
    tracing::info!(left, "drained; exiting");
    Ok(())
}
