//! Input written to hurt: control characters, invisible names, another
//! spelling of a taken email, oversized fields. Each is INVALID_ARGUMENT (or
//! the rule it breaks), never INTERNAL, and cheap.

use tonic::Code;

use crate::helpers::{assert_invalid, assert_no_internals, patient, reason, spawn_app};

#[tokio::test]
async fn control_characters_in_ids_and_etags_are_invalid_not_internal() {
    let app = spawn_app().await;
    let created = app.create_nth(1).await;
    let result =
        app.create_with_id(patient("Ana", "Lopez", "1990-01-01", "ana@ejemplo.com"), "key\0one").await;
    assert_invalid(result, &["request_id"]);
    assert_invalid(app.delete(created.id, "1\0", false).await, &["etag"]);
    let update = clinic_proto::patients::v1::Patient {
        id: created.id,
        first_name: "Ana".into(),
        etag: "\u{1b}[2J".into(),
        ..Default::default()
    };
    assert_invalid(app.update(update, &["first_name"]).await, &["patient.etag"]);
    assert_eq!(app.get(created.id).await.unwrap(), created, "nothing changed");
}

#[tokio::test]
async fn names_made_of_invisible_or_format_characters_are_invalid() {
    let app = spawn_app().await;
    for (i, name) in ["\u{3164}", "\u{3164}\u{3164}\u{3164}", "\u{200B}\u{200B}", "\u{202E}Ana", "Ana\u{0}"]
        .iter()
        .enumerate()
    {
        let result = app.create(patient(name, "Lopez", "1990-01-01", &format!("i{i}@ejemplo.com"))).await;
        assert_invalid(result, &["patient.first_name"]);
    }
}

#[tokio::test]
async fn an_email_spelled_with_a_combining_accent_is_the_same_email() {
    let app = spawn_app().await;
    let precomposed =
        app.create(patient("José", "Lopez", "1990-01-01", "jos\u{e9}@ejemplo.com")).await.unwrap();
    let decomposed = app
        .create(patient("José", "Lopez", "1990-01-01", "jose\u{301}@ejemplo.com"))
        .await
        .expect_err("the same address in another normal form");
    assert_eq!(decomposed.code(), Code::AlreadyExists);
    assert_eq!(reason(&decomposed), "EMAIL_ALREADY_EXISTS");
    assert_eq!(app.list_all(50).await, vec![precomposed]);
}

#[tokio::test]
async fn oversized_fields_are_refused_by_size_before_anything_else() {
    let app = spawn_app().await;
    let huge = "a".repeat(1 << 20);
    let status = app.create(patient(&huge, &huge, "1990-01-01", &huge)).await.expect_err("oversized");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("bytes"), "{}", status.message());
    assert_no_internals(&status);
    let token = app.list(10, &"A".repeat(10_000)).await.expect_err("an oversized token");
    assert_eq!(reason(&token), "INVALID_PAGE_TOKEN");
}
