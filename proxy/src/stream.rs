//! The connections the data path speaks over, as one trait: plain TCP today, TLS (mTLS between
//! sidecars) next. The fast path, the hand-over to hyper, the connection pipeline and the TCP
//! tunnels are written against it, so a TLS stream takes the same code as a TCP one.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A byte stream to a client or an upstream.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Makes the coming close a reset (RST) rather than a FIN, so a peer reading a body until
    /// close sees it cut, not complete.
    fn reset_on_close(&self);
}

impl Stream for TcpStream {
    fn reset_on_close(&self) {
        let _ = self.set_zero_linger();
    }
}
