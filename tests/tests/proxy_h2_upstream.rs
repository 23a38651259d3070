//! HTTP/1.1 clients through a sidecar to an HTTP/2 upstream (an `h2c` app here; a sidecar over
//! mTLS is the same exchange): the fast path's own HTTP/2 exchange and hyper's path must
//! answer alike, whatever shape the upstream's answer takes.

// Synchronous tests of real processes: they wait on the wall clock, blocking their thread.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::process::Command;

use bytes::Bytes;
use http::{Request, Response};
use weft_e2e::{OneService, one_service};

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
    match path.as_str() {
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

/// curl's view of requests on one connection: exit code, each status line, the headers named
/// in `show` (trailers too), and the bodies.
fn fetch(mesh: &OneService, paths: &[&str], extra: &[&str], show: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "-i", "--http1.1", "--max-time", "5"])
        .args(extra)
        .args(paths.iter().map(|p| format!("http://{}{p}", mesh.bind)))
        .args(["-H", "Host: up"])
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut seen = format!("exit {}\n", out.status.code().unwrap_or(-1));
    for line in text.split("\r\n") {
        let lower = line.to_ascii_lowercase();
        let shown = line.starts_with("HTTP/")
            || show.iter().any(|h| lower.contains(&format!("{h}:")))
            || (!line.is_empty() && !line.contains(':'));
        if shown {
            seen.push_str(line.trim_end());
            seen.push('\n');
        }
    }
    seen
}

/// Paths fetched on one connection, curl options, headers shown, what curl must see.
type Case<'a> = (&'a [&'a str], &'a [&'a str], &'a [&'a str], &'a str);

#[test]
fn every_http2_answer_reads_the_same_through_the_fast_path_and_through_hyper() {
    let upstream = scripted_h2_upstream();
    let mesh = |fast: &str| {
        let args = ["--http1-fast-path", fast];
        one_service("up", 80, "http2", &[upstream.port()], "", &args)
    };
    let (fast, hyper) = (mesh("true"), mesh("false"));
    let framing = ["content-length", "transfer-encoding", "connection"];
    let cases: &[Case] = &[
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
