//! HTTP/1.1 as bytes, read in place: request and response heads (`parse.rs`), chunked coding
//! (`chunked.rs`), the exchange with an HTTP/1.1 upstream that hyper's side uses instead of
//! hyper's client for a bodiless request (`client.rs`), and a response held as a header map
//! written as hyper's server would (`respond.rs`). The fast path (`super::fast`) is built on
//! them.

pub mod chunked;
pub mod client;
pub mod parse;
pub mod respond;
