//! The SQL of the delete cascade: tombstones, reservations, the event cursor,
//! retries of failed events, and sweeping a deleted patient's studies.
//!
//! Applying a deletion only records a tombstone (under the per-patient lock
//! that creates take), which hides the patient's studies at once; the
//! studies themselves are removed later, a chunk at a time, by
//! [`StudyStore::sweep_step`]. So the cursor never waits on a large
//! deletion, every statement is short, and one patient with 100,000
//! studies does not hold up another's.

use std::time::Duration;

use chrono::{DateTime, Utc};
use clinic_audit::store::durable;
use clinic_core::context::Call;

use crate::{
    domain::{PatientEvent, PatientEventKind, PatientId},
    error::Result,
    storage::StudyStore,
};

/// The event source whose cursor tracks patients-service's outbox.
const PATIENTS_SOURCE: &str = "patients";

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
    /// Deletions recorded.
    pub deleted: usize,
    /// Events that failed and wait for a retry.
    pub failed: usize,
    /// Events of kinds this version does not know, skipped.
    pub skipped: usize,
}

/// What one sweeping round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Studies removed.
    pub removed: u64,
    /// Deleted patients that still had studies to remove this round.
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
    /// The last patients-service outbox sequence applied here.
    pub async fn patients_cursor(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("select position from studies.event_cursor where source = $1")
            .bind(PATIENTS_SOURCE)
            .fetch_one(&self.pool)
            .await?)
    }

    /// Applies `events` and advances the cursor past all of them, in one
    /// transaction. A deletion becomes a tombstone; an event whose tombstone
    /// cannot be written is set aside for a retry instead of holding up the
    /// others; unknown kinds are skipped. Applying an event twice changes
    /// nothing.
    pub async fn apply_events(&self, events: &[PatientEvent]) -> Result<Applied> {
        let mut applied = Applied::default();
        let Some(last) = events.iter().map(|e| e.sequence).max() else { return Ok(applied) };
        let mut tx = self.pool.begin().await?;
        for event in events {
            if event.kind == PatientEventKind::Undeleted {
                lift(&mut tx, event.patient_id, event.sequence).await?;
                applied.deleted += 1;
                continue;
            }
            if event.kind != PatientEventKind::Deleted {
                applied.skipped += 1;
                continue;
            }
            let mut attempt = sqlx::Acquire::begin(&mut *tx).await?;
            match tombstone(&mut attempt, event.patient_id, event.sequence).await {
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
            let outcome = tombstone(&mut tx, PatientId::from_stored(patient), sequence).await;
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

    /// Removes one chunk of studies of each of up to 50
    /// deleted patients that are due; a patient whose last chunk was short
    /// is done. A failing patient is retried with backoff while the others
    /// go on.
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
            let removed = sqlx::query(
                "delete from studies.study where id in \
                 (select id from studies.study where patient_id = $1 limit $2)",
            )
            .bind(patient)
            .bind(SWEEP_CHUNK)
            .execute(&self.pool)
            .await;
            match removed {
                Ok(done) => {
                    let removed = done.rows_affected();
                    swept.removed += removed;
                    if removed < SWEEP_CHUNK as u64 {
                        sqlx::query("update studies.deleted_patient set swept = true where patient_id = $1")
                            .bind(patient)
                            .execute(&self.pool)
                            .await?;
                    } else {
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

/// Records that `patient` is deleted (event `sequence`), under the
/// per-patient lock that creates take; confirms a reservation.
async fn tombstone(conn: &mut sqlx::PgConnection, patient: PatientId, sequence: i64) -> Result<()> {
    sqlx::query("select pg_advisory_xact_lock($1)").bind(patient.get()).execute(&mut *conn).await?;
    sqlx::query(
        "insert into studies.deleted_patient (patient_id, event_sequence) values ($1, $2) \
         on conflict (patient_id) do update \
         set event_sequence = coalesce(studies.deleted_patient.event_sequence, excluded.event_sequence), \
             reserve_time = null",
    )
    .bind(patient.get())
    .bind(sequence)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Lifts the tombstone of a patient restored at `sequence` (and drops a
/// retry of an earlier deletion of theirs): studies may refer to them again.
/// Studies the cascade already removed stay removed.
async fn lift(conn: &mut sqlx::PgConnection, patient: PatientId, sequence: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "delete from studies.deleted_patient where patient_id = $1 and coalesce(event_sequence, 0) < $2",
    )
    .bind(patient.get())
    .bind(sequence)
    .execute(&mut *conn)
    .await?;
    sqlx::query("delete from studies.event_retry where patient_id = $1 and sequence < $2")
        .bind(patient.get())
        .bind(sequence)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
