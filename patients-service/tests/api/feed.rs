//! The patients' change feed: every committed revision once, numbered
//! without gaps in commit order, replayed and followed; each guarantee with
//! a test that tries to break it.

use std::{collections::BTreeSet, time::Duration};

use clinic_proto::{api::v1::ChangeKind, patients::v1 as pb};
use sqlx::{ConnectOptions, Connection};
use tonic::{Code, Streaming};

use crate::helpers::{TestApp, patient, reason, spawn_app, spawn_app_with};

async fn watch(app: &TestApp, after_sequence: i64) -> Streaming<pb::WatchPatientChangesResponse> {
    app.client
        .clone()
        .watch_patient_changes(pb::WatchPatientChangesRequest { after_sequence })
        .await
        .expect("watch starts")
        .into_inner()
}

/// The next changes of `stream`, skipping heartbeats, within `within`.
async fn next_changes(
    stream: &mut Streaming<pb::WatchPatientChangesResponse>,
    within: Duration,
) -> Vec<pb::PatientChange> {
    tokio::time::timeout(within, async {
        loop {
            let message = stream.message().await.expect("stream healthy").expect("stream open");
            if !message.changes.is_empty() {
                return message.changes;
            }
        }
    })
    .await
    .expect("changes arrive")
}

/// Waits (bounded) until the feed's head reaches `sequence`: numbering
/// follows the commit by a few milliseconds.
async fn changes_until(app: &TestApp, sequence: i64) -> i64 {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let head = app.changes(0, 1).await.expect("list").head_sequence;
        if head >= sequence {
            return head;
        }
        assert!(tokio::time::Instant::now() < give_up, "the feed stopped at {head}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every change after `after`, page by page, checking each page continues
/// the previous one without a gap.
async fn all_changes(app: &TestApp, mut after: i64) -> Vec<pb::PatientChange> {
    let mut all = Vec::new();
    loop {
        let page = app.changes(after, 7).await.expect("page");
        for change in &page.changes {
            assert_eq!(change.sequence, after + 1, "gap or disorder after {after}");
            after = change.sequence;
        }
        let done = page.changes.is_empty();
        all.extend(page.changes);
        if done {
            return all;
        }
    }
}

#[tokio::test]
async fn every_committed_revision_appears_once_in_order_with_its_actor_and_snapshot() {
    let app = spawn_app().await;
    let created = app.create(patient("Ana", "Ortiz", "1970-02-03", "ana@ejemplo.com")).await.unwrap();
    // A refused write (email taken) and a rolled-back one leave nothing.
    assert!(app.create(patient("Ana", "Other", "1970-02-03", "ANA@ejemplo.com")).await.is_err());
    let mut admin = app.db.admin_options().connect().await.unwrap();
    let mut tx = admin.begin().await.unwrap();
    sqlx::query("insert into patients.patient (first_name, last_name, birth_date, email) values ('Rolled', 'Back', '1990-01-01', 'rb@ejemplo.com')")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    app.update(pb::Patient { id: created.id, first_name: "Anna".into(), ..Default::default() }, &[])
        .await
        .unwrap();
    app.delete(created.id, "", false).await.unwrap();
    app.client
        .clone()
        .undelete_patient(pb::UndeletePatientRequest { id: created.id, ..Default::default() })
        .await
        .unwrap();
    app.client.clone().purge_patient(pb::PurgePatientRequest { id: created.id }).await.unwrap();

    let mut stream = watch(&app, 0).await;
    let mut changes = Vec::new();
    while changes.len() < 5 {
        changes.extend(next_changes(&mut stream, Duration::from_secs(10)).await);
    }
    let summary: Vec<(i64, ChangeKind, i64, &str, bool)> = changes
        .iter()
        .map(|c| (c.sequence, c.kind(), c.revision, c.actor.as_str(), c.patient.is_some()))
        .collect();
    assert_eq!(
        summary,
        [
            (1, ChangeKind::Created, 1, "test-admin", false),
            (2, ChangeKind::Updated, 2, "test-admin", false),
            (3, ChangeKind::Deleted, 3, "test-admin", false),
            (4, ChangeKind::Undeleted, 4, "test-admin", false),
            (5, ChangeKind::Purged, 4, "test-admin", false),
        ],
        "a purged patient's changes keep ids only"
    );
    assert!(changes.iter().all(|c| c.patient_id == created.id && c.commit_time.is_some()));
    let listed = app.changes(0, 0).await.unwrap();
    assert_eq!(listed.changes, changes);
    assert_eq!(listed.head_sequence, 5);
}

#[tokio::test]
async fn a_change_carries_the_patient_as_it_is_after_it() {
    let app = spawn_app().await;
    let created = app.create(patient("Ana", "Ortiz", "1970-02-03", "ana@ejemplo.com")).await.unwrap();
    let updated = app
        .update(pb::Patient { id: created.id, first_name: "Anna".into(), ..Default::default() }, &[])
        .await
        .unwrap();
    changes_until(&app, 2).await;
    let changes = all_changes(&app, 0).await;
    assert_eq!(changes[0].patient.as_ref(), Some(&created));
    assert_eq!(changes[1].patient.as_ref(), Some(&updated));
}

/// Writers that commit out of order: one transaction holds its change
/// uncommitted while others commit. Readers polling all along must only
/// ever see a gapless prefix, the held change last, and each change once.
#[tokio::test]
async fn writers_committing_out_of_order_never_let_a_reader_see_a_later_sequence_first() {
    let app = spawn_app().await;
    let mut admin = app.db.admin_options().connect().await.unwrap();
    let mut held = admin.begin().await.unwrap();
    sqlx::query("select set_config('clinic.actor', 'slow-writer', true)").execute(&mut *held).await.unwrap();
    let held_id: i64 = sqlx::query_scalar(
        "insert into patients.patient (first_name, last_name, birth_date, email) \
         values ('Held', 'Back', '1990-01-01', 'held@ejemplo.com') returning id",
    )
    .fetch_one(&mut *held)
    .await
    .unwrap();

    let writers = (0..8).map(|w| {
        let app = &app;
        async move {
            for n in 0..10 {
                app.create_nth(1000 + w * 100 + n).await;
            }
        }
    });
    let reader = async {
        let mut seen = 0;
        while seen < 80 {
            seen = all_changes(&app, 0).await.len();
        }
    };
    tokio::join!(futures::future::join_all(writers), reader);
    let before_commit = all_changes(&app, 0).await;
    assert_eq!(before_commit.len(), 80);
    assert!(before_commit.iter().all(|c| c.patient_id != held_id), "an uncommitted change was published");

    held.commit().await.unwrap();
    let mut stream = watch(&app, 80).await;
    let late = next_changes(&mut stream, Duration::from_secs(10)).await;
    assert_eq!((late[0].sequence, late[0].patient_id, late[0].actor.as_str()), (81, held_id, "slow-writer"));

    let all = all_changes(&app, 0).await;
    let ids: BTreeSet<i64> = all.iter().map(|c| c.patient_id).collect();
    assert_eq!((all.len(), ids.len()), (81, 81), "every committed revision exactly once");
}

#[tokio::test]
async fn a_watch_replays_from_any_sequence_then_follows_live_with_heartbeats_when_idle() {
    let app = spawn_app_with(clinic_testkit::TestDb::create().await, |config| {
        config.changes.watch_heartbeat = Duration::from_millis(100);
    })
    .await;
    for n in 0..3 {
        app.create_nth(n).await;
    }
    changes_until(&app, 3).await;
    let mut stream = watch(&app, 1).await;
    let replayed = next_changes(&mut stream, Duration::from_secs(10)).await;
    assert_eq!(replayed.iter().map(|c| c.sequence).collect::<Vec<_>>(), [2, 3]);

    let heartbeat =
        tokio::time::timeout(Duration::from_secs(10), stream.message()).await.unwrap().unwrap().unwrap();
    assert_eq!((heartbeat.changes.len(), heartbeat.head_sequence), (0, 3));

    let live = app.create_nth(9).await;
    let followed = next_changes(&mut stream, Duration::from_secs(10)).await;
    assert_eq!((followed[0].sequence, followed[0].patient_id), (4, live.id));
}

#[tokio::test]
async fn changes_past_the_retention_are_out_of_range_for_lists_and_watches() {
    let app = spawn_app_with(clinic_testkit::TestDb::create().await, |config| {
        config.changes.change_prune_interval = Duration::from_millis(50);
    })
    .await;
    for n in 0..3 {
        app.create_nth(n).await;
    }
    changes_until(&app, 3).await;
    let mut admin = app.db.admin_options().connect().await.unwrap();
    sqlx::query("update patients.change set commit_time = now() - interval '8 days' where sequence <= 2")
        .execute(&mut admin)
        .await
        .unwrap();
    let give_up = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.changes(0, 10).await.is_ok() {
        assert!(tokio::time::Instant::now() < give_up, "never pruned");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let expired = app.changes(1, 10).await.unwrap_err();
    assert_eq!((expired.code(), reason(&expired).as_str()), (Code::OutOfRange, "CHANGES_EXPIRED"));
    let watched = app
        .client
        .clone()
        .watch_patient_changes(pb::WatchPatientChangesRequest { after_sequence: 0 })
        .await
        .unwrap_err();
    assert_eq!(watched.code(), Code::OutOfRange);
    let kept = app.changes(2, 10).await.unwrap();
    assert_eq!(kept.changes.iter().map(|c| c.sequence).collect::<Vec<_>>(), [3]);
    let negative = app.changes(-1, 10).await.unwrap_err();
    assert_eq!(negative.code(), Code::InvalidArgument);
    crate::helpers::assert_invalid(Err::<(), _>(negative), &["after_sequence"]);
}

#[tokio::test]
async fn a_watcher_that_does_not_keep_up_is_told_so_and_resumes_where_it_stopped() {
    let app = spawn_app_with(clinic_testkit::TestDb::create().await, |config| {
        config.changes.watch_send_timeout = Duration::from_millis(200);
    })
    .await;
    let mut admin = app.db.admin_options().connect().await.unwrap();
    sqlx::query(
        "insert into patients.patient (first_name, last_name, birth_date, email) \
         select 'Bulk', repeat('Patient', 12), date '1990-01-01', 'bulk' || g || '@ejemplo.com' \
         from generate_series(1, 5000) g",
    )
    .execute(&mut admin)
    .await
    .unwrap();
    let head = changes_until(&app, 5000).await;
    // A consumer whose connection buffers little, as a slow one over a
    // real network does: it cannot soak up the feed unread.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let mut stream =
        pb::patient_service_client::PatientServiceClient::new(clinic_testkit::auth::admin(channel))
            .watch_patient_changes(pb::WatchPatientChangesRequest { after_sequence: 0 })
            .await
            .unwrap()
            .into_inner();
    // The consumer stalls: far longer than the send timeout.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut last = 0;
    let status = loop {
        match stream.message().await {
            Ok(Some(message)) => last = message.changes.last().map_or(last, |c| c.sequence),
            Ok(None) => panic!("the stream ended without telling the consumer"),
            Err(status) => break status,
        }
    };
    assert_eq!((status.code(), reason(&status).as_str()), (Code::ResourceExhausted, "CONSUMER_TOO_SLOW"));
    assert!(
        last < head && status.message().contains(&format!("after sequence {last}")),
        "{}",
        status.message()
    );
    let mut resumed = watch(&app, last).await;
    assert_eq!(next_changes(&mut resumed, Duration::from_secs(10)).await[0].sequence, last + 1);
}

#[tokio::test]
async fn only_feed_readers_follow_the_feed_and_every_delivered_batch_is_audited() {
    let app = spawn_app().await;
    let one = app.create_nth(1).await;
    let two = app.create_nth(2).await;
    changes_until(&app, 2).await;
    for roles in [&["viewer"][..], &["clinician"]] {
        let refused =
            app.client_as("nosy", roles).list_patient_changes(pb::ListPatientChangesRequest::default()).await;
        assert_eq!(refused.unwrap_err().code(), Code::PermissionDenied, "{roles:?}");
    }
    let mut service = app.client_as("billing", &["service"]);
    let mut stream = service
        .watch_patient_changes(pb::WatchPatientChangesRequest { after_sequence: 0 })
        .await
        .unwrap()
        .into_inner();
    next_changes(&mut stream, Duration::from_secs(10)).await;
    drop(stream);
    let mut admin = app.db.admin_options().connect().await.unwrap();
    let batches: Vec<Vec<i64>> = sqlx::query_scalar(
        "select patient_ids from patients.audit_event \
         where subject = 'billing' and method like '%/WatchPatientChanges' and cardinality(patient_ids) > 0",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(batches, [vec![one.id, two.id]]);
}

#[tokio::test]
async fn a_shutdown_ends_watches_with_unavailable_naming_where_to_resume() {
    let app = spawn_app().await;
    app.create_nth(1).await;
    let mut stream = watch(&app, 0).await;
    next_changes(&mut stream, Duration::from_secs(10)).await;
    let stopping = tokio::spawn(app.shutdown());
    let status = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("ended without a status to resume from"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the stream ends promptly");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("after sequence 1"), "{}", status.message());
    stopping.await.unwrap();
}
