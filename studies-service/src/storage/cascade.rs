//! The SQL of the delete cascade: tombstones, reservations, the cursor in
//! patients-service's change feed, retries of failed deletions, and
//! sweeping a deleted patient's studies.
//!
//! Applying a deletion only records a tombstone (under the per-patient lock
//! that creates take), which hides the patient's studies at once; the
//! studies themselves are marked deleted (cause `patients/{id}`) or, for a
//! purged patient, erased later, a chunk at a time, by
//! [`StudyStore::sweep_step`]. So the cursor never waits on a large
//! deletion, every statement is short, and one patient with 100,000
//! studies does not hold up another's. An undelete lifts the tombstone and
//! restores exactly the studies marked with the patient's cause.

use std::time::Duration;

use chrono::{DateTime, Utc};
use clinic_audit::store::durable;
use clinic_core::context::Call;

use crate::{
    domain::{PatientEvent, PatientEventKind, PatientId, patient_cause},
    error::Result,
    storage::{SERVICE_ACTOR, StudyStore},
};

/// The event source whose cursor tracks patients-service's change feed.
const PATIENTS_SOURCE: &str = "patients-feed";

/// Studies removed per sweeping statement: a few milliseconds of work.
pub const SWEEP_CHUNK: i64 = 1000;

/// Patients swept per round, one chunk each, so every deletion advances.
const SWEEP_FANOUT: i64 = 50;

/// Failed events retried per round.
const RETRY_BATCH: i64 = 100;

/// The backoff after `attempts` failures: doubling from a second, at most
/// five minutes.
const BACKOFF: &str = "least(interval '1 second' * power(2, least(attempts, 16)), interval '5 minutes')";

/// What applying a batch of events did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Deletions, undeletes and purges recorded.
    pub deleted: usize,
    /// Events that failed and wait for a retry.
    pub failed: usize,
    /// Events of kinds this version does not know, skipped.
    pub skipped: usize,
}

/// What one sweeping round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Studies marked deleted or erased.
    pub removed: u64,
    /// Deleted patients that still had studies to sweep this round.
    pub pending: usize,
}

/// How far the cascade is behind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Events waiting for a retry.
    pub retrying: i64,
    /// Deleted patients whose studies are not all removed yet.
    pub unswept: i64,
    /// When the oldest event waiting for a retry was set aside.
    pub oldest_retry: Option<DateTime<Utc>>,
}

impl StudyStore {
    /// The last sequence of patients-service's feed applied here.
    pub async fn patients_cursor(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("select position from studies.event_cursor where source = $1")
            .bind(PATIENTS_SOURCE)
            .fetch_one(&self.pool)
            .await?)
    }

    /// Applies `events` and advances the cursor past all of them, in one
    /// transaction. A deletion becomes a tombstone; an undelete lifts it and
    /// restores the studies deleted with the patient; a purge marks the
    /// tombstone for erasing. A deletion whose tombstone cannot be written is
    /// set aside for a retry instead of holding up the others; other changes
    /// are skipped. Applying an event twice changes nothing.
    pub async fn apply_events(&self, events: &[PatientEvent]) -> Result<Applied> {
        let mut applied = Applied::default();
        let Some(last) = events.iter().map(|e| e.sequence).max() else { return Ok(applied) };
        let mut tx = self.pool.begin().await?;
        for event in events {
            match event.kind {
                PatientEventKind::Undeleted => {
                    restore(&mut tx, event.patient_id, event.sequence).await?;
                    applied.deleted += 1;
                    continue;
                }
                PatientEventKind::Purged => {
                    erase(&mut tx, event.patient_id, event.sequence).await?;
                    applied.deleted += 1;
                    continue;
                }
                PatientEventKind::Other => {
                    applied.skipped += 1;
                    continue;
                }
                PatientEventKind::Deleted => {}
            }
            let mut attempt = sqlx::Acquire::begin(&mut *tx).await?;
            match tombstone(&mut attempt, event.patient_id, event.sequence, event.expire_time).await {
                Ok(()) => {
                    attempt.commit().await?;
                    applied.deleted += 1;
                }
                Err(error) => {
                    attempt.rollback().await?;
                    tracing::warn!(sequence = event.sequence, error = %error, "patient deletion failed; retrying later");
                    sqlx::query(
                        "insert into studies.event_retry (sequence, patient_id, retry_after, last_error) \
                         values ($1, $2, now() + interval '1 second', $3) on conflict (sequence) do nothing",
                    )
                    .bind(event.sequence)
                    .bind(event.patient_id.get())
                    .bind(error.to_string())
                    .execute(&mut *tx)
                    .await?;
                    applied.failed += 1;
                }
            }
        }
        sqlx::query(
            "update studies.event_cursor set position = greatest(position, $2), update_time = now() \
             where source = $1",
        )
        .bind(PATIENTS_SOURCE)
        .bind(last)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.written.notify();
        Ok(applied)
    }

    /// Retries the failed events that are due; returns how many succeeded.
    pub async fn retry_events(&self) -> Result<usize> {
        let due: Vec<(i64, i64)> = sqlx::query_as(
            "select sequence, patient_id from studies.event_retry where retry_after <= now() \
             order by retry_after limit $1",
        )
        .bind(RETRY_BATCH)
        .fetch_all(&self.pool)
        .await?;
        let mut succeeded = 0;
        for (sequence, patient) in due {
            let mut tx = self.pool.begin().await?;
            let outcome = tombstone(&mut tx, PatientId::from_stored(patient), sequence, None).await;
            match outcome {
                Ok(()) => {
                    sqlx::query("delete from studies.event_retry where sequence = $1")
                        .bind(sequence)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    succeeded += 1;
                }
                Err(error) => {
                    tx.rollback().await?;
                    tracing::debug!(sequence, error = %error, "patient deletion still failing");
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "update studies.event_retry set attempts = attempts + 1, last_error = $2, \
                         retry_after = now() + {BACKOFF} where sequence = $1"
                    )))
                    .bind(sequence)
                    .bind(error.to_string())
                    .execute(&self.pool)
                    .await?;
                }
            }
        }
        Ok(succeeded)
    }

    /// Sweeps one chunk of studies of each of up to 50 deleted patients
    /// that are due: marks them deleted with the patient's cause, or erases
    /// them when the patient was purged; a patient whose last chunk was
    /// short is done. A failing patient is retried with backoff while the
    /// others go on.
    pub async fn sweep_step(&self) -> Result<Swept> {
        let due: Vec<i64> = sqlx::query_scalar(
            "select patient_id from studies.deleted_patient \
             where not swept and event_sequence is not null and sweep_after <= now() \
             order by sweep_after, patient_id limit $1",
        )
        .bind(SWEEP_FANOUT)
        .fetch_all(&self.pool)
        .await?;
        let mut swept = Swept::default();
        for patient in due {
            match self.sweep_chunk(PatientId::from_stored(patient)).await {
                Ok(removed) => {
                    swept.removed += removed;
                    if removed == SWEEP_CHUNK as u64 {
                        swept.pending += 1;
                    }
                }
                Err(error) => {
                    tracing::warn!(patient_id = patient, error = %error, "sweeping a deleted patient's studies failed; retrying later");
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "update studies.deleted_patient set sweep_attempts = sweep_attempts + 1, \
                         sweep_after = now() + {} where patient_id = $1",
                        BACKOFF.replace("attempts", "sweep_attempts")
                    )))
                    .bind(patient)
                    .execute(&self.pool)
                    .await?;
                }
            }
        }
        Ok(swept)
    }

    /// One chunk of `patient`'s studies, under the per-patient lock so an
    /// undelete applied meanwhile is never undone: how many it swept (the
    /// tombstone is marked swept when fewer than a chunk).
    async fn sweep_chunk(&self, patient: PatientId) -> Result<u64, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("select pg_advisory_xact_lock($1)").bind(patient.get()).execute(&mut *tx).await?;
        let tombstone: Option<(bool, DateTime<Utc>, Option<DateTime<Utc>>)> = sqlx::query_as(
            "select purged, delete_time, expire_time from studies.deleted_patient \
             where patient_id = $1 and not swept and event_sequence is not null",
        )
        .bind(patient.get())
        .fetch_optional(&mut *tx)
        .await?;
        let Some((purged, delete_time, expire_time)) = tombstone else { return Ok(0) };
        let cause = patient_cause(patient);
        clinic_changes::act_as(&mut tx, SERVICE_ACTOR, Some(&cause)).await?;
        let swept = if purged {
            sqlx::query(
                "delete from studies.study where id in \
                 (select id from studies.study where patient_id = $1 order by id limit $2)",
            )
            .bind(patient.get())
            .bind(SWEEP_CHUNK)
            .execute(&mut *tx)
            .await?
        } else {
            let expire_time =
                expire_time.unwrap_or(delete_time + chrono::Duration::days(i64::from(self.retention_days)));
            sqlx::query(
                "update studies.study set delete_time = $3, expire_time = $4, delete_cause = $5 where id in \
                 (select id from studies.study where patient_id = $1 and delete_time is null order by id limit $2)",
            )
            .bind(patient.get())
            .bind(SWEEP_CHUNK)
            .bind(delete_time)
            .bind(expire_time)
            .bind(&cause)
            .execute(&mut *tx)
            .await?
        }
        .rows_affected();
        let what = if purged {
            "cascade: erase a purged patient's studies"
        } else {
            "cascade: delete a deleted patient's studies"
        };
        let patients = if swept > 0 { vec![patient.get()] } else { Vec::new() };
        clinic_audit::audit::record_own_work(&mut tx, crate::SCHEMA, SERVICE_ACTOR, what, patients).await?;
        if swept < SWEEP_CHUNK as u64 {
            sqlx::query("update studies.deleted_patient set swept = true where patient_id = $1")
                .bind(patient.get())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.written.notify();
        Ok(swept)
    }

    /// Reserves the deletion of `patient` unless they have studies: under
    /// the per-patient lock, so a create either committed first (and is
    /// counted) or comes after and is refused. Returns whether the patient
    /// has studies (then nothing is reserved).
    pub async fn reserve_deletion(&self, call: &Call, patient: PatientId) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("select pg_advisory_xact_lock($1)").bind(patient.get()).execute(&mut *tx).await?;
        let has_studies: bool =
            sqlx::query_scalar("select exists (select 1 from studies.live_study where patient_id = $1)")
                .bind(patient.get())
                .fetch_one(&mut *tx)
                .await?;
        if !has_studies {
            sqlx::query(
                "insert into studies.deleted_patient (patient_id, reserve_time) values ($1, now()) \
                 on conflict (patient_id) do nothing",
            )
            .bind(patient.get())
            .execute(&mut *tx)
            .await?;
        }
        durable(call, tx.commit()).await?;
        Ok(has_studies)
    }

    /// Lifts a reservation of `patient` that no deletion event confirmed.
    pub async fn cancel_deletion(&self, call: &Call, patient: PatientId) -> Result<()> {
        durable(
            call,
            sqlx::query(
                "delete from studies.deleted_patient where patient_id = $1 and event_sequence is null",
            )
            .bind(patient.get())
            .execute(&self.pool),
        )
        .await?;
        Ok(())
    }

    /// Reservations older than `age` that no deletion event confirmed yet:
    /// their deletion may never have happened. Each is due again only after
    /// another `age`.
    pub async fn stale_reservations(&self, age: Duration) -> Result<Vec<PatientId>> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "update studies.deleted_patient set reserve_time = now() \
             where patient_id in (select patient_id from studies.deleted_patient \
                 where event_sequence is null and reserve_time < now() - make_interval(secs => $1) limit 100) \
             returning patient_id",
        )
        .bind(age.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        Ok(ids.into_iter().map(PatientId::from_stored).collect())
    }

    /// How far the cascade is behind.
    pub async fn backlog(&self) -> Result<Backlog> {
        let (retrying, unswept, oldest_retry) = sqlx::query_as(
            "select (select count(*) from studies.event_retry), \
                    (select count(*) from studies.deleted_patient where not swept and event_sequence is not null), \
                    (select min(create_time) from studies.event_retry)",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(Backlog { retrying, unswept, oldest_retry })
    }
}

/// Records that `patient` is deleted (feed `sequence`), their studies to
/// expire at `expire_time`, under the per-patient lock that creates take;
/// confirms a reservation.
async fn tombstone(
    conn: &mut sqlx::PgConnection,
    patient: PatientId,
    sequence: i64,
    expire_time: Option<DateTime<Utc>>,
) -> Result<()> {
    sqlx::query("select pg_advisory_xact_lock($1)").bind(patient.get()).execute(&mut *conn).await?;
    sqlx::query(
        "insert into studies.deleted_patient (patient_id, event_sequence, expire_time) values ($1, $2, $3) \
         on conflict (patient_id) do update \
         set event_sequence = coalesce(studies.deleted_patient.event_sequence, excluded.event_sequence), \
             expire_time = coalesce(studies.deleted_patient.expire_time, excluded.expire_time), \
             delete_time = case when studies.deleted_patient.event_sequence is null then now() \
                                else studies.deleted_patient.delete_time end, \
             reserve_time = null",
    )
    .bind(patient.get())
    .bind(sequence)
    .bind(expire_time)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Restores a patient undeleted at `sequence`: lifts their tombstone (and
/// drops a retry of an earlier deletion of theirs), so studies may refer to
/// them again, and undeletes exactly the studies deleted with them, under
/// the per-patient lock the sweeper takes too. Studies deleted on their own
/// stay deleted.
async fn restore(
    conn: &mut sqlx::PgConnection,
    patient: PatientId,
    sequence: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("select pg_advisory_xact_lock($1)").bind(patient.get()).execute(&mut *conn).await?;
    let lifted = sqlx::query(
        "delete from studies.deleted_patient where patient_id = $1 and coalesce(event_sequence, 0) < $2 \
         and not purged",
    )
    .bind(patient.get())
    .bind(sequence)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    sqlx::query("delete from studies.event_retry where patient_id = $1 and sequence < $2")
        .bind(patient.get())
        .bind(sequence)
        .execute(&mut *conn)
        .await?;
    if lifted > 0 {
        let cause = patient_cause(patient);
        clinic_changes::act_as(&mut *conn, SERVICE_ACTOR, Some(&cause)).await?;
        sqlx::query(
            "update studies.study set delete_time = null, expire_time = null, delete_cause = null \
             where patient_id = $1 and delete_cause = $2",
        )
        .bind(patient.get())
        .bind(&cause)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Records that `patient` was purged at `sequence`: their tombstone (made
/// now if they were never deleted) is swept again, erasing every study of
/// theirs, also those deleted on their own.
async fn erase(conn: &mut sqlx::PgConnection, patient: PatientId, sequence: i64) -> Result<(), sqlx::Error> {
    sqlx::query("select pg_advisory_xact_lock($1)").bind(patient.get()).execute(&mut *conn).await?;
    sqlx::query(
        "insert into studies.deleted_patient (patient_id, event_sequence, purged) values ($1, $2, true) \
         on conflict (patient_id) do update \
         set event_sequence = coalesce(studies.deleted_patient.event_sequence, excluded.event_sequence), \
             purged = true, swept = false, sweep_attempts = 0, sweep_after = now(), reserve_time = null",
    )
    .bind(patient.get())
    .bind(sequence)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
