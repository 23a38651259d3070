//! Header edits a route makes to the requests it forwards and the responses it returns: Envoy's
//! `request_headers_to_add` / `_to_remove` and their response twins, which Gateway API's
//! `RequestHeaderModifier` and `ResponseHeaderModifier` become. Names and values are parsed when
//! the config arrives; a request only applies them.

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;

/// What to do when the header is already there (Envoy's `HeaderAppendAction`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Append {
    /// Add a value, after those already there (Gateway API's `add`).
    AppendIfExistsOrAdd,
    /// Add only when absent.
    AddIfAbsent,
    /// Replace every value, or add (Gateway API's `set`).
    OverwriteIfExistsOrAdd,
    /// Replace every value; add nothing when absent.
    OverwriteIfExists,
}

/// One header to put.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Put {
    /// Name.
    pub name: HeaderName,
    /// Value.
    pub value: HeaderValue,
    /// When the header exists already.
    pub append: Append,
}

/// Edits to one direction's headers: removals first, then what is put, in order (Envoy's order).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Edits {
    /// Removed.
    pub remove: Vec<HeaderName>,
    /// Added or replaced.
    pub put: Vec<Put>,
}

impl Edits {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.put.is_empty()
    }

    /// These edits followed by `later`'s, as one set: applying it is applying both in turn. A
    /// header `later` removes loses what these put (it would be removed after), and is removed
    /// first instead, so removals still come before puts.
    pub fn then(&self, later: &Edits) -> Edits {
        let mut remove = self.remove.clone();
        for n in &later.remove {
            if !remove.contains(n) {
                remove.push(n.clone());
            }
        }
        let mut put: Vec<Put> = self
            .put
            .iter()
            .filter(|p| !later.remove.contains(&p.name))
            .cloned()
            .collect();
        put.extend(later.put.iter().cloned());
        Edits { remove, put }
    }

    /// Applies the edits to `headers`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for p in &self.put {
            match p.append {
                Append::AppendIfExistsOrAdd => {
                    headers.append(p.name.clone(), p.value.clone());
                }
                Append::AddIfAbsent => {
                    if !headers.contains_key(&p.name) {
                        headers.insert(p.name.clone(), p.value.clone());
                    }
                }
                Append::OverwriteIfExistsOrAdd => {
                    headers.insert(p.name.clone(), p.value.clone());
                }
                Append::OverwriteIfExists => {
                    if headers.contains_key(&p.name) {
                        headers.insert(p.name.clone(), p.value.clone());
                    }
                }
            }
        }
    }
}

/// A route's edits, both ways.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HeaderEdits {
    /// To the request going upstream.
    pub request: Edits,
    /// To the response going back.
    pub response: Edits,
}

impl HeaderEdits {
    /// Whether there is nothing to do either way.
    pub fn is_empty(&self) -> bool {
        self.request.is_empty() && self.response.is_empty()
    }

    /// These edits followed by `later`'s, both ways (Envoy applies a weighted cluster's before
    /// its route's).
    pub fn then(&self, later: &HeaderEdits) -> HeaderEdits {
        HeaderEdits {
            request: self.request.then(&later.request),
            response: self.response.then(&later.response),
        }
    }
}

impl Serialize for Edits {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Shown<'a> {
            remove: Vec<&'a str>,
            put: Vec<(&'a str, &'a str, Append)>,
        }
        Shown {
            remove: self.remove.iter().map(HeaderName::as_str).collect(),
            put: self
                .put
                .iter()
                .map(|p| {
                    (
                        p.name.as_str(),
                        p.value.to_str().unwrap_or("<binary>"),
                        p.append,
                    )
                })
                .collect(),
        }
        .serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(name: &'static str, value: &'static str, append: Append) -> Put {
        Put {
            name: HeaderName::from_static(name),
            value: HeaderValue::from_static(value),
            append,
        }
    }

    #[test]
    fn edits_apply_as_envoy_orders_them() {
        let mut h = HeaderMap::new();
        h.append("a", HeaderValue::from_static("1"));
        h.append("b", HeaderValue::from_static("1"));
        h.append("c", HeaderValue::from_static("1"));
        h.append("gone", HeaderValue::from_static("1"));
        let edits = Edits {
            remove: vec![HeaderName::from_static("gone")],
            put: vec![
                put("a", "2", Append::AppendIfExistsOrAdd),
                put("b", "2", Append::OverwriteIfExistsOrAdd),
                put("c", "2", Append::AddIfAbsent),
                put("d", "2", Append::AddIfAbsent),
                put("e", "2", Append::OverwriteIfExists),
                put("gone", "back", Append::AppendIfExistsOrAdd),
            ],
        };
        edits.apply(&mut h);
        let all =
            |n: &str| -> Vec<&str> { h.get_all(n).iter().map(|v| v.to_str().unwrap()).collect() };
        assert_eq!(all("a"), ["1", "2"]);
        assert_eq!(all("b"), ["2"]);
        assert_eq!(all("c"), ["1"]);
        assert_eq!(all("d"), ["2"]);
        assert!(all("e").is_empty());
        assert_eq!(all("gone"), ["back"]);
    }

    #[test]
    fn edits_then_edits_is_the_same_as_applying_both_in_turn() {
        let names = ["a", "b", "c"];
        let puts = |v: &'static str| {
            [
                put("a", v, Append::AppendIfExistsOrAdd),
                put("b", v, Append::OverwriteIfExistsOrAdd),
                put("c", v, Append::AddIfAbsent),
                put("b", v, Append::OverwriteIfExists),
            ]
        };
        // Every split of removals and puts between the two sets, over a few starting maps.
        for mask in 0u32..(1 << 14) {
            let pick = |bits: u32, from: &[Put]| -> Vec<Put> {
                from.iter()
                    .enumerate()
                    .filter(|(i, _)| bits & (1 << i) != 0)
                    .map(|(_, p)| p.clone())
                    .collect()
            };
            let rm = |bits: u32| -> Vec<HeaderName> {
                names
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| bits & (1 << i) != 0)
                    .map(|(_, n)| HeaderName::from_static(n))
                    .collect()
            };
            let first = Edits {
                remove: rm(mask & 0b111),
                put: pick(mask >> 3 & 0b1111, &puts("1")),
            };
            let later = Edits {
                remove: rm(mask >> 7 & 0b111),
                put: pick(mask >> 10 & 0b1111, &puts("2")),
            };
            for start in [&[][..], &["a"][..], &["b", "c"][..]] {
                let mut h = HeaderMap::new();
                for n in start {
                    h.append(*n, HeaderValue::from_static("0"));
                }
                let mut both = h.clone();
                first.apply(&mut both);
                later.apply(&mut both);
                first.then(&later).apply(&mut h);
                assert_eq!(h, both, "{first:?} then {later:?} on {start:?}");
            }
        }
    }
}
