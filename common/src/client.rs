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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn timeout_header(request: &Request<()>) -> Duration {
        let value = request.metadata().get("grpc-timeout").expect("a grpc-timeout").to_str().unwrap();
        crate::layers::parse_grpc_timeout(value).expect("a valid grpc-timeout")
    }

    #[test]
    fn a_downstream_call_gets_what_is_left_of_the_callers_deadline() {
        let deadline = Deadline(Instant::now() + Duration::from_millis(300));
        let sent = timeout_header(&request((), Some(deadline), Duration::from_secs(5)));
        assert!(sent <= Duration::from_millis(300) && sent > Duration::from_millis(200), "{sent:?}");
    }

    #[test]
    fn a_downstream_call_never_waits_longer_than_the_ceiling() {
        let far = Deadline(Instant::now() + Duration::from_secs(60));
        assert_eq!(timeout_header(&request((), Some(far), Duration::from_secs(5))), Duration::from_secs(5));
        assert_eq!(timeout_header(&request((), None, Duration::from_secs(5))), Duration::from_secs(5));
    }

    #[test]
    fn tonics_own_timeout_counts_as_our_deadline_passing() {
        assert_eq!(classify(&Status::cancelled("Timeout expired")), Failure::DeadlineExceeded);
        assert_eq!(classify(&Status::unavailable("down")), Failure::Unavailable);
        assert_eq!(classify(&Status::not_found("x")), Failure::Answered(Code::NotFound));
    }
}
