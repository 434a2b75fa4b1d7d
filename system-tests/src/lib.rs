//! Running Clinic's services together for a test: patients-service,
//! studies-service and the gateway, in-process, each on a fixed port of its
//! own so any of them can be stopped and started again where clients expect
//! it, all on one fresh database.
//!
//! # Layout
//! This file: [`TestSystem`] (start, stop and restart each process; clients
//! of each) and [`Mtls`]. The tests: `tests/system/` (one binary, a module
//! per concern: studies, the cascade, the gateway, security, audit, replicas)
//! and `tests/tree.rs` (the shape of the source tree).

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use clinic_client::{DownstreamSettings, PatientsPeer, ServiceTokenSettings, StudiesPeer};
use clinic_host::{server::ServerSettings, service::Process};
use clinic_proto::{
    gateway::v1::gateway_service_client::GatewayServiceClient,
    patients::v1::{self as ppb, patient_service_client::PatientServiceClient},
    studies::{
        guard::v1::deletion_guard_service_client::DeletionGuardServiceClient,
        v1::{self as pb, study_service_client::StudyServiceClient},
    },
};
use clinic_testkit::{
    Running, ServiceRole, TestDb,
    auth::{Authed, admin},
    cluster::free_port,
    service::server_settings,
    service_config,
};
use sqlx::ConnectOptions;
use tonic::{Status, transport::Channel};

/// The three services on one database.
pub struct TestSystem {
    /// The test's database.
    pub db: TestDb,
    /// Where patients-service listens (also while stopped).
    pub patients_addr: SocketAddr,
    /// Where studies-service listens (also while stopped).
    pub studies_addr: SocketAddr,
    /// Where the gateway listens (also while stopped).
    pub gateway_addr: SocketAddr,
    patients: Option<Running>,
    studies: Option<Running>,
    gateway: Option<Running>,
    /// A client of patients-service (reconnects across restarts), as an admin.
    pub patient_client: PatientServiceClient<Authed>,
    /// A client of studies-service (reconnects across restarts), as an admin.
    pub study_client: StudyServiceClient<Authed>,
    /// A client of the gateway, as an admin.
    pub gateway_client: GatewayServiceClient<Authed>,
    /// A raw channel to the gateway, for health and reflection.
    pub gateway_channel: Channel,
    /// A client of studies-service's internal deletion guard, as an admin.
    pub guard_client: DeletionGuardServiceClient<Authed>,
    /// Applied to studies-service's configuration at each start.
    studies_tuning: Option<Tuning>,
    /// Mutual TLS between every process, when the system runs with it.
    pub mtls: Option<Mtls>,
}

/// The files of a system that runs mutual TLS between its processes: one
/// CA, and a certificate for `127.0.0.1` it signed that every process
/// presents as a server and as a client.
#[derive(Debug, Clone)]
pub struct Mtls {
    /// The CA's certificate.
    pub ca: std::path::PathBuf,
    /// The processes' certificate.
    pub cert: std::path::PathBuf,
    /// Its private key.
    pub key: std::path::PathBuf,
}

impl Mtls {
    /// A new CA and certificate, written to a fresh temporary folder.
    pub fn generate() -> Self {
        let dir =
            std::env::temp_dir().join(format!("clinic-mtls-{}-{:08x}", std::process::id(), rand_suffix()));
        std::fs::create_dir_all(&dir).expect("a folder for the certificates");
        let certs = clinic_testkit::keys::certificates(&[]).expect("certificates");
        let files = Self { ca: dir.join("ca.pem"), cert: dir.join("cert.pem"), key: dir.join("key.pem") };
        std::fs::write(&files.ca, certs.ca_pem).unwrap();
        std::fs::write(&files.cert, certs.cert_pem).unwrap();
        std::fs::write(&files.key, certs.key_pem).unwrap();
        files
    }

    /// What a server of the system serves with: TLS, callers' certificates required.
    pub fn server(&self) -> clinic_tls::TlsSettings {
        clinic_tls::TlsSettings {
            tls_cert_file: Some(self.cert.clone()),
            tls_key_file: Some(self.key.clone()),
            tls_client_ca_file: Some(self.ca.clone()),
        }
    }

    /// How a process of the system calls the others.
    pub fn downstream(&self) -> DownstreamSettings {
        DownstreamSettings {
            peer_tls_ca_file: Some(self.ca.clone()),
            peer_tls_cert_file: Some(self.cert.clone()),
            peer_tls_key_file: Some(self.key.clone()),
            ..DownstreamSettings::plaintext(Duration::from_secs(2))
        }
    }
}

fn rand_suffix() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos(),
    );
    hasher.finish() as u32
}

/// A change to studies-service's test configuration.
pub type Tuning = Box<dyn Fn(&mut studies_service::Config) + Send + Sync>;

fn addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port().expect("a free port")))
}

/// A file holding a `service`-role token of the shared test key, for
/// studies-service's own calls.
pub fn service_token_file() -> std::path::PathBuf {
    static FILE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("clinic-service-token-{}", std::process::id()));
        let token = clinic_testkit::auth::shared().token("studies-service", &["service"]);
        std::fs::write(&path, token).expect("writing the service token");
        path
    })
    .clone()
}

/// Starts patients-service, studies-service and the gateway on a fresh database.
pub async fn spawn_system() -> TestSystem {
    spawn_system_with(None, None).await
}

/// Like [`spawn_system`], with mutual TLS between every process (and the
/// test's clients presenting the processes' certificate).
pub async fn spawn_system_with_mtls() -> TestSystem {
    spawn_system_with(None, Some(Mtls::generate())).await
}

/// Like [`spawn_system`], with `tuning` applied to studies-service's
/// configuration whenever it starts.
pub async fn spawn_system_tuned(
    tuning: impl Fn(&mut studies_service::Config) + Send + Sync + 'static,
) -> TestSystem {
    spawn_system_with(Some(Box::new(tuning)), None).await
}

async fn spawn_system_with(studies_tuning: Option<Tuning>, mtls: Option<Mtls>) -> TestSystem {
    clinic_telemetry::init_for_tests();
    let db = TestDb::create().await;
    db.migrate(ServiceRole::Patients, &patients_service::OWNED_SCHEMA).await;
    db.migrate(ServiceRole::Studies, &studies_service::OWNED_SCHEMA).await;
    let (patients_addr, studies_addr, gateway_addr) = (addr(), addr(), addr());
    let channel = |a: SocketAddr| match &mtls {
        None => clinic_client::channel(&format!("http://{a}")).unwrap(),
        Some(mtls) => {
            let tls = mtls.downstream().tls().unwrap();
            clinic_client::peer_channel(&format!("https://{a}"), tls.as_ref()).unwrap()
        }
    };
    let mut system = TestSystem {
        patient_client: PatientServiceClient::new(admin(channel(patients_addr))),
        study_client: StudyServiceClient::new(admin(channel(studies_addr))),
        gateway_client: GatewayServiceClient::new(admin(channel(gateway_addr))),
        gateway_channel: channel(gateway_addr),
        guard_client: DeletionGuardServiceClient::new(admin(channel(studies_addr))),
        studies_tuning,
        mtls,
        db,
        patients_addr,
        studies_addr,
        gateway_addr,
        patients: None,
        studies: None,
        gateway: None,
    };
    system.start_patients().await;
    system.start_studies().await;
    system.start_gateway().await;
    system
}

impl TestSystem {
    /// `addr` as the system's processes call it: `https://` under mutual TLS.
    fn peer_uri(&self, addr: SocketAddr) -> String {
        match self.mtls {
            Some(_) => format!("https://{addr}"),
            None => format!("http://{addr}"),
        }
    }

    /// The server settings of a process on `addr`.
    fn server_on(&self, addr: SocketAddr) -> ServerSettings {
        let tls = self.mtls.as_ref().map(Mtls::server).unwrap_or_default();
        ServerSettings { listen_addr: addr, tls, ..server_settings() }
    }

    /// How a process of the system calls the others.
    fn downstream(&self) -> DownstreamSettings {
        self.mtls.as_ref().map_or(DownstreamSettings::plaintext(Duration::from_secs(2)), Mtls::downstream)
    }

    /// Starts the gateway (again) on its port.
    pub async fn start_gateway(&mut self) {
        let config = gateway::Config {
            server: self.server_on(self.gateway_addr),
            downstream: self.downstream(),
            patients: PatientsPeer { patients_addr: self.peer_uri(self.patients_addr) },
            studies: StudiesPeer { studies_addr: self.peer_uri(self.studies_addr) },
            web_root: None,
        };
        let app = gateway::Application::build(config).await.expect("gateway starts");
        self.gateway = Some(Running::spawn(self.gateway_addr, |shutdown| async move {
            app.run_until(shutdown).await.expect("gateway runs")
        }));
    }

    /// Starts patients-service (again) on its port.
    pub async fn start_patients(&mut self) {
        let mut config = patients_service::Config {
            service: service_config(self.db.url_for(ServiceRole::Patients)),
            studies: StudiesPeer { studies_addr: self.peer_uri(self.studies_addr) },
            changes: Default::default(),
        };
        config.service.server = self.server_on(self.patients_addr);
        config.service.downstream = self.downstream();
        let app = patients_service::Application::build(config).await.expect("patients-service starts");
        self.patients = Some(Running::spawn(self.patients_addr, |shutdown| async move {
            app.run_until(shutdown).await.expect("patients-service runs")
        }));
    }

    /// Starts studies-service (again) on its port.
    pub async fn start_studies(&mut self) {
        let config = self.studies_config();
        let app = studies_service::Application::build(config).await.expect("studies-service starts");
        self.studies = Some(Running::spawn(self.studies_addr, |shutdown| async move {
            app.run_until(shutdown).await.expect("studies-service runs")
        }));
    }

    /// Starts another replica of studies-service (same database, same
    /// patients-service) on a port of its own; stopped when dropped.
    pub async fn start_studies_replica(&self) -> Running {
        let mut config = self.studies_config();
        let addr = addr();
        config.service.server.listen_addr = addr;
        let app = studies_service::Application::build(config).await.expect("studies-service replica starts");
        Running::spawn(addr, |shutdown| async move { app.run_until(shutdown).await.expect("replica runs") })
    }

    fn studies_config(&self) -> studies_service::Config {
        let mut config = studies_service::Config {
            service: service_config(self.db.url_for(ServiceRole::Studies)),
            patients: PatientsPeer { patients_addr: self.peer_uri(self.patients_addr) },
            events_poll_interval: Duration::from_millis(100),
            reservation_timeout: Duration::from_secs(2),
            changes: Default::default(),
            service_token: ServiceTokenSettings { service_token_file: Some(service_token_file()) },
        };
        config.service.server = self.server_on(self.studies_addr);
        config.service.downstream = self.downstream();
        if let Some(tune) = &self.studies_tuning {
            tune(&mut config);
        }
        config
    }

    /// Stops patients-service and waits until it has stopped.
    pub async fn stop_patients(&mut self) {
        self.patients.take().expect("patients-service running").stop().await;
    }

    /// Stops studies-service and waits until it has stopped.
    pub async fn stop_studies(&mut self) {
        self.studies.take().expect("studies-service running").stop().await;
    }

    /// Creates a valid patient whose email is unique by `n`.
    pub async fn create_patient(&self, n: usize) -> ppb::Patient {
        let patient = ppb::Patient {
            first_name: "Diana Laura".into(),
            last_name: "Del Toro".into(),
            birth_date: "1988-08-29".into(),
            email: format!("p{n}@ejemplo.com"),
            ..Default::default()
        };
        self.patient_client
            .clone()
            .create_patient(ppb::CreatePatientRequest {
                patient: Some(patient),
                request_id: String::new(),
                ..Default::default()
            })
            .await
            .expect("patient created")
            .into_inner()
    }

    /// DeletePatient without an etag.
    pub async fn delete_patient(&self, id: i64, force: bool) -> Result<(), Status> {
        self.patient_client
            .clone()
            .delete_patient(ppb::DeletePatientRequest { id, etag: String::new(), force })
            .await
            .map(|_| ())
    }

    /// CreateStudy without a request id.
    pub async fn create_study(&self, study: pb::Study) -> Result<pb::Study, Status> {
        self.create_study_with_id(study, "").await
    }

    /// CreateStudy with `request_id`.
    pub async fn create_study_with_id(
        &self,
        study: pb::Study,
        request_id: &str,
    ) -> Result<pb::Study, Status> {
        self.study_client
            .clone()
            .create_study(pb::CreateStudyRequest { study: Some(study), request_id: request_id.into() })
            .await
            .map(|r| r.into_inner())
    }

    /// GetStudy.
    pub async fn get_study(&self, id: i64) -> Result<pb::Study, Status> {
        self.study_client
            .clone()
            .get_study(pb::GetStudyRequest { id, ..Default::default() })
            .await
            .map(|r| r.into_inner())
    }

    /// One page of ListStudies.
    pub async fn list_studies(
        &self,
        patient_ids: &[i64],
        page_size: i32,
        page_token: &str,
    ) -> Result<pb::ListStudiesResponse, Status> {
        self.study_client
            .clone()
            .list_studies(pb::ListStudiesRequest {
                page_size,
                page_token: page_token.into(),
                patient_ids: patient_ids.to_vec(),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner())
    }

    /// Every study of `patient_ids` (all studies when empty), page by page.
    pub async fn all_studies(&self, patient_ids: &[i64], page_size: i32) -> Vec<pb::Study> {
        let mut all = Vec::new();
        let mut token = String::new();
        loop {
            let page = self.list_studies(patient_ids, page_size, &token).await.expect("page");
            all.extend(page.studies);
            if page.next_page_token.is_empty() {
                return all;
            }
            token = page.next_page_token;
        }
    }

    /// UpdateStudy with the mask `paths`.
    pub async fn update_study(&self, study: pb::Study, paths: &[&str]) -> Result<pb::Study, Status> {
        let update_mask =
            Some(prost_types::FieldMask { paths: paths.iter().map(|p| p.to_string()).collect() });
        self.study_client
            .clone()
            .update_study(pb::UpdateStudyRequest { study: Some(study), update_mask })
            .await
            .map(|r| r.into_inner())
    }

    /// DeleteStudy.
    pub async fn delete_study(&self, id: i64, etag: &str) -> Result<(), Status> {
        self.study_client
            .clone()
            .delete_study(pb::DeleteStudyRequest { id, etag: etag.into() })
            .await
            .map(|_| ())
    }

    /// Stores `count` plain studies of `patient` straight in the database
    /// (one statement, behind the API), for tests that need many.
    pub async fn insert_studies(&self, patient: i64, count: i64) {
        let mut conn = self.db.admin_options().connect().await.unwrap();
        sqlx::query(
            "insert into studies.study (patient_id, urgency_level, body_part, description, study_type) \
             select $1, 'LOW', 'CHEST', 'NO FINDINGS', 'XRAY' from generate_series(1, $2)",
        )
        .bind(patient)
        .bind(count)
        .execute(&mut conn)
        .await
        .unwrap();
    }

    /// How far studies-service has applied patients-service's change feed,
    /// and how far the feed goes once every committed change is numbered.
    pub async fn feed_progress(&self) -> (i64, i64) {
        let mut conn = self.db.admin_options().connect().await.unwrap();
        sqlx::query_as(
            "select (select position from studies.event_cursor where source = 'patients-feed'), \
                    (select sequence from patients.change_head) \
                    + (select count(*) from patients.change where sequence is null)",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap()
    }

    /// Waits (bounded) until studies-service has applied every change of
    /// patients-service's feed committed so far.
    pub async fn wait_until_caught_up(&self, within: Duration) {
        let give_up = Instant::now() + within;
        loop {
            let (applied, written) = self.feed_progress().await;
            if applied >= written {
                return;
            }
            assert!(
                Instant::now() < give_up,
                "studies-service applied {applied} of {written} events in {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A valid study of `patient_id`: one of the sample rows.
pub fn study(patient_id: i64) -> pb::Study {
    pb::Study {
        patient_id,
        urgency_level: pb::UrgencyLevel::High.into(),
        body_part: pb::BodyPart::Stomach.into(),
        description: "NO FINDINGS".into(),
        study_type: pb::StudyType::Xray.into(),
        ..Default::default()
    }
}

pub use clinic_testkit::assert::{assert_invalid, assert_no_internals, reason};

/// Calls `method` (`/package.Service/Method`) on the process at `addr` with
/// an empty request, carrying `token` if any: what any client can send,
/// whatever the rpc.
pub async fn call_raw(addr: SocketAddr, method: &str, token: Option<&str>) -> Result<(), Status> {
    let channel = clinic_client::channel(&format!("http://{addr}")).expect("a valid address");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
    let mut request = tonic::Request::new(());
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ASCII"));
    }
    let path: http::uri::PathAndQuery = method.parse().expect("a method path");
    let codec = tonic_prost::ProstCodec::default();
    if method.contains("/Watch") {
        // A stream that follows a feed never ends on its own: admitted is
        // enough (a refusal is the answer itself).
        return grpc.server_streaming::<(), (), _>(request, path, codec).await.map(drop);
    }
    grpc.unary::<(), (), _>(request, path, codec).await.map(drop)
}

/// `message` as a request carrying `x-request-id: request_id`.
pub fn with_request_id<T>(message: T, request_id: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("x-request-id", request_id.parse().expect("ASCII"));
    request
}

pub use clinic_testkit::assert::eventually;
