//! Calling another Clinic service: one reused channel per peer, and the
//! caller's remaining deadline carried onto every downstream call.

use std::time::Duration;

use tonic::{
    Code, Request, Status,
    transport::{Channel, Endpoint},
};

use crate::layers::Deadline;

/// A lazily connecting channel to `uri` (`http://host:port`), shared by all
/// calls to that peer: connects on first use, reconnects by itself, and fails
/// fast (UNAVAILABLE) while the peer is down.
pub fn channel(uri: &str) -> Result<Channel, tonic::transport::Error> {
    Ok(Endpoint::from_shared(uri.to_owned())?
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true)
        .connect_lazy())
}

/// A downstream request whose timeout is what is left of the caller's
/// `deadline`, never more than `ceiling`.
pub fn request<T>(message: T, deadline: Option<Deadline>, ceiling: Duration) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(deadline.map_or(ceiling, |d| d.remaining().min(ceiling)));
    request
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
/// as CANCELLED "Timeout expired"; that is our deadline passing.
pub fn classify(status: &Status) -> Failure {
    match status.code() {
        Code::Unavailable => Failure::Unavailable,
        Code::DeadlineExceeded => Failure::DeadlineExceeded,
        Code::Cancelled if status.message().contains("Timeout expired") => Failure::DeadlineExceeded,
        Code::Unknown if status.message().contains("transport error") => Failure::Unavailable,
        code => Failure::Answered(code),
    }
}
