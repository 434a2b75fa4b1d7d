//! Postgres going away and coming back, on a cluster of this test's own.

use std::time::{Duration, Instant};

use clinic_testkit::{PgCluster, TestDb};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::{assert_no_internals, patient, reason, spawn_app_on};

#[tokio::test]
async fn postgres_stopped_means_unavailable_fast_and_not_serving_then_recovery_without_restart() {
    let cluster = tokio::task::spawn_blocking(PgCluster::start).await.unwrap().expect("private cluster");
    let db = TestDb::create_on(cluster.admin_url("postgres").parse().unwrap()).await;
    let app = spawn_app_on(db).await;
    let existing = app.create_nth(1).await;
    app.wait_health("", ServingStatus::Serving, Duration::from_secs(5)).await;

    let cluster = tokio::task::spawn_blocking(move || {
        cluster.stop().expect("stop postgres");
        cluster
    })
    .await
    .unwrap();

    for attempt in 0..2 {
        let started = Instant::now();
        let status = app.get(existing.id).await.unwrap_err();
        let took = started.elapsed();
        assert_eq!(status.code(), Code::Unavailable, "attempt {attempt}: {status:?}");
        assert_eq!(reason(&status), "DATABASE_UNAVAILABLE");
        assert_no_internals(&status);
        assert!(took < Duration::from_millis(2500), "UNAVAILABLE took {took:?}");
    }
    let status = app.create(patient("Ana", "Outage", "1990-01-01", "outage@ejemplo.com")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    app.wait_health("clinic.patients.v1.PatientService", ServingStatus::NotServing, Duration::from_secs(3))
        .await;
    assert_eq!(app.health("").await.unwrap(), ServingStatus::NotServing);
    // Not ready, but alive: a liveness probe does not restart it for an
    // outage a restart cannot fix.
    assert_eq!(app.health(clinic_host::health::LIVENESS).await.unwrap(), ServingStatus::Serving);

    let cluster = tokio::task::spawn_blocking(move || {
        cluster.start_server().expect("restart postgres");
        cluster
    })
    .await
    .unwrap();

    app.wait_health("", ServingStatus::Serving, Duration::from_secs(5)).await;
    assert_eq!(app.get(existing.id).await.unwrap(), existing);
    app.create_nth(3).await;
    assert_eq!(app.list_all(50).await.len(), 2, "nothing was half-written during the outage");
    drop(app.shutdown().await);
    drop(cluster);
}
