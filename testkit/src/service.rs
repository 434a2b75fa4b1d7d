//! Running a service inside a test: configuration tuned for fast failure
//! detection, and a handle that stops the server and waits for it.

use std::{net::SocketAddr, time::Duration};

use clinic_audit::audit::AuditSettings;
use clinic_client::DownstreamSettings;
use clinic_host::{server::ServerSettings, service::ServiceConfig};
use clinic_pg::{db::DbSettings, idempotency::IdempotencySettings};
use clinic_telemetry::{LogFormat, LogSettings, MetricsAddr, MetricsSettings};
use tokio::{sync::oneshot, task::JoinHandle};

/// Service settings for a test: port 0, a small pool, quick health probes
/// and short timeouts, so failures show within a second or two.
pub fn service_config(database_url: String) -> ServiceConfig {
    ServiceConfig {
        server: server_settings(),
        db: DbSettings {
            url: database_url,
            max_connections: 5,
            acquire_timeout: Duration::from_millis(800),
            point_read_statements: 2,
            statement_timeout: Duration::from_secs(5),
            startup_timeout: Duration::from_secs(10),
            filter_scan_timeout: Duration::from_secs(1),
            health_probe_interval: Duration::from_millis(200),
        },
        downstream: DownstreamSettings::plaintext(Duration::from_secs(2)),
        idempotency: IdempotencySettings { retention_hours: 24, prune_interval: Duration::from_millis(200) },
        audit: AuditSettings { prune_interval: Duration::from_secs(3600) },
    }
}

/// Server settings for a test: port 0, a 10 s request ceiling, a 2 s drain.
pub fn server_settings() -> ServerSettings {
    ServerSettings {
        listen_addr: "127.0.0.1:0".parse().expect("valid address"),
        request_timeout: Duration::from_secs(10),
        drain_timeout: Duration::from_secs(2),
        pre_stop_delay: Duration::ZERO,
        max_in_flight: 64,
        // The race tests drive many calls from one identity at once; the
        // per-caller share is tested with its default on its own
        // (patients-service/tests/fairness.rs).
        max_in_flight_per_caller: 64,
        max_concurrent_streams: 128,
        auth: crate::auth::shared().settings(),
        log: LogSettings { filter: "info".into(), format: LogFormat::Text },
        // One process holds many services in tests: no global exporter.
        metrics: MetricsSettings { addr: MetricsAddr(None) },
        tls: Default::default(),
    }
}

/// A server running on the test's runtime.
#[derive(Debug)]
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Running {
    /// Spawns `serve`, which gets the shutdown future to serve until.
    pub fn spawn<F, Fut>(addr: SocketAddr, serve: F) -> Self
    where
        F: FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = Box::pin(async move {
            let _ = stopped.await;
        });
        let task = tokio::spawn(serve(shutdown));
        Self { addr, stop: Some(stop), task: Some(task) }
    }

    /// The `http://` URI of the server.
    pub fn uri(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Shuts the server down and waits until it has stopped.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task");
        }
    }
}
