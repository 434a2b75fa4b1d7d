//! Upgrading a deployment: a schema migrated by the release before the
//! baseline (migrations 0001-0007, each service with its own copy of the
//! shared tables) is brought by `studies-service migrate` to exactly the
//! tables a fresh schema gets, keeping its rows and its cascade's state.

use std::time::Duration;

use clinic_testkit::{ServiceRole, TestDb, assert::eventually, legacy};
use sqlx::ConnectOptions;
use studies_service::{OWNED_SCHEMA, domain::PatientEventKind};
use tonic::Code;

use crate::helpers::{spawn_app_on, study};

#[tokio::test]
async fn a_schema_of_the_release_before_the_baseline_upgrades_to_the_fresh_tables_and_keeps_its_rows() {
    let old = TestDb::create().await;
    old.migrate(ServiceRole::Studies, &legacy::STUDIES).await;
    let mut conn = old.admin_options().connect().await.unwrap();
    let insert = "insert into studies.study (patient_id, urgency_level, body_part, description, study_type) \
                  values ($1, 'LOW', 'HEAD', 'OLD FINDINGS', 'CT') returning id";
    let kept: i64 = sqlx::query_scalar(insert).bind(7_i64).fetch_one(&mut conn).await.unwrap();
    let cascaded: i64 = sqlx::query_scalar(insert).bind(8_i64).fetch_one(&mut conn).await.unwrap();
    sqlx::query("update studies.study set description = 'NO FINDINGS' where id = $1")
        .bind(kept)
        .execute(&mut conn)
        .await
        .unwrap();
    let retried: i64 = sqlx::query_scalar(insert).bind(9_i64).fetch_one(&mut conn).await.unwrap();
    // The old cascade's state: patient 8's deletion applied from the outbox
    // (its sequence there, 57), patient 9's set aside for a retry.
    sqlx::raw_sql(
        "insert into studies.deleted_patient (patient_id, event_sequence) values (8, 57); \
         insert into studies.event_retry (sequence, patient_id, retry_after, last_error) values (58, 9, now(), 'x')",
    )
    .execute(&mut conn)
    .await
    .unwrap();

    let app = spawn_app_on(old, &[7]).await;

    let read = app.get_study(kept).await.expect("the old study is served");
    assert_eq!((read.description.as_str(), read.etag.as_str()), ("NO FINDINGS", "2"));
    let hidden = app.get_study(cascaded).await.expect_err("the deleted patient's study stays hidden");
    assert_eq!(hidden.code(), Code::NotFound);
    let created = app.create_study(study(7)).await.expect("creates");
    assert!(created.id > cascaded, "ids continue after the old ones");
    let waiting = app.get_study(retried).await.expect_err("the deletion waiting for a retry is applied");
    assert_eq!(waiting.code(), Code::NotFound);
    assert_eq!(app.create_study(study(9)).await.unwrap_err().code(), Code::NotFound);
    // The feed numbers from 1: its undelete of patient 8 lifts the outbox's
    // tombstone and brings back the study that deletion took.
    app.patient_feed.publish(8, PatientEventKind::Undeleted);
    eventually(Duration::from_secs(10), "patient 8's study is back", || async {
        app.get_study(cascaded).await.is_ok()
    })
    .await;

    let fresh = TestDb::create().await;
    fresh.migrate(ServiceRole::Studies, &OWNED_SCHEMA).await;
    let (upgraded, fresh) =
        tokio::join!(legacy::schema_dump(&app.db, "studies"), legacy::schema_dump(&fresh, "studies"));
    assert!(upgraded.contains("CREATE TABLE studies.audit_event"), "the dump holds the schema:\n{upgraded}");
    assert_eq!(upgraded, fresh, "upgraded and fresh schemas differ");
}
