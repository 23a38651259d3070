//! A request head the fast path parsed, as routing reads it: the same `RequestView` hyper's
//! requests are routed by, over the bytes and spans of the head, nothing copied.

use crate::config::route::RequestView;
use crate::http::h1::parse::{RequestHead, Span};

/// A request head as routing sees it.
pub(super) struct View<'a> {
    pub(super) buf: &'a [u8],
    pub(super) head: &'a RequestHead,
    pub(super) headers: &'a [Span],
}

impl View<'_> {
    /// The parser checked these parts are ASCII.
    pub(super) fn str(&self, r: &std::ops::Range<usize>) -> &str {
        std::str::from_utf8(&self.buf[r.clone()]).unwrap_or_default()
    }

    fn target(&self) -> (&str, Option<&str>) {
        let t = self.str(&self.head.target);
        match t.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (t, None),
        }
    }
}

impl RequestView for View<'_> {
    fn method(&self) -> &str {
        self.str(&self.head.method)
    }

    fn path(&self) -> &str {
        self.target().0
    }

    fn query(&self) -> Option<&str> {
        self.target().1
    }

    fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |s| self.buf[s.name.clone()].eq_ignore_ascii_case(name.as_bytes()))
            .map(|s| &self.buf[s.value.clone()])
            // What `HeaderValue::to_str` accepts on hyper's path, so both route alike.
            .filter(|v| v.iter().all(|b| *b == b'\t' || (0x20..0x7f).contains(b)))
            .filter_map(|v| std::str::from_utf8(v).ok())
    }
}
