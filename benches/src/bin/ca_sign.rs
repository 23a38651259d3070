//! The mesh CA's signing rate, per core: how many workload certificates `weft` signs per second
//! of its own CPU. Two figures: `Authority::sign` alone (CSR parsing and verification, the
//! certificate built and signed), and the whole `CertificateService/Sign` call served by a real
//! `weft serve` process (gRPC, the workload token checked, the certificate signed), its CPU read
//! from /proc while clients keep it busy. Goal (issue 26): at least 5,000 per CPU-second.
//!
//! `cargo build --release --bins && ./target/release/ca-sign`

// A benchmark: it measures wall and CPU time of real processes.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use weft_bench::{cpu_seconds, free_port, spawn, wait_port, workspace_bin};
use weft_control_plane::ca::{self, Identity, token};
use weft_proto::weft::ca::v1::SignRequest;
use weft_proto::weft::ca::v1::certificate_service_client::CertificateServiceClient;

/// Options.
#[derive(clap::Parser)]
#[command(about = "mesh CA signatures per CPU-second, in process and served by weft")]
struct Opts {
    /// Certificates signed in each measurement.
    #[arg(long, default_value_t = 20_000)]
    count: usize,
    /// Concurrent gRPC calls against the served CA.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

/// CPU seconds this process has used (user and system).
fn own_cpu() -> f64 {
    cpu_seconds(std::process::id())
}

fn main() -> anyhow::Result<()> {
    let opts: Opts = clap::Parser::parse();
    let dir = tempfile::tempdir()?;
    let source = ca::Source::Dir(dir.path().join("ca"));
    let authority = ca::Authority::load(&source, None, "cluster.local", ca::Lifetimes::default())?;
    // CSRs made ahead (a workload makes its key and CSR itself; that is not the CA's work).
    let csrs: Vec<String> = (0..256)
        .map(|_| {
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
            Ok(CertificateParams::default()
                .serialize_request(&key)?
                .pem()?)
        })
        .collect::<anyhow::Result<_>>()?;
    let id = Identity::new("bench", "client").map_err(anyhow::Error::msg)?;

    let (wall, cpu) = (Instant::now(), own_cpu());
    for i in 0..opts.count {
        authority.sign(&csrs[i % csrs.len()], &id, None)?;
    }
    let (wall, cpu) = (wall.elapsed().as_secs_f64(), own_cpu() - cpu);
    println!(
        "Authority::sign  {:>8.0} per CPU-second  ({} in {wall:.2} s wall, {cpu:.2} s CPU)",
        opts.count as f64 / cpu,
        opts.count
    );

    // The served CA: a real `weft serve`, its CPU read while the calls run.
    let registry = dir.path().join("registry");
    std::fs::create_dir(&registry)?;
    let xds = format!("127.0.0.1:{}", free_port());
    let weft = spawn(
        std::process::Command::new(workspace_bin("weft"))
            .args(["serve", "--registry"])
            .arg(&registry)
            .args(["--xds-addr", &xds])
            .args(["--admin-addr", &format!("127.0.0.1:{}", free_port())])
            .arg("--ca-dir")
            .arg(dir.path().join("ca"))
            .env("WEFT_LOG", "warn"),
    );
    wait_port(xds.parse()?);
    let bearer = token::issue(
        authority.key_pkcs8(),
        &id,
        token::AUDIENCE,
        Duration::from_secs(3600),
    )
    .map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let pid = weft.0.id();
    let (calls, wall, cpu) = runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{xds}"))?
            .connect()
            .await?;
        let call = |i: usize| {
            let mut client = CertificateServiceClient::new(channel.clone());
            let mut req = tonic::Request::new(SignRequest {
                csr: csrs[i % csrs.len()].clone(),
                validity_seconds: 0,
            });
            let auth = format!("Bearer {bearer}").parse();
            async move {
                req.metadata_mut().insert("authorization", auth?);
                client.sign(req).await?;
                anyhow::Ok(())
            }
        };
        // Warm up the connection and the server's allocations.
        for i in 0..100 {
            call(i).await?;
        }
        let (wall, cpu) = (Instant::now(), cpu_seconds(pid));
        let next = std::sync::atomic::AtomicUsize::new(0);
        let worker = || async {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= opts.count {
                    return anyhow::Ok(());
                }
                call(i).await?;
            }
        };
        futures::future::try_join_all((0..opts.concurrency).map(|_| worker())).await?;
        anyhow::Ok((
            opts.count,
            wall.elapsed().as_secs_f64(),
            cpu_seconds(pid) - cpu,
        ))
    })?;
    println!(
        "Sign over gRPC   {:>8.0} per CPU-second of weft  ({calls} calls in {wall:.2} s wall, {cpu:.2} s CPU, {:.0}/s wall)",
        calls as f64 / cpu,
        calls as f64 / wall
    );
    drop(weft);
    Ok(())
}
