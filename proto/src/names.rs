//! Resource names shared by the control plane (which makes them) and the proxy (which reads them).
//! Istio's conventions, which users and dashboards already know.

/// The DNS suffix of in-cluster Service names.
pub const CLUSTER_DOMAIN: &str = "svc.cluster.local";

/// `name.namespace.svc.cluster.local`.
pub fn service_fqdn(namespace: &str, name: &str) -> String {
    format!("{name}.{namespace}.{CLUSTER_DOMAIN}")
}

/// Cluster of a Service port: `outbound|<port>||<fqdn>`.
pub fn service_cluster(fqdn: &str, port: u16) -> String {
    format!("outbound|{port}||{fqdn}")
}

/// Listener and route configuration of a Service port: `<fqdn>:<port>`, the name gRPC's proxyless
/// clients ask for when dialing `xds:///<fqdn>:<port>`.
pub fn service_listener(fqdn: &str, port: u16) -> String {
    format!("{fqdn}:{port}")
}

/// The cluster of the Service port a listener named by [`service_listener`] stands for.
pub fn cluster_of_service_listener(listener: &str) -> Option<String> {
    let (fqdn, port) = listener.rsplit_once(':')?;
    Some(service_cluster(fqdn, port.parse().ok()?))
}

/// Cluster of the local app behind the sidecar: `inbound|<port>||`.
pub fn inbound_cluster(port: u16) -> String {
    format!("inbound|{port}||")
}

/// What sniffing reports of a plain HTTP connection (Envoy's `http_inspector`): the control
/// plane matches a detected port's HTTP chain on these, and weft-proxy reads a chain matched on
/// them as the one for connections it detects as HTTP.
pub const SNIFFED_HTTP: [&str; 3] = ["http/1.0", "http/1.1", "h2c"];

/// How long, in milliseconds, a port left to detection waits for a client's first bytes before
/// taking it for opaque TCP (server-first protocols send nothing): weft-proxy's default, and
/// the `listener_filters_timeout` the control plane gives Envoy.
pub const DETECT_TIMEOUT_MS: u64 = 100;

/// The SDS secret name of a workload's own certificate and key, as Istio names it for Envoy:
/// weft-proxy serves it from its in-process identity.
pub const CERTIFICATE_SECRET: &str = "default";

/// The SDS secret name of the mesh's roots.
pub const ROOTS_SECRET: &str = "ROOTCA";

/// The pod label that says a workload runs weft's sidecar and speaks mTLS (the injector sets
/// it; Istio's is `security.istio.io/tlsMode`), with [`TLS_MODE`] as its value.
pub const TLS_MODE_LABEL: &str = "security.weft.io/tlsMode";

/// The value of [`TLS_MODE_LABEL`], and of the `tlsMode` key in an endpoint's
/// `envoy.transport_socket_match` metadata, for a workload that speaks mTLS.
pub const TLS_MODE: &str = "weft";

/// The key of an endpoint's `envoy.transport_socket_match` metadata that its cluster's
/// transport socket matches read.
pub const TLS_MODE_KEY: &str = "tlsMode";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_and_cluster_names_round_trip() {
        let fqdn = service_fqdn("shop", "reviews");
        assert_eq!(fqdn, "reviews.shop.svc.cluster.local");
        let l = service_listener(&fqdn, 9080);
        assert_eq!(
            cluster_of_service_listener(&l).unwrap(),
            service_cluster(&fqdn, 9080)
        );
        assert_eq!(
            service_cluster(&fqdn, 9080),
            "outbound|9080||reviews.shop.svc.cluster.local"
        );
        assert_eq!(cluster_of_service_listener("inbound"), None);
    }
}
