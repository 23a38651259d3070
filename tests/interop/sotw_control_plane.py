"""A small state-of-the-world-only xDS control plane (no weft code), serving what
go-control-plane's example serves: a listener whose HTTP connection manager takes its routes
over RDS, and an EDS cluster, both from a gRPC `api_config_source` (not `ads`), and the
example's LOGICAL_DNS cluster (`localhost` and the first backend's port), routed under /dns. Delta is not
implemented, so a client must fall back to state of the world.

Usage: sotw_control_plane.py XDS_PORT LISTENER_PORT BACKEND_PORT [BACKEND_PORT ...]

Prints `ready` once serving, then one line per request it receives:
    TYPE version=V nonce=N names=A,B error=MESSAGE     (stale: appended when the nonce is old)
Lines on stdin change the config, each push with a new version:
    backend I   the cluster's endpoint becomes BACKEND_PORT number I (0-based)
    bad         the clusters also hold one with TLS asked for (a client that cannot do TLS
                must refuse it)
    good        that cluster goes again
    more        one more EDS cluster, `extra_cluster` (the first backend), routed under /extra

Requests are answered by version alone: a request is answered when its version is not the
current one, whatever names it asks for (go-control-plane's snapshot cache long did this), and
a request whose nonce is not the latest sent for its type is ignored, as go-control-plane does.
"""
import queue
import sys
import threading
from concurrent import futures

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2, grpc_service_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2, duration_pb2

LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
SHORT = {LDS: "Listener", CDS: "Cluster", RDS: "RouteConfiguration", EDS: "ClusterLoadAssignment"}
CLUSTER = "example_proxy_cluster"
ROUTE = "local_route"


def pack(message):
    a = any_pb2.Any()
    a.Pack(message)
    return a


def config_source():
    # go-control-plane's makeConfigSource: a gRPC API source naming the xDS cluster.
    return config_source_pb2.ConfigSource(
        resource_api_version=config_source_pb2.V3,
        api_config_source=config_source_pb2.ApiConfigSource(
            transport_api_version=config_source_pb2.V3,
            api_type=config_source_pb2.ApiConfigSource.GRPC,
            set_node_on_first_message_only=True,
            grpc_services=[
                grpc_service_pb2.GrpcService(
                    envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name="xds_cluster")
                )
            ],
        ),
    )


def eds_cluster(name, **fields):
    # An EDS cluster whose assignment comes from the same gRPC config source.
    return cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=config_source()),
        **fields,
    )


def socket_address(port):
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(
            protocol=address_pb2.SocketAddress.TCP, address="127.0.0.1", port_value=port
        )
    )


class Mesh:
    """The config, and every open stream's queue to tell of a change."""

    def __init__(self, listener_port, backends):
        self.lock = threading.Lock()
        self.listener_port = listener_port
        self.backends = backends
        self.backend = 0
        self.bad = False
        self.more = False
        self.version = 1
        self.streams = []

    def resources(self, type_url):
        with self.lock:
            if type_url == LDS:
                hcm = hcm_pb2.HttpConnectionManager(
                    codec_type=hcm_pb2.HttpConnectionManager.AUTO,
                    stat_prefix="http",
                    rds=hcm_pb2.Rds(config_source=config_source(), route_config_name=ROUTE),
                    http_filters=[
                        hcm_pb2.HttpFilter(name="http-router", typed_config=pack(router_pb2.Router()))
                    ],
                )
                listener = listener_pb2.Listener(
                    name="listener_0",
                    address=socket_address(self.listener_port),
                    filter_chains=[
                        listener_components_pb2.FilterChain(
                            filters=[
                                listener_components_pb2.Filter(
                                    name="envoy.filters.network.http_connection_manager",
                                    typed_config=pack(hcm),
                                )
                            ]
                        )
                    ],
                )
                return {"listener_0": listener}
            if type_url == CDS:
                clusters = {
                    CLUSTER: eds_cluster(
                        CLUSTER,
                        connect_timeout=duration_pb2.Duration(seconds=5),
                        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
                        dns_lookup_family=cluster_pb2.Cluster.V4_ONLY,
                    )
                }
                clusters["dns_cluster"] = cluster_pb2.Cluster(
                    name="dns_cluster",
                    connect_timeout=duration_pb2.Duration(seconds=5),
                    type=cluster_pb2.Cluster.LOGICAL_DNS,
                    lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
                    dns_lookup_family=cluster_pb2.Cluster.V4_ONLY,
                    load_assignment=endpoint_pb2.ClusterLoadAssignment(
                        cluster_name="dns_cluster",
                        endpoints=[
                            endpoint_components_pb2.LocalityLbEndpoints(
                                lb_endpoints=[
                                    endpoint_components_pb2.LbEndpoint(
                                        endpoint=endpoint_components_pb2.Endpoint(
                                            address=address_pb2.Address(
                                                socket_address=address_pb2.SocketAddress(
                                                    protocol=address_pb2.SocketAddress.TCP,
                                                    address="localhost",
                                                    port_value=self.backends[0],
                                                )
                                            )
                                        )
                                    )
                                ]
                            )
                        ],
                    ),
                )
                if self.more:
                    clusters["extra_cluster"] = eds_cluster("extra_cluster")
                if self.bad:
                    clusters["tls_cluster"] = eds_cluster(
                        "tls_cluster",
                        transport_socket=base_pb2.TransportSocket(name="envoy.transport_sockets.tls"),
                    )
                return clusters
            if type_url == RDS:
                route = route_pb2.RouteConfiguration(
                    name=ROUTE,
                    virtual_hosts=[
                        route_components_pb2.VirtualHost(
                            name="local_service",
                            domains=["*"],
                            routes=[
                                route_components_pb2.Route(
                                    match=route_components_pb2.RouteMatch(prefix="/dns"),
                                    route=route_components_pb2.RouteAction(cluster="dns_cluster"),
                                ),
                                route_components_pb2.Route(
                                    match=route_components_pb2.RouteMatch(prefix="/extra"),
                                    route=route_components_pb2.RouteAction(cluster="extra_cluster"),
                                ),
                                route_components_pb2.Route(
                                    match=route_components_pb2.RouteMatch(prefix="/"),
                                    route=route_components_pb2.RouteAction(cluster=CLUSTER),
                                )
                            ],
                        )
                    ],
                )
                return {ROUTE: route}
            if type_url == EDS:
                return {
                    CLUSTER: self.assignment(CLUSTER, self.backends[self.backend]),
                    "extra_cluster": self.assignment("extra_cluster", self.backends[0]),
                }
            return {}

    @staticmethod
    def assignment(name, port):
        endpoint = endpoint_components_pb2.LbEndpoint(
            endpoint=endpoint_components_pb2.Endpoint(address=socket_address(port))
        )
        return endpoint_pb2.ClusterLoadAssignment(
            cluster_name=name,
            endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[endpoint])],
        )

    def change(self, line):
        words = line.split()
        with self.lock:
            if words[:1] == ["backend"]:
                self.backend = int(words[1])
            elif words == ["bad"]:
                self.bad = True
            elif words == ["good"]:
                self.bad = False
            elif words == ["more"]:
                self.more = True
            else:
                return
            self.version += 1
            streams = list(self.streams)
        for q in streams:
            q.put(None)


class Ads(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """State of the world only: DeltaAggregatedResources is left UNIMPLEMENTED."""

    def __init__(self, mesh):
        self.mesh = mesh

    def StreamAggregatedResources(self, requests, context):
        events = queue.Queue()
        with self.mesh.lock:
            self.mesh.streams.append(events)

        def read():
            try:
                for r in requests:
                    events.put(r)
            except grpc.RpcError:
                pass
            events.put(StopIteration)

        threading.Thread(target=read, daemon=True).start()
        subs = {}  # type -> names asked for ([] is the wildcard)
        sent = {}  # type -> version sent
        nonces = {}  # type -> last nonce sent
        counter = 0
        try:
            while True:
                event = events.get()
                if event is StopIteration:
                    return
                pending = []
                if event is None:
                    # Clusters first and their assignments right after, as go-control-plane
                    # orders an ADS push: a client that asks for a new cluster's endpoints on
                    # reading the clusters does so with the nonce of the push before.
                    pending = [t for t in (CDS, EDS, LDS, RDS) if t in subs]
                else:
                    r = event
                    # As go-control-plane: once a type has been answered, a request counts only
                    # with the latest nonce of that type (an empty one is stale too).
                    last = nonces.get(r.type_url)
                    stale = last is not None and r.response_nonce != last
                    error = r.error_detail.message if r.HasField("error_detail") else ""
                    print(
                        f"{SHORT.get(r.type_url, r.type_url)} version={r.version_info} "
                        f"nonce={r.response_nonce} names={','.join(r.resource_names)} "
                        f"error={error}" + (" stale" if stale else ""),
                        flush=True,
                    )
                    if stale:
                        continue
                    subs[r.type_url] = list(r.resource_names)
                    # Answered by version alone, as go-control-plane's snapshot cache long was: a
                    # request that does not hold the current version gets it; a NACK does not.
                    if not error and r.version_info != str(self.mesh.version):
                        pending = [r.type_url]
                for type_url in pending:
                    version = str(self.mesh.version)
                    if sent.get(type_url) == version and event is None:
                        continue
                    resources = self.mesh.resources(type_url)
                    names = subs[type_url]
                    if names and type_url in (RDS, EDS):
                        resources = {n: resources[n] for n in names if n in resources}
                    counter += 1
                    nonce = str(counter)
                    nonces[type_url] = nonce
                    sent[type_url] = version
                    yield discovery_pb2.DiscoveryResponse(
                        version_info=version,
                        type_url=type_url,
                        nonce=nonce,
                        resources=[pack(m) for m in resources.values()],
                    )
        finally:
            with self.mesh.lock:
                self.mesh.streams.remove(events)


def main():
    xds_port, listener_port = int(sys.argv[1]), int(sys.argv[2])
    backends = [int(p) for p in sys.argv[3:]]
    mesh = Mesh(listener_port, backends)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(Ads(mesh), server)
    server.add_insecure_port(f"127.0.0.1:{xds_port}")
    server.start()
    print("ready", flush=True)
    for line in sys.stdin:
        mesh.change(line)
    server.stop(0)


if __name__ == "__main__":
    main()
