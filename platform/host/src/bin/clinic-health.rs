//! `clinic-health [ADDR] [SERVICE]`: exits 0 if the gRPC health check of
//! SERVICE (default: the whole process) at ADDR answers SERVING within two
//! seconds; otherwise 1. The container images use it as their HEALTHCHECK,
//! so they need no shell tools.

use std::{process::ExitCode, time::Duration};

use clap::Parser;
use clinic_core::defaults;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Checks the gRPC health of a Clinic process; exit code 0 means SERVING.
#[derive(Debug, Parser)]
#[command(name = "clinic-health", version)]
struct Args {
    /// The process to ask (host:port); a 0.0.0.0 host means this machine.
    #[arg(env = "LISTEN_ADDR", default_value_t = defaults::listen_addr(defaults::PATIENTS_PORT))]
    addr: String,
    /// The service name to check; empty for the process as a whole.
    #[arg(default_value = "")]
    service: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let Args { addr, service } = Args::parse();
    let addr = addr.replace("0.0.0.0", defaults::LOCALHOST);
    let check = async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?.connect().await?;
        let response = HealthClient::new(channel).check(HealthCheckRequest { service }).await?;
        Ok::<_, Box<dyn std::error::Error>>(response.into_inner().status())
    };
    match tokio::time::timeout(Duration::from_secs(2), check).await {
        Ok(Ok(ServingStatus::Serving)) => ExitCode::SUCCESS,
        Ok(Ok(status)) => {
            eprintln!("{addr}: {status:?}");
            ExitCode::FAILURE
        }
        Ok(Err(e)) => {
            eprintln!("{addr}: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("{addr}: no answer within 2 s");
            ExitCode::FAILURE
        }
    }
}
