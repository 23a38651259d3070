//! `weft`: the control plane and CLI. Wiring only; the work is in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use weft_control_plane::{ca, crd, server};

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
    /// Workload tokens, the credential a sidecar outside Kubernetes shows the mesh CA.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The mesh CA's trust bundle.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Print the CustomResourceDefinitions of weft's own kinds as YAML.
    Crds,
    /// Print the version.
    Version,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a token for a namespace and service account, signed by the mesh CA (creating the
    /// CA's root if there is none yet, as `weft serve` would).
    Create(TokenArgs),
}

#[derive(Subcommand)]
enum CaCommand {
    /// Print the roots the mesh trusts (PEM, no key): what a sidecar is given as
    /// `--xds-root-cert` to check the control plane's TLS port (creating the CA's root if there is
    /// none yet, as `weft serve` would).
    Root(CaArgs),
}

#[derive(clap::Args)]
struct TokenArgs {
    /// The workload's namespace.
    #[arg(long)]
    namespace: String,
    /// The workload's service account.
    #[arg(long)]
    service_account: String,
    /// How long the token is valid, in seconds (default one year).
    #[arg(long, default_value_t = 365 * 24 * 3600)]
    ttl_secs: u64,
    #[command(flatten)]
    ca: CaArgs,
}

/// Where the mesh CA's key and certificate are.
#[derive(clap::Args)]
struct CaArgs {
    /// Directory holding the mesh root CA (`ca.pem`: certificate and key). A root is created
    /// there if there is none; every replica sharing the directory, and every restart, reads
    /// the same one. Default: $XDG_STATE_HOME/weft/ca, else ~/.local/state/weft/ca (with
    /// --kubernetes, the Secret --ca-secret instead).
    #[arg(long, env = "WEFT_CA_DIR")]
    ca_dir: Option<PathBuf>,
    /// The CA certificate to sign with (PEM), instead of --ca-dir: a root, or an intermediate
    /// followed by its chain up to the root.
    #[arg(
        long,
        env = "WEFT_CA_CERT",
        requires = "ca_key",
        conflicts_with = "ca_dir"
    )]
    ca_cert: Option<PathBuf>,
    /// The private key of --ca-cert (PEM, PKCS#8, ECDSA P-256).
    #[arg(long, env = "WEFT_CA_KEY", requires = "ca_cert")]
    ca_key: Option<PathBuf>,
    /// More roots to trust (PEM), beside the CA's own: the previous root while a new one takes
    /// over.
    #[arg(long, env = "WEFT_TRUST_BUNDLE")]
    trust_bundle: Option<PathBuf>,
    /// With --kubernetes and neither --ca-dir nor --ca-cert: the Secret holding the root,
    /// created if there is none, shared by every replica.
    #[arg(long, env = "WEFT_CA_SECRET", default_value = "weft-ca")]
    ca_secret: String,
    /// The namespace of --ca-secret: weft's own (the downward API's POD_NAMESPACE).
    #[arg(long, env = "POD_NAMESPACE", default_value = "weft-system")]
    ca_secret_namespace: String,
}

impl CaArgs {
    /// Where the CA is: given files, a directory, or (in Kubernetes, by default) a Secret.
    fn source(&self, kubernetes: bool) -> ca::Source {
        match (&self.ca_cert, &self.ca_key, &self.ca_dir) {
            (Some(cert), Some(key), _) => ca::Source::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            (_, _, Some(dir)) => ca::Source::Dir(dir.clone()),
            _ if kubernetes => ca::Source::Secret {
                namespace: self.ca_secret_namespace.clone(),
                name: self.ca_secret.clone(),
            },
            _ => ca::Source::Dir(default_ca_dir()),
        }
    }
}

/// The CA's state directory when none is given (XDG's state home).
fn default_ca_dir() -> PathBuf {
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    state.join("weft/ca")
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
    /// Address of the same xDS and CA services over TLS (Istio's 15012), with a certificate the
    /// mesh CA issues to the control plane: sidecars given the mesh root (`weft-proxy
    /// --xds-root-cert`) send their tokens there encrypted. Off unless set.
    #[arg(long, env = "WEFT_XDS_TLS_ADDR")]
    xds_tls_addr: Option<SocketAddr>,
    /// A name (DNS name or IP address) sidecars reach the TLS port by, for its certificate;
    /// repeatable. Default: weft.weft-system.svc(.cluster.local), localhost, 127.0.0.1.
    #[arg(
        long = "xds-tls-name",
        env = "WEFT_XDS_TLS_NAMES",
        value_delimiter = ','
    )]
    xds_tls_names: Vec<String>,
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
    /// Lifetime of a workload certificate, in seconds, when a sidecar asks for none.
    #[arg(long, env = "WEFT_CERT_TTL_SECS", default_value_t = 24 * 3600)]
    cert_ttl_secs: u64,
    /// The longest lifetime, in seconds, a workload certificate is given.
    #[arg(long, env = "WEFT_MAX_CERT_TTL_SECS", default_value_t = 7 * 24 * 3600)]
    max_cert_ttl_secs: u64,
    #[command(flatten)]
    ca: CaArgs,
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
                xds_tls: args.xds_tls_addr.map(|addr| server::TlsPort {
                    addr,
                    names: match args.xds_tls_names.is_empty() {
                        true => weft_control_plane::tls::DEFAULT_NAMES
                            .map(String::from)
                            .to_vec(),
                        false => args.xds_tls_names.clone(),
                    },
                }),
                admin_addr: args.admin_addr,
                trust_domain: args.trust_domain,
                debounce: weft_control_plane::registry::Debounce {
                    quiet: Duration::from_millis(args.debounce_ms),
                    max: Duration::from_millis(args.debounce_max_ms.max(args.debounce_ms)),
                },
                ca: server::CaConfig {
                    source: args.ca.source(args.kubernetes),
                    extra_roots: args.ca.trust_bundle,
                    lifetimes: ca::Lifetimes {
                        default: Duration::from_secs(args.cert_ttl_secs),
                        max: Duration::from_secs(args.max_cert_ttl_secs.max(args.cert_ttl_secs)),
                    },
                },
            })
            .await?;
            shutdown_signal().await;
            tracing::info!("shutting down");
            running.shutdown();
        }
        Command::Token(TokenCommand::Create(args)) => {
            let identity = ca::Identity::new(&args.namespace, &args.service_account)
                .map_err(anyhow::Error::msg)?;
            let authority = ca::Authority::load(
                &args.ca.source(false),
                args.ca.trust_bundle.as_deref(),
                "unused",
                ca::Lifetimes::default(),
            )?;
            let ttl = Duration::from_secs(args.ttl_secs);
            let token =
                ca::token::issue(authority.key_pkcs8(), &identity, ca::token::AUDIENCE, ttl)
                    .map_err(anyhow::Error::msg)?;
            println!("{token}");
        }
        Command::Ca(CaCommand::Root(ca_args)) => {
            let authority = ca::Authority::load(
                &ca_args.source(false),
                ca_args.trust_bundle.as_deref(),
                "unused",
                ca::Lifetimes::default(),
            )?;
            print!("{}", authority.trust_bundle_pem());
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
