//! weft's control plane: registries -> model -> translation -> xDS.
//!
//! Data flows one way: a registry (files or Kubernetes) produces an immutable [`model::Mesh`];
//! [`translate`] turns it, per proxy, into xDS resources; [`xds`] serves them over ADS.

pub mod admin;
pub mod ca;
pub mod crd;
pub mod model;
pub mod registry;
pub mod server;
pub mod tls;
pub mod translate;
pub mod xds;
