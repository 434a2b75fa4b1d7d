//! Applies patients-service's deletions to studies: the other half of the
//! forced-delete cascade.
//!
//! A background task polls the outbox from the cursor stored in
//! `studies.event_cursor` and applies each batch in one transaction with the
//! cursor's advance (`StudyStore::apply_patient_deletions`). While
//! patients-service or Postgres is down it simply retries on the next tick;
//! after a crash it resumes from the last committed cursor. Because applying
//! an event twice changes nothing, delivery only needs to be at least once.

use std::{sync::Arc, time::Duration};

use tokio::task::JoinHandle;

use crate::{error::Result, patients::PatientEvents, storage::StudyStore};

/// Events fetched per round trip.
const BATCH: u32 = 500;

/// Applies every pending deletion; returns how many events were applied.
pub async fn catch_up(store: &StudyStore, events: &dyn PatientEvents) -> Result<usize> {
    let mut applied = 0;
    loop {
        let cursor = store.patients_cursor().await?;
        let batch = events.deletions_after(cursor, BATCH).await?;
        if batch.is_empty() {
            return Ok(applied);
        }
        let removed = store.apply_patient_deletions(&batch).await?;
        tracing::info!(events = batch.len(), studies_removed = removed, "applied patient deletions");
        applied += batch.len();
        if batch.len() < BATCH as usize {
            return Ok(applied);
        }
    }
}

/// Runs [`catch_up`] every `interval` until aborted.
pub fn spawn(store: StudyStore, events: Arc<dyn PatientEvents>, interval: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            ticker.tick().await;
            match catch_up(&store, events.as_ref()).await {
                Ok(_) if failing => {
                    tracing::info!("patient events: caught up again");
                    failing = false;
                }
                Ok(_) => {}
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "patient events: cannot catch up now; retrying");
                    failing = true;
                }
                Err(e) => tracing::debug!(error = %e, "patient events: still failing"),
            }
        }
    })
}
