//! The proxy's xDS client against a scripted ADS server: ACK, NACK naming the field with the
//! last good config kept, EDS warming, reconnect with the versions held; Delta, and state of the
//! world with a server that serves only that.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};
use weft_proto::google::protobuf::Any;
use weft_proto::xds::config::cluster::v3::{Cluster, cluster};
use weft_proto::xds::config::core::v3::{
    Address, AggregatedConfigSource, ConfigSource, SocketAddress, TransportSocket, address,
    config_source, socket_address::PortSpecifier,
};
use weft_proto::xds::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use weft_proto::xds::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
    aggregated_discovery_service_server::{
        AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
    },
};
use weft_proxy::store::{Snapshot, Store};
use weft_proxy::xds::{Client, Settings};

use weft_proto::resource::{CDS, EDS, LDS};

type Reply = mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>;

/// Hands each stream of the form it serves to the test, which plays the server; the other form
/// is answered UNIMPLEMENTED, as a server of one form does, and counted.
struct Scripted {
    delta: Option<Streams<DeltaDiscoveryRequest, DeltaDiscoveryResponse>>,
    sotw: Option<Streams<DiscoveryRequest, DiscoveryResponse>>,
    refused: Arc<std::sync::atomic::AtomicUsize>,
}

type Out<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Where a scripted server hands each stream: its requests, and where to send its responses.
type Streams<Q, A> = mpsc::Sender<(Streaming<Q>, mpsc::Sender<Result<A, Status>>)>;

impl Scripted {
    /// Hands a stream the client opened to the test, or refuses a form this server lacks.
    async fn hand_over<Q, A: Send + 'static>(
        &self,
        to: Option<&Streams<Q, A>>,
        req: Request<Streaming<Q>>,
    ) -> Result<Response<Out<A>>, Status> {
        let Some(to) = to else {
            self.refused
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            return Err(Status::unimplemented("not served here"));
        };
        let (tx, rx) = mpsc::channel(8);
        to.send((req.into_inner(), tx)).await.unwrap();
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Scripted {
    type StreamAggregatedResourcesStream = Out<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = Out<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        self.hand_over(self.sotw.as_ref(), req).await
    }

    async fn delta_aggregated_resources(
        &self,
        req: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        self.hand_over(self.delta.as_ref(), req).await
    }
}

fn addr(port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: "127.0.0.1".into(),
            port_specifier: Some(PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

fn cla(name: &str, port: u32) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: vec![LbEndpoint {
                host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                    address: Some(addr(port)),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn static_cluster(name: &str) -> Cluster {
    Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        load_assignment: Some(cla(name, 1)),
        ..Default::default()
    }
}

fn eds_cluster(name: &str) -> Cluster {
    eds_cluster_named(name, "")
}

/// An EDS cluster whose assignment is `service` (empty: the cluster's own name).
fn eds_cluster_named(name: &str, service: &str) -> Cluster {
    Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ConfigSource {
                config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
                    AggregatedConfigSource {},
                )),
                ..Default::default()
            }),
            service_name: service.into(),
        }),
        ..Default::default()
    }
}

fn resource<M: Message>(name: &str, version: &str, type_url: &str, m: &M) -> Resource {
    Resource {
        name: name.into(),
        version: version.into(),
        resource: Some(Any {
            type_url: type_url.into(),
            value: m.encode_to_vec(),
        }),
        ..Default::default()
    }
}

fn response(type_url: &str, nonce: &str, resources: Vec<Resource>) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        type_url: type_url.into(),
        nonce: nonce.into(),
        resources,
        ..Default::default()
    }
}

async fn next(s: &mut Streaming<DeltaDiscoveryRequest>) -> DeltaDiscoveryRequest {
    tokio::time::timeout(Duration::from_secs(5), s.message())
        .await
        .expect("a request in time")
        .unwrap()
        .unwrap()
}

async fn eventually(what: &str, f: impl Fn() -> bool) {
    for _ in 0..250 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out: {what}");
}

/// Starts the scripted ADS server; each stream a client opens arrives on the receiver.
async fn scripted_server() -> (
    mpsc::Receiver<(Streaming<DeltaDiscoveryRequest>, Reply)>,
    std::net::SocketAddr,
) {
    let (streams_tx, streams) = mpsc::channel(4);
    let server = Scripted {
        delta: Some(streams_tx),
        sotw: None,
        refused: Default::default(),
    };
    (streams, serve(server).await)
}

/// Serves `ads` on a free loopback port.
async fn serve<S: AggregatedDiscoveryService>(ads: S) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AggregatedDiscoveryServiceServer::new(ads))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    addr
}

/// The next stream a client opens, within 10 s.
async fn next_stream<T>(streams: &mut mpsc::Receiver<T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), streams.recv())
        .await
        .expect("a new stream in time")
        .expect("the server runs")
}

/// Starts weft-proxy's xDS client against `addr`.
fn start_client(
    addr: std::net::SocketAddr,
    keepalive: Duration,
) -> (Arc<Store>, Arc<weft_proxy::metrics::Metrics>) {
    let store = Arc::new(Store::default());
    let metrics = Arc::new(weft_proxy::metrics::Metrics::new(
        weft_proxy::metrics::Node {
            workload: "web".into(),
            namespace: "shop".into(),
        },
    ));
    tokio::spawn(
        Client::new(
            Settings {
                control_plane: weft_proxy::control_plane::ControlPlane::plaintext(format!(
                    "http://{addr}"
                )),
                node_id: "web-0.shop".into(),
                initial_fetch_timeout: Duration::from_millis(1500),
                keepalive,
                protocol: weft_proxy::xds::XdsProtocol::Auto,
            },
            store.clone(),
            metrics.clone(),
        )
        .run(),
    );
    (store, metrics)
}

/// A client connected to a scripted server: its store, its requests, and where to answer them.
async fn connected_client() -> (Arc<Store>, Streaming<DeltaDiscoveryRequest>, Reply) {
    let (mut streams, addr) = scripted_server().await;
    let (store, _metrics) = start_client(addr, Duration::from_secs(30));
    let (reqs, reply) = streams.recv().await.unwrap();
    (store, reqs, reply)
}

/// A TCP relay to `to` whose connections stop forwarding, without closing, once `frozen` is
/// set: what a lost node or a network partition looks like from the proxy (no FIN, no RST).
async fn freezable_relay(
    to: std::net::SocketAddr,
) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Connections numbered below this are frozen.
    let frozen_below = Arc::new(AtomicUsize::new(0));
    let frozen = frozen_below.clone();
    tokio::spawn(async move {
        for id in 0.. {
            let (client, _) = listener.accept().await.unwrap();
            let server = tokio::net::TcpStream::connect(to).await.unwrap();
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            for (mut from, mut to) in [(cr, sw), (sr, cw)] {
                let frozen = frozen.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n @ 1..) = from.read(&mut buf).await {
                        if id < frozen.load(Ordering::SeqCst) {
                            // Hold both sockets open and forward nothing more.
                            std::future::pending::<()>().await;
                        }
                        if to.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        }
    });
    (addr, frozen_below)
}

#[tokio::test]
async fn a_control_plane_that_goes_silent_is_reconnected_to() {
    let (mut streams, server) = scripted_server().await;
    let (relay, frozen_below) = freezable_relay(server).await;
    // Pings every 1.5 s, given 0.5 s to be answered: quick, yet not so tight that a loaded CI
    // machine misses one before the path goes silent.
    let (store, metrics) = start_client(relay, Duration::from_millis(1500));
    let (mut reqs, reply) = streams.recv().await.unwrap();
    next(&mut reqs).await;
    next(&mut reqs).await;
    reply
        .send(Ok(response(
            CDS,
            "n1",
            vec![resource("c1", "v1", CDS, &static_cluster("c1"))],
        )))
        .await
        .unwrap();
    reply.send(Ok(response(LDS, "n2", vec![]))).await.unwrap();
    eventually("ready", || store.is_ready()).await;

    // The path goes silent; pings go unanswered, and the client dials again (through the relay,
    // whose new connections forward), saying what it holds.
    frozen_below.store(1, std::sync::atomic::Ordering::SeqCst);
    let (mut again, _reply) = next_stream(&mut streams).await;
    let first = next(&mut again).await;
    assert_eq!(first.type_url, CDS);
    assert_eq!(
        first
            .initial_resource_versions
            .get("c1")
            .map(String::as_str),
        Some("v1")
    );
    assert!(
        store.load().config.clusters.contains_key("c1"),
        "config kept"
    );
    eventually("connected again", || {
        metrics.render(false).contains("weft_proxy_xds_connected 1")
    })
    .await;
    drop(reqs);
}

#[tokio::test]
async fn ack_nack_warming_and_reconnect() {
    let (mut streams, addr) = scripted_server().await;
    let (store, metrics) = start_client(addr, Duration::from_secs(30));

    let (mut reqs, reply) = streams.recv().await.unwrap();
    let first = next(&mut reqs).await;
    assert_eq!(first.type_url, CDS);
    assert_eq!(first.node.as_ref().unwrap().id, "web-0.shop");
    assert!(first.resource_names_subscribe.is_empty(), "wildcard");
    assert_eq!(next(&mut reqs).await.type_url, LDS);

    // CDS then (empty) LDS: a complete config.
    reply
        .send(Ok(response(
            CDS,
            "n1",
            vec![resource("c1", "v1", CDS, &static_cluster("c1"))],
        )))
        .await
        .unwrap();
    let ack = next(&mut reqs).await;
    assert_eq!(
        (ack.type_url.as_str(), ack.response_nonce.as_str()),
        (CDS, "n1")
    );
    assert!(ack.error_detail.is_none());
    assert!(!store.is_ready(), "not ready before LDS");
    reply.send(Ok(response(LDS, "n2", vec![]))).await.unwrap();
    assert!(next(&mut reqs).await.error_detail.is_none());
    eventually("ready", || store.is_ready()).await;
    assert!(store.load().config.clusters.contains_key("c1"));

    // Clusters with a field weft-proxy cannot apply: NACK naming them; as in Envoy, the valid
    // resources of the same response apply, and a bad update of a held one keeps its old version.
    let tls = |name: &str| {
        let mut bad = static_cluster(name);
        bad.transport_socket = Some(TransportSocket {
            name: "tls".into(),
            ..Default::default()
        });
        bad
    };
    let bad = tls("c2");
    reply
        .send(Ok(response(
            CDS,
            "n3",
            vec![
                resource("c2", "v1", CDS, &bad),
                resource("c4", "v1", CDS, &static_cluster("c4")),
                resource("c1", "v2", CDS, &tls("c1")),
            ],
        )))
        .await
        .unwrap();
    let nack = next(&mut reqs).await;
    assert_eq!(nack.response_nonce, "n3");
    let msg = nack.error_detail.expect("NACK").message;
    assert!(msg.contains("c2: transport_socket"), "{msg}");
    assert!(msg.contains("c1: transport_socket"), "{msg}");
    // The rejection is counted where Prometheus sees it, next to the applied responses.
    let text = metrics.render(false);
    assert!(
        text.contains("weft_proxy_xds_rejected_total{type=\"Cluster\"} 1"),
        "{text}"
    );
    assert!(text.contains("weft_proxy_xds_connected 1"), "{text}");
    eventually("c4 applied", || {
        store.load().config.clusters.contains_key("c4")
    })
    .await;
    let cfg = store.load();
    assert!(cfg.config.clusters.contains_key("c1") && !cfg.config.clusters.contains_key("c2"));

    // An EDS cluster: the proxy subscribes to its endpoints and applies it only once they arrive.
    reply
        .send(Ok(response(
            CDS,
            "n4",
            vec![resource("c3", "v1", CDS, &eds_cluster("c3"))],
        )))
        .await
        .unwrap();
    let mut saw_sub = false;
    for _ in 0..2 {
        let r = next(&mut reqs).await;
        if r.type_url == EDS {
            assert_eq!(r.resource_names_subscribe, ["c3"]);
            saw_sub = true;
        }
    }
    assert!(saw_sub, "no EDS subscription");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !store.load().config.clusters.contains_key("c3"),
        "c3 applied before its endpoints"
    );
    reply
        .send(Ok(response(
            EDS,
            "n5",
            vec![resource("c3", "e1", EDS, &cla("c3", 8080))],
        )))
        .await
        .unwrap();
    assert!(next(&mut reqs).await.error_detail.is_none());
    eventually("c3 with endpoints", || {
        store
            .load()
            .endpoints
            .get("c3")
            .is_some_and(|s| s.pick().is_some_and(|e| e.addr.port() == 8080))
    })
    .await;

    // An EDS cluster the server never answers for: after the initial fetch timeout the config
    // applies without its endpoints (requests to it get 503 UH) instead of waiting forever.
    reply
        .send(Ok(response(
            CDS,
            "n6",
            vec![resource("c5", "v1", CDS, &eds_cluster("c5"))],
        )))
        .await
        .unwrap();
    let asked = tokio::time::Instant::now();
    eventually("c5 applied without endpoints", || {
        store.load().config.clusters.contains_key("c5")
    })
    .await;
    assert!(asked.elapsed() >= Duration::from_millis(1400));
    assert!(store.load().endpoints["c5"].pick().is_none());
    assert!(store.load().config.clusters.contains_key("c3"));
    let text = metrics.render(false);
    assert!(
        text.contains("weft_proxy_xds_fetch_timeouts_total{type=\"ClusterLoadAssignment\"} 1"),
        "{text}"
    );

    // The control plane goes away: the proxy keeps its config and reconnects with what it holds.
    drop(reply);
    drop(reqs);
    let (mut reqs, _reply) = next_stream(&mut streams).await;
    assert!(
        store.load().config.clusters.contains_key("c3"),
        "config kept while disconnected"
    );
    let again = next(&mut reqs).await;
    assert_eq!(again.type_url, CDS);
    let held = again.initial_resource_versions;
    assert_eq!(held.get("c1").map(String::as_str), Some("v1"));
    assert_eq!(held.get("c3").map(String::as_str), Some("v1"));
    assert!(!held.contains_key("c2"));
}

/// The port of the endpoint the live config would send `cluster`'s next request to.
fn port_of(store: &Store, cluster: &str) -> Option<u16> {
    let config = store.load();
    let port = config.endpoints.get(cluster)?.pick()?.addr.port();
    Some(port)
}

/// Reads requests until one satisfies `want` (ACKs of earlier responses come first).
async fn until(
    s: &mut Streaming<DeltaDiscoveryRequest>,
    want: impl Fn(&DeltaDiscoveryRequest) -> bool,
) -> DeltaDiscoveryRequest {
    for _ in 0..8 {
        let r = next(s).await;
        if want(&r) {
            return r;
        }
    }
    panic!("no such request");
}

#[tokio::test]
async fn removals_unsubscribe_and_a_new_subscription_waits_for_its_answer() {
    let (store, mut reqs, reply) = connected_client().await;
    let send = |r: DeltaDiscoveryResponse| {
        let reply = reply.clone();
        async move { reply.send(Ok(r)).await.unwrap() }
    };
    let eds_sub = |name: &'static str| {
        move |r: &DeltaDiscoveryRequest| r.type_url == EDS && r.resource_names_subscribe == [name]
    };
    send(response(
        CDS,
        "n1",
        vec![
            resource("e1", "v1", CDS, &eds_cluster("e1")),
            resource("s1", "v1", CDS, &static_cluster("s1")),
        ],
    ))
    .await;
    send(response(LDS, "n2", vec![])).await;
    until(&mut reqs, eds_sub("e1")).await;
    // A cluster whose assignment has a name of its own (Istio's shape): that name is subscribed,
    // and its endpoints are the cluster's.
    send(response(
        CDS,
        "n2b",
        vec![resource(
            "named",
            "v1",
            CDS,
            &eds_cluster_named("named", "named-eds"),
        )],
    ))
    .await;
    until(&mut reqs, eds_sub("named-eds")).await;
    send(response(
        EDS,
        "n2c",
        vec![resource("named-eds", "1", EDS, &cla("named-eds", 7070))],
    ))
    .await;
    send(response(
        EDS,
        "n3",
        vec![resource("e1", "1", EDS, &cla("e1", 8080))],
    ))
    .await;
    eventually("e1 with endpoints", || port_of(&store, "e1") == Some(8080)).await;
    eventually("named with named-eds' endpoints", || {
        port_of(&store, "named") == Some(7070)
    })
    .await;

    // The server removes the cluster: it goes, its endpoints are unsubscribed, the rest stays.
    let mut removal = response(CDS, "n4", vec![]);
    removal.removed_resources = vec!["e1".into()];
    send(removal).await;
    let unsub = until(&mut reqs, |r| {
        r.type_url == EDS && r.response_nonce.is_empty()
    })
    .await;
    assert_eq!(unsub.resource_names_unsubscribe, ["e1"]);
    eventually("e1 removed", || {
        !store.load().config.clusters.contains_key("e1")
    })
    .await;
    let cfg = store.load();
    assert!(!cfg.endpoints.contains_key("e1") && cfg.config.clusters.contains_key("s1"));

    // It comes back: subscribed again, and not applied until its endpoints are answered anew
    // (the ones held before the removal are forgotten).
    send(response(
        CDS,
        "n5",
        vec![resource("e1", "v2", CDS, &eds_cluster("e1"))],
    ))
    .await;
    let resub = until(&mut reqs, eds_sub("e1")).await;
    assert!(resub.initial_resource_versions.is_empty(), "{resub:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !store.load().config.clusters.contains_key("e1"),
        "applied unanswered"
    );
    send(response(
        EDS,
        "n6",
        vec![resource("e1", "2", EDS, &cla("e1", 9090))],
    ))
    .await;
    eventually("e1 back with its new endpoints", || {
        port_of(&store, "e1") == Some(9090)
    })
    .await;
}

/// A change to one cluster rebuilds that cluster's endpoint set only: the others are carried
/// into the new config as they were (with thousands of clusters, rebuilding every set stalled
/// the requests sharing the proxy's thread), and a rebuilt set keeps the state of endpoints it
/// still has.
#[tokio::test]
async fn a_change_to_one_cluster_leaves_the_other_endpoint_sets_as_they_were() {
    let (store, mut reqs, reply) = connected_client().await;
    let send = |r: DeltaDiscoveryResponse| {
        let reply = reply.clone();
        async move { reply.send(Ok(r)).await.unwrap() }
    };
    send(response(
        CDS,
        "n1",
        vec![
            resource("e1", "v1", CDS, &eds_cluster("e1")),
            resource("e2", "v1", CDS, &eds_cluster("e2")),
            resource("s1", "v1", CDS, &static_cluster("s1")),
        ],
    ))
    .await;
    send(response(LDS, "n2", vec![])).await;
    until(&mut reqs, |r| r.type_url == EDS).await;
    send(response(
        EDS,
        "n3",
        vec![
            resource("e1", "1", EDS, &cla("e1", 8081)),
            resource("e2", "1", EDS, &cla("e2", 8082)),
        ],
    ))
    .await;
    eventually("both assignments", || {
        port_of(&store, "e1") == Some(8081) && port_of(&store, "e2") == Some(8082)
    })
    .await;
    let before = store.load();
    let set = |c: &Snapshot, n: &str| c.endpoints.get(n).unwrap().clone();

    send(response(
        EDS,
        "n4",
        vec![resource("e2", "2", EDS, &cla("e2", 9092))],
    ))
    .await;
    eventually("e2 moved", || port_of(&store, "e2") == Some(9092)).await;
    let after = store.load();
    assert!(Arc::ptr_eq(&set(&before, "e1"), &set(&after, "e1")));
    assert!(Arc::ptr_eq(&set(&before, "s1"), &set(&after, "s1")));
    assert!(!Arc::ptr_eq(&set(&before, "e2"), &set(&after, "e2")));

    // e1's cluster is sent again: its set is rebuilt, around the same endpoint.
    send(response(
        CDS,
        "n5",
        vec![resource("e1", "v2", CDS, &eds_cluster("e1"))],
    ))
    .await;
    eventually("e1 rebuilt", || {
        !Arc::ptr_eq(&set(&after, "e1"), &set(&store.load(), "e1"))
    })
    .await;
    let rebuilt = store.load();
    assert!(Arc::ptr_eq(
        &set(&after, "e1").endpoints[0],
        &set(&rebuilt, "e1").endpoints[0]
    ));
    assert!(Arc::ptr_eq(&set(&after, "e2"), &set(&rebuilt, "e2")));
}

#[tokio::test]
async fn a_name_twice_or_a_resource_of_another_type_is_nacked_and_the_rest_applies() {
    let (store, mut reqs, reply) = connected_client().await;
    assert_eq!(next(&mut reqs).await.type_url, CDS);
    assert_eq!(next(&mut reqs).await.type_url, LDS);
    reply
        .send(Ok(response(
            CDS,
            "n1",
            vec![
                resource("c1", "v1", CDS, &static_cluster("c1")),
                resource("c1", "v2", CDS, &static_cluster("c1")),
                // A ClusterLoadAssignment's type in a CDS response.
                resource("c2", "v1", EDS, &static_cluster("c2")),
                resource("c3", "v1", CDS, &static_cluster("c3")),
            ],
        )))
        .await
        .unwrap();
    let nack = next(&mut reqs).await;
    assert_eq!(nack.response_nonce, "n1");
    let msg = nack.error_detail.expect("NACK").message;
    assert!(msg.contains("c1: name: sent twice"), "{msg}");
    assert!(msg.contains("c2: resource.type_url"), "{msg}");
    reply.send(Ok(response(LDS, "n2", vec![]))).await.unwrap();
    eventually("ready", || store.is_ready()).await;
    let config = store.load();
    assert!(config.config.clusters.contains_key("c1") && config.config.clusters.contains_key("c3"));
    assert!(!config.config.clusters.contains_key("c2"));
}

fn sotw_response(
    type_url: &str,
    version: &str,
    nonce: &str,
    resources: Vec<Any>,
) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: version.into(),
        type_url: type_url.into(),
        nonce: nonce.into(),
        resources,
        ..Default::default()
    }
}

fn any<M: Message>(type_url: &str, m: &M) -> Any {
    Any {
        type_url: type_url.into(),
        value: m.encode_to_vec(),
    }
}

/// The version and nonce a SotW request says.
fn said(r: &DiscoveryRequest) -> (&str, &str) {
    (r.version_info.as_str(), r.response_nonce.as_str())
}

/// The next request of `type_url` on a SotW stream (requests of other types are skipped).
async fn next_of(s: &mut Streaming<DiscoveryRequest>, type_url: &str) -> DiscoveryRequest {
    loop {
        let r = tokio::time::timeout(Duration::from_secs(5), s.message())
            .await
            .expect("a request in time")
            .unwrap()
            .unwrap();
        if r.type_url == type_url {
            return r;
        }
    }
}

#[tokio::test]
async fn a_state_of_the_world_server_is_spoken_to_in_its_form() {
    use std::sync::atomic::Ordering;
    let (streams_tx, mut streams) = mpsc::channel(4);
    let delta_refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let server = Scripted {
        delta: None,
        sotw: Some(streams_tx),
        refused: delta_refused.clone(),
    };
    let addr = serve(server).await;
    let (store, _metrics) = start_client(addr, Duration::from_secs(30));
    let (mut reqs, reply) = next_stream(&mut streams).await;
    assert_eq!(delta_refused.load(Ordering::SeqCst), 1);

    // Wildcard CDS and LDS: no names, nothing held.
    let cds = next_of(&mut reqs, CDS).await;
    assert!(cds.resource_names.is_empty() && cds.version_info.is_empty());
    assert_eq!(cds.node.unwrap().id, "web-0.shop");
    next_of(&mut reqs, LDS).await;

    let send = |r: DiscoveryResponse| {
        let reply = reply.clone();
        async move { reply.send(Ok(r)).await.unwrap() }
    };
    send(sotw_response(
        CDS,
        "c1",
        "1",
        vec![
            any(CDS, &static_cluster("s1")),
            any(CDS, &eds_cluster("e1")),
        ],
    ))
    .await;
    let ack = next_of(&mut reqs, CDS).await;
    assert_eq!(said(&ack), ("c1", "1"));
    assert!(ack.error_detail.is_none());
    // The EDS cluster's assignment is asked for by name.
    let eds = next_of(&mut reqs, EDS).await;
    assert_eq!(eds.resource_names, ["e1"]);
    send(sotw_response(LDS, "l1", "2", vec![])).await;
    next_of(&mut reqs, LDS).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!store.is_ready(), "ready before the assignment");
    send(sotw_response(
        EDS,
        "e1",
        "3",
        vec![any(EDS, &cla("e1", 8080))],
    ))
    .await;
    let ack = next_of(&mut reqs, EDS).await;
    assert_eq!(said(&ack), ("e1", "3"));
    assert_eq!(
        ack.resource_names,
        ["e1"],
        "an ACK restates the subscription"
    );
    eventually("ready with e1's endpoint", || {
        store.is_ready() && port_of(&store, "e1") == Some(8080)
    })
    .await;

    // A Cluster response is the whole set: the one it leaves out is removed.
    send(sotw_response(
        CDS,
        "c2",
        "4",
        vec![
            any(CDS, &eds_cluster("e1")),
            any(CDS, &static_cluster("s9")),
        ],
    ))
    .await;
    assert_eq!(next_of(&mut reqs, CDS).await.version_info, "c2");
    eventually("s1 removed", || {
        !store.load().config.clusters.contains_key("s1")
    })
    .await;
    assert_eq!(port_of(&store, "e1"), Some(8080), "e1 kept its endpoints");
    let e1 = store.load().config.clusters["e1"].clone();

    // A bad cluster: NACKed with the version still in force; the good ones of the same
    // response apply, the one it leaves out goes (it is the whole set all the same), and the
    // unchanged one is kept as it was.
    let mut bad = static_cluster("bad");
    bad.transport_socket = Some(TransportSocket {
        name: "tls".into(),
        ..Default::default()
    });
    send(sotw_response(
        CDS,
        "c3",
        "5",
        vec![
            any(CDS, &eds_cluster("e1")),
            any(CDS, &bad),
            any(CDS, &static_cluster("s2")),
        ],
    ))
    .await;
    let nack = next_of(&mut reqs, CDS).await;
    assert_eq!(said(&nack), ("c2", "5"));
    let msg = nack.error_detail.expect("NACK").message;
    assert!(msg.contains("bad: transport_socket"), "{msg}");
    eventually("s2 applied", || {
        store.load().config.clusters.contains_key("s2")
    })
    .await;
    let cfg = store.load();
    assert!(!cfg.config.clusters.contains_key("s9") && !cfg.config.clusters.contains_key("bad"));
    assert!(
        Arc::ptr_eq(&cfg.config.clusters["e1"], &e1),
        "e1, sent again unchanged, is the object held"
    );

    // The server goes away: the proxy keeps its config and comes back in the same form, saying
    // the versions it holds (so an unchanged server need send nothing).
    drop(reply);
    drop(reqs);
    let (mut reqs, reply) = next_stream(&mut streams).await;
    assert_eq!(
        delta_refused.load(Ordering::SeqCst),
        1,
        "no second Delta try"
    );
    assert!(
        store.load().config.clusters.contains_key("s2"),
        "config kept"
    );
    assert_eq!(next_of(&mut reqs, CDS).await.version_info, "c2");
    let eds = next_of(&mut reqs, EDS).await;
    assert_eq!(
        (eds.resource_names.as_slice(), eds.version_info.as_str()),
        (&["e1".to_string()][..], "e1")
    );
    // A new assignment for e1 on the new stream applies.
    reply
        .send(Ok(sotw_response(
            EDS,
            "e2",
            "1",
            vec![any(EDS, &cla("e1", 9090))],
        )))
        .await
        .unwrap();
    eventually("e1's new endpoint", || port_of(&store, "e1") == Some(9090)).await;
}

/// A STRICT_DNS cluster of `host`:`port`, IPv4 only, resolved again every 50 ms.
fn dns_cluster(name: &str, host: &str, port: u32) -> Cluster {
    let mut c = cla(name, port);
    if let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) =
        &mut c.endpoints[0].lb_endpoints[0].host_identifier
        && let Some(address::Address::SocketAddress(sa)) =
            ep.address.as_mut().and_then(|a| a.address.as_mut())
    {
        sa.address = host.into();
    }
    #[allow(deprecated)]
    Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::StrictDns as i32,
        )),
        dns_lookup_family: cluster::DnsLookupFamily::V4Only as i32,
        dns_refresh_rate: Some(weft_proto::google::protobuf::Duration {
            seconds: 0,
            nanos: 50_000_000,
        }),
        load_assignment: Some(c),
        ..Default::default()
    }
}

/// A DNS cluster's endpoints are what its names resolve to; a change of its names applies, and a
/// name that never resolves leaves the cluster empty (503) without holding back the rest.
#[tokio::test]
async fn a_dns_cluster_serves_what_its_names_resolve_to() {
    let (store, _reqs, reply) = connected_client().await;
    let send = |r: DeltaDiscoveryResponse| {
        let reply = reply.clone();
        async move { reply.send(Ok(r)).await.unwrap() }
    };
    send(response(
        CDS,
        "n1",
        vec![
            resource("ext", "v1", CDS, &dns_cluster("ext", "localhost", 1111)),
            resource(
                "gone",
                "v1",
                CDS,
                &dns_cluster("gone", "no-such-host.invalid", 1),
            ),
        ],
    ))
    .await;
    send(response(LDS, "n2", vec![])).await;
    eventually("ready with ext resolved", || {
        store.is_ready() && port_of(&store, "ext") == Some(1111)
    })
    .await;
    let addr = store.load().endpoints["ext"].pick().unwrap().addr;
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert!(
        store.load().endpoints["gone"].pick().is_none(),
        "a name that does not resolve: no endpoints"
    );

    // New names: the cluster follows them.
    send(response(
        CDS,
        "n3",
        vec![resource(
            "ext",
            "v2",
            CDS,
            &dns_cluster("ext", "127.0.0.3", 2222),
        )],
    ))
    .await;
    eventually("ext on its new name", || {
        store
            .load()
            .endpoints
            .get("ext")
            .and_then(|s| s.pick())
            .is_some_and(|e| e.addr.to_string() == "127.0.0.3:2222")
    })
    .await;
    assert!(store.load().config.clusters.contains_key("gone"));
}
