use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{assert_invalid, assert_no_internals, reason, spawn_app};

#[tokio::test]
async fn get_patient_returns_not_found_with_error_info_naming_the_id() {
    let app = spawn_app().await;
    let status = app.get(424242).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(reason(&status), "PATIENT_NOT_FOUND");
    assert!(
        status.message().contains("patient") && status.message().contains("424242"),
        "{}",
        status.message()
    );
    let info = status.get_details_error_info().unwrap();
    assert_eq!(info.metadata.get("patient_id").map(String::as_str), Some("424242"));
    assert_no_internals(&status);
}

#[tokio::test]
async fn get_patient_rejects_ids_that_are_not_positive() {
    let app = spawn_app().await;
    assert_invalid(app.get(0).await, &["id"]);
    assert_invalid(app.get(-5).await, &["id"]);
}

#[tokio::test]
async fn get_patient_returns_what_create_returned() {
    let app = spawn_app().await;
    let created = app.create_nth(7).await;
    assert_eq!(app.get(created.id).await.unwrap(), created);
}

/// Many reads at once, more than the pool has connections: each caller
/// gets exactly its own patient (or NOT_FOUND), never another one answered
/// by the same statement.
#[tokio::test]
async fn concurrent_reads_each_get_their_own_patient() {
    let app = crate::helpers::spawn_app_with(clinic_testkit::TestDb::create().await, |c| {
        c.service.db.max_connections = 2;
        c.service.server.max_in_flight = 1000;
        c.service.server.max_in_flight_per_caller = 1000;
    })
    .await;
    let mut created = Vec::new();
    for n in 1..=12 {
        created.push(app.create_nth(n).await);
    }
    let asks: Vec<i64> =
        (0..300).map(|i| if i % 10 == 9 { 900_000 + i } else { created[i as usize % 12].id }).collect();
    let calls = asks.iter().map(|&id| {
        let mut client = app.client.clone();
        async move {
            (
                id,
                client
                    .get_patient(clinic_proto::patients::v1::GetPatientRequest { id, ..Default::default() })
                    .await,
            )
        }
    });
    for (id, answer) in futures::future::join_all(calls).await {
        match answer {
            Ok(found) => {
                let expected = created.iter().find(|p| p.id == id).expect("only existing ids are found");
                assert_eq!(&found.into_inner(), expected);
            }
            Err(status) => {
                assert_eq!(status.code(), Code::NotFound, "{status:?}");
                assert!(id >= 900_000, "patient {id} exists but was not found");
                assert!(status.message().contains(&id.to_string()), "{}", status.message());
            }
        }
    }
}

/// A table `public.thing` (ids 1..=100, names `thing <id>`) in a fresh
/// database, a [`PointReads`] over a pool of `connections` running at most
/// `statements` at once, waiting at most `acquire` for a slot, and an admin
/// connection holding an exclusive lock on the table; returns once a first
/// read (of id 1, spawned) waits for that lock, so one statement is busy.
async fn one_busy_statement(
    acquire: std::time::Duration,
    connections: u32,
    statements: u32,
) -> (
    clinic_pg::coalesce::PointReads<Thing>,
    sqlx::PgConnection,
    tokio::task::JoinHandle<Result<Thing, clinic_pg::api_error::ApiError>>,
) {
    use sqlx::{ConnectOptions, postgres::PgPoolOptions};
    let db = clinic_testkit::TestDb::create().await;
    let mut admin = db.admin_options().connect().await.unwrap();
    sqlx::raw_sql(
        "create table public.thing (id bigint primary key, name text not null); \
         insert into public.thing select g, 'thing ' || g from generate_series(1, 100) g",
    )
    .execute(&mut admin)
    .await
    .unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(acquire)
        .connect_with(db.admin_options())
        .await
        .unwrap();
    let queries = (
        "select id, name from public.thing where id = $1",
        "select id, name from public.thing where id = any($1)",
    );
    let reads = clinic_pg::coalesce::PointReads::<Thing>::start(pool, statements, queries, |r| r.id);
    sqlx::raw_sql("begin; lock table public.thing in access exclusive mode")
        .execute(&mut admin)
        .await
        .unwrap();
    let first = tokio::spawn({
        let reads = reads.clone();
        async move { reads.get(thing(1)).await }
    });
    let mut watcher = db.admin_options().connect().await.unwrap();
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while sqlx::query_scalar::<_, i64>(
        "select count(*) from pg_stat_activity where datname = current_database() \
         and wait_event_type = 'Lock' and query like '%thing where id = $1'",
    )
    .fetch_one(&mut watcher)
    .await
    .unwrap()
        == 0
    {
        assert!(std::time::Instant::now() < give_up, "the first read never reached the database");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    (reads, admin, first)
}

/// A row of `public.thing`.
#[derive(Clone, Debug, sqlx::FromRow)]
struct Thing {
    id: i64,
    name: String,
}

fn thing(n: i64) -> clinic_core::ids::Id<clinic_core::ids::Patient> {
    clinic_core::ids::Id::from_stored(n)
}

/// Reads that queue while the pool's one connection is busy are answered
/// by one statement when it comes free, each with its own row.
#[tokio::test]
async fn reads_queued_behind_a_busy_connection_share_one_statement() {
    reads_queued_behind_a_busy_statement_share_one(1, 1).await;
}

/// Idle connections do not take queued reads one by one: with one
/// statement allowed at once, reads that arrive while it runs wait and share
/// the next, though the pool has connections free (`DB_POINT_READ_STATEMENTS`).
#[tokio::test]
async fn reads_share_a_statement_though_connections_are_free_when_the_statement_limit_is_reached() {
    reads_queued_behind_a_busy_statement_share_one(4, 1).await;
}

async fn reads_queued_behind_a_busy_statement_share_one(connections: u32, statements: u32) {
    let (reads, mut admin, first) =
        one_busy_statement(std::time::Duration::from_secs(20), connections, statements).await;
    // Every read below arrives, one at a time, before the statement ends:
    // each is a task, and the test's one-thread runtime runs the reader
    // between two of them (a free slot would take a read at once).
    let mut queued = Vec::new();
    for n in 2..=60 {
        queued.push(tokio::spawn({
            let reads = reads.clone();
            async move { reads.get(thing(n)).await }
        }));
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }
    sqlx::raw_sql("rollback").execute(&mut admin).await.unwrap();
    assert_eq!(first.await.unwrap().unwrap().name, "thing 1");
    for (n, answer) in (2..=60).zip(futures::future::join_all(queued).await) {
        assert_eq!(answer.unwrap().unwrap().name, format!("thing {n}"));
    }
    assert_eq!(reads.statements(), 2, "the 59 queued reads took one statement");
    assert!(matches!(
        reads.get(thing(1000)).await,
        Err(clinic_pg::api_error::ApiError::NotFound { id: 1000, .. })
    ));
}

/// A read that waits longer than the pool's acquire timeout for a free
/// connection is overload (RESOURCE_EXHAUSTED, retry later), not an
/// unreachable database.
#[tokio::test]
async fn a_read_that_finds_no_free_slot_in_time_is_overload() {
    let (reads, mut admin, first) = one_busy_statement(std::time::Duration::from_millis(300), 1, 1).await;
    let refused = reads.get(thing(2)).await;
    assert!(matches!(refused, Err(clinic_pg::api_error::ApiError::Overloaded)), "{refused:?}");
    let status = tonic::Status::from(refused.unwrap_err());
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(crate::helpers::reason(&status), "OVERLOADED");
    sqlx::raw_sql("rollback").execute(&mut admin).await.unwrap();
    assert_eq!(first.await.unwrap().unwrap().id, 1);
}
