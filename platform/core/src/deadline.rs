//! The point in time by which a caller wants an answer, and the rule that
//! keeps a deadline from lying about a write.
//!
//! The server's deadline layer abandons a call whose deadline passed, unless
//! the call has begun making a change durable ([`begin_commit`]): a write
//! that may already have committed is never reported as DEADLINE_EXCEEDED.
//! It waits for the outcome and answers with it. And a commit only begins
//! while there is time left to send the answer.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

/// The least time that must be left of a deadline to begin a commit: what
/// the answer needs to reach the caller before it gives up.
pub const REPLY_ALLOWANCE: Duration = Duration::from_millis(5);

/// One call's deadline and whether it has begun to commit.
#[derive(Debug)]
pub struct CallState {
    deadline: Deadline,
    committing: AtomicBool,
}

impl CallState {
    /// The state of a call due by `deadline`.
    pub fn new(deadline: Deadline) -> Arc<Self> {
        Arc::new(Self { deadline, committing: AtomicBool::new(false) })
    }

    /// Whether the call has begun to make a change durable.
    pub fn committing(&self) -> bool {
        self.committing.load(Ordering::Acquire)
    }
}

tokio::task_local! {
    static CALL: Arc<CallState>;
}

/// Runs `call` as the call whose state is `state`.
pub async fn scope<F: Future>(state: Arc<CallState>, call: F) -> F::Output {
    CALL.scope(state, call).await
}

/// Marks the current call as committing, if its deadline leaves at least
/// [`REPLY_ALLOWANCE`]; `false` (do not write) otherwise. Outside a call
/// (background work) there is no deadline and it is always `true`.
pub fn begin_commit() -> bool {
    CALL.try_with(|call| {
        if call.deadline.remaining() < REPLY_ALLOWANCE {
            false
        } else {
            call.committing.store(true, Ordering::Release);
            true
        }
    })
    .unwrap_or(true)
}

/// The caller's deadline, stored in each request's extensions by the
/// server's deadline layer so handlers can pass what is left of it to
/// downstream calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(pub Instant);

impl Deadline {
    /// Time left before the deadline (zero once it has passed).
    pub fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// The deadline of a request, if the server's deadline layer set one.
    pub fn of<T>(request: &tonic::Request<T>) -> Option<Self> {
        request.extensions().get::<Self>().copied()
    }
}

/// Parses a `grpc-timeout` header value: up to eight digits and a unit
/// (`H`, `M`, `S`, `m`, `u`, `n`).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_commit_begins_only_with_time_left_and_is_then_marked() {
        assert!(begin_commit(), "background work has no deadline");
        let late = CallState::new(Deadline(Instant::now()));
        assert!(!scope(late.clone(), async { begin_commit() }).await);
        assert!(!late.committing());
        let early = CallState::new(Deadline(Instant::now() + Duration::from_secs(5)));
        assert!(scope(early.clone(), async { begin_commit() }).await);
        assert!(early.committing());
    }

    #[test]
    fn grpc_timeout_units_parse() {
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("99999999u"), Some(Duration::from_micros(99_999_999)));
        for bad in ["", "S", "5", "5x", "123456789S", "-1S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }
}
