//! The point in time by which a caller wants an answer, and the rule that
//! keeps a deadline from lying about a write.
//!
//! The server's deadline middleware abandons a call whose deadline passed,
//! unless the call has begun making a change durable
//! (`CallContext::begin_commit`, on the call's [`CallState`]): a write
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

    /// The call's deadline.
    pub fn deadline(&self) -> Deadline {
        self.deadline
    }

    /// Marks the call as committing, if its deadline leaves at least
    /// [`REPLY_ALLOWANCE`]; `false` (do not write) otherwise.
    pub fn begin_commit(&self) -> bool {
        if self.deadline.remaining() < REPLY_ALLOWANCE {
            return false;
        }
        self.committing.store(true, Ordering::Release);
        true
    }
}

/// The caller's deadline, kept in the call's context (`CallContext::deadline`)
/// so handlers pass what is left of it to downstream calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(pub Instant);

impl Deadline {
    /// Time left before the deadline (zero once it has passed).
    pub fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
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
