//! Deleting patients across the two services: the precondition, the forced
//! cascade through patients-service's outbox, and its guarantees when
//! studies-service is down, when creates race the delete, and on replay.

use std::time::Duration;

use sqlx::ConnectOptions;
use tonic::Code;
use tonic_types::StatusExt;

use system_tests::{assert_no_internals, reason, spawn_system, study};

const CATCH_UP: Duration = Duration::from_secs(10);

#[tokio::test]
async fn deleting_a_patient_with_studies_without_force_fails_with_a_precondition_failure() {
    let system = spawn_system().await;
    let patient = system.create_patient(1).await;
    system.create_study(study(patient.id)).await.unwrap();

    let status = system.delete_patient(patient.id, false).await.unwrap_err();

    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason(&status), "PATIENT_HAS_STUDIES");
    let failure = status.get_details_precondition_failure().expect("PreconditionFailure");
    assert_eq!(failure.violations[0].subject, format!("patients/{}", patient.id));
    assert!(
        system
            .patient_client
            .clone()
            .get_patient(clinic_proto::patients::v1::GetPatientRequest {
                id: patient.id,
                ..Default::default()
            })
            .await
            .is_ok()
    );
    assert_eq!(system.all_studies(&[patient.id], 50).await.len(), 1);
}

#[tokio::test]
async fn deleting_a_patient_without_studies_needs_no_force() {
    let system = spawn_system().await;
    let patient = system.create_patient(1).await;
    system.delete_patient(patient.id, false).await.unwrap();
}

#[tokio::test]
async fn deleting_without_force_while_studies_service_is_down_is_unavailable_and_keeps_the_patient() {
    let mut system = spawn_system().await;
    let patient = system.create_patient(1).await;
    system.stop_studies().await;

    let status = system.delete_patient(patient.id, false).await.unwrap_err();

    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(reason(&status), "STUDIES_SERVICE_UNAVAILABLE");
    assert_no_internals(&status);
    let still_there = system
        .patient_client
        .clone()
        .get_patient(clinic_proto::patients::v1::GetPatientRequest { id: patient.id, ..Default::default() })
        .await;
    assert!(still_there.is_ok());
}

#[tokio::test]
async fn a_forced_delete_removes_the_patients_studies_and_only_theirs() {
    let system = spawn_system().await;
    let (doomed, other) = (system.create_patient(1).await, system.create_patient(2).await);
    for _ in 0..3 {
        system.create_study(study(doomed.id)).await.unwrap();
    }
    let kept = system.create_study(study(other.id)).await.unwrap();

    system.delete_patient(doomed.id, true).await.unwrap();
    system.wait_until_caught_up(CATCH_UP).await;

    assert!(system.all_studies(&[doomed.id], 50).await.is_empty());
    assert_eq!(system.all_studies(&[], 50).await, vec![kept]);
}

#[tokio::test]
async fn a_forced_delete_while_studies_service_is_down_is_applied_when_it_comes_back() {
    let mut system = spawn_system().await;
    let patient = system.create_patient(1).await;
    for _ in 0..2 {
        system.create_study(study(patient.id)).await.unwrap();
    }
    system.stop_studies().await;

    system.delete_patient(patient.id, true).await.expect("a forced delete needs no studies-service");
    system.start_studies().await;
    system.wait_until_caught_up(CATCH_UP).await;

    assert!(system.all_studies(&[patient.id], 50).await.is_empty());
}

#[tokio::test]
async fn a_deleted_patient_cannot_get_new_studies_even_while_patients_service_is_down() {
    let mut system = spawn_system().await;
    let patient = system.create_patient(1).await;
    system.delete_patient(patient.id, true).await.unwrap();
    system.wait_until_caught_up(CATCH_UP).await;
    system.stop_patients().await;

    let status = system.create_study(study(patient.id)).await.unwrap_err();

    assert_eq!(status.code(), Code::NotFound, "the deletion is known here; no need to ask: {status:?}");
    assert_eq!(reason(&status), "PATIENT_NOT_FOUND");
}

/// Creates racing the delete either fail or are swept away by the cascade:
/// none survives.
#[tokio::test]
async fn studies_created_while_their_patient_is_being_deleted_do_not_survive() {
    let system = spawn_system().await;
    for round in 0..3 {
        let patient = system.create_patient(round).await;
        system.create_study(study(patient.id)).await.unwrap();
        let creates: Vec<_> = (0..16)
            .map(|_| {
                let client = system.study_client.clone();
                let input = study(patient.id);
                tokio::spawn(async move {
                    client
                        .clone()
                        .create_study(clinic_proto::studies::v1::CreateStudyRequest {
                            study: Some(input),
                            request_id: String::new(),
                        })
                        .await
                })
            })
            .collect();
        system.delete_patient(patient.id, true).await.unwrap();
        for result in futures::future::join_all(creates).await {
            if let Err(status) = result.unwrap() {
                assert_eq!(
                    status.code(),
                    Code::NotFound,
                    "a losing create says the patient is gone: {status:?}"
                );
            }
        }
        system.wait_until_caught_up(CATCH_UP).await;

        assert!(system.all_studies(&[patient.id], 100).await.is_empty(), "round {round}: a study survived");
        assert_eq!(system.create_study(study(patient.id)).await.unwrap_err().code(), Code::NotFound);
    }
}

#[tokio::test]
async fn replaying_deletion_events_changes_nothing() {
    let system = spawn_system().await;
    let (doomed, other) = (system.create_patient(1).await, system.create_patient(2).await);
    system.create_study(study(doomed.id)).await.unwrap();
    system.delete_patient(doomed.id, true).await.unwrap();
    system.wait_until_caught_up(CATCH_UP).await;
    let kept = vec![
        system.create_study(study(other.id)).await.unwrap(),
        system.create_study(study(other.id)).await.unwrap(),
    ];

    let mut admin = system.db.admin_options().connect().await.unwrap();
    let rewound = sqlx::query("update studies.event_cursor set position = 0 where source = 'patients-feed'")
        .execute(&mut admin)
        .await
        .unwrap();
    assert_eq!(rewound.rows_affected(), 1, "the cascade's cursor in patients' feed");
    system.wait_until_caught_up(CATCH_UP).await;

    assert_eq!(system.all_studies(&[], 50).await, kept, "other patients' studies are untouched");
    let tombstones: i64 = sqlx::query_scalar("select count(*) from studies.deleted_patient")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(tombstones, 1);
}

/// The interleaving the per-patient lock and the tombstone exist for, made
/// deterministic: a create passes its patient check, the deletion is applied
/// while the create waits (held on an uncommitted claim of its request id),
/// then the create resumes. It must be refused, not leave an orphan.
#[tokio::test]
async fn a_create_that_passed_its_patient_check_before_the_cascade_is_refused_after_it() {
    let system = spawn_system().await;
    let patient = system.create_patient(1).await;
    let mut holder = system.db.admin_options().connect().await.unwrap();
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
                .create_study(clinic_proto::studies::v1::CreateStudyRequest {
                    study: Some(input),
                    request_id: "held".into(),
                })
                .await
        })
    };
    // The create is now blocked on the held claim, its patient check passed.
    wait_for_blocked_claim(&system).await;
    system.delete_patient(patient.id, true).await.unwrap();
    system.wait_until_caught_up(CATCH_UP).await;
    sqlx::raw_sql("rollback").execute(&mut holder).await.unwrap();

    let status = create.await.unwrap().expect_err("the create must not succeed after the cascade");
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(reason(&status), "PATIENT_NOT_FOUND");
    assert!(system.all_studies(&[patient.id], 50).await.is_empty());
}

/// Waits (bounded) until a backend is waiting for a lock in this database.
async fn wait_for_blocked_claim(system: &system_tests::TestSystem) {
    let mut admin = system.db.admin_options().connect().await.unwrap();
    let give_up = std::time::Instant::now() + CATCH_UP;
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
        assert!(std::time::Instant::now() < give_up, "the create never blocked on its claim");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Undeleting a patient lifts their tombstone in studies-service: the
/// studies their forced delete took come back, not one deleted on its own
/// before, and studies may be made to them again.
#[tokio::test]
async fn an_undeleted_patient_gets_back_exactly_the_studies_their_delete_took() {
    let system = spawn_system().await;
    let patient = system.create_patient(1).await;
    let taken = system.create_study(study(patient.id)).await.unwrap();
    let on_its_own = system.create_study(study(patient.id)).await.unwrap();
    system.delete_study(on_its_own.id, "").await.unwrap();
    system.delete_patient(patient.id, true).await.unwrap();
    system.wait_until_caught_up(CATCH_UP).await;
    let refused = system.create_study(study(patient.id)).await.unwrap_err();
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");

    system
        .patient_client
        .clone()
        .undelete_patient(clinic_proto::patients::v1::UndeletePatientRequest {
            id: patient.id,
            ..Default::default()
        })
        .await
        .unwrap();
    system.wait_until_caught_up(CATCH_UP).await;

    let created = system.create_study(study(patient.id)).await.expect("studies may be made again");
    let restored = system.get_study(taken.id).await.expect("restored with the patient");
    assert_eq!((restored.etag.as_str(), &restored.description), ("3", &taken.description));
    assert_eq!(system.all_studies(&[patient.id], 50).await, vec![restored, created]);
}
