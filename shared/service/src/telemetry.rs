//! Logs: JSON lines for machines, readable lines in a terminal.
//!
//! Every request runs in a span carrying its `request_id` (from the
//! `x-request-id` header, or a new UUID), so every line logged while handling
//! it names the request.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber with `filter` (`HENDU_LOG`). A malformed
/// filter falls back to `info` with a warning rather than silencing the logs.
pub fn init(filter: &str) {
    let (filter, bad) = match EnvFilter::try_new(filter) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info"), Some(e.to_string())),
    };
    let registry = tracing_subscriber::registry().with(filter);
    let result = if std::io::stderr().is_terminal() {
        registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init()
    } else {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init()
    };
    if result.is_ok()
        && let Some(bad) = bad
    {
        tracing::warn!(error = %bad, "HENDU_LOG is malformed; logging at info");
    }
}
