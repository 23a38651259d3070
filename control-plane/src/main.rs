//! `weft`: the control plane and CLI. Wiring only; the work is in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use weft_control_plane::{crd, server};

#[derive(Parser)]
#[command(
    name = "weft",
    version,
    about = "weft service mesh: control plane and CLI"
)]
struct Cli {
    /// Log filter (tracing-subscriber EnvFilter syntax, e.g. `info,weft=debug`).
    #[arg(long, env = "WEFT_LOG", default_value = "info", global = true)]
    log: String,
    /// Log lines as `text` (coloured only on a terminal) or `json` (one object a line, for
    /// log collectors).
    #[arg(long, env = "WEFT_LOG_FORMAT", default_value = "text", global = true)]
    log_format: weft_proto::logs::Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve xDS v3 (ADS, state of the world and delta) for the mesh a registry describes.
    Serve(ServeArgs),
    /// Print the CustomResourceDefinitions of weft's own kinds as YAML.
    Crds,
    /// Print the version.
    Version,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Directory of Kubernetes YAML (Service, EndpointSlice, Pod, Namespace, HTTPRoute and weft.io
    /// kinds), watched for changes.
    #[arg(long, env = "WEFT_REGISTRY", required_unless_present = "kubernetes")]
    registry: Option<PathBuf>,
    /// Read the mesh from the Kubernetes API server (in-cluster config, or KUBECONFIG).
    #[arg(long, env = "WEFT_KUBERNETES", conflicts_with = "registry")]
    kubernetes: bool,
    /// Address of the xDS gRPC server.
    #[arg(long, env = "WEFT_XDS_ADDR", default_value = "127.0.0.1:15010")]
    xds_addr: SocketAddr,
    /// Address of /ready, /metrics and /debug/*.
    #[arg(long, env = "WEFT_ADMIN_ADDR", default_value = "127.0.0.1:15014")]
    admin_addr: SocketAddr,
    /// SPIFFE trust domain of workload identities.
    #[arg(long, env = "WEFT_TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: String,
    /// Quiet time, in milliseconds, that turns a burst of changes into one push.
    #[arg(long, env = "WEFT_DEBOUNCE_MS", default_value_t = 100)]
    debounce_ms: u64,
    /// The longest, in milliseconds, a change waits after the first change of a burst, however
    /// steady the stream of changes (on a cluster Pods change all the time).
    #[arg(long, env = "WEFT_DEBOUNCE_MAX_MS", default_value_t = 1000)]
    debounce_max_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::try_new(&cli.log)?)
        .with(weft_proto::logs::layer(cli.log_format))
        .init();
    match cli.command {
        Command::Serve(args) => {
            let source = match args.registry {
                Some(dir) => server::Source::Files(dir),
                None => server::Source::Kubernetes(kube::Client::try_default().await?),
            };
            let running = server::start(server::Config {
                source,
                xds_addr: args.xds_addr,
                admin_addr: args.admin_addr,
                trust_domain: args.trust_domain,
                debounce: weft_control_plane::registry::Debounce {
                    quiet: Duration::from_millis(args.debounce_ms),
                    max: Duration::from_millis(args.debounce_max_ms.max(args.debounce_ms)),
                },
            })
            .await?;
            shutdown_signal().await;
            tracing::info!("shutting down");
            running.shutdown();
        }
        Command::Crds => {
            for c in crd::definitions() {
                println!("---\n{}", serde_yaml::to_string(&c)?);
            }
        }
        Command::Version => println!("weft {}", env!("CARGO_PKG_VERSION")),
    }
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler installs");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
