use super::*;

fn metrics() -> Metrics {
    Metrics::new(Node {
        workload: "web".into(),
        namespace: "shop".into(),
    })
}

fn ok(code: u16) -> Outcome {
    Outcome {
        protocol: RequestProtocol::Http,
        code,
        grpc_status: None,
        flag: None,
    }
}

/// The sample line of `metric` whose labels include every one of `labels`.
fn sample<'a>(text: &'a str, metric: &str, labels: &[&str]) -> Option<&'a str> {
    text.lines().find(|l| {
        l.starts_with(&format!("{metric}{{")) && labels.iter().all(|want| l.contains(want))
    })
}

#[test]
fn requests_are_counted_by_destination_and_outcome() {
    let m = metrics();
    let v1 = m.destination(
        "outbound|9080||reviews.shop.svc.cluster.local",
        Some("reviews-v1.shop"),
    );
    for _ in 0..3 {
        v1.record(ok(200), Duration::from_micros(700));
    }
    v1.record(ok(503), Duration::from_millis(20));
    let grpc = Outcome {
        protocol: RequestProtocol::Grpc,
        code: 200,
        grpc_status: Some(14),
        flag: None,
    };
    v1.record(grpc, Duration::from_millis(2));
    m.unrouted().record(
        Outcome {
            flag: Some(Flag::NoRoute),
            ..ok(404)
        },
        Duration::from_micros(30),
    );
    let text = m.render(false);
    let base = [
        "reporter=\"source\"",
        "source_workload=\"web\"",
        "source_workload_namespace=\"shop\"",
        "destination_service=\"reviews.shop.svc.cluster.local\"",
        "destination_service_name=\"reviews\"",
        "destination_service_namespace=\"shop\"",
        "destination_workload=\"reviews-v1\"",
        "destination_workload_namespace=\"shop\"",
    ];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        base.iter().copied().chain(extra.iter().copied()).collect()
    };
    let line = sample(
        &text,
        "weft_requests_total",
        &with(&[
            "response_code=\"200\"",
            "response_flags=\"-\"",
            "request_protocol=\"http\"",
        ]),
    )
    .unwrap_or_else(|| panic!("{text}"));
    assert!(line.ends_with(" 3"), "{line}");
    assert!(
        sample(
            &text,
            "weft_requests_total",
            &with(&["response_code=\"503\""])
        )
        .is_some()
    );
    assert!(
        sample(
            &text,
            "weft_requests_total",
            &with(&["request_protocol=\"grpc\"", "grpc_response_status=\"14\""])
        )
        .is_some(),
        "{text}"
    );
    let nr = sample(
        &text,
        "weft_requests_total",
        &[
            "response_flags=\"NR\"",
            "destination_service=\"unknown\"",
            "response_code=\"404\"",
        ],
    )
    .unwrap_or_else(|| panic!("{text}"));
    assert!(nr.ends_with(" 1"), "{nr}");
    // Histogram buckets are cumulative: 0.7 ms lands in le=1 and every bucket above.
    let le = |bound: &'static str| {
        sample(
            &text,
            "weft_request_duration_seconds_bucket",
            &with(&["response_code=\"200\"", bound]),
        )
        .unwrap_or_else(|| panic!("{bound}: {text}"))
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string()
    };
    assert_eq!(le("le=\"0.0005\""), "0");
    assert_eq!(le("le=\"0.001\""), "3");
    assert_eq!(le("le=\"+Inf\""), "3");
}

#[test]
fn inbound_is_reported_by_the_destination_and_removed_destinations_expire() {
    let m = metrics();
    let inbound = m.destination("inbound|8080||", None);
    inbound.record(ok(200), Duration::from_millis(1));
    let text = m.render(false);
    assert!(
        sample(
            &text,
            "weft_requests_total",
            &[
                "reporter=\"destination\"",
                "destination_workload=\"web\"",
                "source_workload=\"unknown\"",
                "connection_security_policy=\"none\""
            ]
        )
        .is_some(),
        "{text}"
    );
    // Shared while a config holds it; gone from the scrape once none does.
    assert!(Arc::ptr_eq(
        &inbound,
        &m.destination("inbound|8080||", None)
    ));
    drop(inbound);
    assert!(!m.render(false).contains("reporter=\"destination\""));
}

#[test]
fn outcomes_past_the_limit_are_counted_as_overflow() {
    let m = metrics();
    let d = m.destination("outbound|80||a.ns.svc.cluster.local", None);
    for code in 200..(200 + OUTCOMES as u16 + 5) {
        d.record(ok(code), Duration::from_millis(1));
    }
    let text = m.render(false);
    assert!(
        text.contains("weft_proxy_metrics_overflow_total 5"),
        "{text}"
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("weft_requests_total{"))
            .count(),
        OUTCOMES
    );
}

#[test]
fn classic_format_names_counter_families_by_their_samples() {
    let m = metrics();
    m.unrouted().record(ok(404), Duration::from_millis(1));
    let om = m.render(true);
    assert!(om.contains("# TYPE weft_requests counter") && om.ends_with("# EOF\n"));
    let classic = m.render(false);
    assert!(
        classic.contains("# HELP weft_requests_total Requests"),
        "{classic}"
    );
    assert!(
        classic.contains("# TYPE weft_requests_total counter"),
        "{classic}"
    );
    assert!(classic.contains("# TYPE weft_request_duration_seconds histogram"));
    assert!(!classic.contains("# EOF") && !classic.contains("# UNIT"));
}

#[test]
fn destinations_that_label_alike_share_their_series() {
    let m = metrics();
    let a = m.destination("outbound|80||api.ns.svc.cluster.local", Some("api.ns"));
    let b = m.destination("outbound|8080||api.ns.svc.cluster.local", Some("api.ns"));
    assert!(Arc::ptr_eq(&a, &b));
    a.record(ok(200), Duration::from_millis(1));
    b.record(ok(200), Duration::from_millis(1));
    // A cluster named outside weft's scheme labels like the unrouted requests: one series too.
    m.destination("plain-cluster", None)
        .record(ok(200), Duration::from_millis(1));
    m.unrouted().record(ok(200), Duration::from_millis(1));
    let text = m.render(false);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("weft_requests_total{"))
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines.iter().all(|l| l.ends_with(" 2")), "{text}");
}
