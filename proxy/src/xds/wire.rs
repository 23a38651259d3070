//! The two wire forms of ADS: Delta (incremental) and state of the world (SotW).
//!
//! weft's control plane, Istio's and go-control-plane serve both, but some control planes serve
//! only SotW. The client's state machine works on Delta's shapes; a SotW stream's responses are
//! read into them and its requests written from them, so one code path applies config whichever
//! form the control plane speaks.

use std::collections::{BTreeSet, HashMap};

use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use weft_proto::google::protobuf::Any;
use weft_proto::google::rpc::Status as RpcStatus;
use weft_proto::xds::config::core::v3::Node;
use weft_proto::xds::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
    aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
};

use weft_proto::resource::{CDS, LDS};

/// Which form of ADS to speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum XdsProtocol {
    /// Delta, and state of the world from the first time the server answers that it does not
    /// implement Delta (gRPC status UNIMPLEMENTED).
    Auto,
    /// Delta only (`DeltaAggregatedResources`).
    Delta,
    /// State of the world only (`StreamAggregatedResources`).
    Sotw,
}

/// What the client asks of the stream, in either form.
#[derive(Debug)]
pub(super) enum Ask {
    /// The opening request of a wildcard type (CDS, LDS), with the versions held from before.
    Wildcard {
        type_url: &'static str,
        held: HashMap<String, String>,
        /// The SotW version last accepted for the type, empty if none.
        version: String,
    },
    /// A new set of names of an EDS or RDS subscription.
    Subscribe {
        type_url: &'static str,
        wanted: BTreeSet<String>,
        add: Vec<String>,
        remove: Vec<String>,
        /// Versions held of the names wanted, sent on the type's first request of a stream.
        held: HashMap<String, String>,
        /// The SotW version to say is held (empty: send everything asked for).
        version: String,
    },
    /// The answer to a response: an ACK, or a NACK with the errors.
    Ack {
        type_url: String,
        nonce: String,
        /// SotW: the version now applied (on a NACK, the one still in force).
        version: String,
        error: Option<String>,
    },
}

/// One open ADS stream.
pub(super) enum Session {
    Delta {
        tx: mpsc::UnboundedSender<DeltaDiscoveryRequest>,
        rx: tonic::Streaming<DeltaDiscoveryResponse>,
    },
    Sotw {
        tx: mpsc::UnboundedSender<DiscoveryRequest>,
        rx: tonic::Streaming<DiscoveryResponse>,
        /// Per type: the nonce of the last response, and the names subscribed (a SotW request
        /// restates the whole subscription, ACKs included).
        nonces: HashMap<String, String>,
        names: HashMap<String, Vec<String>>,
    },
}

/// A config larger than tonic's 4 MiB default arrives in one message from servers that do not
/// split responses (state-of-the-world servers of a large mesh).
const MAX_MESSAGE_BYTES: usize = 64 << 20;

impl Session {
    /// Opens an ADS stream on `channel`. The `first` requests are queued before the call: a
    /// grpc-go server (go-control-plane) sends its response headers only once it has a request.
    pub(super) async fn open(
        channel: tonic::transport::Channel,
        protocol: XdsProtocol,
        node: &str,
        first: Vec<Ask>,
    ) -> Result<Session, tonic::Status> {
        let mut ads = AggregatedDiscoveryServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        if protocol == XdsProtocol::Sotw {
            let (tx, rx) = mpsc::unbounded_channel();
            let (nonces, mut names) = (HashMap::new(), HashMap::new());
            for ask in first {
                // The receiver is held below: a send cannot fail.
                let _ = tx.send(sotw_request(node, ask, &nonces, &mut names));
            }
            let rx = ads
                .stream_aggregated_resources(UnboundedReceiverStream::new(rx))
                .await?
                .into_inner();
            return Ok(Session::Sotw {
                tx,
                rx,
                nonces,
                names,
            });
        }
        let (tx, rx) = mpsc::unbounded_channel();
        for ask in first {
            let _ = tx.send(delta_request(node, ask));
        }
        let rx = ads
            .delta_aggregated_resources(UnboundedReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(Session::Delta { tx, rx })
    }

    /// Whether the stream is state of the world.
    pub(super) fn is_sotw(&self) -> bool {
        matches!(self, Session::Sotw { .. })
    }

    /// Sends one request.
    pub(super) fn send(&mut self, node: &str, ask: Ask) -> anyhow::Result<()> {
        match self {
            Session::Delta { tx, .. } => tx.send(delta_request(node, ask))?,
            Session::Sotw {
                tx, nonces, names, ..
            } => {
                let req = sotw_request(node, ask, nonces, names);
                tx.send(req)?
            }
        }
        Ok(())
    }

    /// The next response, in Delta's shape. `held` gives the names held of a type: a SotW
    /// Listener or Cluster response is the whole set, so what it leaves out is removed.
    pub(super) async fn next(
        &mut self,
        held: impl Fn(&str) -> Vec<String>,
    ) -> Result<Option<DeltaDiscoveryResponse>, tonic::Status> {
        match self {
            Session::Delta { rx, .. } => rx.message().await,
            Session::Sotw { rx, nonces, .. } => {
                let Some(resp) = rx.message().await? else {
                    return Ok(None);
                };
                nonces.insert(resp.type_url.clone(), resp.nonce.clone());
                let held = held(&resp.type_url);
                Ok(Some(from_sotw(resp, &held)))
            }
        }
    }
}

fn node(id: &str) -> Option<Node> {
    Some(Node {
        id: id.to_string(),
        user_agent_name: "weft-proxy".into(),
        ..Default::default()
    })
}

fn error(message: Option<String>) -> Option<RpcStatus> {
    message.map(|message| RpcStatus {
        code: 3, // INVALID_ARGUMENT, as Envoy sends
        message,
        details: vec![],
    })
}

fn delta_request(id: &str, ask: Ask) -> DeltaDiscoveryRequest {
    let (type_url, req) = match ask {
        Ask::Wildcard { type_url, held, .. } => (
            type_url.to_string(),
            DeltaDiscoveryRequest {
                initial_resource_versions: held,
                ..Default::default()
            },
        ),
        Ask::Subscribe {
            type_url,
            add,
            remove,
            held,
            ..
        } => (
            type_url.to_string(),
            DeltaDiscoveryRequest {
                resource_names_subscribe: add,
                resource_names_unsubscribe: remove,
                initial_resource_versions: held,
                ..Default::default()
            },
        ),
        Ask::Ack {
            type_url,
            nonce,
            error: e,
            ..
        } => (
            type_url,
            DeltaDiscoveryRequest {
                response_nonce: nonce,
                error_detail: error(e),
                ..Default::default()
            },
        ),
    };
    DeltaDiscoveryRequest {
        node: node(id),
        type_url,
        ..req
    }
}

fn sotw_request(
    id: &str,
    ask: Ask,
    nonces: &HashMap<String, String>,
    names: &mut HashMap<String, Vec<String>>,
) -> DiscoveryRequest {
    let (type_url, version, nonce, e) = match ask {
        // An empty list opens a wildcard subscription (the protocol's legacy form, which every
        // server takes).
        Ask::Wildcard {
            type_url, version, ..
        } => (type_url.to_string(), version, String::new(), None),
        Ask::Subscribe {
            type_url,
            wanted,
            version,
            ..
        } => {
            names.insert(type_url.to_string(), wanted.into_iter().collect());
            let nonce = nonces.get(type_url).cloned().unwrap_or_default();
            (type_url.to_string(), version, nonce, None)
        }
        Ask::Ack {
            type_url,
            nonce,
            version,
            error,
        } => (type_url, version, nonce, error),
    };
    DiscoveryRequest {
        node: node(id),
        resource_names: names.get(&type_url).cloned().unwrap_or_default(),
        version_info: version,
        response_nonce: nonce,
        error_detail: error(e),
        type_url,
        ..Default::default()
    }
}

const RESOURCE: &str = "type.googleapis.com/envoy.service.discovery.v3.Resource";

/// The name of a Listener, Cluster, RouteConfiguration or ClusterLoadAssignment: field 1 of
/// each (`name`, or `cluster_name`), read without decoding the rest.
#[derive(Clone, PartialEq, Message)]
struct Named {
    #[prost(string, tag = "1")]
    name: String,
}

/// A SotW response as a Delta one: each resource named from its own message and versioned by
/// its bytes (so the client keeps what did not change), and for Listener and Cluster the held
/// names it leaves out as removed. A resource that cannot be read keeps its place under a
/// made-up name (so the conversion's error names it) and, as its real name is unknown, nothing
/// is removed. A `Resource` wrapper without a body is a TTL heartbeat (go-control-plane's
/// heartbeating cache): the resource is still there, unchanged.
pub(super) fn from_sotw(resp: DiscoveryResponse, held: &[String]) -> DeltaDiscoveryResponse {
    let mut unreadable = false;
    let mut present: BTreeSet<String> = BTreeSet::new();
    let mut resources = Vec::with_capacity(resp.resources.len());
    for (i, any) in resp.resources.into_iter().enumerate() {
        // Some servers wrap each resource in a `Resource` (to give it a TTL).
        let (name, any) = match any.type_url.as_str() {
            RESOURCE => match Resource::decode(&any.value[..]) {
                Ok(r) => match r.resource {
                    None if !r.name.is_empty() => {
                        present.insert(r.name);
                        continue;
                    }
                    inner => {
                        let own = inner.as_ref().and_then(name_of);
                        let name = Some(r.name).filter(|n| !n.is_empty()).or(own);
                        (name.filter(|n| !n.is_empty()), inner)
                    }
                },
                Err(_) => (None, Some(any)),
            },
            _ => (name_of(&any), Some(any)),
        };
        let name = name.unwrap_or_else(|| {
            unreadable = true;
            format!("resources[{i}]")
        });
        present.insert(name.clone());
        let version = any.as_ref().map(|a| digest(&a.value)).unwrap_or_default();
        resources.push(Resource {
            name,
            version,
            resource: any,
            ..Default::default()
        });
    }
    let full_state = resp.type_url == CDS || resp.type_url == LDS;
    // A response of heartbeats only says nothing of the resources it does not name.
    let heartbeats_only = resources.is_empty() && !present.is_empty();
    let removed_resources = match full_state && !unreadable && !heartbeats_only {
        true => held
            .iter()
            .filter(|n| !present.contains(n.as_str()))
            .cloned()
            .collect(),
        false => vec![],
    };
    DeltaDiscoveryResponse {
        system_version_info: resp.version_info,
        type_url: resp.type_url,
        nonce: resp.nonce,
        resources,
        removed_resources,
        ..Default::default()
    }
}

/// The name field of a resource, if its bytes can be read.
fn name_of(any: &Any) -> Option<String> {
    Named::decode(&any.value[..]).ok().map(|n| n.name)
}

/// A version for a resource's bytes.
fn digest(bytes: &[u8]) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    format!("{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_proto::resource::{EDS, RDS};
    use weft_proto::xds::config::cluster::v3::Cluster;
    use weft_proto::xds::config::endpoint::v3::ClusterLoadAssignment;

    fn any<M: Message>(type_url: &str, m: &M) -> Any {
        Any {
            type_url: type_url.into(),
            value: m.encode_to_vec(),
        }
    }

    fn cluster(name: &str) -> Any {
        any(
            CDS,
            &Cluster {
                name: name.into(),
                ..Default::default()
            },
        )
    }

    fn sotw(type_url: &str, resources: Vec<Any>) -> DiscoveryResponse {
        DiscoveryResponse {
            version_info: "7".into(),
            type_url: type_url.into(),
            nonce: "n".into(),
            resources,
            ..Default::default()
        }
    }

    fn names(r: &DeltaDiscoveryResponse) -> Vec<&str> {
        r.resources.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn a_sotw_response_reads_as_a_delta_one() {
        let held = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        // Listener and Cluster responses are the whole set: what they leave out is removed.
        let r = from_sotw(
            sotw(CDS, vec![cluster("a"), cluster("b")]),
            &held(&["a", "c"]),
        );
        assert_eq!(names(&r), ["a", "b"]);
        assert_eq!(r.removed_resources, ["c"]);
        assert_eq!(
            (r.nonce.as_str(), r.system_version_info.as_str()),
            ("n", "7")
        );
        // Each resource is versioned by its bytes: the same resource, the same version.
        let again = from_sotw(sotw(CDS, vec![cluster("b")]), &[]);
        assert_eq!(again.resources[0].version, r.resources[1].version);
        assert_ne!(r.resources[0].version, r.resources[1].version);
        // Assignments and routes come a few at a time: nothing is removed by absence, and an
        // assignment is named by its `cluster_name`.
        let cla = ClusterLoadAssignment {
            cluster_name: "svc".into(),
            ..Default::default()
        };
        let r = from_sotw(sotw(EDS, vec![any(EDS, &cla)]), &held(&["other"]));
        assert_eq!(names(&r), ["svc"]);
        assert!(r.removed_resources.is_empty());
        let r = from_sotw(sotw(RDS, vec![]), &held(&["r"]));
        assert!(r.removed_resources.is_empty());
        // A resource wrapped in `Resource` is unwrapped, under the wrapper's name.
        let wrapped = Resource {
            name: "w".into(),
            resource: Some(cluster("w")),
            ..Default::default()
        };
        let r = from_sotw(sotw(CDS, vec![any(RESOURCE, &wrapped)]), &held(&["a"]));
        assert_eq!(names(&r), ["w"]);
        assert_eq!(r.resources[0].resource.as_ref().unwrap().type_url, CDS);
        assert_eq!(r.removed_resources, ["a"]);
        // A wrapper without a name is named by what it wraps.
        let unnamed = Resource {
            resource: Some(cluster("inner")),
            ..Default::default()
        };
        let r = from_sotw(sotw(CDS, vec![any(RESOURCE, &unnamed)]), &held(&["inner"]));
        assert_eq!(names(&r), ["inner"]);
        assert!(r.removed_resources.is_empty());
        // A TTL heartbeat (a wrapper without a body) keeps its resource as it is; a response of
        // heartbeats only removes nothing.
        let heartbeat = |name: &str| {
            any(
                RESOURCE,
                &Resource {
                    name: name.into(),
                    ..Default::default()
                },
            )
        };
        let r = from_sotw(
            sotw(CDS, vec![cluster("a"), heartbeat("t")]),
            &held(&["a", "t", "c"]),
        );
        assert_eq!(names(&r), ["a"]);
        assert_eq!(r.removed_resources, ["c"]);
        let r = from_sotw(sotw(CDS, vec![heartbeat("t")]), &held(&["a", "t"]));
        assert!(r.resources.is_empty() && r.removed_resources.is_empty());
        // One that cannot be read keeps its place by index, and nothing held is removed.
        let junk = Any {
            type_url: CDS.into(),
            value: vec![0xff, 0xff],
        };
        let r = from_sotw(sotw(CDS, vec![cluster("a"), junk]), &held(&["a", "c"]));
        assert_eq!(names(&r), ["a", "resources[1]"]);
        assert!(r.removed_resources.is_empty());
    }

    #[test]
    fn sotw_requests_restate_the_subscription() {
        let mut nonces = HashMap::new();
        let mut names = HashMap::new();
        let wildcard = sotw_request(
            "n.ns",
            Ask::Wildcard {
                type_url: CDS,
                held: HashMap::new(),
                version: "3".into(),
            },
            &nonces,
            &mut names,
        );
        assert!(wildcard.resource_names.is_empty());
        assert_eq!(wildcard.version_info, "3");
        assert_eq!(wildcard.node.unwrap().id, "n.ns");
        nonces.insert(EDS.to_string(), "5".to_string());
        let sub = sotw_request(
            "n.ns",
            Ask::Subscribe {
                type_url: EDS,
                wanted: ["a".to_string(), "b".to_string()].into(),
                add: vec!["b".into()],
                remove: vec![],
                held: HashMap::new(),
                version: String::new(),
            },
            &nonces,
            &mut names,
        );
        assert_eq!(sub.resource_names, ["a", "b"]);
        assert_eq!(
            sub.response_nonce, "5",
            "the latest nonce, or the server ignores it"
        );
        let nack = sotw_request(
            "n.ns",
            Ask::Ack {
                type_url: EDS.into(),
                nonce: "6".into(),
                version: "1".into(),
                error: Some("bad".into()),
            },
            &nonces,
            &mut names,
        );
        assert_eq!(nack.resource_names, ["a", "b"], "an ACK keeps the names");
        assert_eq!(
            (nack.version_info.as_str(), nack.response_nonce.as_str()),
            ("1", "6")
        );
        assert_eq!(nack.error_detail.unwrap().message, "bad");
    }
}
