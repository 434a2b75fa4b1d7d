//! `clinic-dev`: `up` (the whole system), `import` (CSV files through the
//! API) and `envoy-config` (render Envoy's configuration).

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use clinic_common::{
    defaults,
    telemetry::{LOG_FILTER_ARG, LogSettings},
};
use clinic_devstack::{envoy, import, postgres, stack};

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
    /// Print Envoy's configuration, or write the compose variant to
    /// envoy/envoy.compose.yaml.
    EnvoyConfig {
        /// Render the docker compose variant and write it to its committed file.
        #[arg(long)]
        compose: bool,
    },
}

#[derive(Debug, clap::Args)]
struct UpArgs {
    /// Folder for data, logs and run files.
    #[arg(long, env = "CLINIC_HOME", default_value = ".local")]
    home: PathBuf,
    /// Envoy's gRPC port, the front door.
    #[arg(long, env = "ENVOY_PORT", default_value_t = defaults::ENVOY_PORT)]
    envoy_port: u16,
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
}

fn envoy_bin(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| {
        let local = PathBuf::from(".local/venv/bin/envoy");
        if local.exists() { local } else { PathBuf::from("envoy") }
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    clinic_common::telemetry::init(&cli.log);
    let result: Result<(), Box<dyn std::error::Error>> = match cli.command {
        Command::Up(args) => {
            let bin_dir = std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from("target/debug"));
            let options = stack::UpOptions {
                home: args.home,
                ports: stack::Ports {
                    envoy: args.envoy_port,
                    envoy_admin: args.envoy_admin_port,
                    patients: args.patients_port,
                    studies: args.studies_port,
                    gateway: args.gateway_port,
                },
                database_url: args.database_url,
                bin_dir,
                envoy_bin: envoy_bin(args.envoy_bin),
                sample_data: args.sample_data,
                restart_delay: Duration::from_millis(args.restart_delay_ms),
                ready_timeout: Duration::from_secs(90),
            };
            stack::up(options).await.map_err(Into::into)
        }
        Command::Import { addr, patients, studies } => {
            async {
                let channel = clinic_common::client::channel(&addr)?;
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
        Command::EnvoyConfig { compose: false } => {
            envoy::render(&envoy::Addresses::local(&stack::Ports::default()))
                .map(|yaml| print!("{yaml}"))
                .map_err(Into::into)
        }
        Command::EnvoyConfig { compose: true } => envoy::render_compose()
            .map_err(Into::into)
            .and_then(|yaml| std::fs::write(envoy::COMPOSE_FILE, yaml).map_err(Into::into)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("clinic-dev: {e}");
            ExitCode::FAILURE
        }
    }
}
