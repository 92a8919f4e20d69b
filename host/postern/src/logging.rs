//! Log set-up: `tracing` to stderr, as text or JSON lines, level from the
//! config, overridable with `RUST_LOG`. Input: trusted settings.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Keeps the background log writer alive; dropping it flushes the log.
pub type Guard = tracing_appender::non_blocking::WorkerGuard;

/// Log to stderr through a background writer thread, so sessions never wait
/// on a write(2) per log line. Nothing is dropped: when the writer falls
/// behind, logging blocks (lossy = false).
pub fn init(format: LogFormat, level: Option<&str>) -> Guard {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(64 * 1024)
        .thread_name("postern-log")
        .finish(std::io::stderr());
    let default = level.unwrap_or("info");
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.with_target(false).try_init(),
    };
    guard
}
