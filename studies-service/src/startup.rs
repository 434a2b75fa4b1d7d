//! Building and running studies-service: what `main` and the tests start.

use std::{net::SocketAddr, sync::Arc};

use clinic_changes::{Feed, feed::Closer};
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
    /// The feed's sequencer, for as long as the service runs.
    closer: Closer,
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
        let (feed, closer) = Feed::start(serving.pool.clone(), crate::SCHEMA, config.changes.clone())
            .await
            .map_err(StartupError::ChangeFeed)?;
        let store = StudyStore::new(
            serving.pool.clone(),
            &config.service.db,
            config.changes.delete_retention_days,
            feed.written(),
        );
        let api = StudyApi { store: store.clone(), tokens, patients, feed };
        Ok(Self { serving, api, store, events, config, closer })
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
        let patients = Arc::new(GrpcPatients::new(client, config.events_poll_interval));
        Self::build_with(config, patients.clone(), patients).await
    }

    fn server_settings(config: &Config) -> &ServerSettings {
        &config.service.server
    }

    fn local_addr(&self) -> SocketAddr {
        self.serving.local_addr()
    }

    /// Serves, and applies patient deletions in the background, until
    /// `shutdown` completes; then ends watch streams and drains in-flight
    /// rpcs.
    async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
        let (store, events, feed) = (self.store.clone(), self.events.clone(), self.api.feed.clone());
        let (poll, reservation_timeout) = (self.config.events_poll_interval, self.config.reservation_timeout);
        // The cascade, purging and pruning run on one replica at a time.
        let singleton = move || {
            vec![
                consumer::spawn(store.clone(), events.clone(), poll, reservation_timeout),
                consumer::spawn_sweeper(store.clone(), poll),
                spawn_purger(store.clone(), feed.settings().purge_interval),
                feed.spawn_pruner(),
            ]
        };
        let routes = Routes::new(clinic_core::bounded!(StudyServiceServer::new(self.api))).add_service(
            clinic_core::bounded!(DeletionGuardServiceServer::new(GuardApi { store: self.store })),
        );
        let served = [SERVICE_NAME, clinic_proto::studies::guard::v1::SERVICE_NAME];
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

/// Purges deleted studies whose retention has ended, in bounded batches.
fn spawn_purger(store: StudyStore, every: std::time::Duration) -> tokio::task::JoinHandle<()> {
    clinic_pg::db::spawn_pruner("deleted studies past their retention", every, move || {
        let store = store.clone();
        async move { store.purge_expired(500).await }
    })
}
