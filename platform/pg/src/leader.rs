//! Background work that must run once per deployment, whatever the number
//! of replicas: the delete cascade, pruning, re-indexing.
//!
//! Every replica competes for a Postgres advisory lock on a connection of
//! its own; the one that holds it runs the work, the others check again
//! every second. The lock lives as long as the holder's session, so when the
//! holder dies (killed, crashed, cut off) Postgres releases it and another
//! replica takes over within about a second; a holder that loses its
//! connection stops its work first.

use std::time::Duration;

use sqlx::{ConnectOptions, PgConnection, postgres::PgConnectOptions};
use tokio::task::JoinHandle;

/// How often a follower tries to take over, and the leader checks it still
/// holds the lock.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The advisory-lock key of `schema`'s background work (distinct per
/// schema, and from the locks the services take per patient, which are
/// positive ids).
pub fn lock_key(schema: &str) -> i64 {
    let mut key: i64 = -0x6c65_6164_6572; // "leader", negative: never a patient id
    for byte in schema.bytes() {
        key = key.wrapping_mul(31).wrapping_add(i64::from(byte));
    }
    key.min(-1)
}

/// Runs the tasks `start` makes while this replica holds `key`, until
/// aborted; reports `background_leader` (1 while leading, 0 otherwise).
pub fn spawn(
    options: PgConnectOptions,
    key: i64,
    start: impl Fn() -> Vec<JoinHandle<()>> + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tasks = Tasks(Vec::new());
        let mut leading: Option<PgConnection> = None;
        let mut ticker = tokio::time::interval(CHECK_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match leading.as_mut() {
                Some(conn) => {
                    if sqlx::query("select 1").execute(&mut *conn).await.is_err() {
                        tracing::warn!(
                            "lost the connection that holds the background-work lock; stopping that work"
                        );
                        tasks.stop();
                        leading = None;
                        metrics::gauge!("background_leader").set(0.0);
                    }
                }
                None => {
                    if let Some(conn) = try_lead(&options, key).await {
                        tracing::info!("this replica now runs the background work");
                        leading = Some(conn);
                        tasks = Tasks(start());
                        metrics::gauge!("background_leader").set(1.0);
                    } else {
                        metrics::gauge!("background_leader").set(0.0);
                    }
                }
            }
        }
    })
}

/// A connection holding `key`, if no other session holds it.
async fn try_lead(options: &PgConnectOptions, key: i64) -> Option<PgConnection> {
    let mut conn = options.connect().await.ok()?;
    let held: bool =
        sqlx::query_scalar("select pg_try_advisory_lock($1)").bind(key).fetch_one(&mut conn).await.ok()?;
    held.then_some(conn)
}

/// The leader's tasks, aborted when it stops leading or is itself aborted.
struct Tasks(Vec<JoinHandle<()>>);

impl Tasks {
    fn stop(&mut self) {
        self.0.drain(..).for_each(|t| t.abort());
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_schema_has_its_own_negative_key() {
        assert_ne!(lock_key("patients"), lock_key("studies"));
        assert!(lock_key("patients") < 0 && lock_key("studies") < 0);
    }
}
