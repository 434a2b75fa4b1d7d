//! The `grpc.health.v1.Health` state of one process.

use std::sync::Arc;

use tonic_health::{ServingStatus, server::HealthReporter};

/// Name of the standard health service, as reflection lists it.
pub const HEALTH_SERVICE_NAME: &str = "grpc.health.v1.Health";

/// The health name that answers SERVING while the process answers at all,
/// whatever its dependencies: a liveness probe asks this one, so an outage
/// of PostgreSQL or of another service (which a restart would not fix) never
/// gets pods restarted; readiness asks the empty name.
pub const LIVENESS: &str = "liveness";

/// The `grpc.health.v1.Health` state of one process: the statuses of its
/// services and of the empty name (the process as a whole) move together.
#[derive(Clone)]
pub struct Health {
    pub(crate) reporter: HealthReporter,
    services: Arc<[&'static str]>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health").field("services", &self.services).finish_non_exhaustive()
    }
}

impl Health {
    /// Health for a process serving `services` (fully qualified names), NOT_SERVING
    /// until [`Health::set_serving`] says otherwise.
    pub async fn new(services: &[&'static str]) -> Self {
        let health = Self { reporter: HealthReporter::new(), services: services.into() };
        health.set_serving(false).await;
        health.set_service(LIVENESS, true).await;
        health
    }

    /// Marks every service and the process SERVING or NOT_SERVING.
    pub async fn set_serving(&self, serving: bool) {
        let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
        for name in self.services.iter().copied().chain([""]) {
            self.reporter.set_service_status(name, status).await;
        }
    }

    /// Sets the status of one service name (or `""`, the process) alone.
    pub async fn set_service(&self, name: &str, serving: bool) {
        let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
        self.reporter.set_service_status(name, status).await;
    }

    /// Ends health: the statuses are removed, which ends open `Watch`
    /// streams, so watchers do not hold a draining server open. Called after
    /// [`Health::set_serving`]`(false)`, so they have seen NOT_SERVING.
    pub async fn close(&self) {
        let mut reporter = self.reporter.clone();
        for name in self.services.iter().copied().chain(["", LIVENESS]) {
            reporter.clear_service_status(name).await;
        }
    }

    /// The services this process serves.
    pub fn services(&self) -> &[&'static str] {
        &self.services
    }
}
