//! What `weft` and `weft-proxy` share: wire types and resource names, the `/metrics`
//! exposition, the admin HTTP server and the form of log lines.
//!
//! The xDS v3 messages and the ADS service come from `envoy-types` (generated from Envoy's own
//! protos), so weft speaks exactly the protocol Envoy and gRPC's proxyless clients speak.

pub use envoy_types::pb::envoy as xds;
pub use envoy_types::pb::google;
pub use prost;
pub use prost_types;

pub mod admin_server;
pub mod exposition;
pub mod logs;
pub mod names;
pub mod resource;

pub use resource::ResourceType;

/// weft's own gRPC APIs, generated from `proto/weft/` by `build.rs`.
pub mod weft {
    /// The mesh CA.
    pub mod ca {
        /// Version 1: `CertificateService/Sign`.
        #[allow(missing_docs, clippy::all)]
        pub mod v1 {
            tonic::include_proto!("weft.ca.v1");
        }
    }
}
