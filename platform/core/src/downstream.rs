//! A call to another Clinic service that did not succeed: whom, what for,
//! and how the failure is reported to our own caller (unavailable, out of
//! time, or the peer's own answer).

use std::collections::HashMap;

use tonic::{Code, Response, Status};

use crate::errors;

/// Another Clinic service, as a caller names it in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// patients-service.
    Patients,
    /// studies-service.
    Studies,
}

impl Peer {
    /// The service's name, as people call it.
    pub fn name(self) -> &'static str {
        match self {
            Peer::Patients => "patients-service",
            Peer::Studies => "studies-service",
        }
    }

    /// The `ErrorInfo` reason of UNAVAILABLE when this peer cannot be reached.
    pub fn unavailable_reason(self) -> &'static str {
        match self {
            Peer::Patients => "PATIENTS_SERVICE_UNAVAILABLE",
            Peer::Studies => "STUDIES_SERVICE_UNAVAILABLE",
        }
    }
}

/// How a failed downstream call should be reported upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The peer is down or unreachable: retryable UNAVAILABLE.
    Unavailable,
    /// Our deadline passed while waiting for the peer.
    DeadlineExceeded,
    /// The peer answered with an error of its own.
    Answered(Code),
}

/// Classifies a downstream status. tonic reports its own client-side timeout
/// as CANCELLED "Timeout expired"; that is our deadline passing. Any other
/// CANCELLED is the peer's connection going away under the call (a replica
/// stopping during a rolling restart): the peer is unreachable, retryable.
/// So is every status tonic made from a broken connection rather than read
/// from the peer's answer (see [`broke_in_transport`]): a replica killed
/// while its answer's body was on the wire is an outage, never INTERNAL.
pub fn classify(status: &Status) -> Failure {
    match status.code() {
        Code::Unavailable => Failure::Unavailable,
        Code::DeadlineExceeded => Failure::DeadlineExceeded,
        Code::Cancelled if status.message().contains("Timeout expired") => Failure::DeadlineExceeded,
        Code::Cancelled => Failure::Unavailable,
        _ if broke_in_transport(status) => Failure::Unavailable,
        code => Failure::Answered(code),
    }
}

/// Whether tonic made `status` from a transport failure (an HTTP/2 or
/// hyper error: a reset stream, a connection closed while a body was read,
/// an I/O error) instead of reading it from the peer's `grpc-status`. A
/// status the peer sent has no source; one tonic made from such an error
/// keeps it.
pub fn broke_in_transport(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if error.is::<hyper::Error>()
            || error.is::<h2::Error>()
            || error.is::<std::io::Error>()
            || error.is::<tonic::transport::Error>()
        {
            return true;
        }
        source = error.source();
    }
    false
}

/// A call to another Clinic service that did not succeed.
#[derive(Debug, thiserror::Error)]
#[error("{peer} failed while {doing}: {code:?} {message}", peer = .peer.name(), code = .status.code(), message = .status.message())]
pub struct DownstreamError {
    /// Whom we called.
    pub peer: Peer,
    /// What for, in words that fit "while …" (for messages and logs).
    pub doing: &'static str,
    /// The status the call ended with.
    pub status: Status,
}

impl DownstreamError {
    /// How the failure should be reported.
    pub fn failure(&self) -> Failure {
        classify(&self.status)
    }

    /// The peer's own answer, passed on unchanged: for callers that relay a
    /// peer's verdict on the caller's own request (not found, bad token).
    pub fn into_peer_status(self) -> Status {
        self.status
    }
}

impl From<DownstreamError> for Status {
    /// UNAVAILABLE (reason `<PEER>_UNAVAILABLE`) when the peer cannot be
    /// reached, DEADLINE_EXCEEDED when our deadline passed, INTERNAL (logged,
    /// never shown) when the peer failed in a way we did not expect.
    fn from(error: DownstreamError) -> Self {
        let peer = error.peer.name();
        match error.failure() {
            Failure::Unavailable => {
                tracing::warn!(
                    peer,
                    doing = error.doing,
                    detail = error.status.message(),
                    "downstream unavailable"
                );
                errors::with_reason_and_metadata(
                    Code::Unavailable,
                    format!(
                        "{peer} is unreachable (needed for {}); nothing was written; retry later",
                        error.doing
                    ),
                    error.peer.unavailable_reason(),
                    HashMap::from([("service".to_owned(), peer.to_owned())]),
                )
            }
            Failure::DeadlineExceeded => errors::with_reason(
                Code::DeadlineExceeded,
                format!(
                    "the deadline passed while waiting for {peer} ({}); nothing was written",
                    error.doing
                ),
                errors::DEADLINE_EXCEEDED,
            ),
            Failure::Answered(_) => errors::internal(&error),
        }
    }
}

/// Turns the result of a downstream call into the message or a
/// [`DownstreamError`] naming the peer and what the call was for.
pub trait DownstreamExt<T> {
    /// The reply's message, or the failure of calling `peer` for `doing`.
    fn downstream(self, peer: Peer, doing: &'static str) -> Result<T, DownstreamError>;
}

impl<T> DownstreamExt<T> for Result<Response<T>, Status> {
    fn downstream(self, peer: Peer, doing: &'static str) -> Result<T, DownstreamError> {
        self.map(Response::into_inner).map_err(|status| DownstreamError { peer, doing, status })
    }
}

#[cfg(test)]
mod tests {
    use tonic_types::StatusExt;

    use super::*;

    #[test]
    fn tonics_own_timeout_counts_as_our_deadline_passing() {
        assert_eq!(classify(&Status::cancelled("Timeout expired")), Failure::DeadlineExceeded);
        assert_eq!(classify(&Status::unavailable("down")), Failure::Unavailable);
        // The peer's connection closing under the call (seen during rolling
        // restarts as a gateway INTERNAL before this was classified).
        assert_eq!(classify(&Status::cancelled("operation was canceled")), Failure::Unavailable);
        assert_eq!(classify(&Status::not_found("x")), Failure::Answered(Code::NotFound));
    }

    #[test]
    fn a_status_the_peer_sent_is_its_answer_even_when_it_reads_like_a_transport_error() {
        let sent = Status::internal("h2 protocol error: error reading a body from connection");
        assert_eq!(classify(&sent), Failure::Answered(Code::Internal));
    }

    #[test]
    fn every_caller_reports_a_downstream_failure_the_same_way() {
        let failed = |status| Err::<Response<()>, _>(status).downstream(Peer::Studies, "listing studies");
        let down: Status = failed(Status::unavailable("connection refused")).unwrap_err().into();
        assert_eq!(down.code(), Code::Unavailable);
        assert_eq!(down.get_details_error_info().unwrap().reason, "STUDIES_SERVICE_UNAVAILABLE");
        assert!(down.message().contains("studies-service") && !down.message().contains("refused"));
        let late: Status = failed(Status::cancelled("Timeout expired")).unwrap_err().into();
        assert_eq!(late.code(), Code::DeadlineExceeded);
        let odd: Status = failed(Status::data_loss("x")).unwrap_err().into();
        assert_eq!(odd.code(), Code::Internal);
        assert_eq!(failed(Status::not_found("n")).unwrap_err().into_peer_status().code(), Code::NotFound);
    }
}
