//! Tracing setup: human-readable logs by default, JSON lines on request.

use tracing_subscriber::{EnvFilter, fmt};

/// The clap id of [`LogSettings::filter`], for binaries that log less by
/// default (`mut_arg`).
pub const LOG_FILTER_ARG: &str = "log_filter";

/// How a process logs.
#[derive(Debug, Clone, clap::Args)]
pub struct LogSettings {
    /// What is logged: a tracing filter such as `info` or `warn,gateway=debug`.
    #[arg(long = "log-filter", id = LOG_FILTER_ARG, env = "RUST_LOG", value_name = "FILTER", default_value = "info")]
    pub filter: String,
    /// `text` for people, `json` for one JSON object per line (log shippers).
    #[arg(long = "log-format", env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub format: LogFormat,
}

/// The shape of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global tracing subscriber. Calling it twice is harmless.
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_new(&settings.filter).unwrap_or_else(|e| {
        eprintln!("RUST_LOG={:?} is not a valid filter ({e}); logging at info", settings.filter);
        EnvFilter::new("info")
    });
    let builder = fmt().with_env_filter(filter).with_target(false);
    let _ = match settings.format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Installs a subscriber for tests: logs go through the test harness's
/// capture, so only a failing test shows its server's logs.
pub fn init_for_tests() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = fmt().with_env_filter(filter).with_target(false).with_test_writer().try_init();
}
