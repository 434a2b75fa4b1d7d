//! Building and running the FHIR endpoint: what `main` and the tests start.

use std::{net::SocketAddr, sync::Arc};

use clinic_auth::Verifier;
use clinic_client::PeerClient;
use clinic_core::downstream::Peer;
use clinic_host::{
    health::Health,
    public::PublicRoute,
    server::{self, Front, ServeError, ServerSettings},
    service::{self, Process, StartupError},
};
use tokio::net::TcpListener;
use tonic::service::Routes;

use crate::{FhirRoute, HEALTH_NAME, config::Config};

/// A built FHIR endpoint, listening and ready to serve.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    route: Arc<FhirRoute>,
    verifier: Arc<Verifier>,
    config: Config,
}

impl Process for Application {
    type Config = Config;
    const NAME: &'static str = "fhir";

    /// Binds the listener and prepares (lazy) channels to both services.
    async fn build(config: Config) -> Result<Self, StartupError> {
        let verifier = Verifier::load(config.server.auth.clone())?;
        let listener = TcpListener::bind(config.server.listen_addr).await?;
        let patients = PeerClient::new(Peer::Patients, &config.patients.patients_addr, &config.downstream)?;
        let studies = PeerClient::new(Peer::Studies, &config.studies.studies_addr, &config.downstream)?;
        let route = FhirRoute::new(patients, studies, config.downstream.timeout, Some(verifier.clone()));
        Ok(Self { listener, route, verifier, config })
    }

    fn server_settings(config: &Config) -> &ServerSettings {
        &config.server
    }

    fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// Serves `/fhir` (and gRPC health for probes) until `shutdown`
    /// completes, then drains.
    async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
        let health = Health::new(&[HEALTH_NAME]).await;
        // Ready once listening: it holds nothing to load, and a service it
        // cannot reach answers 503 per request (Envoy keeps routing to it).
        health.set_serving(true).await;
        let background = vec![self.verifier.clone().watch(service::JWKS_CHECK_INTERVAL)];
        // No rpc of its own: the port answers /fhir before the gRPC stack,
        // which serves only health and reflection (open to anyone).
        let public: Vec<Arc<dyn PublicRoute>> = vec![self.route];
        let front = Front { middleware: Vec::new(), public };
        server::serve_with_tasks(
            self.listener,
            Routes::default(),
            health,
            &self.config.server,
            front,
            background,
            shutdown,
        )
        .await
    }
}
