//! Assertions on error statuses, as a client would check them.

use std::collections::HashSet;

use tonic::{Code, Status};
use tonic_types::StatusExt;

/// The `ErrorInfo.reason` of `status`, after checking it has one with domain `clinic`.
pub fn reason(status: &Status) -> String {
    let info = status.get_details_error_info().unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.domain, "clinic", "{status:?}");
    info.reason
}

/// Asserts INVALID_ARGUMENT (reason INVALID_FIELDS) whose BadRequest names
/// exactly `fields`, each with a reason.
pub fn assert_invalid(result: Result<impl std::fmt::Debug, Status>, fields: &[&str]) {
    let status = result.expect_err("expected INVALID_ARGUMENT");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let bad = status.get_details_bad_request().unwrap_or_else(|| panic!("no BadRequest in {status:?}"));
    let got: Vec<_> = bad.field_violations.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(got.len(), fields.len(), "violations {got:?}, expected {fields:?}");
    assert_eq!(got.iter().copied().collect::<HashSet<_>>(), fields.iter().copied().collect(), "{status:?}");
    assert!(bad.field_violations.iter().all(|v| !v.description.is_empty()));
    assert_eq!(reason(&status), "INVALID_FIELDS");
    assert_no_internals(&status);
}

/// Asserts that nothing from the database, the driver or a panic leaks into
/// the message of `status`.
pub fn assert_no_internals(status: &Status) {
    let message = status.message().to_lowercase();
    for leak in [
        "sqlx",
        "select ",
        "insert ",
        "update patients",
        "update studies",
        "delete from",
        "constraint",
        "violates",
        "postgres",
        "pg_",
        "sqlstate",
        "panicked",
        "transport error",
    ] {
        assert!(!message.contains(leak), "message leaks {leak:?}: {}", status.message());
    }
}

/// Waits (bounded) until `check` holds, checking every 50 ms; for effects
/// that happen in the background, such as the delete cascade.
pub async fn eventually<F, Fut>(within: std::time::Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let give_up = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(tokio::time::Instant::now() < give_up, "{what}: not within {within:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
