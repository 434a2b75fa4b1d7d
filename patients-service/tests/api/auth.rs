//! Tokens over time: expiry during a long-lived channel, key rotation, and
//! the audit trail's retention.

use std::time::{Duration, Instant};

use clinic_proto::patients::v1::{self as pb, patient_service_client::PatientServiceClient};
use clinic_testkit::{TestDb, auth::TestAuth, auth::authed, keys};
use sqlx::ConnectOptions;
use tonic::Code;

use crate::helpers::{TestApp, reason, spawn_app_with};

async fn spawn_with(auth: &TestAuth, leeway_seconds: u64) -> TestApp {
    let settings = clinic_auth::AuthSettings { leeway_seconds, ..auth.settings() };
    spawn_app_with(TestDb::create().await, move |config| config.service.server.auth = settings).await
}

async fn list(app: &TestApp, token: &str) -> Result<(), tonic::Status> {
    PatientServiceClient::new(authed(app.channel.clone(), token))
        .list_patients(pb::ListPatientsRequest {
            page_size: 1,
            page_token: String::new(),
            ..Default::default()
        })
        .await
        .map(drop)
}

/// Waits (bounded) until `token` gets `want` (Ok or a code), polling.
async fn until(
    app: &TestApp,
    token: &str,
    want: Option<Code>,
    within: Duration,
) -> Result<(), tonic::Status> {
    let give_up = Instant::now() + within;
    loop {
        let outcome = list(app, token).await;
        if outcome.as_ref().err().map(tonic::Status::code) == want {
            return outcome;
        }
        assert!(Instant::now() < give_up, "token did not get {want:?} within {within:?}: {outcome:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A token that expires while its channel stays open: accepted until its
/// `exp` (also from the verified-token cache), TOKEN_EXPIRED after.
#[tokio::test]
async fn a_token_stops_working_when_it_expires_on_a_channel_that_stays_open() {
    let auth = TestAuth::new();
    let app = spawn_with(&auth, 0).await;
    let exp = keys::now() + 2;
    let token = auth.sign(&serde_json::json!({
        "iss": clinic_testkit::auth::ISSUER, "aud": clinic_testkit::auth::AUDIENCE,
        "sub": "short-lived", "roles": ["viewer"], "exp": exp,
    }));
    let client = PatientServiceClient::new(authed(app.channel.clone(), &token));
    let give_up = Instant::now() + Duration::from_secs(6);
    let mut accepted = 0;
    let refused = loop {
        let before = keys::now();
        let outcome = client
            .clone()
            .list_patients(pb::ListPatientsRequest {
                page_size: 1,
                page_token: String::new(),
                ..Default::default()
            })
            .await;
        let after = keys::now();
        match outcome {
            Ok(_) => {
                assert!(before <= exp, "accepted at {before}, after exp {exp}");
                accepted += 1;
            }
            Err(status) => {
                assert!(after > exp, "refused at {after}, before exp {exp}: {status:?}");
                break status;
            }
        }
        assert!(Instant::now() < give_up, "the token was never refused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(accepted >= 2, "the token was used (and cached) before it expired");
    assert_eq!((refused.code(), reason(&refused)), (Code::Unauthenticated, "TOKEN_EXPIRED".into()));
    assert!(refused.message().contains("expired"));
}

/// Rotation: a second key in the JWKS is trusted at once, tokens of the
/// first stay valid until the first key is removed, then they are refused.
#[tokio::test]
async fn keys_rotate_through_the_jwks_without_a_restart() {
    let auth = TestAuth::new();
    let app = spawn_with(&auth, 30).await;
    let old = auth.token("ana", &["viewer"]);
    list(&app, &old).await.expect("the first key's token works");

    auth.add_key("test-2");
    let new = auth.token("ana", &["viewer"]);
    assert_ne!(old, new);
    until(&app, &new, None, Duration::from_secs(5)).await.expect("the new key is trusted");
    list(&app, &old).await.expect("the old key still works while it is in the JWKS");

    auth.remove_key("test-1");
    let refused = until(&app, &old, Some(Code::Unauthenticated), Duration::from_secs(5)).await.unwrap_err();
    assert_eq!(reason(&refused), "UNAUTHENTICATED");
    list(&app, &new).await.expect("the new key's tokens keep working");
}

/// Events past the retention are pruned, recent ones kept, and the pruning
/// itself is recorded.
#[tokio::test]
async fn events_past_the_retention_are_pruned_and_the_pruning_is_recorded() {
    let db = TestDb::create().await;
    let app = spawn_app_with(db, |config| {
        config.service.audit.prune_interval = Duration::from_millis(100);
    })
    .await;
    // The owner sets the retention, as the migrate step does with
    // AUDIT_RETENTION_DAYS=30.
    let mut settings = clinic_pg::schema::MigrateSettings::new(
        app.db.owner_url_for(clinic_testkit::ServiceRole::Patients),
        patients_service::ROLE,
    );
    settings.audit_retention_days = 30;
    clinic_pg::schema::migrate(&settings, &patients_service::OWNED_SCHEMA).await.unwrap();
    let mut admin = app.db.admin_options().connect().await.unwrap();
    // One statement, so the pruner (every 100 ms) sees all three or none.
    sqlx::query(
        "insert into patients.audit_event (time, subject, method, patient_ids, code, request_id) \
         select now() - make_interval(days => d), s, 'clinic.patients.v1.PatientService/GetPatient', '{1}', 'OK', 'r' \
         from (values ('old-1', 45), ('old-2', 31), ('recent', 29)) as e(s, d)",
    )
    .execute(&mut admin)
    .await
    .unwrap();
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        let subjects: Vec<String> =
            sqlx::query_scalar("select subject from patients.audit_event order by id")
                .fetch_all(&mut admin)
                .await
                .unwrap();
        if !subjects.iter().any(|s| s.starts_with("old-")) {
            assert!(subjects.contains(&"recent".to_owned()), "{subjects:?}");
            break;
        }
        assert!(Instant::now() < give_up, "not pruned: {subjects:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (subject, method): (String, String) =
        sqlx::query_as("select subject, method from patients.audit_event where subject like 'clinic:%'")
            .fetch_one(&mut admin)
            .await
            .unwrap();
    assert_eq!(subject, "clinic:patients");
    assert!(method.contains("prune 2 audit events"), "{method}");
}
