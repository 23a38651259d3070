//! Chunked coding (RFC 9112 §7.1): where a body ends while its bytes pass through unchanged, so
//! the fast path knows when a response is complete without decoding and re-encoding it; and,
//! for a response sent on in another framing (to hyper's side), its data and trailers.

/// The body is not valid chunked coding.
#[derive(Clone, Debug, PartialEq)]
pub struct Malformed;

#[derive(Clone, Copy, Debug, Default, PartialEq)]
enum State {
    /// Before a chunk size's first hex digit.
    #[default]
    Size,
    /// After at least one.
    SizeDigits,
    /// Whitespace after the size (RFC 9112's BWS), before `;` or the line's end.
    SizeSpace,
    /// Chunk extensions up to the line's CR.
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line, or of the final empty line.
    TrailerStart,
    /// In a trailer field's name, then its value.
    TrailerName,
    TrailerValue,
    TrailerLf,
    EndLf,
    Done,
}

/// Most bytes of chunk extensions on one line, and of trailers, as hyper's limits: past them the
/// peer is not sending a body but a stream of metadata.
const MAX_EXTENSION: usize = 16 * 1024;
const MAX_TRAILERS: usize = crate::http::MAX_HEADER_BYTES;

/// Scanner state carried from one read to the next.
#[derive(Debug, Default)]
pub struct Chunked {
    state: State,
    /// Size of the chunk being read, then what is left of it.
    size: u64,
    /// Bytes of the current line's extensions, or of all trailers.
    meta: usize,
}

/// A token character (RFC 9110 §5.6.2), as in a field name.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A character allowed in a field value or extension: visible, obs-text, space or tab.
fn is_text(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

impl Chunked {
    /// Scans the next bytes of the body. `Some(n)`: the body ends after the first `n` of them;
    /// `None`: all of them belong to it and more are needed. Anything but strict chunked coding
    /// (RFC 9112 §7.1, bare LFs and folded trailers included) is refused: bytes are forwarded as
    /// they are, so the next hop must read them exactly as this scanner did.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, Malformed> {
        let mut at = 0;
        loop {
            at += self.decode(&bytes[at..], None)?.0;
            if self.state == State::Done {
                return Ok(Some(at));
            }
            if at == bytes.len() {
                return Ok(None);
            }
        }
    }

    /// Whether the last chunk and the trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Reads the next piece of `bytes`: how many were read, and the range of chunk data among
    /// them, which ends where the reading stopped. Trailer lines are copied into `trailers`, if
    /// given, each ending in CRLF. Stops after data, and at the end of the body.
    pub fn decode(
        &mut self,
        bytes: &[u8],
        mut trailers: Option<&mut Vec<u8>>,
    ) -> Result<(usize, Option<std::ops::Range<usize>>), Malformed> {
        let mut i = 0;
        while i < bytes.len() {
            if self.state == State::Data {
                // Chunk data is skipped whole, not looked at byte by byte.
                let take = self.size.min((bytes.len() - i) as u64);
                self.size -= take;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                let data = i..i + take as usize;
                return Ok((data.end, Some(data)));
            }
            let b = bytes[i];
            i += 1;
            self.state = match (self.state, b) {
                (State::Size | State::SizeDigits, _) if b.is_ascii_hexdigit() => {
                    let digit = (b as char).to_digit(16).unwrap_or_default();
                    if self.size > u64::MAX >> 4 {
                        return Err(Malformed);
                    }
                    self.size = self.size << 4 | u64::from(digit);
                    State::SizeDigits
                }
                (State::SizeDigits | State::SizeSpace, b' ' | b'\t') => State::SizeSpace,
                (State::SizeDigits | State::SizeSpace, b';') => {
                    self.meta = 0;
                    State::Extension
                }
                (State::SizeDigits | State::SizeSpace | State::Extension, b'\r') => State::SizeLf,
                (State::Extension, _) if is_text(b) => {
                    self.meta += 1;
                    if self.meta > MAX_EXTENSION {
                        return Err(Malformed);
                    }
                    State::Extension
                }
                (State::SizeLf, b'\n') if self.size == 0 => {
                    self.meta = 0;
                    State::TrailerStart
                }
                (State::SizeLf, b'\n') => State::Data,
                (State::DataCr, b'\r') => State::DataLf,
                (State::DataLf, b'\n') => State::Size,
                (State::TrailerStart, b'\r') => State::EndLf,
                (State::TrailerStart | State::TrailerName, _) if is_tchar(b) => State::TrailerName,
                (State::TrailerName, b':') => State::TrailerValue,
                (State::TrailerValue, b'\r') => State::TrailerLf,
                (State::TrailerValue, _) if is_text(b) => State::TrailerValue,
                (State::TrailerLf, b'\n') => State::TrailerStart,
                (State::EndLf, b'\n') => {
                    self.state = State::Done;
                    return Ok((i, None));
                }
                _ => return Err(Malformed),
            };
            // A trailer line's bytes, its CR and its LF (not the final empty line's).
            let in_trailer =
                matches!(
                    self.state,
                    State::TrailerName | State::TrailerValue | State::TrailerLf
                ) || (self.state == State::TrailerStart && b == b'\n' && self.meta > 0);
            if in_trailer && let Some(t) = trailers.as_deref_mut() {
                t.push(b);
            }
            if matches!(self.state, State::TrailerName | State::TrailerValue) {
                self.meta += 1;
                if self.meta > MAX_TRAILERS {
                    return Err(Malformed);
                }
            }
        }
        Ok((i, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where the body ends, if it does, or why it is not chunked coding.
    type Scan = Result<Option<usize>, Malformed>;

    /// Feeds `body` in pieces of `step` bytes; where the body ends, if it does.
    fn scan(body: &[u8], step: usize) -> Scan {
        let mut c = Chunked::default();
        let mut seen = 0;
        for piece in body.chunks(step) {
            if let Some(n) = c.feed(piece)? {
                return Ok(Some(seen + n));
            }
            seen += piece.len();
        }
        Ok(None)
    }

    #[test]
    fn finds_the_end_of_a_chunked_body_however_it_is_split() {
        let cases: &[(&[u8], Scan)] = &[
            (b"0\r\n\r\n", Ok(Some(5))),
            (b"5\r\nhello\r\n0\r\n\r\nNEXT", Ok(Some(15))),
            (b"A;name=val\r\n0123456789\r\n0\r\n\r\n", Ok(Some(29))),
            (b"3 \r\nabc\r\n0\r\n\r\n", Ok(Some(14))),
            (b"3 ; a=\"b c\"\r\nabc\r\n0\r\n\r\n", Ok(Some(23))),
            (
                b"3\r\nabc\r\n0\r\ngrpc-status: 0\r\nx: y\r\n\r\n",
                Ok(Some(35)),
            ),
            (b"1a\r\n", Ok(None)),
            (b"5\r\nhello\r\n", Ok(None)),
            (b"5\r\nhello\r\n0\r\n\r", Ok(None)),
            // Not strict chunked coding: no digits, junk after the size, data overrunning its
            // size, bare LFs, control bytes in an extension, overflow, a trailer without a name
            // or colon, a folded trailer line.
            (b"3 x\r\nabc\r\n0\r\n\r\n", Err(Malformed)),
            (b"3 1\r\nabc\r\n0\r\n\r\n", Err(Malformed)),
            (b"3;a=\x00\r\nabc\r\n0\r\n\r\n", Err(Malformed)),
            (b"0\r\n \r\n\r\n", Err(Malformed)),
            (b"0\r\nGET /admin HTTP/1.1\r\n\r\n", Err(Malformed)),
            (b"0\r\nx: y\r\n folded\r\n\r\n", Err(Malformed)),
            (b"\r\n", Err(Malformed)),
            (b"x\r\n", Err(Malformed)),
            (b"3\r\nabcd\r\n", Err(Malformed)),
            (b"3\nabc\r\n", Err(Malformed)),
            (b"0\r\nx: y\n\r\n", Err(Malformed)),
            (b"10000000000000000\r\n", Err(Malformed)),
        ];
        for (body, want) in cases {
            for step in [1, 2, 3, 7, body.len()] {
                assert_eq!(
                    scan(body, step),
                    *want,
                    "{:?} in pieces of {step}",
                    String::from_utf8_lossy(body)
                );
            }
        }
    }

    /// Decodes `body` fed in pieces of `step` bytes: its data, its trailer lines, and whether
    /// it ended.
    fn decoded(body: &[u8], step: usize) -> Result<(Vec<u8>, Vec<u8>, bool), Malformed> {
        let (mut c, mut data, mut trailers) = (Chunked::default(), Vec::new(), Vec::new());
        for piece in body.chunks(step) {
            let mut at = 0;
            while at < piece.len() && !c.is_done() {
                let (read, got) = c.decode(&piece[at..], Some(&mut trailers))?;
                if let Some(r) = got {
                    data.extend_from_slice(&piece[at..][r]);
                }
                at += read;
            }
        }
        Ok((data, trailers, c.is_done()))
    }

    #[test]
    fn decodes_data_and_trailers_however_the_body_is_split() {
        type Want = Result<(&'static [u8], &'static [u8], bool), Malformed>;
        let cases: &[(&[u8], Want)] = &[
            (b"0\r\n\r\n", Ok((b"", b"", true))),
            (b"5\r\nhello\r\n0\r\n\r\n", Ok((b"hello", b"", true))),
            (
                b"3;x=y\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
                Ok((b"abcde", b"", true)),
            ),
            (
                b"3\r\nabc\r\n0\r\ngrpc-status: 0\r\nx: y\r\n\r\n",
                Ok((b"abc", b"grpc-status: 0\r\nx: y\r\n", true)),
            ),
            (b"5\r\nhel", Ok((b"hel", b"", false))),
            (b"3\r\nabcd\r\n", Err(Malformed)),
        ];
        for (body, want) in cases {
            for step in [1, 2, 5, body.len()] {
                let want = want
                    .clone()
                    .map(|(d, t, done)| (d.to_vec(), t.to_vec(), done));
                assert_eq!(
                    decoded(body, step),
                    want,
                    "{:?} in pieces of {step}",
                    String::from_utf8_lossy(body)
                );
            }
        }
    }
}
