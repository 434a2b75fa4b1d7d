//! Nothing destroyed: studies' soft delete (AIP-164), undelete, revisions
//! with their actor and cause, the cascade of a patient's delete, undelete
//! and purge as patients-service's feed tells it, and the studies' feed.

use std::time::Duration;

use clinic_proto::{api::v1::ChangeKind, studies::v1 as pb};
use clinic_testkit::assert::{eventually, reason};
use sqlx::ConnectOptions;
use studies_service::domain::PatientEventKind;
use tonic::Code;

use crate::helpers::{TestApp, spawn_app, study};

const WITHIN: Duration = Duration::from_secs(10);

fn seconds(t: &Option<prost_types::Timestamp>) -> i64 {
    t.as_ref().expect("timestamp set").seconds
}

async fn undelete(app: &TestApp, id: i64, etag: &str) -> Result<pb::Study, tonic::Status> {
    let request = pb::UndeleteStudyRequest { id, etag: etag.into() };
    app.client.clone().undelete_study(request).await.map(|r| r.into_inner())
}

/// Waits until every study of `patient` is deleted (as the sweeper marks them).
async fn swept(app: &TestApp, ids: &[i64]) {
    eventually(WITHIN, "the patient's studies are marked deleted", || async {
        let mut all = true;
        for id in ids {
            all &= app.get_shown(*id).await.is_ok_and(|s| s.delete_time.is_some());
        }
        all
    })
    .await;
    eventually(WITHIN, "the sweeper has recorded a revision for each", || async {
        let mut all = true;
        for id in ids {
            all &= app.revisions(*id, 10).await.unwrap()[0].kind() == ChangeKind::Deleted;
        }
        all
    })
    .await;
}

#[tokio::test]
async fn a_deleted_study_is_kept_hidden_unless_shown_and_only_an_admin_undeletes_it() {
    let app = spawn_app(&[]).await;
    let patient = app.create_patient(1).await;
    let kept = app.create_study(study(patient.id)).await.unwrap();
    let other = app.create_study(study(patient.id)).await.unwrap();
    app.delete_study(kept.id, "").await.unwrap();

    let hidden = app.get_study(kept.id).await.unwrap_err();
    assert_eq!((hidden.code(), reason(&hidden).as_str()), (Code::NotFound, "STUDY_DELETED"));
    let shown = app.get_shown(kept.id).await.unwrap();
    assert_eq!(shown.description, kept.description);
    assert_eq!(seconds(&shown.expire_time) - seconds(&shown.delete_time), 30 * 24 * 3600);
    assert_eq!(app.all_studies(&[patient.id], 10).await.iter().map(|s| s.id).collect::<Vec<_>>(), [other.id]);
    let with_deleted = app
        .client
        .clone()
        .list_studies(pb::ListStudiesRequest { show_deleted: true, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(with_deleted.studies.iter().map(|s| s.id).collect::<Vec<_>>(), [kept.id, other.id]);
    let by_patient = app
        .client
        .clone()
        .list_studies_by_patient(pb::ListStudiesByPatientRequest {
            patient_ids: vec![patient.id],
            show_deleted: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_patient.patients[0].studies.len(), 2);

    // As before for clients that never set show_deleted: it is gone.
    assert_eq!(app.delete_study(kept.id, "").await.unwrap_err().code(), Code::NotFound);
    let update =
        app.update_study(pb::Study { id: kept.id, description: "X".into(), ..Default::default() }, &[]);
    assert_eq!(update.await.unwrap_err().code(), Code::NotFound);

    let not_deleted = undelete(&app, other.id, "").await.unwrap_err();
    assert_eq!(
        (not_deleted.code(), reason(&not_deleted).as_str()),
        (Code::FailedPrecondition, "STUDY_NOT_DELETED")
    );
    let stale = undelete(&app, kept.id, &kept.etag).await.unwrap_err();
    assert_eq!(stale.code(), Code::Aborted, "the delete made a revision: the old etag is stale");
    let clinician = app.client_as("dr-lee", &["clinician"]);
    let refused = clinician
        .clone()
        .undelete_study(pb::UndeleteStudyRequest { id: kept.id, ..Default::default() })
        .await;
    assert_eq!(refused.unwrap_err().code(), Code::PermissionDenied);
    let back = undelete(&app, kept.id, "2").await.unwrap();
    assert_eq!((back.etag.as_str(), back.delete_time, back.expire_time), ("3", None, None));
    assert_eq!(app.get_study(kept.id).await.unwrap(), back);
}

#[tokio::test]
async fn a_patients_delete_takes_their_studies_and_the_undelete_brings_back_exactly_those() {
    let app = spawn_app(&[]).await;
    let patient = app.create_patient(1).await;
    let created = app.create_study(study(patient.id)).await.unwrap();
    let clinician = app.client_as("dr-lee", &["clinician"]);
    let update = pb::UpdateStudyRequest {
        study: Some(pb::Study { id: created.id, description: "LEFT KNEE".into(), ..Default::default() }),
        update_mask: None,
    };
    clinician.clone().update_study(update).await.unwrap();
    let on_its_own = app.create_study(study(patient.id)).await.unwrap();
    app.delete_study(on_its_own.id, "").await.unwrap();

    app.patient_feed.publish(patient.id, PatientEventKind::Deleted);
    swept(&app, &[created.id]).await;
    let refused = app.create_study(study(patient.id)).await.unwrap_err();
    assert_eq!(refused.code(), Code::NotFound, "no study for a deleted patient");
    let undeleting = undelete(&app, created.id, "").await.unwrap_err();
    assert_eq!(
        (undeleting.code(), reason(&undeleting).as_str()),
        (Code::FailedPrecondition, "PATIENT_DELETED")
    );

    app.patient_feed.publish(patient.id, PatientEventKind::Undeleted);
    eventually(WITHIN, "the patient's undelete is applied", || async {
        app.get_study(created.id).await.is_ok()
    })
    .await;
    let gone = app.get_study(on_its_own.id).await.unwrap_err();
    assert_eq!(reason(&gone), "STUDY_DELETED", "a study deleted on its own earlier stays deleted");
    app.create_study(study(patient.id)).await.expect("the patient may have studies again");

    let cause = format!("patients/{}", patient.id);
    let revisions = app.revisions(created.id, 2).await.unwrap();
    let summary: Vec<(i64, ChangeKind, &str, &str, &str)> = revisions
        .iter()
        .map(|r| {
            let s = r.study.as_ref().unwrap();
            (r.revision, r.kind(), r.actor.as_str(), r.cause.as_str(), s.description.as_str())
        })
        .collect();
    assert_eq!(
        summary,
        [
            (4, ChangeKind::Undeleted, "clinic:studies-service", cause.as_str(), "LEFT KNEE"),
            (3, ChangeKind::Deleted, "clinic:studies-service", cause.as_str(), "LEFT KNEE"),
            (2, ChangeKind::Updated, "dr-lee", "", "LEFT KNEE"),
            (1, ChangeKind::Created, "test-admin", "", created.description.as_str()),
        ]
    );
    assert_eq!(*revisions[3].study.as_ref().unwrap(), created, "revision 1 is the study as created");
    let old = app
        .client
        .clone()
        .get_study(pb::GetStudyRequest { id: created.id, revision: 1, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(old, created);
    let missing = app
        .client
        .clone()
        .get_study(pb::GetStudyRequest { id: created.id, revision: 9, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!((missing.code(), reason(&missing).as_str()), (Code::NotFound, "REVISION_NOT_FOUND"));

    // The studies' feed tells the cascade's changes with their cause.
    let changes = app.all_changes(0).await;
    let of_created: Vec<(ChangeKind, &str)> =
        changes.iter().filter(|c| c.study_id == created.id).map(|c| (c.kind(), c.cause.as_str())).collect();
    assert_eq!(
        of_created,
        [
            (ChangeKind::Created, ""),
            (ChangeKind::Updated, ""),
            (ChangeKind::Deleted, cause.as_str()),
            (ChangeKind::Undeleted, cause.as_str())
        ]
    );
}

#[tokio::test]
async fn a_purged_patient_takes_every_study_and_revision_leaving_ids_in_the_feed() {
    let app = spawn_app(&[]).await;
    let patient = app.create_patient(1).await;
    let first = app.create_study(study(patient.id)).await.unwrap();
    let second = app.create_study(study(patient.id)).await.unwrap();
    app.delete_study(second.id, "").await.unwrap();

    app.patient_feed.publish(patient.id, PatientEventKind::Purged);
    eventually(WITHIN, "the studies are erased", || async {
        let first = app.get_shown(first.id).await;
        let second = app.get_shown(second.id).await;
        [first, second].iter().all(|s| s.as_ref().is_err_and(|e| reason(e) == "STUDY_NOT_FOUND"))
    })
    .await;
    assert_eq!(app.revisions(first.id, 10).await.unwrap_err().code(), Code::NotFound);

    let purged: Vec<(i64, i64, bool)> = app
        .all_changes(0)
        .await
        .iter()
        .filter(|c| c.kind() == ChangeKind::Purged)
        .map(|c| (c.study_id, c.patient_id, c.study.is_some()))
        .collect();
    assert_eq!(purged, [(first.id, patient.id, false), (second.id, patient.id, false)]);

    // The cascade's work leaves its trace, naming exactly whose studies.
    let mut admin = app.db.admin_options().connect().await.unwrap();
    let traced: Vec<(String, Vec<i64>)> = sqlx::query_as(
        "select method, patient_ids from studies.audit_event where subject = 'clinic:studies-service'",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(traced, [("cascade: erase a purged patient's studies".to_owned(), vec![patient.id])]);
}

/// The next changes of `stream`, skipping heartbeats.
async fn next_changes(stream: &mut tonic::Streaming<pb::WatchStudyChangesResponse>) -> Vec<pb::StudyChange> {
    tokio::time::timeout(WITHIN, async {
        loop {
            let message = stream.message().await.unwrap().expect("open");
            if !message.changes.is_empty() {
                return message.changes;
            }
        }
    })
    .await
    .expect("changes arrive")
}

#[tokio::test]
async fn the_studies_feed_is_watched_live_by_feed_readers_only() {
    let app = spawn_app(&[]).await;
    let patient = app.create_patient(1).await;
    let before = app.create_study(study(patient.id)).await.unwrap();
    let mut stream = app
        .client
        .clone()
        .watch_study_changes(pb::WatchStudyChangesRequest { after_sequence: 0 })
        .await
        .unwrap()
        .into_inner();
    let replayed = next_changes(&mut stream).await;
    assert_eq!((replayed[0].sequence, replayed[0].study_id), (1, before.id));
    let live = app.create_study(study(patient.id)).await.unwrap();
    let followed = next_changes(&mut stream).await;
    assert_eq!((followed[0].sequence, followed[0].study_id), (2, live.id));
    assert_eq!(followed[0].study.as_ref(), Some(&live));

    let viewer = app.client_as("vera", &["viewer"]);
    let refused = viewer.clone().list_study_changes(pb::ListStudyChangesRequest::default()).await;
    assert_eq!(refused.unwrap_err().code(), Code::PermissionDenied);
}
