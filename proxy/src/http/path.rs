//! Path normalization (Envoy's `normalize_path`, Istio's default `BASE`): dot segments removed as
//! RFC 3986 §5.2.4 says, `%2E` counting as a dot, before a request is routed. Without it
//! `/public/../admin` matches a `/public` route and reaches a backend that serves `/admin`.

/// Whether `path` has a dot segment (`.` or `..`, plain or percent-encoded) to remove. Cheap
/// enough for every request: most paths have no `.` after a `/`.
pub fn needs_normalizing(path: &str) -> bool {
    // A byte scan first (a substring search costs more to set up than a short path to read).
    let b = path.as_bytes();
    let candidate = b
        .iter()
        .zip(b.iter().skip(1))
        .any(|(&s, &next)| s == b'/' && (next == b'.' || next == b'%'));
    candidate && path.split('/').skip(1).any(|s| dots(s).is_some())
}

/// `path` without dot segments; `None` when it has none (or is not origin-form).
pub fn normalized(path: &str) -> Option<String> {
    if !path.starts_with('/') || !needs_normalizing(path) {
        return None;
    }
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    for (i, seg) in segments.iter().enumerate() {
        match dots(seg) {
            Some(1) => {
                // `/a/.` is `/a/`: the directory itself.
                if i == last {
                    out.push("");
                }
            }
            Some(_) => {
                out.pop();
                if i == last {
                    out.push("");
                }
            }
            None => out.push(seg),
        }
    }
    Some(format!("/{}", out.join("/")))
}

/// 1 for a `.` segment, 2 for `..`, each dot plain or `%2E`; `None` for any other segment.
fn dots(seg: &str) -> Option<u8> {
    let b = seg.as_bytes();
    let dot = |at: usize| -> Option<usize> {
        match b.get(at)? {
            b'.' => Some(1),
            b'%' if b.get(at + 1) == Some(&b'2') && matches!(b.get(at + 2), Some(b'e' | b'E')) => {
                Some(3)
            }
            _ => None,
        }
    };
    let first = dot(0)?;
    if first == b.len() {
        return Some(1);
    }
    let second = dot(first)?;
    (first + second == b.len()).then_some(2)
}

/// Removes dot segments from `uri`'s path, keeping its query; `Err` when the result is no URI.
pub(crate) fn normalize(uri: &mut http::Uri) -> Result<(), ()> {
    let Some(path) = normalized(uri.path()) else {
        return Ok(());
    };
    let path_and_query = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut parts = std::mem::take(uri).into_parts();
    parts.path_and_query = Some(path_and_query.parse().map_err(|_| ())?);
    *uri = http::Uri::from_parts(parts).map_err(|_| ())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_removed_as_rfc_3986_says() {
        let cases: &[(&str, Option<&str>)] = &[
            ("/a/b", None),
            ("/", None),
            ("/a/.hidden/..x/x..", None),
            ("/v1.2/file.txt", None),
            ("/public/../admin", Some("/admin")),
            ("/a/./b", Some("/a/b")),
            ("/a/b/..", Some("/a/")),
            ("/a/b/.", Some("/a/b/")),
            ("/..", Some("/")),
            ("/../../etc/passwd", Some("/etc/passwd")),
            ("/a/%2e%2E/admin", Some("/admin")),
            ("/a/.%2e/admin", Some("/admin")),
            ("/a/%2e/b", Some("/a/b")),
            ("/a//../b", Some("/a/b")),
            ("*", None),
        ];
        for (path, want) in cases {
            assert_eq!(normalized(path).as_deref(), *want, "{path}");
            assert_eq!(needs_normalizing(path), want.is_some(), "{path}");
        }
    }
}
