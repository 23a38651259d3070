//! Endpoint sets and load balancing.
//!
//! Per-endpoint state (requests in flight, latency EWMA, recent connection failures) lives in
//! `Arc<Endpoint>`s that a new config reuses by address, so balancing decisions survive config
//! swaps.
//!
//! An endpoint that refuses or resets connections fails fast, which a latency EWMA would read as
//! "quick" and prefer. So a transport failure records no latency; instead the endpoint is passed
//! over for a back-off (1 s, doubling to 30 s while it keeps failing, cleared by a success), as
//! Linkerd's failure accrual and Finagle's penalty do, unless every candidate is failing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

// The runtime's clock, so tests drive back-off and latency on paused time.
use tokio::time::Instant;

use serde::Serialize;

use crate::config::{EndpointConfig, LbPolicy, Security, Transport};
use crate::metrics::{DestStats, Metrics};

/// Weight of a new latency sample in the moving average.
const EWMA_ALPHA: f64 = 0.3;
/// Latency assumed for an endpoint before its first response (1 ms, in nanoseconds).
const EWMA_START_NS: u64 = 1_000_000;
/// How fast an endpoint's latency estimate fades toward zero while it gets no new sample (it
/// falls by `e` every 10 s, Linkerd's peak-EWMA decay): one slow answer must not keep an
/// endpoint that the balancer then never picks, and so never measures again, out for good.
const EWMA_DECAY_MS: f64 = 10_000.0;
/// First back-off after a transport failure, and the longest, in milliseconds.
const BACKOFF_MS: (u64, u64) = (1_000, 30_000);

/// Milliseconds on a process-wide monotonic clock; read only where an endpoint has failed.
fn clock_ms() -> u64 {
    ms_at(Instant::now())
}

/// `at` on the [`clock_ms`] clock.
fn ms_at(at: Instant) -> u64 {
    static EPOCH: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);
    // Seconds and milliseconds apart: `as_millis` divides a u128, a cost on every request.
    let since = at.saturating_duration_since(*EPOCH);
    since.as_secs() * 1000 + u64::from(since.subsec_millis()) + 1
}

/// How much of a latency estimate is left after `idle_ms` without a sample. Under 100 ms it is
/// over 99 %: taken as all of it, so a busy endpoint's pick costs no `exp()`.
fn fade(idle_ms: u64) -> f64 {
    if idle_ms < 100 {
        1.0
    } else {
        (-(idle_ms as f64) / EWMA_DECAY_MS).exp()
    }
}

fn health<S: serde::Serializer>(until: &AtomicU64, s: S) -> Result<S::Ok, S::Error> {
    let until = until.load(Ordering::Relaxed);
    s.serialize_str(if until != 0 && clock_ms() < until {
        "failing"
    } else {
        "healthy"
    })
}

/// One upstream address with its live load.
#[derive(Debug, Serialize)]
pub struct Endpoint {
    /// Address.
    pub addr: SocketAddr,
    /// Identity the control plane says the peer has.
    pub identity: Option<String>,
    /// Plain or mTLS, and the SPIFFE IDs the peer may present.
    pub security: Security,
    /// Requests in flight.
    #[serde(serialize_with = "load")]
    in_flight: AtomicUsize,
    /// Latency EWMA in nanoseconds, as of its last sample.
    #[serde(serialize_with = "load64")]
    ewma_ns: AtomicU64,
    /// When (`clock_ms`) the last latency sample came.
    #[serde(skip)]
    sampled_at_ms: AtomicU64,
    /// Requests sent, ever.
    #[serde(serialize_with = "load64")]
    requests: AtomicU64,
    /// Transport failures since the last success.
    #[serde(serialize_with = "load64")]
    consecutive_failures: AtomicU64,
    /// Until when (`clock_ms`) the endpoint is passed over; 0 when it has not failed.
    #[serde(rename = "health", serialize_with = "health")]
    failing_until: AtomicU64,
    /// Upstream connections to this endpoint.
    #[serde(flatten)]
    pub pool: crate::upstream::pool::Pool,
    /// Where requests to this endpoint are counted.
    #[serde(skip)]
    pub stats: Arc<DestStats>,
    /// `<workload>.<namespace>`, as EDS named it.
    #[serde(skip)]
    workload: Option<String>,
}

fn load<S: serde::Serializer>(v: &AtomicUsize, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(v.load(Ordering::Relaxed) as u64)
}

fn load64<S: serde::Serializer>(v: &AtomicU64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(v.load(Ordering::Relaxed))
}

impl Endpoint {
    fn new(cfg: &EndpointConfig, security: Security, stats: Arc<DestStats>) -> Self {
        Self {
            addr: cfg.addr,
            security,
            identity: cfg.identity.clone(),
            workload: cfg.workload.clone(),
            stats,
            in_flight: AtomicUsize::new(0),
            ewma_ns: AtomicU64::new(EWMA_START_NS),
            sampled_at_ms: AtomicU64::new(clock_ms()),
            requests: AtomicU64::new(0),
            consecutive_failures: AtomicU64::new(0),
            failing_until: AtomicU64::new(0),
            pool: Default::default(),
        }
    }

    /// A plaintext endpoint at `addr`, counted nowhere: for tests of what sends to one.
    #[cfg(test)]
    pub fn plain(addr: SocketAddr) -> Self {
        let cfg = EndpointConfig {
            addr,
            weight: 1,
            identity: None,
            workload: None,
            priority: 0,
            healthy: true,
            transport_match: Vec::new(),
        };
        Self::new(
            &cfg,
            Security::Plaintext,
            Arc::new(DestStats::new(Vec::new())),
        )
    }

    /// Whether requests to this endpoint are in flight.
    pub fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0
    }

    /// Marks a request started; the guard ends it.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        InFlight {
            endpoint: self.clone(),
            started: Instant::now(),
            failed: false,
            measured: false,
        }
    }

    /// Whether the endpoint is in its back-off after a transport failure. One atomic load for an
    /// endpoint that has not failed.
    fn failing(&self) -> bool {
        let until = self.failing_until.load(Ordering::Relaxed);
        until != 0 && clock_ms() < until
    }

    /// [`Self::failing`] against a clock already read, for scans over many endpoints.
    fn failing_at(&self, now_ms: u64) -> bool {
        let until = self.failing_until.load(Ordering::Relaxed);
        until != 0 && now_ms < until
    }

    /// Requests in flight (plus the one being placed) times the latency estimate, faded by the
    /// time since its last sample.
    fn cost_at(&self, now_ms: u64) -> f64 {
        let idle_ms = now_ms.saturating_sub(self.sampled_at_ms.load(Ordering::Relaxed));
        let estimate = self.ewma_ns.load(Ordering::Relaxed) as f64 * fade(idle_ms);
        (self.in_flight.load(Ordering::Relaxed) + 1) as f64 * estimate
    }

    /// Adds the latency of a request started at `started` and answered now.
    fn observe_since(&self, started: Instant) {
        let now = Instant::now();
        self.observe(now.saturating_duration_since(started), ms_at(now));
    }

    fn observe(&self, latency: Duration, now_ms: u64) {
        let idle_ms = now_ms.saturating_sub(self.sampled_at_ms.swap(now_ms, Ordering::Relaxed));
        let fade = fade(idle_ms);
        let sample = latency.as_nanos().min(u128::from(u64::MAX)) as f64;
        let _ = self
            .ewma_ns
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                let old = old as f64 * fade;
                Some((EWMA_ALPHA * sample + (1.0 - EWMA_ALPHA) * old) as u64)
            });
    }
}

/// A request in flight to an endpoint. Its latency is recorded when the endpoint answers (the
/// response head, or a TCP connection made), as Linkerd measures it, so a long stream, download
/// or WebSocket does not read as a slow endpoint; a request that ends unanswered (timed out,
/// cancelled) records its time when dropped.
#[derive(Debug)]
pub struct InFlight {
    endpoint: Arc<Endpoint>,
    started: Instant,
    failed: bool,
    measured: bool,
}

impl InFlight {
    /// The endpoint the request went to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The connection to the endpoint failed (refused, reset, timed out): back off from it.
    pub fn failed(&mut self) {
        self.failed = true;
        let ep = &self.endpoint;
        let n = ep
            .consecutive_failures
            .fetch_add(1, Ordering::Relaxed)
            .min(5);
        let backoff = (BACKOFF_MS.0 << n).min(BACKOFF_MS.1);
        ep.failing_until
            .store(clock_ms() + backoff, Ordering::Relaxed);
    }

    /// The endpoint answered: its latency is recorded, once, and whatever it failed before is
    /// forgiven. Two loads when it had not failed; each field is cleared on its own, so a
    /// failure racing this answer leaves no stale count behind.
    pub fn answered(&mut self) {
        if !self.measured {
            self.measured = true;
            self.endpoint.observe_since(self.started);
        }
        let ep = &self.endpoint;
        if ep.consecutive_failures.load(Ordering::Relaxed) != 0 {
            ep.consecutive_failures.store(0, Ordering::Relaxed);
        }
        if ep.failing_until.load(Ordering::Relaxed) != 0 {
            ep.failing_until.store(0, Ordering::Relaxed);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
        // A failure's latency says nothing about how fast the endpoint serves.
        if !self.failed && !self.measured {
            self.endpoint.observe_since(self.started);
        }
    }
}

/// Most copies of one endpoint in a set's list.
const MAX_COPIES: u32 = 128;

/// How many times each endpoint appears in the list balancing draws from: its weight over the
/// weights' common divisor (1000:100 is 10:1), scaled down to at most [`MAX_COPIES`] when the
/// ratios need more, each endpoint at least once.
fn copies(configs: &[EndpointConfig]) -> Vec<u32> {
    fn gcd(a: u32, b: u32) -> u32 {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    let weights: Vec<u32> = configs.iter().map(|c| c.weight.max(1)).collect();
    let common = weights.iter().copied().fold(0, gcd).max(1);
    let top = weights.iter().max().map_or(1, |w| w / common);
    weights
        .iter()
        .map(|w| {
            let w = u64::from(w / common);
            let scaled = (w * u64::from(MAX_COPIES)).div_ceil(u64::from(top));
            u32::try_from(if top > MAX_COPIES { scaled } else { w }).unwrap_or(MAX_COPIES)
        })
        .map(|c| c.max(1))
        .collect()
}

/// Envoy's priority load: the percent of requests each priority takes, given per priority its
/// healthy endpoints and all its endpoints. Each priority's health is its healthy share times
/// the overprovisioning factor, at most 100; the preferred priorities take their health in
/// order until 100 is given out; when the healths add up to less than 100, they are scaled up
/// to it, so the requests always land somewhere.
pub fn priority_load(health: &[(usize, usize)], overprovisioning: u32) -> Vec<u32> {
    let scores: Vec<u32> = health
        .iter()
        .map(|&(healthy, total)| {
            let share = (healthy as u64 * u64::from(overprovisioning)) / (total.max(1) as u64);
            u32::try_from(share.min(100)).unwrap_or(100)
        })
        .collect();
    let sum: u32 = scores.iter().sum::<u32>().clamp(1, 100);
    let mut left = 100;
    let mut load: Vec<u32> = scores
        .iter()
        .map(|&score| {
            let take = (score * 100 / sum).min(left);
            left -= take;
            take
        })
        .collect();
    // What rounding left over goes to the first priority with any health, as in Envoy; with
    // none anywhere, everything goes to the preferred one.
    let first = scores.iter().position(|&s| s > 0).unwrap_or(0);
    if let Some(l) = load.get_mut(first) {
        *l += left;
    }
    load
}

/// The endpoints of one cluster and how to choose among them.
#[derive(Debug, Serialize)]
pub struct EndpointSet {
    /// Algorithm.
    pub lb: LbPolicy,
    /// Endpoints of the most preferred priority; weights are honoured by repetition.
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Endpoints of the less preferred priorities, in order: each takes the share of the
    /// traffic its priority's load gives it, and all of it once every endpoint before it is
    /// backing off.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<Vec<Arc<Endpoint>>>,
    /// Percent of the requests each priority takes (the preferred one first), from the health
    /// the control plane gives its endpoints, as Envoy's priority load; empty with one priority.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub priority_load: Vec<u32>,
    /// Where requests that found no endpoint are counted.
    #[serde(skip)]
    pub stats: Arc<DestStats>,
    #[serde(skip)]
    next: AtomicUsize,
}

impl EndpointSet {
    /// Builds the set of `cluster` from its endpoints and their assignment's overprovisioning
    /// factor, reusing `previous`'s endpoint state for addresses it already had; counters come
    /// from `metrics`.
    pub fn new(
        cluster: &str,
        configs: &[EndpointConfig],
        overprovisioning: u32,
        lb: LbPolicy,
        transport: &Transport,
        previous: Option<&EndpointSet>,
        metrics: &Metrics,
    ) -> Self {
        // By address, so a cluster of thousands of endpoints is rebuilt in linear time.
        let kept: HashMap<SocketAddr, &Arc<Endpoint>> = previous
            .map(|p| p.all().map(|e| (e.addr, e)).collect())
            .unwrap_or_default();
        let mut priorities: Vec<u32> = configs.iter().map(|c| c.priority).collect();
        priorities.sort_unstable();
        priorities.dedup();
        // Per priority with a healthy endpoint: how many of its endpoints are healthy, of all.
        let mut health = Vec::new();
        let mut levels = Vec::new();
        for priority in priorities {
            let all = configs.iter().filter(|c| c.priority == priority);
            let total = all.clone().count();
            let level: Vec<EndpointConfig> = all.filter(|c| c.healthy).cloned().collect();
            if level.is_empty() {
                continue;
            }
            health.push((level.len(), total));
            let mut endpoints = Vec::with_capacity(level.len());
            for (cfg, copies) in level.iter().zip(copies(&level)) {
                let security = transport.security_of(cfg);
                // Its pooled connections were made for what it was: a changed identity or
                // transport starts afresh.
                let ep = kept
                    .get(&cfg.addr)
                    .filter(|e| {
                        e.identity == cfg.identity
                            && e.workload == cfg.workload
                            && e.security == security
                    })
                    .map(|e| Arc::clone(e))
                    .unwrap_or_else(|| {
                        let stats = metrics.destination(cluster, cfg.workload.as_deref());
                        Arc::new(Endpoint::new(cfg, security, stats))
                    });
                for _ in 0..copies {
                    endpoints.push(ep.clone());
                }
            }
            levels.push(endpoints);
        }
        let priority_load = match levels.len() {
            0 | 1 => Vec::new(),
            _ => priority_load(&health, overprovisioning),
        };
        let mut levels = levels.into_iter();
        Self {
            lb,
            endpoints: levels.next().unwrap_or_default(),
            failover: levels.collect(),
            priority_load,
            stats: metrics.destination(cluster, None),
            next: AtomicUsize::new(0),
        }
    }

    /// Every endpoint, preferred ones first (weighted ones repeated).
    pub fn all(&self) -> impl Iterator<Item = &Arc<Endpoint>> {
        self.endpoints.iter().chain(self.failover.iter().flatten())
    }

    /// The endpoint at `addr`, if present.
    pub fn get(&self, addr: SocketAddr) -> Option<Arc<Endpoint>> {
        self.all().find(|e| e.addr == addr).cloned()
    }

    /// Chooses an endpoint; `None` when there is none. With several priorities, the request's
    /// priority is drawn by their loads (which the control plane's health marks set, as in
    /// Envoy); endpoints backing off after a failure are then passed over while any other
    /// remains, in that priority, then in every priority in order; with all of them failing, the
    /// first choice. (Envoy also moves load as outlier detection ejects endpoints; here a
    /// failing endpoint's traffic moves whole, once nothing before it is left.)
    pub fn pick(&self) -> Option<&Arc<Endpoint>> {
        // One round-robin turn per request, whichever levels it is drawn from.
        let turn = match self.lb {
            LbPolicy::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        if self.failover.is_empty() {
            return self.pick_in(&self.endpoints, turn);
        }
        // With the preferred priority healthy (the usual case), no draw.
        let first = match self.priority_load.first() {
            Some(&all) if all >= 100 => 0,
            _ => {
                let draw = fastrand::u32(0..100);
                let mut below = 0;
                self.priority_load
                    .iter()
                    .position(|load| {
                        below += load;
                        draw < below
                    })
                    .unwrap_or(0)
            }
        };
        let level = |i: usize| match i {
            0 => &self.endpoints,
            i => &self.failover[i - 1],
        };
        let chosen = self.pick_in(level(first), turn)?;
        if !chosen.failing() {
            return Some(chosen);
        }
        (0..=self.failover.len())
            .filter(|&i| i != first)
            .filter_map(|i| self.pick_in(level(i), turn))
            .find(|e| !e.failing())
            .or(Some(chosen))
    }

    fn pick_in<'a>(&self, list: &'a [Arc<Endpoint>], turn: usize) -> Option<&'a Arc<Endpoint>> {
        let n = list.len();
        if n == 0 {
            return None;
        }
        let first = self.choose(list, turn);
        if !list[first].failing() {
            return list.get(first);
        }
        // Rare: the first choice is backing off. Draw again at random over the (weighted) list,
        // so its traffic spreads over the others by weight instead of landing on a neighbour;
        // with nearly every endpoint failing, any that is not; with all, the first choice. The
        // clock is read once for the whole scan.
        let now = clock_ms();
        (0..8)
            .map(|_| fastrand::usize(0..n))
            .chain((0..n).map(|k| (first + k) % n))
            .find(|&i| !list[i].failing_at(now))
            .or(Some(first))
            .and_then(|i| list.get(i))
    }

    fn choose(&self, list: &[Arc<Endpoint>], turn: usize) -> usize {
        let n = list.len();
        match self.lb {
            LbPolicy::RoundRobin => turn % n,
            LbPolicy::Random => fastrand::usize(0..n),
            LbPolicy::LeastRequest if n == 1 => 0,
            LbPolicy::LeastRequest => {
                let a = fastrand::usize(0..n);
                let mut b = fastrand::usize(0..n - 1);
                if b >= a {
                    b += 1;
                }
                let now = clock_ms();
                if list[b].cost_at(now) < list[a].cost_at(now) {
                    b
                } else {
                    a
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OVERPROVISIONING;

    fn metrics() -> Metrics {
        Metrics::new(crate::metrics::Node {
            workload: "w".into(),
            namespace: "ns".into(),
        })
    }

    #[test]
    fn weights_become_copies_in_proportion() {
        let with = |weights: &[u32]| -> Vec<u32> {
            let configs: Vec<EndpointConfig> = weights
                .iter()
                .map(|&weight| EndpointConfig {
                    weight,
                    ..cfgs(1).remove(0)
                })
                .collect();
            copies(&configs)
        };
        // (weights, copies)
        let cases: [(&[u32], &[u32]); 5] = [
            (&[1, 1, 1], &[1, 1, 1]),
            (&[1000, 100], &[10, 1]),
            (&[3, 2], &[3, 2]),
            (&[1000, 999, 1], &[128, 128, 1]),
            (&[0, 5], &[1, 5]),
        ];
        for (weights, want) in cases {
            assert_eq!(with(weights), want, "{weights:?}");
        }
    }

    /// The set of cluster `c` of `configs`, with Envoy's default overprovisioning factor.
    fn set_of(configs: &[EndpointConfig], lb: LbPolicy) -> EndpointSet {
        EndpointSet::new(
            "c",
            configs,
            OVERPROVISIONING,
            lb,
            &Transport::default(),
            None,
            &metrics(),
        )
    }

    fn cfgs(n: u16) -> Vec<EndpointConfig> {
        (0..n)
            .map(|i| EndpointConfig {
                transport_match: Vec::new(),
                addr: SocketAddr::from(([127, 0, 0, 1], 1000 + i)),
                weight: 1,
                identity: None,
                workload: None,
                priority: 0,
                healthy: true,
            })
            .collect()
    }

    /// Envoy's own examples (its priority-levels docs, factor 1.4).
    #[test]
    fn priority_load_moves_with_the_preferred_priority_s_health() {
        // Healthy of all endpoints, per priority.
        type Health<'a> = &'a [(usize, usize)];
        // (health, load)
        let cases: [(Health, &[u32]); 9] = [
            (&[(10, 10), (10, 10)], &[100, 0]),
            (&[(72, 100), (100, 100)], &[100, 0]),
            (&[(71, 100), (100, 100)], &[99, 1]),
            (&[(50, 100), (100, 100)], &[70, 30]),
            (&[(25, 100), (100, 100)], &[35, 65]),
            (&[(25, 100), (25, 100), (100, 100)], &[35, 35, 30]),
            // Too little health everywhere: scaled up to 100, in proportion.
            (&[(20, 100), (20, 100)], &[50, 50]),
            (&[(1, 200), (1, 200)], &[100, 0]),
            // Rounding's leftover goes to the first priority with any health.
            (
                &[(0, 10), (33, 140), (33, 140), (33, 140)],
                &[0, 34, 33, 33],
            ),
        ];
        // A larger factor holds the load longer: with 10, a priority keeps it all until fewer
        // than a tenth of its endpoints are healthy (failover only at none, in practice).
        assert_eq!(priority_load(&[(1, 10), (10, 10)], 1000), [100, 0]);
        for (health, want) in cases {
            assert_eq!(priority_load(health, OVERPROVISIONING), want, "{health:?}");
        }
    }

    /// Half of the preferred priority marked unhealthy: 70% of the requests stay there, 30%
    /// go to the next, within statistical error.
    #[test]
    fn unhealthy_endpoints_move_their_priority_s_share_on() {
        let mut configs = cfgs(3);
        configs[1].healthy = false;
        configs[2].priority = 1;
        let set = set_of(&configs, LbPolicy::Random);
        assert_eq!(set.priority_load, [70, 30]);
        let n = 2000;
        let preferred = (0..n)
            .filter(|_| set.pick().unwrap().addr.port() == 1000)
            .count();
        // sd = sqrt(2000 * 0.7 * 0.3) ~ 20.5: 1400 +- 100 is beyond 4.8 sd.
        assert!((1300..=1500).contains(&preferred), "{preferred} of {n}");
        // The unhealthy one takes nothing.
        assert!(set.get(configs[1].addr).is_none());
    }

    #[test]
    fn failover_priorities_take_traffic_only_while_every_preferred_endpoint_fails() {
        let mut configs = cfgs(3);
        configs[1].priority = 1;
        configs[2].priority = 2;
        // Sent in any order, ranked by priority.
        configs.reverse();
        let set = set_of(&configs, LbPolicy::RoundRobin);
        let port = |set: &EndpointSet| set.pick().map(|e| e.addr.port());
        assert_eq!(set.failover.len(), 2);
        for _ in 0..10 {
            assert_eq!(port(&set), Some(1000));
        }
        // The preferred endpoint refuses: the next level takes over, then the one after it.
        set.endpoints[0].start().failed();
        assert_eq!(port(&set), Some(1001));
        set.failover[0][0].start().failed();
        assert_eq!(port(&set), Some(1002));
        // Everything failing: the preferred choice, as with one level.
        set.failover[1][0].start().failed();
        assert_eq!(port(&set), Some(1000));
        // It answers again and has its traffic back.
        set.endpoints[0].start().answered();
        assert_eq!(port(&set), Some(1000));
        // Round robin turns once per request, so a failover level of two shares its traffic.
        let mut two = cfgs(3);
        two[1].priority = 1;
        two[2].priority = 1;
        let set2 = set_of(&two, LbPolicy::RoundRobin);
        set2.endpoints[0].start().failed();
        let ports: Vec<u16> = (0..4).filter_map(|_| port(&set2)).collect();
        assert_eq!(ports.iter().filter(|p| **p == 1001).count(), 2, "{ports:?}");
        assert_eq!(ports.iter().filter(|p| **p == 1002).count(), 2, "{ports:?}");
        // A level of no healthy endpoints is no level: the next one is preferred.
        let only_failover = set_of(&configs[..2], LbPolicy::RoundRobin);
        assert_eq!(port(&only_failover), Some(1001));
        assert!(only_failover.failover.len() == 1 && only_failover.get(configs[0].addr).is_some());
    }

    #[test]
    fn round_robin_cycles() {
        let set = set_of(&cfgs(3), LbPolicy::RoundRobin);
        let ports: Vec<u16> = (0..6).map(|_| set.pick().unwrap().addr.port()).collect();
        assert_eq!(ports, [1000, 1001, 1002, 1000, 1001, 1002]);
    }

    #[test]
    fn least_request_avoids_a_busy_endpoint() {
        let set = set_of(&cfgs(2), LbPolicy::LeastRequest);
        let busy = set.endpoints[0].clone();
        let _guards: Vec<InFlight> = (0..10).map(|_| busy.start()).collect();
        for _ in 0..100 {
            assert_eq!(set.pick().unwrap().addr.port(), 1001);
        }
    }

    /// A request's latency is taken when the endpoint answers, so a stream held open afterwards
    /// (a WebSocket, a download) does not make the endpoint look slow.
    #[tokio::test(start_paused = true)]
    async fn latency_is_measured_to_the_answer_not_to_the_end_of_the_stream() {
        let set = set_of(&cfgs(1), LbPolicy::LeastRequest);
        let ep = &set.endpoints[0];
        let mut guard = ep.start();
        guard.answered();
        tokio::time::advance(Duration::from_millis(50)).await;
        drop(guard);
        assert!(ep.ewma_ns.load(Ordering::Relaxed) < 10_000_000);
        // Unanswered (timed out, cancelled), the whole wait counts.
        let guard = ep.start();
        tokio::time::advance(Duration::from_millis(50)).await;
        drop(guard);
        assert!(ep.ewma_ns.load(Ordering::Relaxed) > 10_000_000);
    }

    /// One very slow answer keeps an endpoint out only while it is fresh: the estimate fades,
    /// the endpoint is tried again and measured anew.
    #[test]
    fn a_slow_endpoints_estimate_fades_so_it_is_tried_again() {
        let set = set_of(&cfgs(2), LbPolicy::LeastRequest);
        let (slow, fast) = (&set.endpoints[0], &set.endpoints[1]);
        slow.observe(Duration::from_secs(60), clock_ms());
        fast.observe(Duration::from_millis(1), clock_ms());
        let to_slow = (0..1000)
            .filter(|_| set.pick().unwrap().addr.port() == 1000)
            .count();
        assert_eq!(to_slow, 0);
        // Two minutes on, the fast endpoint measured all along: 18 s of estimate has faded
        // below its 1 ms.
        let later = clock_ms() + 120_000;
        fast.sampled_at_ms.store(later, Ordering::Relaxed);
        assert!(slow.cost_at(later) < fast.cost_at(later));
        assert!(slow.cost_at(later - 60_000) > fast.cost_at(later));
    }

    #[test]
    fn a_failing_endpoint_is_passed_over_until_it_answers() {
        for lb in [
            LbPolicy::LeastRequest,
            LbPolicy::RoundRobin,
            LbPolicy::Random,
        ] {
            let set = set_of(&cfgs(2), lb);
            let mut guard = set.endpoints[0].start();
            guard.failed();
            drop(guard);
            for _ in 0..50 {
                assert_eq!(set.pick().unwrap().addr.port(), 1001, "{lb:?}");
            }
            // Its share spreads over the others by weight, not onto its neighbour.
            let spread = set_of(&cfgs(3), lb);
            spread.endpoints[1].start().failed();
            let mut hits = [0u32; 3];
            for _ in 0..3000 {
                hits[(spread.pick().unwrap().addr.port() - 1000) as usize] += 1;
            }
            assert_eq!(hits[1], 0, "{lb:?}");
            assert!(hits[0] > 1000 && hits[2] > 1000, "{lb:?} {hits:?}");
            // With every endpoint failing, one is still tried rather than none.
            set.endpoints[1].start().failed();
            assert!(set.pick().is_some());
            set.endpoints[0].start().answered();
            set.endpoints[1].start().answered();
            assert!(!set.endpoints[0].failing() && !set.endpoints[1].failing());
        }
    }

    #[test]
    fn state_survives_a_rebuild() {
        let old = set_of(&cfgs(2), LbPolicy::LeastRequest);
        let guard = old.endpoints[1].start();
        let new = EndpointSet::new(
            "c",
            &cfgs(3),
            OVERPROVISIONING,
            LbPolicy::LeastRequest,
            &Transport::default(),
            Some(&old),
            &metrics(),
        );
        assert!(Arc::ptr_eq(&old.endpoints[1], &new.endpoints[1]));
        assert_eq!(new.endpoints[1].in_flight.load(Ordering::Relaxed), 1);
        drop(guard);
        assert_eq!(new.endpoints[1].in_flight.load(Ordering::Relaxed), 0);
        assert!(new.pick().is_some());
        assert!(set_of(&[], LbPolicy::Random).pick().is_none());
    }
}
