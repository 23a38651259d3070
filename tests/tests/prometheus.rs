//! A real Prometheus server (Debian's `prometheus`) scrapes the sidecar and the control plane,
//! negotiating OpenMetrics as it does in a cluster, and answers queries over what it stored.

// Synchronous tests of real processes: they wait on the wall clock, blocking their thread.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use weft_e2e::{Proc, backend, free_port, http_get, one_service};

/// The result vector of an instant query, as (labels, value) pairs.
fn query(prometheus: SocketAddr, promql: &str) -> Vec<(serde_json::Value, f64)> {
    let encoded: String = promql
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let Ok((200, body)) = http_get(prometheus, &format!("/api/v1/query?query={encoded}")) else {
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    v["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let value = r["value"][1]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(f64::NAN);
            (r["metric"].clone(), value)
        })
        .collect()
}

#[test]
fn prometheus_scrapes_the_sidecar_and_the_control_plane() {
    let app = backend("app");
    let mesh = one_service("app", 80, "http", &[app.addr.port()], "", &[]);
    for _ in 0..5 {
        assert_eq!(http_get(mesh.bind, "/").unwrap().0, 200);
    }

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s}}\n\
             scrape_configs:\n\
             - job_name: weft-proxy\n  static_configs: [{{targets: ['{}']}}]\n\
             - job_name: weft\n  static_configs: [{{targets: ['{}']}}]\n",
            mesh.sidecar.health, mesh.cp.admin
        ),
    )
    .unwrap();
    let web: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _prometheus = Proc::spawn(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .arg("--log.level=warn"),
    );

    // Both targets up, scraped without error, and the requests counted as sent.
    let deadline = Instant::now() + Duration::from_secs(40);
    let counted = loop {
        let up = query(web, "up");
        let all_up = up.len() == 2 && up.iter().all(|(_, v)| *v == 1.0);
        let counted = query(web, "sum(weft_requests_total{response_code=\"200\"})");
        if all_up && counted.first().is_some_and(|(_, v)| *v >= 5.0) {
            break counted;
        }
        assert!(
            Instant::now() < deadline,
            "up: {up:?}, counted: {counted:?}, targets: {:?}",
            http_get(web, "/api/v1/targets")
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(counted[0].1, 5.0);
    let targets: serde_json::Value =
        serde_json::from_str(&http_get(web, "/api/v1/targets").unwrap().1).unwrap();
    let active = targets["data"]["activeTargets"].as_array().unwrap();
    assert_eq!(active.len(), 2);
    for t in active {
        assert_eq!(
            (&t["health"], &t["lastError"]),
            (&"up".into(), &"".into()),
            "{t}"
        );
    }
    // Labels as Istio's dashboards query them, and the control plane's own series.
    let by_service = query(
        web,
        "sum by (destination_service, reporter) (weft_requests_total)",
    );
    assert_eq!(
        by_service[0].0["destination_service"],
        "app.shop.svc.cluster.local"
    );
    assert_eq!(by_service[0].0["reporter"], "source");
    let pushes = query(web, "sum(weft_xds_pushes_total)");
    assert!(pushes.first().is_some_and(|(_, v)| *v >= 1.0), "{pushes:?}");
}
