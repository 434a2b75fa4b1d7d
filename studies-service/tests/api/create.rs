use clinic_proto::studies::v1 as pb;
use tonic::Code;

use clinic_testkit::assert::{assert_invalid, assert_no_internals, reason};

use crate::helpers::{spawn_app, study};

#[tokio::test]
async fn create_study_returns_the_stored_study_with_server_assigned_fields() {
    let app = spawn_app(&[]).await;
    let patient = app.create_patient(1).await;
    let mut input = study(patient.id);
    input.id = 555;

    let created = app.create_study(input).await.unwrap();

    assert!(created.id > 0 && created.id != 555);
    assert_eq!(created.patient_id, patient.id);
    assert_eq!(created.urgency_level(), pb::UrgencyLevel::High);
    assert_eq!(created.body_part(), pb::BodyPart::Stomach);
    assert_eq!(created.study_type(), pb::StudyType::Xray);
    assert_eq!(created.description, "NO FINDINGS");
    assert!(created.create_time.is_some() && created.update_time.is_some() && !created.etag.is_empty());
    assert_eq!(app.get_study(created.id).await.unwrap(), created);
}

#[tokio::test]
async fn every_vocabulary_value_can_be_stored_and_read_back() {
    let app = spawn_app(&[]).await;
    let patient = app.create_patient(1).await;
    let body_parts = (1..100).filter_map(|n| pb::BodyPart::try_from(n).ok());
    let types = (1..100).filter_map(|n| pb::StudyType::try_from(n).ok()).cycle();
    let urgencies =
        [pb::UrgencyLevel::Low, pb::UrgencyLevel::Mid, pb::UrgencyLevel::High].into_iter().cycle();
    for ((body_part, study_type), urgency) in body_parts.zip(types).zip(urgencies).take(30) {
        let input = pb::Study {
            body_part: body_part.into(),
            study_type: study_type.into(),
            urgency_level: urgency.into(),
            ..study(patient.id)
        };
        let created = app.create_study(input).await.unwrap();
        let read = app.get_study(created.id).await.unwrap();
        assert_eq!(
            (read.body_part(), read.study_type(), read.urgency_level()),
            (body_part, study_type, urgency)
        );
    }
}

/// Each rule on its own: exactly one violation, naming the broken field.
#[tokio::test]
async fn create_study_reports_one_violation_per_broken_field() {
    let app = spawn_app(&[]).await;
    let patient = app.create_patient(1).await;
    let long = "x".repeat(2001);
    type Breaker = Box<dyn Fn(&mut pb::Study)>;
    let cases: Vec<(&str, Breaker)> = vec![
        ("study.patient_id", Box::new(|s| s.patient_id = 0)),
        ("study.patient_id", Box::new(|s| s.patient_id = -4)),
        ("study.urgency_level", Box::new(|s| s.urgency_level = 0)),
        ("study.urgency_level", Box::new(|s| s.urgency_level = 42)),
        ("study.body_part", Box::new(|s| s.body_part = 0)),
        ("study.body_part", Box::new(|s| s.body_part = 9999)),
        ("study.study_type", Box::new(|s| s.study_type = 0)),
        ("study.study_type", Box::new(|s| s.study_type = -1)),
        ("study.description", Box::new(|s| s.description = String::new())),
        ("study.description", Box::new(|s| s.description = "  \n ".into())),
        ("study.description", Box::new(move |s| s.description = long.clone())),
    ];
    for (field, break_it) in cases {
        let mut input = study(patient.id);
        break_it(&mut input);
        assert_invalid(app.create_study(input).await, &[field]);
    }
    assert!(app.all_studies(&[], 100).await.is_empty(), "nothing was written");
}

#[tokio::test]
async fn create_study_reports_every_broken_field_at_once() {
    let app = spawn_app(&[]).await;
    let input = pb::Study { patient_id: -1, description: " ".into(), ..Default::default() };
    assert_invalid(
        app.create_study(input).await,
        &[
            "study.patient_id",
            "study.urgency_level",
            "study.body_part",
            "study.description",
            "study.study_type",
        ],
    );
}

#[tokio::test]
async fn create_study_for_a_patient_that_does_not_exist_is_not_found() {
    let app = spawn_app(&[]).await;
    let status = app.create_study(study(987654)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(reason(&status), "PATIENT_NOT_FOUND");
    assert!(status.message().contains("987654"), "{}", status.message());
    assert!(app.all_studies(&[], 100).await.is_empty());
}

#[tokio::test]
async fn create_study_with_a_repeated_request_id_returns_the_first_study() {
    let app = spawn_app(&[]).await;
    let patient = app.create_patient(1).await;
    let first = app.create_study_with_id(study(patient.id), "study-req-1").await.unwrap();
    let again = app.create_study_with_id(study(patient.id), "study-req-1").await.unwrap();
    assert_eq!(again, first);
    assert_eq!(app.all_studies(&[], 100).await.len(), 1);
}

#[tokio::test]
async fn concurrent_creates_with_one_request_id_create_one_study() {
    let app = spawn_app(&[]).await;
    let patient = app.create_patient(1).await;
    let attempts = (0..10).map(|_| {
        let client = app.client.clone();
        let input = study(patient.id);
        tokio::spawn(async move {
            client
                .clone()
                .create_study(pb::CreateStudyRequest { study: Some(input), request_id: "same".into() })
                .await
                .map(|r| r.into_inner().id)
        })
    });
    let ids: std::collections::HashSet<i64> =
        futures::future::join_all(attempts).await.into_iter().map(|r| r.unwrap().unwrap()).collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(app.all_studies(&[], 100).await.len(), 1);
}

/// A key reused by mistake must never attach one request's answer to another.
#[tokio::test]
async fn a_request_id_reused_with_another_study_is_refused_and_creates_nothing() {
    let app = spawn_app(&[]).await;
    let patient = app.create_patient(1).await;
    let other = app.create_patient(2).await;
    let first = app.create_study_with_id(study(patient.id), "study-key").await.unwrap();
    let reused = app
        .create_study_with_id(study(other.id), "study-key")
        .await
        .expect_err("another study under the same key");
    assert_eq!(reused.code(), Code::AlreadyExists);
    assert_eq!(reason(&reused), "REQUEST_ID_REUSED");
    let mut changed = study(patient.id);
    changed.description = "ANOTHER READING".into();
    let reused = app.create_study_with_id(changed, "study-key").await.expect_err("another description");
    assert_eq!(reason(&reused), "REQUEST_ID_REUSED");
    assert_eq!(app.all_studies(&[], 100).await, vec![first]);
}

#[tokio::test]
async fn create_study_while_patients_service_is_down_is_unavailable_and_writes_nothing() {
    let mut app = spawn_app(&[]).await;
    let patient = app.create_patient(1).await;
    app.stop_patients().await;

    let status = app.create_study(study(patient.id)).await.unwrap_err();

    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(reason(&status), "PATIENTS_SERVICE_UNAVAILABLE");
    assert_no_internals(&status);
    assert!(app.all_studies(&[], 100).await.is_empty(), "nothing was written");

    app.start_patients().await;
    app.create_study(study(patient.id)).await.expect("works again once patients-service is back");
}

/// The DICOM Study Instance UID: optional, DICOM syntax, one study per UID
/// (deleted or not), found by filter, cleared by naming it in the mask.
#[tokio::test]
async fn a_study_instance_uid_is_validated_unique_and_searchable() {
    let app = spawn_app(&[]).await;
    let patient = app.create_patient(1).await;
    let uid = "1.2.840.113619.2.55.3.604688119.868.1249343483.504";
    let first =
        app.create_study(pb::Study { study_instance_uid: uid.into(), ..study(patient.id) }).await.unwrap();
    assert_eq!(first.study_instance_uid, uid);
    assert_eq!(app.get_study(first.id).await.unwrap().study_instance_uid, uid);

    for bad in ["1.02.3", "1..2", "abc", &"1".repeat(65)] {
        let refused =
            app.create_study(pb::Study { study_instance_uid: bad.into(), ..study(patient.id) }).await;
        assert_invalid(refused, &["study.study_instance_uid"]);
    }
    let again = app
        .create_study(pb::Study { study_instance_uid: uid.into(), ..study(patient.id) })
        .await
        .unwrap_err();
    assert_eq!(
        (again.code(), reason(&again).as_str()),
        (Code::AlreadyExists, "STUDY_INSTANCE_UID_ALREADY_EXISTS")
    );
    assert_no_internals(&again);
    let other = app.create_study(study(patient.id)).await.unwrap();
    let moved = app
        .update_study(pb::Study { id: other.id, study_instance_uid: uid.into(), ..Default::default() }, &[])
        .await;
    assert_eq!(reason(&moved.unwrap_err()), "STUDY_INSTANCE_UID_ALREADY_EXISTS");
    // Deleted, the study keeps its UID.
    app.delete_study(first.id, "").await.unwrap();
    let reused = app.create_study(pb::Study { study_instance_uid: uid.into(), ..study(patient.id) }).await;
    assert_eq!(reason(&reused.unwrap_err()), "STUDY_INSTANCE_UID_ALREADY_EXISTS");

    let with_uid = app
        .update_study(
            pb::Study { id: other.id, study_instance_uid: "2.25.1".into(), ..Default::default() },
            &[],
        )
        .await
        .unwrap();
    let request =
        pb::ListStudiesRequest { filter: r#"study_instance_uid = "2.25.1""#.into(), ..Default::default() };
    let found = app.client.clone().list_studies(request).await.unwrap().into_inner().studies;
    assert_eq!(found, [with_uid]);
    let cleared = app
        .update_study(pb::Study { id: other.id, ..Default::default() }, &["study_instance_uid"])
        .await
        .unwrap();
    assert_eq!(cleared.study_instance_uid, "");
    let revisions = app.revisions(other.id, 10).await.unwrap();
    assert_eq!(revisions[1].study.as_ref().unwrap().study_instance_uid, "2.25.1", "revisions keep it");
}
