//! Log setup: human lines by default, JSON for log pipelines, filtered by `RUST_LOG`
//! (default `info`).
//!
//! Lines are formatted where they happen and written to stdout by a background thread,
//! many per `write`: a publish logs a line at INFO, and one `write(2)` per line on the
//! request's thread cost more than the rest of its logging. The channel is bounded and
//! blocks when full rather than drop lines.

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;

/// Lines waiting for the writer thread at most; a logger that gets this far ahead waits.
const BUFFERED_LINES: usize = 64 * 1024;

/// Keeps the log writer running; dropping it flushes what is buffered.
#[must_use = "logs written after the guard is dropped are lost"]
pub struct LogGuard {
    _writer: Option<WorkerGuard>,
}

/// Installs the global subscriber. Safe to call more than once (later calls do nothing).
pub fn init(format: LogFormat) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(BUFFERED_LINES)
        .finish(std::io::stdout());
    let installed = match format {
        LogFormat::Human => fmt()
            .with_env_filter(filter)
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .with_writer(writer)
            .try_init(),
        LogFormat::Json => fmt()
            .json()
            .with_env_filter(filter)
            .with_current_span(false)
            .with_writer(writer)
            .try_init(),
    };
    LogGuard {
        _writer: installed.is_ok().then_some(guard),
    }
}
