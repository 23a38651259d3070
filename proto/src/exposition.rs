//! The Prometheus exposition both binaries serve on `/metrics`: OpenMetrics to scrapers that ask
//! for it (Prometheus does), the classic text format to everyone else (curl, promtool, older
//! agents), which names a counter family by its samples. prometheus-client writes only the
//! former, so the latter is derived from it here, once for `weft` and `weft-proxy`.

/// Content type of an OpenMetrics response.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Content type of a classic text response.
pub const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether a scrape's `Accept` header asks for OpenMetrics.
fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// The body and content type a scrape with `accept` gets, from prometheus-client's OpenMetrics.
pub fn negotiate(openmetrics: String, accept: Option<&str>) -> (String, &'static str) {
    if wants_openmetrics(accept) {
        (openmetrics, OPENMETRICS)
    } else {
        (classic(&openmetrics), CLASSIC)
    }
}

/// OpenMetrics text -> classic Prometheus text: a counter family's HELP and TYPE name its samples
/// (`x_total`), and the OpenMetrics-only `# UNIT` and `# EOF` lines go.
pub fn classic(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line.starts_with("# HELP ") {
            help = Some(line);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let renamed = match kind {
                "counter" if !name.ends_with("_total") => format!("{name}_total"),
                _ => name.to_string(),
            };
            if let Some(h) = help.take() {
                let text = h
                    .strip_prefix("# HELP ")
                    .and_then(|h| h.split_once(' '))
                    .map_or("", |(_, t)| t);
                out.push_str(&format!("# HELP {renamed} {text}\n"));
            }
            out.push_str(&format!("# TYPE {renamed} {kind}\n"));
            continue;
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_text_names_counters_by_their_samples() {
        let om = "# HELP x_pushes Pushes.\n# TYPE x_pushes counter\nx_pushes_total{t=\"a\"} 1\n\
                  # HELP x_seconds Latency.\n# TYPE x_seconds histogram\n# UNIT x_seconds seconds\n\
                  x_seconds_count 0\n# EOF\n";
        assert_eq!(
            classic(om),
            "# HELP x_pushes_total Pushes.\n# TYPE x_pushes_total counter\nx_pushes_total{t=\"a\"} 1\n\
             # HELP x_seconds Latency.\n# TYPE x_seconds histogram\nx_seconds_count 0\n"
        );
        assert_eq!(
            negotiate(om.into(), Some("application/openmetrics-text")).1,
            OPENMETRICS
        );
        assert_eq!(negotiate(om.into(), Some("*/*")).1, CLASSIC);
        assert_eq!(negotiate(om.into(), None).1, CLASSIC);
    }
}
