//! Secrets a service generates for itself once, in its own schema: no
//! configuration to distribute, the same on every replica, kept across
//! restarts.

use sqlx::PgPool;

use crate::schema::SharedDdl;

/// The table of secrets a service generates for itself once (the page-token
/// key), applied to every service's schema by its migrate step.
pub const SERVICE_SECRET: SharedDdl =
    SharedDdl { name: "service_secret", steps: &[include_str!("../sql/service_secret.sql")] };

/// The key that signs a service's page tokens, generated once by the migrate
/// step into `<schema>.service_secret` ([`SERVICE_SECRET`]), so tokens
/// survive restarts and work on every replica without configuration.
pub async fn page_token_key(pool: &PgPool, schema: &'static str) -> Result<Vec<u8>, sqlx::Error> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "select value from {schema}.service_secret where name = 'page_token_key'"
    )))
    .fetch_one(pool)
    .await
}
