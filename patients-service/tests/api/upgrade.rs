//! Upgrading a deployment: a schema migrated by the release before the
//! baseline (migrations 0001-0008, each service with its own copy of the
//! shared tables) is brought by `patients-service migrate` to exactly the
//! tables a fresh schema gets, keeping its rows.

use std::time::Duration;

use clinic_pg::schema::{self, MigrateSettings, SchemaError};
use clinic_testkit::{ServiceRole, TestDb, legacy};
use patients_service::OWNED_SCHEMA;
use sqlx::{ConnectOptions, PgConnection};

use crate::helpers::{patient, spawn_app, spawn_app_on};

async fn admin(db: &TestDb) -> PgConnection {
    db.admin_options().connect().await.expect("connects as admin")
}

async fn page_token_key(conn: &mut PgConnection) -> Vec<u8> {
    sqlx::query_scalar("select value from patients.service_secret where name = 'page_token_key'")
        .fetch_one(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_schema_of_the_release_before_the_baseline_upgrades_to_the_fresh_tables_and_keeps_its_rows() {
    let old = TestDb::create().await;
    old.migrate(ServiceRole::Patients, &legacy::PATIENTS).await;
    let mut conn = admin(&old).await;
    let id: i64 = sqlx::query_scalar(
        "insert into patients.patient (first_name, last_name, birth_date, email) \
         values ('Ana', 'Ortiz', '1970-02-03', 'ana@ejemplo.com') returning id",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    sqlx::query("update patients.patient set first_name = 'Anna' where id = $1")
        .bind(id)
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(
        "insert into patients.audit_event (subject, method, patient_ids, code, request_id) \
         values ('dr-who', '/clinic.patients.v1.PatientService/GetPatient', array[$1::bigint], 'OK', 'r-1')",
    )
    .bind(id)
    .execute(&mut conn)
    .await
    .unwrap();
    let key = page_token_key(&mut conn).await;

    let app = spawn_app_on(old).await;

    let read = app.get(id).await.expect("the old patient is served");
    assert_eq!((read.first_name.as_str(), read.etag.as_str()), ("Anna", "2"));
    let created = app.create(patient("Bea", "Ruiz", "1981-05-06", "bea@ejemplo.com")).await.expect("creates");
    assert!(created.id > id, "ids continue after the old ones");
    let page = app.list(1, "").await.unwrap();
    assert_eq!(app.list(1, &page.next_page_token).await.unwrap().patients[0].id, created.id);

    let mut conn = admin(&app.db).await;
    assert_eq!(page_token_key(&mut conn).await, key, "the page-token key is kept");
    let events: i64 =
        sqlx::query_scalar("select count(*) from patients.audit_event where request_id = 'r-1'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(events, 1, "the old audit events are kept");

    let fresh = TestDb::create().await;
    fresh.migrate(ServiceRole::Patients, &OWNED_SCHEMA).await;
    let (upgraded, fresh) =
        tokio::join!(legacy::schema_dump(&app.db, "patients"), legacy::schema_dump(&fresh, "patients"));
    assert!(upgraded.contains("CREATE TABLE patients.audit_event"), "the dump holds the schema:\n{upgraded}");
    assert_eq!(upgraded, fresh, "upgraded and fresh schemas differ");
}

#[tokio::test]
async fn a_schema_older_than_the_release_before_the_baseline_is_refused_untouched() {
    let db = TestDb::create().await;
    db.migrate(ServiceRole::Patients, &legacy::PATIENTS).await;
    let mut conn = admin(&db).await;
    sqlx::query("delete from patients._sqlx_migrations where version > 5").execute(&mut conn).await.unwrap();

    let settings =
        MigrateSettings::new(db.owner_url_for(ServiceRole::Patients), ServiceRole::Patients.role());
    let error = schema::migrate(&settings, &OWNED_SCHEMA).await.expect_err("refused");
    assert!(matches!(error, SchemaError::BeforeBaseline { at: 5, needs: 8, .. }), "{error}");
    assert!(error.to_string().contains("migrate with an earlier release first"), "{error}");
    let newest: i64 = sqlx::query_scalar("select max(version) from patients._sqlx_migrations")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(newest, 5);
}

#[tokio::test]
async fn a_shared_step_applied_with_other_sql_is_refused_by_the_migrate_step_and_at_start_up() {
    let app = spawn_app().await;
    let mut conn = admin(&app.db).await;
    sqlx::query("update patients.shared_migration set checksum = '\\x00' where part = 'audit_trail'")
        .execute(&mut conn)
        .await
        .unwrap();

    let settings =
        MigrateSettings::new(app.db.owner_url_for(ServiceRole::Patients), ServiceRole::Patients.role());
    let error = schema::migrate(&settings, &OWNED_SCHEMA).await.expect_err("refused");
    assert!(matches!(error, SchemaError::SharedStepChanged { part: "audit_trail", step: 1, .. }), "{error}");

    let pool = sqlx::PgPool::connect(&app.db.url_for(ServiceRole::Patients)).await.unwrap();
    let error =
        schema::wait_until_migrated(&pool, &OWNED_SCHEMA, Duration::ZERO).await.expect_err("not migrated");
    match error {
        SchemaError::NotMigrated { missing, .. } => assert_eq!(missing, ["audit_trail step 1"]),
        other => panic!("{other}"),
    }
}
