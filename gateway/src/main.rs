//! gateway entry point: configuration, then serve until SIGINT/SIGTERM.

use gateway::{Application, Config};

/// mimalloc: fewer cycles per allocation than the system allocator on the
/// request path (measured with `make bench`, see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    clinic_common::telemetry::init();
    let shutdown = clinic_common::server::shutdown_signal();
    let app = Application::build(Config::from_env()?).await?;
    tracing::info!(addr = %app.local_addr(), "gateway listening");
    app.run_until(shutdown).await?;
    tracing::info!("gateway stopped");
    Ok(())
}
