//! Everything the gateway reads from its command line and environment, each
//! setting declared once (`gateway --help` lists them all).

use clap::Parser;
use clinic_client::{DownstreamSettings, PatientsPeer, StudiesPeer};
use clinic_core::{defaults, settings::default_to};
use clinic_host::server::{LISTEN_ADDR_ARG, ServerSettings};
use clinic_telemetry::METRICS_ADDR_ARG;

/// gateway: the listing view of patients with their studies; holds no data.
#[derive(Debug, Clone, Parser)]
#[command(name = "gateway", version, about)]
#[command(mut_arg(LISTEN_ADDR_ARG, default_to(defaults::listen_addr(defaults::GATEWAY_PORT))))]
#[command(mut_arg(METRICS_ADDR_ARG, default_to(defaults::listen_addr(defaults::GATEWAY_METRICS_PORT))))]
pub struct Config {
    /// Listening, request ceiling and shutdown drain.
    #[command(flatten)]
    pub server: ServerSettings,
    /// How long downstream calls may wait.
    #[command(flatten)]
    pub downstream: DownstreamSettings,
    /// patients-service.
    #[command(flatten)]
    pub patients: PatientsPeer,
    /// studies-service.
    #[command(flatten)]
    pub studies: StudiesPeer,
    /// A folder with the listing page's built files (`index.html`, `web/`),
    /// served to anyone at `/` and `/web/` (they hold no data; every call
    /// the page makes carries the user's token); unset: no page.
    #[arg(long = "web-root", env = "WEB_ROOT", value_name = "DIR")]
    pub web_root: Option<std::path::PathBuf>,
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
