//! The proxy's xDS side: a Delta ADS client, and the conversions from xDS protos to config.

mod client;
pub mod convert;

pub use self::client::{Client, INITIAL_FETCH_TIMEOUT, Settings};
