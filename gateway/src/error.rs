//! Everything that can go wrong in the gateway, and the one place where each
//! failure becomes a gRPC status. A failure of either service fails the whole
//! call: the gateway never presents a partial page as complete.

use clinic_core::{
    downstream::{DownstreamError, Failure},
    errors,
    validation::Invalid,
};
use clinic_pg::api_error::ApiError;
use tonic::{Code, Status};

/// Answers of a downstream service that are about the caller's own request.
const CALLERS_FAULT: [Code; 4] =
    [Code::InvalidArgument, Code::NotFound, Code::PermissionDenied, Code::Unauthenticated];

/// A failed gateway call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input fields break rules.
    #[error("{0}")]
    Invalid(#[from] Invalid),
    /// A downstream call failed.
    #[error(transparent)]
    Downstream(#[from] DownstreamError),
    /// A failure every service can meet (a page token the gateway did not issue).
    #[error(transparent)]
    Api(ApiError),
}

/// Result of gateway operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::Invalid(invalid) => errors::invalid_fields(&invalid),
            // A service judged the caller's own request (not found, a bad
            // page token): its answer is the answer, passed on as it is.
            Error::Downstream(e) if matches!(e.failure(), Failure::Answered(code) if CALLERS_FAULT.contains(&code)) => {
                e.into_peer_status()
            }
            Error::Downstream(e) => e.into(),
            Error::Api(e) => e.into(),
        }
    }
}
