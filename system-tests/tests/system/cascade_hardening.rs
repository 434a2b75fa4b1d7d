//! The delete cascade under the conditions that used to break it: a study
//! created in the middle of a non-forced delete, a patient with 30,000
//! studies, one deletion that keeps failing, and
//! reads of a deleted patient's studies before they are swept.

use std::time::{Duration, Instant};

use clinic_proto::studies::{guard::v1 as guard_pb, v1 as pb};
use sqlx::{ConnectOptions, PgConnection};
use tonic::Code;

use system_tests::{TestSystem, eventually, reason, spawn_system, spawn_system_tuned, study};

const WITHIN: Duration = Duration::from_secs(20);

async fn admin_of(system: &TestSystem) -> PgConnection {
    admin(system).await
}

async fn admin(system: &TestSystem) -> PgConnection {
    system.db.admin_options().connect().await.unwrap()
}

/// Rows of `studies.study` (visible or not) of `patient`.
/// How many of `patient`'s studies the sweeper has not marked deleted yet.
async fn unswept_studies(admin: &mut PgConnection, patient: i64) -> i64 {
    sqlx::query_scalar("select count(*) from studies.study where patient_id = $1 and delete_time is null")
        .bind(patient)
        .fetch_one(admin)
        .await
        .unwrap()
}

/// Waits (bounded) until a backend of this database waits for a lock.
async fn wait_for_a_lock_wait(system: &TestSystem) {
    let mut admin = admin(system).await;
    let give_up = Instant::now() + WITHIN;
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "select count(*) from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'",
        )
        .fetch_one(&mut admin)
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        assert!(Instant::now() < give_up, "nothing ever waited for the held lock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The race of a non-forced delete, made deterministic: a create passes its
/// patient check, then waits (held on an uncommitted claim of its request
/// id) while DeletePatient without `force` runs to completion, then goes
/// on. Both must not succeed: the delete found no studies, so the create
/// must fail NOT_FOUND (before, both answered OK and the cascade then
/// removed the study).
#[tokio::test]
async fn a_study_created_during_a_non_forced_delete_cannot_survive_as_an_orphan() {
    let system = spawn_system().await;
    let patient = system.create_patient(1).await;
    let mut holder = admin(&system).await;
    sqlx::raw_sql(
        "begin; insert into studies.create_request (subject, request_id) values ('test-admin', 'held')",
    )
    .execute(&mut holder)
    .await
    .unwrap();
    let create = {
        let client = system.study_client.clone();
        let input = study(patient.id);
        tokio::spawn(async move {
            client
                .clone()
                .create_study(pb::CreateStudyRequest { study: Some(input), request_id: "held".into() })
                .await
        })
    };
    wait_for_a_lock_wait(&system).await;

    let deleted = system.delete_patient(patient.id, false).await;
    sqlx::raw_sql("rollback").execute(&mut holder).await.unwrap();
    let created = create.await.unwrap();

    match (&deleted, &created) {
        (Ok(()), Err(status)) => {
            assert_eq!(status.code(), Code::NotFound, "{status:?}");
            assert_eq!(reason(status), "PATIENT_NOT_FOUND");
        }
        (Err(status), Ok(_)) => assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}"),
        _ => panic!("the delete and the create cannot both be right: {deleted:?} / {created:?}"),
    }
    assert_eq!(unswept_studies(&mut admin(&system).await, patient.id).await, 0);
}

/// A reservation whose delete never came (patients-service crashed after
/// reserving) refuses creates only until studies-service has read the whole
/// outbox past the reservation's timeout and found no deletion.
#[tokio::test]
async fn a_deletion_reservation_that_no_delete_followed_is_lifted() {
    let system = spawn_system().await;
    let patient = system.create_patient(1).await;
    let reserved = system
        .guard_client
        .clone()
        .reserve_patient_deletion(guard_pb::ReservePatientDeletionRequest { patient_id: patient.id })
        .await
        .unwrap()
        .into_inner();
    assert!(!reserved.has_studies);
    let refused = system.create_study(study(patient.id)).await.expect_err("reserved for deletion");
    assert_eq!(refused.code(), Code::NotFound);
    // The test's reservation timeout is 2 s; no deletion event comes.
    let give_up = Instant::now() + WITHIN;
    while system.create_study(study(patient.id)).await.is_err() {
        assert!(Instant::now() < give_up, "the reservation was never lifted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// 30,000 studies go in short chunks, each well inside a 300 ms statement
/// timeout, and a patient deleted after them is cleaned up first: nothing
/// queues behind the big deletion. Their studies disappear from reads at
/// once, before the rows are removed.
#[tokio::test]
async fn a_patient_with_30000_studies_is_deleted_in_chunks_without_holding_up_others() {
    let system =
        spawn_system_tuned(|config| config.service.db.statement_timeout = Duration::from_millis(300)).await;
    let big = system.create_patient(1).await;
    let small = system.create_patient(2).await;
    let mut admin = admin(&system).await;
    system.insert_studies(big.id, 30000).await;
    for _ in 0..3 {
        system.create_study(study(small.id)).await.unwrap();
    }

    system.delete_patient(big.id, true).await.unwrap();
    system.delete_patient(small.id, true).await.unwrap();

    eventually(WITHIN, "the big patient's studies are hidden", || async {
        system.list_studies(&[big.id], 10, "").await.unwrap().studies.is_empty()
    })
    .await;
    let give_up = Instant::now() + WITHIN;
    while unswept_studies(&mut admin, small.id).await > 0 {
        assert!(Instant::now() < give_up, "the small patient's studies were never removed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let left = unswept_studies(&mut admin, big.id).await;
    assert!(left > 0, "the small deletion waited until the big one was done");
    eventually(Duration::from_secs(120), "every study of the big patient is removed", || async {
        unswept_studies(&mut admin_of(&system).await, big.id).await == 0
    })
    .await;
}

/// One deletion that keeps failing is retried with backoff, and the others
/// are applied meanwhile; once the cause is gone it is applied too.
#[tokio::test]
async fn a_failing_deletion_is_retried_while_the_others_go_on() {
    let system = spawn_system().await;
    let stuck = system.create_patient(1).await;
    let fine = system.create_patient(2).await;
    system.create_study(study(stuck.id)).await.unwrap();
    system.create_study(study(fine.id)).await.unwrap();
    let mut admin = admin(&system).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "create function studies.fail_for_test() returns trigger language plpgsql as $$ \
         begin if new.patient_id = {} then raise exception 'injected failure'; end if; return new; end $$; \
         create trigger fail_for_test before insert or update on studies.deleted_patient \
         for each row execute function studies.fail_for_test()",
        stuck.id
    )))
    .execute(&mut admin)
    .await
    .unwrap();

    system.delete_patient(stuck.id, true).await.unwrap();
    system.delete_patient(fine.id, true).await.unwrap();

    eventually(WITHIN, "the deletion behind the failing one is applied", || async {
        system.list_studies(&[fine.id], 10, "").await.unwrap().studies.is_empty()
    })
    .await;
    assert_eq!(system.list_studies(&[stuck.id], 10, "").await.unwrap().studies.len(), 1);
    sqlx::raw_sql("drop trigger fail_for_test on studies.deleted_patient").execute(&mut admin).await.unwrap();
    eventually(WITHIN, "the failed deletion is applied on a retry", || async {
        system.list_studies(&[stuck.id], 10, "").await.unwrap().studies.is_empty()
    })
    .await;
}

/// Between the deletion being applied and the sweeper marking the rows, a
/// deleted patient's studies answer as if they were deleted: no read, no
/// update, and no move of one to another patient.
#[tokio::test]
async fn studies_of_a_deleted_patient_are_gone_before_they_are_swept() {
    let system = spawn_system().await;
    let deleted = system.create_patient(1).await;
    let other = system.create_patient(2).await;
    let kept = system.create_study(study(deleted.id)).await.unwrap();
    let mut admin = admin(&system).await;
    // Rows of this patient cannot be marked or removed: the sweeper keeps failing.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "create function studies.keep_for_test() returns trigger language plpgsql as $$ \
         begin if old.patient_id = {} then raise exception 'kept'; end if; \
         if tg_op = 'DELETE' then return old; end if; return new; end $$; \
         create trigger keep_for_test before update or delete on studies.study \
         for each row execute function studies.keep_for_test()",
        deleted.id
    )))
    .execute(&mut admin)
    .await
    .unwrap();

    system.delete_patient(deleted.id, true).await.unwrap();
    eventually(WITHIN, "the deletion is applied", || async {
        system.get_study(kept.id).await.is_err_and(|s| s.code() == Code::NotFound)
    })
    .await;

    assert_eq!(unswept_studies(&mut admin, deleted.id).await, 1, "the row is not marked yet");
    let request = pb::GetStudyRequest { id: kept.id, show_deleted: true, ..Default::default() };
    let shown = system.study_client.clone().get_study(request).await.unwrap().into_inner();
    assert!(shown.delete_time.is_some(), "deleted with its patient");
    assert!(system.list_studies(&[deleted.id], 10, "").await.unwrap().studies.is_empty());
    assert!(system.all_studies(&[], 10).await.is_empty());
    let moved = pb::Study { id: kept.id, patient_id: other.id, ..Default::default() };
    let status = system.update_study(moved, &["patient_id"]).await.expect_err("moving it away");
    assert_eq!(status.code(), Code::NotFound);
    let edited = pb::Study { id: kept.id, description: "EDITED".into(), ..Default::default() };
    assert_eq!(system.update_study(edited, &["description"]).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(system.delete_study(kept.id, "").await.unwrap_err().code(), Code::NotFound);
}
