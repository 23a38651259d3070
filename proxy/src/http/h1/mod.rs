//! HTTP/1.1 as bytes, read in place: request and response heads (`parse.rs`), chunked coding
//! (`chunked.rs`), and the exchange with an HTTP/1.1 upstream that hyper's side uses instead of
//! hyper's client for a bodiless request (`client.rs`). The fast path (`super::fast`) is built on
//! the first two.

pub mod chunked;
pub mod client;
pub mod parse;
