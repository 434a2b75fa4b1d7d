//! What can go wrong in patients-service beyond the failures every service
//! shares ([`ApiError`]), and the one place where each becomes a gRPC status.

use clinic_core::errors;
use clinic_pg::api_error::ApiError;
use tonic::{Code, Status};

use crate::domain::PatientId;

/// Reason of ALREADY_EXISTS for an email another patient has.
pub const EMAIL_ALREADY_EXISTS: &str = "EMAIL_ALREADY_EXISTS";
/// Reason of FAILED_PRECONDITION for deleting a patient who has studies.
pub const PATIENT_HAS_STUDIES: &str = "PATIENT_HAS_STUDIES";

/// A failed patients operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A failure every service can meet (invalid input, not found, a stale
    /// etag, the database, another service).
    #[error(transparent)]
    Api(ApiError),
    /// Another patient has this email (ignoring case).
    #[error("email already in use")]
    EmailTaken,
    /// The patient still has studies and `force` was not set.
    #[error("patient {0} has studies")]
    HasStudies(PatientId),
}

clinic_pg::api_error_conversions!(Error);

/// Result of patients operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::Api(e) => e.into(),
            Error::EmailTaken => errors::with_reason(
                Code::AlreadyExists,
                "email: another patient already has this email address (compared ignoring case)",
                EMAIL_ALREADY_EXISTS,
            ),
            Error::HasStudies(id) => errors::failed_precondition(
                format!("patient {id} has studies; delete them first, or set force to delete them too"),
                PATIENT_HAS_STUDIES,
                format!("patients/{id}"),
                "the patient still has studies",
            ),
        }
    }
}
