//! Everything the FHIR endpoint reads from its command line and environment,
//! each setting declared once (`fhir --help` lists them all).

use clap::Parser;
use clinic_client::{DownstreamSettings, PatientsPeer, StudiesPeer};
use clinic_core::{defaults, settings::default_to};
use clinic_host::server::{LISTEN_ADDR_ARG, ServerSettings};
use clinic_telemetry::METRICS_ADDR_ARG;

/// fhir: the FHIR R4 endpoint over patients-service and studies-service;
/// holds no data.
#[derive(Debug, Clone, Parser)]
#[command(name = "fhir", version, about)]
#[command(mut_arg(LISTEN_ADDR_ARG, default_to(defaults::listen_addr(defaults::FHIR_PORT))))]
#[command(mut_arg(METRICS_ADDR_ARG, default_to(defaults::listen_addr(defaults::FHIR_METRICS_PORT))))]
pub struct Config {
    /// Listening, the token checks (JWKS, issuer, audience), shutdown drain.
    #[command(flatten)]
    pub server: ServerSettings,
    /// How long calls to the services may wait.
    #[command(flatten)]
    pub downstream: DownstreamSettings,
    /// patients-service.
    #[command(flatten)]
    pub patients: PatientsPeer,
    /// studies-service.
    #[command(flatten)]
    pub studies: StudiesPeer,
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
