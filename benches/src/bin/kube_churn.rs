//! kube-churn: what Pod churn costs the Kubernetes registry.
//!
//! On a real cluster most Pod updates change nothing weft reads (the kubelet's status
//! heartbeats, annotations other controllers write). This runs the real registry against the
//! in-process API server (`weft_e2e::fake_kube`, real list/watch over loopback HTTP) and sends
//! it a stream of such updates, then a stream of updates it does read (a label), and reports
//! for each: events absorbed per second of the registry's CPU (its thread does nothing else:
//! a current-thread runtime, with the API server on another thread), CPU per event, meshes
//! built, and meshes published (pushes).

use std::sync::Arc;
use std::time::Duration;

use nix::sys::resource::{UsageWho, getrusage};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;
use weft_control_plane::model::{Key, Mesh};
use weft_control_plane::registry::{self, Debounce};
use weft_e2e::fake_kube::{FakeApi, PODS, SERVICES, pod, service};

#[derive(clap::Parser)]
#[command(about = "Pod churn against the Kubernetes registry: CPU per event, builds, pushes")]
struct Opts {
    /// Pods in the cluster.
    #[arg(long, default_value_t = 2000)]
    pods: usize,
    /// Updates that change nothing weft reads.
    #[arg(long, default_value_t = 20_000)]
    noop_events: u32,
    /// Updates that change a label (each one a mesh change).
    #[arg(long, default_value_t = 2_000)]
    label_events: u32,
}

/// CPU time this thread has used.
fn thread_cpu() -> Duration {
    let u = getrusage(UsageWho::RUSAGE_THREAD).expect("getrusage");
    let d = |t: nix::sys::time::TimeVal| {
        Duration::new(
            u64::try_from(t.tv_sec()).unwrap_or(0),
            u32::try_from(t.tv_usec()).unwrap_or(0) * 1000,
        )
    };
    d(u.user_time()) + d(u.system_time())
}

fn ip(i: usize) -> String {
    format!("10.1.{}.{}", i / 250, i % 250 + 1)
}

/// One phase: `send` sends its events, then a sentinel label change every event before it
/// precedes on the same watch; the phase ends when the mesh shows the sentinel.
async fn phase(
    name: &str,
    events: u32,
    api: &FakeApi,
    rx: &mut watch::Receiver<Option<Arc<Mesh>>>,
    builds: &dyn Fn() -> u64,
    send: impl Fn(u32) + Send + 'static,
) {
    let sentinel = format!("{name}-done");
    let (b0, cpu0, t0) = (builds(), thread_cpu(), Instant::now());
    let mut published = 0u32;
    let sender = {
        let api = api.clone();
        let sentinel = sentinel.clone();
        std::thread::spawn(move || {
            for n in 0..events {
                send(n);
            }
            let mut p = pod("sentinel", "sentinel", "10.9.0.1", "0");
            p["metadata"]["labels"]["phase"] = json!(sentinel);
            api.apply(PODS, p);
        })
    };
    loop {
        rx.changed().await.expect("registry runs");
        published += 1;
        let mesh = rx.borrow_and_update().clone().expect("a mesh");
        let label = mesh.workloads[&Key::new("ns", "sentinel")]
            .labels
            .get("phase")
            .cloned();
        if label.as_deref() == Some(sentinel.as_str()) {
            break;
        }
    }
    let (cpu, wall) = (thread_cpu() - cpu0, t0.elapsed());
    sender.join().expect("sender");
    let per_event = cpu.as_secs_f64() / f64::from(events);
    println!(
        "| {name} | {events} | {:.2} | {:.0} | {:.1} | {} | {} |",
        wall.as_secs_f64(),
        1.0 / per_event,
        per_event * 1e6,
        builds() - b0,
        published,
    );
}

fn main() {
    let o = <Opts as clap::Parser>::parse();
    // The API server on a thread of its own, so the registry's thread is the registry alone.
    let api = FakeApi::default();
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let url = server.block_on(api.serve());
    api.apply(SERVICES, service("web", "10.0.0.1"));
    for i in 0..o.pods {
        api.apply(PODS, pod(&format!("web-{i}"), "web", &ip(i), "0"));
    }
    api.apply(PODS, pod("sentinel", "sentinel", "10.9.0.1", "0"));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = kube::Client::try_from(kube::Config::new(url.parse().expect("url")))
            .expect("client");
        let (tx, mut rx) = watch::channel(None);
        let mut reg = prometheus_client::registry::Registry::default();
        let metrics = registry::Metrics::register(&mut reg);
        let settings = registry::kube::Settings {
            trust_domain: "cluster.local".into(),
            debounce: Debounce::default(),
            probe_every: Duration::from_secs(2),
        };
        tokio::spawn(registry::kube::run(client, settings, metrics, tx));
        rx.wait_for(|m| m.as_ref().is_some_and(|m| m.workloads.len() > o.pods))
            .await
            .expect("first mesh");
        // Let the start's own rebuilds settle before anything is counted.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        rx.borrow_and_update();
        let builds = move || {
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, &reg).expect("encode");
            text.lines()
                .find_map(|l| l.strip_prefix("weft_registry_builds_total "))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0) as u64
        };
        println!(
            "{} Pods; debounce 100 ms quiet, 1 s at most. CPU is the registry thread's.\n",
            o.pods
        );
        println!(
            "| events | count | wall s | absorbed per CPU-second | CPU µs/event | meshes built | pushes |"
        );
        println!("|---|---|---|---|---|---|---|");
        let pods = o.pods;
        let noop = api.clone();
        phase("no-op", o.noop_events, &api, &mut rx, &builds, move |n| {
            // An annotation and the kubelet's container status: nothing weft reads.
            let i = n as usize % pods;
            let mut p = pod(&format!("web-{i}"), "web", &ip(i), &n.to_string());
            p["status"]["containerStatuses"][0]["restartCount"] = json!(n);
            noop.apply(PODS, p);
        })
        .await;
        let labels = api.clone();
        phase("label", o.label_events, &api, &mut rx, &builds, move |n| {
            let i = n as usize % pods;
            let mut p = pod(&format!("web-{i}"), "web", &ip(i), "0");
            p["metadata"]["labels"]["rev"] = json!(n.to_string());
            labels.apply(PODS, p);
        })
        .await;
    });
    println!(
        "\nBuilds and pushes include the sentinel change that ends each phase: 1 and 1 is the \
         sentinel alone."
    );
}
