use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{assert_invalid, assert_no_internals, reason, spawn_app};

#[tokio::test]
async fn get_patient_returns_not_found_with_error_info_naming_the_id() {
    let app = spawn_app().await;
    let status = app.get(424242).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(reason(&status), "PATIENT_NOT_FOUND");
    assert!(
        status.message().contains("patient") && status.message().contains("424242"),
        "{}",
        status.message()
    );
    let info = status.get_details_error_info().unwrap();
    assert_eq!(info.metadata.get("patient_id").map(String::as_str), Some("424242"));
    assert_no_internals(&status);
}

#[tokio::test]
async fn get_patient_rejects_ids_that_are_not_positive() {
    let app = spawn_app().await;
    assert_invalid(app.get(0).await, &["id"]);
    assert_invalid(app.get(-5).await, &["id"]);
}

#[tokio::test]
async fn get_patient_returns_what_create_returned() {
    let app = spawn_app().await;
    let created = app.create_nth(7).await;
    assert_eq!(app.get(created.id).await.unwrap(), created);
}
