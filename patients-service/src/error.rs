//! Everything that can go wrong in patients-service, and the one place where
//! each failure becomes a gRPC status.

use std::collections::HashMap;

use clinic_common::{errors, validation::Invalid};
use tonic::{Code, Status};

use crate::domain::PatientId;

/// Reason of NOT_FOUND for an unknown patient id.
pub const PATIENT_NOT_FOUND: &str = "PATIENT_NOT_FOUND";
/// Reason of ALREADY_EXISTS for an email another patient has.
pub const EMAIL_ALREADY_EXISTS: &str = "EMAIL_ALREADY_EXISTS";
/// Reason of FAILED_PRECONDITION for deleting a patient who has studies.
pub const PATIENT_HAS_STUDIES: &str = "PATIENT_HAS_STUDIES";
/// Reason of UNAVAILABLE when studies-service cannot be asked.
pub const STUDIES_UNAVAILABLE: &str = "STUDIES_SERVICE_UNAVAILABLE";

/// A failed patients operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input fields break rules.
    #[error("{0}")]
    Invalid(#[from] Invalid),
    /// The page token was not issued by ListPatients.
    #[error("invalid page token")]
    InvalidPageToken,
    /// No patient has this id.
    #[error("patient {0} not found")]
    NotFound(PatientId),
    /// Another patient has this email (ignoring case).
    #[error("email already in use")]
    EmailTaken,
    /// The etag sent is not the current one.
    #[error("stale etag for patient {0}")]
    EtagMismatch(PatientId),
    /// The patient still has studies and `force` was not set.
    #[error("patient {0} has studies")]
    HasStudies(PatientId),
    /// studies-service could not be asked whether the patient has studies.
    #[error("studies-service unavailable: {0}")]
    StudiesUnavailable(String),
    /// studies-service answered the has-studies question with an error.
    #[error("studies-service failed: {0}")]
    StudiesFailed(String),
    /// The caller's deadline passed while waiting for another service.
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// The database failed: unreachable, too slow, or something unexpected
    /// (see `clinic_common::errors::database`).
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Result of patients operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<clinic_common::validation::FieldViolation> for Error {
    fn from(violation: clinic_common::validation::FieldViolation) -> Self {
        Error::Invalid(violation.into())
    }
}

fn id_metadata(id: PatientId) -> HashMap<String, String> {
    HashMap::from([("patient_id".to_owned(), id.to_string())])
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::Invalid(invalid) => errors::invalid_fields(&invalid),
            Error::InvalidPageToken => errors::invalid_page_token(),
            Error::NotFound(id) => errors::with_reason_and_metadata(
                Code::NotFound,
                format!("patient {id} not found"),
                PATIENT_NOT_FOUND,
                id_metadata(id),
            ),
            Error::EmailTaken => errors::with_reason(
                Code::AlreadyExists,
                "email: another patient already has this email address (compared ignoring case)",
                EMAIL_ALREADY_EXISTS,
            ),
            Error::EtagMismatch(id) => errors::etag_mismatch(&format!("patient {id}")),
            Error::HasStudies(id) => errors::failed_precondition(
                format!("patient {id} has studies; delete them first, or set force to delete them too"),
                PATIENT_HAS_STUDIES,
                format!("patients/{id}"),
                "the patient still has studies",
            ),
            Error::StudiesUnavailable(detail) => {
                tracing::warn!(%detail, "studies-service unavailable");
                errors::with_reason(
                    Code::Unavailable,
                    "studies-service is unreachable, so it cannot be checked whether the patient has studies; retry later",
                    STUDIES_UNAVAILABLE,
                )
            }
            Error::StudiesFailed(detail) => {
                tracing::error!(%detail, "studies-service failed");
                Status::internal("internal error; it has been logged")
            }
            Error::DeadlineExceeded => errors::with_reason(
                Code::DeadlineExceeded,
                "the deadline passed while waiting for studies-service",
                errors::DEADLINE_EXCEEDED,
            ),
            Error::Database(e) => errors::database(&e),
        }
    }
}
