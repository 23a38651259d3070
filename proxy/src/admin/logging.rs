//! `/logging`, as Envoy's admin has it: `?level=L` sets every logger, `?<target>=L` or
//! `?paths=<target>:L,...` sets some, no parameter lists the filter in force. Levels are Envoy's
//! words (`warning`, `critical`, `off`, ...) or tracing's; a full `tracing` filter such as
//! `info,weft_proxy::http=debug` is taken as `level` too. An unknown level or a malformed target
//! changes nothing and says why: `tracing` alone would read a misspelt level as a target and
//! silently turn every log line off.

use std::sync::{Arc, Mutex};

/// Installs a filter (a `tracing_subscriber::EnvFilter` directive list) in the running logger.
pub type Apply = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// The filter in force, and how to change it.
pub struct LogFilter {
    current: Mutex<String>,
    apply: Apply,
}

/// The levels `/logging` accepts, Envoy's first.
const LEVELS: &str = "trace, debug, info, warning, error, critical, off";

impl LogFilter {
    /// `initial` is the filter the logger started with.
    pub fn new(initial: &str, apply: Apply) -> Self {
        Self {
            current: Mutex::new(initial.to_string()),
            apply,
        }
    }

    /// Handles a `/logging` query: the filter now in force, or why nothing changed.
    pub fn handle(&self, query: Option<&str>) -> Result<String, String> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if pairs.is_empty() {
            return Ok(format!("active filter: {current}\nlevels: {LEVELS}\n"));
        }
        let next = next_filter(&current, &pairs)?;
        (self.apply)(&next)?;
        *current = next;
        Ok(format!("active filter: {current}\n"))
    }
}

/// tracing's level for one of Envoy's or tracing's level words.
fn level(word: &str) -> Result<&'static str, String> {
    Ok(match word.trim().to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warn" | "warning" => "warn",
        "error" | "err" | "critical" => "error",
        "off" => "off",
        other => return Err(format!("unknown log level {other:?}; use one of {LEVELS}")),
    })
}

/// A target as `tracing` names one: a module path.
fn target(name: &str) -> Result<&str, String> {
    let name = name.trim();
    let fine = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_:-.".contains(&b));
    if fine {
        Ok(name)
    } else {
        Err(format!(
            "{name:?} is not a log target (a module path such as weft_proxy::http)"
        ))
    }
}

/// One directive, `level` or `target=level`, checked and normalised.
fn directive(text: &str) -> Result<String, String> {
    match text.split_once('=') {
        Some((t, l)) => Ok(format!("{}={}", target(t)?, level(l)?)),
        None => level(text).map(str::to_string),
    }
}

/// Sets `target` to `level` among `directives`, replacing what it had.
fn set_target(directives: &mut Vec<String>, t: &str, l: &str) -> Result<(), String> {
    let t = target(t)?;
    let l = level(l)?;
    directives.retain(|d| d.split_once('=').is_none_or(|(dt, _)| dt != t));
    directives.push(format!("{t}={l}"));
    Ok(())
}

/// The filter after a `/logging` query's `pairs`, applied in order to `current`.
fn next_filter(current: &str, pairs: &[(String, String)]) -> Result<String, String> {
    let mut directives: Vec<String> = current
        .split(',')
        .filter(|d| !d.trim().is_empty())
        .map(str::to_string)
        .collect();
    for (key, value) in pairs {
        match key.as_str() {
            "level" => {
                directives = value
                    .split(',')
                    .filter(|d| !d.trim().is_empty())
                    .map(directive)
                    .collect::<Result<_, _>>()?;
                if directives.is_empty() {
                    return Err(format!("level needs a value: one of {LEVELS}"));
                }
            }
            "paths" => {
                for pair in value.split(',').filter(|p| !p.trim().is_empty()) {
                    let Some((t, l)) = pair.rsplit_once(':') else {
                        return Err(format!("paths takes target:level pairs, not {pair:?}"));
                    };
                    set_target(&mut directives, t, l)?;
                }
            }
            t => set_target(&mut directives, t, value)?,
        }
    }
    Ok(directives.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(query: &str) -> Vec<(String, String)> {
        form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    #[test]
    fn queries_become_filters() {
        // (filter in force, query, filter after it)
        let cases = [
            ("info", "level=debug", "debug"),
            ("info", "level=warning", "warn"),
            ("info", "level=CRITICAL", "error"),
            ("info", "level=off", "off"),
            (
                "info",
                "level=info%2Cweft_proxy%3A%3Ahttp%3Ddebug",
                "info,weft_proxy::http=debug",
            ),
            (
                "info",
                "weft_proxy::xds=trace",
                "info,weft_proxy::xds=trace",
            ),
            (
                "info,weft_proxy::xds=trace",
                "weft_proxy::xds=warning",
                "info,weft_proxy::xds=warn",
            ),
            (
                "info",
                "paths=hyper:error,weft_proxy:debug",
                "info,hyper=error,weft_proxy=debug",
            ),
            ("warn,h2=debug", "level=info&h2=error", "info,h2=error"),
        ];
        for (current, query, want) in cases {
            assert_eq!(
                next_filter(current, &pairs(query)),
                Ok(want.to_string()),
                "{query}"
            );
        }
    }

    #[test]
    fn a_bad_query_changes_nothing_and_says_why() {
        let applied = Arc::new(Mutex::new(Vec::<String>::new()));
        let seen = applied.clone();
        let filter = LogFilter::new(
            "info",
            Arc::new(move |f: &str| {
                seen.lock().unwrap().push(f.to_string());
                Ok(())
            }),
        );
        for query in [
            "level=verbose",
            "level=",
            "paths=nolevel",
            "weft proxy=debug",
            "x=loud",
        ] {
            let err = filter.handle(Some(query)).unwrap_err();
            assert!(!err.is_empty(), "{query}");
        }
        assert!(applied.lock().unwrap().is_empty());
        assert!(filter.handle(None).unwrap().contains("active filter: info"));
        assert_eq!(
            filter.handle(Some("level=debug")).unwrap(),
            "active filter: debug\n"
        );
        assert_eq!(*applied.lock().unwrap(), ["debug"]);
    }
}
