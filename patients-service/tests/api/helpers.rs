//! Starting the service for a test and talking to it.

use std::time::Duration;

use clinic_client::StudiesPeer;
use clinic_core::defaults;
use clinic_host::service::Process;
use clinic_proto::patients::v1::{self as pb, patient_service_client::PatientServiceClient};
use clinic_testkit::{
    Running, ServiceRole, TestDb,
    auth::{Authed, admin},
    service_config,
};
use patients_service::{Application, Config, studies::NoStudies};
use tonic::{Status, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// A running patients-service on its own database.
pub struct TestApp {
    pub addr: std::net::SocketAddr,
    /// A client acting as an admin.
    pub client: PatientServiceClient<Authed>,
    pub channel: Channel,
    pub db: TestDb,
    server: Running,
}

/// Configuration for a test: port 0 and quick failure detection.
pub fn test_config(database_url: String) -> Config {
    Config {
        service: service_config(database_url),
        studies: StudiesPeer { studies_addr: defaults::uri(defaults::STUDIES_PORT) },
        changes: Default::default(),
    }
}

/// Starts the service on a fresh database.
pub async fn spawn_app() -> TestApp {
    spawn_app_on(TestDb::create().await).await
}

/// Starts the service on `db` (which may hold data from an earlier run).
pub async fn spawn_app_on(db: TestDb) -> TestApp {
    spawn_app_with(db, |_| {}).await
}

/// Starts the service on `db` with `adjust` applied to the test configuration.
pub async fn spawn_app_with(db: TestDb, adjust: impl FnOnce(&mut Config)) -> TestApp {
    clinic_telemetry::init_for_tests();
    db.migrate(ServiceRole::Patients, &patients_service::OWNED_SCHEMA).await;
    let mut config = test_config(db.url_for(ServiceRole::Patients));
    adjust(&mut config);
    // studies-service is not part of these tests: no patient has studies.
    let app = Application::build_with(config, std::sync::Arc::new(NoStudies)).await.expect("service starts");
    let addr = app.local_addr();
    let server =
        Running::spawn(addr, |shutdown| async move { app.run_until(shutdown).await.expect("service runs") });
    let channel = Channel::from_shared(server.uri()).unwrap().connect().await.expect("connects");
    TestApp { addr, client: PatientServiceClient::new(admin(channel.clone())), channel, db, server }
}

impl TestApp {
    /// A client acting as `subject` with `roles`.
    pub fn client_as(&self, subject: &str, roles: &[&str]) -> PatientServiceClient<Authed> {
        let token = clinic_testkit::auth::shared().token(subject, roles);
        PatientServiceClient::new(clinic_testkit::keys::bearer::authed(self.channel.clone(), &token))
    }

    /// ListPatientRevisions, every page of `page_size`.
    pub async fn revisions(&self, id: i64, page_size: i32) -> Result<Vec<pb::PatientRevision>, Status> {
        let (mut all, mut page_token) = (Vec::new(), String::new());
        loop {
            let page = self
                .client
                .clone()
                .list_patient_revisions(pb::ListPatientRevisionsRequest { id, page_size, page_token })
                .await?
                .into_inner();
            all.extend(page.revisions);
            if page.next_page_token.is_empty() {
                return Ok(all);
            }
            page_token = page.next_page_token;
        }
    }

    /// One page of ListPatientChanges.
    pub async fn changes(
        &self,
        after_sequence: i64,
        page_size: i32,
    ) -> Result<pb::ListPatientChangesResponse, Status> {
        self.client
            .clone()
            .list_patient_changes(pb::ListPatientChangesRequest { after_sequence, page_size })
            .await
            .map(|r| r.into_inner())
    }

    /// Asks the service to shut down and waits until it has.
    pub async fn shutdown(self) -> TestDb {
        self.server.stop().await;
        self.db
    }

    pub async fn create(&self, patient: pb::Patient) -> Result<pb::Patient, Status> {
        self.create_with_id(patient, "").await
    }

    pub async fn create_with_id(
        &self,
        patient: pb::Patient,
        request_id: &str,
    ) -> Result<pb::Patient, Status> {
        self.client
            .clone()
            .create_patient(pb::CreatePatientRequest {
                patient: Some(patient),
                request_id: request_id.into(),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner())
    }

    /// Creates a valid patient whose email is unique by `n`.
    pub async fn create_nth(&self, n: usize) -> pb::Patient {
        self.create(patient("Jose", "Villalobos", "1955-04-10", &format!("p{n}@ejemplo.com")))
            .await
            .expect("created")
    }

    pub async fn get(&self, id: i64) -> Result<pb::Patient, Status> {
        self.client
            .clone()
            .get_patient(pb::GetPatientRequest { id, ..Default::default() })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn list(&self, page_size: i32, page_token: &str) -> Result<pb::ListPatientsResponse, Status> {
        self.client
            .clone()
            .list_patients(pb::ListPatientsRequest {
                page_size,
                page_token: page_token.into(),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner())
    }

    /// Every patient, page by page.
    pub async fn list_all(&self, page_size: i32) -> Vec<pb::Patient> {
        let mut all = Vec::new();
        let mut token = String::new();
        loop {
            let page = self.list(page_size, &token).await.expect("page");
            all.extend(page.patients);
            if page.next_page_token.is_empty() {
                return all;
            }
            token = page.next_page_token;
        }
    }

    pub async fn update(&self, patient: pb::Patient, paths: &[&str]) -> Result<pb::Patient, Status> {
        let update_mask =
            Some(prost_types::FieldMask { paths: paths.iter().map(|p| p.to_string()).collect() });
        self.client
            .clone()
            .update_patient(pb::UpdatePatientRequest { patient: Some(patient), update_mask })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn delete(&self, id: i64, etag: &str, force: bool) -> Result<(), Status> {
        self.client
            .clone()
            .delete_patient(pb::DeletePatientRequest { id, etag: etag.into(), force })
            .await
            .map(|_| ())
    }

    pub async fn health(&self, service: &str) -> Result<ServingStatus, Status> {
        let res = HealthClient::new(self.channel.clone())
            .check(HealthCheckRequest { service: service.into() })
            .await?
            .into_inner();
        Ok(res.status())
    }

    /// Waits (bounded) until health of `service` reports `want`, following
    /// the Watch stream rather than polling.
    pub async fn wait_health(&self, service: &str, want: ServingStatus, within: Duration) {
        let mut stream = HealthClient::new(self.channel.clone())
            .watch(HealthCheckRequest { service: service.into() })
            .await
            .expect("watch")
            .into_inner();
        tokio::time::timeout(within, async {
            while let Some(update) = stream.message().await.expect("watch stream") {
                if update.status() == want {
                    return;
                }
            }
            panic!("watch ended before {want:?}");
        })
        .await
        .unwrap_or_else(|_| panic!("health of {service:?} did not become {want:?} within {within:?}"));
    }
}

pub fn patient(first: &str, last: &str, birth: &str, email: &str) -> pb::Patient {
    pb::Patient {
        first_name: first.into(),
        last_name: last.into(),
        birth_date: birth.into(),
        email: email.into(),
        ..Default::default()
    }
}

pub use clinic_testkit::assert::{assert_invalid, assert_no_internals, reason};
