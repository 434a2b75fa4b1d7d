//! Hosting a Clinic gRPC service: health, reflection, per-rpc tracing and
//! deadlines, and graceful shutdown, the same for every service.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic_health::{pb::health_server::HealthServer, server::HealthService};

use crate::{
    health::{HEALTH_SERVICE_NAME, Health},
    public::{PublicRoute, WithPublicRoutes},
};
use clinic_audit::audit::{AuditSink, RecordAccess};
use clinic_auth::{AuthSettings, Authenticate, Verifier};
use clinic_core::settings::millis;
use clinic_layers::{CallDeadline, InFlightLimit, KnownRpcs, Middleware, RequestContext, RpcTrace, Stack};
use clinic_telemetry::{LogSettings, MetricsSettings};
use clinic_tls::{ServerTls, TlsSettings};

/// The clap id of [`ServerSettings::listen_addr`], for binaries that give
/// it their own default (`mut_arg`).
pub const LISTEN_ADDR_ARG: &str = "listen_addr";

/// How the gRPC server listens and behaves.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerSettings {
    /// Where to listen (host:port).
    #[arg(long = "listen-addr", id = LISTEN_ADDR_ARG, env = "LISTEN_ADDR", value_name = "ADDR")]
    pub listen_addr: SocketAddr,
    /// Longest any rpc may take, in milliseconds, whatever deadline the caller sent.
    #[arg(long = "request-timeout-ms", env = "REQUEST_TIMEOUT_MS", value_name = "MS", default_value = "30000", value_parser = millis)]
    pub request_timeout: Duration,
    /// On shutdown, how long in-flight rpcs get to finish before the process
    /// exits anyway, in milliseconds.
    #[arg(long = "shutdown-drain-timeout-ms", env = "SHUTDOWN_DRAIN_TIMEOUT_MS", value_name = "MS", default_value = "10000", value_parser = millis)]
    pub drain_timeout: Duration,
    /// On shutdown, how long the process keeps serving after turning
    /// NOT_SERVING, in milliseconds, so load balancers (Envoy's health
    /// checks, Kubernetes endpoints) stop sending traffic before it stops
    /// accepting: longer than their detection time.
    #[arg(long = "shutdown-pre-stop-delay-ms", env = "SHUTDOWN_PRE_STOP_DELAY_MS", value_name = "MS", default_value = "5000", value_parser = millis)]
    pub pre_stop_delay: Duration,
    /// Most rpcs in flight at once; more are refused at once with
    /// RESOURCE_EXHAUSTED (health checks never are).
    #[arg(
        long = "max-in-flight-requests",
        env = "MAX_IN_FLIGHT_REQUESTS",
        value_name = "N",
        default_value_t = 64
    )]
    pub max_in_flight: usize,
    /// Most rpcs one caller (token subject) has in flight at once, its fair
    /// share; more are refused at once with RESOURCE_EXHAUSTED
    /// (CALLER_OVERLOADED). Below the database pool, so no caller can hold
    /// every connection.
    #[arg(
        long = "max-in-flight-per-caller",
        env = "MAX_IN_FLIGHT_PER_CALLER",
        value_name = "N",
        default_value_t = 2
    )]
    pub max_in_flight_per_caller: usize,
    /// Most concurrent HTTP/2 streams per client connection.
    #[arg(
        long = "max-concurrent-streams",
        env = "MAX_CONCURRENT_STREAMS",
        value_name = "N",
        default_value_t = 128
    )]
    pub max_concurrent_streams: u32,
    /// Who may call: every rpc but health and reflection needs a token.
    #[command(flatten)]
    pub auth: AuthSettings,
    /// How the process logs.
    #[command(flatten)]
    pub log: LogSettings,
    /// Where the process serves Prometheus metrics.
    #[command(flatten)]
    pub metrics: MetricsSettings,
    /// Whether it serves TLS, and asks callers for certificates.
    #[command(flatten)]
    pub tls: TlsSettings,
}

/// What a process puts in front of its routes, composed by the process
/// itself: its middleware, and the public routes answered before them.
#[derive(Debug, Clone, Default)]
pub struct Front {
    /// Outermost first; see [`rpc_middleware`].
    pub middleware: Vec<Arc<dyn Middleware>>,
    /// Answered without a token, before any middleware (the JWKS the
    /// process trusts, the gateway's page).
    pub public: Vec<Arc<dyn PublicRoute>>,
}

/// The middleware in front of every rpc of a process that serves
/// `served` (fully qualified names; health and reflection are added),
/// outermost first: [`RpcTrace`] (only the rpcs it has are named in
/// metrics), [`RequestContext`], [`RecordAccess`] through `audit` (so calls
/// refused for want of a role are recorded too), [`Authenticate`],
/// [`InFlightLimit`] (after authentication, which names the caller),
/// [`CallDeadline`]. A process with a database adds its [`clinic_layers::PoolScope`].
pub fn rpc_middleware(
    served: &[&str],
    settings: &ServerSettings,
    verifier: Arc<Verifier>,
    audit: Arc<dyn AuditSink>,
) -> Vec<Arc<dyn Middleware>> {
    vec![
        Arc::new(RpcTrace::new(KnownRpcs::of(served))),
        Arc::new(RequestContext),
        Arc::new(RecordAccess::new(audit)),
        Arc::new(Authenticate::new(verifier)),
        Arc::new(InFlightLimit::new(settings.max_in_flight, settings.max_in_flight_per_caller)),
        Arc::new(CallDeadline::new(settings.request_timeout)),
    ]
}

/// Largest header list (every header of one request, decoded) a server
/// takes: above what Envoy forwards (its own limit is 32 KiB, plus the
/// headers it adds), so nothing Envoy accepts is refused here (hyper's
/// default of 16 KiB did), and small enough that no caller makes a service
/// hold more than that per stream.
pub const MAX_HEADER_LIST_BYTES: u32 = 64 << 10;

/// Longest a client may take to finish its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why serving stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The server's TLS settings cannot be used.
    #[error("TLS: {0}")]
    Tls(#[from] clinic_tls::TlsError),
    /// The reflection descriptors could not be loaded (a build problem).
    #[error("building the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Serves `routes` on `listener` until `shutdown` completes, then drains.
///
/// Adds `grpc.health.v1.Health` and reflection (v1 and v1alpha, listing the
/// services of `health` and the health service) to the routes, and puts
/// `front` before them. On shutdown every
/// service turns NOT_SERVING first and keeps serving for the pre-stop delay,
/// so load balancers stop sending traffic; then it stops accepting and
/// in-flight rpcs get `settings.drain_timeout` to finish.
///
/// The HTTP/2 server is hyper's, driven here rather than by tonic's
/// `Server`: tonic's enforces the caller's `grpc-timeout` itself, outside
/// any layer, by dropping the call - also a write that has begun to commit,
/// which [`CallDeadline`] must be able to wait for.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    health: Health,
    settings: &ServerSettings,
    front: Front,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let reflection = || {
        let mut builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(clinic_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // google.rpc error details, so grpcurl can show BadRequest,
            // ErrorInfo and PreconditionFailure instead of raw bytes.
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .with_service_name(HEALTH_SERVICE_NAME);
        for name in health.services() {
            builder = builder.with_service_name(*name);
        }
        builder
    };
    let reflection_v1alpha = reflection().build_v1alpha()?;
    let reflection_v1 = reflection().build_v1()?;

    let routes = routes
        .add_service(HealthServer::new(HealthService::from_health_reporter(health.reporter.clone())))
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .prepare();
    let service = WithPublicRoutes::new(Stack::new(front.middleware, routes), front.public);
    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.max_concurrent_streams)
        .max_header_list_size(MAX_HEADER_LIST_BYTES)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    let connections = GracefulShutdown::new();
    let tls = ServerTls::from_settings(&settings.tls)?;
    let _cert_watch = tls.as_ref().map(|tls| AbortOnDrop(tls.watch()));

    tokio::pin!(shutdown);
    let stop_accepting = async {
        (&mut shutdown).await;
        tracing::info!(
            pre_stop_ms = settings.pre_stop_delay.as_millis() as u64,
            "shutting down: NOT_SERVING, serving on until load balancers notice"
        );
        health.set_serving(false).await;
        tokio::time::sleep(settings.pre_stop_delay).await;
    };
    tokio::pin!(stop_accepting);
    loop {
        tokio::select! {
            () = &mut stop_accepting => break,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::debug!(error = %e, "accepting a connection failed");
                        continue;
                    }
                };
                // Without it a response written in several frames waits for
                // the client's delayed ACK: a flat 40 ms on every
                // multi-segment answer.
                let _ = stream.set_nodelay(true);
                let (http2, service, watcher) = (http2.clone(), TowerToHyperService::new(service.clone()), connections.watcher());
                let Some(tls) = tls.clone() else {
                    let connection = watcher.watch(http2.serve_connection(TokioIo::new(stream), service));
                    tokio::spawn(async move {
                        if let Err(e) = connection.await {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                    });
                    continue;
                };
                // The handshake runs in the connection's own task, bounded,
                // so a client that never finishes it holds nothing else up.
                tokio::spawn(async move {
                    let stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => return tracing::debug!(error = %e, "TLS handshake refused"),
                        Err(_) => return tracing::debug!("TLS handshake timed out"),
                    };
                    if let Err(e) = watcher.watch(http2.serve_connection(TokioIo::new(stream), service)).await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
        }
    }
    // The port closes now: new clients are refused instead of hanging.
    drop(listener);
    tracing::info!("draining in-flight rpcs");
    health.close().await;
    if tokio::time::timeout(settings.drain_timeout, connections.shutdown()).await.is_err() {
        tracing::warn!(
            timeout_ms = settings.drain_timeout.as_millis() as u64,
            "drain timed out; exiting with rpcs in flight"
        );
    }
    Ok(())
}

/// Serves like [`serve`] while `background` tasks run; they are stopped as
/// soon as shutdown starts.
pub async fn serve_with_tasks(
    listener: TcpListener,
    routes: Routes,
    health: Health,
    settings: &ServerSettings,
    front: Front,
    background: Vec<tokio::task::JoinHandle<()>>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let aborts: Vec<_> = background.iter().map(|t| t.abort_handle()).collect();
    let shutdown = async move {
        shutdown.await;
        aborts.iter().for_each(|a| a.abort());
    };
    let result = serve(listener, routes, health, settings, front, shutdown).await;
    background.iter().for_each(|t| t.abort());
    result
}

/// A future that completes on SIGINT (Ctrl-C) or SIGTERM: the shutdown
/// future of `main`. The handlers are installed when this is called, not when
/// the future is first polled, so a signal that arrives early (as soon as a
/// process says it is listening) still shuts down cleanly.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    let mut interrupt = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
    async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
    }
}
