//! Structured logs: JSON (default when stdout is not a terminal) or pretty; level from RUST_LOG.

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Installs the global subscriber. `to_stdout` is for `run`; the other commands keep stdout for
/// their own output and log to stderr.
pub fn init(format: Option<LogFormat>, to_stdout: bool) {
    let format = format.unwrap_or(if std::io::stdout().is_terminal() {
        LogFormat::Pretty
    } else {
        LogFormat::Json
    });
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let result = match (format, to_stdout) {
        (LogFormat::Json, true) => builder
            .json()
            .flatten_event(true)
            .with_writer(std::io::stdout)
            .try_init(),
        (LogFormat::Json, false) => builder
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .try_init(),
        (LogFormat::Pretty, true) => builder.with_writer(std::io::stdout).try_init(),
        (LogFormat::Pretty, false) => builder.with_writer(std::io::stderr).try_init(),
    };
    let _ = result;
}
