//! What a whole service process is made of.
//!
//! [`ServiceConfig`] gathers the setting groups every service with a
//! database flattens into its configuration; [`serve_with_database`] serves
//! while keeping health in step with Postgres; [`main`] is every binary's
//! `main`: parse the configuration, start telemetry, build, serve until
//! SIGINT or SIGTERM.

use std::{net::SocketAddr, process::ExitCode, sync::Arc};

use clinic_proto::audit::{
    intake::v1::audit_intake_service_server::AuditIntakeServiceServer,
    v1::audit_service_server::AuditServiceServer,
};

use tokio::net::TcpListener;
use tonic::service::Routes;

use crate::{
    health::Health,
    public::JwksRoute,
    server::{self, Front, ServeError, ServerSettings},
};
use clinic_audit::audit::{self, AuditApi, AuditIntakeApi, AuditLog, AuditSettings};
use clinic_auth::{JwksError, Verifier};
use clinic_client::DownstreamSettings;
use clinic_core::paging::PageTokens;
use clinic_layers::PoolScope;
use clinic_pg::{
    db::{self, DbSettings, DbStartupError},
    idempotency::{self, IdempotencySettings},
    leader,
    schema::{self, MigrateSettings, OwnedSchema, RUNTIME_ROLE_ARG, SchemaError},
    secrets,
};
use clinic_telemetry as telemetry;

/// The settings every Clinic service with a database reads the same way.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceConfig {
    /// Listening, request ceiling and shutdown drain.
    #[command(flatten)]
    pub server: ServerSettings,
    /// Postgres connection, pool and health probe.
    #[command(flatten)]
    pub db: DbSettings,
    /// Calls to other services.
    #[command(flatten)]
    pub downstream: DownstreamSettings,
    /// Idempotency keys of creates.
    #[command(flatten)]
    pub idempotency: IdempotencySettings,
    /// The audit trail's retention.
    #[command(flatten)]
    pub audit: AuditSettings,
}

/// Why a Clinic process could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The listen address could not be bound.
    #[error("binding the listen address: {0}")]
    Bind(#[from] std::io::Error),
    /// Postgres could not be reached or migrated.
    #[error(transparent)]
    Database(#[from] DbStartupError),
    /// The schema does not hold the migrations this build needs.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// Another service cannot be called as configured.
    #[error(transparent)]
    Peer(#[from] clinic_client::PeerError),
    /// The server's own TLS cannot be set up.
    #[error("TLS: {0}")]
    Tls(#[from] clinic_tls::TlsError),
    /// The key that signs page tokens could not be read.
    #[error("loading the page token key: {0}")]
    PageTokenKey(sqlx::Error),
    /// The change feed's head could not be read.
    #[error("reading the change feed: {0}")]
    ChangeFeed(sqlx::Error),
    /// The keys that sign accepted tokens could not be read.
    #[error(transparent)]
    Jwks(#[from] JwksError),
}

/// What a service with a database serves with: its listener bound, its pool
/// on a migrated schema, its health (NOT_SERVING until Postgres answers).
#[derive(Debug)]
pub struct Serving {
    /// The bound listener.
    pub listener: TcpListener,
    /// The pool, on a migrated schema.
    pub pool: sqlx::PgPool,
    /// The process's health.
    pub health: Health,
    /// The schema the service owns.
    pub schema: &'static str,
    /// Verifies callers' tokens.
    pub verifier: Arc<Verifier>,
    /// Signs page tokens (the audit trail's too).
    pub tokens: PageTokens,
}

impl Serving {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }
}

/// What [`prepare`] makes ready.
#[derive(Debug)]
pub struct Prepared {
    /// What the service serves with.
    pub serving: Serving,
    /// Page tokens signed with the service's own key.
    pub tokens: PageTokens,
}

/// Binds `config`'s listen address, connects to Postgres as the runtime
/// role, waits until `schema` holds every migration of this build (the
/// migrate step runs them, as the owner: see [`clinic_pg::schema`]), and loads
/// the page-token key kept there.
pub async fn prepare(
    config: &ServiceConfig,
    schema: &OwnedSchema,
    services: &[&'static str],
) -> Result<Prepared, StartupError> {
    let verifier = Verifier::load(config.server.auth.clone())?;
    let listener = TcpListener::bind(config.server.listen_addr).await?;
    let pool = config.db.pool().map_err(DbStartupError::Settings)?;
    schema::wait_until_migrated(&pool, schema, config.db.startup_timeout).await?;
    let schema = schema.name;
    let key = secrets::page_token_key(&pool, schema).await.map_err(StartupError::PageTokenKey)?;
    let mut services = services.to_vec();
    services.push(clinic_proto::audit::v1::SERVICE_NAME);
    let health = Health::new(&services).await;
    let tokens = PageTokens::new(key);
    Ok(Prepared {
        serving: Serving { listener, pool, health, schema, verifier, tokens: tokens.clone() },
        tokens,
    })
}

/// Serves like [`server::serve_with_tasks`], with the service's audit trail
/// (AuditService, the group-commit writer) and, for as long as it serves,
/// `health` in step with Postgres (see [`db::spawn_health_probe`]) and the
/// JWKS watched for changes; closes the pool at the end. The work one
/// replica does for all (`singleton`, plus pruning request ids and audit
/// events) runs on whichever replica holds the schema's lock ([`leader`]).
pub async fn serve_with_database(
    serving: Serving,
    routes: Routes,
    served: &[&'static str],
    config: &ServiceConfig,
    singleton: impl Fn() -> Vec<tokio::task::JoinHandle<()>> + Send + 'static,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let mut background = Vec::new();
    let Serving { listener, pool, health, schema, verifier, tokens } = serving;
    // The writer outlives the shutdown's start: in-flight rpcs still need it.
    let (audit, writer) = AuditLog::start((*pool.connect_options()).clone(), schema);
    let routes = routes
        .add_service(clinic_core::bounded!(AuditServiceServer::new(AuditApi::new(
            pool.clone(),
            schema,
            tokens
        ))))
        .add_service(clinic_core::bounded!(AuditIntakeServiceServer::new(AuditIntakeApi::new(
            audit.clone()
        ))));
    let (prune_pool, audit_settings, idempotency_settings) =
        (pool.clone(), config.audit.clone(), config.idempotency.clone());
    background.push(leader::spawn((*pool.connect_options()).clone(), leader::lock_key(schema), move || {
        let mut tasks = singleton();
        tasks.push(audit::spawn_pruner(prune_pool.clone(), schema, audit_settings.clone()));
        tasks.push(idempotency::spawn_pruner(prune_pool.clone(), schema, idempotency_settings.clone()));
        tasks
    }));
    background.push(db::spawn_pool_gauges(pool.clone()));
    background.push(verifier.clone().watch(JWKS_CHECK_INTERVAL));
    let probe_health = health.clone();
    let options = (*pool.connect_options()).clone();
    background.push(db::spawn_health_probe(options, config.db.health_probe_interval, move |ok| {
        let health = probe_health.clone();
        async move { health.set_serving(ok).await }
    }));
    let mut served = served.to_vec();
    served.extend([clinic_proto::audit::v1::SERVICE_NAME, clinic_proto::audit::intake::v1::SERVICE_NAME]);
    let mut middleware = server::rpc_middleware(&served, &config.server, verifier.clone(), Arc::new(audit));
    middleware.push(Arc::new(PoolScope::new(pool.clone())));
    let front = Front { middleware, public: vec![Arc::new(JwksRoute(verifier))] };
    let result =
        server::serve_with_tasks(listener, routes, health, &config.server, front, background, shutdown).await;
    writer.abort();
    pool.close().await;
    result
}

/// How often a process looks whether its JWKS file changed.
pub const JWKS_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// A Clinic server process, as [`main`] runs it.
pub trait Process: Sized + Send + 'static {
    /// Its configuration: command-line flags and environment variables.
    type Config: clap::Parser + Send + 'static;
    /// Its name in logs.
    const NAME: &'static str;
    /// The schema it owns, which `<binary> migrate` migrates; none for a
    /// process without a database.
    const SCHEMA: Option<OwnedSchema> = None;

    /// Binds the listener and prepares everything needed to serve.
    fn build(config: Self::Config) -> impl Future<Output = Result<Self, StartupError>> + Send;

    /// How the process serves, logs and reports metrics, from its
    /// configuration.
    fn server_settings(config: &Self::Config) -> &ServerSettings;

    /// The address actually bound.
    fn local_addr(&self) -> SocketAddr;

    /// Serves until `shutdown` completes, then drains.
    fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = Result<(), ServeError>> + Send;
}

/// The `main` of every Clinic server: reads the configuration (exiting with
/// clap's message on a bad flag or variable, or printing `--help`), starts
/// telemetry, builds the process and serves until SIGINT or SIGTERM.
///
/// A process that owns a schema also answers `<binary> migrate`: run its
/// migrations as the schema's owner, then exit ([`migrate_main`]).
pub fn main<P: Process>() -> ExitCode {
    if let Some(schema) = P::SCHEMA
        && std::env::args().nth(1).as_deref() == Some("migrate")
    {
        return migrate_main(P::NAME, &schema);
    }
    let config = <P::Config as clap::Parser>::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{}: starting the runtime: {e}", P::NAME);
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let settings = P::server_settings(&config);
        let telemetry = telemetry::init(&settings.log, P::NAME);
        match telemetry::serve_metrics(&settings.metrics) {
            Ok(true) => tracing::info!(addr = ?settings.metrics.addr.0, "metrics at /metrics"),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, "{} could not serve metrics", P::NAME);
                return ExitCode::FAILURE;
            }
        }
        let shutdown = server::shutdown_signal();
        let process = match P::build(config).await {
            Ok(process) => process,
            Err(e) => {
                tracing::error!(error = %e, "{} could not start", P::NAME);
                telemetry.shutdown();
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(addr = %process.local_addr(), "{} listening", P::NAME);
        let code = match process.run_until(shutdown).await {
            Ok(()) => {
                tracing::info!("{} stopped", P::NAME);
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(error = %e, "{} failed", P::NAME);
                ExitCode::FAILURE
            }
        };
        telemetry.shutdown();
        code
    })
}

/// The command line of `<binary> migrate`.
#[derive(Debug, clap::Parser)]
struct MigrateCommand {
    #[command(flatten)]
    settings: MigrateSettings,
    #[command(flatten)]
    log: telemetry::LogSettings,
}

/// `<binary> migrate`: reads [`MigrateSettings`] (DATABASE_URL is the
/// schema owner's), runs `schema`'s migrations as the owner, granting the
/// runtime role what the service needs, and exits: 0 when the schema is
/// current.
pub fn migrate_main(name: &'static str, schema: &OwnedSchema) -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let command = MigrateCommand::command()
        .name(format!("{name} migrate"))
        .bin_name(format!("{name} migrate"))
        .about(format!("Migrates the `{}` schema as its owner role, then exits.", schema.name))
        .mut_arg(
            clinic_pg::db::DATABASE_URL_ARG,
            clinic_core::settings::default_to(clinic_core::defaults::database_url(schema.owner_role)),
        )
        .mut_arg(RUNTIME_ROLE_ARG, clinic_core::settings::default_to(schema.runtime_role.to_owned()));
    let matches = command.get_matches_from(std::env::args().skip(1));
    let (settings, log) = match MigrateCommand::from_arg_matches(&matches) {
        Ok(command) => (command.settings, command.log),
        Err(e) => e.exit(),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{name} migrate: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let telemetry = telemetry::init(&log, name);
        let code = match schema::migrate(&settings, schema).await {
            Ok(applied) => {
                tracing::info!(schema = schema.name, applied, "schema migrated");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(error = %e, schema = schema.name, "migrating failed");
                ExitCode::FAILURE
            }
        };
        telemetry.shutdown();
        code
    })
}
