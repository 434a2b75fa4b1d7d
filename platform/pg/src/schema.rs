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
//!
//! A schema holds two kinds of DDL:
//! - the service's own tables: its sqlx migrations (`migrations/` of the
//!   service), history in `<schema>._sqlx_migrations`;
//! - tables every service's schema holds (the audit trail, request ids, the
//!   service secret, row versions): [`SharedDdl`] parts, each defined once by
//!   the crate whose code uses the table and applied to every schema after
//!   its own migrations, step by step, history in `<schema>.shared_migration`.
//!
//! Migrations are squashed from time to time into one [`Baseline`]: a schema
//! that holds every migration it replaces adopts it without running it (the
//! replaced files are history then, kept only as test fixtures). A schema
//! older than that must first be migrated by the release that squashed.

use std::{collections::HashMap, time::Duration};

use sha2::{Digest, Sha256};
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
    /// The migrations of its own tables, embedded at build time.
    pub migrator: fn() -> Migrator,
    /// The migration that squashed the older ones, if any.
    pub baseline: Option<Baseline>,
    /// The table of its resource (`patient`), which shared parts such as
    /// [`ROW_VERSIONS`] apply to.
    pub resource_table: &'static str,
    /// The shared parts it holds, applied in this order after its migrations.
    pub shared: &'static [&'static SharedDdl],
}

/// A migration that replaces every migration up to `replaces_through`: a
/// schema holding exactly those adopts it (its row is recorded with this
/// build's checksum) instead of running it.
#[derive(Debug, Clone, Copy)]
pub struct Baseline {
    /// Its version.
    pub version: i64,
    /// The last version it replaces.
    pub replaces_through: i64,
}

/// DDL that every service's schema holds, defined once by the crate whose
/// code uses the tables (the audit trail in `clinic-audit`, request ids in
/// [`crate::idempotency`]) and applied to each schema by the migrate step.
///
/// Steps are SQL in which `{schema}` stands for the schema's name and
/// `{table}` for its resource table. Each is applied once, in a
/// transaction, and recorded with its checksum; a released step is never
/// edited (the migrate step refuses a changed one): a change is a new step.
/// Step 1 of each part is written to find its objects already there (schemas
/// migrated when every service still carried its own copy) and leave them
/// as they are.
#[derive(Debug)]
pub struct SharedDdl {
    /// Its name in `<schema>.shared_migration`, `audit_trail`.
    pub name: &'static str,
    /// Its steps, in order.
    pub steps: &'static [&'static str],
}

impl SharedDdl {
    fn render(step: &str, schema: &OwnedSchema) -> String {
        step.replace("{schema}", schema.name).replace("{table}", schema.resource_table)
    }
}

/// Row versions of the resource table: every update bumps `version` (the
/// etag) and `update_time` and keeps `create_time`, whatever statement made it.
pub const ROW_VERSIONS: SharedDdl =
    SharedDdl { name: "row_versions", steps: &[include_str!("../sql/row_versions.sql")] };

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
        "schema {schema} is missing {missing:?} (or they differ from this build's): \
         run `<service> migrate` as the schema's owner first"
    )]
    NotMigrated {
        /// The schema.
        schema: &'static str,
        /// The migrations (`migration 9`) and shared steps
        /// (`audit_trail step 1`) missing or changed.
        missing: Vec<String>,
    },
    /// The schema stops at a migration older than this build's baseline.
    #[error(
        "schema {schema} holds migrations up to {at} only; this release squashed migrations up to \
         {needs} into one: migrate with an earlier release first"
    )]
    BeforeBaseline {
        /// The schema.
        schema: &'static str,
        /// Its newest migration.
        at: i64,
        /// The migration the baseline needs.
        needs: i64,
    },
    /// A shared step that was applied differs from this build's.
    #[error("schema {schema}: {part} step {step} was applied with other SQL than this build's")]
    SharedStepChanged {
        /// The schema.
        schema: &'static str,
        /// The shared part.
        part: &'static str,
        /// The step, from 1.
        step: usize,
    },
}

fn sql(doing: &'static str) -> impl FnOnce(sqlx::Error) -> SchemaError {
    move |error| SchemaError::Sql { doing, error }
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
/// history in `<schema>._sqlx_migrations` (adopting the [`Baseline`] on a
/// schema that holds what it replaces), then its [`SharedDdl`] parts; both
/// grant `settings.runtime_role` what the service needs. Then records the
/// audit retention, which only the owner may change. Returns how many
/// migrations this build has.
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
    if let Some(baseline) = schema.baseline {
        adopt_baseline(&mut conn, schema, &migrator, baseline).await?;
        migrator.set_ignore_missing(true);
    }
    migrator.run(&mut conn).await?;
    apply_shared(&mut conn, schema).await?;
    sqlx::query(AssertSqlSafe(format!("update {}.audit_retention set days = $1", schema.name)))
        .bind(i32::try_from(settings.audit_retention_days).unwrap_or(i32::MAX))
        .execute(&mut conn)
        .await
        .map_err(|error| SchemaError::Sql { doing: "recording the audit retention", error })?;
    let applied = migrator.iter().filter(|m| m.migration_type.is_up_migration()).count();
    conn.close().await.ok();
    Ok(applied)
}

/// Serialises the steps of concurrent migrate runs (a Job retried, two
/// replicas of a one-shot) that sqlx's own lock does not cover.
async fn lock_schema(conn: &mut PgConnection, schema: &OwnedSchema) -> Result<(), SchemaError> {
    sqlx::query("select pg_advisory_xact_lock(hashtext('clinic.migrate.' || $1))")
        .bind(schema.name)
        .execute(conn)
        .await
        .map_err(sql("waiting for another migrate run"))?;
    Ok(())
}

/// Records `baseline` as applied when the schema holds exactly the
/// migrations it replaces; refuses a schema that stops before them.
async fn adopt_baseline(
    conn: &mut PgConnection,
    schema: &OwnedSchema,
    migrator: &Migrator,
    baseline: Baseline,
) -> Result<(), SchemaError> {
    let name = schema.name;
    let mut tx = conn.begin().await.map_err(sql("starting the baseline's adoption"))?;
    lock_schema(&mut tx, schema).await?;
    let history = format!("{name}._sqlx_migrations");
    let exists: bool = sqlx::query_scalar("select to_regclass($1) is not null")
        .bind(&history)
        .fetch_one(&mut *tx)
        .await
        .map_err(sql("looking for the migration history"))?;
    if !exists {
        return Ok(());
    }
    let (newest, adopted): (Option<i64>, bool) = sqlx::query_as(AssertSqlSafe(format!(
        "select max(version) filter (where version < $1 and success), bool_or(version = $1) is true from {history}"
    )))
    .bind(baseline.version)
    .fetch_one(&mut *tx)
    .await
    .map_err(sql("reading the migration history"))?;
    match newest {
        _ if adopted => return Ok(()),
        None => return Ok(()),
        Some(at) if at != baseline.replaces_through => {
            return Err(SchemaError::BeforeBaseline { schema: name, at, needs: baseline.replaces_through });
        }
        Some(_) => {}
    }
    let migration = migrator
        .iter()
        .find(|m| m.version == baseline.version && m.migration_type.is_up_migration())
        .expect("the baseline is one of the service's migrations");
    sqlx::query(AssertSqlSafe(format!(
        "insert into {history} (version, description, success, checksum, execution_time) values ($1, $2, true, $3, 0)"
    )))
    .bind(migration.version)
    .bind(&*migration.description)
    .bind(&*migration.checksum)
    .execute(&mut *tx)
    .await
    .map_err(sql("adopting the baseline"))?;
    tx.commit().await.map_err(sql("adopting the baseline"))?;
    tracing::info!(schema = name, version = baseline.version, "adopted the baseline migration");
    Ok(())
}

fn checksum(sql: &str) -> Vec<u8> {
    Sha256::digest(sql.as_bytes()).to_vec()
}

/// Applies the steps of `schema.shared` it does not hold yet, all in one
/// transaction, and grants the runtime role what the service's start-up
/// check reads.
async fn apply_shared(conn: &mut PgConnection, schema: &OwnedSchema) -> Result<(), SchemaError> {
    let name = schema.name;
    let mut tx = conn.begin().await.map_err(sql("starting the shared parts"))?;
    lock_schema(&mut tx, schema).await?;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "create table if not exists {name}.shared_migration (
             part text not null,
             step integer not null,
             checksum bytea not null,
             apply_time timestamptz not null default now(),
             primary key (part, step)
         );
         do $$
         declare
             runtime text := current_setting('clinic.runtime_role');
         begin
             execute format('grant usage on schema {name} to %I', runtime);
             execute format('grant select on {name}._sqlx_migrations to %I', runtime);
             execute format('grant select on {name}.shared_migration to %I', runtime);
         end
         $$;"
    )))
    .execute(&mut *tx)
    .await
    .map_err(sql("creating the shared parts' history"))?;
    let applied = applied_shared(&mut tx, name).await.map_err(sql("reading the shared parts' history"))?;
    for part in schema.shared {
        for (index, step) in part.steps.iter().enumerate() {
            let number = index + 1;
            let rendered = SharedDdl::render(step, schema);
            let sum = checksum(&rendered);
            match applied.get(&(part.name.to_owned(), number as i32)) {
                Some(recorded) if *recorded == sum => continue,
                Some(_) => {
                    return Err(SchemaError::SharedStepChanged {
                        schema: name,
                        part: part.name,
                        step: number,
                    });
                }
                None => {}
            }
            sqlx::raw_sql(AssertSqlSafe(rendered))
                .execute(&mut *tx)
                .await
                .map_err(sql("applying a shared part"))?;
            sqlx::query(AssertSqlSafe(format!(
                "insert into {name}.shared_migration (part, step, checksum) values ($1, $2, $3)"
            )))
            .bind(part.name)
            .bind(number as i32)
            .bind(sum)
            .execute(&mut *tx)
            .await
            .map_err(sql("recording a shared part"))?;
            tracing::info!(schema = name, part = part.name, step = number, "applied a shared part");
        }
    }
    tx.commit().await.map_err(sql("committing the shared parts"))
}

async fn applied_shared(
    conn: &mut PgConnection,
    schema: &str,
) -> Result<HashMap<(String, i32), Vec<u8>>, sqlx::Error> {
    let rows: Vec<(String, i32, Vec<u8>)> =
        sqlx::query_as(AssertSqlSafe(format!("select part, step, checksum from {schema}.shared_migration")))
            .fetch_all(conn)
            .await?;
    Ok(rows.into_iter().map(|(part, step, sum)| ((part, step), sum)).collect())
}

/// What of this build's migrations and shared steps `schema` does not hold
/// (applied successfully, with the same checksum).
async fn missing(pool: &PgPool, schema: &OwnedSchema) -> Result<Vec<String>, sqlx::Error> {
    let name = schema.name;
    let applied: Vec<(i64, bool, Vec<u8>)> = sqlx::query_as(AssertSqlSafe(format!(
        "select version, success, checksum from {name}._sqlx_migrations"
    )))
    .fetch_all(pool)
    .await?;
    let applied: HashMap<i64, (bool, Vec<u8>)> = applied.into_iter().map(|(v, s, c)| (v, (s, c))).collect();
    let migrator = (schema.migrator)();
    let mut missing: Vec<String> = migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .filter(|m| !matches!(applied.get(&m.version), Some((true, checksum)) if *checksum == *m.checksum))
        .map(|m| format!("migration {}", m.version))
        .collect();
    let shared = applied_shared(&mut *pool.acquire().await?, name).await?;
    for part in schema.shared {
        for (index, step) in part.steps.iter().enumerate() {
            let sum = checksum(&SharedDdl::render(step, schema));
            if shared.get(&(part.name.to_owned(), index as i32 + 1)) != Some(&sum) {
                missing.push(format!("{} step {}", part.name, index + 1));
            }
        }
    }
    Ok(missing)
}

/// Waits until `schema` holds every migration and shared step of this build
/// (the migrate step may still be running, or Postgres may not be up yet),
/// for at most `timeout`. Migrations and steps newer than this build are
/// fine: a rolling upgrade migrates first, then replaces the replicas.
pub async fn wait_until_migrated(
    pool: &PgPool,
    schema: &OwnedSchema,
    timeout: Duration,
) -> Result<(), SchemaError> {
    let give_up = tokio::time::Instant::now() + timeout;
    let mut backoff = Duration::from_millis(100);
    let name = schema.name;
    loop {
        let result = missing(pool, schema).await;
        match result {
            Ok(missing) if missing.is_empty() => return Ok(()),
            _ if tokio::time::Instant::now() < give_up => {
                match &result {
                    Ok(missing) => {
                        tracing::info!(schema = name, ?missing, "waiting for the schema's migrations")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, schema = name, "cannot read the migration history yet; retrying")
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Ok(missing) => return Err(SchemaError::NotMigrated { schema: name, missing }),
            Err(error) => return Err(SchemaError::Sql { doing: "reading the migration history", error }),
        }
    }
}
