//! The fast path's exchange with an HTTP/2 upstream (a sidecar over mTLS, or an `h2c` app): the
//! head it parsed becomes a stream on the endpoint's shared HTTP/2 connection, opened from the
//! client connection's own task, and the answer goes back as HTTP/1.1 written by the rules
//! hyper's server keeps (`h1::respond`), so a client reads the same bytes whichever path carried
//! its request. No hyper server, no header timer and no task per request.

use bytes::Bytes;
use futures::FutureExt;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Method, Request, Uri, Version};
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;

use super::{Conn, Current, NoHead, Timer, count, expiry};
use crate::http::h1::respond::{self, Asked, Framing};
use crate::http::{Target, headers, rules};
use crate::metrics::Flag;
use crate::stream::Stream;
use crate::upstream::h2::H2Body;
use crate::upstream::pool::{Peer, SendError};

/// What became of a request the fast path took to an HTTP/2 upstream.
pub(super) enum Exchanged {
    /// Answered (or failed and answered locally); whether the client connection stays open.
    Done(bool),
    /// The peer declined HTTP/2, or the head cannot be one: nothing was sent, hyper takes it.
    Declined(Target),
}

/// Bytes of response gathered before they are written to the client.
const WRITE_AT: usize = 64 * 1024;

/// The HTTP/2 request for a parsed head: its `Host` as `:authority`, its header lines as fields
/// (the hop-by-hop ones were left out when it was parsed; a `te` that stayed says `trailers`),
/// an `x-request-id` when it had none, and `content-length: 0` where hyper's client states an
/// empty body. Also whether the client takes trailers. `None`: a byte a header map refuses,
/// which hyper's path answers.
fn request_for(buf: &[u8], req: &Current, spans: &[super::Span]) -> Option<(Request<()>, bool)> {
    let head = &req.head;
    let method = Method::from_bytes(&buf[head.method.clone()]).ok()?;
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(Authority::try_from(&buf[head.host.clone()]).ok()?);
    uri.path_and_query = Some(PathAndQuery::try_from(&buf[head.target.clone()]).ok()?);
    let mut headers = HeaderMap::with_capacity(spans.len() + 2);
    let mut trailers = false;
    for s in spans {
        let name = HeaderName::from_bytes(&buf[s.name.clone()]).ok()?;
        match name {
            header::HOST => continue,
            // Kept only when it said `trailers` (in any case): restated as HTTP/2 allows it,
            // lowercase, as hyper's path does.
            header::TE => {
                trailers = true;
                headers.insert(header::TE, HeaderValue::from_static("trailers"));
                continue;
            }
            _ => {}
        }
        headers.append(name, HeaderValue::from_bytes(&buf[s.value.clone()]).ok()?);
    }
    if !head.has_request_id {
        let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let id = rules::new_request_id(&mut id);
        headers.insert(
            HeaderName::from_static(rules::REQUEST_ID),
            HeaderValue::from_str(id).ok()?,
        );
    }
    if head.len == req.len
        && !headers.contains_key(header::CONTENT_LENGTH)
        && crate::upstream::h2::has_payload_semantics(&method)
    {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    }
    let mut r = Request::new(());
    *r.method_mut() = method;
    *r.uri_mut() = Uri::from_parts(uri).ok()?;
    *r.version_mut() = Version::HTTP_2;
    *r.headers_mut() = headers;
    Some((r, trailers))
}

impl<S: Stream> Conn<'_, S> {
    /// Forwards one request (no body, or a whole one of known length) on the endpoint's HTTP/2
    /// connection and relays its answer.
    pub(super) async fn exchange_h2(&mut self, req: &Current, target: Target) -> Exchanged {
        let Some((request, te_trailers)) = request_for(&self.inbuf, req, &self.spans) else {
            return Exchanged::Declined(target);
        };
        let endpoint = &target.endpoint;
        let mut timer = std::pin::pin!(
            target
                .timeout
                .map(|t| tokio::time::sleep_until(req.started + t))
        );
        let peer = Peer {
            addr: endpoint.addr,
            security: &endpoint.security,
            dialer: &self.proxy.dialer,
        };
        let ready = tokio::select! {
            biased;
            () = expiry(timer.as_mut()) => Err(None),
            r = endpoint.pool.ready_stream(peer, target.dial) => r.map_err(Some),
        };
        let mut conn = match ready {
            Ok(Some(conn)) => conn,
            Ok(None) => return Exchanged::Declined(target),
            Err(e) => {
                let mut guard = endpoint.start();
                let flag = match e {
                    None => Flag::UpstreamTimeout,
                    Some(SendError::Connect(e)) => {
                        tracing::debug!(endpoint = %endpoint.addr, "upstream error: {e}");
                        guard.failed();
                        Flag::UpstreamConnectFailure
                    }
                    Some(e) => {
                        tracing::debug!(endpoint = %endpoint.addr, "upstream error: {e}");
                        Flag::UpstreamReset
                    }
                };
                let open = self.reply(req, flag, &endpoint.stats).await;
                return Exchanged::Done(open);
            }
        };
        let mut guard = endpoint.start();
        let body = &self.inbuf[req.head.len..req.len];
        let opened = conn
            .open(request, body.is_empty())
            .and_then(|(answer, mut stream)| {
                if !body.is_empty() {
                    // h2 holds what the peer's window does not take yet (64 KiB at most here).
                    stream
                        .send_data(Bytes::copy_from_slice(body), true)
                        .map_err(SendError::H2)?;
                }
                Ok(answer)
            });
        let answer = match opened {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(endpoint = %endpoint.addr, "upstream error: {e}");
                let open = self.reply(req, Flag::UpstreamReset, &endpoint.stats).await;
                return Exchanged::Done(open);
            }
        };
        let mut watching = !self.client_done;
        // The answer lives in this block only: a failure below resets the stream before the
        // client is answered, so the upstream stops for nobody.
        let answered = {
            let mut answer = std::pin::pin!(answer);
            loop {
                tokio::select! {
                    biased;
                    () = expiry(timer.as_mut()) => break Err(NoHead::Timeout),
                    a = answer.as_mut() => break a.map_err(|e| {
                        tracing::debug!(endpoint = %endpoint.addr, "upstream error: {e}");
                        NoHead::Stale
                    }),
                    // Cancel-safe: a read that loses the race has read nothing.
                    read = tokio::io::AsyncReadExt::read_buf(&mut self.client, &mut self.inbuf), if watching => {
                        match self.client_read(req, read) {
                            Ok(more) => watching = more,
                            Err(e) => break Err(e),
                        }
                    }
                }
            }
        };
        let resp = match answered {
            Ok(resp) => resp,
            Err(NoHead::ClientGone) => {
                count(
                    &endpoint.stats,
                    0,
                    Some(Flag::DownstreamClosed),
                    req.started,
                );
                return Exchanged::Done(false);
            }
            Err(NoHead::Timeout) => {
                let open = self
                    .reply(req, Flag::UpstreamTimeout, &endpoint.stats)
                    .await;
                return Exchanged::Done(open);
            }
            Err(_) => {
                let open = self.reply(req, Flag::UpstreamReset, &endpoint.stats).await;
                return Exchanged::Done(open);
            }
        };
        guard.answered();
        let (mut parts, body) = H2Body::response(resp, None).into_parts();
        // The framing rule hyper's path keeps too: a repeated length stated once.
        match rules::response_framing(&parts.headers, false) {
            Ok(framed) => match framed.length_header {
                rules::LengthHeader::AsSent => {}
                rules::LengthHeader::Dropped => {
                    parts.headers.remove(header::CONTENT_LENGTH);
                }
                rules::LengthHeader::Restated(n) => {
                    parts.headers.insert(header::CONTENT_LENGTH, n.into());
                }
            },
            Err(why) => {
                tracing::debug!(endpoint = %endpoint.addr, "upstream error: {why}");
                let flag = Flag::UpstreamProtocolError;
                let open = self.reply(req, flag, &endpoint.stats).await;
                return Exchanged::Done(open);
            }
        }
        headers::strip_hop_by_hop(&mut parts.headers);
        let close = req.close || self.proxy.drain.is_draining();
        let asked = Asked {
            head: req.head.is_head(&self.inbuf),
            trailers: te_trailers,
            close,
        };
        self.down.clear();
        let end = hyper::body::Body::is_end_stream(&body);
        let framing = respond::head(&mut self.down, parts.status, &parts.headers, end, asked);
        let code = parts.status.as_u16();
        let sent = self
            .relay_h2(req, body, framing, watching, timer.as_mut())
            .await;
        let stats = &guard.endpoint().stats;
        match sent {
            Ok(()) => count(stats, code, None, req.started),
            Err(flag) => {
                count(stats, code, Some(flag), req.started);
                return Exchanged::Done(false);
            }
        }
        if close {
            let _ = self.client.shutdown().await;
        }
        Exchanged::Done(!close)
    }

    /// Sends the head (in `down`) and the body after it as its frames come, framed as the head
    /// said, gathering what is ready at once into one write. A failure's flag: the connection
    /// ends without the body's end, so the client sees it cut.
    async fn relay_h2(
        &mut self,
        req: &Current,
        mut body: H2Body,
        framing: Framing,
        mut watching: bool,
        mut timer: Timer<'_>,
    ) -> Result<(), Flag> {
        let mut done = matches!(framing, Framing::None);
        let allowed = match &framing {
            Framing::Chunked(allowed) => allowed.as_deref(),
            _ => None,
        };
        let chunked = matches!(framing, Framing::Chunked(_));
        while !done {
            // The route's timeout first: an upstream that never stops sending must not starve
            // it (frames that are always ready are never awaited below).
            if timer.as_mut().as_pin_mut().is_some_and(|t| t.is_elapsed()) {
                return Err(Flag::UpstreamTimeout);
            }
            // What is ready now joins what waits to be written; only with nothing to write is
            // the next frame awaited.
            let frame = match body.frame().now_or_never() {
                Some(f) => f,
                None if !self.down.is_empty() => {
                    self.write_down().await?;
                    continue;
                }
                None => loop {
                    tokio::select! {
                        biased;
                        () = expiry(timer.as_mut()) => return Err(Flag::UpstreamTimeout),
                        f = body.frame() => break f,
                        read = tokio::io::AsyncReadExt::read_buf(&mut self.client, &mut self.inbuf), if watching => {
                            match self.client_read(req, read) {
                                Ok(more) => watching = more,
                                Err(_) => return Err(Flag::DownstreamClosed),
                            }
                        }
                    }
                },
            };
            match frame {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if data.is_empty() => {}
                    Ok(data) => {
                        if chunked {
                            respond::chunk_size(&mut self.down, data.len());
                        }
                        self.down.extend_from_slice(&data);
                        if chunked {
                            self.down.extend_from_slice(b"\r\n");
                        }
                    }
                    Err(frame) => {
                        if chunked {
                            respond::end_chunked(&mut self.down, frame.trailers_ref(), allowed);
                        }
                        done = true;
                    }
                },
                None => {
                    if chunked {
                        respond::end_chunked(&mut self.down, None, None);
                    }
                    done = true;
                }
                Some(Err(e)) => {
                    tracing::debug!("upstream body broke off: {e}");
                    // What came goes out first, so the client sees where it was cut.
                    let _ = self.write_down().await;
                    return Err(Flag::UpstreamReset);
                }
            }
            if self.down.len() >= WRITE_AT {
                self.write_down().await?;
            }
        }
        self.write_down().await
    }

    /// Writes out what `down` holds.
    async fn write_down(&mut self) -> Result<(), Flag> {
        if self.down.is_empty() {
            return Ok(());
        }
        let written = self.client.write_all(&self.down).await;
        self.down.clear();
        written.map_err(|_| Flag::DownstreamClosed)
    }
}
