//! HTTP/2 clients through a sidecar to HTTP/1.1 upstreams: what RFC 9113 and Envoy's defaults
//! ask of the hop.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use weft_e2e::one_service;

/// Reads one request head from a raw connection.
fn head_of(s: &mut std::net::TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

#[test]
fn split_cookies_from_an_http2_client_reach_an_http1_upstream_as_one_field() {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = server.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for mut s in server.incoming().flatten() {
            while let Some(head) = head_of(&mut s) {
                let _ = tx.send(head);
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
            }
        }
    });
    let mesh = one_service("up", 80, "http", &[upstream.port()], "", &[]);
    let out = Command::new("curl")
        .args(["-sS", "--http2-prior-knowledge", "--max-time", "5"])
        .args(["-H", "cookie: a=1", "-H", "cookie: b=2"])
        .arg(format!("http://{}/c", mesh.bind))
        .output()
        .expect("curl runs");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok");
    let head = rx.recv().unwrap();
    let cookies: Vec<&str> = head
        .split("\r\n")
        .filter(|l| l.to_ascii_lowercase().starts_with("cookie:"))
        .collect();
    assert_eq!(cookies, ["cookie: a=1; b=2"], "{head}");
}

#[test]
fn an_http2_client_may_have_more_than_200_requests_in_flight_on_one_connection() {
    // hyper's server allows 200 concurrent streams unless told otherwise; Envoy 2^31 - 1. The
    // upstream holds every answer until it has seen all the requests at once (or 5 s pass).
    const N: usize = 300;
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = server.local_addr().unwrap();
    // (requests arrived, requests in flight), and the most ever in flight.
    let state = Arc::new((Mutex::new((0usize, 0usize)), Condvar::new()));
    let most = Arc::new(AtomicUsize::new(0));
    {
        let (state, most) = (state.clone(), most.clone());
        std::thread::spawn(move || {
            for mut s in server.incoming().flatten() {
                let (state, most) = (state.clone(), most.clone());
                std::thread::spawn(move || {
                    while head_of(&mut s).is_some() {
                        let (lock, cv) = &*state;
                        let mut n = lock.lock().unwrap();
                        n.0 += 1;
                        n.1 += 1;
                        most.fetch_max(n.1, Ordering::SeqCst);
                        cv.notify_all();
                        let (mut n, _) = cv
                            .wait_timeout_while(n, Duration::from_secs(5), |n| n.0 < N)
                            .unwrap();
                        n.1 -= 1;
                        drop(n);
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if s.write_all(answer).is_err() {
                            return;
                        }
                    }
                });
            }
        });
    }
    let mesh = one_service("up", 80, "http", &[upstream.port()], "", &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ok = rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(mesh.bind).await.unwrap();
        let (send, conn) = hyper::client::conn::http2::handshake::<_, _, Empty<bytes::Bytes>>(
            TokioExecutor::new(),
            TokioIo::new(tcp),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let calls = (0..N).map(|i| {
            let mut send = send.clone();
            async move {
                let req = http::Request::get(format!("http://up/{i}"))
                    .body(Empty::new())
                    .unwrap();
                let resp = send.send_request(req).await.ok()?;
                let body = resp.into_body().collect().await.ok()?.to_bytes();
                (body == "ok").then_some(())
            }
        });
        let all = futures_join_all(calls).await;
        all.iter().filter(|r| r.is_some()).count()
    });
    assert_eq!(ok, N);
    assert_eq!(
        most.load(Ordering::SeqCst),
        N,
        "requests the upstream saw at once"
    );
}

/// Runs futures concurrently, each its own task (no extra dependency for `join_all`).
async fn futures_join_all<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}
