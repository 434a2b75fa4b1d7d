//! Everything that can go wrong in the gateway, and the one place where each
//! failure becomes a gRPC status. A failure of either service fails the whole
//! call: the gateway never presents a partial page as complete.

use clinic_common::{
    client::{DownstreamError, Failure, Peer},
    errors,
    validation::Invalid,
};
use tonic::Status;

/// A failed gateway call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input fields break rules.
    #[error("{0}")]
    Invalid(#[from] Invalid),
    /// A downstream call failed.
    #[error(transparent)]
    Downstream(#[from] DownstreamError),
}

/// Result of gateway operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::Invalid(invalid) => errors::invalid_fields(&invalid),
            // patients-service judged the caller's own request (not found, a
            // bad page token): its answer is the answer, passed on as it is.
            Error::Downstream(e)
                if e.peer == Peer::Patients && matches!(e.failure(), Failure::Answered(_)) =>
            {
                e.into_peer_status()
            }
            Error::Downstream(e) => e.into(),
        }
    }
}
