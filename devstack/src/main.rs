//! `clinic-dev`: `up` (the whole system), `import` (CSV files through the
//! API), `token` (development tokens), `credentials` (development keys and
//! certificates), `migrate` and `envoy-config` (render Envoy's configuration).

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use clap::{Parser, Subcommand};
use clinic_core::{context::Role, defaults};
use clinic_devstack::{
    credentials::{self, DevCredentials, Owners},
    envoy, import, ports, postgres, stack,
};
use clinic_telemetry::{LOG_FILTER_ARG, LogSettings};

/// Runs Clinic locally and the chores around it.
#[derive(Debug, Parser)]
#[command(name = "clinic-dev", version)]
#[command(mut_arg(LOG_FILTER_ARG, |a| a.default_value("warn").global(true)))]
#[command(mut_arg("format", |a| a.global(true)))]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: LogSettings,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start PostgreSQL, the three services and Envoy; load the sample data
    /// into an empty database; run until Ctrl-C.
    Up(UpArgs),
    /// Import patients and/or studies from CSV files through the API; a bad
    /// row is reported with file, line and field, and nothing is half-imported.
    Import {
        /// Where the API is (Envoy, or the services themselves).
        #[arg(long, env = "CLINIC_ADDR", default_value_t = defaults::uri(defaults::ENVOY_PORT))]
        addr: String,
        /// The bearer token to import with (an admin's, so a failed import
        /// can be undone); default: one signed with the local development
        /// key under --home.
        #[arg(long, env = "TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Folder of the local development keys.
        #[arg(long, env = "CLINIC_HOME", default_value = ".local")]
        home: PathBuf,
        /// Patients file: first_name, last_name, birth_date, email[, id].
        #[arg(long)]
        patients: Option<PathBuf>,
        /// Studies file: urgency_level, body_part, description, type, patient_id
        /// (the patients file's ids when --patients is given, else existing ids).
        #[arg(long)]
        studies: Option<PathBuf>,
    },
    /// Create the roles and schemas if missing and run both services'
    /// migrations (on DATABASE_URL, else on the local cluster of `up`).
    Migrate {
        /// Folder of the local cluster's data.
        #[arg(long, env = "CLINIC_HOME", default_value = ".local")]
        home: PathBuf,
        /// Superuser URL of an existing PostgreSQL.
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<String>,
    },
    /// Print a token signed with the local development key (made if
    /// missing), on one line: `export TOKEN=$(make -s token ROLE=admin SUBJECT=ana)`.
    Token {
        /// Folder of the local development keys.
        #[arg(long, env = "CLINIC_HOME", default_value = ".local")]
        home: PathBuf,
        /// The caller's roles: viewer, clinician, admin, service (repeat or
        /// separate with commas).
        #[arg(long = "role", required = true, value_delimiter = ',', value_parser = role_name)]
        roles: Vec<String>,
        /// Who the token names (`sub`); the audit trail records it.
        #[arg(long)]
        subject: String,
        /// How long the token is valid: seconds, or 90s, 15m, 1h, 2d.
        #[arg(long, default_value = "1h", value_parser = credentials::parse_ttl)]
        ttl: Duration,
    },
    /// Make the development signing key, JWKS and TLS certificates under
    /// --home if missing, and keep a fresh service token there (what the
    /// compose file's `credentials` container does).
    Credentials {
        /// Folder to write `signing/`, `jwks/`, `service/` and `tls/` into.
        #[arg(long, env = "CLINIC_HOME", default_value = ".local")]
        home: PathBuf,
        /// Owner (`uid` or `uid:gid`) of the TLS key: the user Envoy runs as.
        #[arg(long, value_parser = credentials::parse_owner)]
        tls_owner: Option<credentials::Owner>,
        /// Owner (`uid` or `uid:gid`) of the service token: the user studies-service runs as.
        #[arg(long, value_parser = credentials::parse_owner)]
        token_owner: Option<credentials::Owner>,
        /// Keep running, renewing the service token every half hour.
        #[arg(long)]
        watch: bool,
    },
    /// Write the API's descriptor set for Envoy's JSON transcoder (with the
    /// `google.api.http` routes and the google.rpc error details).
    Descriptor {
        /// The file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print Envoy's configuration, or write the committed variants:
    /// envoy/envoy.compose.yaml, envoy/envoy.keycloak.yaml and the
    /// Kubernetes base's deploy/k8s/base/envoy/envoy.yaml.
    EnvoyConfig {
        /// Render the compose and Kubernetes variants and write them to their committed files.
        #[arg(long)]
        compose: bool,
    },
}

#[derive(Debug, clap::Args)]
struct UpArgs {
    /// Folder for data, logs and run files.
    #[arg(long, env = "CLINIC_HOME", default_value = ".local")]
    home: PathBuf,
    /// Envoy's plaintext port (127.0.0.1, for local tools).
    #[arg(long, env = "ENVOY_PORT", default_value_t = defaults::ENVOY_PORT)]
    envoy_port: u16,
    /// Envoy's TLS port, the front door.
    #[arg(long, env = "ENVOY_TLS_PORT", default_value_t = defaults::ENVOY_TLS_PORT)]
    envoy_tls_port: u16,
    /// Envoy's admin port (bound to 127.0.0.1).
    #[arg(long, env = "ENVOY_ADMIN_PORT", default_value_t = defaults::ENVOY_ADMIN_PORT)]
    envoy_admin_port: u16,
    /// patients-service port.
    #[arg(long, env = "PATIENTS_PORT", default_value_t = defaults::PATIENTS_PORT)]
    patients_port: u16,
    /// studies-service port.
    #[arg(long, env = "STUDIES_PORT", default_value_t = defaults::STUDIES_PORT)]
    studies_port: u16,
    /// gateway port.
    #[arg(long, env = "GATEWAY_PORT", default_value_t = defaults::GATEWAY_PORT)]
    gateway_port: u16,
    /// The FHIR endpoint's port.
    #[arg(long, env = "FHIR_PORT", default_value_t = defaults::FHIR_PORT)]
    fhir_port: u16,
    /// patients-service's metrics port.
    #[arg(long, env = "PATIENTS_METRICS_PORT", default_value_t = defaults::PATIENTS_METRICS_PORT)]
    patients_metrics_port: u16,
    /// studies-service's metrics port.
    #[arg(long, env = "STUDIES_METRICS_PORT", default_value_t = defaults::STUDIES_METRICS_PORT)]
    studies_metrics_port: u16,
    /// The gateway's metrics port.
    #[arg(long, env = "GATEWAY_METRICS_PORT", default_value_t = defaults::GATEWAY_METRICS_PORT)]
    gateway_metrics_port: u16,
    /// The FHIR endpoint's metrics port.
    #[arg(long, env = "FHIR_METRICS_PORT", default_value_t = defaults::FHIR_METRICS_PORT)]
    fhir_metrics_port: u16,
    /// Replicas of each service (their ports: the first's plus 100, 200, …),
    /// all behind Envoy, calling each other with per-request balancing.
    #[arg(long, env = "REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=9))]
    replicas: u16,
    /// Also run Prometheus (Debian's `prometheus` package) scraping every
    /// service and Envoy, on 127.0.0.1:9090.
    #[arg(long, env = "PROMETHEUS", value_parser = clap::builder::BoolishValueParser::new(), default_value = "false")]
    prometheus: bool,
    /// Superuser URL of an existing PostgreSQL to use instead of a private one.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// The Envoy binary (default: .local/venv/bin/envoy, else `envoy` on PATH).
    #[arg(long, env = "ENVOY_BIN")]
    envoy_bin: Option<PathBuf>,
    /// Folder with the sample patients.csv and studies.csv.
    #[arg(long, env = "CLINIC_SAMPLE_DATA", default_value = "data")]
    sample_data: PathBuf,
    /// Pause before restarting a service that exited, in milliseconds.
    #[arg(long, env = "RESTART_DELAY_MS", default_value_t = 1000)]
    restart_delay_ms: u64,
    /// The listing page's built files (`make web`), served by the gateway.
    #[arg(long, env = "WEB_ROOT", default_value = "web/dist")]
    web_root: PathBuf,
    /// Origins whose pages may call the API from a browser (comma-separated;
    /// the listing page itself is same-origin and needs none).
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", value_delimiter = ',')]
    cors_allowed_origins: Vec<String>,
}

fn envoy_bin(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| {
        let local = PathBuf::from(".local/venv/bin/envoy");
        if local.exists() { local } else { PathBuf::from("envoy") }
    })
}

fn role_name(name: &str) -> Result<String, String> {
    Role::from_name(name).map(|r| r.name().to_owned()).ok_or_else(|| {
        let known: Vec<&str> = Role::ALL.iter().map(|r| r.name()).collect();
        format!("{name:?} is not a role; roles: {}", known.join(", "))
    })
}

async fn credentials(home: &Path, owners: Owners, watch: bool) -> Result<(), Box<dyn std::error::Error>> {
    let credentials = DevCredentials::ensure(home, owners)?;
    credentials.refresh_service_token()?;
    println!("credentials ready in {}", home.display());
    if watch {
        let mut renew = tokio::time::interval(credentials::DEFAULT_TTL / 2);
        renew.tick().await;
        let shutdown = clinic_host::server::shutdown_signal();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = renew.tick() => credentials.refresh_service_token()?,
            }
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let _telemetry = clinic_telemetry::init(&cli.log, "clinic-dev");
    let result: Result<(), Box<dyn std::error::Error>> = match cli.command {
        Command::Up(args) => {
            let bin_dir = std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from("target/debug"));
            let options = stack::UpOptions {
                home: args.home,
                ports: ports::Ports {
                    envoy: args.envoy_port,
                    envoy_tls: args.envoy_tls_port,
                    envoy_admin: args.envoy_admin_port,
                    patients: args.patients_port,
                    studies: args.studies_port,
                    gateway: args.gateway_port,
                    fhir: args.fhir_port,
                    metrics: [
                        args.patients_metrics_port,
                        args.studies_metrics_port,
                        args.gateway_metrics_port,
                        args.fhir_metrics_port,
                    ],
                    replicas: args.replicas,
                },
                database_url: args.database_url,
                bin_dir,
                envoy_bin: envoy_bin(args.envoy_bin),
                sample_data: args.sample_data,
                restart_delay: Duration::from_millis(args.restart_delay_ms),
                ready_timeout: Duration::from_secs(90),
                web_root: args
                    .web_root
                    .join("index.html")
                    .exists()
                    .then(|| std::path::absolute(&args.web_root).unwrap_or(args.web_root.clone())),
                cors_origins: args.cors_allowed_origins,
                prometheus: args.prometheus.then(|| PathBuf::from("/usr/bin/prometheus")),
                extra_env: Vec::new(),
            };
            stack::up(options).await.map_err(Into::into)
        }
        Command::Import { addr, token, home, patients, studies } => {
            async {
                let token = match token {
                    Some(token) => token,
                    None => DevCredentials::ensure(&home, Owners::default())?.token(
                        "clinic-dev-import",
                        &["admin"],
                        Duration::from_secs(3600),
                    )?,
                };
                let channel = clinic_dev_keys::bearer::authed(clinic_client::channel(&addr)?, &token);
                let summary = import::import(channel, patients.as_deref(), studies.as_deref()).await?;
                println!("imported {} patients and {} studies", summary.patients, summary.studies);
                Ok(())
            }
            .await
        }
        Command::Migrate { home, database_url } => {
            async {
                let db = postgres::prepare(&home, database_url.as_deref()).await?;
                let result = postgres::migrate(&db).await;
                tokio::task::spawn_blocking(move || db.stop()).await?;
                result.map_err(Into::into)
            }
            .await
        }
        Command::Token { home, roles, subject, ttl } => DevCredentials::ensure(&home, Owners::default())
            .and_then(|c| c.token(&subject, &roles.iter().map(String::as_str).collect::<Vec<_>>(), ttl))
            .map(|token| println!("{token}"))
            .map_err(Into::into),
        Command::Credentials { home, tls_owner, token_owner, watch } => {
            credentials(&home, Owners { tls: tls_owner, service_token: token_owner }, watch).await
        }
        Command::EnvoyConfig { compose: false } => {
            DevCredentials::ensure(Path::new(".local"), Owners::default())
                .map_err(Into::into)
                .and_then(|c| {
                    let descriptor = Path::new(".local/clinic.pb");
                    std::fs::write(descriptor, envoy::transcoder_descriptor_set())?;
                    let sds = Path::new(".local/envoy-tls-sds.yaml");
                    let (cert, key) = (c.cert_file(), c.cert_key_file());
                    std::fs::write(
                        sds,
                        envoy::tls_sds(&cert.display().to_string(), &key.display().to_string()),
                    )?;
                    envoy::render(&envoy::Addresses::local(&ports::Ports::default(), sds, descriptor))
                        .map_err(Into::into)
                })
                .map(|yaml| print!("{yaml}"))
        }
        Command::Descriptor { out } => {
            std::fs::write(&out, envoy::transcoder_descriptor_set()).map_err(Into::into)
        }
        Command::EnvoyConfig { compose: true } => {
            envoy::render_compose().map_err(Into::into).and_then(|files| {
                files.into_iter().try_for_each(|(file, yaml)| std::fs::write(file, yaml)).map_err(Into::into)
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("clinic-dev: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
