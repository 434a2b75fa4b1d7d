//! Building and running the gateway: what `main` and the tests start.

use std::{net::SocketAddr, sync::Arc};

use clinic_audit::audit::AuditSink;
use clinic_auth::Verifier;
use clinic_client::PeerClient;
use clinic_core::downstream::Peer;
use clinic_host::{
    health::Health,
    public::{JwksRoute, PublicRoute},
    server::{self, Front, ServeError, ServerSettings},
    service::{self, Process, StartupError},
};
use clinic_proto::{
    audit::v1::audit_service_server::AuditServiceServer,
    gateway::v1::gateway_service_server::GatewayServiceServer, patients, studies,
};
use tokio::net::TcpListener;
use tonic::service::Routes;

use crate::{
    audit::{AuditAggregate, IntakeSink},
    config::Config,
    downstream::Downstream,
    grpc::GatewayApi,
    health,
};

/// A built gateway, listening and ready to serve.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    downstream: Downstream,
    verifier: Arc<Verifier>,
    config: Config,
}

impl Process for Application {
    type Config = Config;
    const NAME: &'static str = "gateway";

    /// Binds the listener and prepares (lazy) channels to both services.
    async fn build(config: Config) -> Result<Self, StartupError> {
        let verifier = Verifier::load(config.server.auth.clone())?;
        let listener = TcpListener::bind(config.server.listen_addr).await?;
        let downstream = Downstream {
            patients: PeerClient::new(Peer::Patients, &config.patients.patients_addr, &config.downstream)?,
            studies: PeerClient::new(Peer::Studies, &config.studies.studies_addr, &config.downstream)?,
        };
        Ok(Self { listener, downstream, verifier, config })
    }

    fn server_settings(config: &Config) -> &ServerSettings {
        &config.server
    }

    fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// Serves until `shutdown` completes, then drains in-flight rpcs.
    async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
        let own = clinic_proto::gateway::v1::SERVICE_NAME;
        let health = Health::new(&[
            own,
            patients::v1::SERVICE_NAME,
            studies::v1::SERVICE_NAME,
            clinic_proto::audit::v1::SERVICE_NAME,
        ])
        .await;
        let mirrors = health::spawn_mirrors(
            health.clone(),
            own,
            &[clinic_proto::audit::v1::SERVICE_NAME],
            vec![
                (patients::v1::SERVICE_NAME, self.downstream.patients.raw_channel()),
                (studies::v1::SERVICE_NAME, self.downstream.studies.raw_channel()),
            ],
        )
        .await;
        let mut background = mirrors;
        background.push(self.verifier.clone().watch(service::JWKS_CHECK_INTERVAL));
        let audit: Arc<dyn AuditSink> = Arc::new(IntakeSink::new(self.downstream.patients.clone()));
        let routes = Routes::new(clinic_core::bounded!(GatewayServiceServer::new(GatewayApi::new(
            self.downstream.clone()
        ))))
        .add_service(clinic_core::bounded!(AuditServiceServer::new(AuditAggregate::new(self.downstream))));
        let served = [own, clinic_proto::audit::v1::SERVICE_NAME];
        let mut public: Vec<Arc<dyn PublicRoute>> = vec![Arc::new(JwksRoute(self.verifier.clone()))];
        if let Some(root) = &self.config.web_root {
            public.push(Arc::new(crate::site::Site::new(root)));
        }
        // No database here, so no pool scope: the listing's middleware is
        // the shared one, its audit events sent to patients-service.
        let front = Front {
            middleware: server::rpc_middleware(&served, &self.config.server, self.verifier, audit),
            public,
        };
        server::serve_with_tasks(
            self.listener,
            routes,
            health,
            &self.config.server,
            front,
            background,
            shutdown,
        )
        .await
    }
}
