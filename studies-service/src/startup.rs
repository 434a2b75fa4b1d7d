//! Building and running studies-service: what `main` and the tests start.

use std::{net::SocketAddr, sync::Arc};

use clinic_client::PeerClient;
use clinic_core::downstream::Peer;
use clinic_host::{
    server::{ServeError, ServerSettings},
    service::{self, Prepared, Process, Serving, StartupError},
};
use clinic_pg::schema::OwnedSchema;
use clinic_proto::studies::{
    guard::v1::deletion_guard_service_server::DeletionGuardServiceServer,
    v1::{SERVICE_NAME, study_service_server::StudyServiceServer},
};
use tonic::service::Routes;

use crate::{
    OWNED_SCHEMA,
    config::Config,
    consumer,
    grpc::{GuardApi, StudyApi},
    patients::{GrpcPatients, PatientDirectory, PatientEvents},
    storage::StudyStore,
};

/// A built service: listening, migrated, ready to serve.
#[derive(Debug)]
pub struct Application {
    serving: Serving,
    api: StudyApi,
    store: StudyStore,
    events: Arc<dyn PatientEvents>,
    config: Config,
}

impl Application {
    /// Binds the listener, connects to Postgres, waits for the migrations and
    /// loads the page-token key; `patients` answers whether a patient exists
    /// and `events` supplies the deletions to apply (tests pass their own).
    pub async fn build_with(
        config: Config,
        patients: Arc<dyn PatientDirectory>,
        events: Arc<dyn PatientEvents>,
    ) -> Result<Self, StartupError> {
        let Prepared { serving, tokens } =
            service::prepare(&config.service, &OWNED_SCHEMA, &[SERVICE_NAME]).await?;
        let store = StudyStore::new(serving.pool.clone(), config.service.db.filter_scan_timeout);
        let api = StudyApi { store: store.clone(), tokens, patients };
        Ok(Self { serving, api, store, events, config })
    }
}

impl Process for Application {
    type Config = Config;
    const NAME: &'static str = "studies-service";
    const SCHEMA: Option<OwnedSchema> = Some(OWNED_SCHEMA);

    /// Builds the service; patients-service is reached lazily at `config.patients`.
    async fn build(config: Config) -> Result<Self, StartupError> {
        let client =
            PeerClient::new(Peer::Patients, &config.patients.patients_addr, &config.service.downstream)?
                .with_service_token(config.service_token.token());
        let patients = Arc::new(GrpcPatients(client));
        Self::build_with(config, patients.clone(), patients).await
    }

    fn server_settings(config: &Config) -> &ServerSettings {
        &config.service.server
    }

    fn local_addr(&self) -> SocketAddr {
        self.serving.local_addr()
    }

    /// Serves, and applies patient deletions in the background, until
    /// `shutdown` completes; then drains in-flight rpcs.
    async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
        let (store, events) = (self.store.clone(), self.events.clone());
        let (poll, reservation_timeout) = (self.config.events_poll_interval, self.config.reservation_timeout);
        // The cascade runs on one replica at a time.
        let singleton = move || {
            vec![
                consumer::spawn(store.clone(), events.clone(), poll, reservation_timeout),
                consumer::spawn_sweeper(store.clone(), poll),
            ]
        };
        let routes = Routes::new(clinic_core::bounded!(StudyServiceServer::new(self.api))).add_service(
            clinic_core::bounded!(DeletionGuardServiceServer::new(GuardApi { store: self.store })),
        );
        let served = [SERVICE_NAME, clinic_proto::studies::guard::v1::SERVICE_NAME];
        service::serve_with_database(self.serving, routes, &served, &self.config.service, singleton, shutdown)
            .await
    }
}
