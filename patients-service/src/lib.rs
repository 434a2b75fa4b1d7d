//! patients-service: owns the clinic's patients, in the Postgres schema
//! `patients`, and serves `clinic.patients.v1.PatientService` plus the
//! internal outbox `clinic.patients.events.v1.PatientEventService`.
//!
//! `main` only reads [`Config`] and runs an [`Application`]; tests build the
//! very same application on port 0 against their own database.
//!
//! # Layout
//! - [`domain`]: validated patient values and their rules (no I/O).
//! - [`storage`]: every SQL statement, against the `patients` schema.
//! - [`grpc`]: the PatientService and PatientEventService adapters.
//! - [`error`]: the service's error type and its one mapping to gRPC statuses.
//! - [`studies`]: asking studies-service whether a patient has studies.
//! - `migrations/`: the schema, embedded and run at start-up.

pub mod domain;
pub mod error;
pub mod grpc;
pub mod storage;
pub mod studies;

use std::{net::SocketAddr, sync::Arc};

use clinic_common::{
    config::{self, ConfigError, ServiceConfig},
    db::{self, DbStartupError},
    paging::PageTokens,
    server::{self, Health, ServeError},
};
use clinic_proto::patients::{
    events::v1::patient_event_service_server::PatientEventServiceServer,
    v1::{SERVICE_NAME, patient_service_server::PatientServiceServer},
};
use tokio::net::TcpListener;
use tonic::service::Routes;

use crate::{
    grpc::{PatientApi, PatientEventApi},
    storage::PatientStore,
    studies::StudiesLookup,
};

/// The Postgres schema this service owns.
pub const SCHEMA: &str = "patients";

/// The service's migrations, embedded at build time; the history lives in
/// its own schema. Run at start-up, and by `clinic-dev migrate`.
pub fn migrator() -> sqlx::migrate::Migrator {
    sqlx::migrate!("./migrations")
}

/// Everything patients-service reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address, database, timeouts (`LISTEN_ADDR` default `127.0.0.1:50051`, ...).
    pub service: ServiceConfig,
    /// studies-service, asked before non-forced deletes (`STUDIES_ADDR`,
    /// default `http://127.0.0.1:50052`).
    pub studies_addr: String,
}

impl Config {
    /// Default listen address.
    pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:50051";
    /// Default database URL: the service's own role on a local Postgres.
    pub const DEFAULT_DATABASE_URL: &str = "postgres://clinic_patients:clinic_patients@127.0.0.1:5432/clinic";
    /// Default address of studies-service.
    pub const DEFAULT_STUDIES_ADDR: &str = "http://127.0.0.1:50052";

    /// Reads the configuration from environment variables.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            service: ServiceConfig::from_env(Self::DEFAULT_LISTEN_ADDR, Self::DEFAULT_DATABASE_URL)?,
            studies_addr: config::env_string("STUDIES_ADDR", Self::DEFAULT_STUDIES_ADDR),
        })
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The listen address could not be bound.
    #[error("binding the listen address: {0}")]
    Bind(#[from] std::io::Error),
    /// Postgres could not be reached or migrated.
    #[error(transparent)]
    Database(#[from] DbStartupError),
    /// The studies-service address is not a valid URI.
    #[error("STUDIES_ADDR: {0}")]
    StudiesAddr(#[from] tonic::transport::Error),
    /// Loading the page-token key failed.
    #[error("loading the page token key: {0}")]
    PageTokenKey(#[from] error::Error),
}

/// A built service: listening, migrated, ready to serve.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    api: PatientApi,
    events: PatientEventApi,
    pool: sqlx::PgPool,
    health: Health,
    config: Config,
}

impl Application {
    /// Builds the service, asking studies-service at `config.studies_addr`
    /// about studies.
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        let channel = clinic_common::client::channel(&config.studies_addr)?;
        let studies = studies::GrpcStudies::new(channel, config.service.downstream_timeout);
        Self::build_with(config, Arc::new(studies)).await
    }

    /// Binds the listener, connects to Postgres, runs the migrations and
    /// loads the page-token key; `studies` answers has-studies questions.
    pub async fn build_with(config: Config, studies: Arc<dyn StudiesLookup>) -> Result<Self, StartupError> {
        let listener = TcpListener::bind(config.service.listen_addr).await?;
        let pool = db::connect_and_migrate(&config.service.db, migrator(), SCHEMA).await?;
        let store = PatientStore::new(pool.clone());
        let tokens = PageTokens::new(store.page_token_key().await?);
        let health = Health::new(&[SERVICE_NAME]).await;
        Ok(Self {
            listener,
            events: PatientEventApi::new(store.clone()),
            api: PatientApi::new(store, tokens, studies),
            pool,
            health,
            config,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// Serves until `shutdown` completes, then drains in-flight rpcs.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServeError> {
        let routes = Routes::new(PatientServiceServer::new(self.api))
            .add_service(PatientEventServiceServer::new(self.events));
        let service = &self.config.service;
        server::serve_with_database(
            self.listener,
            routes,
            self.health,
            service,
            self.pool,
            Vec::new(),
            shutdown,
        )
        .await
    }
}
