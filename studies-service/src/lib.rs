//! studies-service: owns the clinic's imaging studies, in the Postgres schema
//! `studies`, and serves `clinic.studies.v1.StudyService`.
//!
//! Studies refer to patients owned by patients-service. Creating or moving a
//! study asks patients-service whether the patient exists; deleting a patient
//! reaches here as an event from patients-service's outbox, which
//! [`consumer`] applies durably and idempotently.
//!
//! # Layout
//! - [`domain`]: validated study values, the radiology vocabulary (no I/O).
//! - [`storage`]: every SQL statement, against the `studies` schema.
//! - [`grpc`]: the StudyService adapter (protobuf ↔ domain).
//! - [`error`]: the service's error type and its one mapping to gRPC statuses.
//! - [`patients`]: the gRPC clients of patients-service.
//! - [`consumer`]: applies patient deletions from patients-service's outbox.
//! - `migrations/`: the schema, embedded and run at start-up.

pub mod consumer;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod patients;
pub mod storage;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use clinic_common::{
    config::{self, ConfigError, ServiceConfig},
    db::{self, DbStartupError},
    paging::PageTokens,
    server::{self, Health, ServeError},
};
use clinic_proto::studies::v1::{SERVICE_NAME, study_service_server::StudyServiceServer};
use tokio::net::TcpListener;
use tonic::service::Routes;

use crate::{
    grpc::StudyApi,
    patients::{GrpcPatients, PatientDirectory, PatientEvents},
    storage::StudyStore,
};

/// The Postgres schema this service owns.
pub const SCHEMA: &str = "studies";

/// The service's migrations, embedded at build time; the history lives in
/// its own schema. Run at start-up, and by `clinic-dev migrate`.
pub fn migrator() -> sqlx::migrate::Migrator {
    sqlx::migrate!("./migrations")
}

/// Everything studies-service reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address, database, timeouts (`LISTEN_ADDR` default `127.0.0.1:50052`, ...).
    pub service: ServiceConfig,
    /// patients-service (`PATIENTS_ADDR`, default `http://127.0.0.1:50051`).
    pub patients_addr: String,
    /// How often to look for patient deletions to apply
    /// (`PATIENT_EVENTS_POLL_INTERVAL_MS`, default 500).
    pub events_poll_interval: Duration,
}

impl Config {
    /// Default listen address.
    pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:50052";
    /// Default database URL: the service's own role on a local Postgres.
    pub const DEFAULT_DATABASE_URL: &str = "postgres://clinic_studies:clinic_studies@127.0.0.1:5432/clinic";
    /// Default address of patients-service.
    pub const DEFAULT_PATIENTS_ADDR: &str = "http://127.0.0.1:50051";

    /// Reads the configuration from environment variables.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            service: ServiceConfig::from_env(Self::DEFAULT_LISTEN_ADDR, Self::DEFAULT_DATABASE_URL)?,
            patients_addr: config::env_string("PATIENTS_ADDR", Self::DEFAULT_PATIENTS_ADDR),
            events_poll_interval: config::env_millis(
                "PATIENT_EVENTS_POLL_INTERVAL_MS",
                Duration::from_millis(500),
            )?,
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
    /// The patients-service address is not a valid URI.
    #[error("PATIENTS_ADDR: {0}")]
    PatientsAddr(#[from] tonic::transport::Error),
    /// Loading the page-token key failed.
    #[error("loading the page token key: {0}")]
    PageTokenKey(#[from] error::Error),
}

/// A built service: listening, migrated, ready to serve.
pub struct Application {
    listener: TcpListener,
    api: StudyApi,
    store: StudyStore,
    events: Arc<dyn PatientEvents>,
    pool: sqlx::PgPool,
    health: Health,
    config: Config,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Application {
    /// Binds the listener, connects to Postgres, runs the migrations and
    /// loads the page-token key; patients-service is reached lazily at
    /// `config.patients_addr`.
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        let listener = TcpListener::bind(config.service.listen_addr).await?;
        let pool = db::connect_and_migrate(&config.service.db, migrator(), SCHEMA).await?;
        let store = StudyStore::new(pool.clone());
        let tokens = PageTokens::new(store.page_token_key().await?);
        let channel = clinic_common::client::channel(&config.patients_addr)?;
        let patients = Arc::new(GrpcPatients::new(channel, config.service.downstream_timeout));
        let health = Health::new(&[SERVICE_NAME]).await;
        Ok(Self {
            listener,
            api: StudyApi::new(store.clone(), tokens, patients.clone() as Arc<dyn PatientDirectory>),
            store,
            events: patients,
            pool,
            health,
            config,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// Serves, and applies patient deletions in the background, until
    /// `shutdown` completes; then drains in-flight rpcs.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServeError> {
        let consumer = consumer::spawn(self.store, self.events, self.config.events_poll_interval);
        let service = &self.config.service;
        server::serve_with_database(
            self.listener,
            Routes::new(StudyServiceServer::new(self.api)),
            self.health,
            service,
            self.pool,
            vec![consumer],
            shutdown,
        )
        .await
    }
}
