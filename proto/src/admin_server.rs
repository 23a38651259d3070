//! The admin HTTP server both binaries run (`weft`'s admin port, `weft-proxy`'s admin and
//! health ports), hardened once for both: HTTP/1.1 only (kubelet, Prometheus and curl speak
//! it); a client that sends no request head within the header timeout, or leaves a keep-alive
//! connection idle that long, is let go; and an accept that fails (the process out of file
//! descriptors) backs off instead of spinning a core, said once per streak of failures.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

/// How long a client may take to send a request head, and may leave a keep-alive connection
/// idle.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The waits after failed accepts: the first short (a transient error), growing to a second
/// while they keep failing (no file descriptor comes free faster than connections close).
fn accept_backoff(failures: u32) -> Duration {
    Duration::from_millis(5 << failures.min(8)).min(Duration::from_secs(1))
}

/// Serves `handle` on `listener` until the task is dropped.
pub async fn serve<F>(listener: TcpListener, handle: F)
where
    F: Fn(&Request<Incoming>) -> Response<Full<Bytes>> + Clone + Send + Sync + 'static,
{
    let local = listener.local_addr().ok();
    let mut failures = 0u32;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                if failures == 0 {
                    tracing::warn!(
                        ?local,
                        "admin accept failed: {e}; backing off until it works"
                    );
                }
                failures = failures.saturating_add(1);
                tokio::time::sleep(accept_backoff(failures)).await;
                continue;
            }
        };
        if failures > 0 {
            tracing::info!(
                ?local,
                "admin accepting again after {failures} failed accepts"
            );
            failures = 0;
        }
        let handle = handle.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let reply = handle(&req);
                async move { Ok::<_, Infallible>(reply) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_accepts_back_off_to_a_second() {
        let waits: Vec<u128> = (1..=10).map(|n| accept_backoff(n).as_millis()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
    }
}
