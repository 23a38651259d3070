//! ADS client: Delta, or state of the world where the control plane serves only that (the
//! two wire forms are in [`super::wire`]).
//!
//! Subscribes to every Cluster and Listener (wildcard), then to the ClusterLoadAssignments and
//! RouteConfigurations those name. Each response is converted whole: if any resource in it cannot
//! be applied, none is, and the response is NACKed with the errors; the last good config stays.
//! A complete config (every named EDS/RDS resource answered) is published to the [`Store`]. When
//! the stream breaks, the proxy keeps serving and reconnects with backoff, sending the versions it
//! holds so the server resends only what changed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use prost::Message;
use weft_proto::resource::{CDS, EDS, LDS, RDS};
use weft_proto::xds::config::cluster::v3 as xc;
use weft_proto::xds::config::endpoint::v3::ClusterLoadAssignment;
use weft_proto::xds::config::listener::v3 as xl;
use weft_proto::xds::config::route::v3 as xr;
use weft_proto::xds::service::discovery::v3::DeltaDiscoveryResponse;

use super::convert::{self, Invalid};
use super::wire::{Ask, Session, XdsProtocol};
use crate::config::{Assignment, Cluster, Config, Handler, Listener, RouteTable};
use crate::dns::{Resolved, Resolver};
use crate::metrics::Metrics;
use crate::store::Store;

/// How to reach the control plane.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The ADS server, and how to speak to it.
    pub control_plane: crate::control_plane::ControlPlane,
    /// Node id (`<pod>.<namespace>`).
    pub node_id: String,
    /// How long to wait for an EDS or RDS resource the config names before applying the config
    /// without it (Envoy's `initial_fetch_timeout`): one resource the server never sends must not
    /// hold back every later update.
    pub initial_fetch_timeout: Duration,
    /// Interval of HTTP/2 pings on the stream; an unanswered one (a third of it, at most 10 s)
    /// ends the stream, so a control plane lost without a reset is reconnected to. Zero: none.
    pub keepalive: Duration,
    /// Delta, state of the world, or Delta with a fall-back to the other.
    pub protocol: XdsProtocol,
}

/// TCP keepalive on the xDS connection, whatever the pings: the kernel's own check for a peer
/// that is gone.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// How long a connect to the control plane may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Envoy's default `initial_fetch_timeout`.
pub const INITIAL_FETCH_TIMEOUT: Duration = Duration::from_secs(15);

type Versioned<T> = BTreeMap<String, (String, T)>;

/// Everything received and accepted so far.
#[derive(Default)]
struct Held {
    clusters: Versioned<Arc<Cluster>>,
    endpoints: Versioned<Arc<Assignment>>,
    listeners: Versioned<Arc<Listener>>,
    routes: Versioned<Arc<RouteTable>>,
    /// Types answered at least once on some stream.
    seen: BTreeSet<&'static str>,
}

impl Held {
    fn wanted_eds(&self) -> BTreeSet<String> {
        self.clusters
            .values()
            .filter_map(|(_, c)| c.eds.clone())
            .collect()
    }

    fn wanted_rds(&self) -> BTreeSet<String> {
        self.listeners
            .values()
            .flat_map(|(_, l)| {
                let chains = l.by_port.iter();
                let handlers = chains.flat_map(|c| [&c.handler, &c.fallback]);
                l.handler.iter().chain(&l.fallback).chain(handlers)
            })
            .filter_map(|h| match h {
                Handler::Http { route_config, .. } => Some(route_config.clone()),
                _ => None,
            })
            .collect()
    }

    fn versions<T>(map: &Versioned<T>) -> HashMap<String, String> {
        map.iter()
            .map(|(n, (v, _))| (n.clone(), v.clone()))
            .collect()
    }
}

/// The names of `wanted` that `held` has.
fn held_of<T>(wanted: &BTreeSet<String>, held: &Versioned<T>) -> BTreeSet<String> {
    wanted
        .iter()
        .filter(|n| held.contains_key(*n))
        .cloned()
        .collect()
}

/// The `&'static` form of a type weft-proxy reads.
fn known_type(type_url: &str) -> Option<&'static str> {
    [CDS, EDS, LDS, RDS].into_iter().find(|t| *t == type_url)
}

/// `Cluster` for `type.googleapis.com/envoy.config.cluster.v3.Cluster`: a bounded label value.
fn short_type(type_url: &str) -> &'static str {
    match type_url {
        CDS => "Cluster",
        EDS => "ClusterLoadAssignment",
        LDS => "Listener",
        RDS => "RouteConfiguration",
        _ => "other",
    }
}

/// Keeps the proxy's config in sync with the control plane.
pub struct Client {
    settings: Settings,
    store: Arc<Store>,
    held: Held,
    /// Names answered on the current stream (absent ones count: they were answered as removed).
    answered: BTreeMap<&'static str, BTreeSet<String>>,
    subscribed_eds: BTreeSet<String>,
    subscribed_rds: BTreeSet<String>,
    metrics: Arc<Metrics>,
    /// Whether the current stream has delivered anything (then a failure restarts the backoff).
    received: bool,
    /// EDS/RDS names subscribed on this stream and not answered yet, with when they were asked for.
    waiting: BTreeMap<(&'static str, String), Instant>,
    /// SotW: per type, the version last accepted and the names it was accepted for, said on the
    /// next stream so the server need not resend what is held.
    accepted: HashMap<&'static str, (String, BTreeSet<String>)>,
    /// Types with a subscription change sent on this stream and no response since.
    subscribing: BTreeSet<&'static str>,
    /// The lookups of the DNS clusters held, and their latest answers.
    dns: Resolver,
    resolved: HashMap<String, Arc<Assignment>>,
}

impl Client {
    /// A client that publishes into `store` and counts into `metrics`.
    pub fn new(settings: Settings, store: Arc<Store>, metrics: Arc<Metrics>) -> Self {
        Self {
            settings,
            store,
            metrics,
            received: false,
            waiting: BTreeMap::new(),
            held: Held::default(),
            answered: BTreeMap::new(),
            subscribed_eds: BTreeSet::new(),
            subscribed_rds: BTreeSet::new(),
            accepted: HashMap::new(),
            subscribing: BTreeSet::new(),
            dns: Resolver::default(),
            resolved: HashMap::new(),
        }
    }

    /// Runs forever: connect, sync, and on any failure back off and reconnect.
    pub async fn run(mut self) {
        let mut backoff = Duration::from_millis(100);
        let mut protocol = self.settings.protocol;
        loop {
            self.received = false;
            let wire = match protocol {
                XdsProtocol::Auto => XdsProtocol::Delta,
                p => p,
            };
            let result = self.stream(wire).await;
            self.metrics.xds.connected.set(0);
            if self.received {
                backoff = Duration::from_millis(100);
            }
            let unimplemented = result.as_ref().is_err_and(|e| {
                e.downcast_ref::<tonic::Status>()
                    .is_some_and(|s| s.code() == tonic::Code::Unimplemented)
            });
            match result {
                Ok(()) => tracing::warn!("xDS stream closed by the control plane; reconnecting"),
                Err(e) if unimplemented && protocol == XdsProtocol::Auto => {
                    tracing::info!(
                        "the control plane does not serve Delta ADS ({e:#}); \
                         speaking state of the world (StreamAggregatedResources) from now on"
                    );
                    protocol = XdsProtocol::Sotw;
                    // Delta's versions mean nothing to a SotW server.
                    self.accepted.clear();
                    continue;
                }
                Err(e) if unimplemented => tracing::error!(
                    "the control plane does not serve {wire:?} ADS, which this proxy is set \
                     to speak (--xds-protocol): {e:#}; retrying in {backoff:?}"
                ),
                Err(e) => tracing::warn!("xDS stream failed: {e:#}; reconnecting in {backoff:?}"),
            }
            let jitter = Duration::from_millis(fastrand::u64(0..=backoff.as_millis() as u64 / 2));
            // DNS answers still apply while the control plane is away.
            let pause = tokio::time::sleep(backoff + jitter);
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    () = &mut pause => break,
                    r = self.dns.next() => self.on_resolved(r),
                }
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// The SotW version last accepted for `t`, if it was accepted for the same `names`: a
    /// server that sees the version it sent may send nothing, which must not leave a name asked
    /// for since then unanswered. (`covered`: the names held when the version was accepted.)
    fn accepted_version(&self, t: &str, names: &BTreeSet<String>) -> String {
        match self.accepted.get(t) {
            Some((version, covered)) if names.is_subset(covered) => version.clone(),
            _ => String::new(),
        }
    }

    async fn stream(&mut self, protocol: XdsProtocol) -> anyhow::Result<()> {
        let keepalive = self.settings.keepalive;
        let control_plane = &self.settings.control_plane;
        let mut endpoint = tonic::transport::Endpoint::from_shared(control_plane.url.clone())?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_keepalive(Some(TCP_KEEPALIVE));
        if !keepalive.is_zero() {
            endpoint = endpoint
                .http2_keep_alive_interval(keepalive)
                .keep_alive_timeout((keepalive / 3).min(Duration::from_secs(10)))
                .keep_alive_while_idle(true);
        }
        let channel = control_plane.connect(endpoint).await?;
        // Wildcard CDS and LDS, telling the server what we hold.
        let none = BTreeSet::new();
        let first = vec![
            Ask::Wildcard {
                type_url: CDS,
                held: Held::versions(&self.held.clusters),
                version: self.accepted_version(CDS, &none),
            },
            Ask::Wildcard {
                type_url: LDS,
                held: Held::versions(&self.held.listeners),
                version: self.accepted_version(LDS, &none),
            },
        ];
        let node = self.settings.node_id.clone();
        let mut session = Session::open(channel, protocol, &node, first).await?;
        // Only now: until the stream is open, what was known stays as it was, so a DNS answer
        // published meanwhile is not taken for a complete config.
        self.answered.clear();
        self.subscribing.clear();
        self.subscribed_eds.clear();
        self.subscribed_rds.clear();
        self.waiting.clear();
        self.resubscribe(&mut session)?;
        tracing::info!(url = %self.settings.control_plane.url, ?protocol, "xDS stream open");
        self.metrics.xds.connected.set(1);
        loop {
            let deadline = self
                .waiting
                .values()
                .min()
                .map(|since| *since + self.settings.initial_fetch_timeout);
            let held = &self.held;
            let names = |t: &str| match t {
                CDS => held.clusters.keys().cloned().collect(),
                LDS => held.listeners.keys().cloned().collect(),
                _ => Vec::new(),
            };
            let fetch_timeout = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let message = tokio::select! {
                m = session.next(names) => m?,
                () = fetch_timeout => {
                    self.give_up_waiting();
                    self.publish_if_complete();
                    continue;
                }
                r = self.dns.next() => {
                    self.on_resolved(r);
                    continue;
                }
            };
            let Some(resp) = message else { break };
            self.received = true;
            let verdict = self.apply(&resp);
            let by_type = vec![("type", short_type(&resp.type_url).to_string())];
            match &verdict {
                Ok(()) => self.metrics.xds.applied.get_or_create(&by_type).inc(),
                Err(_) => self.metrics.xds.rejected.get_or_create(&by_type).inc(),
            };
            let error = verdict.err().map(|errors| {
                let message = errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ");
                tracing::error!(r#type = %resp.type_url, "rejected config (NACK): {message}");
                message
            });
            // SotW: an ACK says which version now applies; a NACK, the one still in force.
            let version = match &error {
                None => resp.system_version_info.clone(),
                Some(_) => self
                    .accepted
                    .get(resp.type_url.as_str())
                    .map(|(v, _)| v.clone())
                    .unwrap_or_default(),
            };
            let mut ask_again = None;
            if let Some(t) = known_type(&resp.type_url) {
                // The names the version covers: those wanted and held now, not names
                // subscribed after the server built the response.
                let (wanted, covered) = self.coverage(t);
                if error.is_none() {
                    self.accepted.insert(t, (version.clone(), covered.clone()));
                }
                // A subscription sent while this response was on its way carried a stale nonce,
                // which servers such as go-control-plane ignore, and a server that answers by
                // version alone answers neither this ACK nor a NACK: if the response leaves a
                // wanted name unanswered, the subscription is sent again, without a version
                // (once: the mark goes with this response).
                if self.subscribing.remove(t) && covered.len() < wanted.len() && session.is_sotw() {
                    ask_again = Some((t, wanted));
                }
            }
            session.send(
                &node,
                Ask::Ack {
                    type_url: resp.type_url.clone(),
                    nonce: resp.nonce.clone(),
                    version,
                    error,
                },
            )?;
            if let Some((t, wanted)) = ask_again {
                session.send(
                    &node,
                    Ask::Subscribe {
                        type_url: t,
                        wanted,
                        add: vec![],
                        remove: vec![],
                        held: HashMap::new(),
                        version: String::new(),
                    },
                )?;
            }
            self.resubscribe(&mut session)?;
            self.publish_if_complete();
        }
        Ok(())
    }

    /// The names subscribed of `t` and those of them held (for CDS and LDS, none: they are
    /// wildcards).
    fn coverage(&self, t: &str) -> (BTreeSet<String>, BTreeSet<String>) {
        match t {
            EDS => (
                self.subscribed_eds.clone(),
                held_of(&self.subscribed_eds, &self.held.endpoints),
            ),
            RDS => (
                self.subscribed_rds.clone(),
                held_of(&self.subscribed_rds, &self.held.routes),
            ),
            _ => (BTreeSet::new(), BTreeSet::new()),
        }
    }

    /// Takes a DNS cluster's new answer as its endpoints.
    fn on_resolved(&mut self, (name, _, endpoints): Resolved) {
        self.resolved
            .insert(name, Arc::new(Assignment::new(endpoints)));
        self.publish_if_complete();
    }

    /// Treats names unanswered for `initial_fetch_timeout` as absent, so the config can apply.
    fn give_up_waiting(&mut self) {
        let timeout = self.settings.initial_fetch_timeout;
        let expired: Vec<(&'static str, String)> = self
            .waiting
            .iter()
            .filter(|(_, since)| since.elapsed() >= timeout)
            .map(|(k, _)| k.clone())
            .collect();
        for (t, name) in expired {
            self.waiting.remove(&(t, name.clone()));
            let held = match t {
                EDS => self.held.endpoints.contains_key(&name),
                _ => self.held.routes.contains_key(&name),
            };
            if !held {
                tracing::warn!(
                    r#type = short_type(t),
                    name,
                    ?timeout,
                    "not sent by the control plane in time; applying the config without it"
                );
                self.metrics
                    .xds
                    .fetch_timeouts
                    .get_or_create(&vec![("type", short_type(t).to_string())])
                    .inc();
            }
            self.answered.entry(t).or_default().insert(name);
        }
    }

    /// Applies one response: every resource in it that converts; the rest are the NACK's errors.
    fn apply(&mut self, resp: &DeltaDiscoveryResponse) -> Result<(), Vec<Invalid>> {
        let t: &'static str = match resp.type_url.as_str() {
            CDS => CDS,
            EDS => EDS,
            LDS => LDS,
            RDS => RDS,
            other => {
                tracing::debug!(type_url = other, "ignoring a type weft-proxy does not use");
                return Ok(());
            }
        };
        /// Stores every resource of `resp` that converts, drops the removed ones, and returns the
        /// errors of those that do not convert (a resource that fails keeps its last good version).
        fn update<M: Message + Default, T>(
            held: &mut Versioned<T>,
            resp: &DeltaDiscoveryResponse,
            convert: impl Fn(&M) -> Result<T, Invalid>,
        ) -> Vec<Invalid> {
            let mut errors = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for r in &resp.resources {
                let invalid = |field: &str, reason: String| Invalid {
                    resource: r.name.clone(),
                    field: field.into(),
                    reason,
                };
                // As Envoy: a name twice in one response, or a resource of another type, is
                // refused rather than applied by guess.
                if !seen.insert(r.name.as_str()) {
                    errors.push(invalid("name", "sent twice in one response".into()));
                    continue;
                }
                // The version held: nothing changed (a SotW response resends every resource,
                // each versioned by its bytes), and the held object stays, so the endpoint
                // sets built from it are not rebuilt.
                if !r.version.is_empty() && held.get(&r.name).is_some_and(|(v, _)| *v == r.version)
                {
                    continue;
                }
                let decoded = r
                    .resource
                    .as_ref()
                    .ok_or_else(|| invalid("resource", "missing".into()))
                    .and_then(|any| match any.type_url == resp.type_url {
                        true => Ok(any),
                        false => Err(invalid(
                            "resource.type_url",
                            format!("{} in a {} response", any.type_url, resp.type_url),
                        )),
                    })
                    .and_then(|any| {
                        M::decode(&any.value[..])
                            .map_err(|e| invalid("resource", format!("cannot decode: {e}")))
                    })
                    .and_then(|m| convert(&m));
                match decoded {
                    Ok(v) => {
                        held.insert(r.name.clone(), (r.version.clone(), v));
                    }
                    Err(e) => errors.push(e),
                }
            }
            for name in &resp.removed_resources {
                held.remove(name);
            }
            errors
        }
        let removed = &resp.removed_resources;
        // Like Envoy, the valid resources of a response apply and the invalid ones are NACKed:
        // one bad listener must not keep every other one (or readiness) from the proxy.
        let held = &mut self.held;
        let errors = match t {
            CDS => update::<xc::Cluster, _>(&mut held.clusters, resp, |m| {
                Cluster::try_from(m).map(Arc::new)
            }),
            EDS => update::<ClusterLoadAssignment, _>(&mut held.endpoints, resp, |m| {
                convert::load_assignment(m).map(Arc::new)
            }),
            LDS => update::<xl::Listener, _>(&mut held.listeners, resp, |m| {
                Listener::try_from(m).map(Arc::new)
            }),
            _ => update::<xr::RouteConfiguration, _>(&mut held.routes, resp, |m| {
                RouteTable::try_from(m).map(Arc::new)
            }),
        };
        tracing::debug!(
            r#type = short_type(t),
            updated = resp.resources.len() - errors.len(),
            removed = removed.len(),
            invalid = errors.len(),
            "xDS response"
        );
        self.held.seen.insert(t);
        let answered = self.answered.entry(t).or_default();
        answered.extend(resp.resources.iter().map(|r| r.name.clone()));
        answered.extend(removed.iter().cloned());
        for name in resp.resources.iter().map(|r| &r.name).chain(removed) {
            self.waiting.remove(&(t, name.clone()));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Keeps EDS and RDS subscriptions equal to what the clusters and listeners name.
    fn resubscribe(&mut self, session: &mut Session) -> anyhow::Result<()> {
        // DNS clusters are looked up as long as they are held, and as they are now (first, so a
        // failed send below leaves them right). A cluster whose names changed keeps serving
        // its last answer until the new one comes, as Envoy's warms beside the old.
        let dns = self
            .held
            .clusters
            .iter()
            .filter_map(|(n, (_, c))| Some((n.as_str(), c.dns.as_ref()?)));
        let _ = self.dns.track(dns);
        let clusters = &self.held.clusters;
        self.resolved
            .retain(|n, _| clusters.get(n).is_some_and(|(_, c)| c.dns.is_some()));
        for t in [EDS, RDS] {
            let (wanted, subscribed) = match t {
                EDS => (self.held.wanted_eds(), &self.subscribed_eds),
                _ => (self.held.wanted_rds(), &self.subscribed_rds),
            };
            if wanted == *subscribed {
                continue;
            }
            let first = subscribed.is_empty() && !wanted.is_empty();
            let add: Vec<String> = wanted.difference(subscribed).cloned().collect();
            let remove: Vec<String> = subscribed.difference(&wanted).cloned().collect();
            // The versions held of the names wanted, on the type's first request of a stream.
            let held = match (first, t) {
                (false, _) => HashMap::new(),
                (true, EDS) => Held::versions(&self.held.endpoints),
                (true, _) => Held::versions(&self.held.routes),
            };
            let held = held
                .into_iter()
                .filter(|(n, _)| wanted.contains(n))
                .collect();
            let now = Instant::now();
            for name in &add {
                self.waiting.insert((t, name.clone()), now);
            }
            for name in &remove {
                self.waiting.remove(&(t, name.clone()));
            }
            let version = self.accepted_version(t, &wanted);
            session.send(
                &self.settings.node_id,
                Ask::Subscribe {
                    type_url: t,
                    wanted: wanted.clone(),
                    add,
                    remove,
                    held,
                    version,
                },
            )?;
            self.subscribing.insert(t);
            match t {
                EDS => self.subscribed_eds = wanted,
                _ => self.subscribed_rds = wanted,
            }
        }
        // Forget what is no longer wanted, answers included: a name subscribed again later must
        // be answered again before the config counts as complete.
        let eds = self.subscribed_eds.clone();
        self.held.endpoints.retain(|n, _| eds.contains(n));
        if let Some(a) = self.answered.get_mut(EDS) {
            a.retain(|n| eds.contains(n));
        }
        let rds = self.subscribed_rds.clone();
        self.held.routes.retain(|n, _| rds.contains(n));
        if let Some(a) = self.answered.get_mut(RDS) {
            a.retain(|n| rds.contains(n));
        }
        Ok(())
    }

    /// Whether every referenced EDS/RDS resource is known: answered on this stream, or held from
    /// before a reconnect (a server that sees our versions match rightly sends nothing for them).
    fn complete(&self) -> bool {
        let known = |t: &str, names: &BTreeSet<String>, held: &dyn Fn(&str) -> bool| {
            let got = self.answered.get(t);
            names
                .iter()
                .all(|n| held(n) || got.is_some_and(|g| g.contains(n)))
        };
        // A DNS cluster waits for its first answer, as Envoy's warms on its first resolution.
        let dns_answered = self
            .held
            .clusters
            .iter()
            .all(|(n, (_, c))| c.dns.is_none() || self.resolved.contains_key(n));
        self.held.seen.contains(CDS)
            && self.held.seen.contains(LDS)
            && dns_answered
            && known(EDS, &self.subscribed_eds, &|n| {
                self.held.endpoints.contains_key(n)
            })
            && known(RDS, &self.subscribed_rds, &|n| {
                self.held.routes.contains_key(n)
            })
    }

    fn publish_if_complete(&mut self) {
        if !self.complete() {
            return;
        }
        let started = Instant::now();
        let mut config = Config::default();
        for (name, (_, l)) in &self.held.listeners {
            config.listeners.insert(name.clone(), l.clone());
            if l.inbound {
                config.inbound = Some(l.clone());
            }
            if !l.bind {
                for a in &l.addresses {
                    config.by_addr.insert(*a, l.clone());
                }
            }
        }
        for (name, (_, r)) in &self.held.routes {
            config.routes.insert(name.clone(), r.clone());
        }
        let mut assignments = crate::config::Map::default();
        for (name, (_, c)) in &self.held.clusters {
            let assignment = match (&c.static_endpoints, &c.eds) {
                (Some(_), _) => None,
                (None, Some(eds)) => self.held.endpoints.get(eds).map(|(_, e)| e.clone()),
                (None, None) => self.resolved.get(name).cloned(),
            };
            config.clusters.insert(name.clone(), c.clone());
            assignments.insert(name.clone(), assignment);
        }
        let rebuilt = self.store.publish(config, &assignments, &self.metrics);
        self.metrics.xds.published.inc();
        tracing::debug!(
            clusters = self.held.clusters.len(),
            rebuilt,
            micros = started.elapsed().as_micros(),
            "config published"
        );
    }
}
