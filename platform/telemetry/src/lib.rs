//! Logs, traces and metrics of a process.
//!
//! - **Logs**: human-readable lines, or one JSON object a line
//!   (`LOG_FORMAT=json`, what the container images set) carrying the
//!   `trace_id` and `span_id` of the request it belongs to.
//! - **Traces**: OpenTelemetry, configured only by the standard `OTEL_*`
//!   variables. W3C `traceparent` is read from every request and written on
//!   every call to another service. With `OTEL_EXPORTER_OTLP_ENDPOINT` set,
//!   spans (each rpc, and each SQL statement as a child with its text, never
//!   its values) go to that collector over OTLP/gRPC in batches, flushed on
//!   shutdown; unset, nothing is exported and nothing runs in the background
//!   (ids are still made, so logs and downstream calls correlate).
//! - **Metrics**: Prometheus text at `METRICS_ADDR` (see [`MetricsSettings`]),
//!   through the `metrics` facade.
//!
//! # Layout
//! One file: the settings, [`init`] (subscriber, exporter, Prometheus
//! listener) and the guard that flushes spans on shutdown.

use std::{
    net::SocketAddr,
    time::{Duration, SystemTime},
};

use opentelemetry::{
    KeyValue,
    trace::{Span as _, SpanKind, TraceContextExt, Tracer as _, TracerProvider as _},
};
use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing::{Event, Subscriber, field::Field};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    EnvFilter, Layer, Registry,
    filter::Targets,
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    layer::{Context, SubscriberExt},
    registry::LookupSpan,
    util::SubscriberInitExt,
};

/// The clap id of [`LogSettings::filter`], for binaries that log less by
/// default (`mut_arg`).
pub const LOG_FILTER_ARG: &str = "log_filter";

/// How a process logs.
#[derive(Debug, Clone, clap::Args)]
pub struct LogSettings {
    /// What is logged: a tracing filter such as `info` or `warn,gateway=debug`.
    #[arg(long = "log-filter", id = LOG_FILTER_ARG, env = "RUST_LOG", value_name = "FILTER", default_value = "info")]
    pub filter: String,
    /// `text` for people, `json` for one JSON object per line with the
    /// request's `trace_id` and `span_id` (log shippers; the images' default).
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

/// The clap id of [`MetricsSettings::addr`], for binaries that give it a
/// default of their own (`mut_arg`).
pub const METRICS_ADDR_ARG: &str = "metrics_addr";

/// Where a service serves its Prometheus metrics.
#[derive(Debug, Clone, clap::Args)]
pub struct MetricsSettings {
    /// Address of the Prometheus endpoint (`http://<addr>/metrics`); `off`
    /// serves none.
    #[arg(long = "metrics-addr", id = METRICS_ADDR_ARG, env = "METRICS_ADDR", value_name = "ADDR", value_parser = metrics_addr)]
    pub addr: MetricsAddr,
}

/// An address to serve metrics on, or none (`off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsAddr(pub Option<SocketAddr>);

fn metrics_addr(text: &str) -> Result<MetricsAddr, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(MetricsAddr(None));
    }
    text.parse().map(|a| MetricsAddr(Some(a))).map_err(|e| format!("{text:?} is not host:port or `off`: {e}"))
}

/// What to flush and stop when the process ends.
#[derive(Debug)]
#[must_use = "flush it at the end with `shutdown`"]
pub struct Telemetry {
    exporting: Option<SdkTracerProvider>,
    /// Writes the log lines still queued when dropped.
    _lines: tracing_appender::non_blocking::WorkerGuard,
}

impl Telemetry {
    /// Exports the spans still queued (bounded: a collector that is gone
    /// cannot hold up the exit).
    pub fn shutdown(self) {
        if let Some(provider) = self.exporting
            && let Err(e) = provider.shutdown_with_timeout(Duration::from_secs(5))
        {
            eprintln!("flushing spans at exit: {e}");
        }
    }
}

/// Whether the standard variables ask for spans to be exported.
fn exporting() -> bool {
    ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|v| !v.trim().is_empty()))
}

/// Installs the global subscriber and propagator for the process `name`
/// (the OpenTelemetry `service.name` unless `OTEL_SERVICE_NAME` says
/// otherwise). Must run inside the Tokio runtime: the exporter's batches
/// are sent from it. Calling it twice is harmless.
pub fn init(settings: &LogSettings, name: &'static str) -> Telemetry {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_new(&settings.filter).unwrap_or_else(|e| {
        eprintln!("RUST_LOG={:?} is not a valid filter ({e}); logging at info", settings.filter);
        EnvFilter::new("info")
    });
    let mut provider = SdkTracerProvider::builder();
    let exporter = if exporting() {
        match opentelemetry_otlp::SpanExporter::builder().with_tonic().build() {
            Ok(exporter) => Some(exporter),
            Err(e) => {
                eprintln!("{name}: OTLP exporter not started ({e}); spans are not exported");
                None
            }
        }
    } else {
        None
    };
    let exports = exporter.is_some();
    if let Some(exporter) = exporter {
        let mut resource = opentelemetry_sdk::Resource::builder();
        if std::env::var("OTEL_SERVICE_NAME").is_err() {
            resource = resource.with_service_name(name);
        }
        provider = provider.with_batch_exporter(exporter).with_resource(resource.build());
    }
    let provider = provider.build();
    let tracer = provider.tracer("clinic");
    opentelemetry::global::set_tracer_provider(provider.clone());

    let spans = tracing_opentelemetry::layer()
        .with_tracer(tracer.clone())
        .with_filter(Targets::new().with_default(tracing::Level::INFO));
    // SQL statements become spans only when they are exported: sqlx
    // reports each statement as a debug event, which costs a little.
    let sql = exports.then(|| {
        SqlSpans { tracer }.with_filter(Targets::new().with_target("sqlx::query", tracing::Level::DEBUG))
    });
    // Lines are formatted on the thread that logs and written by a thread
    // of their own, many to a write under load (a write per line was a
    // system call on every rpc); never dropped: a full queue makes the
    // logger wait. Written out when the process ends (the guard).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("log-writer")
        .finish(std::io::BufWriter::new(std::io::stdout()));
    let lines = match settings.format {
        LogFormat::Json => {
            tracing_subscriber::fmt::layer().event_format(JsonLines).with_writer(writer).boxed()
        }
        // Colours only for a terminal: a log file gets plain text.
        LogFormat::Text => {
            tracing_subscriber::fmt::layer().with_target(false).with_ansi(ansi).with_writer(writer).boxed()
        }
    };
    let _ = Registry::default().with(lines.with_filter(filter)).with(spans).with(sql).try_init();
    Telemetry { exporting: exports.then_some(provider), _lines: guard }
}

/// Installs a subscriber for tests: logs go through the test harness's
/// capture, so only a failing test shows its server's logs.
pub fn init_for_tests() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_test_writer().try_init();
}

/// Serves Prometheus metrics at `settings.addr` for the whole process, with
/// histograms (not summaries) for every `*_seconds` metric. Returns whether
/// it serves.
pub fn serve_metrics(settings: &MetricsSettings) -> Result<bool, String> {
    let Some(addr) = settings.addr.0 else { return Ok(false) };
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
            &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
        )
        .map_err(|e| e.to_string())?
        .install()
        .map_err(|e| format!("serving metrics on {addr}: {e}"))?;
    metrics::gauge!("clinic_build_info", "version" => env!("CARGO_PKG_VERSION"), "profile" => BUILD_PROFILE)
        .set(1.0);
    Ok(true)
}

/// How this binary was compiled, as `clinic_build_info` reports it: a
/// benchmark of a `debug` build says little about what users run.
pub const BUILD_PROFILE: &str = if cfg!(debug_assertions) { "debug" } else { "optimised" };

/// One JSON object per line: time, level, the event's fields (`message`
/// among them), the current span's name, and the trace and span ids.
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut line = serde_json::Map::new();
        line.insert(
            "timestamp".into(),
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true).into(),
        );
        line.insert("level".into(), event.metadata().level().as_str().into());
        event.record(&mut JsonFields(&mut line));
        if let Some(span) = ctx.lookup_current() {
            line.insert("span".into(), span.name().into());
            let context = tracing::Span::current().context();
            let current = context.span();
            let ids = current.span_context();
            if ids.is_valid() {
                line.insert("trace_id".into(), ids.trace_id().to_string().into());
                line.insert("span_id".into(), ids.span_id().to_string().into());
            }
        }
        writeln!(writer, "{}", serde_json::Value::Object(line))
    }
}

/// Collects an event's fields into a JSON object.
struct JsonFields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for JsonFields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
}

/// Turns sqlx's report of each finished statement into a client span,
/// child of the span it ran in: `db.statement` is the SQL text with its
/// `$n` placeholders, never the values bound to them.
struct SqlSpans {
    tracer: opentelemetry_sdk::trace::Tracer,
}

#[derive(Default)]
struct Statement {
    summary: String,
    text: String,
    elapsed: f64,
    rows: Option<u64>,
}

impl tracing::field::Visit for Statement {
    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "summary" => self.summary = value.to_owned(),
            "db.statement" => self.text = value.trim().to_owned(),
            _ => {}
        }
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        if field.name() == "elapsed_secs" {
            self.elapsed = value;
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "rows_returned" || field.name() == "rows_affected" {
            self.rows = Some(self.rows.unwrap_or(0) + value);
        }
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for SqlSpans {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut statement = Statement::default();
        event.record(&mut statement);
        let text = if statement.text.is_empty() { statement.summary.clone() } else { statement.text };
        let operation = statement.summary.split_whitespace().next().unwrap_or("sql").to_ascii_uppercase();
        let end = SystemTime::now();
        let start = end.checked_sub(Duration::from_secs_f64(statement.elapsed.max(0.0))).unwrap_or(end);
        let parent = tracing::Span::current().context();
        let mut attributes = vec![
            KeyValue::new("db.system", "postgresql"),
            KeyValue::new("db.operation", operation.clone()),
            KeyValue::new("db.statement", text),
        ];
        if let Some(rows) = statement.rows {
            attributes.push(KeyValue::new("db.rows", rows as i64));
        }
        let mut span = self
            .tracer
            .span_builder(format!("SQL {operation}"))
            .with_kind(SpanKind::Client)
            .with_start_time(start)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent);
        span.end_with_timestamp(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_can_be_turned_off() {
        assert_eq!(metrics_addr("off"), Ok(MetricsAddr(None)));
        assert_eq!(metrics_addr("127.0.0.1:9464"), Ok(MetricsAddr(Some("127.0.0.1:9464".parse().unwrap()))));
        assert!(metrics_addr("nowhere").is_err());
    }
}
