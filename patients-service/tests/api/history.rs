//! Nothing destroyed: soft delete (AIP-164), undelete, revisions, purge.

use std::time::Duration;

use clinic_proto::{api::v1::ChangeKind, patients::v1 as pb};
use sqlx::ConnectOptions;
use tonic::Code;

use crate::helpers::{patient, reason, spawn_app, spawn_app_with};

fn ana() -> pb::Patient {
    patient("Ana", "Ortiz", "1970-02-03", "ana@ejemplo.com")
}

fn seconds(t: &Option<prost_types::Timestamp>) -> i64 {
    t.as_ref().expect("timestamp set").seconds
}

#[tokio::test]
async fn a_deleted_patient_is_kept_hidden_unless_shown_with_its_delete_and_expire_times() {
    let app = spawn_app().await;
    let kept = app.create(ana()).await.unwrap();
    let other = app.create_nth(2).await;
    app.delete(kept.id, "", false).await.unwrap();

    let hidden = app.get(kept.id).await.unwrap_err();
    assert_eq!((hidden.code(), reason(&hidden).as_str()), (Code::NotFound, "PATIENT_DELETED"));
    let shown = app
        .client
        .clone()
        .get_patient(pb::GetPatientRequest { id: kept.id, show_deleted: true, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((shown.first_name.as_str(), shown.email.as_str()), ("Ana", "ana@ejemplo.com"));
    assert_eq!(seconds(&shown.expire_time) - seconds(&shown.delete_time), 30 * 24 * 3600);

    assert_eq!(app.list_all(10).await.iter().map(|p| p.id).collect::<Vec<_>>(), [other.id]);
    let with_deleted = app
        .client
        .clone()
        .list_patients(pb::ListPatientsRequest { show_deleted: true, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(with_deleted.patients.iter().map(|p| p.id).collect::<Vec<_>>(), [kept.id, other.id]);

    // As before for clients that never set show_deleted: it is gone.
    let again = app.delete(kept.id, "", false).await.unwrap_err();
    assert_eq!(again.code(), Code::NotFound);
    let update =
        app.update(pb::Patient { id: kept.id, first_name: "Anna".into(), ..Default::default() }, &[]).await;
    assert_eq!(update.unwrap_err().code(), Code::NotFound);
}

#[tokio::test]
async fn undelete_restores_the_patient_unless_its_email_was_taken_since() {
    let app = spawn_app().await;
    let first = app.create(ana()).await.unwrap();
    let not_deleted = app
        .client
        .clone()
        .undelete_patient(pb::UndeletePatientRequest { id: first.id, ..Default::default() })
        .await;
    let not_deleted = not_deleted.unwrap_err();
    assert_eq!(
        (not_deleted.code(), reason(&not_deleted).as_str()),
        (Code::FailedPrecondition, "PATIENT_NOT_DELETED")
    );

    app.delete(first.id, "", false).await.unwrap();
    let second = app.create(ana()).await.expect("a deleted patient's email is free");
    let taken = app
        .client
        .clone()
        .undelete_patient(pb::UndeletePatientRequest { id: first.id, ..Default::default() })
        .await;
    let taken = taken.unwrap_err();
    assert_eq!((taken.code(), reason(&taken).as_str()), (Code::FailedPrecondition, "EMAIL_ALREADY_EXISTS"));
    assert!(!taken.message().contains("ana@"), "no personal data in errors: {}", taken.message());

    app.delete(second.id, "", false).await.unwrap();
    let stale = app
        .client
        .clone()
        .undelete_patient(pb::UndeletePatientRequest { id: first.id, etag: first.etag.clone() })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted, "the delete made a revision: the old etag is stale");
    let back = app
        .client
        .clone()
        .undelete_patient(pb::UndeletePatientRequest { id: first.id, etag: "2".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((back.etag.as_str(), back.delete_time, back.expire_time), ("3", None, None));
    assert_eq!(app.get(first.id).await.unwrap(), back);

    let viewer = app.client_as("vera", &["viewer"]);
    let refused = viewer
        .clone()
        .undelete_patient(pb::UndeletePatientRequest { id: first.id, ..Default::default() })
        .await;
    assert_eq!(refused.unwrap_err().code(), Code::PermissionDenied);
}

#[tokio::test]
async fn every_write_is_a_revision_with_its_actor_and_kind_newest_first() {
    let app = spawn_app().await;
    let created = app.create(ana()).await.unwrap();
    let clinician = app.client_as("dr-lee", &["clinician"]);
    clinician
        .clone()
        .update_patient(pb::UpdatePatientRequest {
            patient: Some(pb::Patient { id: created.id, first_name: "Anna".into(), ..Default::default() }),
            update_mask: None,
        })
        .await
        .unwrap();
    app.delete(created.id, "", false).await.unwrap();
    app.client
        .clone()
        .undelete_patient(pb::UndeletePatientRequest { id: created.id, ..Default::default() })
        .await
        .unwrap();

    let revisions = app.revisions(created.id, 3).await.unwrap();
    let summary: Vec<(i64, ChangeKind, &str, &str)> = revisions
        .iter()
        .map(|r| (r.revision, r.kind(), r.actor.as_str(), r.patient.as_ref().unwrap().first_name.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (4, ChangeKind::Undeleted, "test-admin", "Anna"),
            (3, ChangeKind::Deleted, "test-admin", "Anna"),
            (2, ChangeKind::Updated, "dr-lee", "Anna"),
            (1, ChangeKind::Created, "test-admin", "Ana"),
        ]
    );
    assert!(revisions[1].patient.as_ref().unwrap().delete_time.is_some());
    assert_eq!(revisions[0].patient.as_ref().unwrap().etag, "4");
    assert_eq!(*revisions[3].patient.as_ref().unwrap(), created, "revision 1 is the patient as created");

    let old = app
        .client
        .clone()
        .get_patient(pb::GetPatientRequest { id: created.id, revision: 1, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(old, created);
    let missing = app
        .client
        .clone()
        .get_patient(pb::GetPatientRequest { id: created.id, revision: 9, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!((missing.code(), reason(&missing).as_str()), (Code::NotFound, "REVISION_NOT_FOUND"));
    let nobody = app.revisions(created.id + 100, 10).await.unwrap_err();
    assert_eq!(nobody.code(), Code::NotFound);

    // Reading revisions is audited like a read.
    let mut admin = app.db.admin_options().connect().await.unwrap();
    let audited: i64 = sqlx::query_scalar(
        "select count(*) from patients.audit_event where method like '%/ListPatientRevisions' and $1 = any(patient_ids)",
    )
    .bind(created.id)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(audited, 2, "one event per page read");
}

#[tokio::test]
async fn purge_erases_the_patient_and_every_revision_leaving_ids_only() {
    let app = spawn_app().await;
    let gone = app.create(ana()).await.unwrap();
    let purge = |id| {
        let client = app.client.clone();
        async move { client.clone().purge_patient(pb::PurgePatientRequest { id }).await }
    };
    purge(gone.id).await.unwrap();

    let read = app
        .client
        .clone()
        .get_patient(pb::GetPatientRequest { id: gone.id, show_deleted: true, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!((read.code(), reason(&read).as_str()), (Code::NotFound, "PATIENT_NOT_FOUND"));
    assert_eq!(app.revisions(gone.id, 10).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(purge(gone.id).await.unwrap_err().code(), Code::NotFound);

    let mut admin = app.db.admin_options().connect().await.unwrap();
    let left: i64 = sqlx::query_scalar(
        "select (select count(*) from patients.patient_revision where patient_id = $1) \
              + (select count(*) from patients.audit_event where 'ana@ejemplo.com' = any(array[subject, method]))",
    )
    .bind(gone.id)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn deleted_patients_past_their_retention_are_purged_in_the_background() {
    let app = spawn_app_with(clinic_testkit::TestDb::create().await, |config| {
        config.changes.purge_interval = Duration::from_millis(50);
    })
    .await;
    let expired = app.create(ana()).await.unwrap();
    let kept = app.create_nth(2).await;
    app.delete(expired.id, "", false).await.unwrap();
    app.delete(kept.id, "", false).await.unwrap();
    let mut admin = app.db.admin_options().connect().await.unwrap();
    sqlx::query(
        "update patients.patient set delete_time = now() - interval '31 days', expire_time = now() - interval '1 day' \
         where id = $1",
    )
    .bind(expired.id)
    .execute(&mut admin)
    .await
    .unwrap();

    let give_up = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<i64> = sqlx::query_scalar("select id from patients.patient order by id")
            .fetch_all(&mut admin)
            .await
            .unwrap();
        if left == [kept.id] {
            break;
        }
        assert!(tokio::time::Instant::now() < give_up, "still there: {left:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The purge leaves its trace: the service, the work, exactly whose.
    let traced: Vec<(String, String, Vec<i64>)> = sqlx::query_as(
        "select subject, method, patient_ids from patients.audit_event where subject = 'clinic:patients-service'",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(
        traced,
        [("clinic:patients-service".into(), "purge after retention".into(), vec![expired.id])]
    );
}
