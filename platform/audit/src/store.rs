//! What every service's storage does the same way: make a change durable
//! without lying about it, delete a row conditioned on its
//! etag (with the audit event in the same statement), and tell why a
//! conditional write touched nothing.

use sqlx::PgPool;

use crate::audit::{self, AuditedStatement};
use clinic_core::{
    context::CallContext,
    ids::{Id, Kind},
    resource::Etag,
};
use clinic_pg::api_error::ApiError;

/// Runs `write`, the step that makes a change durable (a `commit`, or a
/// single autocommit statement), unless the caller's deadline leaves no time
/// to answer (then DEADLINE_EXCEEDED, and nothing is written). Once begun it
/// is never abandoned: the deadline middleware waits for it and answers with
/// its real outcome. See [`clinic_core::deadline`].
pub async fn durable<T, E: Into<ApiError>>(
    call: &CallContext,
    write: impl Future<Output = Result<T, E>>,
) -> Result<T, ApiError> {
    if !call.begin_commit() {
        return Err(ApiError::DeadlineExceeded);
    }
    write.await.map_err(Into::into)
}

/// Deletes row `id` of `table` if `etag` (when given) is its current
/// version, recording `call`'s audit event in `schema` in the same
/// statement (concerning the row's `patient` column); whether a row was
/// deleted. The caller decides the transaction.
pub async fn delete_if_current<'c, K: Kind>(
    conn: impl sqlx::PgExecutor<'c>,
    (schema, table, patient): (&'static str, &'static str, &'static str),
    call: &CallContext,
    id: Id<K>,
    etag: Option<&Etag>,
) -> Result<bool, sqlx::Error> {
    let statement = AuditedStatement::new(
        schema,
        &format!(
            "delete from {table} where id = $1 and ($2::text is null or version::text = $2) returning {patient} as patient"
        ),
        "changed.patient",
    );
    let deleted: Vec<(i64,)> =
        statement.query_as(call, |q| q.bind(id.get()).bind(etag.map(Etag::as_str))).fetch_all(conn).await?;
    audit::mark_audited(call, deleted.len());
    Ok(deleted.len() == 1)
}

/// Why a write of row `id` of `table`, conditioned on its etag, touched no
/// row: the row is gone (NOT_FOUND), or its etag changed (ABORTED).
pub async fn why_not_written<K: Kind>(pool: &PgPool, table: &'static str, id: Id<K>) -> ApiError {
    match sqlx::query_scalar::<_, i32>(sqlx::AssertSqlSafe(format!("select 1 from {table} where id = $1")))
        .bind(id.get())
        .fetch_optional(pool)
        .await
    {
        Ok(Some(_)) => ApiError::etag_mismatch(id),
        Ok(None) => ApiError::not_found(id),
        Err(e) => e.into(),
    }
}
