//! The audit trail: one event per access to patient data, in the owning
//! service's schema, append-only, readable by admins through the gateway
//! for both services at once.

use clinic_proto::{
    audit::v1::{self as apb, audit_service_client::AuditServiceClient},
    gateway::v1::{self as gpb, gateway_service_client::GatewayServiceClient},
    patients::v1::{self as ppb, patient_service_client::PatientServiceClient},
    studies::v1::{self as spb, study_service_client::StudyServiceClient},
};
use clinic_testkit::auth::{Authed, authed, shared};
use sqlx::ConnectOptions;
use tonic::Code;

use system_tests::{TestSystem, reason, spawn_system, study, with_request_id};

/// Clients of every service acting as `subject` with `role`.
struct Caller {
    patients: PatientServiceClient<Authed>,
    studies: StudyServiceClient<Authed>,
    gateway: GatewayServiceClient<Authed>,
    audit: AuditServiceClient<Authed>,
}

fn caller(system: &TestSystem, subject: &str, role: &str) -> Caller {
    let token = shared().token(subject, &[role]);
    let channel = |addr| authed(clinic_client::channel(&format!("http://{addr}")).unwrap(), &token);
    Caller {
        patients: PatientServiceClient::new(channel(system.patients_addr)),
        studies: StudyServiceClient::new(channel(system.studies_addr)),
        gateway: GatewayServiceClient::new(channel(system.gateway_addr)),
        audit: AuditServiceClient::new(channel(system.gateway_addr)),
    }
}

/// (subject, method, patient ids, code) of every event of `schema` with `request_id`.
async fn events(
    system: &TestSystem,
    schema: &str,
    request_id: &str,
) -> Vec<(String, String, Vec<i64>, String)> {
    let mut conn = system.db.admin_options().connect().await.unwrap();
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select subject, method, patient_ids, code from {schema}.audit_event where request_id = $1 order by id"
    )))
    .bind(request_id)
    .fetch_all(&mut conn)
    .await
    .unwrap()
}

fn event(subject: &str, method: &str, patients: &[i64], code: &str) -> (String, String, Vec<i64>, String) {
    (subject.into(), method.into(), patients.to_vec(), code.into())
}

fn new_patient(email: &str) -> ppb::Patient {
    ppb::Patient {
        first_name: "Ana".into(),
        last_name: "Audit".into(),
        birth_date: "1980-01-01".into(),
        email: email.into(),
        ..Default::default()
    }
}

const P: &str = "clinic.patients.v1.PatientService/";
const S: &str = "clinic.studies.v1.StudyService/";
const G: &str = "clinic.gateway.v1.GatewayService/";

/// Every audited rpc, as a clinician (and an admin for DeletePatient): one
/// event each in the owning schema, with the caller, the method, the
/// patients concerned, the outcome and the request id the caller sent; a
/// study's patient check is recorded in patients-service under the same
/// caller and request id.
#[tokio::test]
async fn every_audited_rpc_leaves_one_event_with_caller_method_patients_outcome_and_request_id() {
    let system = spawn_system().await;
    let mut ana = caller(&system, "dr-ana", "clinician");
    let mut root = caller(&system, "root", "admin");

    let created = ana
        .patients
        .create_patient(with_request_id(
            ppb::CreatePatientRequest {
                patient: Some(new_patient("ana@audit.test")),
                request_id: String::new(),
                ..Default::default()
            },
            "r-create-patient",
        ))
        .await
        .unwrap()
        .into_inner();
    let p = created.id;
    ana.patients
        .get_patient(with_request_id(ppb::GetPatientRequest { id: p, ..Default::default() }, "r-get-patient"))
        .await
        .unwrap();
    ana.patients
        .list_patients(with_request_id(
            ppb::ListPatientsRequest { page_size: 10, page_token: String::new(), ..Default::default() },
            "r-list-patients",
        ))
        .await
        .unwrap();
    ana.patients
        .update_patient(with_request_id(
            ppb::UpdatePatientRequest {
                patient: Some(ppb::Patient { id: p, first_name: "Anna".into(), ..Default::default() }),
                update_mask: Some(prost_types::FieldMask { paths: vec!["first_name".into()] }),
            },
            "r-update-patient",
        ))
        .await
        .unwrap();
    let s = ana
        .studies
        .create_study(with_request_id(
            spb::CreateStudyRequest { study: Some(study(p)), request_id: String::new() },
            "r-create-study",
        ))
        .await
        .unwrap()
        .into_inner();
    ana.studies
        .get_study(with_request_id(spb::GetStudyRequest { id: s.id, ..Default::default() }, "r-get-study"))
        .await
        .unwrap();
    ana.studies
        .list_studies(with_request_id(
            spb::ListStudiesRequest {
                page_size: 10,
                page_token: String::new(),
                patient_ids: vec![p],
                ..Default::default()
            },
            "r-list-studies",
        ))
        .await
        .unwrap();
    ana.studies
        .list_studies_by_patient(with_request_id(
            spb::ListStudiesByPatientRequest {
                patient_ids: vec![p],
                studies_per_patient: 3,
                ..Default::default()
            },
            "r-by-patient",
        ))
        .await
        .unwrap();
    let updated = ana
        .studies
        .update_study(with_request_id(
            spb::UpdateStudyRequest {
                study: Some(spb::Study { id: s.id, description: "SEEN".into(), ..Default::default() }),
                update_mask: Some(prost_types::FieldMask { paths: vec!["description".into()] }),
            },
            "r-update-study",
        ))
        .await
        .unwrap()
        .into_inner();
    ana.studies
        .delete_study(with_request_id(
            spb::DeleteStudyRequest { id: s.id, etag: updated.etag },
            "r-delete-study",
        ))
        .await
        .unwrap();
    root.patients
        .delete_patient(with_request_id(
            ppb::DeletePatientRequest { id: p, etag: String::new(), force: false },
            "r-delete-patient",
        ))
        .await
        .unwrap();
    // Failed reads are recorded too, with the id asked for.
    let missing = ana
        .patients
        .get_patient(with_request_id(ppb::GetPatientRequest { id: p, ..Default::default() }, "r-get-gone"))
        .await;
    assert_eq!(missing.unwrap_err().code(), Code::NotFound);
    let missing = ana
        .studies
        .get_study(with_request_id(
            spb::GetStudyRequest { id: s.id, ..Default::default() },
            "r-get-gone-study",
        ))
        .await;
    assert_eq!(missing.unwrap_err().code(), Code::NotFound);

    let expected = [
        ("patients", "r-create-patient", event("dr-ana", &format!("{P}CreatePatient"), &[p], "OK")),
        ("patients", "r-get-patient", event("dr-ana", &format!("{P}GetPatient"), &[p], "OK")),
        ("patients", "r-list-patients", event("dr-ana", &format!("{P}ListPatients"), &[p], "OK")),
        ("patients", "r-update-patient", event("dr-ana", &format!("{P}UpdatePatient"), &[p], "OK")),
        ("patients", "r-create-study", event("dr-ana", &format!("{P}GetPatient"), &[p], "OK")),
        ("studies", "r-create-study", event("dr-ana", &format!("{S}CreateStudy"), &[p], "OK")),
        ("studies", "r-get-study", event("dr-ana", &format!("{S}GetStudy"), &[p], "OK")),
        ("studies", "r-list-studies", event("dr-ana", &format!("{S}ListStudies"), &[p], "OK")),
        ("studies", "r-by-patient", event("dr-ana", &format!("{S}ListStudiesByPatient"), &[p], "OK")),
        ("studies", "r-update-study", event("dr-ana", &format!("{S}UpdateStudy"), &[p], "OK")),
        ("studies", "r-delete-study", event("dr-ana", &format!("{S}DeleteStudy"), &[p], "OK")),
        ("patients", "r-delete-patient", event("root", &format!("{P}DeletePatient"), &[p], "OK")),
        ("patients", "r-get-gone", event("dr-ana", &format!("{P}GetPatient"), &[p], "NOT_FOUND")),
        // A deleted study is kept: the failed read names whose it is.
        ("studies", "r-get-gone-study", event("dr-ana", &format!("{S}GetStudy"), &[p], "NOT_FOUND")),
    ];
    for (schema, request_id, want) in expected {
        let got = events(&system, schema, request_id).await;
        assert!(got.contains(&want), "{schema} {request_id}: {got:?}");
        let own = got.iter().filter(|e| e.1.starts_with(if schema == "patients" { P } else { S })).count();
        assert_eq!(own, got.len(), "{schema} records only its own rpcs: {got:?}");
    }
    for request_id in ["r-get-patient", "r-update-patient", "r-create-patient", "r-delete-patient"] {
        assert_eq!(events(&system, "patients", request_id).await.len(), 1, "one event for {request_id}");
    }
}

/// A call refused for want of a role is recorded under the caller; a call
/// with no valid token is not (anyone could fill the trail with those).
#[tokio::test]
async fn refused_calls_of_known_callers_are_recorded_and_anonymous_ones_are_not() {
    let system = spawn_system().await;
    let mut vic = caller(&system, "vic", "viewer");
    let refused = vic
        .patients
        .create_patient(with_request_id(
            ppb::CreatePatientRequest {
                patient: Some(new_patient("v@audit.test")),
                request_id: String::new(),
                ..Default::default()
            },
            "r-denied",
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(
        events(&system, "patients", "r-denied").await,
        vec![event("vic", &format!("{P}CreatePatient"), &[], "PERMISSION_DENIED")]
    );

    let channel = clinic_client::channel(&format!("http://{}", system.patients_addr)).unwrap();
    let anonymous = PatientServiceClient::new(channel)
        .get_patient(with_request_id(ppb::GetPatientRequest { id: 1, ..Default::default() }, "r-anonymous"))
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    assert!(events(&system, "patients", "r-anonymous").await.is_empty());
}

/// The listing view is recorded as the method the user called, with every
/// patient it showed (in patients-service's trail, since the gateway holds
/// no data), and by the services that hold the data for their own calls,
/// always under the end user who asked (never the gateway), with the
/// request id the user sent on every hop. A listing that fails is recorded
/// with its failure.
#[tokio::test]
async fn the_listing_is_recorded_as_the_method_the_user_called_with_every_patient_it_showed() {
    let mut system = spawn_system().await;
    let first = system.create_patient(1).await.id;
    let second = system.create_patient(2).await.id;
    system.create_study(study(first)).await.unwrap();
    let mut vic = caller(&system, "vic", "viewer");
    vic.gateway
        .list_patients_with_studies(with_request_id(
            gpb::ListPatientsWithStudiesRequest {
                page_size: 10,
                page_token: String::new(),
                ..Default::default()
            },
            "r-listing",
        ))
        .await
        .unwrap();
    let listing = events(&system, "patients", "r-listing").await;
    assert!(
        listing.contains(&event("vic", &format!("{G}ListPatientsWithStudies"), &[first, second], "OK")),
        "{listing:?}"
    );
    assert!(
        listing.contains(&event("vic", &format!("{P}ListPatients"), &[first, second], "OK")),
        "{listing:?}"
    );
    assert_eq!(listing.len(), 2, "{listing:?}");
    assert_eq!(
        events(&system, "studies", "r-listing").await,
        vec![event("vic", &format!("{S}ListStudiesByPatient"), &[first, second], "OK")]
    );

    // With a study filter, only the patients shown.
    vic.gateway
        .list_patients_with_studies(with_request_id(
            gpb::ListPatientsWithStudiesRequest {
                page_size: 10,
                study_filter: "urgency_level = HIGH".into(),
                ..Default::default()
            },
            "r-filtered",
        ))
        .await
        .unwrap();
    let filtered = events(&system, "patients", "r-filtered").await;
    assert!(
        filtered.contains(&event("vic", &format!("{G}ListPatientsWithStudies"), &[first], "OK")),
        "{filtered:?}"
    );

    vic.gateway
        .get_patient_with_studies(with_request_id(
            gpb::GetPatientWithStudiesRequest { id: first, ..Default::default() },
            "r-one",
        ))
        .await
        .unwrap();
    let one = events(&system, "patients", "r-one").await;
    assert!(one.contains(&event("vic", &format!("{G}GetPatientWithStudies"), &[first], "OK")), "{one:?}");
    assert!(one.contains(&event("vic", &format!("{P}GetPatient"), &[first], "OK")), "{one:?}");
    let studies = events(&system, "studies", "r-one").await;
    assert!(!studies.is_empty() && studies.iter().all(|e| e.0 == "vic" && e.2 == [first]), "{studies:?}");

    system.stop_studies().await;
    let failed = vic
        .gateway
        .list_patients_with_studies(with_request_id(
            gpb::ListPatientsWithStudiesRequest { page_size: 10, ..Default::default() },
            "r-listing-down",
        ))
        .await
        .unwrap_err();
    assert_eq!(failed.code(), Code::Unavailable);
    let down = events(&system, "patients", "r-listing-down").await;
    assert!(
        down.iter()
            .any(|e| e.1 == format!("{G}ListPatientsWithStudies") && e.3 == "UNAVAILABLE" && e.0 == "vic"),
        "{down:?}"
    );
}

/// The gateway's events come through patients-service's intake, which takes
/// only the gateway's audited methods, and always under the caller's own
/// token: nobody can record an access in someone else's name.
#[tokio::test]
async fn the_intake_records_only_gateway_methods_under_the_callers_own_name() {
    use clinic_proto::audit::intake::v1::{
        AppendAuditEventRequest, audit_intake_service_client::AuditIntakeServiceClient,
    };
    let system = spawn_system().await;
    let token = shared().token("vic", &["viewer"]);
    let channel =
        authed(clinic_client::channel(&format!("http://{}", system.patients_addr)).unwrap(), &token);
    let mut intake = AuditIntakeServiceClient::new(channel);
    let append = |method: &str, code: &str| AppendAuditEventRequest {
        method: method.into(),
        patient_ids: vec![7],
        code: code.into(),
    };
    intake
        .append_audit_event(with_request_id(append(&format!("{G}ListPatientsWithStudies"), "OK"), "r-intake"))
        .await
        .unwrap();
    assert_eq!(
        events(&system, "patients", "r-intake").await,
        vec![event("vic", &format!("{G}ListPatientsWithStudies"), &[7], "OK")]
    );
    for (method, code) in [
        (format!("{P}GetPatient"), "OK"),
        (format!("{G}Nope"), "OK"),
        ("clinic.audit.v1.AuditService/ListAuditEvents".to_owned(), "OK"),
        (format!("{G}ListPatientsWithStudies"), "FINE"),
    ] {
        let refused = intake
            .append_audit_event(with_request_id(append(&method, code), "r-intake-bad"))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{method} {code}");
    }
    assert!(events(&system, "patients", "r-intake-bad").await.is_empty());
    let anonymous = AuditIntakeServiceClient::new(
        clinic_client::channel(&format!("http://{}", system.patients_addr)).unwrap(),
    )
    .append_audit_event(append(&format!("{G}ListPatientsWithStudies"), "OK"))
    .await
    .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
}

/// A write's event is written in its transaction; when the commit then fails
/// the event rolls back with it, and the failure is recorded instead (before,
/// nothing at all was).
#[tokio::test]
async fn a_write_whose_commit_fails_after_its_event_was_written_leaves_an_event_with_its_failure() {
    let system = spawn_system().await;
    let p = system.create_patient(1).await.id;
    let mut admin = system.db.admin_options().connect().await.unwrap();
    // A check that runs at commit, after the write and its event: refuses a
    // patient named "Refused" and a study described "REFUSED".
    sqlx::raw_sql(
        "create function public.refuse_at_commit() returns trigger language plpgsql as $$ \
         begin raise exception 'refused at commit' using errcode = 'check_violation'; end $$; \
         create constraint trigger refuse_at_commit after insert on patients.patient deferrable initially deferred \
         for each row when (new.first_name = 'Refused') execute function public.refuse_at_commit(); \
         create constraint trigger refuse_at_commit after insert on studies.study deferrable initially deferred \
         for each row when (new.description = 'REFUSED') execute function public.refuse_at_commit();",
    )
    .execute(&mut admin)
    .await
    .unwrap();
    let mut ana = caller(&system, "dr-ana", "clinician");
    let refused = ana
        .patients
        .create_patient(with_request_id(
            ppb::CreatePatientRequest {
                patient: Some(ppb::Patient {
                    first_name: "Refused".into(),
                    ..new_patient("refused@audit.test")
                }),
                request_id: "key-1".into(),
                ..Default::default()
            },
            "r-commit-fails",
        ))
        .await
        .unwrap_err();
    let got = events(&system, "patients", "r-commit-fails").await;
    assert_eq!(got.len(), 1, "{refused:?}: {got:?}");
    assert_eq!((got[0].0.as_str(), got[0].1.as_str()), ("dr-ana", format!("{P}CreatePatient").as_str()));
    assert_ne!(got[0].3, "OK");

    let refused = ana
        .studies
        .create_study(with_request_id(
            spb::CreateStudyRequest {
                study: Some(spb::Study { description: "REFUSED".into(), ..study(p) }),
                request_id: String::new(),
            },
            "r-study-commit-fails",
        ))
        .await
        .unwrap_err();
    let got = events(&system, "studies", "r-study-commit-fails").await;
    assert_eq!(got.len(), 1, "{refused:?}: {got:?}");
    assert_eq!((got[0].1.as_str(), got[0].2.as_slice()), (format!("{S}CreateStudy").as_str(), &[p][..]));
    assert_ne!(got[0].3, "OK");
}

/// A create repeated with its request id returns the first create's
/// patient, and its event names that patient.
#[tokio::test]
async fn a_replayed_create_is_recorded_with_the_patient_it_returned() {
    let system = spawn_system().await;
    let mut ana = caller(&system, "dr-ana", "clinician");
    let create = |request_id: &str| {
        with_request_id(
            ppb::CreatePatientRequest {
                patient: Some(new_patient("again@audit.test")),
                request_id: "key-again".into(),
                ..Default::default()
            },
            request_id,
        )
    };
    let first = ana.patients.create_patient(create("r-first")).await.unwrap().into_inner();
    let replay = ana.patients.create_patient(create("r-replay")).await.unwrap().into_inner();
    assert_eq!(first.id, replay.id);
    assert_eq!(
        events(&system, "patients", "r-replay").await,
        vec![event("dr-ana", &format!("{P}CreatePatient"), &[first.id], "OK")]
    );
}

/// Events whose ids and times disagree (replicas stamp their own clocks;
/// ids follow insertion) across both services: walking ListAuditEvents
/// through the gateway page by page, at every page size, shows each event
/// exactly once, newest first.
#[tokio::test]
async fn audit_pages_never_skip_or_repeat_an_event_when_times_and_ids_disagree() {
    let system = spawn_system().await;
    let mut admin = system.db.admin_options().connect().await.unwrap();
    // Inserted in this order (ids ascending), with times out of order.
    for (schema, offsets) in [("patients", [5, 1, 3, 6, 2]), ("studies", [4, 7, 1, 2, 8])] {
        for (i, seconds) in offsets.iter().enumerate() {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "insert into {schema}.audit_event (time, subject, method, patient_ids, code, request_id) \
                 values (timestamptz '2026-01-01 10:00:00+00' + make_interval(secs => $1), 'clock', 'm', '{{99}}', 'OK', $2)"
            )))
            .bind(f64::from(*seconds))
            .bind(format!("{schema}-{i}"))
            .execute(&mut admin)
            .await
            .unwrap();
        }
    }
    let mut root = caller(&system, "root", "admin");
    for page_size in 1..=4 {
        let (mut seen, mut token) = (Vec::new(), String::new());
        loop {
            let page = root
                .audit
                .list_audit_events(apb::ListAuditEventsRequest {
                    subject: "clock".into(),
                    page_size,
                    page_token: token,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            seen.extend(page.events);
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        let ids: Vec<&str> = seen.iter().map(|e| e.request_id.as_str()).collect();
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!((ids.len(), unique.len()), (10, 10), "page size {page_size}: {ids:?}");
        let times: Vec<i64> = seen.iter().map(|e| e.time.unwrap().seconds).collect();
        assert!(times.windows(2).all(|w| w[0] >= w[1]), "page size {page_size}: newest first: {ids:?}");
    }
}

/// The services' own database roles can add and read events, and nothing
/// else: no update, delete or truncate, no disabling the append-only
/// trigger, no granting themselves more, no pruning switch, no shorter
/// retention; pruning through the owner's function removes only events past
/// the retention the owner set.
#[tokio::test]
async fn audit_events_cannot_be_changed_or_removed_by_the_services_own_roles() {
    let system = spawn_system().await;
    let patient = system.create_patient(1).await;
    system.create_study(study(patient.id)).await.unwrap();
    let mut admin = system.db.admin_options().connect().await.unwrap();
    for (schema, role) in [
        ("patients", clinic_testkit::ServiceRole::Patients),
        ("studies", clinic_testkit::ServiceRole::Studies),
    ] {
        // An event from 45 days ago: past the old code's 30-day floor, well
        // inside the configured retention (2190 days).
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "insert into {schema}.audit_event (time, subject, method, patient_ids, code, request_id) \
             values (now() - interval '45 days', 'old', 'm', '{{}}', 'OK', 'r')"
        )))
        .execute(&mut admin)
        .await
        .unwrap();
        let options: sqlx::postgres::PgConnectOptions = system.db.url_for(role).parse().unwrap();
        let mut conn = options.connect().await.unwrap();
        // The services' own background calls (the cascade's watch) may add
        // events meanwhile; the count is of everyone else's.
        let count = format!("select count(*) from {schema}.audit_event where subject <> 'studies-service'");
        let before: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(count.clone())).fetch_one(&mut conn).await.unwrap();
        assert!(before > 1, "{schema} has events, and the role may read them");
        // Granting itself more does nothing (Postgres only warns: the role
        // holds no grant option); what follows is refused all the same.
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "grant update, delete, truncate, trigger on {schema}.audit_event to current_user"
        )))
        .execute(&mut conn)
        .await;
        let (update, delete, truncate, trigger): (bool, bool, bool, bool) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select has_table_privilege('{schema}.audit_event', 'UPDATE'), has_table_privilege('{schema}.audit_event', 'DELETE'), \
                    has_table_privilege('{schema}.audit_event', 'TRUNCATE'), has_table_privilege('{schema}.audit_event', 'TRIGGER')"
        )))
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(
            (update, delete, truncate, trigger),
            (false, false, false, false),
            "{schema}: granted itself more"
        );
        let attempts = [
            format!("update {schema}.audit_event set subject = 'someone-else'"),
            format!("delete from {schema}.audit_event"),
            format!("truncate {schema}.audit_event"),
            format!("alter table {schema}.audit_event disable trigger audit_event_append_only"),
            format!("alter table {schema}.audit_event disable trigger all"),
            format!("drop trigger audit_event_append_only on {schema}.audit_event"),
            format!("drop table {schema}.audit_event"),
            format!("update {schema}.audit_retention set days = 30"),
            format!(
                "create or replace function {schema}.audit_event_append_only() returns trigger language plpgsql as $$ begin return old; end $$"
            ),
            // The old pruning switch, then a delete of the 45-day-old event.
            format!(
                "begin; set local clinic.audit_pruning = 'on'; \
                 delete from {schema}.audit_event where subject = 'old'; commit"
            ),
        ];
        for attempt in attempts {
            let refused = sqlx::raw_sql(sqlx::AssertSqlSafe(attempt.clone())).execute(&mut conn).await;
            assert!(refused.is_err(), "`{attempt}` as the {schema} role must be refused");
            let _ = sqlx::raw_sql("rollback").execute(&mut conn).await;
        }
        let pruned: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("select {schema}.prune_audit_events(1000)")))
                .fetch_one(&mut conn)
                .await
                .unwrap();
        assert_eq!(pruned, 0, "nothing in {schema} is past the owner's retention");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "insert into {schema}.audit_event (subject, method, patient_ids, code, request_id) \
             values ('mine', 'm', '{{}}', 'OK', 'r')"
        )))
        .execute(&mut conn)
        .await
        .expect("the role may append");
        let after: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count)).fetch_one(&mut conn).await.unwrap();
        assert_eq!(after, before + 1, "{schema} lost no event");
    }
}

/// "Who saw or changed patient N": one ListAuditEvents through the gateway
/// answers for both services, newest first, page by page, admins only.
#[tokio::test]
async fn list_audit_events_answers_for_both_services_newest_first_in_pages() {
    let system = spawn_system().await;
    let mut ana = caller(&system, "dr-ana", "clinician");
    let p = system.create_patient(1).await.id;
    let other = system.create_patient(2).await.id;
    for _ in 0..3 {
        let s = ana
            .studies
            .create_study(spb::CreateStudyRequest { study: Some(study(p)), request_id: String::new() })
            .await
            .unwrap()
            .into_inner();
        ana.studies.get_study(spb::GetStudyRequest { id: s.id, ..Default::default() }).await.unwrap();
        ana.patients.get_patient(ppb::GetPatientRequest { id: p, ..Default::default() }).await.unwrap();
    }
    ana.patients.get_patient(ppb::GetPatientRequest { id: other, ..Default::default() }).await.unwrap();

    let mut root = caller(&system, "root", "admin");
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = root
            .audit
            .list_audit_events(apb::ListAuditEventsRequest {
                patient_id: p,
                page_size: 4,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page.events.len() <= 4);
        seen.extend(page.events);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut conn = system.db.admin_options().connect().await.unwrap();
    let stored: i64 = sqlx::query_scalar(
        "select (select count(*) from patients.audit_event where $1 = any(patient_ids)) \
              + (select count(*) from studies.audit_event where $1 = any(patient_ids))",
    )
    .bind(p)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(seen.len() as i64, stored, "every event of patient {p}, once: {seen:#?}");
    assert!(pages >= 3);
    assert!(seen.iter().all(|e| e.patient_ids.contains(&p)));
    let times: Vec<_> = seen.iter().map(|e| e.time.unwrap()).map(|t| (t.seconds, t.nanos)).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");
    for method in [format!("{P}GetPatient"), format!("{S}CreateStudy"), format!("{S}GetStudy")] {
        assert!(seen.iter().any(|e| e.method == method && e.subject == "dr-ana"), "{method} in {seen:#?}");
    }
    let ana_only = root
        .audit
        .list_audit_events(apb::ListAuditEventsRequest {
            subject: "dr-ana".into(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ana_only.events.iter().all(|e| e.subject == "dr-ana"));
    assert_eq!(
        ana_only.events.len(),
        3 * 4 + 1,
        "create (two services), get study, get patient; and one more get"
    );

    let mut vic = caller(&system, "vic", "viewer");
    let refused = vic.audit.list_audit_events(apb::ListAuditEventsRequest::default()).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let mut dr = caller(&system, "dr-ana", "clinician");
    let refused = dr.audit.list_audit_events(apb::ListAuditEventsRequest::default()).await.unwrap_err();
    assert_eq!((refused.code(), reason(&refused)), (Code::PermissionDenied, "PERMISSION_DENIED".into()));
}

/// While events cannot be written, reads are refused (UNAVAILABLE,
/// AUDIT_UNAVAILABLE) rather than served unrecorded, and a write whose event
/// cannot be written is not made either (they commit together).
#[tokio::test]
async fn nothing_is_read_or_written_without_its_event() {
    let system = spawn_system().await;
    let p = system.create_patient(1).await.id;
    let mut ana = caller(&system, "dr-ana", "clinician");

    // The trail refuses dr-ana's events from now on.
    let mut admin = system.db.admin_options().connect().await.unwrap();
    sqlx::query(
        "alter table patients.audit_event add constraint refuse_ana check (subject <> 'dr-ana') not valid",
    )
    .execute(&mut admin)
    .await
    .unwrap();

    let refused =
        ana.patients.get_patient(ppb::GetPatientRequest { id: p, ..Default::default() }).await.unwrap_err();
    assert_eq!((refused.code(), reason(&refused)), (Code::Unavailable, "AUDIT_UNAVAILABLE".into()));
    let listed = ana
        .patients
        .list_patients(ppb::ListPatientsRequest {
            page_size: 10,
            page_token: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(listed.code(), Code::Unavailable);
    let failed = ana
        .patients
        .create_patient(ppb::CreatePatientRequest {
            patient: Some(new_patient("unrecorded@audit.test")),
            request_id: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_ne!(failed.code(), Code::Ok);
    system_tests::assert_no_internals(&failed);
    let mut changed = ppb::Patient { id: p, first_name: "Changed".into(), ..Default::default() };
    changed.etag = String::new();
    let update = ana
        .patients
        .update_patient(ppb::UpdatePatientRequest {
            patient: Some(changed),
            update_mask: Some(prost_types::FieldMask { paths: vec!["first_name".into()] }),
        })
        .await;
    assert!(update.is_err());

    let count = |sql: &'static str| {
        let options = system.db.admin_options();
        async move {
            let mut conn = options.connect().await.unwrap();
            sqlx::query_scalar::<_, i64>(sql).fetch_one(&mut conn).await.unwrap()
        }
    };
    assert_eq!(count("select count(*) from patients.patient where email = 'unrecorded@audit.test'").await, 0);
    assert_eq!(count("select count(*) from patients.patient where first_name = 'Changed'").await, 0);
    assert_eq!(count("select count(*) from patients.audit_event where subject = 'dr-ana'").await, 0);

    sqlx::query("alter table patients.audit_event drop constraint refuse_ana")
        .execute(&mut admin)
        .await
        .unwrap();
    ana.patients
        .get_patient(ppb::GetPatientRequest { id: p, ..Default::default() })
        .await
        .expect("reads work again");
    assert_eq!(count("select count(*) from patients.audit_event where subject = 'dr-ana'").await, 1);
}
