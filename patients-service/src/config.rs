//! Everything patients-service reads from its command line and environment,
//! each setting declared once (`patients-service --help` lists them all).

use clap::Parser;
use clinic_changes::FeedSettings;
use clinic_client::StudiesPeer;
use clinic_core::{defaults, settings::default_to};
use clinic_host::{server::LISTEN_ADDR_ARG, service::ServiceConfig};
use clinic_pg::db::DATABASE_URL_ARG;
use clinic_telemetry::METRICS_ADDR_ARG;

/// patients-service: owns the clinic's patients in the Postgres schema `patients`.
#[derive(Debug, Clone, Parser)]
#[command(name = "patients-service", version, about)]
#[command(
    after_help = "Before the first start and on every upgrade, run `patients-service migrate` as the schema's owner role (`patients-service migrate --help`)."
)]
#[command(mut_arg(LISTEN_ADDR_ARG, default_to(defaults::listen_addr(defaults::PATIENTS_PORT))))]
#[command(mut_arg(METRICS_ADDR_ARG, default_to(defaults::listen_addr(defaults::PATIENTS_METRICS_PORT))))]
#[command(mut_arg(DATABASE_URL_ARG, default_to(defaults::database_url(crate::ROLE))))]
pub struct Config {
    /// Listening, database and downstream settings shared by every service.
    #[command(flatten)]
    pub service: ServiceConfig,
    /// studies-service, asked whether a patient has studies before a non-forced delete.
    #[command(flatten)]
    pub studies: StudiesPeer,
    /// Retention of deleted patients and of the change feed; watch streams.
    #[command(flatten)]
    pub changes: FeedSettings,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every flag and variable is declared consistently (clap checks names,
    /// ids and defaults only when the command is built, at start-up).
    #[test]
    fn the_command_line_is_well_formed() {
        super::Config::command().debug_assert();
    }
}
