//! gateway: the listing view of patients with their studies. It holds no
//! data; it asks patients-service for a page of patients and studies-service
//! for the studies of that whole page, and joins them.
//!
//! It is also where the system answers health and reflection through Envoy:
//! its reflection lists every public service of Clinic, and its health
//! mirrors each service's (see [`health`]).
//!
//! # Layout
//! - [`view`]: the join of patients and studies (no I/O).
//! - [`downstream`]: the clients of patients-service and studies-service.
//! - [`grpc`]: the GatewayService adapter.
//! - [`error`]: the gateway's error type and its one mapping to gRPC statuses.
//! - [`health`]: the system's health, mirrored from each service.

pub mod downstream;
pub mod error;
pub mod grpc;
pub mod health;
pub mod view;

use std::{net::SocketAddr, time::Duration};

use clinic_common::{
    config::{self, ConfigError},
    server::{self, Health, ServeError, ServerSettings},
};
use clinic_proto::{gateway::v1::gateway_service_server::GatewayServiceServer, patients, studies};
use tokio::net::TcpListener;
use tonic::service::Routes;

use crate::{downstream::Downstream, grpc::GatewayApi};

/// Everything the gateway reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen (`LISTEN_ADDR`, default `127.0.0.1:50053`).
    pub listen_addr: SocketAddr,
    /// patients-service (`PATIENTS_ADDR`, default `http://127.0.0.1:50051`).
    pub patients_addr: String,
    /// studies-service (`STUDIES_ADDR`, default `http://127.0.0.1:50052`).
    pub studies_addr: String,
    /// Request ceiling and shutdown drain (`REQUEST_TIMEOUT_MS`, `SHUTDOWN_DRAIN_TIMEOUT_MS`).
    pub server: ServerSettings,
    /// Longest wait for a downstream call, whatever the caller's deadline
    /// (`DOWNSTREAM_TIMEOUT_MS`, default 5000).
    pub downstream_timeout: Duration,
}

impl Config {
    /// Default listen address.
    pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:50053";
    /// Default address of patients-service.
    pub const DEFAULT_PATIENTS_ADDR: &str = "http://127.0.0.1:50051";
    /// Default address of studies-service.
    pub const DEFAULT_STUDIES_ADDR: &str = "http://127.0.0.1:50052";

    /// Reads the configuration from environment variables.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            listen_addr: config::env_or(
                "LISTEN_ADDR",
                Self::DEFAULT_LISTEN_ADDR.parse().expect("valid default"),
            )?,
            patients_addr: config::env_string("PATIENTS_ADDR", Self::DEFAULT_PATIENTS_ADDR),
            studies_addr: config::env_string("STUDIES_ADDR", Self::DEFAULT_STUDIES_ADDR),
            server: ServerSettings::from_env()?,
            downstream_timeout: config::env_millis("DOWNSTREAM_TIMEOUT_MS", Duration::from_secs(5))?,
        })
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The listen address could not be bound.
    #[error("binding the listen address: {0}")]
    Bind(#[from] std::io::Error),
    /// A downstream address is not a valid URI.
    #[error("downstream address: {0}")]
    Downstream(#[from] tonic::transport::Error),
}

/// A built gateway, listening and ready to serve.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    patients: tonic::transport::Channel,
    studies: tonic::transport::Channel,
    config: Config,
}

impl Application {
    /// Binds the listener and prepares (lazy) channels to both services.
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        let listener = TcpListener::bind(config.listen_addr).await?;
        let patients = clinic_common::client::channel(&config.patients_addr)?;
        let studies = clinic_common::client::channel(&config.studies_addr)?;
        Ok(Self { listener, patients, studies, config })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// Serves until `shutdown` completes, then drains in-flight rpcs.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServeError> {
        let own = clinic_proto::gateway::v1::SERVICE_NAME;
        let health = Health::new(&[own, patients::v1::SERVICE_NAME, studies::v1::SERVICE_NAME]).await;
        let mirrors = health::spawn_mirrors(
            health.clone(),
            own,
            vec![
                (patients::v1::SERVICE_NAME, self.patients.clone()),
                (studies::v1::SERVICE_NAME, self.studies.clone()),
            ],
        )
        .await;
        let downstream = Downstream::new(self.patients, self.studies, self.config.downstream_timeout);
        let routes = Routes::new(GatewayServiceServer::new(GatewayApi::new(downstream)));
        server::serve_with_tasks(self.listener, routes, health, &self.config.server, mirrors, shutdown).await
    }
}
