//! Everything that can go wrong in studies-service, and the one place where
//! each failure becomes a gRPC status.

use std::collections::HashMap;

use clinic_common::{errors, validation::Invalid};
use tonic::{Code, Status};

use crate::domain::{PatientRef, StudyId};

/// Reason of NOT_FOUND for an unknown study id.
pub const STUDY_NOT_FOUND: &str = "STUDY_NOT_FOUND";
/// Reason of NOT_FOUND for a study's patient that does not exist.
pub const PATIENT_NOT_FOUND: &str = "PATIENT_NOT_FOUND";
/// Reason of UNAVAILABLE when patients-service cannot be asked.
pub const PATIENTS_UNAVAILABLE: &str = "PATIENTS_SERVICE_UNAVAILABLE";

/// A failed studies operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input fields break rules.
    #[error("{0}")]
    Invalid(#[from] Invalid),
    /// The page token was not issued by ListStudies for this filter.
    #[error("invalid page token")]
    InvalidPageToken,
    /// No study has this id.
    #[error("study {0} not found")]
    NotFound(StudyId),
    /// The study's patient does not exist (or was deleted).
    #[error("patient {0} not found")]
    PatientNotFound(PatientRef),
    /// The etag sent is not the current one.
    #[error("stale etag for study {0}")]
    EtagMismatch(StudyId),
    /// patients-service could not be asked whether the patient exists.
    #[error("patients-service unavailable: {0}")]
    PatientsUnavailable(String),
    /// patients-service answered with an unexpected error.
    #[error("patients-service failed: {0}")]
    PatientsFailed(String),
    /// The caller's deadline passed while waiting for patients-service.
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// The database failed: unreachable, too slow, or something unexpected
    /// (see `clinic_common::errors::database`).
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Result of studies operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<clinic_common::validation::FieldViolation> for Error {
    fn from(violation: clinic_common::validation::FieldViolation) -> Self {
        Error::Invalid(violation.into())
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::Invalid(invalid) => errors::invalid_fields(&invalid),
            Error::InvalidPageToken => errors::invalid_page_token(),
            Error::NotFound(id) => errors::with_reason_and_metadata(
                Code::NotFound,
                format!("study {id} not found"),
                STUDY_NOT_FOUND,
                HashMap::from([("study_id".to_owned(), id.to_string())]),
            ),
            Error::PatientNotFound(id) => errors::with_reason_and_metadata(
                Code::NotFound,
                format!("patient {id} not found"),
                PATIENT_NOT_FOUND,
                HashMap::from([("patient_id".to_owned(), id.to_string())]),
            ),
            Error::EtagMismatch(id) => errors::etag_mismatch(&format!("study {id}")),
            Error::PatientsUnavailable(detail) => {
                tracing::warn!(%detail, "patients-service unavailable");
                errors::with_reason(
                    Code::Unavailable,
                    "patients-service is unreachable, so the study's patient cannot be checked; nothing was \
                     written; retry later",
                    PATIENTS_UNAVAILABLE,
                )
            }
            Error::PatientsFailed(detail) => {
                tracing::error!(%detail, "patients-service failed");
                Status::internal("internal error; it has been logged")
            }
            Error::DeadlineExceeded => errors::with_reason(
                Code::DeadlineExceeded,
                "the deadline passed while waiting for patients-service; nothing was written",
                errors::DEADLINE_EXCEEDED,
            ),
            Error::Database(e) => errors::database(&e),
        }
    }
}
