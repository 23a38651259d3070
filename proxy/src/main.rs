//! `weft-proxy`: the sidecar. Wiring only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, reload};
use weft_proxy::{admin, config::Store, http::Proxy, outbound, xds};

#[derive(Parser)]
#[command(name = "weft-proxy", version, about = "weft's sidecar proxy")]
struct Args {
    /// Address of weft's xDS server.
    #[arg(long, env = "WEFT_XDS_ADDR", default_value = "127.0.0.1:15010")]
    xds_addr: String,
    /// Node id: `<pod>.<namespace>` of the workload this proxy serves.
    #[arg(long, env = "WEFT_NODE_ID")]
    node_id: String,
    /// Admin endpoint (/config_dump, /clusters, /logging); keep it on loopback.
    #[arg(long, env = "WEFT_ADMIN_ADDR", default_value = "127.0.0.1:15000")]
    admin_addr: SocketAddr,
    /// Health endpoint (/ready, /live) for kubelet probes.
    #[arg(long, env = "WEFT_HEALTH_ADDR", default_value = "0.0.0.0:15020")]
    health_addr: SocketAddr,
    /// Milliseconds a client may take to send a request's headers before it is disconnected.
    #[arg(long, env = "WEFT_HTTP_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    http_header_timeout_ms: u64,
    /// Log filter (tracing-subscriber EnvFilter syntax); changeable at run time via /logging.
    #[arg(long, env = "WEFT_LOG", default_value = "info")]
    log: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (filter, handle) = reload::Layer::new(EnvFilter::try_new(&args.log)?);
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .init();
    let set_log_level: admin::SetLogLevel = Arc::new(move |level: &str| {
        let f = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        handle.reload(f).map_err(|e| e.to_string())
    });

    let store = Arc::new(Store::default());
    let xds_url = if args.xds_addr.contains("://") {
        args.xds_addr.clone()
    } else {
        format!("http://{}", args.xds_addr)
    };
    tokio::spawn(
        xds::Client::new(
            xds::Settings {
                xds_url,
                node_id: args.node_id.clone(),
            },
            store.clone(),
        )
        .run(),
    );
    let admin = admin::Admin {
        store: store.clone(),
        set_log_level,
    };
    let admin_addr = admin::bind(args.admin_addr, admin.clone()).await?;
    let health_addr = admin::bind(args.health_addr, admin).await?;
    tracing::info!(node = args.node_id, %admin_addr, %health_addr, "weft-proxy starting");
    tokio::spawn(outbound::run(
        store.clone(),
        Proxy::new(store, Duration::from_millis(args.http_header_timeout_ms)),
    ));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    Ok(())
}
