//! Postgres plumbing shared by the services: pool settings, error
//! classification, migrations at start-up and the health probe.

use std::time::Duration;

use sqlx::{
    PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::{
    config::{self, ConfigError},
    server::Health,
};

/// How a service connects to Postgres; read from the environment by
/// [`DbSettings::from_env`].
#[derive(Debug, Clone)]
pub struct DbSettings {
    /// Connection URL of the service's own role (`DATABASE_URL`).
    pub url: String,
    /// Most connections the pool opens (`DB_MAX_CONNECTIONS`, default 8):
    /// small, since two cores are busy long before eight connections are.
    pub max_connections: u32,
    /// How long an rpc waits for a connection (`DB_ACQUIRE_TIMEOUT_MS`,
    /// default 1000): short, so an unreachable database becomes UNAVAILABLE
    /// in about a second instead of a hang.
    pub acquire_timeout: Duration,
    /// Longest a single statement may run (`DB_STATEMENT_TIMEOUT_MS`, default 5000).
    pub statement_timeout: Duration,
    /// How long start-up keeps retrying to reach Postgres and migrate
    /// (`DB_STARTUP_TIMEOUT_MS`, default 30000).
    pub startup_timeout: Duration,
}

impl DbSettings {
    /// The documented defaults, on `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 8,
            acquire_timeout: Duration::from_secs(1),
            statement_timeout: Duration::from_secs(5),
            startup_timeout: Duration::from_secs(30),
        }
    }

    /// Reads the settings; `default_url` applies when `DATABASE_URL` is unset.
    pub fn from_env(default_url: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            url: config::env_string("DATABASE_URL", default_url),
            max_connections: config::env_or("DB_MAX_CONNECTIONS", 8)?,
            acquire_timeout: config::env_millis("DB_ACQUIRE_TIMEOUT_MS", Duration::from_secs(1))?,
            statement_timeout: config::env_millis("DB_STATEMENT_TIMEOUT_MS", Duration::from_secs(5))?,
            startup_timeout: config::env_millis("DB_STARTUP_TIMEOUT_MS", Duration::from_secs(30))?,
        })
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

/// Runs `migrator` with its history in `schema`, retrying while Postgres is
/// unreachable until `settings.startup_timeout` has passed.
pub async fn migrate(
    pool: &PgPool,
    migrator: &mut Migrator,
    schema: &'static str,
    settings: &DbSettings,
) -> Result<(), sqlx::migrate::MigrateError> {
    migrator.dangerous_set_table_name(format!("{schema}._sqlx_migrations"));
    let give_up = tokio::time::Instant::now() + settings.startup_timeout;
    let mut backoff = Duration::from_millis(100);
    loop {
        match migrator.run(pool).await {
            Err(sqlx::migrate::MigrateError::Execute(e))
                if is_unavailable(&e) && tokio::time::Instant::now() < give_up =>
            {
                tracing::warn!(error = %e, "postgres not reachable yet; retrying migrations");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

/// Why a service's database could not be made ready at start-up.
#[derive(Debug, thiserror::Error)]
pub enum DbStartupError {
    /// The connection settings are invalid.
    #[error("database settings: {0}")]
    Settings(#[from] sqlx::Error),
    /// The migrations failed, or Postgres stayed unreachable too long.
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// A pool for `settings` with the service's migrations applied, their history
/// kept in `schema`.
pub async fn connect_and_migrate(
    settings: &DbSettings,
    mut migrator: Migrator,
    schema: &'static str,
) -> Result<PgPool, DbStartupError> {
    let pool = settings.pool()?;
    migrate(&pool, &mut migrator, schema, settings).await?;
    Ok(pool)
}

/// Keeps `health` in step with Postgres: NOT_SERVING while `select 1` fails
/// or takes longer than `interval`, SERVING again as soon as it answers.
pub fn spawn_health_probe(pool: PgPool, health: Health, interval: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut serving = None;
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let ok = matches!(
                tokio::time::timeout(
                    interval.max(Duration::from_millis(200)),
                    sqlx::query("select 1").execute(&pool)
                )
                .await,
                Ok(Ok(_))
            );
            if serving != Some(ok) {
                if ok {
                    tracing::info!("postgres reachable: SERVING");
                } else {
                    tracing::warn!("postgres unreachable: NOT_SERVING");
                }
                health.set_serving(ok).await;
                serving = Some(ok);
            }
        }
    })
}
