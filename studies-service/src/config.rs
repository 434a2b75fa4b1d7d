//! Everything studies-service reads from its command line and environment,
//! each setting declared once (`studies-service --help` lists them all).

use std::time::Duration;

use clap::Parser;
use clinic_changes::FeedSettings;
use clinic_client::{PatientsPeer, ServiceTokenSettings};
use clinic_core::{
    defaults,
    settings::{default_to, millis},
};
use clinic_host::{server::LISTEN_ADDR_ARG, service::ServiceConfig};
use clinic_pg::db::DATABASE_URL_ARG;
use clinic_telemetry::METRICS_ADDR_ARG;

/// studies-service: owns the clinic's imaging studies in the Postgres schema `studies`.
#[derive(Debug, Clone, Parser)]
#[command(name = "studies-service", version, about)]
#[command(
    after_help = "Before the first start and on every upgrade, run `studies-service migrate` as the schema's owner role (`studies-service migrate --help`)."
)]
#[command(mut_arg(LISTEN_ADDR_ARG, default_to(defaults::listen_addr(defaults::STUDIES_PORT))))]
#[command(mut_arg(METRICS_ADDR_ARG, default_to(defaults::listen_addr(defaults::STUDIES_METRICS_PORT))))]
#[command(mut_arg(DATABASE_URL_ARG, default_to(defaults::database_url(crate::ROLE))))]
pub struct Config {
    /// Listening, database and downstream settings shared by every service.
    #[command(flatten)]
    pub service: ServiceConfig,
    /// patients-service: patient checks and the change feed the cascade follows.
    #[command(flatten)]
    pub patients: PatientsPeer,
    /// Retention of deleted studies and of the change feed, and how
    /// watchers are served.
    #[command(flatten)]
    pub changes: FeedSettings,
    /// The service's own token, for reading patients' change feed and checking
    /// reservations (no person is behind those calls).
    #[command(flatten)]
    pub service_token: ServiceTokenSettings,
    /// How long the cascade waits on its watch of patients' feed before
    /// its other work (retries, reservations, metrics), and how soon it
    /// opens the watch again after it ended, in milliseconds.
    #[arg(long = "patient-events-poll-interval-ms", env = "PATIENT_EVENTS_POLL_INTERVAL_MS", value_name = "MS", default_value = "500", value_parser = millis)]
    pub events_poll_interval: Duration,
    /// How long a non-forced delete's reservation waits for its deletion
    /// event before patients-service is asked whether the patient still
    /// exists (and the reservation lifted if so), in milliseconds. Longer
    /// than any delete can take.
    #[arg(long = "deletion-reservation-timeout-ms", env = "DELETION_RESERVATION_TIMEOUT_MS", value_name = "MS", default_value = "120000", value_parser = millis)]
    pub reservation_timeout: Duration,
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
