//! One set of HTTP rules on both HTTP/1 paths: every request goes through a sidecar with the
//! fast path (`--http1-fast-path true`) and one without it (hyper for everything), and the
//! upstream must receive the same request and the client the same answer from both. Then the
//! malformed and odd shapes a battery of requests found the two paths keeping differently, each
//! checked on both.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use weft_e2e::OneService;

/// A message as a peer saw it, its framing undone: the start line, the headers (names
/// lowercased, in order), the body's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Message {
    start: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Message {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// What is compared between the paths: headers sorted by name (each name's values in
    /// order), framing headers that legitimately differ left out, a request id's value
    /// replaced by whether there is one.
    fn comparable(&self) -> Self {
        let mut headers: Vec<(String, String)> = self
            .headers
            .iter()
            .filter(|(n, _)| !matches!(n.as_str(), "date" | "connection" | "keep-alive"))
            .map(|(n, v)| match n.as_str() {
                "x-request-id" => (n.clone(), "<id>".into()),
                _ => (n.clone(), v.clone()),
            })
            .collect();
        headers.sort_by(|a, b| a.0.cmp(&b.0));
        Self {
            start: self.start.clone(),
            headers,
            body: self.body.clone(),
        }
    }
}

fn read_line(s: &mut impl Read) -> Option<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        match s.read(&mut byte) {
            Ok(1) => line.push(byte[0]),
            _ => return (!line.is_empty()).then(|| String::from_utf8_lossy(&line).into()),
        }
    }
    line.truncate(line.len() - 2);
    Some(String::from_utf8_lossy(&line).into_owned())
}

/// Reads a head: start line and headers.
fn read_head(s: &mut impl Read) -> Option<(String, Vec<(String, String)>)> {
    let start = read_line(s)?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(s)?;
        if line.is_empty() {
            return Some((start, headers));
        }
        let (n, v) = line.split_once(':')?;
        headers.push((n.to_ascii_lowercase(), v.trim().to_string()));
    }
}

/// Reads a body as the head frames it: chunked, a length, nothing, or (`until_close`) all
/// that comes until the peer closes.
fn read_body(
    s: &mut impl Read,
    headers: &[(String, String)],
    until_close: bool,
) -> Option<Vec<u8>> {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().ends_with("chunked")) {
        loop {
            let size = read_line(s)?;
            let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
            if size == 0 {
                while !read_line(s)?.is_empty() {}
                return Some(body);
            }
            let mut chunk = vec![0u8; size + 2];
            s.read_exact(&mut chunk).ok()?;
            body.extend_from_slice(&chunk[..size]);
        }
    }
    if let Some(n) = get("content-length") {
        let n: usize = n.split(',').next()?.trim().parse().ok()?;
        body.resize(n, 0);
        s.read_exact(&mut body).ok()?;
        return Some(body);
    }
    if until_close {
        let _ = s.read_to_end(&mut body);
    }
    Some(body)
}

/// What the upstream answers a request for `path`.
fn answer(path: &str) -> &'static [u8] {
    match path {
        "/lengths-5-5" => b"HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\nhello",
        "/lengths-twice" => b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\nhello",
        "/switch" => b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
        "/chunked" => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-shape: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        "/hop" => b"HTTP/1.1 200 OK\r\nconnection: x-private\r\nx-private: 1\r\nkeep-alive: timeout=5\r\nx-public: 1\r\ncontent-length: 2\r\n\r\nok",
        "/created" => b"HTTP/1.1 201 Created\r\nlocation: /new\r\ncontent-length: 0\r\n\r\n",
        "/no-content" => b"HTTP/1.1 204 No Content\r\nx-done: 1\r\n\r\n",
        _ => b"HTTP/1.1 200 OK\r\nx-upstream: yes\r\ncontent-length: 2\r\n\r\nok",
    }
}

/// An upstream that records every request it reads (framing undone) and answers as
/// [`answer`] says; an upgrade it answers 101 to is then echoed.
fn recording_upstream() -> (SocketAddr, mpsc::Receiver<Message>) {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for s in server.incoming().flatten() {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut s = s;
                while let Some((start, headers)) = read_head(&mut s) {
                    let Some(body) = read_body(&mut s, &headers, false) else {
                        return;
                    };
                    let path = start.split(' ').nth(1).unwrap_or("/").to_string();
                    let _ = tx.send(Message {
                        start,
                        headers,
                        body,
                    });
                    let path = path.rsplit('/').next().map(|p| format!("/{p}"));
                    if s.write_all(answer(path.as_deref().unwrap_or("/"))).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// One request, sent raw on a new connection: the answer as the client reads it (`None`: the
/// connection closed without one).
fn exchange(bind: SocketAddr, request: &[u8]) -> Option<Message> {
    let mut s = TcpStream::connect(bind).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).unwrap();
    // Interim answers (`100 Continue`) are skipped: the final one is compared.
    let (start, headers, status) = loop {
        let (start, headers) = read_head(&mut s)?;
        let status: u16 = start.split(' ').nth(1)?.parse().ok()?;
        if !(100..200).contains(&status) || status == 101 {
            break (start, headers, status);
        }
    };
    let head_request = request.starts_with(b"HEAD ");
    let bodiless = head_request || matches!(status, 101 | 204 | 304);
    let body = if bodiless {
        Vec::new()
    } else {
        read_body(&mut s, &headers, true)?
    };
    Some(Message {
        start,
        headers,
        body,
    })
}

/// The two sidecars in front of one upstream, fast path on and off.
struct Paths {
    fast: OneService,
    hyper: OneService,
    seen: mpsc::Receiver<Message>,
}

impl Paths {
    fn start() -> Self {
        let (upstream, seen) = recording_upstream();
        Self {
            fast: weft_e2e::http1_path(upstream, true),
            hyper: weft_e2e::http1_path(upstream, false),
            seen,
        }
    }

    /// What the upstream got (if anything) and the client was answered, on each path.
    #[allow(clippy::type_complexity)]
    fn both(&self, request: &[u8]) -> [(Option<Message>, Option<Message>); 2] {
        [&self.fast, &self.hyper].map(|s| {
            while self.seen.try_recv().is_ok() {}
            let answer = exchange(s.bind, request);
            let got = self.seen.recv_timeout(Duration::from_millis(300)).ok();
            (got, answer)
        })
    }
}

/// Valid requests, odd ones among them, that both paths must carry the same way.
fn corpus() -> Vec<Vec<u8>> {
    let mut c: Vec<Vec<u8>> = Vec::new();
    let mut add = |s: &str| c.push(s.as_bytes().to_vec());
    add("GET / HTTP/1.1\r\nHost: up\r\n\r\n");
    add("GET /a/b?x=1&y=%20 HTTP/1.1\r\nHost: up\r\n\r\n");
    add("HEAD / HTTP/1.1\r\nHost: up\r\n\r\n");
    add("OPTIONS / HTTP/1.1\r\nHost: up\r\n\r\n");
    add("DELETE /thing HTTP/1.1\r\nHost: up\r\n\r\n");
    add(
        "POST /form HTTP/1.1\r\nHost: up\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 7\r\n\r\na=1&b=2",
    );
    add("PUT /put HTTP/1.1\r\nHost: up\r\nContent-Length: 5\r\n\r\nhello");
    add("PATCH /patch HTTP/1.1\r\nHost: up\r\nContent-Length: 2\r\n\r\n{}");
    add(
        "POST /chunks HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    );
    add(
        "POST /chunk-ext HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: chunked\r\n\r\n3;name=v\r\nabc\r\n0\r\n\r\n",
    );
    add(
        "POST /chunk-trailer HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nx-sum: 1\r\n\r\n",
    );
    add("POST /empty HTTP/1.1\r\nHost: up\r\nContent-Length: 0\r\n\r\n");
    add("GET /len0 HTTP/1.1\r\nHost: up\r\nContent-Length: 0\r\n\r\n");
    add("GET / HTTP/1.1\r\nHost: up:80\r\n\r\n");
    add("GET / HTTP/1.1\r\nHOST: up\r\nX-Mixed-Case: Value\r\n\r\n");
    add("GET / HTTP/1.1\r\nHost: up\r\nx-a: 1\r\nx-b: 2\r\nx-a: 3\r\n\r\n");
    add("GET / HTTP/1.1\r\nHost: up\r\nx-empty:\r\n\r\n");
    add("GET / HTTP/1.1\r\nHost: up\r\nx-spaces:    padded value   \r\n\r\n");
    add("GET / HTTP/1.1\r\nHost: up\r\nx-tab:\tvalue\r\n\r\n");
    add("GET / HTTP/1.1\r\nHost: up\r\nx-request-id: abc-123\r\n\r\n");
    add("GET / HTTP/1.1\r\nHost: up\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n");
    add("GET / HTTP/1.1\r\nHost: up\r\nTE: trailers\r\n\r\n");
    add("GET / HTTP/1.1\r\nHost: up\r\nTE: trailers, gzip\r\n\r\n");
    add("GET / HTTP/1.1\r\nHost: up\r\nTE: gzip\r\n\r\n");
    add("GET / HTTP/1.1\r\nHost: up\r\nConnection: keep-alive\r\n\r\n");
    add("GET / HTTP/1.1\r\nHost: up\r\nConnection: x-foo\r\nx-foo: 1\r\nx-bar: 2\r\n\r\n");
    add("GET / HTTP/1.1\r\nHost: up\r\nConnection: Host\r\n\r\n");
    add("GET / HTTP/1.1\r\nHost: up\r\nConnection: x-foo, Host\r\nx-foo: 1\r\n\r\n");
    add("GET / HTTP/1.1\r\nHost: up\r\nKeep-Alive: timeout=5\r\n\r\n");
    add("GET / HTTP/1.1\r\nHost: up\r\nProxy-Connection: keep-alive\r\n\r\n");
    add("GET / HTTP/1.1\r\nHost: up\r\nProxy-Authorization: Basic eA==\r\n\r\n");
    add("GET / HTTP/1.1\r\nHost: up\r\nUpgrade: websocket\r\n\r\n");
    add("GET /%2Fencoded HTTP/1.1\r\nHost: up\r\n\r\n");
    add("GET /a//b HTTP/1.1\r\nHost: up\r\n\r\n");
    add("GET /~user/%7Euser HTTP/1.1\r\nHost: up\r\n\r\n");
    add("GET /?q=a+b&r=%E2%9C%93 HTTP/1.1\r\nHost: up\r\n\r\n");
    add(
        "GET / HTTP/1.1\r\nHost: up\r\nAccept: */*\r\nAccept-Encoding: gzip, deflate\r\nUser-Agent: test/1.0\r\n\r\n",
    );
    add(
        "GET / HTTP/1.1\r\nHost: up\r\nx-long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n",
    );
    add("GET / HTTP/1.1\r\nHost: up\r\nx-utf8: caf\u{e9}\r\n\r\n");
    add(
        "POST /json HTTP/1.1\r\nHost: up\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"a\": [1, 2]}",
    );
    add("GET /chunked HTTP/1.1\r\nHost: up\r\n\r\n");
    add("HEAD /chunked HTTP/1.1\r\nHost: up\r\n\r\n");
    add("GET /hop HTTP/1.1\r\nHost: up\r\n\r\n");
    add("POST /created HTTP/1.1\r\nHost: up\r\nContent-Length: 1\r\n\r\nx");
    add("DELETE /no-content HTTP/1.1\r\nHost: up\r\n\r\n");
    add("GET / HTTP/1.0\r\nHost: up\r\n\r\n");
    add("GET / HTTP/1.0\r\n\r\n");
    add("GET http://up/absolute HTTP/1.1\r\nHost: up\r\n\r\n");
    add("GET http://up/absolute-other HTTP/1.1\r\nHost: elsewhere\r\n\r\n");
    add("GET / HTTP/1.1\r\nHost: up\r\nContent-Length: 4\r\n\r\nbody");
    add(
        "POST /expect HTTP/1.1\r\nHost: up\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
    );
    add("GET / HTTP/1.1\r\nHost: up\r\nx-forwarded-for: 10.0.0.1\r\n\r\n");
    add("GET / HTTP/1.1\r\nHost: up\r\nAuthorization: Bearer t\r\n\r\n");
    // What a proxy refuses, both alike.
    add("GET / HTTP/1.1\r\n\r\n");
    add("GET / HTTP/1.1\r\nHost: up\r\nHost: up\r\n\r\n");
    add("POST / HTTP/1.1\r\nHost: up\r\nContent-Length: 1, 2\r\n\r\nab");
    add("POST / HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: gzip\r\n\r\n");
    add("GET / HTTP/1.1\r\nHost: up\r\nx-folded: a\r\n b\r\n\r\n");
    add("GET / HTTP/1.1\r\nHost: up\r\nbad header: 1\r\n\r\n");
    c
}

#[test]
fn both_http1_paths_carry_every_request_the_same() {
    let paths = Paths::start();
    let corpus = corpus();
    assert!(corpus.len() >= 50);
    let mut differ = Vec::new();
    for request in &corpus {
        let [fast, hyper] = paths.both(request);
        let view = |(got, answer): &(Option<Message>, Option<Message>)| {
            (
                got.as_ref().map(Message::comparable),
                answer.as_ref().map(Message::comparable),
            )
        };
        if view(&fast) != view(&hyper) {
            differ.push(format!(
                "{}\n  fast:  {:?}\n  hyper: {:?}",
                String::from_utf8_lossy(request).escape_debug(),
                view(&fast),
                view(&hyper)
            ));
        }
    }
    assert!(
        differ.is_empty(),
        "{} of {} differ:\n{}",
        differ.len(),
        corpus.len(),
        differ.join("\n")
    );
}

/// The shapes a battery of malformed requests found the paths keeping differently: each as it
/// must be, on both.
#[test]
fn odd_shapes_are_kept_by_one_rule_on_both_paths() {
    let paths = Paths::start();
    // Host is never hop-by-hop: the upstream gets it, whatever Connection names.
    for (got, answer) in paths.both(b"GET / HTTP/1.1\r\nHost: up\r\nConnection: Host\r\n\r\n") {
        let got = got.expect("forwarded");
        assert_eq!(got.header("host"), Some("up"), "{got:?}");
        assert!(answer.unwrap().start.contains(" 200 "));
    }
    let cases: &[(&str, &[u8], u16, Option<&str>)] = &[
        // A GET with a chunked body reaches the upstream with that body.
        (
            "GET with a chunked body",
            b"GET /g HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            200,
            Some("abc"),
        ),
        // A space in Host, and an absolute-form target without Host: 400 (RFC 9112 3.2).
        ("a space in Host", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, None),
        (
            "absolute form without Host",
            b"GET http://up/x HTTP/1.1\r\n\r\n",
            400,
            None,
        ),
        // A 101 nobody asked for: after an h2c offer weft does not pass on, and for an
        // Upgrade without `Connection: upgrade`.
        (
            "101 after an h2c offer",
            b"GET /switch HTTP/1.1\r\nHost: up\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
            502,
            None,
        ),
        (
            "101 to an Upgrade without Connection: upgrade",
            b"GET /switch HTTP/1.1\r\nHost: up\r\nUpgrade: websocket\r\n\r\n",
            502,
            None,
        ),
        // A length stated twice with one value reaches the client as one value.
        ("Content-Length: 5, 5", b"GET /lengths-5-5 HTTP/1.1\r\nHost: up\r\n\r\n", 200, None),
        ("two equal Content-Lengths", b"GET /lengths-twice HTTP/1.1\r\nHost: up\r\n\r\n", 200, None),
    ];
    for (what, request, status, body) in cases {
        let [fast, hyper] = paths.both(request);
        for (path, (got, answer)) in [("fast", fast), ("hyper", hyper)] {
            let answer = answer.unwrap_or_else(|| panic!("{what} ({path}): no answer"));
            assert!(
                answer.start.contains(&format!(" {status} ")),
                "{what} ({path}): {answer:?}"
            );
            if let Some(body) = body {
                let got = got
                    .as_ref()
                    .unwrap_or_else(|| panic!("{what} ({path}): not forwarded"));
                assert_eq!(String::from_utf8_lossy(&got.body), *body, "{what} ({path})");
            }
            if status == &400 {
                assert!(got.is_none(), "{what} ({path}) was forwarded: {got:?}");
            }
            if what.contains("Content-Length") || what.contains("Content-Lengths") {
                let lengths: Vec<&(String, String)> = answer
                    .headers
                    .iter()
                    .filter(|(n, _)| n == "content-length")
                    .collect();
                assert_eq!(lengths.len(), 1, "{what} ({path}): {answer:?}");
                assert_eq!(lengths[0].1, "5", "{what} ({path}): {answer:?}");
                assert_eq!(answer.body, b"hello");
            }
        }
    }
}

/// A request framed twice (`Content-Length` and `Transfer-Encoding`) never reaches the upstream
/// with both. The fast path refuses it (400, and the connection closes); on hyper's path,
/// hyper's parser drops the length before weft sees the request, and it goes on chunked only,
/// as RFC 9112 §6.3 allows. No upstream ever reads it two ways.
#[test]
fn a_request_framed_twice_never_reaches_the_upstream_framed_twice() {
    let paths = Paths::start();
    let request = b"POST / HTTP/1.1\r\nHost: up\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let [(fast_got, fast_answer), (hyper_got, _)] = paths.both(request);
    assert!(fast_got.is_none(), "{fast_got:?}");
    assert!(fast_answer.unwrap().start.contains(" 400 "));
    let got = hyper_got.expect("forwarded chunked");
    assert_eq!(got.header("content-length"), None, "{got:?}");
    assert_eq!(got.header("transfer-encoding"), Some("chunked"), "{got:?}");
}

/// A chunked request body that turns out invalid after its head went upstream is the client's
/// fault: not a 502 blaming the upstream (`UR`), but a 400 where nothing was answered yet, with
/// the downstream protocol error's reason.
#[test]
fn an_invalid_chunked_body_is_the_clients_fault_on_both_paths() {
    let paths = Paths::start();
    // A large first chunk so the head is sent on before the bad size line comes.
    let mut request =
        b"POST /upload HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    request.extend_from_slice(format!("{:x}\r\n", 200_000).as_bytes());
    request.extend(std::iter::repeat_n(b'a', 200_000));
    request.extend_from_slice(b"\r\nzz-not-hex\r\n\r\n");
    for s in [&paths.fast, &paths.hyper] {
        let answer = exchange(s.bind, &request).expect("an answer");
        assert!(answer.start.contains(" 400 "), "{answer:?}");
        assert_eq!(answer.header("x-weft-reason"), Some("DPE"), "{answer:?}");
    }
}
