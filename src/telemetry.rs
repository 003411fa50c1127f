//! Structured logs: JSON for log shippers or text for people; request ids ride on spans.

use tracing_subscriber::EnvFilter;

pub fn init(json: bool, level: &str) {
    let filter = EnvFilter::try_from_env("CREDENTIAL_BROKER_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    let result = if json { builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init() } else { builder.try_init() };
    if let Err(e) = result {
        eprintln!("logging was already initialised: {e}");
    }
}
