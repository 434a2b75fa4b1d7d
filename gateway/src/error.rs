//! Everything that can go wrong in the gateway, and the one place where each
//! failure becomes a gRPC status. A failure of either service fails the whole
//! call: the gateway never presents a partial page as complete.

use clinic_common::{errors, validation::Invalid};
use tonic::{Code, Status};

/// Reason of UNAVAILABLE when patients-service cannot be reached.
pub const PATIENTS_UNAVAILABLE: &str = "PATIENTS_SERVICE_UNAVAILABLE";
/// Reason of UNAVAILABLE when studies-service cannot be reached.
pub const STUDIES_UNAVAILABLE: &str = "STUDIES_SERVICE_UNAVAILABLE";

/// A downstream service of the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// patients-service.
    Patients,
    /// studies-service.
    Studies,
}

impl Service {
    /// The service's name, as people call it.
    pub fn name(self) -> &'static str {
        match self {
            Service::Patients => "patients-service",
            Service::Studies => "studies-service",
        }
    }
}

/// A failed gateway call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input fields break rules.
    #[error("{0}")]
    Invalid(#[from] Invalid),
    /// A downstream service is down or unreachable.
    #[error("{service} unavailable: {1}", service = .0.name())]
    Unavailable(Service, String),
    /// The caller's deadline passed while waiting for a downstream service.
    #[error("deadline exceeded waiting for {service}", service = .0.name())]
    DeadlineExceeded(Service),
    /// patients-service rejected the request itself (not found, bad page
    /// token, ...): its status is the answer, passed on as it is.
    #[error("patients-service answered {0:?}")]
    PatientsAnswered(Status),
    /// A downstream service failed unexpectedly.
    #[error("{service} failed: {1}", service = .0.name())]
    Failed(Service, String),
}

/// Result of gateway operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::Invalid(invalid) => errors::invalid_fields(&invalid),
            Error::Unavailable(service, detail) => {
                tracing::warn!(service = service.name(), %detail, "downstream unavailable");
                let reason = match service {
                    Service::Patients => PATIENTS_UNAVAILABLE,
                    Service::Studies => STUDIES_UNAVAILABLE,
                };
                errors::with_reason(
                    Code::Unavailable,
                    format!("{} is unreachable; retry later", service.name()),
                    reason,
                )
            }
            Error::DeadlineExceeded(service) => errors::with_reason(
                Code::DeadlineExceeded,
                format!("the deadline passed while waiting for {}", service.name()),
                errors::DEADLINE_EXCEEDED,
            ),
            Error::PatientsAnswered(status) => status,
            Error::Failed(service, detail) => {
                tracing::error!(service = service.name(), %detail, "downstream failed");
                Status::internal("internal error; it has been logged")
            }
        }
    }
}
