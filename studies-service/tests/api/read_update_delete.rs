use clinic_proto::studies::v1 as pb;
use tonic::Code;

use clinic_testkit::assert::{assert_invalid, reason};

use crate::helpers::{spawn_app, study};

#[tokio::test]
async fn get_study_of_an_unknown_id_is_not_found_and_bad_ids_are_invalid() {
    let app = spawn_app(&[]).await;
    let status = app.get_study(4242).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(reason(&status), "STUDY_NOT_FOUND");
    assert!(status.message().contains("study") && status.message().contains("4242"));
    assert_invalid(app.get_study(0).await, &["id"]);
}

#[tokio::test]
async fn update_changes_only_masked_fields_and_every_update_changes_the_etag() {
    let app = spawn_app(&[]).await;
    let patient = app.create_patient(1).await;
    let original = app.create_study(study(patient.id)).await.unwrap();
    let change = pb::Study {
        id: original.id,
        body_part: pb::BodyPart::Neck.into(),
        description: "ignored".into(),
        ..Default::default()
    };

    let updated = app.update_study(change, &["body_part"]).await.unwrap();

    assert_eq!(updated.body_part(), pb::BodyPart::Neck);
    assert_eq!(updated.description, original.description);
    assert_eq!(updated.study_type(), original.study_type());
    assert_ne!(updated.etag, original.etag);
    assert_ne!(updated.update_time, original.update_time);
    assert_eq!(updated.create_time, original.create_time);
}

#[tokio::test]
async fn update_with_an_empty_mask_changes_every_set_field() {
    let app = spawn_app(&[]).await;
    let patient = app.create_patient(1).await;
    let original = app.create_study(study(patient.id)).await.unwrap();
    let change = pb::Study {
        id: original.id,
        urgency_level: pb::UrgencyLevel::Low.into(),
        description: "UNUSUAL RATIO".into(),
        ..Default::default()
    };
    let updated = app.update_study(change, &[]).await.unwrap();
    assert_eq!(updated.urgency_level(), pb::UrgencyLevel::Low);
    assert_eq!(updated.description, "UNUSUAL RATIO");
    assert_eq!(updated.body_part(), pb::BodyPart::Stomach);
}

#[tokio::test]
async fn update_rejects_unknown_paths_output_only_paths_and_unspecified_values() {
    let app = spawn_app(&[]).await;
    let patient = app.create_patient(1).await;
    let original = app.create_study(study(patient.id)).await.unwrap();
    for paths in [&["type"][..], &["etag"], &["id"], &["create_time"]] {
        let change = pb::Study { id: original.id, description: "x".into(), ..Default::default() };
        assert_invalid(app.update_study(change, paths).await, &["update_mask"]);
    }
    let change = pb::Study { id: original.id, ..Default::default() };
    assert_invalid(app.update_study(change, &["study_type"]).await, &["study.study_type"]);
    assert_eq!(app.get_study(original.id).await.unwrap(), original);
}

#[tokio::test]
async fn moving_a_study_checks_the_new_patient() {
    let app = spawn_app(&[]).await;
    let (a, b) = (app.create_patient(1).await, app.create_patient(2).await);
    let original = app.create_study(study(a.id)).await.unwrap();

    let status = app
        .update_study(pb::Study { id: original.id, patient_id: 99999, ..Default::default() }, &["patient_id"])
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(reason(&status), "PATIENT_NOT_FOUND");

    let moved = app
        .update_study(pb::Study { id: original.id, patient_id: b.id, ..Default::default() }, &["patient_id"])
        .await
        .unwrap();
    assert_eq!(moved.patient_id, b.id);
}

#[tokio::test]
async fn stale_etags_abort_updates_and_deletes() {
    let app = spawn_app(&[]).await;
    let patient = app.create_patient(1).await;
    let original = app.create_study(study(patient.id)).await.unwrap();
    let current = app
        .update_study(pb::Study { id: original.id, description: "first".into(), ..Default::default() }, &[])
        .await
        .unwrap();

    let stale = pb::Study {
        id: original.id,
        description: "second".into(),
        etag: original.etag.clone(),
        ..Default::default()
    };
    let status = app.update_study(stale, &[]).await.unwrap_err();
    assert_eq!(status.code(), Code::Aborted);
    assert_eq!(reason(&status), "ETAG_MISMATCH");

    let status = app.delete_study(original.id, &original.etag).await.unwrap_err();
    assert_eq!(status.code(), Code::Aborted);
    assert_eq!(app.get_study(original.id).await.unwrap(), current);

    app.delete_study(original.id, &current.etag).await.unwrap();
    assert_eq!(app.get_study(original.id).await.unwrap_err().code(), Code::NotFound);
}

#[tokio::test]
async fn deleting_an_unknown_study_is_not_found() {
    let app = spawn_app(&[]).await;
    let status = app.delete_study(777, "").await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(reason(&status), "STUDY_NOT_FOUND");
}
