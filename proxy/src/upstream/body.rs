//! The bodies sent upstream: the client's, passed through (or teed to mirrors as it passes), a
//! mirror's copy of it, or none. One enum rather than a boxed trait object, so a request costs
//! no allocation for its body.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::mpsc;

/// What polling a request body gives.
type Polled = Poll<Option<Result<Frame<Bytes>, BodyError>>>;

/// Frames queued per copy before a slow mirror is given up on.
const QUEUE: usize = 16;

/// A body whose frames failed to arrive: the client's or a copy's.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// Marks a body of unknown length (chunked, or HTTP/2 frames) for chunked coding on an
/// HTTP/1.1 hop, whatever the method: hyper's client would send a GET's as no body at all.
pub fn chunk_if_unsized<B: Body>(headers: &mut http::HeaderMap, body: &B) {
    if !body.is_end_stream()
        && body.size_hint().exact().is_none()
        && !headers.contains_key(http::header::CONTENT_LENGTH)
    {
        headers.insert(
            http::header::TRANSFER_ENCODING,
            http::HeaderValue::from_static("chunked"),
        );
    }
}

/// A request body sent upstream: the client's, the client's while it is copied, or a copy.
pub enum RequestBody {
    /// The client's body, passed through.
    Client(Incoming),
    /// The client's body, copied to mirrors as it passes.
    Teed(Tee),
    /// A mirror's copy.
    Copy(CopyBody),
    /// None: a bodiless request sent again.
    Empty,
}

/// The client's request body failed (bad chunk framing, a reset): what a send that fails with
/// it as its cause is blamed on.
#[derive(Debug, thiserror::Error)]
#[error("client body: {0}")]
pub struct ClientBodyError(hyper::Error);

impl ClientBodyError {
    /// Whether `e` (an upstream send's error) was caused by the client's body.
    pub fn caused(e: &hyper::Error) -> bool {
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            if s.is::<Self>() {
                return true;
            }
            source = s.source();
        }
        false
    }
}

impl From<Incoming> for RequestBody {
    fn from(b: Incoming) -> Self {
        Self::Client(b)
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        match self.get_mut() {
            Self::Client(b) => Pin::new(b)
                .poll_frame(cx)
                .map_err(|e| -> BodyError { Box::new(ClientBodyError(e)) }),
            Self::Teed(t) => Pin::new(t).poll_frame(cx),
            Self::Copy(c) => Pin::new(c).poll_frame(cx),
            Self::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Client(b) => b.is_end_stream(),
            Self::Teed(t) => t.inner.is_end_stream(),
            Self::Copy(c) => c.rx.is_none(),
            Self::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Client(b) => b.size_hint(),
            Self::Teed(t) => t.inner.size_hint(),
            Self::Copy(c) => c.size,
            Self::Empty => SizeHint::with_exact(0),
        }
    }
}

/// One copy's end of the queue, and whether its sender gave up on it.
struct Outlet {
    tx: mpsc::Sender<Frame<Bytes>>,
    dropped: Arc<AtomicBool>,
}

/// The client's body, with every frame also sent to each mirror's copy.
pub struct Tee {
    inner: Incoming,
    outlets: Vec<Outlet>,
}

fn copy_frame(f: &Frame<Bytes>) -> Option<Frame<Bytes>> {
    if let Some(d) = f.data_ref() {
        return Some(Frame::data(d.clone()));
    }
    f.trailers_ref().map(|t| Frame::trailers(t.clone()))
}

impl Tee {
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if frame.is_data() || frame.is_trailers() {
                    self.outlets.retain(|o| {
                        let sent = copy_frame(frame).is_some_and(|c| o.tx.try_send(c).is_ok());
                        if !sent {
                            o.dropped.store(true, Ordering::Relaxed);
                        }
                        sent
                    });
                }
            }
            // The client's body broke off: so do the copies.
            Poll::Ready(Some(Err(_))) => {
                for o in self.outlets.drain(..) {
                    o.dropped.store(true, Ordering::Relaxed);
                }
            }
            // The end: dropping the senders ends the copies whole.
            Poll::Ready(None) => self.outlets.clear(),
            Poll::Pending => {}
        }
        polled.map(|f| f.map(|r| r.map_err(Into::into)))
    }
}

/// A mirror's copy of a body: what the [`Tee`] hands over, ending in an error if it gave up.
pub struct CopyBody {
    rx: Option<mpsc::Receiver<Frame<Bytes>>>,
    dropped: Arc<AtomicBool>,
    size: SizeHint,
}

impl CopyBody {
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        let Some(rx) = self.rx.as_mut() else {
            return Poll::Ready(None);
        };
        match rx.poll_recv(cx) {
            Poll::Ready(Some(f)) => Poll::Ready(Some(Ok(f))),
            Poll::Ready(None) => {
                self.rx = None;
                if self.dropped.load(Ordering::Relaxed) {
                    Poll::Ready(Some(Err("mirror fell behind: copy abandoned".into())))
                } else {
                    Poll::Ready(None)
                }
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Splits the client's `body` into what goes upstream and `copies` copies of it, one a mirror:
/// each frame the upstream's body yields is queued to every copy (a copy that falls
/// [`QUEUE`] frames behind is given up, and ends in an error rather than cut short; the
/// client's request never waits for it).
pub fn tee(body: Incoming, copies: usize) -> (RequestBody, Vec<RequestBody>) {
    if body.is_end_stream() {
        let none = || {
            RequestBody::Copy(CopyBody {
                rx: None,
                dropped: Arc::default(),
                size: SizeHint::with_exact(0),
            })
        };
        return (
            RequestBody::Client(body),
            (0..copies).map(|_| none()).collect(),
        );
    }
    let mut outlets = Vec::with_capacity(copies);
    let mut out = Vec::with_capacity(copies);
    for _ in 0..copies {
        let (tx, rx) = mpsc::channel(QUEUE);
        let dropped = Arc::new(AtomicBool::new(false));
        outlets.push(Outlet {
            tx,
            dropped: dropped.clone(),
        });
        out.push(RequestBody::Copy(CopyBody {
            rx: Some(rx),
            dropped,
            size: body.size_hint(),
        }));
    }
    let teed = match outlets.is_empty() {
        true => RequestBody::Client(body),
        false => RequestBody::Teed(Tee {
            inner: body,
            outlets,
        }),
    };
    (teed, out)
}
