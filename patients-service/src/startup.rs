//! Building and running patients-service: what `main` and the tests start.

use std::{net::SocketAddr, sync::Arc};

use clinic_changes::{Feed, feed::Closer};
use clinic_client::PeerClient;
use clinic_core::downstream::Peer;
use clinic_host::{
    server::{ServeError, ServerSettings},
    service::{self, Prepared, Process, Serving, StartupError},
};
use clinic_pg::schema::OwnedSchema;
use clinic_proto::patients::v1::{SERVICE_NAME, patient_service_server::PatientServiceServer};
use tonic::service::Routes;

use crate::{
    OWNED_SCHEMA,
    config::Config,
    grpc::PatientApi,
    storage::PatientStore,
    studies::{DeletionGuard, GrpcStudies},
};

/// A built service: listening, migrated, ready to serve.
#[derive(Debug)]
pub struct Application {
    serving: Serving,
    api: PatientApi,
    config: Config,
    /// The feed's sequencer, for as long as the service runs.
    closer: Closer,
}

impl Application {
    /// Binds the listener, connects to Postgres, waits for the migrations and
    /// loads the page-token key; `studies` answers has-studies questions
    /// (tests pass their own).
    pub async fn build_with(config: Config, studies: Arc<dyn DeletionGuard>) -> Result<Self, StartupError> {
        let Prepared { serving, tokens } =
            service::prepare(&config.service, &OWNED_SCHEMA, &[SERVICE_NAME]).await?;
        let (feed, closer) = Feed::start(serving.pool.clone(), crate::SCHEMA, config.changes.clone())
            .await
            .map_err(StartupError::ChangeFeed)?;
        let store = PatientStore::new(serving.pool.clone(), &config.service.db, feed.written());
        let api = PatientApi { store, tokens, studies, feed };
        Ok(Self { serving, api, config, closer })
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
        let (store, feed) = (self.api.store.clone(), self.api.feed.clone());
        let routes = Routes::new(clinic_core::bounded!(PatientServiceServer::new(self.api)));
        // Re-indexing and purging run on one replica at a time.
        let singleton = move || {
            vec![
                spawn_reindex(store.clone()),
                spawn_purger(store.clone(), feed.settings().purge_interval),
                feed.spawn_pruner(),
            ]
        };
        let served = [SERVICE_NAME];
        // Watch streams end (UNAVAILABLE, naming where to resume) as soon as
        // the shutdown begins; the sequencer runs until the drain is done.
        let shutdown = self.closer.ending_watches(shutdown);
        let served = service::serve_with_database(
            self.serving,
            routes,
            &served,
            &self.config.service,
            singleton,
            shutdown,
        )
        .await;
        drop(self.closer);
        served
    }
}

/// Purges deleted patients whose retention has ended, in bounded batches.
fn spawn_purger(store: PatientStore, every: std::time::Duration) -> tokio::task::JoinHandle<()> {
    clinic_pg::db::spawn_pruner("deleted patients past their retention", every, move || {
        let store = store.clone();
        async move { store.purge_expired(500).await }
    })
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
