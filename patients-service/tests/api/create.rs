use std::collections::HashSet;

use tonic::Code;

use crate::helpers::{assert_invalid, assert_no_internals, patient, reason, spawn_app};

#[tokio::test]
async fn create_patient_returns_the_stored_patient_with_server_assigned_fields() {
    let app = spawn_app().await;
    let mut input = patient("Jose", "Villalobos", "1955-04-10", "pepe@ejemplo.com");
    input.id = 999;
    input.etag = "made-up".into();

    let created = app.create(input).await.unwrap();

    assert!(created.id > 0);
    assert_ne!(created.id, 999, "a client-set id is ignored");
    assert_eq!((created.first_name.as_str(), created.last_name.as_str()), ("Jose", "Villalobos"));
    assert_eq!(created.birth_date, "1955-04-10");
    assert_eq!(created.email, "pepe@ejemplo.com");
    assert!(created.create_time.is_some() && created.update_time.is_some());
    assert!(!created.etag.is_empty() && created.etag != "made-up");
    assert_eq!(app.get(created.id).await.unwrap(), created);
}

#[tokio::test]
async fn create_patient_accepts_unicode_and_punctuated_names() {
    let app = spawn_app().await;
    let names = [
        ("José", "Treviño"),
        ("Diana Laura", "Del Toro"),
        ("Seán", "O'Brien"),
        ("Jean-Luc", "St. Pierre"),
        ("Zoë", "Łukasiewicz"),
    ];
    for (i, (first, last)) in names.into_iter().enumerate() {
        let created =
            app.create(patient(first, last, "1990-05-05", &format!("u{i}@ejemplo.com"))).await.unwrap();
        assert_eq!((created.first_name.as_str(), created.last_name.as_str()), (first, last));
    }
}

#[tokio::test]
async fn create_patient_trims_surrounding_white_space_but_keeps_email_case() {
    let app = spawn_app().await;
    let created = app
        .create(patient("  Jessica ", "\tRamirez  ", " 1971-07-01 ", " Jessica@Ejemplo.com "))
        .await
        .unwrap();
    assert_eq!(created.first_name, "Jessica");
    assert_eq!(created.last_name, "Ramirez");
    assert_eq!(created.birth_date, "1971-07-01");
    assert_eq!(created.email, "Jessica@Ejemplo.com");
}

/// Each rule on its own: exactly one violation, naming the broken field.
#[tokio::test]
async fn create_patient_reports_one_violation_per_broken_field() {
    let app = spawn_app().await;
    let valid = patient("Jose", "Villalobos", "1955-04-10", "pepe@ejemplo.com");
    let long = "a".repeat(101);
    type Breaker = Box<dyn Fn(&mut clinic_proto::patients::v1::Patient)>;
    let cases: Vec<(&str, Breaker)> = vec![
        ("patient.first_name", Box::new(|p| p.first_name = String::new())),
        ("patient.first_name", Box::new(|p| p.first_name = "   ".into())),
        ("patient.first_name", Box::new(move |p| p.first_name = long.clone())),
        ("patient.first_name", Box::new(|p| p.first_name = "R2D2".into())),
        ("patient.last_name", Box::new(|p| p.last_name = String::new())),
        ("patient.last_name", Box::new(|p| p.last_name = "Smith_Jones".into())),
        ("patient.birth_date", Box::new(|p| p.birth_date = String::new())),
        ("patient.birth_date", Box::new(|p| p.birth_date = "10/04/1955".into())),
        ("patient.birth_date", Box::new(|p| p.birth_date = "1955-02-30".into())),
        ("patient.birth_date", Box::new(|p| p.birth_date = "1899-12-31".into())),
        ("patient.birth_date", Box::new(|p| p.birth_date = "2999-01-01".into())),
        ("patient.email", Box::new(|p| p.email = String::new())),
        ("patient.email", Box::new(|p| p.email = "pepe".into())),
        ("patient.email", Box::new(|p| p.email = "pepe@".into())),
        ("patient.email", Box::new(|p| p.email = "pepe@@ejemplo.com".into())),
    ];
    for (field, break_it) in cases {
        let mut input = valid.clone();
        break_it(&mut input);
        let result = app.create(input.clone()).await;
        assert_invalid(result, &[field]);
    }
    assert!(app.list_all(50).await.is_empty(), "nothing was written");
}

#[tokio::test]
async fn create_patient_reports_every_broken_field_at_once() {
    let app = spawn_app().await;
    let result = app.create(patient("", "X1", "1955-13-01", "not-an-email")).await;
    assert_invalid(
        result,
        &["patient.first_name", "patient.last_name", "patient.birth_date", "patient.email"],
    );
}

#[tokio::test]
async fn create_patient_without_a_patient_is_invalid() {
    let app = spawn_app().await;
    let result = app
        .client
        .clone()
        .create_patient(clinic_proto::patients::v1::CreatePatientRequest {
            patient: None,
            request_id: String::new(),
            ..Default::default()
        })
        .await;
    assert_invalid(result, &["patient"]);
}

#[tokio::test]
async fn create_patient_returns_already_exists_when_email_differs_only_in_case() {
    let app = spawn_app().await;
    app.create(patient("Jose", "Villalobos", "1955-04-10", "pepe@ejemplo.com")).await.unwrap();

    let status = app.create(patient("Pepe", "Otro", "1960-01-01", "PEPE@Ejemplo.COM")).await.unwrap_err();

    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(reason(&status), "EMAIL_ALREADY_EXISTS");
    assert!(status.message().contains("email"), "message names the field: {}", status.message());
    assert_no_internals(&status);
    assert_eq!(app.list_all(50).await.len(), 1);
}

#[tokio::test]
async fn concurrent_creates_of_one_email_let_exactly_one_win() {
    let app = spawn_app().await;
    let attempts = (0..20).map(|i| {
        let client = app.client.clone();
        let email = if i % 2 == 0 { "race@ejemplo.com" } else { "RACE@ejemplo.com" };
        let p = patient("Race", "Condition", "1980-01-01", email);
        tokio::spawn(async move {
            client
                .clone()
                .create_patient(clinic_proto::patients::v1::CreatePatientRequest {
                    patient: Some(p),
                    request_id: String::new(),
                    ..Default::default()
                })
                .await
        })
    });
    let results = futures::future::join_all(attempts).await;

    let (ok, err): (Vec<_>, Vec<_>) = results.into_iter().map(|r| r.unwrap()).partition(|r| r.is_ok());
    assert_eq!(ok.len(), 1, "exactly one create wins");
    for status in err.into_iter().map(|r| r.unwrap_err()) {
        assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    }
    assert_eq!(app.list_all(50).await.len(), 1);
}

#[tokio::test]
async fn create_patient_with_a_repeated_request_id_returns_the_first_patient() {
    let app = spawn_app().await;
    let first = app
        .create_with_id(patient("Jose", "Villalobos", "1955-04-10", "pepe@ejemplo.com"), "req-1")
        .await
        .unwrap();

    let again = app
        .create_with_id(patient("Jose", "Villalobos", "1955-04-10", "pepe@ejemplo.com"), "req-1")
        .await
        .unwrap();
    assert_eq!(again, first);

    let other = app
        .create_with_id(patient("Jessica", "Ramirez", "1971-07-01", "jessica@ejemplo.com"), "req-2")
        .await
        .unwrap();
    assert_ne!(other.id, first.id);
    assert_eq!(app.list_all(50).await.len(), 2);
}

#[tokio::test]
async fn concurrent_creates_with_one_request_id_create_one_patient() {
    let app = spawn_app().await;
    let attempts = (0..10).map(|_| {
        let client = app.client.clone();
        tokio::spawn(async move {
            client
                .clone()
                .create_patient(clinic_proto::patients::v1::CreatePatientRequest {
                    patient: Some(patient("Retry", "Storm", "1980-01-01", "retry@ejemplo.com")),
                    request_id: "same-key".into(),
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner().id)
        })
    });
    let ids: HashSet<i64> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .map(|r| r.unwrap().expect("every retry succeeds"))
        .collect();
    assert_eq!(ids.len(), 1, "every retry sees the same patient");
    assert_eq!(app.list_all(50).await.len(), 1);
}

#[tokio::test]
async fn create_patient_rejects_an_overlong_request_id() {
    let app = spawn_app().await;
    let result = app
        .create_with_id(patient("Jose", "Villalobos", "1955-04-10", "pepe@ejemplo.com"), &"k".repeat(129))
        .await;
    assert_invalid(result, &["request_id"]);
}

#[tokio::test]
async fn ids_are_never_reused_after_a_delete() {
    let app = spawn_app().await;
    let first = app.create_nth(1).await;
    app.delete(first.id, "", false).await.unwrap();
    let second = app.create_nth(1).await;
    assert!(second.id > first.id);
}

/// A key reused by mistake must never hand one patient's record to the
/// request of another.
#[tokio::test]
async fn a_request_id_reused_with_another_patient_is_refused_and_creates_nothing() {
    let app = spawn_app().await;
    let first = app
        .create_with_id(patient("Jose", "Villalobos", "1955-04-10", "pepe@ejemplo.com"), "key-1")
        .await
        .unwrap();
    let reused = app
        .create_with_id(patient("Jessica", "Ramirez", "1971-07-01", "jessica@ejemplo.com"), "key-1")
        .await
        .expect_err("another request under the same key");
    assert_eq!(reused.code(), Code::AlreadyExists);
    assert_eq!(reason(&reused), "REQUEST_ID_REUSED");
    assert_no_internals(&reused);
    let all = app.list_all(50).await;
    assert_eq!(all.iter().map(|p| p.id).collect::<Vec<_>>(), vec![first.id], "nothing was created");
    let again = app
        .create_with_id(patient("Jose", "Villalobos", "1955-04-10", "pepe@ejemplo.com"), "key-1")
        .await
        .unwrap();
    assert_eq!(again, first, "the same request under the key still returns the first result");
}

#[tokio::test]
async fn request_ids_are_forgotten_after_their_retention_and_kept_before() {
    let app = spawn_app().await;
    let old =
        app.create_with_id(patient("Ana", "Uno", "1950-01-01", "uno@ejemplo.com"), "old-key").await.unwrap();
    let fresh = app
        .create_with_id(patient("Ana", "Dos", "1950-01-01", "dos@ejemplo.com"), "fresh-key")
        .await
        .unwrap();
    let mut admin = sqlx::ConnectOptions::connect(&app.db.admin_options()).await.unwrap();
    sqlx::query("update patients.create_request set create_time = now() - interval '25 hours' where request_id = 'old-key'")
        .execute(&mut admin)
        .await
        .unwrap();
    // The service prunes on its own (every 200 ms in tests): the expired key
    // becomes free for a new request, the fresh one still answers.
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let reused = loop {
        match app.create_with_id(patient("Ana", "Tres", "1950-01-01", "tres@ejemplo.com"), "old-key").await {
            Ok(created) => break created,
            Err(status) => {
                assert_eq!(reason(&status), "REQUEST_ID_REUSED");
                assert!(std::time::Instant::now() < give_up, "the expired key was never pruned");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    assert_ne!(reused.id, old.id);
    let repeat = app
        .create_with_id(patient("Ana", "Dos", "1950-01-01", "dos@ejemplo.com"), "fresh-key")
        .await
        .unwrap();
    assert_eq!(repeat.id, fresh.id);
}

/// Request ids are the caller's own: another user's create with the same key
/// is a create of its own. Before, it was refused REQUEST_ID_REUSED (a key
/// squatted by someone else) or, for the same fields, answered with the
/// first user's patient.
#[tokio::test]
async fn a_request_id_is_scoped_to_the_caller() {
    use clinic_proto::patients::v1::{CreatePatientRequest, patient_service_client::PatientServiceClient};
    use clinic_testkit::auth::{authed, shared};
    let app = spawn_app().await;
    let as_user = |subject: &str| {
        PatientServiceClient::new(authed(app.channel.clone(), &shared().token(subject, &["clinician"])))
    };
    let create = |p, key: &str| CreatePatientRequest {
        patient: Some(p),
        request_id: key.into(),
        ..Default::default()
    };
    let ana =
        as_user("ana").create_patient(create(patient("Ana", "Uno", "1970-01-01", "ana@k.test"), "k")).await;
    let ana = ana.unwrap().into_inner();
    let bob =
        as_user("bob").create_patient(create(patient("Bob", "Dos", "1971-01-01", "bob@k.test"), "k")).await;
    let bob = bob.expect("another caller's key does not stand in the way").into_inner();
    assert_ne!(bob.id, ana.id);
    // The same fields and key as ana's: not a replay of her create (it
    // would return her patient), but a create of its own.
    let copy =
        as_user("eve").create_patient(create(patient("Ana", "Uno", "1970-01-01", "ana@k.test"), "k")).await;
    assert_eq!(
        copy.unwrap_err().code(),
        Code::AlreadyExists,
        "the email is taken; ana's patient is not returned"
    );
    let again =
        as_user("ana").create_patient(create(patient("Ana", "Uno", "1970-01-01", "ana@k.test"), "k")).await;
    assert_eq!(again.unwrap().into_inner().id, ana.id, "the caller's own repeat is a replay");
}
