//! Applies patients-service's deletions, undeletes and purges to studies:
//! the other half of the delete cascade, following patients-service's public
//! change feed (`WatchPatientChanges`) like any other consumer.
//!
//! Two background tasks:
//! - the consumer follows the feed (one long-lived `WatchPatientChanges`,
//!   so a deletion arrives in milliseconds and following costs one audit
//!   event per delivered batch, not one per poll) from the cursor stored in
//!   `studies.event_cursor`, records each deletion as a tombstone (which
//!   hides the patient's studies at once), restores on an undelete exactly
//!   the studies the delete took, marks a purge for erasing, and advances
//!   the cursor, in one transaction per batch; it skips the changes it does
//!   not act on, sets a failing deletion aside for retries with backoff, and
//!   lifts reservations of non-forced deletes that never happened;
//! - the sweeper marks the studies of deleted patients deleted (cause
//!   `patients/{id}`), or erases those of purged ones, in small chunks,
//!   round-robin across patients, as fast as it can while there is work.
//!
//! While patients-service or Postgres is down both simply retry; after a
//! crash they resume from what was committed. Applying an event twice
//! changes nothing, so delivery only needs to be at least once.

use std::{sync::Arc, time::Duration};

use tokio::task::JoinHandle;
use tracing::Instrument;

use clinic_core::context::CallContext;

use crate::{error::Result, patients::PatientEvents, storage::StudyStore};

/// Events fetched per round trip.
const BATCH: u32 = 500;

/// Batches applied per round at most, so retries, reconciling and the lag
/// metrics still run while the feed never goes quiet.
const BATCHES_PER_ROUND: usize = 20;

/// How far the consumer may fall behind before it says so at warn level.
const BEHIND_WARN: i64 = BATCH as i64;

/// What one round of the consumer found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Events applied (deletions recorded, unknown kinds skipped).
    pub applied: usize,
    /// Events still after the cursor when the round ended.
    pub behind: i64,
    /// Events set aside for a retry during the round.
    pub failed: usize,
    /// When the last event applied was committed: the oldest one still
    /// pending is younger.
    pub last_applied_time: Option<chrono::DateTime<chrono::Utc>>,
}

/// Applies the pending events (until the feed has nothing more, or
/// `BATCHES_PER_ROUND` batches), retries failed ones that are due, and
/// returns how far behind the feed the cursor still is.
pub async fn catch_up(store: &StudyStore, events: &dyn PatientEvents) -> Result<Progress> {
    let mut progress = Progress::default();
    for _ in 0..BATCHES_PER_ROUND {
        let cursor = store.patients_cursor().await?;
        let page = events.events_after(cursor, BATCH).await?;
        let Some(last) = page.events.last().map(|e| e.sequence) else {
            progress.behind = page.last_sequence.saturating_sub(cursor).max(0);
            break;
        };
        let applied = store.apply_events(&page.events).await?;
        progress.applied += applied.deleted + applied.skipped;
        progress.failed += applied.failed;
        progress.behind = page.last_sequence.saturating_sub(last).max(0);
        progress.last_applied_time = page.events.last().and_then(|e| e.create_time);
    }
    store.retry_events().await?;
    Ok(progress)
}

/// Lifts the reservations of non-forced deletes older than `age` that no
/// deletion change confirmed, once the consumer has read the whole feed
/// (`progress` of this round) with nothing failing or waiting for a retry:
/// patients-service records a deletion's change in the deletion's own
/// transaction, so a reservation still unconfirmed then is one whose
/// deletion failed or never came. Nothing but the feed is asked.
pub async fn reconcile(store: &StudyStore, progress: &Progress, age: Duration) -> Result<usize> {
    if progress.behind > 0 || progress.failed > 0 || store.backlog().await?.retrying > 0 {
        return Ok(0);
    }
    let (mut lifted, call) = (0, CallContext::background("lifting stale deletion reservations"));
    for patient in store.stale_reservations(age).await? {
        store.cancel_deletion(&call, patient).await?;
        tracing::info!(patient_id = %patient, "lifted a deletion reservation: no deletion followed it");
        lifted += 1;
    }
    Ok(lifted)
}

/// Reports how far the cascade is behind: `patient_events_pending`
/// (changes in the feed not applied yet, and deletions waiting for a retry),
/// `patient_events_oldest_pending_age_seconds` (0 when none),
/// `patient_events_last_applied_sequence` and `deleted_patients_unswept`.
async fn record_lag(store: &StudyStore, progress: &Progress) {
    let (Ok(cursor), Ok(backlog)) = (store.patients_cursor().await, store.backlog().await) else { return };
    let mut oldest = backlog.oldest_retry;
    // At most this old: the next pending change committed after the last
    // one applied (reading it would move the watch past the cursor).
    if progress.behind > 0
        && let Some(last) = progress.last_applied_time
    {
        oldest = Some(oldest.map_or(last, |o| o.min(last)));
    }
    let age = oldest.map_or(0.0, |t| (chrono::Utc::now() - t).as_seconds_f64().max(0.0));
    metrics::gauge!("patient_events_pending").set((progress.behind + backlog.retrying) as f64);
    metrics::gauge!("patient_events_oldest_pending_age_seconds").set(age);
    metrics::gauge!("patient_events_last_applied_sequence").set(cursor as f64);
    metrics::gauge!("deleted_patients_unswept").set(backlog.unswept as f64);
}

/// Runs [`catch_up`] and [`reconcile`] every `interval` until aborted;
/// logs when it falls behind or fails, and when it is back, not per round.
pub fn spawn(
    store: StudyStore,
    events: Arc<dyn PatientEvents>,
    interval: Duration,
    reservation_timeout: Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        let mut lagging = false;
        loop {
            ticker.tick().await;
            // One span per round, so its calls to patients-service (and
            // their SQL) form one trace.
            let round = tracing::info_span!("patient events round", otel.kind = "internal");
            match catch_up(&store, events.as_ref()).instrument(round.clone()).await {
                Ok(progress) => {
                    record_lag(&store, &progress).instrument(round.clone()).await;
                    if let Err(e) = reconcile(&store, &progress, reservation_timeout).await {
                        tracing::debug!(error = %e, "deletion reservations: cannot check now");
                    }
                    if failing {
                        tracing::info!("patient events: reachable again");
                        failing = false;
                    }
                    let behind = progress.behind >= BEHIND_WARN || progress.failed > 0;
                    if behind && !lagging {
                        tracing::warn!(
                            behind = progress.behind,
                            failed = progress.failed,
                            "patient events: falling behind"
                        );
                    } else if !behind && lagging {
                        tracing::info!("patient events: caught up");
                    }
                    lagging = behind;
                }
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "patient events: cannot catch up now; retrying");
                    failing = true;
                }
                Err(e) => tracing::debug!(error = %e, "patient events: still failing"),
            }
        }
    })
}

/// Sweeps deleted patients' studies: chunk after chunk while there is work,
/// then every `interval`, until aborted.
pub fn spawn_sweeper(store: StudyStore, interval: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut removed_in_run = 0;
        loop {
            match store.sweep_step().await {
                Ok(swept) if swept.pending > 0 => {
                    removed_in_run += swept.removed;
                    tokio::task::yield_now().await;
                    continue;
                }
                Ok(swept) => {
                    removed_in_run += swept.removed;
                    if removed_in_run > 0 {
                        tracing::info!(studies_removed = removed_in_run, "swept deleted patients' studies");
                        removed_in_run = 0;
                    }
                }
                Err(e) => tracing::debug!(error = %e, "sweeping: cannot reach the database now"),
            }
            tokio::time::sleep(interval).await;
        }
    })
}
