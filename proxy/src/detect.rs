//! Protocol detection on the first bytes of a connection, without consuming them.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

/// What a connection's first bytes say it speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detected {
    /// An HTTP/1.x request line.
    Http1,
    /// The HTTP/2 connection preface.
    Http2,
    /// A TLS ClientHello: opaque to the proxy.
    Tls,
    /// Anything else: opaque TCP.
    Opaque,
    /// Nothing decisive within the timeout (server-first protocols such as MySQL send nothing
    /// first): opaque TCP, unless the listener says to close such connections.
    TimedOut,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];

/// Classifies a prefix; `None` while more bytes could change the answer.
pub fn classify(buf: &[u8]) -> Option<Detected> {
    if buf.is_empty() {
        return None;
    }
    if buf[0] == 0x16 {
        return match buf.get(1) {
            None => None,
            Some(0x03) => Some(Detected::Tls),
            Some(_) => Some(Detected::Opaque),
        };
    }
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return (n == H2_PREFACE.len()).then_some(Detected::Http2);
    }
    let mut undecided = false;
    for m in METHODS {
        let n = buf.len().min(m.len());
        if buf[..n] == m[..n] {
            if n == m.len() {
                // A common method is HTTP without waiting for the rest of its line (a long URL
                // may come slowly), unless the whole line is here and is no request line:
                // Redis' inline `GET key`.
                return Some(request_line(buf).unwrap_or(Detected::Http1));
            }
            undecided = true;
        }
    }
    if undecided {
        return None;
    }
    // Any other method (WebDAV's PROPFIND, M-SEARCH, ...): a whole request line, `TOKEN target
    // HTTP/1.x`, so that text protocols whose commands are also words and spaces (Redis' inline
    // `KEYS *`) stay opaque.
    let token = buf
        .iter()
        .take_while(|b| b.is_ascii_uppercase() || **b == b'-')
        .count();
    if token == 0 || buf.get(token).is_some_and(|b| *b != b' ') {
        return Some(Detected::Opaque);
    }
    // Not a whole line yet: wait for more, up to what `detect` peeks at.
    request_line(buf)
}

/// Whether the first line, if it is all here, is an HTTP/1 request line (`... HTTP/1.x`).
fn request_line(buf: &[u8]) -> Option<Detected> {
    let end = buf.windows(2).position(|w| w == b"\r\n")?;
    let line = &buf[..end];
    let http = line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0");
    Some(if http {
        Detected::Http1
    } else {
        Detected::Opaque
    })
}

/// The most bytes detection looks at: room for the request line of an uncommon method (the
/// common ones need 8 bytes).
pub const PEEK_BYTES: usize = 256;

/// The longest wait between two looks at a prefix that has not decided yet.
const MAX_PAUSE: Duration = Duration::from_millis(32);

/// Peeks at `stream` until its protocol is known or `timeout` passes (`None`: until the client
/// sends enough, or closes).
pub async fn detect(stream: &TcpStream, timeout: Option<Duration>) -> Detected {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut buf = [0u8; PEEK_BYTES];
    // A peek leaves the socket readable, so the rest of a prefix can only be waited for by
    // looking again: soon (most prefixes split across two segments complete within a
    // millisecond), then less and less often, so a client that sends one byte and stalls costs
    // a few dozen wake-ups a second, not a thousand.
    let mut pause = Duration::from_millis(1);
    loop {
        let peeked = match deadline {
            Some(d) => match tokio::time::timeout_at(d, stream.peek(&mut buf)).await {
                Ok(r) => r,
                Err(_) => return Detected::TimedOut,
            },
            None => stream.peek(&mut buf).await,
        };
        let n = match peeked {
            Ok(0) | Err(_) => return Detected::Opaque,
            Ok(n) => n,
        };
        if let Some(d) = classify(&buf[..n]) {
            return d;
        }
        if n == buf.len() {
            return Detected::Opaque;
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return Detected::TimedOut;
        }
        // Part of a prefix has arrived; give the rest a moment.
        let wake = now + pause;
        tokio::time::sleep_until(deadline.map_or(wake, |d| wake.min(d))).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

#[cfg(test)]
mod tests {
    use super::{Detected::*, classify};

    #[test]
    fn classifies_prefixes() {
        let cases: &[(&[u8], Option<super::Detected>)] = &[
            (b"GET / HTTP/1.1\r\n", Some(Http1)),
            (b"GE", None),
            (b"POST /x", Some(Http1)),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Some(Http2)),
            (b"PRI * HT", None),
            (b"\x16\x03\x01\x02\x00", Some(Tls)),
            (b"\x16", None),
            (b"\x4a\x00\x00\x00\x0a", Some(Opaque)),
            (b"SSH-2.0-OpenSSH", Some(Opaque)),
            (b"GET/", Some(Opaque)),
            (b"PROPFIND /dav HTTP/1.1\r\n", Some(Http1)),
            (b"M-SEARCH * HTTP/1.1\r\n", Some(Http1)),
            (b"PURGE http://x/ HTTP/1.1\r\n", Some(Http1)),
            (b"PURGE http://x/ HT", None),
            (b"PROPFI", None),
            (b"SET key value\r\n", Some(Opaque)),
            (b"KEYS *\r\n", Some(Opaque)),
            (b"PING\r\n", Some(Opaque)),
            (b"*1\r\n$4\r\nPING\r\n", Some(Opaque)),
            // Redis' inline commands that start like HTTP methods, whole lines.
            (b"GET key\r\n", Some(Opaque)),
            (b"DELETE key\r\n", Some(Opaque)),
            (b"GET /a-long-url-still-arriving", Some(Http1)),
        ];
        for (bytes, want) in cases {
            assert_eq!(classify(bytes), *want, "{bytes:?}");
        }
    }
}
