//! What stands in front of every rpc, written one way: each piece is a
//! [`Middleware`] (a function of the request and the rest of the stack),
//! and each process lists its own in a [`Stack`]. Here are those that do
//! not depend on identity or the audit trail: one span, log line and set of
//! metrics per call, the call's context, fair shedding, the caller's
//! deadline enforced as `DEADLINE_EXCEEDED`, and the database pool's scope.
//!
//! # Layout
//! - [`middleware`]: the adapter ([`Middleware`], [`Next`], [`Stack`]).
//! - this file, in the order a stack runs them: [`RpcTrace`] (span, log
//!   line, metrics named from [`KnownRpcs`]), [`RequestContext`],
//!   [`InFlightLimit`], [`CallDeadline`], [`PoolScope`]. Authentication and
//!   the audit trail's middleware live with what they enforce
//!   (`clinic-auth`, `clinic-audit`).

pub mod middleware;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use sqlx::PgPool;
use tokio::sync::Semaphore;
use tonic::Code;
use tracing::Instrument;

use clinic_core::{
    context::Call,
    deadline::{CallState, Deadline, parse_grpc_timeout},
};
pub use middleware::{BoxFuture, Middleware, Next, Request, Response, Stack, refuse, response_code};

/// One rpc a server has, as its metrics, spans and logs name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RpcName {
    /// The fully qualified service, `clinic.patients.v1.PatientService`.
    pub service: &'static str,
    /// The method, `GetPatient`.
    pub method: &'static str,
    /// `unary`, `client_stream`, `server_stream` or `bidi_stream`, as the
    /// grpc-ecosystem metrics label it.
    pub kind: &'static str,
}

/// How a call to a path the server does not have is labelled: one value,
/// whatever the caller made up, so callers cannot grow the metrics.
pub const UNKNOWN_RPC: RpcName = RpcName { service: "unknown", method: "unknown", kind: "unknown" };

/// Every rpc of every service this build knows (Clinic's, health,
/// reflection), by path, decoded once from the descriptor sets.
static EVERY_RPC: std::sync::LazyLock<Vec<(&'static str, RpcName)>> = std::sync::LazyLock::new(|| {
    use prost::Message;
    let sets = [
        clinic_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    // Leaked once per process: a fixed table of a few dozen names.
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let mut rpcs = Vec::new();
    for set in sets {
        let set = prost_types::FileDescriptorSet::decode(set).expect("a descriptor set the build made");
        for file in &set.file {
            for service in &file.service {
                let full = leak(format!("{}.{}", file.package(), service.name()));
                for method in &service.method {
                    let kind = match (method.client_streaming(), method.server_streaming()) {
                        (false, false) => "unary",
                        (true, false) => "client_stream",
                        (false, true) => "server_stream",
                        (true, true) => "bidi_stream",
                    };
                    let name = RpcName { service: full, method: leak(method.name().to_owned()), kind };
                    rpcs.push((leak(format!("/{full}/{}", method.name())), name));
                }
            }
        }
    }
    rpcs
});

/// The rpcs one server really has: those of the services it serves, health
/// and reflection. Only these name a call in metrics and spans; any other
/// path is [`UNKNOWN_RPC`].
#[derive(Debug, Clone)]
pub struct KnownRpcs(Arc<std::collections::HashMap<&'static str, RpcName>>);

impl KnownRpcs {
    /// The rpcs of `services` (fully qualified names), health and reflection.
    pub fn of(services: &[&str]) -> Self {
        let open = [
            tonic_health::pb::health_server::SERVICE_NAME,
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ];
        let served = |name: &str| services.contains(&name) || open.contains(&name);
        Self(Arc::new(
            EVERY_RPC
                .iter()
                .filter(|(_, rpc)| served(rpc.service))
                .map(|(path, rpc)| (*path, *rpc))
                .collect(),
        ))
    }

    /// How the call to `path` is named.
    pub fn name(&self, path: &str) -> RpcName {
        self.0.get(path).copied().unwrap_or(UNKNOWN_RPC)
    }
}

/// Observes every rpc: a span (a child of the caller's W3C `traceparent`,
/// so one request is one trace across processes), one log line at info
/// with its method, status code and latency (health checks at debug: they
/// come every second), and the grpc-ecosystem metrics
/// `grpc_server_started_total`, `grpc_server_handled_total` and
/// `grpc_server_handling_seconds`, labelled by service, method and code.
/// Names come from the server's [`KnownRpcs`], never from the raw path, so
/// the number of series is fixed by the API, not by callers.
#[derive(Debug, Clone)]
pub struct RpcTrace {
    known: KnownRpcs,
}

impl RpcTrace {
    /// Observes calls, naming those of `known`.
    pub fn new(known: KnownRpcs) -> Self {
        Self { known }
    }
}

/// Reads W3C trace context from request headers.
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

impl Middleware for RpcTrace {
    fn call(&self, req: Request, next: Next) -> BoxFuture<Response> {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let rpc = self.known.name(req.uri().path());
        let health = rpc.service == tonic_health::pb::health_server::SERVICE_NAME;
        let span = tracing::info_span!(
            "rpc",
            otel.name = %format_args!("{}/{}", rpc.service, rpc.method),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = rpc.service,
            rpc.method = rpc.method,
            rpc.grpc.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let parent =
            opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(req.headers())));
        let _ = span.set_parent(parent);
        let labels = [("grpc_type", rpc.kind), ("grpc_service", rpc.service), ("grpc_method", rpc.method)];
        metrics::counter!("grpc_server_started_total", &labels).increment(1);
        let start = Instant::now();
        Box::pin(
            async move {
                let response = next.run(req).await;
                let elapsed = start.elapsed();
                let latency_ms = elapsed.as_secs_f64() * 1000.0;
                let code = response_code(&response);
                let current = tracing::Span::current();
                current.record("rpc.grpc.status_code", code as i32);
                let handled =
                    [labels[0], labels[1], labels[2], ("grpc_code", clinic_core::errors::code_label(code))];
                metrics::counter!("grpc_server_handled_total", &handled).increment(1);
                metrics::histogram!("grpc_server_handling_seconds", &labels).record(elapsed.as_secs_f64());
                match code {
                    _ if health => tracing::debug!(code = ?code, latency_ms, "rpc finished"),
                    // Shed at once: a caller at full blast would otherwise
                    // flood the log (and spend the cores on it); the
                    // grpc_server_handled_total counts them.
                    Code::ResourceExhausted => tracing::debug!(code = ?code, latency_ms, "rpc shed"),
                    Code::Ok
                    | Code::NotFound
                    | Code::InvalidArgument
                    | Code::AlreadyExists
                    | Code::Aborted
                    | Code::FailedPrecondition
                    | Code::PermissionDenied
                    | Code::Unauthenticated => tracing::info!(code = ?code, latency_ms, "rpc finished"),
                    _ => {
                        current.record("otel.status_code", "ERROR");
                        tracing::warn!(code = ?code, latency_ms, "rpc failed")
                    }
                }
                response
            }
            .instrument(span),
        )
    }
}

/// Enforces each call's deadline: the `grpc-timeout` the caller sent, capped
/// by the server's own ceiling. When it passes, the handler's work is
/// dropped (abandoned) and the caller gets `DEADLINE_EXCEEDED` - unless the
/// handler has begun to commit a change (`CallContext::begin_commit`):
/// then the layer waits for it and answers with its real outcome, so a
/// write that happened is never reported as failed.
///
/// tonic's built-in timeout answers `CANCELLED`, which tells a client the
/// wrong story, hence this layer.
#[derive(Debug, Clone, Copy)]
pub struct CallDeadline {
    ceiling: Duration,
}

impl CallDeadline {
    /// Caps every call at `ceiling`, whatever the caller asked for.
    pub fn new(ceiling: Duration) -> Self {
        Self { ceiling }
    }
}

impl Middleware for CallDeadline {
    fn call(&self, mut req: Request, next: Next) -> BoxFuture<Response> {
        let budget = req
            .headers_mut()
            .remove("grpc-timeout")
            .and_then(|v| parse_grpc_timeout(v.to_str().ok()?))
            .map_or(self.ceiling, |asked| asked.min(self.ceiling));
        let state = CallState::new(Deadline(Instant::now() + budget));
        if let Some(call) = req.extensions().get::<Call>() {
            call.set_deadline(state.clone());
        }
        let call = next.run(req);
        Box::pin(async move {
            tokio::pin!(call);
            match tokio::time::timeout(budget, &mut call).await {
                Ok(response) => response,
                Err(_) if state.committing() => call.await,
                Err(_) => clinic_core::errors::with_reason(
                    Code::DeadlineExceeded,
                    format!("the deadline of {} ms passed before the call completed", budget.as_millis()),
                    clinic_core::errors::DEADLINE_EXCEEDED,
                )
                .into_http(),
            }
        })
    }
}

/// Sheds load early, and fairly: at most `limit` rpcs are in flight at
/// once, and at most `per_caller` of them for one caller (token subject);
/// one more is refused at once with RESOURCE_EXHAUSTED (`OVERLOADED`, or
/// `CALLER_OVERLOADED` for a caller over its share) instead of queueing
/// until everything is slow. So one caller at full blast, or holding
/// requests whose bodies never finish, takes its share and no more: the
/// others keep theirs (and the database connections they need). Health
/// checks are never refused, so a busy service is not mistaken for a dead
/// one. Runs after authentication, which names the caller.
#[derive(Debug, Clone)]
pub struct InFlightLimit {
    permits: Arc<Semaphore>,
    callers: Arc<Callers>,
}

/// How many rpcs each caller has in flight; a caller with none has no entry,
/// so the map holds at most the in-flight limit's worth of entries.
#[derive(Debug)]
struct Callers {
    per_caller: usize,
    in_flight: std::sync::Mutex<std::collections::HashMap<Arc<str>, usize>>,
}

/// One of a caller's in-flight rpcs; its slot is given back on drop.
struct CallerSlot {
    callers: Arc<Callers>,
    subject: Arc<str>,
}

impl Callers {
    fn take(self: &Arc<Self>, subject: &str) -> Option<CallerSlot> {
        let mut in_flight = self.in_flight.lock().expect("callers lock");
        let count = in_flight.entry(Arc::from(subject)).or_insert(0);
        if *count >= self.per_caller {
            return None;
        }
        *count += 1;
        let subject = in_flight.get_key_value(subject).map(|(k, _)| k.clone()).expect("just inserted");
        Some(CallerSlot { callers: self.clone(), subject })
    }
}

impl Drop for CallerSlot {
    fn drop(&mut self) {
        let mut in_flight = self.callers.in_flight.lock().expect("callers lock");
        if let Some(count) = in_flight.get_mut(&self.subject) {
            *count -= 1;
            if *count == 0 {
                in_flight.remove(&self.subject);
            }
        }
    }
}

impl InFlightLimit {
    /// At most `limit` rpcs in flight, shared by every connection, and at
    /// most `per_caller` of one caller.
    pub fn new(limit: usize, per_caller: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limit)),
            callers: Arc::new(Callers {
                per_caller: per_caller.max(1),
                in_flight: std::sync::Mutex::new(std::collections::HashMap::new()),
            }),
        }
    }
}

/// Reason of RESOURCE_EXHAUSTED for a caller over its share of the rpcs in flight.
pub const CALLER_OVERLOADED: &str = "CALLER_OVERLOADED";

/// The path prefix of `grpc.health.v1.Health`.
const HEALTH_PATH: &str = "/grpc.health.v1.Health/";

impl Middleware for InFlightLimit {
    fn call(&self, req: Request, next: Next) -> BoxFuture<Response> {
        if req.uri().path().starts_with(HEALTH_PATH) {
            return next.run(req);
        }
        let caller = req.extensions().get::<Arc<clinic_core::context::Identity>>().map(|i| i.subject.clone());
        let slot = match caller {
            Some(subject) => match self.callers.take(&subject) {
                Some(slot) => Some(slot),
                None => {
                    metrics::counter!("grpc_server_caller_shed_total").increment(1);
                    return refuse(clinic_core::errors::with_reason(
                        Code::ResourceExhausted,
                        format!(
                            "this caller already has {} calls in flight here, its share; retry with backoff",
                            self.callers.per_caller
                        ),
                        CALLER_OVERLOADED,
                    ));
                }
            },
            None => None,
        };
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let call = next.run(req);
                Box::pin(async move {
                    let response = call.await;
                    drop((permit, slot));
                    response
                })
            }
            Err(_) => refuse(clinic_core::errors::overloaded("too many requests in flight")),
        }
    }
}

/// Runs each rpc with the service's pool as the one its database errors are
/// judged against (a pool timeout is overload when every connection is busy,
/// an outage otherwise; see [`clinic_pg::db::status`]).
#[derive(Debug, Clone)]
pub struct PoolScope {
    pool: PgPool,
}

impl PoolScope {
    /// Scopes rpcs to `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

impl Middleware for PoolScope {
    fn call(&self, req: Request, next: Next) -> BoxFuture<Response> {
        Box::pin(clinic_pg::db::with_pool(self.pool.clone(), next.run(req)))
    }
}

/// Opens the [`clinic_core::context::CallContext`] of every rpc: its request id
/// (the caller's `x-request-id` when usable, else a fresh one; echoed in the
/// response headers) and method. The context goes into the request's
/// extensions, where the middleware after this one and the handler find it.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestContext;

/// The header that carries a request's id across every hop.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

impl Middleware for RequestContext {
    fn call(&self, mut req: Request, next: Next) -> BoxFuture<Response> {
        let sent = req.headers().get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok());
        let request_id = clinic_core::context::usable_request_id(sent);
        let call = clinic_core::context::CallContext::new(request_id.clone(), req.uri().path());
        req.extensions_mut().insert(call);
        let response = next.run(req);
        Box::pin(async move {
            let mut response = response.await;
            if let Ok(value) = http::HeaderValue::from_str(&request_id) {
                response.headers_mut().insert(REQUEST_ID_HEADER, value);
            }
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_rpcs_a_server_has_are_named_everything_else_is_one_unknown() {
        let known = KnownRpcs::of(&["clinic.patients.v1.PatientService"]);
        assert_eq!(
            known.name("/clinic.patients.v1.PatientService/GetPatient"),
            RpcName { service: "clinic.patients.v1.PatientService", method: "GetPatient", kind: "unary" }
        );
        assert_eq!(known.name("/grpc.health.v1.Health/Watch").kind, "server_stream");
        assert_eq!(
            known.name("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo").kind,
            "bidi_stream"
        );
        for made_up in [
            "/clinic.patients.v1.PatientService/Nope",
            "/grpc.health.v1.Health/Made1",
            "/clinic.studies.v1.StudyService/GetStudy",
            "/x",
            "",
        ] {
            assert_eq!(known.name(made_up), UNKNOWN_RPC, "{made_up}");
        }
    }
}
