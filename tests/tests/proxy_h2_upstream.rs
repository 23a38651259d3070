//! HTTP/1.1 clients through a sidecar to an HTTP/2 upstream (an `h2c` app here; a sidecar over
//! mTLS is the same exchange): the fast path's own HTTP/2 exchange and hyper's path must
//! answer alike, whatever shape the upstream's answer takes.

// Synchronous tests of real processes: they wait on the wall clock, blocking their thread.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use weft_e2e::{CurlCase, OneService, curl_shown, one_service, random_mix};

/// An HTTP/2 (h2c) server on the `h2` crate, answering each path with a shape of its own.
fn scripted_h2_upstream() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(l).unwrap();
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(s).await else {
                        return;
                    };
                    while let Some(Ok((req, respond))) = conn.accept().await {
                        tokio::spawn(answer(req, respond));
                    }
                });
            }
        });
    });
    addr
}

fn head(status: u16, fields: &[(&str, &str)]) -> Response<()> {
    let mut r = Response::builder().status(status);
    for (k, v) in fields {
        r = r.header(*k, *v);
    }
    r.body(()).unwrap()
}

async fn answer(req: Request<h2::RecvStream>, mut respond: h2::server::SendResponse<Bytes>) {
    let path = req.uri().path().to_string();
    let is_head = req.method() == http::Method::HEAD;
    let te = req
        .headers()
        .get("te")
        .map(|v| v.to_str().unwrap().to_string());
    let mut body = req.into_body();
    let mut got = 0;
    while let Some(Ok(d)) = body.data().await {
        got += d.len();
        let _ = body.flow_control().release_capacity(d.len());
    }
    let send = |respond: &mut h2::server::SendResponse<Bytes>, r: Response<()>, end: bool| {
        respond.send_response(r, end).unwrap()
    };
    let data = |s: &str| Bytes::copy_from_slice(s.as_bytes());
    if let Some((shape, n)) = path.strip_prefix("/r/").and_then(|r| r.split_once('/')) {
        shaped(respond, shape, n.parse().unwrap(), got, is_head).await;
        return;
    }
    match path.as_str() {
        "/slow" => {
            tokio::time::sleep(std::time::Duration::from_secs(3)).await;
            send(&mut respond, head(200, &[]), true);
        }
        "/length" => {
            let mut s = send(&mut respond, head(200, &[("content-length", "5")]), false);
            s.send_data(data("hello"), true).unwrap();
        }
        "/unsized" => {
            let mut s = send(&mut respond, head(200, &[("x-shape", "unsized")]), false);
            s.send_data(data("hello"), false).unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            s.send_data(data(" world"), true).unwrap();
        }
        "/empty" => {
            send(&mut respond, head(200, &[("x-shape", "empty")]), true);
        }
        "/no-content" => {
            send(&mut respond, head(204, &[("x-done", "1")]), true);
        }
        "/not-modified" => {
            send(&mut respond, head(304, &[("content-length", "5")]), true);
        }
        "/odd-status" => {
            let mut s = send(&mut respond, head(299, &[("content-length", "2")]), false);
            s.send_data(data("ok"), true).unwrap();
        }
        "/trailers" => {
            let fields = [
                ("trailer", "x-sum"),
                ("x-te", te.as_deref().unwrap_or("none")),
            ];
            let mut s = send(&mut respond, head(200, &fields), false);
            s.send_data(data("ok"), false).unwrap();
            let mut t = http::HeaderMap::new();
            t.insert("x-sum", "9".parse().unwrap());
            t.insert("x-undeclared", "1".parse().unwrap());
            s.send_trailers(t).unwrap();
        }
        "/cut" => {
            let mut s = send(&mut respond, head(200, &[]), false);
            s.send_data(data("partial"), false).unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            s.send_reset(h2::Reason::INTERNAL_ERROR);
        }
        // Cut by a reset that says NO_ERROR before the body ended: still cut short.
        "/cut-clean" | "/cut-clean-unsized" => {
            let fields: &[(&str, &str)] = match path.as_str() {
                "/cut-clean" => &[("content-length", "100")],
                _ => &[],
            };
            let mut s = send(&mut respond, head(200, fields), false);
            s.send_data(data("short"), false).unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            s.send_reset(h2::Reason::NO_ERROR);
        }
        // A body that never ends, as fast as the client takes it.
        "/endless" => {
            let mut s = send(&mut respond, head(200, &[]), false);
            let chunk = Bytes::from(vec![b'e'; 16_000]);
            loop {
                s.reserve_capacity(chunk.len());
                match std::future::poll_fn(|cx| s.poll_capacity(cx)).await {
                    Some(Ok(_)) => {}
                    _ => return,
                }
                if s.send_data(chunk.clone(), false).is_err() {
                    return;
                }
            }
        }
        "/big" => {
            let mut s = send(&mut respond, head(200, &[]), false);
            for _ in 0..30 {
                s.send_data(Bytes::from(vec![b'b'; 10_000]), false).unwrap();
            }
            s.send_data(data("end"), true).unwrap();
        }
        "/head" => {
            send(&mut respond, head(200, &[("content-length", "5")]), true);
        }
        "/refused" => respond.send_reset(h2::Reason::REFUSED_STREAM),
        _ => {
            let said = format!("got {got}");
            let length = said.len().to_string();
            let mut s = send(
                &mut respond,
                head(200, &[("content-length", &length)]),
                false,
            );
            s.send_data(data(&said), true).unwrap();
        }
    }
}

/// `/r/<shape>/<n>`: `n` bytes of `b` framed as `shape` says (`length`: a content-length;
/// `unsized`: none, in several frames; `empty`: no body, END_STREAM on the headers;
/// `nocontent`: a 204), with `x-got` saying how many request body bytes came.
async fn shaped(
    mut respond: h2::server::SendResponse<Bytes>,
    shape: &str,
    n: usize,
    got: usize,
    is_head: bool,
) {
    let got = got.to_string();
    let length = n.to_string();
    let (status, mut fields) = match shape {
        "nocontent" => (204, vec![]),
        "length" => (200, vec![("content-length", length.as_str())]),
        _ => (200, vec![]),
    };
    fields.push(("x-got", &got));
    let bodiless =
        is_head || matches!(shape, "empty" | "nocontent") || (shape == "length" && n == 0);
    let Ok(mut s) = respond.send_response(head(status, &fields), bodiless) else {
        return;
    };
    if bodiless {
        return;
    }
    let mut left = n;
    while left > 0 {
        let take = left.min(16_000);
        left -= take;
        if s.send_data(Bytes::from(vec![b'b'; take]), left == 0)
            .is_err()
        {
            return;
        }
        tokio::task::yield_now().await;
    }
    if n == 0 {
        let _ = s.send_data(Bytes::new(), true);
    }
    // The stream's data goes out as the peer's window allows: wait for it to be sent.
    let _ = std::future::poll_fn(|cx| s.poll_reset(cx)).await;
}

/// A sidecar with the fast path on or off (hyper for every request) in front of `upstream`, an
/// h2c Service `up`, with `route`'s YAML beside it.
fn mesh(upstream: SocketAddr, fast: bool, route: &str) -> OneService {
    let args = ["--http1-fast-path", if fast { "true" } else { "false" }];
    one_service("up", 80, "http2", &[upstream.port()], route, &args)
}

/// curl's view through `mesh` (see [`curl_shown`]).
fn fetch(mesh: &OneService, paths: &[&str], extra: &[&str], show: &[&str]) -> String {
    curl_shown(mesh.bind, paths, extra, show)
}

#[test]
fn every_http2_answer_reads_the_same_through_the_fast_path_and_through_hyper() {
    let upstream = scripted_h2_upstream();
    let (fast, hyper) = (mesh(upstream, true, ""), mesh(upstream, false, ""));
    let framing = ["content-length", "transfer-encoding", "connection"];
    let cases: &[CurlCase] = &[
        (
            &["/length", "/unsized"],
            &[],
            &framing,
            "exit 0\nHTTP/1.1 200 OK\ncontent-length: 5\nhelloHTTP/1.1 200 OK\ntransfer-encoding: chunked\nhello world\n",
        ),
        (
            &["/empty", "/no-content", "/not-modified", "/odd-status"],
            &[],
            &framing,
            "exit 0\nHTTP/1.1 200 OK\ncontent-length: 0\nHTTP/1.1 204 No Content\nHTTP/1.1 304 Not Modified\nHTTP/1.1 299 <none>\ncontent-length: 2\nok\n",
        ),
        (
            &["/head"],
            &["-I"],
            &framing,
            "exit 0\nHTTP/1.1 200 OK\ncontent-length: 5\n",
        ),
        // Trailers reach a client that asked for them, the declared ones only.
        (
            &["/trailers"],
            &["-H", "te: trailers"],
            &["x-sum", "x-undeclared", "x-te"],
            "exit 0\nHTTP/1.1 200 OK\nx-te: trailers\nokx-sum: 9\n",
        ),
        (
            &["/trailers"],
            &[],
            &["x-sum", "x-undeclared", "x-te"],
            "exit 0\nHTTP/1.1 200 OK\nx-te: none\nok\n",
        ),
        // `TE` is case-insensitive; HTTP/2 takes it lowercase only.
        (
            &["/trailers"],
            &["-H", "TE: Trailers"],
            &["x-sum", "x-te"],
            "exit 0\nHTTP/1.1 200 OK\nx-te: trailers\nokx-sum: 9\n",
        ),
        // Bodies sent on whole: a length, and an empty POST stated as such.
        (
            &["/echo"],
            &["--data-binary", "abcdef"],
            &[],
            "exit 0\nHTTP/1.1 200 OK\ngot 6\n",
        ),
        (
            &["/echo", "/echo"],
            &["-X", "POST"],
            &[],
            "exit 0\nHTTP/1.1 200 OK\ngot 0HTTP/1.1 200 OK\ngot 0\n",
        ),
        // Streamed with chunks: hyper's on both, the same.
        (
            &["/echo"],
            &["-H", "transfer-encoding: chunked", "--data-binary", "abc"],
            &[],
            "exit 0\nHTTP/1.1 200 OK\ngot 3\n",
        ),
        // A body cut by a reset is cut for the client too (curl: 18, partial transfer).
        (&["/cut"], &[], &[], "exit 18\nHTTP/1.1 200 OK\npartial\n"),
        (
            &["/cut-clean"],
            &[],
            &[],
            "exit 18\nHTTP/1.1 200 OK\nshort\n",
        ),
        (
            &["/cut-clean-unsized"],
            &[],
            &[],
            "exit 18\nHTTP/1.1 200 OK\nshort\n",
        ),
        (
            &["/refused"],
            &[],
            &["x-weft-reason"],
            "exit 0\nHTTP/1.1 502 Bad Gateway\nx-weft-reason: UR\nupstream reset\n",
        ),
    ];
    for (paths, extra, show, want) in cases {
        let via_fast = fetch(&fast, paths, extra, show);
        let via_hyper = fetch(&hyper, paths, extra, show);
        assert_eq!(
            via_fast, via_hyper,
            "{paths:?} {extra:?}: the two paths differ"
        );
        assert_eq!(via_fast, *want, "{paths:?} {extra:?}");
    }
    // A large body crosses whole, frame by frame.
    let big = fetch(
        &fast,
        &["/big"],
        &["-o", "/dev/null", "-w", "%{size_download}"],
        &[],
    );
    assert_eq!(big, "exit 0\n300003\n");
}

#[test]
fn a_random_mix_of_requests_and_answers_reads_the_same_through_both_paths() {
    // One seeded sequence of methods, request bodies (none, a length, chunked; up to 70 KB) and
    // answer shapes (a length, no length, no body, 204; HEAD) sent by Python's http.client
    // through a sidecar with the fast path and one without: the client must see the same from
    // both, request by request, on one connection.
    let upstream = scripted_h2_upstream();
    let (fast, hyper) = (mesh(upstream, true, ""), mesh(upstream, false, ""));
    for seed in ["1", "2"] {
        let shapes = ["length", "unsized", "empty", "nocontent"];
        let through_fast = random_mix(fast.bind, seed, 120, &shapes, true);
        let through_hyper = random_mix(hyper.bind, seed, 120, &shapes, true);
        assert!(!through_fast.contains("error"), "{through_fast}");
        // The mix did what it says: large answers, 204s, HEADs, uploads counted.
        for seen in ["200000", "204", "HEAD", "\"70000\"", "chunked"] {
            assert!(through_fast.contains(seen), "no {seen} in {through_fast}");
        }
        assert_eq!(through_fast, through_hyper, "seed {seed}");
    }
}

#[test]
fn pipelined_requests_and_a_late_answer_are_handled_alike_on_both_paths() {
    let upstream = scripted_h2_upstream();
    let route = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: up, namespace: shop}
spec:
  parentRefs: [{kind: Service, name: up, port: 80}]
  rules:
    - timeouts: {request: 500ms}
      backendRefs: [{name: up, port: 80}]
"#;
    let (fast, hyper) = (mesh(upstream, true, route), mesh(upstream, false, route));
    // Three requests written at once: the answers come back in order, each whole.
    let pipelined = |mesh: &OneService| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(mesh.bind).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let req = |path: &str, last: bool| {
            let close = if last { "connection: close\r\n" } else { "" };
            format!("GET {path} HTTP/1.1\r\nhost: up\r\n{close}\r\n")
        };
        let all = [
            req("/length", false),
            req("/unsized", false),
            req("/odd-status", true),
        ];
        s.write_all(all.concat().as_bytes()).unwrap();
        let mut got = String::new();
        s.read_to_string(&mut got).unwrap();
        // Dates differ from run to run.
        got.lines()
            .filter(|l| !l.starts_with("date:"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let via_fast = pipelined(&fast);
    assert_eq!(via_fast, pipelined(&hyper));
    assert_eq!(via_fast.matches("HTTP/1.1 ").count(), 3, "{via_fast}");
    assert!(via_fast.ends_with("ok"), "{via_fast}");
    // The route's timeout cuts a body that never ends, however fast its frames come.
    for mesh in [&fast, &hyper] {
        let started = std::time::Instant::now();
        let args = ["-o", "/dev/null", "-w", "%{http_code}"];
        let got = fetch(mesh, &["/endless"], &args, &[]);
        assert_eq!(got, "exit 18\n200\n");
        assert!(started.elapsed() < std::time::Duration::from_secs(3));
    }
    // The route's timeout answers a late upstream with 504 (UT) on both paths, in about 0.5 s.
    for mesh in [&fast, &hyper] {
        let started = std::time::Instant::now();
        let got = fetch(mesh, &["/slow"], &[], &["x-weft-reason"]);
        assert_eq!(
            got,
            "exit 0\nHTTP/1.1 504 Gateway Timeout\nx-weft-reason: UT\nupstream request timeout\n"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }
}
