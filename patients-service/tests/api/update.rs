use tonic::Code;

use crate::helpers::{assert_invalid, assert_no_internals, patient, reason, spawn_app};
use clinic_proto::patients::v1 as pb;

/// `original` with a new first name, carrying the etag it was read with.
fn renamed(original: &pb::Patient, first_name: &str) -> pb::Patient {
    pb::Patient {
        id: original.id,
        first_name: first_name.into(),
        etag: original.etag.clone(),
        ..Default::default()
    }
}

#[tokio::test]
async fn update_changes_only_the_masked_fields() {
    let app = spawn_app().await;
    let original = app.create(patient("Jose", "Villalobos", "1955-04-10", "pepe@ejemplo.com")).await.unwrap();
    let change = pb::Patient {
        id: original.id,
        first_name: "José".into(),
        last_name: "Ignored".into(),
        email: "ignored@ejemplo.com".into(),
        ..Default::default()
    };

    let updated = app.update(change, &["first_name"]).await.unwrap();

    assert_eq!(updated.first_name, "José");
    assert_eq!(updated.last_name, "Villalobos");
    assert_eq!(updated.email, "pepe@ejemplo.com");
    assert_eq!(updated.birth_date, "1955-04-10");
    assert_eq!(app.get(original.id).await.unwrap(), updated);
}

#[tokio::test]
async fn update_with_an_empty_mask_changes_every_field_that_is_set() {
    let app = spawn_app().await;
    let original = app.create(patient("Jose", "Villalobos", "1955-04-10", "pepe@ejemplo.com")).await.unwrap();
    let change = pb::Patient {
        id: original.id,
        last_name: "Treviño".into(),
        birth_date: "1956-04-10".into(),
        ..Default::default()
    };

    let updated = app.update(change, &[]).await.unwrap();

    assert_eq!(updated.first_name, "Jose");
    assert_eq!(updated.last_name, "Treviño");
    assert_eq!(updated.birth_date, "1956-04-10");
    assert_eq!(updated.email, "pepe@ejemplo.com");
}

#[tokio::test]
async fn every_update_changes_update_time_and_etag_but_not_create_time() {
    let app = spawn_app().await;
    let original = app.create_nth(1).await;
    let change =
        pb::Patient { id: original.id, first_name: original.first_name.clone(), ..Default::default() };

    let updated = app.update(change, &["first_name"]).await.unwrap();

    assert_ne!(updated.etag, original.etag);
    assert_ne!(updated.update_time, original.update_time);
    assert_eq!(updated.create_time, original.create_time);
}

#[tokio::test]
async fn update_rejects_unknown_and_output_only_paths() {
    let app = spawn_app().await;
    let original = app.create_nth(1).await;
    for paths in
        [&["nickname"][..], &["id"], &["create_time"], &["update_time"], &["etag"], &["first_name", "bogus"]]
    {
        let change = pb::Patient { id: original.id, first_name: "Ana".into(), ..Default::default() };
        assert_invalid(app.update(change, paths).await, &["update_mask"]);
    }
    assert_eq!(app.get(original.id).await.unwrap(), original, "nothing changed");
}

#[tokio::test]
async fn update_validates_each_masked_field() {
    let app = spawn_app().await;
    let original = app.create_nth(1).await;
    let change =
        pb::Patient { id: original.id, first_name: "".into(), email: "nope".into(), ..Default::default() };
    assert_invalid(
        app.update(change, &["first_name", "email"]).await,
        &["patient.first_name", "patient.email"],
    );
}

#[tokio::test]
async fn update_with_nothing_to_change_is_invalid() {
    let app = spawn_app().await;
    let original = app.create_nth(1).await;
    assert_invalid(
        app.update(pb::Patient { id: original.id, ..Default::default() }, &[]).await,
        &["update_mask"],
    );
}

#[tokio::test]
async fn update_needs_a_positive_id() {
    let app = spawn_app().await;
    assert_invalid(
        app.update(pb::Patient { first_name: "Ana".into(), ..Default::default() }, &[]).await,
        &["patient.id"],
    );
}

#[tokio::test]
async fn update_with_a_stale_etag_is_aborted_and_changes_nothing() {
    let app = spawn_app().await;
    let original = app.create_nth(1).await;
    let first = app.update(renamed(&original, "Ana"), &[]).await.unwrap();

    let status = app.update(renamed(&original, "Bea"), &[]).await.unwrap_err();

    assert_eq!(status.code(), Code::Aborted);
    assert_eq!(reason(&status), "ETAG_MISMATCH");
    assert_eq!(app.get(original.id).await.unwrap(), first);
}

#[tokio::test]
async fn update_with_the_current_etag_succeeds() {
    let app = spawn_app().await;
    let original = app.create_nth(1).await;
    let updated = app.update(renamed(&original, "Ana"), &[]).await.unwrap();
    assert_eq!(updated.first_name, "Ana");
}

/// Two writers holding the same etag: exactly one of them wins.
#[tokio::test]
async fn concurrent_updates_with_the_same_etag_let_one_win() {
    let app = spawn_app().await;
    let original = app.create_nth(1).await;
    let attempts = (0..8).map(|i| {
        let client = app.client.clone();
        let change = pb::Patient {
            id: original.id,
            first_name: format!("Writer {}", "abcdefgh".chars().nth(i).unwrap()),
            etag: original.etag.clone(),
            ..Default::default()
        };
        tokio::spawn(async move {
            client
                .clone()
                .update_patient(pb::UpdatePatientRequest { patient: Some(change), update_mask: None })
                .await
        })
    });
    let results: Vec<_> = futures::future::join_all(attempts).await.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(results.iter().filter_map(|r| r.as_ref().err()).all(|s| s.code() == Code::Aborted));
}

#[tokio::test]
async fn update_to_an_email_another_patient_has_is_already_exists() {
    let app = spawn_app().await;
    app.create(patient("Jose", "Villalobos", "1955-04-10", "pepe@ejemplo.com")).await.unwrap();
    let other = app.create(patient("Jessica", "Ramirez", "1971-07-01", "jessica@ejemplo.com")).await.unwrap();

    let status = app
        .update(
            pb::Patient { id: other.id, email: "Pepe@Ejemplo.com".into(), ..Default::default() },
            &["email"],
        )
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(reason(&status), "EMAIL_ALREADY_EXISTS");
    assert_no_internals(&status);
}

#[tokio::test]
async fn a_patient_may_change_the_case_of_their_own_email() {
    let app = spawn_app().await;
    let original = app.create(patient("Jose", "Villalobos", "1955-04-10", "pepe@ejemplo.com")).await.unwrap();
    let updated = app
        .update(
            pb::Patient { id: original.id, email: "Pepe@Ejemplo.com".into(), ..Default::default() },
            &["email"],
        )
        .await
        .unwrap();
    assert_eq!(updated.email, "Pepe@Ejemplo.com");
}

#[tokio::test]
async fn update_of_a_missing_patient_is_not_found() {
    let app = spawn_app().await;
    let status = app
        .update(pb::Patient { id: 777, first_name: "Ana".into(), ..Default::default() }, &[])
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(reason(&status), "PATIENT_NOT_FOUND");
}
