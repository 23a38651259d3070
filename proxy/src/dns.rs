//! DNS clusters: endpoints that are what host names resolve to (Envoy's STRICT_DNS and
//! LOGICAL_DNS, which other control planes send for services outside the mesh).
//!
//! One task per cluster resolves its names through the system resolver (`getaddrinfo`: the
//! hosts file, then DNS) every refresh interval and reports a changed answer to the xDS client,
//! which publishes it as the cluster's endpoints, as it does an EDS assignment. A name whose
//! lookup fails keeps its last answer, as Envoy's targets do; one that has never resolved adds
//! nothing until it does.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::config::{DnsFamily, DnsHost, DnsTargets, EndpointConfig};

/// How long one lookup may take before it counts as failed.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// A cluster's endpoints as of its latest lookup.
pub type Resolved = (String, Arc<DnsTargets>, Vec<EndpointConfig>);

/// The lookups of every DNS cluster in the config.
pub struct Resolver {
    tasks: HashMap<String, (Arc<DnsTargets>, AbortHandle)>,
    tx: mpsc::UnboundedSender<Resolved>,
    rx: mpsc::UnboundedReceiver<Resolved>,
}

impl Default for Resolver {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            tasks: HashMap::new(),
            tx,
            rx,
        }
    }
}

impl Resolver {
    /// Looks up exactly the `clusters` given (name, targets): starts the new, restarts the
    /// changed, stops the gone. Returns the names no longer looked up as they were.
    pub fn track<'a>(
        &mut self,
        clusters: impl Iterator<Item = (&'a str, &'a Arc<DnsTargets>)>,
    ) -> Vec<String> {
        let wanted: HashMap<&str, &Arc<DnsTargets>> = clusters.collect();
        let mut dropped = Vec::new();
        self.tasks.retain(|name, (targets, task)| {
            let keep = wanted.get(name.as_str()).is_some_and(|t| *t == targets);
            if !keep {
                task.abort();
                dropped.push(name.clone());
            }
            keep
        });
        for (name, targets) in wanted {
            if self.tasks.contains_key(name) {
                continue;
            }
            let task = tokio::spawn(lookups(name.to_string(), targets.clone(), self.tx.clone()));
            self.tasks
                .insert(name.to_string(), (targets.clone(), task.abort_handle()));
        }
        dropped
    }

    /// The next changed answer of a cluster still looked up as it was asked for.
    pub async fn next(&mut self) -> Resolved {
        loop {
            let (name, targets, endpoints) = self.rx.recv().await.expect("the sender is held");
            // An answer sent just before its task was stopped or replaced is dropped.
            if self
                .tasks
                .get(&name)
                .is_some_and(|(t, _)| Arc::ptr_eq(t, &targets))
            {
                return (name, targets, endpoints);
            }
        }
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        for (_, task) in self.tasks.values() {
            task.abort();
        }
    }
}

/// Resolves `targets` every refresh interval and sends each answer that differs from the last.
/// Each name keeps its own last answer, so one that fails neither empties nor freezes the
/// others. A lookup still running when its time is up (`getaddrinfo` cannot be stopped) is
/// waited for on the next round rather than started again beside it.
async fn lookups(name: String, targets: Arc<DnsTargets>, tx: mpsc::UnboundedSender<Resolved>) {
    let mut answers: Vec<Option<Vec<EndpointConfig>>> = vec![None; targets.hosts.len()];
    let mut running: Vec<Option<Lookup>> = (0..targets.hosts.len()).map(|_| None).collect();
    let mut last: Option<Vec<EndpointConfig>> = None;
    loop {
        for (i, h) in targets.hosts.iter().enumerate() {
            let lookup = running[i].get_or_insert_with(|| start(h));
            match tokio::time::timeout(LOOKUP_TIMEOUT, &mut *lookup).await {
                Ok(done) => {
                    running[i] = None;
                    let found = done
                        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
                        .and_then(|addrs| endpoints_of(h, addrs, &targets));
                    match found {
                        Ok(eps) => answers[i] = Some(eps),
                        Err(e) => tracing::warn!(
                            cluster = name,
                            host = h.host,
                            "DNS lookup failed, keeping the last answer: {e}"
                        ),
                    }
                }
                Err(_) => tracing::warn!(
                    cluster = name,
                    host = h.host,
                    "DNS lookup timed out, keeping the last answer"
                ),
            }
        }
        // The first round is sent whatever it found: a cluster none of whose names resolve
        // applies without endpoints (503 UH) rather than hold back the config.
        let now: Vec<EndpointConfig> = answers.iter().flatten().flatten().cloned().collect();
        if last.as_ref() != Some(&now) {
            tracing::debug!(cluster = name, endpoints = now.len(), "resolved");
            last = Some(now.clone());
            if tx.send((name.clone(), targets.clone(), now)).is_err() {
                return;
            }
        }
        tokio::time::sleep(targets.refresh).await;
    }
}

/// A lookup of one name in the blocking pool, as `getaddrinfo` is.
type Lookup = tokio::task::JoinHandle<std::io::Result<Vec<SocketAddr>>>;

fn start(h: &DnsHost) -> Lookup {
    let target = (h.host.clone(), h.port);
    tokio::task::spawn_blocking(move || {
        use std::net::ToSocketAddrs;
        target.to_socket_addrs().map(Iterator::collect)
    })
}

/// One name's endpoints from its addresses: of the family asked for, each once; every address
/// in a stable order for STRICT_DNS (round-robin DNS rotates them, which is no change), the
/// first one for LOGICAL_DNS, as Envoy takes it.
fn endpoints_of(
    h: &DnsHost,
    addrs: Vec<SocketAddr>,
    targets: &DnsTargets,
) -> std::io::Result<Vec<EndpointConfig>> {
    let mut addrs = of_family(addrs, targets.family);
    if addrs.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} has no address of family {:?}", h.host, targets.family),
        ));
    }
    match targets.logical {
        true => addrs.truncate(1),
        false => addrs.sort_unstable(),
    }
    Ok(addrs
        .into_iter()
        .map(|addr| EndpointConfig {
            transport_match: Vec::new(),
            addr,
            weight: h.weight,
            identity: None,
            workload: None,
            priority: h.priority,
            healthy: true,
        })
        .collect())
}

/// The addresses `family` keeps, in the resolver's order, each once.
fn of_family(addrs: Vec<SocketAddr>, family: DnsFamily) -> Vec<SocketAddr> {
    let has = |v6: bool| addrs.iter().any(|a| a.is_ipv6() == v6);
    let keep_v6 = match family {
        DnsFamily::All => None,
        DnsFamily::V4Only => Some(false),
        DnsFamily::V6Only => Some(true),
        DnsFamily::Auto => Some(has(true)),
        DnsFamily::V4Preferred => Some(!has(false)),
    };
    let mut out: Vec<SocketAddr> = Vec::with_capacity(addrs.len());
    for a in addrs {
        if keep_v6.is_none_or(|v6| a.is_ipv6() == v6) && !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The endpoints `targets` resolve to now, one lookup of each name; any name failing fails
    /// the lookup.
    async fn resolve(targets: &DnsTargets) -> std::io::Result<Vec<EndpointConfig>> {
        let mut out = Vec::new();
        for h in &targets.hosts {
            let found = tokio::time::timeout(LOOKUP_TIMEOUT, start(h))
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "lookup timed out"))?
                .map_err(std::io::Error::other)??;
            out.extend(endpoints_of(h, found, targets)?);
        }
        Ok(out)
    }

    #[test]
    fn the_family_decides_which_addresses_are_kept() {
        let v4: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        let both = vec![v4, v6, v4];
        // (family, addresses, kept)
        let cases: [(DnsFamily, &[SocketAddr], &[SocketAddr]); 8] = [
            (DnsFamily::All, &both, &[v4, v6]),
            (DnsFamily::V4Only, &both, &[v4]),
            (DnsFamily::V6Only, &both, &[v6]),
            (DnsFamily::Auto, &both, &[v6]),
            (DnsFamily::Auto, &[v4], &[v4]),
            (DnsFamily::V4Preferred, &both, &[v4]),
            (DnsFamily::V4Preferred, &[v6], &[v6]),
            (DnsFamily::V6Only, &[v4], &[]),
        ];
        for (family, addrs, want) in cases {
            assert_eq!(
                of_family(addrs.to_vec(), family),
                want,
                "{family:?} {addrs:?}"
            );
        }
    }

    fn targets(hosts: &[(&str, u16)], logical: bool) -> DnsTargets {
        DnsTargets {
            hosts: hosts
                .iter()
                .map(|(host, port)| DnsHost {
                    host: host.to_string(),
                    port: *port,
                    weight: 2,
                    priority: 1,
                })
                .collect(),
            family: DnsFamily::V4Only,
            refresh: Duration::from_millis(50),
            logical,
        }
    }

    /// Names from the hosts file and IP literals resolve without a DNS server; a name that does
    /// not resolve fails the lookup.
    #[tokio::test]
    async fn names_resolve_through_the_system_resolver() {
        let eps = resolve(&targets(&[("localhost", 8080), ("127.0.0.7", 9090)], false))
            .await
            .unwrap();
        let got: Vec<(String, u32, u32)> = eps
            .iter()
            .map(|e| (e.addr.to_string(), e.weight, e.priority))
            .collect();
        assert_eq!(
            got,
            [
                ("127.0.0.1:8080".to_string(), 2, 1),
                ("127.0.0.7:9090".to_string(), 2, 1)
            ]
        );
        assert!(
            resolve(&targets(&[("no-such-host.invalid", 80)], false))
                .await
                .is_err()
        );
    }

    /// The resolver reports a cluster's first answer, and forgets a cluster that is no longer
    /// asked for; one that cannot be resolved is reported once, empty.
    #[tokio::test]
    async fn tracked_clusters_report_their_answers() {
        let mut r = Resolver::default();
        let ok = Arc::new(targets(&[("localhost", 1)], true));
        let bad = Arc::new(targets(&[("no-such-host.invalid", 1)], false));
        let tracked = [("ok", &ok), ("bad", &bad)];
        assert!(r.track(tracked.into_iter()).is_empty());
        let mut seen = HashMap::new();
        while seen.len() < 2 {
            let (name, _, eps) = tokio::time::timeout(Duration::from_secs(10), r.next())
                .await
                .expect("an answer");
            seen.insert(name, eps);
        }
        assert_eq!(seen["ok"].len(), 1);
        assert!(seen["bad"].is_empty());
        // A name that fails does not take the others of its cluster with it.
        let mixed = Arc::new(targets(
            &[("no-such-host.invalid", 1), ("localhost", 2)],
            false,
        ));
        r.track([("ok", &ok), ("mixed", &mixed)].into_iter());
        let (name, _, eps) = tokio::time::timeout(Duration::from_secs(10), r.next())
            .await
            .expect("an answer");
        assert_eq!(name, "mixed");
        let got: Vec<String> = eps.iter().map(|e| e.addr.to_string()).collect();
        assert_eq!(got, ["127.0.0.1:2"]);
        assert_eq!(r.track([("ok", &ok)].into_iter()), ["mixed"]);
        assert_eq!(r.tasks.len(), 1);
    }
}
