//! Tracing setup: human-readable logs by default, JSON lines on request.

use tracing_subscriber::{EnvFilter, fmt};

/// Installs the global tracing subscriber.
///
/// `RUST_LOG` selects what is logged (default `info`); `LOG_FORMAT=json`
/// switches to one JSON object per line for log shippers. Calling it twice is
/// harmless, so tests may call it freely.
pub fn init() {
    init_with_default("info");
}

/// Like [`init`], with `default` as the filter when `RUST_LOG` is unset
/// (command-line tools want less than servers).
pub fn init_with_default(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = fmt().with_env_filter(filter).with_target(false);
    let _ = if json {
        builder.json().flatten_event(true).with_current_span(true).try_init()
    } else {
        builder.try_init()
    };
}

/// Installs a subscriber for tests: logs go through the test harness's
/// capture, so only a failing test shows its server's logs.
pub fn init_for_tests() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = fmt().with_env_filter(filter).with_target(false).with_test_writer().try_init();
}
