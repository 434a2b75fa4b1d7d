//! Hostile input to StudyService: control characters, oversized filters,
//! floods of bad ids. Each is INVALID_ARGUMENT, never INTERNAL, and cheap.

use clinic_proto::studies::v1 as pb;
use tonic::Code;

use clinic_testkit::assert::{assert_invalid, assert_no_internals};

use crate::helpers::{spawn_app, study};

#[tokio::test]
async fn a_description_with_nul_or_bidi_overrides_is_invalid_not_internal() {
    let app = spawn_app(&[]).await;
    let patient = app.create_patient(1).await;
    for description in ["NO\0FINDINGS", "NORMAL \u{202E}LAMRONBA", "beep\u{7}"] {
        let mut input = study(patient.id);
        input.description = description.into();
        assert_invalid(app.create_study(input).await, &["study.description"]);
    }
    let mut multiline = study(patient.id);
    multiline.description = "Hallazgos:\n\t- sin alteraciones".into();
    app.create_study(multiline).await.expect("tabs and line breaks are text");
}

#[tokio::test]
async fn too_many_patient_ids_are_refused_at_once_with_one_violation() {
    let app = spawn_app(&[]).await;
    let ids: Vec<i64> = (-100_000..0).collect();
    let status = app.list_studies(&ids, 10, "").await.expect_err("100,000 ids");
    assert_eq!(status.code(), Code::InvalidArgument);
    let bad = tonic_types::StatusExt::get_details_bad_request(&status).expect("BadRequest");
    assert_eq!(bad.field_violations.len(), 1);
    assert_eq!(bad.field_violations[0].field, "patient_ids");
}

#[tokio::test]
async fn a_flood_of_bad_fields_lists_at_most_twenty_violations() {
    let app = spawn_app(&[]).await;
    let ids: Vec<i64> = vec![-1; 500];
    let status = app.list_studies(&ids, 10, "").await.expect_err("500 bad ids");
    let bad = tonic_types::StatusExt::get_details_bad_request(&status).expect("BadRequest");
    assert_eq!(bad.field_violations.len(), 20);
    assert!(status.message().contains("480 more"), "{}", status.message());
    assert_no_internals(&status);
}

#[tokio::test]
async fn control_characters_in_a_study_etag_are_invalid() {
    let app = spawn_app(&[]).await;
    let patient = app.create_patient(1).await;
    let created = app.create_study(study(patient.id)).await.unwrap();
    assert_invalid(app.delete_study(created.id, "2\0").await, &["etag"]);
    let update =
        pb::Study { id: created.id, description: "X".into(), etag: "\u{0}".into(), ..Default::default() };
    assert_invalid(app.update_study(update, &["description"]).await, &["study.etag"]);
    assert_eq!(app.get_study(created.id).await.unwrap(), created);
}
