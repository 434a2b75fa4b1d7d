//! What can go wrong in studies-service beyond the failures every service
//! shares ([`ApiError`]), and the one place where each becomes a gRPC status.

use clinic_core::ids::PatientId;
use clinic_pg::api_error::ApiError;
use tonic::Status;

/// A failed studies operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A failure every service can meet (invalid input, a study not found,
    /// a stale etag, the database, patients-service).
    #[error(transparent)]
    Api(ApiError),
    /// The study's patient does not exist, or its deletion has begun here:
    /// no study may be made for it.
    #[error("patient {0} not found")]
    PatientNotFound(PatientId),
}

clinic_pg::api_error_conversions!(Error);

/// Result of studies operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::Api(e) => e.into(),
            Error::PatientNotFound(patient) => ApiError::not_found(patient).into(),
        }
    }
}
