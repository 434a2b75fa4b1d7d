//! Postgres plumbing shared by the services: pool settings, error
//! classification and the health probe. Migrations are [`crate::schema`]'s.

use std::time::Duration;

use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use tonic::{Code, Status};

use clinic_core::{errors, settings::millis};

/// Declares a table's row struct (`sqlx::FromRow`, with the table's name
/// as `Row::TABLE`) and a macro that expands to its column list in the
/// struct's order, from one list of fields, so a `select` list and the
/// struct it is read into cannot drift apart:
///
/// ```ignore
/// clinic_pg::table_row!(PatientRow in "patients.patient", patient_columns { id: i64, email: String });
/// sqlx::query_as::<_, PatientRow>(concat!("select ", patient_columns!(), " from patients.patient"));
/// ```
#[macro_export]
macro_rules! table_row {
    ($(#[$meta:meta])* $row:ident in $table:literal, $columns:ident { $first:ident: $first_ty:ty $(, $field:ident: $ty:ty)* $(,)? }) => {
        $(#[$meta])*
        #[derive(sqlx::FromRow)]
        struct $row {
            $first: $first_ty,
            $($field: $ty,)*
        }

        impl $row {
            /// The table the row is read from.
            const TABLE: &'static str = $table;
        }

        macro_rules! $columns {
            () => {
                concat!(stringify!($first) $(, ", ", stringify!($field))*)
            };
        }
    };
}

/// The statement that applies a patch to row `$1` of `table` where
/// `condition` holds (`delete_time is null`): each of `columns` takes its
/// bound value (`$2`, `$3`, …) unless that is null, and only if the etag
/// bound last is null or the row's current version, all in one statement
/// so no concurrent write slips in between; the row is returned as
/// `returning`.
pub fn patch_statement(table: &str, columns: &[&str], condition: &str, returning: &str) -> String {
    let set: Vec<String> =
        columns.iter().enumerate().map(|(i, c)| format!("{c} = coalesce(${}, {c})", i + 2)).collect();
    let etag = columns.len() + 2;
    format!(
        "update {table} set {} where id = $1 and {condition} and (${etag}::text is null or version::text = ${etag}) \
         returning {returning}",
        set.join(", ")
    )
}

/// The clap id of [`DbSettings::url`], for binaries that give it a default
/// of their own (`mut_arg`).
pub const DATABASE_URL_ARG: &str = "database_url";

/// How a service connects to Postgres.
#[derive(Debug, Clone, clap::Args)]
pub struct DbSettings {
    /// Connection URL of the service's own login role, which must own the
    /// service's schema.
    #[arg(long = "database-url", id = DATABASE_URL_ARG, env = "DATABASE_URL", value_name = "URL", hide_env_values = true)]
    pub url: String,
    /// Most connections the pool opens: small, since two cores are busy long
    /// before eight connections are.
    #[arg(long = "db-max-connections", env = "DB_MAX_CONNECTIONS", value_name = "N", default_value_t = 8)]
    pub max_connections: u32,
    /// How long an rpc waits for a pooled connection, in milliseconds: short,
    /// so an unreachable database becomes UNAVAILABLE in about a second.
    #[arg(long = "db-acquire-timeout-ms", env = "DB_ACQUIRE_TIMEOUT_MS", value_name = "MS", default_value = "1000", value_parser = millis)]
    pub acquire_timeout: Duration,
    /// Longest a single SQL statement may run, in milliseconds.
    #[arg(long = "db-statement-timeout-ms", env = "DB_STATEMENT_TIMEOUT_MS", value_name = "MS", default_value = "5000", value_parser = millis)]
    pub statement_timeout: Duration,
    /// How long start-up keeps retrying to reach Postgres and waits for its
    /// schema to hold every migration this build needs, in milliseconds.
    #[arg(long = "db-startup-timeout-ms", env = "DB_STARTUP_TIMEOUT_MS", value_name = "MS", default_value = "30000", value_parser = millis)]
    pub startup_timeout: Duration,
    /// Statement timeout of a search whose filter no index can narrow (`!=`,
    /// NOT, only unindexed fields), in milliseconds; past it the call fails
    /// INVALID_ARGUMENT (FILTER_TOO_COSTLY), so no caller holds a connection
    /// with a long scan.
    #[arg(long = "filter-scan-timeout-ms", env = "FILTER_SCAN_TIMEOUT_MS", value_name = "MS", default_value = "1000", value_parser = millis)]
    pub filter_scan_timeout: Duration,
    /// Most point-read statements (GetPatient, GetStudy) running at once;
    /// reads that arrive meanwhile queue and share the next statement
    /// (`where id = any($1)`). Fewer statements than connections is the
    /// point: under load each one answers many reads, which costs the
    /// database and the service a fraction of a statement per read.
    #[arg(long = "db-point-read-statements", env = "DB_POINT_READ_STATEMENTS", value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub point_read_statements: u32,
    /// How often health checks that Postgres answers, in milliseconds.
    #[arg(long = "health-probe-interval-ms", env = "HEALTH_PROBE_INTERVAL_MS", value_name = "MS", default_value = "1000", value_parser = millis)]
    pub health_probe_interval: Duration,
}

impl DbSettings {
    /// The settings for `url`, every other one from the environment or its
    /// default (for tools such as `clinic-dev migrate`).
    pub fn for_url(url: &str) -> Result<Self, clap::Error> {
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            db: DbSettings,
        }
        <Only as clap::Parser>::try_parse_from(["db", "--database-url", url]).map(|o| o.db)
    }

    /// A pool that connects lazily, so the service starts (NOT_SERVING) even
    /// while Postgres is down.
    pub fn pool(&self) -> Result<PgPool, sqlx::Error> {
        let statement_timeout = self.statement_timeout.as_millis().to_string();
        let options: PgConnectOptions = self
            .url
            .parse::<PgConnectOptions>()?
            .options([("statement_timeout", statement_timeout.as_str()), ("application_name", "clinic")]);
        Ok(PgPoolOptions::new()
            .max_connections(self.max_connections)
            .min_connections(0)
            .acquire_timeout(self.acquire_timeout)
            .idle_timeout(Duration::from_secs(300))
            // sqlx pings every connection before handing it out: a second
            // round trip per query. A connection used within the last second
            // is alive; only one idle longer (it may have sat through a
            // Postgres restart) is pinged, and dropped if it does not answer.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for < Duration::from_secs(1) {
                        return Ok(true);
                    }
                    Ok(sqlx::Connection::ping(conn).await.is_ok())
                })
            })
            .connect_lazy_with(options))
    }
}

/// Whether `error` means Postgres could not be reached or went away, as
/// opposed to a bug or a rejected statement: these become UNAVAILABLE.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 57P01..57P03: admin/crash shutdown,
            // cannot connect now; 53300: too many connections.
            code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

/// Whether `error` is a statement cancelled by `statement_timeout`.
pub fn is_statement_timeout(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("57014"))
}

/// The name of the unique constraint (or unique index) that `error` violated,
/// so storage code can map violations by name instead of racing a check.
pub fn unique_violation(error: &sqlx::Error) -> Option<&str> {
    match error {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => db.constraint(),
        _ => None,
    }
}

/// Why a service's database could not be made ready at start-up.
#[derive(Debug, thiserror::Error)]
pub enum DbStartupError {
    /// The connection settings are invalid.
    #[error("database settings: {0}")]
    Settings(#[from] sqlx::Error),
}

/// Keeps calling `report` with whether Postgres answers, on a connection of
/// its own (so a saturated pool never makes a reachable database look
/// down): `false` while connecting or `select 1` fails or takes longer than
/// `interval`, `true` as soon as it answers; only changes are reported.
pub fn spawn_health_probe<F, Fut>(
    options: PgConnectOptions,
    interval: Duration,
    mut report: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut(bool) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut serving = None;
        let mut conn: Option<sqlx::PgConnection> = None;
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let limit = interval.max(Duration::from_millis(200));
        loop {
            ticker.tick().await;
            let ok = tokio::time::timeout(limit, async {
                if conn.is_none() {
                    conn = Some(sqlx::ConnectOptions::connect(&options).await?);
                }
                let live = conn.as_mut().expect("connected above");
                sqlx::query("select 1").execute(live).await.map(drop)
            })
            .await
            .is_ok_and(|r| r.is_ok());
            if !ok {
                // A broken or stuck connection is not reused.
                conn = None;
            }
            if serving != Some(ok) {
                if ok {
                    tracing::info!("postgres reachable: SERVING");
                } else {
                    tracing::warn!("postgres unreachable: NOT_SERVING");
                }
                report(ok).await;
                serving = Some(ok);
            }
        }
    })
}

tokio::task_local! {
    /// The one task-local left: the process's pool, so that mapping any
    /// database error to a status (deep in `From` conversions, far from any
    /// pool) can tell overload from an outage. It is per process, not per
    /// call, but tests run several services in one process, so it is
    /// scoped by each server's `PoolScope` middleware rather than global.
    static POOL: PgPool;
}

/// Runs `call` with `pool` as the pool its database errors are judged
/// against (see [`status`]); the server does this for every rpc.
pub async fn with_pool<F: Future>(pool: PgPool, call: F) -> F::Output {
    POOL.scope(pool, call).await
}

/// Whether the current call's pool has every connection open and busy.
fn pool_saturated() -> bool {
    POOL.try_with(|pool| pool.size() >= pool.options().get_max_connections() && pool.num_idle() == 0)
        .unwrap_or(false)
}

/// The status for a database error: RESOURCE_EXHAUSTED (`OVERLOADED`) when
/// no pooled connection came free in time while every one was open and
/// busy; UNAVAILABLE when Postgres cannot be reached (retryable);
/// DEADLINE_EXCEEDED when a statement ran past its timeout; INTERNAL
/// (logged, never shown) for anything else.
pub fn status(error: &sqlx::Error) -> Status {
    if matches!(error, sqlx::Error::PoolTimedOut) {
        metrics::counter!("db_pool_acquire_timeouts_total").increment(1);
    }
    if matches!(error, sqlx::Error::PoolTimedOut) && pool_saturated() {
        tracing::warn!("no database connection came free in time");
        errors::overloaded("every database connection is busy")
    } else if is_unavailable(error) {
        tracing::warn!(error = %error, "database unavailable");
        errors::database_unavailable()
    } else if is_statement_timeout(error) {
        tracing::warn!(error = %error, "statement timeout");
        errors::with_reason(
            Code::DeadlineExceeded,
            "the database took too long to answer",
            errors::DEADLINE_EXCEEDED,
        )
    } else {
        errors::internal(error)
    }
}

/// Reports the pool's connections every second as the gauge
/// `db_pool_connections{state="in_use"|"idle"}`, with
/// `db_pool_max_connections`, until aborted. (sqlx does not say how many
/// callers wait for a connection; waits that time out are counted as
/// `db_pool_acquire_timeouts_total`.)
pub fn spawn_pool_gauges(pool: PgPool) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let max = f64::from(pool.options().get_max_connections());
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        loop {
            ticker.tick().await;
            let (size, idle) = (f64::from(pool.size()), pool.num_idle() as f64);
            metrics::gauge!("db_pool_connections", "state" => "in_use").set(size - idle);
            metrics::gauge!("db_pool_connections", "state" => "idle").set(idle);
            metrics::gauge!("db_pool_max_connections").set(max);
        }
    })
}

/// Runs `prune` every `interval` until aborted: logs what it removed (as
/// `what`) and, when it fails, a warning, trying again next interval.
pub fn spawn_pruner<F, Fut>(
    what: &'static str,
    interval: Duration,
    mut prune: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<u64, sqlx::Error>> + Send,
{
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match prune().await {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(pruned, what, "pruned"),
                Err(e) => tracing::warn!(error = %e, what, "pruning failed; retrying next interval"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_sets_each_column_unless_null_and_checks_the_etag_last() {
        assert_eq!(
            patch_statement("s.t", &["a", "b"], "live", "id, a, b"),
            "update s.t set a = coalesce($2, a), b = coalesce($3, b) \
             where id = $1 and live and ($4::text is null or version::text = $4) returning id, a, b"
        );
    }

    #[test]
    fn settings_for_a_url_take_the_documented_defaults() {
        let settings = DbSettings::for_url("postgres://x@h/db").unwrap();
        assert_eq!(settings.url, "postgres://x@h/db");
        assert!(settings.max_connections > 0);
    }
}
