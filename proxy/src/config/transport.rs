//! How connections are secured, as the control plane asked in xDS: per cluster, which of its
//! endpoints are dialed with mTLS and which SPIFFE IDs they may present; per inbound port,
//! whether mTLS is refused, offered beside plaintext, or required.

use std::sync::Arc;

use serde::Serialize;

use super::EndpointConfig;

/// How a connection to an endpoint is made.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Security {
    /// Plain TCP.
    #[default]
    Plaintext,
    /// mTLS with the workload's certificate; the peer must present one of `peer_ids` (any of
    /// the mesh's when empty).
    Mtls {
        /// The SPIFFE IDs the peer may have.
        peer_ids: Arc<[String]>,
    },
}

/// One of a cluster's `transport_socket_matches`: endpoints whose `envoy.transport_socket_match`
/// metadata holds every one of `criteria` are connected to as `security` says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TransportMatch {
    /// Its name (Istio's `tlsMode-istio`, weft's `tlsMode-weft`).
    pub name: String,
    /// Key-value pairs the endpoint's metadata must hold; none: every endpoint.
    pub criteria: Vec<(String, String)>,
    /// How to connect.
    pub security: Security,
}

/// A cluster's transport: its matches in order, then its own `transport_socket`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Transport {
    /// Per endpoint, the first match whose criteria it meets decides.
    pub matches: Vec<TransportMatch>,
    /// For endpoints no match takes.
    pub default: Security,
}

impl Transport {
    /// How to connect to `ep`: as the first match its metadata meets says, with the peer IDs
    /// narrowed to the endpoint's own identity when the control plane named one (so an address
    /// that now belongs to another workload cannot answer for this one).
    pub fn security_of(&self, ep: &EndpointConfig) -> Security {
        let meets = |m: &&TransportMatch| {
            m.criteria
                .iter()
                .all(|(k, v)| ep.transport_match.iter().any(|(ek, ev)| ek == k && ev == v))
        };
        let security = self
            .matches
            .iter()
            .find(meets)
            .map_or(&self.default, |m| &m.security);
        match (security, &ep.identity) {
            (Security::Mtls { .. }, Some(id)) => Security::Mtls {
                peer_ids: Arc::from(vec![id.clone()]),
            },
            (s, _) => s.clone(),
        }
    }
}

/// What an inbound port accepts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InboundTls {
    /// Plaintext only (a TLS ClientHello is opaque bytes for the app).
    #[default]
    Off,
    /// mTLS or plaintext, told apart by the first bytes (the mesh's default: adoption is
    /// gradual).
    Permissive,
    /// mTLS only: a plaintext connection is refused.
    Strict,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(identity: Option<&str>, md: &[(&str, &str)]) -> EndpointConfig {
        EndpointConfig {
            addr: "10.0.0.1:80".parse().unwrap(),
            weight: 1,
            identity: identity.map(str::to_owned),
            workload: None,
            priority: 0,
            healthy: true,
            transport_match: md
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn an_endpoint_gets_the_first_match_its_metadata_meets_and_its_own_identity() {
        let any = || Security::Mtls {
            peer_ids: Arc::from(vec!["spiffe://td/ns/a/sa/x".to_string()]),
        };
        let t = Transport {
            matches: vec![
                TransportMatch {
                    name: "tlsMode-weft".into(),
                    criteria: vec![("tlsMode".into(), "weft".into())],
                    security: any(),
                },
                TransportMatch {
                    name: "tlsMode-disabled".into(),
                    criteria: vec![],
                    security: Security::Plaintext,
                },
            ],
            default: Security::Plaintext,
        };
        let only = |id: &str| Security::Mtls {
            peer_ids: Arc::from(vec![id.to_string()]),
        };
        let cases = [
            (ep(None, &[("tlsMode", "weft")]), any()),
            (
                ep(Some("spiffe://td/ns/a/sa/y"), &[("tlsMode", "weft")]),
                only("spiffe://td/ns/a/sa/y"),
            ),
            (ep(Some("spiffe://td/ns/a/sa/y"), &[]), Security::Plaintext),
            (ep(None, &[("tlsMode", "disabled")]), Security::Plaintext),
        ];
        for (e, want) in cases {
            assert_eq!(t.security_of(&e), want, "{e:?}");
        }
        let all_mtls = Transport {
            matches: vec![],
            default: any(),
        };
        assert_eq!(all_mtls.security_of(&ep(None, &[])), any());
    }
}
