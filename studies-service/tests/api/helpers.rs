//! Starting studies-service with stand-ins for patients-service.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use clinic_client::PatientsPeer;
use clinic_core::{deadline::Deadline, defaults};
use clinic_host::service::Process;
use clinic_proto::studies::v1::{self as pb, study_service_client::StudyServiceClient};
use clinic_testkit::{
    Running, ServiceRole, TestDb,
    auth::{Authed, admin},
    service_config,
};
use studies_service::{
    Application, Config,
    domain::{EventPage, PatientEvent, PatientEventKind, PatientId},
    error::{Error, Result},
    patients::{PatientDirectory, PatientEvents},
};
use tonic::transport::Channel;

/// A patient directory that knows a fixed set of patients.
#[derive(Debug)]
pub struct KnownPatients(pub HashSet<i64>);

#[tonic::async_trait]
impl PatientDirectory for KnownPatients {
    async fn ensure_exists(&self, patient: PatientId, _deadline: Option<Deadline>) -> Result<()> {
        if self.0.contains(&patient.get()) { Ok(()) } else { Err(Error::not_found(patient)) }
    }
}

/// An outbox the test writes events into.
#[derive(Debug, Default)]
pub struct Outbox(pub Mutex<Vec<PatientEvent>>);

impl Outbox {
    /// Publishes an event of `kind` about `patient`.
    pub fn publish(&self, patient: i64, kind: PatientEventKind) {
        let mut events = self.0.lock().expect("outbox lock");
        let sequence = events.len() as i64 + 1;
        events.push(PatientEvent {
            sequence,
            patient_id: PatientId::from_stored(patient),
            kind,
            create_time: None,
        });
    }
}

#[tonic::async_trait]
impl PatientEvents for Outbox {
    async fn events_after(&self, after: i64, limit: u32) -> Result<EventPage> {
        let events = self.0.lock().expect("outbox lock");
        Ok(EventPage {
            events: events.iter().filter(|e| e.sequence > after).take(limit as usize).cloned().collect(),
            last_sequence: events.len() as i64,
        })
    }
}

/// studies-service on its own database, with `patients` and `outbox`
/// standing in for patients-service.
pub struct TestApp {
    pub client: StudyServiceClient<Authed>,
    pub outbox: Arc<Outbox>,
    /// The service's database, for set-ups that look behind the API
    /// (tests/memory.rs).
    #[allow(dead_code)]
    pub db: TestDb,
    _server: Running,
}

pub async fn spawn_app(known: &[i64]) -> TestApp {
    clinic_telemetry::init_for_tests();
    let db = TestDb::create().await;
    db.migrate(ServiceRole::Studies, &studies_service::OWNED_SCHEMA).await;
    let config = Config {
        service: service_config(db.url_for(ServiceRole::Studies)),
        patients: PatientsPeer { patients_addr: defaults::uri(defaults::PATIENTS_PORT) },
        events_poll_interval: Duration::from_millis(50),
        reservation_timeout: Duration::from_secs(2),
        service_token: Default::default(),
    };
    let outbox = Arc::new(Outbox::default());
    let directory = Arc::new(KnownPatients(known.iter().copied().collect()));
    let app = Application::build_with(config, directory, outbox.clone()).await.expect("service starts");
    let db_handle = db.clone();
    let server = Running::spawn(app.local_addr(), |shutdown| async move {
        app.run_until(shutdown).await.expect("service runs")
    });
    let channel = Channel::from_shared(server.uri()).unwrap().connect().await.expect("connects");
    TestApp { client: StudyServiceClient::new(admin(channel)), outbox, db: db_handle, _server: server }
}

/// A valid study of `patient_id`.
pub fn study(patient_id: i64) -> pb::Study {
    pb::Study {
        patient_id,
        urgency_level: pb::UrgencyLevel::High.into(),
        body_part: pb::BodyPart::Chest.into(),
        description: "NO FINDINGS".into(),
        study_type: pb::StudyType::Xray.into(),
        ..Default::default()
    }
}
