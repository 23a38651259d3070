//! The proxy's xDS side: an ADS client (Delta or state of the world), and the conversions from xDS protos to config.

mod client;
pub mod convert;
mod wire;

pub use self::client::{Client, INITIAL_FETCH_TIMEOUT, Settings};
pub use self::wire::XdsProtocol;
