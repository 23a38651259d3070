//! The connection pipeline every listener hands its connections to (the capture listeners,
//! outbound and inbound, and the explicit ones): decide what the connection is (a declared
//! protocol, or detection of its first bytes), then serve it as HTTP/1 (the fast path, handing
//! over to hyper when a request needs it), HTTP/2 or opaque TCP. mTLS will be one more step
//! here, between accepting and detecting.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::config::authz::Peer;
use crate::config::{Authz, Handler, InboundTls, Protocol, Sniffing};
use crate::detect::{Detected, detect};
use crate::http::fast::{self, Prefixed, Served};
use crate::http::{Proxy, RouteSource, Routes};
use crate::store::Store;
use crate::stream::Stream;

/// HTTP/2 streams a client may open at once on one connection (Envoy's default, 2^31 - 1).
const MAX_CONCURRENT_STREAMS: u32 = (1 << 31) - 1;

/// How a connection is served. A declared protocol is taken at its word; an undeclared one is
/// sniffed (waiting for the client's first bytes as `sniffing` says, so server-first protocols
/// work), and what is not HTTP goes to `fallback` (the listener's chain for it, else opaque TCP
/// to the port's cluster). `None`: nothing can serve it, or the listener closes connections
/// that decide nothing in time; close it.
pub async fn choose(
    stream: &TcpStream,
    protocol: Protocol,
    handler: Handler,
    fallback: Option<Handler>,
    sniffing: Sniffing,
) -> Option<(Handler, Option<Detected>)> {
    match (protocol, &handler) {
        (_, Handler::Tcp { .. }) | (Protocol::Http | Protocol::Http2 | Protocol::Grpc, _) => {
            Some((handler, None))
        }
        (Protocol::Tcp, _) => Some((fallback?, None)),
        // HTTP with nothing to fall back to (another control plane's lone HTTP connection
        // manager, no sniffing chains) is HTTP whatever comes, as in Envoy: bytes that are not
        // HTTP get a 400 from the HTTP server, not a silent close after a detection wait.
        (Protocol::Detect, _) if fallback.is_none() => Some((handler, None)),
        (Protocol::Detect, _) => match detect(stream, sniffing.timeout).await {
            d @ (Detected::Http1 | Detected::Http2) => Some((handler, Some(d))),
            Detected::TimedOut if sniffing.close_on_timeout => {
                tracing::debug!(
                    "nothing decisive within the listener's detection timeout: closing"
                );
                None
            }
            Detected::Tls | Detected::Opaque | Detected::TimedOut => Some((fallback?, None)),
        },
    }
}

/// What a listener learned of a connection before handing it to [`serve_connection`]; where
/// the peer's identity will go once connections between sidecars are mTLS.
#[derive(Debug, Default)]
pub struct Accepted {
    /// What protocol detection saw, if it ran; an HTTP connection is otherwise sniffed in
    /// [`serve_http`], so HTTP/1 and HTTP/2 each get their own server rather than one that
    /// re-checks the version on every read.
    pub detected: Option<Detected>,
    /// The endpoint the connection must go to, with the cluster it belongs to, rather than one
    /// the balancer picks (a headless Service's pod, an inbound connection's pod address).
    pub pinned: Option<(SocketAddr, String)>,
    /// Who the client is, on the inbound side: what its connection and requests are
    /// authorized as.
    pub peer: Option<Peer>,
}

/// Serves one accepted connection with `handler`.
pub async fn serve_connection(
    store: Arc<Store>,
    proxy: Proxy,
    handler: Handler,
    stream: TcpStream,
    Accepted {
        detected,
        pinned,
        peer,
    }: Accepted,
) {
    let _ = stream.set_nodelay(true);
    match http_source(handler, pinned, peer.clone()) {
        Ok(source) => serve_http(proxy, source, stream, detected).await,
        // Boxed, so an HTTP connection's task does not hold a tunnel's state.
        Err(plan) => Box::pin(forward_tcp(&store, &proxy, plan, peer.as_ref(), stream)).await,
    }
}

/// Where a TCP handler sends a connection, and who may open one.
struct TcpPlan {
    clusters: Vec<crate::config::WeightedCluster>,
    idle_timeout: Option<std::time::Duration>,
    pinned: Option<(SocketAddr, String)>,
    authz: Authz,
}

/// Where an HTTP handler's requests are routed from (and, inbound, who sends them, for
/// authorizing each against the live policy); a TCP handler's plan otherwise.
fn http_source(
    handler: Handler,
    pinned: Option<(SocketAddr, String)>,
    peer: Option<Peer>,
) -> Result<RouteSource, TcpPlan> {
    match handler {
        Handler::Tcp {
            clusters,
            idle_timeout,
            authz,
        } => Err(TcpPlan {
            clusters,
            idle_timeout,
            pinned,
            authz,
        }),
        Handler::Http {
            route_config,
            normalize_path,
            ..
        } => Ok(RouteSource {
            routes: Routes::Named(route_config),
            pinned,
            normalize_path,
            peer,
        }),
        Handler::HttpInline {
            table,
            normalize_path,
            ..
        } => Ok(RouteSource {
            routes: Routes::Inline(table),
            pinned,
            normalize_path,
            peer,
        }),
    }
}

/// Carries a connection as opaque TCP to one of the plan's clusters (by weight), once its
/// RBAC filters let `peer` (an inbound client) in; a refused connection is closed.
async fn forward_tcp<S: Stream>(
    store: &Arc<Store>,
    proxy: &Proxy,
    TcpPlan {
        clusters,
        idle_timeout,
        pinned,
        authz,
    }: TcpPlan,
    peer: Option<&Peer>,
    stream: S,
) {
    if let Some(peer) = peer
        && !authz.is_empty()
    {
        let verdict = authz.check_connection(peer);
        proxy.metrics().authorized(false, verdict.is_ok());
        if let Err(denied) = verdict {
            tracing::info!(
                peer_id = peer.principal.as_deref().unwrap_or("none"),
                policy = denied.policy.unwrap_or("none"),
                "connection denied by authorization policy: closed"
            );
            return;
        }
    }
    let refused = &proxy.metrics().unrouted().tcp;
    let Some(cluster) = crate::config::pick_weighted(&clusters) else {
        tracing::info!(flags = "NC", "every cluster has weight 0: closing");
        crate::tcp::refuse(stream, refused);
        return;
    };
    let cluster = cluster.name.as_str();
    // Pinned to the pod it was addressed to only when it stays on the listener's own
    // cluster: a split's other clusters balance over their own endpoints.
    let pinned = pinned
        .filter(|(_, own)| own == cluster)
        .map(|(addr, _)| addr);
    let route = crate::tcp::Route {
        cluster,
        pinned,
        original: peer.map(|p| p.destination),
        idle_timeout,
    };
    let forward = crate::tcp::forward(store, &proxy.dialer, route, stream, refused);
    // An inbound connection lasts only as long as the policy lets it (as Linkerd's do; Envoy
    // judges a connection once): both sockets close when a change refuses it.
    let ended = match peer {
        None => forward.await,
        Some(peer) => tokio::select! {
            ended = forward => ended,
            policy = revoked(store, peer) => {
                proxy.metrics().authorized(false, false);
                tracing::info!(
                    peer_id = peer.principal.as_deref().unwrap_or("none"),
                    policy = policy.as_deref().unwrap_or("none"),
                    "open connection denied by a changed authorization policy: closed"
                );
                return;
            }
        },
    };
    if let Err(e) = ended {
        tracing::debug!(cluster, "tcp forward ended: {e}");
    }
}

/// Resolves, with the refusing policy's name, once the live config's chain for `peer`'s port
/// refuses its connection; pending as long as it does not.
async fn revoked(store: &Store, peer: &Peer) -> Option<String> {
    let mut changes = store.subscribe();
    loop {
        if changes.changed().await.is_err() {
            return std::future::pending().await;
        }
        let snap = store.load();
        let Some(authz) = snap.config.inbound_authz(peer.destination.port()) else {
            continue;
        };
        if let Err(denied) = authz.check_connection(peer) {
            return denied.policy.map(str::to_owned);
        }
    }
}

/// What an inbound port serves: its chain, and whether it offers or requires mTLS.
#[derive(Debug)]
pub struct InboundPort {
    /// Declared protocol.
    pub protocol: Protocol,
    /// What serves HTTP (or everything, for a TCP chain).
    pub handler: Handler,
    /// What serves the rest.
    pub fallback: Handler,
    /// How detection waits.
    pub sniffing: Sniffing,
    /// mTLS refused, offered or required.
    pub tls: InboundTls,
}

/// Serves a connection to an inbound port. One that opens with a TLS ClientHello on a port that
/// offers mTLS is decrypted with the workload's certificate (the client must present one from
/// the mesh), its peer's SPIFFE ID noted on its span and in `/debug/connections`, and what is inside served
/// as the port's chain serves plaintext; a plaintext one is served as is, unless the port is
/// STRICT, which closes it.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice"
)]
pub fn serve_inbound(
    store: Arc<Store>,
    proxy: Proxy,
    stream: TcpStream,
    port: InboundPort,
    pinned: Option<(SocketAddr, String)>,
    mut peer: Peer,
    note: crate::connections::Note,
) -> impl Future<Output = ()> {
    // Not an `async fn`, for the reason `serve_http_on` gives.
    async move {
        // The steps before serving (detection, a handshake, the sniff inside it) are boxed: a
        // connection's task holds the state it serves with, not theirs too (an idle connection's
        // memory is mostly this state).
        let tls_first = match port.tls {
            InboundTls::Off => false,
            InboundTls::Permissive | InboundTls::Strict => {
                Box::pin(detect(&stream, port.sniffing.timeout)).await == Detected::Tls
            }
        };
        if !tls_first {
            let Some((handler, detected)) =
                Box::pin(plaintext_handler(&proxy, &stream, port)).await
            else {
                return;
            };
            // As `serve_connection` serves it, but one call less deep: each level of async calls
            // keeps its own copy of what it was given in the task.
            let _ = stream.set_nodelay(true);
            return match http_source(handler, pinned, Some(peer.clone())) {
                Ok(source) => serve_http(proxy, source, stream, detected).await,
                Err(plan) => Box::pin(forward_tcp(&store, &proxy, plan, Some(&peer), stream)).await,
            };
        }
        let accepted = Box::pin(accept_mtls(&proxy, stream, port, &mut peer, &note)).await;
        let Some((stream, handler, detected)) = accepted else {
            return;
        };
        match http_source(handler, pinned, Some(peer.clone())) {
            Ok(source) => {
                let http2 = detected == Some(Detected::Http2);
                serve_http_on(proxy, source, stream, http2).await;
            }
            Err(plan) => Box::pin(forward_tcp(&store, &proxy, plan, Some(&peer), stream)).await,
        }
    }
}

/// The handler for a connection that did not open with a ClientHello, as the port's chain
/// detects it; none (closed) if the port is STRICT.
async fn plaintext_handler(
    proxy: &Proxy,
    stream: &TcpStream,
    port: InboundPort,
) -> Option<(Handler, Option<Detected>)> {
    match port.tls {
        InboundTls::Off => {}
        InboundTls::Strict => {
            proxy.metrics().inbound_connection(false, false);
            tracing::info!("plaintext to a STRICT mTLS port: closed");
            return None;
        }
        InboundTls::Permissive => proxy.metrics().inbound_connection(false, true),
    }
    let InboundPort {
        protocol,
        handler,
        fallback,
        sniffing,
        ..
    } = port;
    choose(stream, protocol, handler, Some(fallback), sniffing).await
}

/// The decrypted stream inside an mTLS connection, with the port's handler for what it
/// carries; `peer` learns the client's SPIFFE ID. None: the handshake failed, or the port's
/// detection closes what was sent.
async fn accept_mtls(
    proxy: &Proxy,
    stream: TcpStream,
    InboundPort {
        protocol,
        handler,
        fallback,
        sniffing,
        ..
    }: InboundPort,
    peer: &mut Peer,
    note: &crate::connections::Note,
) -> Option<(MtlsStream, Handler, Option<Detected>)> {
    let Some(certified) = proxy.identity.as_ref().and_then(|i| i.current()) else {
        tracing::warn!("mTLS asked for, but no workload certificate yet: closed");
        return None;
    };
    let _ = stream.set_nodelay(true);
    let acceptor = tokio_rustls::TlsAcceptor::from(certified.tls.server.clone());
    let tls = match tokio::time::timeout(proxy.header_timeout, acceptor.accept(stream)).await {
        // Boxed: the session is over a kilobyte, and the serving task passes it on.
        Ok(Ok(tls)) => Box::new(tls),
        Ok(Err(e)) => {
            proxy.metrics().mtls_handshake_failed();
            tracing::info!("mTLS handshake failed: {e}");
            return None;
        }
        Err(_) => {
            proxy.metrics().mtls_handshake_failed();
            tracing::info!("mTLS handshake timed out");
            return None;
        }
    };
    proxy.metrics().inbound_connection(true, true);
    let id = crate::identity::tls::peer_identity(tls.get_ref().1.peer_certificates());
    tracing::Span::current().record("peer_id", id.as_deref().unwrap_or("none"));
    note.peer(id.as_deref().unwrap_or("unknown"));
    peer.principal = id.map(Arc::from);
    let mut tls = crate::stream::Flushing::new(tls);
    // What is inside is told from its first bytes, read (TLS cannot be peeked) and put back.
    let mut first = bytes::BytesMut::new();
    let detected = match (protocol, &handler) {
        (_, Handler::Tcp { .. }) | (Protocol::Tcp, _) => None,
        _ => Some(sniff(&mut tls, &mut first, sniffing.timeout).await),
    };
    let handler = match (protocol, detected) {
        // A TCP chain serves everything itself, as `choose` has it for plaintext.
        _ if matches!(handler, Handler::Tcp { .. }) => handler,
        (Protocol::Tcp, _) => fallback,
        (Protocol::Detect, Some(Detected::Http1 | Detected::Http2)) => handler,
        (Protocol::Detect, Some(Detected::TimedOut)) if sniffing.close_on_timeout => return None,
        (Protocol::Detect, _) => fallback,
        _ => handler,
    };
    Some((Prefixed::new(tls, first), handler, detected))
}

/// What an inbound mTLS connection is served over: the session, with the bytes sniffed from
/// it put back in front.
type MtlsStream =
    Prefixed<crate::stream::Flushing<Box<tokio_rustls::server::TlsStream<TcpStream>>>>;

/// Reads a stream's first bytes into `buf` until they say what it speaks, or `timeout` passes.
async fn sniff<S: Stream>(
    stream: &mut S,
    buf: &mut bytes::BytesMut,
    timeout: Option<std::time::Duration>,
) -> Detected {
    use tokio::io::AsyncReadExt;
    let read = async {
        loop {
            if let Some(d) = crate::detect::classify(buf) {
                return d;
            }
            if buf.len() >= crate::detect::PEEK_BYTES {
                return Detected::Opaque;
            }
            match stream.read_buf(buf).await {
                Ok(0) | Err(_) => return Detected::Opaque,
                Ok(_) => {}
            }
        }
    };
    match timeout {
        Some(t) => tokio::time::timeout(t, read)
            .await
            .unwrap_or(Detected::TimedOut),
        None => read.await,
    }
}

/// Serves an HTTP connection whose requests are routed by `source`; `detected` as for
/// [`serve_connection`].
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice"
)]
pub fn serve_http(
    proxy: Proxy,
    source: RouteSource,
    stream: TcpStream,
    detected: Option<Detected>,
) -> impl Future<Output = ()> {
    // Not an `async fn`, for the reason `serve_http_on` gives.
    async move {
        let http2 = match detected {
            Some(d) => d == Detected::Http2,
            None => Box::pin(detect(&stream, Some(proxy.header_timeout))).await == Detected::Http2,
        };
        serve_http_on(proxy, source, stream, http2).await;
    }
}

/// Serves HTTP (`http2`, or HTTP/1 by the fast path and hyper) on any stream: the one a
/// listener accepted, or what a TLS handshake on it yields.
///
/// A function returning its future rather than an `async fn`: an `async fn` keeps a second copy
/// of its arguments in its future, which every connection's task would carry.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice"
)]
pub fn serve_http_on<S: Stream>(
    proxy: Proxy,
    source: RouteSource,
    stream: S,
    http2: bool,
) -> impl Future<Output = ()> {
    async move {
        // A connection accepted while the proxy drains serves one HTTP/1 request (or, HTTP/2, runs
        // until the proxy stops): closing it at once would fail a client that did nothing wrong.
        let late = proxy.drain.is_draining();
        let (server, routed) = if http2 {
            (Server::Http2(stream), None)
        } else if proxy.http1_fast_path {
            match fast::serve(&proxy, &source, stream, late).await {
                Served::Closed => return,
                Served::Handoff(io, routed) => (Server::Http1(io), routed),
            }
        } else {
            (
                Server::Http1(Prefixed::new(stream, Default::default())),
                None,
            )
        };
        // Boxed: a connection the fast path serves holds only the fast path's state in its task,
        // not hyper's too (an idle connection's memory is mostly this state).
        Box::pin(serve_hyper(proxy, source, server, routed, late)).await;
    }
}

/// Serves the rest of a connection with hyper: HTTP/2, or HTTP/1 the fast path handed over
/// (`routed`: the request it routed before handing over, if it did).
async fn serve_hyper<S: Stream>(
    proxy: Proxy,
    source: RouteSource,
    server: Server<S>,
    routed: Option<crate::http::Routed>,
    late: bool,
) {
    let drain = proxy.drain.clone();
    let header_timeout = proxy.header_timeout;
    let idle = proxy.idle_timeout;
    // Shared by the connection's requests: a request takes two counts, not one per field of
    // the proxy.
    let shared = Arc::new((proxy, source));
    // The request the fast path routed before handing over is the first hyper reads; the flag
    // spares every later request the lock.
    let first = routed.map(|r| Arc::new((AtomicBool::new(true), std::sync::Mutex::new(Some(r)))));
    let svc = service_fn(move |req| {
        let shared = shared.clone();
        let routed = first
            .as_ref()
            .filter(|f| f.0.swap(false, Ordering::Relaxed))
            .and_then(|f| f.1.lock().ok()?.take());
        // Boxed: a request's future is kilobytes, which hyper would otherwise move whole into
        // its dispatcher (HTTP/1) or into a task of its own per stream (HTTP/2).
        Box::pin(async move {
            let (proxy, source) = &*shared;
            Ok::<_, std::convert::Infallible>(proxy.handle(source, req, routed).await)
        })
    });
    let signal = async {
        if late {
            drain.stopped().await
        } else {
            drain.signaled().await
        }
    };
    let result = match server {
        Server::Http2(stream) => {
            let mut builder = http2::Builder::new(TokioExecutor::new());
            // Envoy's limit on concurrent streams, not hyper's 200: a gRPC channel carries
            // every call of an app to a Service over one connection, and the app without the
            // mesh was not limited.
            builder
                .timer(TokioTimer::new())
                .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
                .max_header_list_size(crate::http::MAX_HEADER_BYTES as u32);
            // An HTTP/2 connection that carries nothing for the idle timeout is closed as a
            // drain closes it (GOAWAY; streams still open finish first), as Envoy's
            // `idle_timeout` does. HTTP/1 connections idle between requests meet the header
            // timeout instead.
            let moved = std::sync::atomic::AtomicU64::new(0);
            let io = crate::idle::Counted {
                inner: stream,
                moved: &moved,
                bytes: None,
            };
            let signal = async {
                tokio::select! {
                    () = signal => {}
                    () = crate::idle::quiet_for(&moved, idle) => {
                        tracing::debug!(?idle, "idle HTTP/2 connection: closing");
                    }
                }
            };
            until_drained(
                builder.serve_connection(TokioIo::new(io), svc),
                signal,
                |c| c.graceful_shutdown(),
            )
            .await
        }
        Server::Http1(io) => {
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .keep_alive(!late)
                .header_read_timeout(header_timeout)
                .max_header_size(crate::http::MAX_HEADER_BYTES)
                .max_buf_size(64 * 1024);
            until_drained(
                builder
                    .serve_connection(TokioIo::new(io), svc)
                    .with_upgrades(),
                signal,
                |c| c.graceful_shutdown(),
            )
            .await
        }
    };
    if let Err(e) = result {
        tracing::debug!("connection ended: {e}");
    }
}

/// Which hyper server a connection gets.
enum Server<S> {
    /// HTTP/1, after whatever the fast path read.
    Http1(Prefixed<S>),
    Http2(S),
}

/// Runs a server connection; once `signal` fires, lets it finish the request in flight and
/// close (HTTP/1 `connection: close`, HTTP/2 GOAWAY).
async fn until_drained<C>(
    conn: C,
    signal: impl Future<Output = ()>,
    graceful_shutdown: impl FnOnce(Pin<&mut C>),
) -> Result<(), hyper::Error>
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        // The connection first: it is what wakes this task on nearly every poll.
        biased;
        r = conn.as_mut() => r,
        () = signal => {
            graceful_shutdown(conn.as_mut());
            conn.await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    /// A connected pair on loopback: the client's end, and the proxy's accepted one.
    async fn pair() -> (TcpStream, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (accepted, _) = l.accept().await.unwrap();
        (client, accepted)
    }

    fn http() -> Handler {
        Handler::Http {
            route_config: "r".into(),
            normalize_path: false,
            authz: Default::default(),
        }
    }

    /// A client that says nothing (a server-first protocol) gets what the listener's sniffing
    /// says: opaque TCP, or a close; with no limit, detection waits for the client's bytes; an
    /// HTTP listener with no fallback does not detect at all.
    #[tokio::test]
    async fn a_silent_client_meets_the_listeners_detection_wait() {
        let fallback = Handler::tcp_to("c".into());
        let wait = |ms: Option<u64>, close_on_timeout| Sniffing {
            timeout: ms.map(Duration::from_millis),
            close_on_timeout,
        };
        // (close_on_timeout, what a silent client gets after 50 ms)
        for (close, want) in [(false, Some((fallback.clone(), None))), (true, None)] {
            let (_client, proxy_end) = pair().await;
            let sniffing = wait(Some(50), close);
            let chosen = choose(
                &proxy_end,
                Protocol::Detect,
                http(),
                Some(fallback.clone()),
                sniffing,
            )
            .await;
            assert_eq!(chosen, want, "close_on_timeout {close}");
        }

        // With nothing to fall back to, an HTTP listener is HTTP at once: no wait, no close.
        let (_client, proxy_end) = pair().await;
        let chosen = tokio::time::timeout(
            Duration::from_millis(20),
            choose(
                &proxy_end,
                Protocol::Detect,
                http(),
                None,
                wait(Some(50), true),
            ),
        )
        .await;
        assert_eq!(chosen, Ok(Some((http(), None))));

        // No limit: a request line sent well after any default wait is still HTTP.
        let (mut client, proxy_end) = pair().await;
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
            client
        });
        let chosen = choose(
            &proxy_end,
            Protocol::Detect,
            http(),
            Some(fallback),
            wait(None, true),
        )
        .await;
        assert_eq!(chosen, Some((http(), Some(Detected::Http1))));
        late.await.unwrap();
    }
}
