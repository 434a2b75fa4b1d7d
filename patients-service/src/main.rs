//! patients-service entry point: configuration, then serve until SIGINT/SIGTERM.

use patients_service::{Application, Config};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    clinic_common::telemetry::init();
    let app = Application::build(Config::from_env()?).await?;
    tracing::info!(addr = %app.local_addr(), "patients-service listening");
    app.run_until(clinic_common::server::shutdown_signal()).await?;
    tracing::info!("patients-service stopped");
    Ok(())
}
