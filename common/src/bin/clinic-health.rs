//! `clinic-health [ADDR] [SERVICE]`: exits 0 if the gRPC health check of
//! SERVICE (default: the whole process) at ADDR (default: `$LISTEN_ADDR`, or
//! 127.0.0.1:50051) answers SERVING within two seconds; otherwise 1. The
//! container images use it as their HEALTHCHECK, so they need no shell tools.

use std::{process::ExitCode, time::Duration};

use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let addr = args
        .next()
        .or_else(|| std::env::var("LISTEN_ADDR").ok())
        .unwrap_or_else(|| "127.0.0.1:50051".into())
        .replace("0.0.0.0", "127.0.0.1");
    let service = args.next().unwrap_or_default();
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
