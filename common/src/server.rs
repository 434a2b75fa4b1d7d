//! Hosting a Clinic gRPC service: health, reflection, per-rpc tracing and
//! deadlines, and graceful shutdown, the same for every service.

use std::{net::SocketAddr, time::Duration};

use tokio::net::TcpListener;
use tonic::{service::Routes, transport::server::TcpIncoming};
use tonic_health::{pb::health_server::HealthServer, server::HealthService};

use crate::{
    health::{HEALTH_SERVICE_NAME, Health},
    layers::{DeadlineLayer, RpcTraceLayer},
    settings::millis,
    telemetry::LogSettings,
};

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
    /// How the process logs.
    #[command(flatten)]
    pub log: LogSettings,
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
