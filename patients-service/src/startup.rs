//! Building and running patients-service: what `main` and the tests start.

use std::{net::SocketAddr, sync::Arc};

use clinic_client::PeerClient;
use clinic_core::downstream::Peer;
use clinic_host::{
    server::{ServeError, ServerSettings},
    service::{self, Prepared, Process, Serving, StartupError},
};
use clinic_pg::schema::OwnedSchema;
use clinic_proto::patients::{
    events::v1::patient_event_service_server::PatientEventServiceServer,
    v1::{SERVICE_NAME, patient_service_server::PatientServiceServer},
};
use tonic::service::Routes;

use crate::{
    OWNED_SCHEMA,
    config::Config,
    grpc::{PatientApi, PatientEventApi},
    storage::PatientStore,
    studies::{DeletionGuard, GrpcStudies},
};

/// A built service: listening, migrated, ready to serve.
#[derive(Debug)]
pub struct Application {
    serving: Serving,
    api: PatientApi,
    events: PatientEventApi,
    config: Config,
}

impl Application {
    /// Binds the listener, connects to Postgres, waits for the migrations and
    /// loads the page-token key; `studies` answers has-studies questions
    /// (tests pass their own).
    pub async fn build_with(config: Config, studies: Arc<dyn DeletionGuard>) -> Result<Self, StartupError> {
        let Prepared { serving, tokens } =
            service::prepare(&config.service, &OWNED_SCHEMA, &[SERVICE_NAME]).await?;
        let store = PatientStore::new(serving.pool.clone(), config.service.db.filter_scan_timeout);
        let events = PatientEventApi::new(store.clone());
        Ok(Self { serving, api: PatientApi { store, tokens, studies }, events, config })
    }
}

impl Process for Application {
    type Config = Config;
    const NAME: &'static str = "patients-service";
    const SCHEMA: Option<OwnedSchema> = Some(OWNED_SCHEMA);

    /// Builds the service, asking studies-service at `config.studies` about studies.
    async fn build(config: Config) -> Result<Self, StartupError> {
        let studies =
            PeerClient::new(Peer::Studies, &config.studies.studies_addr, &config.service.downstream)?;
        Self::build_with(config, Arc::new(GrpcStudies(studies))).await
    }

    fn server_settings(config: &Config) -> &ServerSettings {
        &config.service.server
    }

    fn local_addr(&self) -> SocketAddr {
        self.serving.local_addr()
    }

    async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
        let store = self.api.store.clone();
        let routes = Routes::new(clinic_core::bounded!(PatientServiceServer::new(self.api)))
            .add_service(clinic_core::bounded!(PatientEventServiceServer::new(self.events)));
        // Re-indexing runs on one replica at a time.
        let singleton = move || vec![spawn_reindex(store.clone())];
        let served = [SERVICE_NAME, clinic_proto::patients::events::v1::SERVICE_NAME];
        service::serve_with_database(self.serving, routes, &served, &self.config.service, singleton, shutdown)
            .await
    }
}

/// Recomputes the search keys of patients stored before search existed, in
/// the background, retrying until it has done them all.
fn spawn_reindex(store: PatientStore) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match store.reindex_search_keys().await {
                Ok(0) => return,
                Ok(done) => tracing::info!(patients = done, "search keys recomputed"),
                Err(e) => {
                    tracing::warn!(error = %e, "recomputing search keys failed; retrying in a minute");
                    tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                }
            }
        }
    })
}
