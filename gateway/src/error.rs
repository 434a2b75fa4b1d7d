//! Everything that can go wrong in the gateway, and the one place where each
//! failure becomes a gRPC status. A failure of either service fails the whole
//! call: the gateway never presents a partial page as complete.
//!
//! The gateway meets the failures every service shares ([`ApiError`]) and
//! one of its own: a service's verdict on the caller's own request, which is
//! passed on as the service gave it.

use clinic_core::{
    downstream::{DownstreamError, Failure},
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
    /// A failure every service can meet (invalid input, a page token the
    /// gateway did not issue, a service unreachable or out of time).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// A service judged the caller's own request (not found, a bad page
    /// token, not allowed): its answer is the answer.
    #[error(transparent)]
    Relayed(DownstreamError),
}

impl From<Invalid> for Error {
    fn from(invalid: Invalid) -> Self {
        Self::Api(invalid.into())
    }
}

impl From<DownstreamError> for Error {
    fn from(error: DownstreamError) -> Self {
        match error.failure() {
            Failure::Answered(code) if CALLERS_FAULT.contains(&code) => Self::Relayed(error),
            _ => Self::Api(error.into()),
        }
    }
}

/// Result of gateway operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::Api(e) => e.into(),
            Error::Relayed(e) => e.into_peer_status(),
        }
    }
}
