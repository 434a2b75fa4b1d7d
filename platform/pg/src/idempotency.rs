//! Idempotent creates, bound to the request.
//!
//! A create that carries a `request_id` claims the key in
//! `<schema>.create_request` inside the creating transaction. Keys are the
//! caller's own: the pair (token subject, request id), so one user can
//! neither squat nor replay another's keys. The claim is stored together with
//! a fingerprint of the request (SHA-256 of its validated fields). A repeat
//! of the same request gets the resource the first one created; the same key
//! with a different request is refused (ALREADY_EXISTS, `REQUEST_ID_REUSED`)
//! and creates nothing, so a client that reuses keys by mistake never
//! receives someone else's patient. Keys are kept for a retention period
//! (at least a day by default) and then pruned by the service itself, in
//! bounded batches.

use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::{AssertSqlSafe, PgConnection, PgPool};

use crate::{api_error::ApiError, schema::SharedDdl};
use clinic_core::{resource::RequestId, settings::millis};

/// The table of request ids, applied to every service's schema by its
/// migrate step ([`crate::schema`]).
pub const REQUEST_IDS: SharedDdl =
    SharedDdl { name: "request_ids", steps: &[include_str!("../sql/request_ids.sql")] };

/// How long idempotency keys are kept and how they are pruned.
#[derive(Debug, Clone, clap::Args)]
pub struct IdempotencySettings {
    /// How long a create's request id is remembered, in hours: a repeat
    /// within it returns the first result.
    #[arg(
        long = "request-id-retention-hours",
        env = "REQUEST_ID_RETENTION_HOURS",
        value_name = "HOURS",
        default_value_t = 24
    )]
    pub retention_hours: u32,
    /// How often expired request ids are pruned, in milliseconds.
    #[arg(long = "request-id-prune-interval-ms", env = "REQUEST_ID_PRUNE_INTERVAL_MS", value_name = "MS", default_value = "600000", value_parser = millis)]
    pub prune_interval: Duration,
}

/// Keys deleted per pruning statement: small enough to hold locks briefly.
pub const PRUNE_BATCH: i64 = 1000;

/// A fingerprint of a create request: what its `request_id` is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a request made of `fields` (its validated values,
    /// in a fixed order), each length-prefixed so no two requests collide by
    /// moving text between fields.
    pub fn of(fields: &[&[u8]]) -> Self {
        let mut hash = Sha256::new();
        for field in fields {
            hash.update((field.len() as u64).to_be_bytes());
            hash.update(field);
        }
        Self(hash.finalize().into())
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// What claiming a request id found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The key is new and now held by this transaction: go ahead and create.
    New,
    /// The same request already created the resource with this id.
    Done(i64),
}

/// Claims `request_id` for a create with `fingerprint` in the transaction
/// on `conn`. Waits for a concurrent holder of the same key, then either
/// claims it, or finds it used by a committed create: the same request
/// ([`Claim::Done`]) or another one (`REQUEST_ID_REUSED`).
pub async fn claim(
    conn: &mut PgConnection,
    schema: &'static str,
    subject: &str,
    request_id: &RequestId,
    fingerprint: &Fingerprint,
) -> Result<Claim, ApiError> {
    let statement = format!(
        "insert into {schema}.create_request (subject, request_id, fingerprint) values ($3, $1, $2) \
         on conflict (subject, request_id) do nothing"
    );
    // The key can expire and be pruned between the conflict and the look-up
    // of its owner: it is then free, and the claim is tried again.
    for _ in 0..CLAIM_ATTEMPTS {
        let claimed = sqlx::query(AssertSqlSafe(statement.as_str()))
            .bind(request_id.as_str())
            .bind(fingerprint.as_bytes())
            .bind(subject)
            .execute(&mut *conn)
            .await?
            .rows_affected()
            == 1;
        if claimed {
            return Ok(Claim::New);
        }
        let owner: Option<(Option<i64>, Option<Vec<u8>>)> = sqlx::query_as(AssertSqlSafe(format!(
            "select resource_id, fingerprint from {schema}.create_request where subject = $2 and request_id = $1"
        )))
        .bind(request_id.as_str())
        .bind(subject)
        .fetch_optional(&mut *conn)
        .await?;
        match owner {
            None => continue,
            Some((_, Some(stored))) if stored != fingerprint.as_bytes() => {
                return Err(ApiError::RequestIdReused);
            }
            Some((Some(id), _)) => return Ok(Claim::Done(id)),
            Some((None, _)) => {
                return Err(ApiError::corrupt(format!(
                    "{schema}.create_request holds a key without its resource"
                )));
            }
        }
    }
    Err(ApiError::corrupt(format!(
        "{schema}.create_request key vanished {CLAIM_ATTEMPTS} times while claimed"
    )))
}

/// Claims tried before giving up on a key that keeps being pruned under us.
const CLAIM_ATTEMPTS: usize = 3;

/// The resource an earlier, committed create with `request_id` made, if
/// any; `REQUEST_ID_REUSED` if that create was a different request. Keys
/// stored before fingerprints existed match any request.
pub async fn earlier(
    conn: &mut PgConnection,
    schema: &'static str,
    subject: &str,
    request_id: &RequestId,
    fingerprint: &Fingerprint,
) -> Result<Option<i64>, ApiError> {
    let row: Option<(Option<i64>, Option<Vec<u8>>)> = sqlx::query_as(AssertSqlSafe(format!(
        "select resource_id, fingerprint from {schema}.create_request where subject = $2 and request_id = $1"
    )))
    .bind(request_id.as_str())
    .bind(subject)
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        None => Ok(None),
        Some((_, Some(stored))) if stored != fingerprint.as_bytes() => Err(ApiError::RequestIdReused),
        Some((id, _)) => Ok(id),
    }
}

/// Records that the create holding `request_id` made resource `id`, in the
/// same transaction as the resource itself.
pub async fn record(
    conn: &mut PgConnection,
    schema: &'static str,
    subject: &str,
    request_id: &RequestId,
    id: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(AssertSqlSafe(format!(
        "update {schema}.create_request set resource_id = $2 where subject = $3 and request_id = $1"
    )))
    .bind(request_id.as_str())
    .bind(id)
    .bind(subject)
    .execute(conn)
    .await
    .map(drop)
}

/// Deletes keys older than `retention` in batches of [`PRUNE_BATCH`], each
/// its own short statement; returns how many went.
pub async fn prune(pool: &PgPool, schema: &'static str, retention: Duration) -> Result<u64, sqlx::Error> {
    let statement = format!(
        "delete from {schema}.create_request where (subject, request_id) in ( \
             select subject, request_id from {schema}.create_request \
             where create_time < now() - make_interval(secs => $1) \
             order by create_time limit $2 for update skip locked)"
    );
    let mut pruned = 0;
    loop {
        let batch = sqlx::query(AssertSqlSafe(statement.as_str()))
            .bind(retention.as_secs_f64())
            .bind(PRUNE_BATCH)
            .execute(pool)
            .await?
            .rows_affected();
        pruned += batch;
        if batch < PRUNE_BATCH as u64 {
            return Ok(pruned);
        }
    }
}

/// Prunes expired keys of `schema` every `settings.prune_interval`.
pub fn spawn_pruner(
    pool: PgPool,
    schema: &'static str,
    settings: IdempotencySettings,
) -> tokio::task::JoinHandle<()> {
    let retention = Duration::from_secs(u64::from(settings.retention_hours) * 3600);
    crate::db::spawn_pruner("expired request ids", settings.prune_interval, move || {
        let pool = pool.clone();
        async move { prune(&pool, schema, retention).await }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_depend_on_every_field_and_its_boundaries() {
        let a = Fingerprint::of(&[b"Ana", b"Lopez"]);
        assert_eq!(a, Fingerprint::of(&[b"Ana", b"Lopez"]));
        assert_ne!(a, Fingerprint::of(&[b"Ana", b"Lopes"]));
        assert_ne!(a, Fingerprint::of(&[b"AnaL", b"opez"]), "moving text between fields changes it");
    }
}
