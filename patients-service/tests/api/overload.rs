//! Overload is not an outage: when the service is busier than it can serve
//! it says RESOURCE_EXHAUSTED, early, and stays SERVING while Postgres
//! answers.

use std::time::{Duration, Instant};

use clinic_testkit::TestDb;
use sqlx::{ConnectOptions, PgConnection};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::{TestApp, assert_no_internals, reason, spawn_app_with};

/// Holds every read of patients until dropped (or rolled back).
async fn block_reads(app: &TestApp) -> PgConnection {
    let mut blocker = app.db.admin_options().connect().await.unwrap();
    sqlx::raw_sql("begin; lock table patients.patient in access exclusive mode")
        .execute(&mut blocker)
        .await
        .unwrap();
    blocker
}

/// Waits (bounded) until `n` backends of the service wait for the lock:
/// any of them, or only GetPatient reads (the background re-indexing may
/// wait on the lock too, on a pooled connection, but is not an rpc).
async fn wait_for_blocked(app: &TestApp, n: i64, only_reads: bool) {
    let mut admin = app.db.admin_options().connect().await.unwrap();
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "select count(*) from pg_stat_activity where datname = current_database() \
             and usename = 'clinic_patients' and wait_event_type = 'Lock' \
             and (not $1 or query like '%from patients.patient where delete_time is null%')",
        )
        .bind(only_reads)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        if waiting >= n {
            return;
        }
        assert!(Instant::now() < give_up, "only {waiting} of {n} calls got to wait for the lock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every pooled connection is busy and stays busy: a further call gets
/// RESOURCE_EXHAUSTED (OVERLOADED), not "database unreachable", and health,
/// which has its own connection, never leaves SERVING.
#[tokio::test]
async fn a_saturated_pool_is_overload_not_an_outage_and_health_stays_serving() {
    let app = spawn_app_with(TestDb::create().await, |c| {
        c.service.db.max_connections = 2;
        c.service.db.acquire_timeout = Duration::from_millis(300);
        c.service.db.health_probe_interval = Duration::from_millis(100);
    })
    .await;
    let patient = app.create_nth(1).await;
    app.wait_health("", ServingStatus::Serving, Duration::from_secs(5)).await;
    let mut watch = tonic_health::pb::health_client::HealthClient::new(app.channel.clone())
        .watch(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().status(), ServingStatus::Serving);

    let mut blocker = block_reads(&app).await;
    let held: Vec<_> = (0..2)
        .map(|_| {
            let client = app.client.clone();
            tokio::spawn(async move {
                let list =
                    clinic_proto::patients::v1::ListPatientsRequest { page_size: 10, ..Default::default() };
                client.clone().list_patients(list).await.map(drop)
            })
        })
        .collect();
    wait_for_blocked(&app, 2, false).await;

    let during = tokio::time::timeout(Duration::from_millis(600), watch.message()).await;
    assert!(during.is_err(), "health changed while the pool was saturated: {during:?}");
    assert_eq!(app.health("").await.unwrap(), ServingStatus::Serving);
    for _ in 0..3 {
        let status = app.get(patient.id).await.expect_err("no connection is free");
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert_eq!(reason(&status), "OVERLOADED");
        assert_no_internals(&status);
    }

    sqlx::raw_sql("rollback").execute(&mut blocker).await.unwrap();
    // A held read that found no free connection (the re-indexing may have
    // held one) was itself refused as overload; the others complete.
    let mut completed = 0;
    for call in held {
        match call.await.unwrap() {
            Ok(_) => completed += 1,
            Err(status) => assert_eq!(reason(&status), "OVERLOADED", "{status:?}"),
        }
    }
    assert!(completed >= 1, "no held read completed");
    app.get(patient.id).await.expect("served again");
}

/// Past the in-flight limit a call is refused at once, not queued; health
/// checks are never refused.
#[tokio::test]
async fn calls_past_the_in_flight_limit_are_shed_at_once_and_health_still_answers() {
    let app = spawn_app_with(TestDb::create().await, |c| c.service.server.max_in_flight = 2).await;
    let patient = app.create_nth(1).await;
    let mut blocker = block_reads(&app).await;
    let held: Vec<_> = (0..2)
        .map(|_| {
            let client = app.client.clone();
            tokio::spawn(async move {
                let list =
                    clinic_proto::patients::v1::ListPatientsRequest { page_size: 10, ..Default::default() };
                client.clone().list_patients(list).await.map(drop)
            })
        })
        .collect();
    wait_for_blocked(&app, 2, true).await;

    let started = Instant::now();
    let status = app.get(patient.id).await.expect_err("over the limit");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason(&status), "OVERLOADED");
    assert!(started.elapsed() < Duration::from_millis(200), "shed after {:?}", started.elapsed());
    assert_eq!(app.health("").await.unwrap(), ServingStatus::Serving);

    sqlx::raw_sql("rollback").execute(&mut blocker).await.unwrap();
    for call in held {
        call.await.unwrap().expect("the held reads complete");
    }
    app.get(patient.id).await.expect("served again");
}
