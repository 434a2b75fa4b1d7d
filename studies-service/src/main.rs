//! studies-service entry point: configuration, then serve until SIGINT/SIGTERM.

use studies_service::{Application, Config};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    clinic_common::telemetry::init();
    let app = Application::build(Config::from_env()?).await?;
    tracing::info!(addr = %app.local_addr(), "studies-service listening");
    app.run_until(clinic_common::server::shutdown_signal()).await?;
    tracing::info!("studies-service stopped");
    Ok(())
}
