//! The connections the data path speaks over, as one trait: plain TCP today, TLS (mTLS between
//! sidecars) next. The fast path, the hand-over to hyper, the connection pipeline and the TCP
//! tunnels are written against it, so a TLS stream takes the same code as a TCP one.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
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

/// A TLS stream that never leaves written bytes sitting in its session: each write is followed
/// by a flush attempt, and each read first pushes out what an earlier write left, so code that
/// writes a request and then waits for the answer (the fast path, the tunnels) works over TLS as
/// over TCP, where a write is on the wire when it returns.
#[derive(Debug)]
pub struct Flushing<T> {
    inner: T,
}

impl<T> Flushing<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> Self {
        Self { inner }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Flushing<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let inner = &mut self.get_mut().inner;
        // Pending or failed, the flush is the write side's news; the read goes on.
        let _ = Pin::new(&mut *inner).poll_flush(cx);
        Pin::new(inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Flushing<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let inner = &mut self.get_mut().inner;
        let written = Pin::new(&mut *inner).poll_write(cx, buf);
        flushed(inner, cx, written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let inner = &mut self.get_mut().inner;
        let written = Pin::new(&mut *inner).poll_write_vectored(cx, bufs);
        flushed(inner, cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A write's result, once what it left in the session has been pushed toward the socket (a
/// pending or failed flush is the next write's news).
fn flushed<T: AsyncWrite + Unpin>(
    inner: &mut T,
    cx: &mut Context<'_>,
    written: Poll<io::Result<usize>>,
) -> Poll<io::Result<usize>> {
    if matches!(written, Poll::Ready(Ok(_))) {
        let _ = Pin::new(inner).poll_flush(cx);
    }
    written
}

/// Boxed: the session is over a kilobyte, and a connection's task would otherwise hold it more
/// than once (each async function it passes through keeps its own slot for it).
impl<S: Stream> Stream for Flushing<Box<tokio_rustls::server::TlsStream<S>>> {
    fn reset_on_close(&self) {
        self.inner.get_ref().0.reset_on_close();
    }
}

/// Writes `head` and then `body`: in one write (one `writev`, one TLS record) where the stream
/// takes both at once, without first copying the body behind the head.
pub async fn write_both<S: AsyncWrite + Unpin>(
    s: &mut S,
    mut head: &[u8],
    mut body: &[u8],
) -> io::Result<()> {
    while !head.is_empty() {
        let both = [io::IoSlice::new(head), io::IoSlice::new(body)];
        let n = s.write_vectored(&both).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let from_head = n.min(head.len());
        head = &head[from_head..];
        body = &body[n - from_head..];
    }
    s.write_all(body).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn head_and_body_arrive_whole_through_a_stream_that_takes_three_bytes_at_a_time() {
        let (mut w, mut r) = tokio::io::duplex(3);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            r.read_to_end(&mut got).await.unwrap();
            got
        });
        write_both(&mut w, b"HTTP/1.1 200 OK\r\n\r\n", b"hello, world")
            .await
            .unwrap();
        write_both(&mut w, b"", b"!").await.unwrap();
        drop(w);
        assert_eq!(
            reader.await.unwrap(),
            b"HTTP/1.1 200 OK\r\n\r\nhello, world!"
        );
    }
}
