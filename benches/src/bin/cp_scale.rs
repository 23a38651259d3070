//! Control-plane scale bench: a large mesh, many Delta clients, one endpoint change.
//!
//! Builds a Mesh of `--services` Services (each with `--endpoints` endpoints) spread over
//! `--namespaces` namespaces, each namespace with a Sidecar scoping its workloads to that namespace.
//! Starts the real ADS server in-process on loopback, connects `--clients` Delta clients over real
//! gRPC (each a workload of some namespace, subscribing like weft-proxy: wildcard CDS and LDS, then
//! EDS and RDS for what they were given), then changes one endpoint and measures what is sent and how
//! long until every client that can reach the Service has it (and has ACKed).
//!
//! Usage: cargo run --release -p weft-bench --bin cp-scale -- [--services N] [--endpoints N]
//!        [--namespaces N] [--clients N] [--unscoped 1]
//!
//! `--unscoped 1` drops the Sidecars: every client sees every Service (as gRPC clients and Envoys
//! without a scope do), and every client gets the change.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use weft_control_plane::model::{
    Endpoint, Health, HostPattern, Key, Mesh, Protocol, Selector, Service, ServicePort,
    SidecarScope, Workload, WorkloadPort,
};
use weft_control_plane::xds::{self, AdsServer, Connections, Snapshot};
use weft_proto::xds::config::core::v3::Node;
use weft_proto::xds::service::discovery::v3::{
    DeltaDiscoveryRequest, aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
};

use weft_proto::resource::{CDS, EDS, LDS, RDS};

struct Args {
    services: usize,
    endpoints: usize,
    namespaces: usize,
    clients: usize,
    unscoped: bool,
}

fn args() -> Args {
    let mut a = Args {
        services: 10_000,
        endpoints: 10,
        namespaces: 100,
        clients: 1_000,
        unscoped: false,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let v: usize = pair
            .get(1)
            .and_then(|v| v.parse().ok())
            .expect("flag value");
        match pair[0].as_str() {
            "--services" => a.services = v,
            "--endpoints" => a.endpoints = v,
            "--namespaces" => a.namespaces = v,
            "--clients" => a.clients = v,
            "--unscoped" => a.unscoped = v != 0,
            f => panic!("unknown flag {f}"),
        }
    }
    a
}

fn ip(n: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(
        0x0a00_0000 + u32::try_from(n).expect("fits"),
    ))
}

fn mesh(a: &Args) -> Mesh {
    let mut services = BTreeMap::new();
    for s in 0..a.services {
        let ns = format!("ns{}", s % a.namespaces);
        let key = Key::new(&ns, format!("svc{s}"));
        let endpoints = (0..a.endpoints)
            .map(|e| Endpoint {
                ip: ip(1_000_000 + s * a.endpoints + e),
                port: 8080,
                health: Health::Healthy,
                identity: Some(format!("spiffe://cluster.local/ns/{ns}/sa/svc{s}")),
                // Every workload of a mesh at scale runs a sidecar: mTLS is the case to cost.
                mtls: true,
                workload: Some(Key::new(&ns, format!("svc{s}-{e}"))),
                workload_name: Some(format!("svc{s}")),
                zone: None,
            })
            .collect();
        services.insert(
            key.clone(),
            Arc::new(Service {
                key,
                cluster_ips: vec![ip(s)],
                headless: false,
                ports: vec![ServicePort {
                    name: "http".into(),
                    port: 80,
                    protocol: Protocol::Http1,
                    endpoints,
                    routes: Vec::new(),
                    consumer_routes: Default::default(),
                    tcp_route: None,
                    consumer_tcp_routes: Default::default(),
                }],
                policy: None,
            }),
        );
    }
    let mut workloads = BTreeMap::new();
    for c in 0..a.clients {
        let ns = format!("ns{}", c % a.namespaces);
        let key = Key::new(&ns, format!("client{c}"));
        workloads.insert(
            key.clone(),
            Arc::new(Workload {
                key,
                ips: vec![ip(5_000_000 + c)],
                labels: BTreeMap::new(),
                service_account: "default".into(),
                identity: format!("spiffe://cluster.local/ns/{ns}/sa/default"),
                ports: vec![WorkloadPort {
                    port: 8080,
                    protocol: Protocol::Http1,
                }],
                sidecar: true,
                tls_mode: Default::default(),
                authorization: Vec::new(),
            }),
        );
    }
    let sidecars = (0..if a.unscoped { 0 } else { a.namespaces })
        .map(|n| {
            let ns = format!("ns{n}");
            Arc::new(SidecarScope {
                key: Key::new(&ns, "default"),
                selector: Selector::default(),
                hosts: vec![HostPattern {
                    namespace: ns,
                    name: "*".into(),
                }],
                listeners: Vec::new(),
            })
        })
        .collect();
    Mesh {
        trust_domain: "cluster.local".into(),
        services,
        workloads,
        sidecars,
        consumers: Default::default(),
    }
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// What a client reports to the bench.
enum Report {
    Synced,
    Update {
        at: Instant,
        resources: usize,
        bytes: usize,
    },
}

async fn client(
    addr: String,
    id: String,
    reports: mpsc::UnboundedSender<Report>,
) -> anyhow::Result<()> {
    // A thousand clients connecting in the same instant overflow the listen backlog; like
    // weft-proxy, retry with backoff.
    let mut attempt = 0;
    let mut ads = loop {
        match AggregatedDiscoveryServiceClient::connect(addr.clone()).await {
            Ok(c) => break c,
            Err(e) if attempt >= 10 => return Err(e.into()),
            Err(_) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
            }
        }
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let req = |type_url: &str, subscribe: Vec<String>, nonce: String| DeltaDiscoveryRequest {
        node: Some(Node {
            id: id.clone(),
            ..Default::default()
        }),
        type_url: type_url.into(),
        resource_names_subscribe: subscribe,
        response_nonce: nonce,
        ..Default::default()
    };
    tx.send(req(CDS, vec![], String::new()))?;
    tx.send(req(LDS, vec![], String::new()))?;
    let mut stream = ads
        .delta_aggregated_resources(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
        .await?
        .into_inner();
    // Synced once CDS and LDS have arrived and every EDS/RDS name asked for has been answered
    // (large pushes arrive in several responses).
    let (mut cds, mut lds, mut synced) = (false, false, false);
    let mut asked: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut answered: std::collections::HashSet<String> = std::collections::HashSet::new();
    while let Some(resp) = stream.message().await? {
        let names: Vec<String> = resp.resources.iter().map(|r| r.name.clone()).collect();
        tx.send(req(&resp.type_url, vec![], resp.nonce.clone()))?;
        if !synced {
            match resp.type_url.as_str() {
                CDS => {
                    cds = true;
                    let eds: Vec<String> = names
                        .into_iter()
                        .filter(|n| n.starts_with("outbound"))
                        .collect();
                    asked.extend(eds.iter().cloned());
                    tx.send(req(EDS, eds, String::new()))?;
                }
                LDS => {
                    lds = true;
                    let rds: Vec<String> = names.into_iter().filter(|n| n != "inbound").collect();
                    asked.extend(rds.iter().cloned());
                    tx.send(req(RDS, rds, String::new()))?;
                }
                _ => answered.extend(names),
            }
            if cds && lds && asked.iter().all(|n| answered.contains(n)) {
                synced = true;
                reports.send(Report::Synced)?;
            }
        } else {
            let bytes = resp
                .resources
                .iter()
                .map(|r| r.resource.as_ref().map_or(0, |a| a.value.len()))
                .sum();
            reports.send(Report::Update {
                at: Instant::now(),
                resources: resp.resources.len(),
                bytes,
            })?;
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args();
    println!(
        "mesh: {} services x {} endpoints ({} endpoints), {} namespaces, {} Delta clients {}",
        a.services,
        a.endpoints,
        a.services * a.endpoints,
        a.namespaces,
        a.clients,
        if a.unscoped {
            "seeing every Service"
        } else {
            "scoped to their namespace"
        }
    );
    let rss0 = rss_mib();
    let mesh = Arc::new(mesh(&a));

    // Full translation, measured alone.
    let t = Instant::now();
    let snap = Snapshot::build(mesh.clone(), None);
    let translate = t.elapsed();
    let resources: usize = snap.services.values().map(|s| s.resources.len()).sum();
    let all_eds_bytes: usize = snap
        .services
        .values()
        .flat_map(|s| &s.resources)
        .filter(|r| r.kind == weft_control_plane::translate::ResourceType::Endpoint)
        .map(|r| r.body.value.len())
        .sum();
    println!(
        "full translation: {:.0} ms for {resources} resources",
        translate.as_secs_f64() * 1e3
    );
    drop(snap);

    // The real server path: registry channel -> snapshots -> ADS over loopback gRPC.
    let (mesh_tx, mesh_rx) = watch::channel(Some(mesh.clone()));
    let (snap_tx, snap_rx) = watch::channel(None);
    tokio::spawn(xds::snapshot::run(mesh_rx, snap_tx));
    let mut ready = snap_rx.clone();
    ready.wait_for(Option::is_some).await?;
    let metrics = xds::Metrics::unregistered();
    let server = AdsServer::new(snap_rx.clone(), metrics.clone(), Connections::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = format!("http://{}", listener.local_addr()?);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(server.into_service())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let rss_mesh = rss_mib();

    let (rep_tx, mut rep_rx) = mpsc::unbounded_channel();
    let t = Instant::now();
    for c in 0..a.clients {
        let id = format!("client{c}.ns{}", c % a.namespaces);
        let addr = addr.clone();
        let reports = rep_tx.clone();
        tokio::spawn(async move {
            // Loopback under a thousand simultaneous streams sometimes resets one; reconnect as
            // weft-proxy would (a client reports Synced once per stream it completes).
            for _ in 0..5 {
                match client(addr.clone(), id.clone(), reports.clone()).await {
                    Ok(()) => return,
                    Err(e) => eprintln!("client {id}: {e:#}; reconnecting"),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    let mut synced = 0;
    while synced < a.clients {
        match tokio::time::timeout(Duration::from_secs(30), rep_rx.recv()).await {
            Ok(Some(Report::Synced)) => synced += 1,
            Ok(_) => {}
            Err(_) => anyhow::bail!("only {synced} of {} clients synced after 30 s", a.clients),
        }
    }
    println!(
        "{} clients connected and fully synced in {:.0} ms",
        a.clients,
        t.elapsed().as_secs_f64() * 1e3
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_clients = rss_mib();

    // One endpoint of one Service changes.
    let target = Key::new("ns0", "svc0");
    let reach = if a.unscoped {
        a.clients
    } else {
        (0..a.clients).filter(|c| c % a.namespaces == 0).count()
    };
    let mut changed = (*mesh).clone();
    let mut svc = (*changed.services[&target]).clone();
    svc.ports[0].endpoints[0].ip = ip(9_999_999);
    changed.services.insert(target.clone(), Arc::new(svc));
    let bytes_before = sum_family(&metrics);
    let t0 = Instant::now();
    mesh_tx.send_replace(Some(Arc::new(changed)));
    let mut lat = Vec::new();
    let (mut total_resources, mut total_bytes) = (0, 0);
    let deadline = tokio::time::sleep(Duration::from_secs(5));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            r = rep_rx.recv() => if let Some(Report::Update { at, resources, bytes }) = r {
                lat.push(at - t0);
                total_resources += resources;
                total_bytes += bytes;
            },
            () = &mut deadline => break,
        }
        if lat.len() >= reach {
            // Anything else arriving within a second would be over-sending.
            tokio::time::sleep(Duration::from_secs(1)).await;
            while let Ok(Report::Update {
                at,
                resources,
                bytes,
            }) = rep_rx.try_recv()
            {
                lat.push(at - t0);
                total_resources += resources;
                total_bytes += bytes;
            }
            break;
        }
    }
    lat.sort();
    let sent_bytes = sum_family(&metrics) - bytes_before;
    println!(
        "endpoint change: {} responses ({} expected: clients in that namespace), {} resources, {} bytes on the wire by server count ({} by client count)",
        lat.len(),
        reach,
        total_resources,
        sent_bytes,
        total_bytes
    );
    println!(
        "  change -> client has it (incl. 100 ms debounce): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(&lat, 0.5).as_secs_f64() * 1e3,
        pct(&lat, 0.99).as_secs_f64() * 1e3,
        pct(&lat, 1.0).as_secs_f64() * 1e3
    );
    println!(
        "  state of the world would send every visible ClusterLoadAssignment: an unscoped SotW client gets {} resources / {} bytes per change",
        a.services, all_eds_bytes
    );
    println!(
        "RSS: start {rss0:.0} MiB, mesh + snapshot + server {rss_mesh:.0} MiB, with {} clients (same process) {rss_clients:.0} MiB",
        a.clients
    );
    Ok(())
}

fn sum_family(m: &xds::Metrics) -> u64 {
    let mut total = 0;
    for t in ["cds", "eds", "lds", "rds"] {
        total += m
            .push_bytes
            .get_or_create(&xds::metrics::TypeLabel { r#type: t })
            .get();
    }
    total
}
