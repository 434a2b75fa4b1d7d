//! Starting studies-service with stand-ins for patients-service.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::Duration,
};

use clinic_client::PatientsPeer;
use clinic_core::{
    context::Call,
    defaults,
    downstream::{DownstreamError, Peer},
};
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
use tonic::{Status, transport::Channel};

/// A patient directory that knows the patients a test made (and can be
/// taken down, as patients-service can).
#[derive(Debug, Default)]
pub struct KnownPatients {
    known: Mutex<HashSet<i64>>,
    down: AtomicBool,
}

#[tonic::async_trait]
impl PatientDirectory for KnownPatients {
    async fn ensure_exists(&self, patient: PatientId, _call: &Call) -> Result<()> {
        if self.down.load(Ordering::SeqCst) {
            let status = tonic::Status::unavailable("connection refused");
            return Err(
                DownstreamError { peer: Peer::Patients, doing: "checking the patient", status }.into()
            );
        }
        if self.known.lock().expect("known lock").contains(&patient.get()) {
            Ok(())
        } else {
            Err(Error::PatientNotFound(patient))
        }
    }
}

/// An patient_feed the test writes events into.
#[derive(Debug, Default)]
pub struct PatientFeed(pub Mutex<Vec<PatientEvent>>);

impl PatientFeed {
    /// Publishes an event of `kind` about `patient`.
    pub fn publish(&self, patient: i64, kind: PatientEventKind) {
        let mut events = self.0.lock().expect("patient_feed lock");
        let sequence = events.len() as i64 + 1;
        events.push(PatientEvent {
            sequence,
            patient_id: PatientId::from_stored(patient),
            kind,
            create_time: None,
            expire_time: None,
        });
    }
}

#[tonic::async_trait]
impl PatientEvents for PatientFeed {
    async fn events_after(&self, after: i64, limit: u32) -> Result<EventPage> {
        let events = self.0.lock().expect("patient_feed lock");
        Ok(EventPage {
            events: events.iter().filter(|e| e.sequence > after).take(limit as usize).cloned().collect(),
            last_sequence: events.len() as i64,
        })
    }
}

/// studies-service on its own database, with `patients` and `patient_feed`
/// standing in for patients-service.
pub struct TestApp {
    pub client: StudyServiceClient<Authed>,
    /// The stand-in for patients-service.
    pub patients: Arc<KnownPatients>,
    next_patient: AtomicI64,
    pub patient_feed: Arc<PatientFeed>,
    channel: Channel,
    /// The service's database, for set-ups that look behind the API
    /// (tests/memory.rs).
    #[allow(dead_code)]
    pub db: TestDb,
    _server: Running,
}

/// Starts the service on a fresh database; the stand-in knows `known`.
pub async fn spawn_app(known: &[i64]) -> TestApp {
    spawn_app_on(TestDb::create().await, known).await
}

/// Starts the service on `db` (which may hold data from an earlier release).
pub async fn spawn_app_on(db: TestDb, known: &[i64]) -> TestApp {
    clinic_telemetry::init_for_tests();
    db.migrate(ServiceRole::Studies, &studies_service::OWNED_SCHEMA).await;
    let config = Config {
        service: service_config(db.url_for(ServiceRole::Studies)),
        patients: PatientsPeer { patients_addr: defaults::uri(defaults::PATIENTS_PORT) },
        events_poll_interval: Duration::from_millis(50),
        reservation_timeout: Duration::from_secs(2),
        changes: Default::default(),
        service_token: Default::default(),
    };
    let patient_feed = Arc::new(PatientFeed::default());
    let directory = Arc::new(KnownPatients::default());
    directory.known.lock().expect("known lock").extend(known.iter().copied());
    let app = Application::build_with(config, directory.clone(), patient_feed.clone())
        .await
        .expect("service starts");
    let db_handle = db.clone();
    let server = Running::spawn(app.local_addr(), |shutdown| async move {
        app.run_until(shutdown).await.expect("service runs")
    });
    let channel = Channel::from_shared(server.uri()).unwrap().connect().await.expect("connects");
    TestApp {
        client: StudyServiceClient::new(admin(channel.clone())),
        channel,
        patients: directory,
        next_patient: AtomicI64::new(1_000),
        patient_feed,
        db: db_handle,
        _server: server,
    }
}

/// A patient the stand-in knows.
#[derive(Debug, Clone, Copy)]
pub struct Patient {
    /// Its id.
    pub id: i64,
}

#[allow(dead_code)]
impl TestApp {
    /// A new patient the directory knows (`_n` names it in the test only).
    pub async fn create_patient(&self, _n: usize) -> Patient {
        let id = self.next_patient.fetch_add(1, Ordering::SeqCst);
        self.patients.known.lock().expect("known lock").insert(id);
        Patient { id }
    }

    /// A client whose token has `subject` and `roles`.
    pub fn client_as(&self, subject: &str, roles: &[&str]) -> StudyServiceClient<Authed> {
        let token = clinic_testkit::auth::shared().token(subject, roles);
        StudyServiceClient::new(clinic_testkit::keys::bearer::authed(self.channel.clone(), &token))
    }

    /// ListStudyRevisions, every page of `page_size`.
    pub async fn revisions(
        &self,
        id: i64,
        page_size: i32,
    ) -> std::result::Result<Vec<pb::StudyRevision>, Status> {
        let (mut all, mut page_token) = (Vec::new(), String::new());
        loop {
            let page = self
                .client
                .clone()
                .list_study_revisions(pb::ListStudyRevisionsRequest { id, page_size, page_token })
                .await?
                .into_inner();
            all.extend(page.revisions);
            if page.next_page_token.is_empty() {
                return Ok(all);
            }
            page_token = page.next_page_token;
        }
    }

    /// Every change of the studies' feed after `after`, checking that each
    /// page continues the previous one without a gap.
    pub async fn all_changes(&self, mut after: i64) -> Vec<pb::StudyChange> {
        let mut all = Vec::new();
        loop {
            let page = self
                .client
                .clone()
                .list_study_changes(pb::ListStudyChangesRequest { after_sequence: after, page_size: 5 })
                .await
                .expect("a page of changes")
                .into_inner();
            for change in &page.changes {
                assert_eq!(change.sequence, after + 1, "gap or disorder after {after}");
                after = change.sequence;
            }
            if page.changes.is_empty() {
                return all;
            }
            all.extend(page.changes);
        }
    }

    /// GetStudy with `show_deleted`.
    pub async fn get_shown(&self, id: i64) -> std::result::Result<pb::Study, Status> {
        let request = pb::GetStudyRequest { id, show_deleted: true, ..Default::default() };
        self.client.clone().get_study(request).await.map(|r| r.into_inner())
    }

    /// patients-service goes down: every check of a patient is UNAVAILABLE.
    pub async fn stop_patients(&mut self) {
        self.patients.down.store(true, Ordering::SeqCst);
    }

    /// patients-service is back.
    pub async fn start_patients(&mut self) {
        self.patients.down.store(false, Ordering::SeqCst);
    }

    /// CreateStudy.
    pub async fn create_study(&self, study: pb::Study) -> std::result::Result<pb::Study, Status> {
        self.create_study_with_id(study, "").await
    }

    /// CreateStudy with `request_id`.
    pub async fn create_study_with_id(
        &self,
        study: pb::Study,
        request_id: &str,
    ) -> std::result::Result<pb::Study, Status> {
        let request = pb::CreateStudyRequest { study: Some(study), request_id: request_id.into() };
        self.client.clone().create_study(request).await.map(|r| r.into_inner())
    }

    /// GetStudy.
    pub async fn get_study(&self, id: i64) -> std::result::Result<pb::Study, Status> {
        self.client
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
    ) -> std::result::Result<pb::ListStudiesResponse, Status> {
        let request = pb::ListStudiesRequest {
            page_size,
            page_token: page_token.into(),
            patient_ids: patient_ids.to_vec(),
            ..Default::default()
        };
        self.client.clone().list_studies(request).await.map(|r| r.into_inner())
    }

    /// Every study of `patient_ids` (all when empty), page by page.
    pub async fn all_studies(&self, patient_ids: &[i64], page_size: i32) -> Vec<pb::Study> {
        let (mut all, mut token) = (Vec::new(), String::new());
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
    pub async fn update_study(
        &self,
        study: pb::Study,
        paths: &[&str],
    ) -> std::result::Result<pb::Study, Status> {
        let update_mask =
            Some(prost_types::FieldMask { paths: paths.iter().map(|p| p.to_string()).collect() });
        let request = pb::UpdateStudyRequest { study: Some(study), update_mask };
        self.client.clone().update_study(request).await.map(|r| r.into_inner())
    }

    /// DeleteStudy.
    pub async fn delete_study(&self, id: i64, etag: &str) -> std::result::Result<(), Status> {
        self.client.clone().delete_study(pb::DeleteStudyRequest { id, etag: etag.into() }).await.map(|_| ())
    }
}

/// A valid study of `patient_id`.
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
