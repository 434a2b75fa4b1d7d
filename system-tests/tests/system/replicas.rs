//! Several replicas of a service on one database: the work one replica does
//! for all (the delete cascade, pruning) runs on exactly one of them, and
//! moves to another when that one goes.

use std::time::Duration;

use clinic_pg::leader::lock_key;
use sqlx::{ConnectOptions, PgConnection};

use system_tests::{TestSystem, eventually, spawn_system};

/// Sessions holding the background-work lock of `schema`.
async fn holders(admin: &mut PgConnection, schema: &str) -> i64 {
    let key = lock_key(schema);
    // An advisory lock on a bigint shows as (classid, objid) = (high, low).
    sqlx::query_scalar(
        "select count(*) from pg_locks where locktype = 'advisory' and granted \
         and database = (select oid from pg_database where datname = current_database()) \
         and classid = (($1::bigint >> 32) & 4294967295)::oid and objid = ($1::bigint & 4294967295)::oid and objsubid = 1",
    )
    .bind(key)
    .fetch_one(admin)
    .await
    .unwrap()
}

/// How many of `patient`'s studies the sweeper has not marked deleted yet.
async fn unswept_studies(admin: &mut PgConnection, patient: i64) -> i64 {
    sqlx::query_scalar("select count(*) from studies.study where patient_id = $1 and delete_time is null")
        .bind(patient)
        .fetch_one(admin)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_cascade_runs_on_one_studies_replica_and_moves_when_it_stops_mid_cascade() {
    let mut system: TestSystem = spawn_system().await;
    let admin_options = system.db.admin_options();
    let mut admin = admin_options.connect().await.unwrap();
    eventually(Duration::from_secs(5), "the first replica leads", || {
        let options = admin_options.clone();
        async move { holders(&mut options.connect().await.unwrap(), "studies").await == 1 }
    })
    .await;
    let replica = system.start_studies_replica().await;
    // Give the second replica a few of its one-second tries: still one leader.
    let idle = tokio::time::Instant::now() + Duration::from_millis(2500);
    while tokio::time::Instant::now() < idle {
        assert_eq!(holders(&mut admin, "studies").await, 1, "never two replicas running the cascade");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let patient = system.create_patient(1).await;
    system.insert_studies(patient.id, 20000).await;
    system.delete_patient(patient.id, true).await.unwrap();
    // The leader starts sweeping; stop it while studies remain.
    eventually(Duration::from_secs(10), "the sweep starts", || {
        let options = admin_options.clone();
        async move { unswept_studies(&mut options.connect().await.unwrap(), patient.id).await < 20000 }
    })
    .await;
    system.stop_studies().await;
    let left = unswept_studies(&mut admin, patient.id).await;
    assert!(left > 0, "stopped mid-cascade (all {left} swept already: make the patient bigger)");
    eventually(Duration::from_secs(20), "the other replica takes over and finishes", || {
        let options = admin_options.clone();
        async move { unswept_studies(&mut options.connect().await.unwrap(), patient.id).await == 0 }
    })
    .await;
    assert_eq!(holders(&mut admin, "studies").await, 1, "the remaining replica leads");
    replica.stop().await;
}
