//! A service's schema: migrated by the role that owns it, used by a runtime
//! role that owns nothing.
//!
//! The service's own role must not be able to undo the guarantees of its
//! tables: a table's owner can always disable its triggers, grant itself
//! rights back, or drop it. So each schema has two roles. The owner
//! (`clinic_<service>_owner`) runs the migrations, in a step of its own
//! (`<service> migrate`: a compose one-shot, a Kubernetes Job, a step of
//! `make up`) before the service starts; the migrations grant the runtime
//! role (the one the service connects as) exactly what it needs - on the
//! audit trail only INSERT and SELECT, and pruning past the retention only
//! through a function the owner defines. The service itself never runs DDL:
//! at start-up it only waits until the schema holds every migration it was
//! built with ([`wait_until_migrated`]).

use std::{collections::HashMap, time::Duration};

use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool, migrate::Migrator, postgres::PgConnectOptions};

use crate::db::{DATABASE_URL_ARG, is_unavailable};
use clinic_core::settings::millis;

/// The clap id of [`MigrateSettings::runtime_role`], for binaries that give
/// it their own default (`mut_arg`).
pub const RUNTIME_ROLE_ARG: &str = "runtime_role";

/// The custom setting through which the migrate step tells the migrations
/// the runtime role's name (`current_setting('clinic.runtime_role')`).
pub const RUNTIME_ROLE_SETTING: &str = "clinic.runtime_role";

/// The audit trail's retention floor: the shortest a deployment may set.
pub const MIN_AUDIT_RETENTION_DAYS: u32 = 30;

/// What `<service> migrate` reads: it runs as the schema's owner.
#[derive(Debug, Clone, clap::Args)]
pub struct MigrateSettings {
    /// Connection URL of the role that owns the service's schema
    /// (`clinic_<service>_owner`); the service itself connects as its
    /// runtime role and never migrates.
    #[arg(long = "database-url", id = DATABASE_URL_ARG, env = "DATABASE_URL", value_name = "URL", hide_env_values = true)]
    pub url: String,
    /// The role the service runs as (the user of its DATABASE_URL): granted
    /// what the service needs and, on its audit trail, only INSERT and SELECT.
    #[arg(long = "database-runtime-role", id = RUNTIME_ROLE_ARG, env = "DATABASE_RUNTIME_ROLE", value_name = "ROLE")]
    pub runtime_role: String,
    /// How long audit events are kept, in days (at least 30; HIPAA asks for
    /// six years of records, hence the default). Only the owner sets it: the
    /// service's pruning reads it and cannot shorten it.
    #[arg(long = "audit-retention-days", env = "AUDIT_RETENTION_DAYS", value_name = "DAYS", default_value_t = 2190, value_parser = clap::value_parser!(u32).range(i64::from(MIN_AUDIT_RETENTION_DAYS)..))]
    pub audit_retention_days: u32,
    /// How long to keep retrying to reach Postgres, in milliseconds.
    #[arg(long = "db-startup-timeout-ms", env = "DB_STARTUP_TIMEOUT_MS", value_name = "MS", default_value = "30000", value_parser = millis)]
    pub startup_timeout: Duration,
}

impl MigrateSettings {
    /// Settings for a migration as `owner_url`, granting `runtime_role`,
    /// with the documented defaults for the rest (tests, `clinic-dev`).
    pub fn new(owner_url: String, runtime_role: &str) -> Self {
        Self {
            url: owner_url,
            runtime_role: runtime_role.to_owned(),
            audit_retention_days: 2190,
            startup_timeout: Duration::from_secs(30),
        }
    }
}

/// The schema a service owns: its name, its migrations and its roles' names.
#[derive(Debug, Clone, Copy)]
pub struct OwnedSchema {
    /// The schema, `patients`.
    pub name: &'static str,
    /// The role that owns it and runs the migrations.
    pub owner_role: &'static str,
    /// The role the service connects as, by default.
    pub runtime_role: &'static str,
    /// The migrations, embedded at build time.
    pub migrator: fn() -> Migrator,
}

/// Why a schema could not be migrated, or is not migrated.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The settings are not a usable URL.
    #[error("database settings: {0}")]
    Settings(sqlx::Error),
    /// Postgres refused or failed a statement.
    #[error("{doing}: {error}")]
    Sql {
        /// What was being done.
        doing: &'static str,
        /// The error.
        error: sqlx::Error,
    },
    /// A migration failed.
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The schema does not hold every migration this build needs.
    #[error(
        "schema {schema} is missing migrations {missing:?} (or they differ from this build's): \
         run `<service> migrate` as the schema's owner first"
    )]
    NotMigrated {
        /// The schema.
        schema: &'static str,
        /// The versions missing or changed.
        missing: Vec<i64>,
    },
}

/// Connects with `options`, retrying while Postgres is unreachable until
/// `timeout` has passed.
async fn connect_with_retries(
    options: &PgConnectOptions,
    timeout: Duration,
) -> Result<PgConnection, SchemaError> {
    let give_up = tokio::time::Instant::now() + timeout;
    let mut backoff = Duration::from_millis(100);
    loop {
        match PgConnection::connect_with(options).await {
            Ok(conn) => return Ok(conn),
            Err(e) if is_unavailable(&e) && tokio::time::Instant::now() < give_up => {
                tracing::warn!(error = %e, "postgres not reachable yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(error) => return Err(SchemaError::Sql { doing: "connecting as the schema's owner", error }),
        }
    }
}

/// Runs `schema`'s migrations as its owner (`settings.url`), with their
/// history in `<schema>._sqlx_migrations`; the migrations grant
/// `settings.runtime_role` what the service needs. Then records the audit
/// retention, which only the owner may change. Returns how many migrations
/// the schema now holds.
pub async fn migrate(settings: &MigrateSettings, schema: &OwnedSchema) -> Result<usize, SchemaError> {
    let options: PgConnectOptions = settings.url.parse().map_err(SchemaError::Settings)?;
    let mut conn = connect_with_retries(&options, settings.startup_timeout).await?;
    sqlx::query("select set_config($1, $2, false)")
        .bind(RUNTIME_ROLE_SETTING)
        .bind(&settings.runtime_role)
        .execute(&mut conn)
        .await
        .map_err(|error| SchemaError::Sql { doing: "naming the runtime role", error })?;
    let mut migrator = (schema.migrator)();
    migrator.dangerous_set_table_name(format!("{}._sqlx_migrations", schema.name));
    migrator.run(&mut conn).await?;
    sqlx::query(AssertSqlSafe(format!("update {}.audit_retention set days = $1", schema.name)))
        .bind(i32::try_from(settings.audit_retention_days).unwrap_or(i32::MAX))
        .execute(&mut conn)
        .await
        .map_err(|error| SchemaError::Sql { doing: "recording the audit retention", error })?;
    let applied = migrator.iter().filter(|m| m.migration_type.is_up_migration()).count();
    conn.close().await.ok();
    Ok(applied)
}

/// The versions of `migrator` that `schema` does not hold, successfully
/// applied with the same checksum.
async fn missing(pool: &PgPool, migrator: &Migrator, schema: &str) -> Result<Vec<i64>, sqlx::Error> {
    let applied: Vec<(i64, bool, Vec<u8>)> = sqlx::query_as(AssertSqlSafe(format!(
        "select version, success, checksum from {schema}._sqlx_migrations"
    )))
    .fetch_all(pool)
    .await?;
    let applied: HashMap<i64, (bool, Vec<u8>)> = applied.into_iter().map(|(v, s, c)| (v, (s, c))).collect();
    Ok(migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .filter(|m| !matches!(applied.get(&m.version), Some((true, checksum)) if *checksum == *m.checksum))
        .map(|m| m.version)
        .collect())
}

/// Waits until `schema` holds every migration of `migrator` (the migrate
/// step may still be running, or Postgres may not be up yet), for at most
/// `timeout`. Migrations newer than this build are fine: a rolling upgrade
/// migrates first, then replaces the replicas.
pub async fn wait_until_migrated(
    pool: &PgPool,
    migrator: &Migrator,
    schema: &'static str,
    timeout: Duration,
) -> Result<(), SchemaError> {
    let give_up = tokio::time::Instant::now() + timeout;
    let mut backoff = Duration::from_millis(100);
    loop {
        let result = missing(pool, migrator, schema).await;
        match result {
            Ok(missing) if missing.is_empty() => return Ok(()),
            _ if tokio::time::Instant::now() < give_up => {
                match &result {
                    Ok(missing) => tracing::info!(schema, ?missing, "waiting for the schema's migrations"),
                    Err(e) => {
                        tracing::warn!(error = %e, schema, "cannot read the migration history yet; retrying")
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Ok(missing) => return Err(SchemaError::NotMigrated { schema, missing }),
            Err(error) => return Err(SchemaError::Sql { doing: "reading the migration history", error }),
        }
    }
}
