//! Hosting a Clinic gRPC service: health, reflection, per-rpc tracing and
//! deadlines, and graceful shutdown, the same for every service.

use std::{sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tonic::{service::Routes, transport::server::TcpIncoming};
use tonic_health::{
    ServingStatus,
    pb::health_server::HealthServer,
    server::{HealthReporter, HealthService},
};

use crate::{
    config::{self, ConfigError},
    layers::{DeadlineLayer, RpcTraceLayer},
};

/// Name of the standard health service, as reflection lists it.
pub const HEALTH_SERVICE_NAME: &str = "grpc.health.v1.Health";

/// The `grpc.health.v1.Health` state of one process: the statuses of its
/// services and of the empty name (the process as a whole) move together.
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    services: Arc<[&'static str]>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health").field("services", &self.services).finish_non_exhaustive()
    }
}

impl Health {
    /// Health for a process serving `services` (fully qualified names), NOT_SERVING
    /// until [`Health::set_serving`] says otherwise.
    pub async fn new(services: &[&'static str]) -> Self {
        let health = Self { reporter: HealthReporter::new(), services: services.into() };
        health.set_serving(false).await;
        health
    }

    /// Marks every service and the process SERVING or NOT_SERVING.
    pub async fn set_serving(&self, serving: bool) {
        let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
        for name in self.services.iter().copied().chain([""]) {
            self.reporter.set_service_status(name, status).await;
        }
    }

    /// Sets the status of one service name (or `""`, the process) alone.
    pub async fn set_service(&self, name: &str, serving: bool) {
        let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
        self.reporter.set_service_status(name, status).await;
    }

    /// Ends health: everything turns NOT_SERVING, then the statuses are
    /// removed, which ends open `Watch` streams after they have seen
    /// NOT_SERVING, so watchers do not hold a draining server open.
    pub async fn close(&self) {
        self.set_serving(false).await;
        let mut reporter = self.reporter.clone();
        for name in self.services.iter().copied().chain([""]) {
            reporter.clear_service_status(name).await;
        }
    }

    /// The services this process serves.
    pub fn services(&self) -> &[&'static str] {
        &self.services
    }
}

/// How the gRPC server behaves; read by [`ServerSettings::from_env`].
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Longest any rpc may take, whatever deadline the caller sent
    /// (`REQUEST_TIMEOUT_MS`, default 30000).
    pub request_timeout: Duration,
    /// On shutdown, how long in-flight rpcs get to finish before the process
    /// exits anyway (`SHUTDOWN_DRAIN_TIMEOUT_MS`, default 10000).
    pub drain_timeout: Duration,
}

impl ServerSettings {
    /// Reads the settings from the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            request_timeout: config::env_millis("REQUEST_TIMEOUT_MS", Duration::from_secs(30))?,
            drain_timeout: config::env_millis("SHUTDOWN_DRAIN_TIMEOUT_MS", Duration::from_secs(10))?,
        })
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self { request_timeout: Duration::from_secs(30), drain_timeout: Duration::from_secs(10) }
    }
}

/// Why serving stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The reflection descriptors could not be loaded (a build problem).
    #[error("building the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The server failed.
    #[error("serving: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves `routes` on `listener` until `shutdown` completes, then drains.
///
/// Adds `grpc.health.v1.Health` and reflection (v1 and v1alpha, listing the
/// services of `health` and the health service) to the routes, and puts
/// [`RpcTraceLayer`] and [`DeadlineLayer`] in front of every rpc. On shutdown
/// every service turns NOT_SERVING first, so load balancers stop sending
/// traffic, then in-flight rpcs get `settings.drain_timeout` to finish.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    health: Health,
    settings: &ServerSettings,
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
        .add_service(reflection_v1alpha);

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // `Server::tcp_nodelay` only applies to listeners tonic binds itself; our
    // listener is bound by the caller (so port 0 works), so Nagle is turned
    // off here. With it on, a response written in several frames waits for
    // the client's delayed ACK: a flat 40 ms on every multi-segment answer.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = tonic::transport::Server::builder()
        .layer(RpcTraceLayer)
        .layer(DeadlineLayer::new(settings.request_timeout))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, async {
            let _ = stop_rx.await;
        });
    tokio::pin!(server);

    tokio::select! {
        result = &mut server => return Ok(result?),
        () = shutdown => {}
    }
    tracing::info!("shutting down: NOT_SERVING, draining in-flight rpcs");
    health.set_serving(false).await;
    let _ = stop_tx.send(());
    health.close().await;
    match tokio::time::timeout(settings.drain_timeout, server).await {
        Ok(result) => Ok(result?),
        Err(_) => {
            tracing::warn!(
                timeout_ms = settings.drain_timeout.as_millis() as u64,
                "drain timed out; exiting with rpcs in flight"
            );
            Ok(())
        }
    }
}

/// Serves like [`serve`] while `background` tasks run; they are stopped as
/// soon as shutdown starts.
pub async fn serve_with_tasks(
    listener: TcpListener,
    routes: Routes,
    health: Health,
    settings: &ServerSettings,
    background: Vec<tokio::task::JoinHandle<()>>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let aborts: Vec<_> = background.iter().map(|t| t.abort_handle()).collect();
    let shutdown = async move {
        shutdown.await;
        aborts.iter().for_each(|a| a.abort());
    };
    let result = serve(listener, routes, health, settings, shutdown).await;
    background.iter().for_each(|t| t.abort());
    result
}

/// Serves like [`serve_with_tasks`], and for as long as it serves keeps
/// `health` in step with Postgres (see [`crate::db::spawn_health_probe`]);
/// closes the pool at the end.
pub async fn serve_with_database(
    listener: TcpListener,
    routes: Routes,
    health: Health,
    config: &crate::config::ServiceConfig,
    pool: sqlx::PgPool,
    mut background: Vec<tokio::task::JoinHandle<()>>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    background.push(crate::db::spawn_health_probe(
        pool.clone(),
        health.clone(),
        config.health_probe_interval,
    ));
    let result = serve_with_tasks(listener, routes, health, &config.server, background, shutdown).await;
    pool.close().await;
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
