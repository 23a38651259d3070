//! weft-proxy: the data plane. Config arrives over xDS ([`xds`]), becomes weft's own types
//! ([`config`]) published as one immutable snapshot, and the data path ([`outbound`], [`http`],
//! [`tcp`], [`balance`]) reads that snapshot per connection or request.

pub mod admin;
pub mod balance;
pub mod capture;
pub mod config;
pub mod connections;
pub mod control_plane;
pub mod detect;
pub mod dns;
pub mod drain;
pub mod http;
pub mod identity;
pub mod idle;
pub mod inbound;
pub mod metrics;
pub mod outbound;
pub mod serve;
pub mod store;
pub mod stream;
pub mod tcp;
pub mod upstream;
pub mod xds;
