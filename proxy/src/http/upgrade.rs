//! HTTP/1.1 upgrades (WebSocket): once both sides have switched protocols, the proxy copies
//! bytes between them.

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper::body::Incoming;

use super::Body;

/// Answers `101 Switching Protocols` downstream and, once both sides have switched, copies bytes
/// between them until either closes.
pub(super) fn switch_protocols(
    mut resp: Response<Incoming>,
    downstream: Option<hyper::upgrade::OnUpgrade>,
    guard: crate::balance::InFlight,
    open: crate::drain::Open,
) -> Response<Body> {
    let upstream = hyper::upgrade::on(&mut resp);
    // The tunnel outlives the HTTP connection it came from: a drain waits for it too.
    tokio::spawn(async move {
        let (_guard, _open) = (guard, open);
        let Some(downstream) = downstream else { return };
        match tokio::try_join!(downstream, upstream) {
            Ok((down, up)) => {
                let mut down = hyper_util::rt::TokioIo::new(down);
                let mut up = hyper_util::rt::TokioIo::new(up);
                let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
            }
            Err(e) => tracing::debug!("upgrade failed: {e}"),
        }
    });
    let (parts, _) = resp.into_parts();
    Response::from_parts(parts, Body::Local(Full::new(Bytes::new())))
}
