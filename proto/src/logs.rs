//! How both binaries write their logs: to stderr, one event a line, as text (coloured only on
//! a terminal, so a log file or a container log gets no escape codes) or as JSON (one object a
//! line, what log collectors in Kubernetes parse).

use std::io::IsTerminal;

use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// The form of a log line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// Human-readable text.
    #[default]
    Text,
    /// One JSON object a line.
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("{other:?}: the log format is text or json")),
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

/// The layer that writes log lines in `format` to stderr.
pub fn layer<S>(format: Format) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        Format::Text => Box::new(fmt.with_ansi(std::io::stderr().is_terminal())),
        Format::Json => Box::new(
            fmt.json()
                .with_current_span(true)
                .with_span_list(false)
                .flatten_event(true),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_read_back_from_their_names() {
        for f in [Format::Text, Format::Json] {
            assert_eq!(f.to_string().parse::<Format>(), Ok(f));
        }
        assert!("yaml".parse::<Format>().is_err());
    }
}
