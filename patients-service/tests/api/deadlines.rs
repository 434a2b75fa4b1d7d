//! A deadline never lies about a write: a create either commits and answers
//! OK, or answers an error and leaves nothing, whenever its deadline falls.
//!
//! These tests call through a client that sends `grpc-timeout` but does not
//! give up on its own, so what they see is the server's own answer.

use std::{collections::HashMap, time::Duration};

use clinic_proto::patients::v1::{self as pb, patient_service_client::PatientServiceClient};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tonic::{Code, Request, codegen::http::Uri};

use crate::helpers::{TestApp, patient, reason, spawn_app};

type Unenforced = PatientServiceClient<Client<HttpConnector, tonic::body::Body>>;

/// A client whose deadlines only the server enforces.
fn unenforced_client(app: &TestApp) -> Unenforced {
    let client = Client::builder(TokioExecutor::new()).http2_only(true).build_http();
    let origin: Uri = format!("http://{}", app.addr).parse().unwrap();
    PatientServiceClient::with_origin(client, origin)
}

fn create(email: &str, timeout: Duration) -> Request<pb::CreatePatientRequest> {
    let mut request = Request::new(pb::CreatePatientRequest {
        patient: Some(patient("Ana", "Plazo", "1990-01-01", email)),
        request_id: String::new(),
        ..Default::default()
    });
    request.set_timeout(timeout);
    let token = clinic_testkit::auth::shared().token("deadline-tester", &["clinician"]);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// The stored emails, once no statement of the service is still running
/// (a write abandoned by its caller may still be finishing in Postgres).
async fn stored_emails(app: &TestApp) -> Vec<String> {
    let mut admin = sqlx::ConnectOptions::connect(&app.db.admin_options()).await.unwrap();
    let give_up = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let running: i64 = sqlx::query_scalar(
            "select count(*) from pg_stat_activity where datname = current_database() \
             and usename = 'clinic_patients' and state <> 'idle'",
        )
        .fetch_one(&mut admin)
        .await
        .unwrap();
        if running == 0 {
            break;
        }
        assert!(std::time::Instant::now() < give_up, "the service's statements never finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.list_all(1000).await.into_iter().map(|p| p.email).collect()
}

/// The commit itself takes 300 ms (a deferred trigger sleeps in it) and the
/// deadline is 100 ms: the create has begun to commit when the deadline
/// passes, so the server waits for the outcome and tells it.
#[tokio::test]
async fn a_create_still_committing_at_its_deadline_answers_its_real_outcome() {
    let app = spawn_app().await;
    let mut admin = sqlx::ConnectOptions::connect(&app.db.admin_options()).await.unwrap();
    sqlx::raw_sql(
        "create function patients.slow_commit() returns trigger language plpgsql as \
         $$ begin perform pg_sleep(0.3); return null; end $$; \
         create constraint trigger slow_commit after insert on patients.patient \
         deferrable initially deferred for each row execute function patients.slow_commit()",
    )
    .execute(&mut admin)
    .await
    .unwrap();

    let answer =
        unenforced_client(&app).create_patient(create("slow@ejemplo.com", Duration::from_millis(100))).await;
    let stored = stored_emails(&app).await.contains(&"slow@ejemplo.com".to_owned());

    match answer {
        Ok(_) => assert!(stored, "OK, but nothing was stored"),
        Err(status) => assert!(!stored, "answered {:?}, but the patient was stored", status.code()),
    }
}

/// Many creates with deadlines around their own latency: every OK has its
/// row, and every DEADLINE_EXCEEDED left none.
#[tokio::test]
async fn answers_agree_with_rows_for_deadlines_near_the_latency() {
    let app = spawn_app().await;
    let client = unenforced_client(&app);
    let mut latencies = Vec::new();
    for i in 0..20 {
        let started = std::time::Instant::now();
        client
            .clone()
            .create_patient(create(&format!("warm{i}@ejemplo.com"), Duration::from_secs(5)))
            .await
            .unwrap();
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let median = latencies[latencies.len() / 2];

    let attempts = (0..240).map(|i| {
        let mut client = client.clone();
        let timeout = median.mul_f64(rand::random_range(0.2..2.5));
        async move {
            let email = format!("p{i}@ejemplo.com");
            let answer = client.create_patient(create(&email, timeout)).await;
            (email, answer.map(|_| ()))
        }
    });
    let mut answers = HashMap::new();
    let mut chunks = futures::stream::iter(attempts).buffer_unordered(8);
    while let Some((email, answer)) = futures::StreamExt::next(&mut chunks).await {
        answers.insert(email, answer);
    }
    let stored = stored_emails(&app).await;

    let mut late = 0;
    for (email, answer) in &answers {
        match answer {
            Ok(()) => assert!(stored.contains(email), "{email}: OK, but no row"),
            Err(status) => {
                assert_eq!(status.code(), Code::DeadlineExceeded, "{email}: {status:?}");
                assert_eq!(reason(status), "DEADLINE_EXCEEDED");
                assert!(!stored.contains(email), "{email}: DEADLINE_EXCEEDED, but the row was written");
                late += 1;
            }
        }
    }
    assert!(
        late > 0 && late < answers.len(),
        "deadlines straddle the latency: {late} of {} late",
        answers.len()
    );
}

use futures::StreamExt as _;
