use tonic::Code;

use crate::helpers::{assert_invalid, reason, spawn_app};

#[tokio::test]
async fn delete_removes_the_patient() {
    let app = spawn_app().await;
    let p = app.create_nth(1).await;
    app.delete(p.id, "", false).await.unwrap();
    assert_eq!(app.get(p.id).await.unwrap_err().code(), Code::NotFound);
    assert!(app.list_all(50).await.is_empty());
}

#[tokio::test]
async fn delete_with_the_current_etag_succeeds() {
    let app = spawn_app().await;
    let p = app.create_nth(1).await;
    app.delete(p.id, &p.etag, false).await.unwrap();
    assert_eq!(app.get(p.id).await.unwrap_err().code(), Code::NotFound);
}

#[tokio::test]
async fn delete_with_a_stale_etag_is_aborted_and_deletes_nothing() {
    let app = spawn_app().await;
    let p = app.create_nth(1).await;
    let changed = app
        .update(
            clinic_proto::patients::v1::Patient { id: p.id, first_name: "Ana".into(), ..Default::default() },
            &[],
        )
        .await
        .unwrap();

    let status = app.delete(p.id, &p.etag, false).await.unwrap_err();

    assert_eq!(status.code(), Code::Aborted);
    assert_eq!(reason(&status), "ETAG_MISMATCH");
    assert_eq!(app.get(p.id).await.unwrap(), changed);
}

#[tokio::test]
async fn delete_of_a_missing_patient_is_not_found() {
    let app = spawn_app().await;
    let status = app.delete(31337, "", false).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(reason(&status), "PATIENT_NOT_FOUND");
    assert!(status.message().contains("31337"));
}

#[tokio::test]
async fn delete_needs_a_positive_id() {
    let app = spawn_app().await;
    assert_invalid(app.delete(0, "", true).await, &["id"]);
}

#[tokio::test]
async fn deleting_twice_is_not_found_the_second_time() {
    let app = spawn_app().await;
    let p = app.create_nth(1).await;
    app.delete(p.id, "", true).await.unwrap();
    assert_eq!(app.delete(p.id, "", true).await.unwrap_err().code(), Code::NotFound);
}
