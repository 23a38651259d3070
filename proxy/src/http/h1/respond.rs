//! Writing a response held as a header map (an HTTP/2 upstream's) to an HTTP/1.1 client as
//! bytes, by the rules hyper's server keeps, so a client reads the same head whichever path
//! carried its request: the status line, the fields in the map's order, the body's framing
//! (its `content-length`, `content-length: 0` for an empty body, else chunked), a `date` when
//! there is none, `connection: close` when the connection ends after it. Trailers go out only
//! where hyper's server sends them: a chunked body, a client that said `te: trailers`, and only
//! the fields the response's `trailer` field declared.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderName};
use http::{HeaderMap, StatusCode};

/// How the body that follows a head is framed on the wire.
#[derive(Debug, PartialEq)]
pub enum Framing {
    /// No body at all (HEAD, 204, 304), or an empty one.
    None,
    /// As many bytes as the head's `content-length` says, as they come.
    Length,
    /// Chunked; trailers written only for these declared names, when the client takes them.
    Chunked(Option<Vec<HeaderName>>),
}

/// The request a response answers, as far as its head depends on it.
#[derive(Clone, Copy, Debug)]
pub struct Asked {
    /// It was a HEAD: no body follows, whatever the head says.
    pub head: bool,
    /// It said `te: trailers`.
    pub trailers: bool,
    /// The connection closes after this response.
    pub close: bool,
}

/// Writes the head of a response with `status` and `headers` (hop-by-hop fields already gone,
/// one `content-length` at most) into `out`; `end`: no body follows it (HTTP/2's END_STREAM on
/// the headers). Says how the body goes after it.
pub fn head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    end: bool,
    asked: Asked,
) -> Framing {
    let bodiless = matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED)
        || status.is_informational();
    // hyper's `can_chunked` (and `can_have_body`): a body may follow this head at all.
    let body = !asked.head && !bodiless;
    if status == StatusCode::OK {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        let reason = status.canonical_reason().unwrap_or("<none>");
        out.extend_from_slice(reason.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let (mut length, mut declared, mut dated) = (false, None::<Vec<HeaderName>>, false);
    for (name, value) in headers {
        match *name {
            // With no body to come, only a HEAD's is kept: it tells the size a GET would get.
            header::CONTENT_LENGTH if end && !asked.head => continue,
            header::CONTENT_LENGTH => length = true,
            header::DATE => dated = true,
            header::TRAILER if !body => continue,
            header::TRAILER => {
                let names = value
                    .to_str()
                    .unwrap_or_default()
                    .split(',')
                    .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok());
                // Several values go on one line, as hyper writes them.
                if let Some(d) = &mut declared {
                    d.extend(names);
                    out.truncate(out.len() - 2);
                    out.extend_from_slice(b", ");
                    out.extend_from_slice(value.as_bytes());
                    out.extend_from_slice(b"\r\n");
                    continue;
                }
                declared = Some(names.collect());
            }
            _ => {}
        }
        line(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if asked.close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    let framing = match (length, end) {
        (true, _) => Framing::Length,
        (false, true) => {
            if body {
                out.extend_from_slice(b"content-length: 0\r\n");
            }
            Framing::None
        }
        (false, false) if body => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            Framing::Chunked(declared.filter(|_| asked.trailers))
        }
        (false, false) => Framing::None,
    };
    if !dated {
        out.extend_from_slice(b"date: ");
        date(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    match body {
        true => framing,
        false => Framing::None,
    }
}

/// The end of a chunked body: the last chunk, then the trailers that may go (see [`Framing`]).
pub fn end_chunked(
    out: &mut Vec<u8>,
    trailers: Option<&HeaderMap>,
    allowed: Option<&[HeaderName]>,
) {
    out.extend_from_slice(b"0\r\n");
    if let (Some(trailers), Some(allowed)) = (trailers, allowed) {
        for (name, value) in trailers {
            if allowed.contains(name) && valid_trailer(name) {
                line(out, name.as_str().as_bytes(), value.as_bytes());
            }
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// A chunk's size line, before its data.
pub fn chunk_size(out: &mut Vec<u8>, len: usize) {
    let _ = std::io::Write::write_fmt(out, format_args!("{len:X}\r\n"));
}

/// Fields a trailer may not carry (hyper's list, after RFC 9110 §6.5.1).
fn valid_trailer(name: &HeaderName) -> bool {
    use header::*;
    !matches!(
        *name,
        AUTHORIZATION
            | CACHE_CONTROL
            | CONTENT_ENCODING
            | CONTENT_LENGTH
            | CONTENT_RANGE
            | CONTENT_TYPE
            | HOST
            | MAX_FORWARDS
            | SET_COOKIE
            | TRAILER
            | TRANSFER_ENCODING
            | TE
    )
}

fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

thread_local! {
    /// The current second's `Date` value, formatted once per second per thread.
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((0, [0; 29])) };
}

/// Appends the current time as an HTTP date (RFC 9110 §5.6.7).
fn date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, text)| {
        if *at != secs {
            let formatted = httpdate::fmt_http_date(now);
            if formatted.len() == text.len() {
                text.copy_from_slice(formatted.as_bytes());
                *at = secs;
            }
        }
        out.extend_from_slice(text);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::headers::tests::map;

    /// Status, response fields, no body to follow, the request, the head written, the framing.
    type Case<'a> = (
        u16,
        &'a [(&'static str, &'static str)],
        bool,
        Asked,
        &'a str,
        Framing,
    );

    const ASKED: Asked = Asked {
        head: false,
        trailers: false,
        close: false,
    };

    /// Each shape as hyper's server writes it (checked against it in
    /// `tests/tests/http_rules.rs`); a `date` is given so the bytes are fixed.
    #[test]
    fn heads_are_framed_as_hyper_frames_them() {
        let d = ("date", "Mon, 07 Dec 2026 18:00:00 GMT");
        let dated = "date: Mon, 07 Dec 2026 18:00:00 GMT\r\n";
        let head_req = Asked {
            head: true,
            ..ASKED
        };
        let closing = Asked {
            close: true,
            ..ASKED
        };
        let with_te = Asked {
            trailers: true,
            ..ASKED
        };
        #[rustfmt::skip]
        let cases: &[Case] = &[
            (200, &[("content-length", "5"), d], false, ASKED,
             "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n{d}\r\n", Framing::Length),
            (200, &[d], false, ASKED,
             "HTTP/1.1 200 OK\r\n{d}transfer-encoding: chunked\r\n\r\n", Framing::Chunked(None)),
            (200, &[d], true, ASKED,
             "HTTP/1.1 200 OK\r\n{d}content-length: 0\r\n\r\n", Framing::None),
            (200, &[d], true, head_req, "HTTP/1.1 200 OK\r\n{d}\r\n", Framing::None),
            (200, &[("content-length", "5"), d], true, head_req,
             "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n{d}\r\n", Framing::None),
            (204, &[d], true, ASKED, "HTTP/1.1 204 No Content\r\n{d}\r\n", Framing::None),
            (304, &[("content-length", "5"), d], true, ASKED,
             "HTTP/1.1 304 Not Modified\r\n{d}\r\n", Framing::None),
            (299, &[d], true, closing,
             "HTTP/1.1 299 <none>\r\n{d}connection: close\r\ncontent-length: 0\r\n\r\n", Framing::None),
            (200, &[("trailer", "grpc-status, x-t"), d], false, with_te,
             "HTTP/1.1 200 OK\r\ntrailer: grpc-status, x-t\r\n{d}transfer-encoding: chunked\r\n\r\n",
             Framing::Chunked(Some(vec![HeaderName::from_static("grpc-status"), HeaderName::from_static("x-t")]))),
            (200, &[("trailer", "x-t"), d], false, ASKED,
             "HTTP/1.1 200 OK\r\ntrailer: x-t\r\n{d}transfer-encoding: chunked\r\n\r\n", Framing::Chunked(None)),
            (304, &[("trailer", "x-t"), d], true, ASKED, "HTTP/1.1 304 Not Modified\r\n{d}\r\n", Framing::None),
            (200, &[("trailer", "x-a"), ("trailer", "x-b"), d], false, with_te,
             "HTTP/1.1 200 OK\r\ntrailer: x-a, x-b\r\n{d}transfer-encoding: chunked\r\n\r\n",
             Framing::Chunked(Some(vec![HeaderName::from_static("x-a"), HeaderName::from_static("x-b")]))),
        ];
        for (status, headers, end, asked, want, framing) in cases {
            let mut out = Vec::new();
            let status = StatusCode::from_u16(*status).unwrap();
            let got = head(&mut out, status, &map(headers), *end, *asked);
            let want = want.replace("{d}", dated);
            assert_eq!(String::from_utf8(out).unwrap(), want);
            assert_eq!(&got, framing, "{want}");
        }
    }

    #[test]
    fn a_missing_date_is_added_and_trailers_are_filtered() {
        let mut out = Vec::new();
        head(&mut out, StatusCode::OK, &HeaderMap::new(), true, ASKED);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("\r\ndate: ") && text.ends_with(" GMT\r\n\r\n"),
            "{text}"
        );
        let mut out = Vec::new();
        let trailers = map(&[("x-t", "1"), ("content-type", "x"), ("x-other", "2")]);
        let allowed = [
            HeaderName::from_static("x-t"),
            HeaderName::from_static("content-type"),
        ];
        end_chunked(&mut out, Some(&trailers), Some(&allowed));
        assert_eq!(out, b"0\r\nx-t: 1\r\n\r\n");
        out.clear();
        end_chunked(&mut out, Some(&trailers), None);
        assert_eq!(out, b"0\r\n\r\n");
    }
}
