//! Building `tonic::Status` values with rich error details.
//!
//! Every service maps its own error type to a status in one place; these
//! helpers make sure that every such status looks the same to clients: a
//! human message, a `google.rpc.ErrorInfo` with domain [`DOMAIN`] and a stable
//! upper-case reason, and the detail message that fits the code.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::validation::{Invalid, MAX_VIOLATIONS};

/// The `ErrorInfo.domain` of every Clinic error.
pub const DOMAIN: &str = "clinic";

/// Reason of `INVALID_ARGUMENT` for input fields breaking rules.
pub const INVALID_FIELDS: &str = "INVALID_FIELDS";
/// Reason of `INVALID_ARGUMENT` for a page token that was not issued by the method.
pub const INVALID_PAGE_TOKEN: &str = "INVALID_PAGE_TOKEN";
/// Reason of `ABORTED` for a stale etag.
pub const ETAG_MISMATCH: &str = "ETAG_MISMATCH";
/// Reason of `UNAVAILABLE` when the service's Postgres cannot be reached.
pub const DATABASE_UNAVAILABLE: &str = "DATABASE_UNAVAILABLE";
/// Reason of `RESOURCE_EXHAUSTED` when the service sheds load.
pub const OVERLOADED: &str = "OVERLOADED";
/// Reason of `DEADLINE_EXCEEDED` when the caller's deadline passed.
pub const DEADLINE_EXCEEDED: &str = "DEADLINE_EXCEEDED";

/// A status with `code`, `message` and an `ErrorInfo` carrying `reason`.
pub fn with_reason(code: Code, message: impl Into<String>, reason: &str) -> Status {
    with_reason_and_metadata(code, message, reason, HashMap::new())
}

/// Like [`with_reason`], with `ErrorInfo.metadata` (for example the id that was not found).
pub fn with_reason_and_metadata(
    code: Code,
    message: impl Into<String>,
    reason: &str,
    metadata: HashMap<String, String>,
) -> Status {
    let details = ErrorDetails::with_error_info(reason, DOMAIN, metadata);
    Status::with_error_details(code, message, details)
}

/// `INVALID_ARGUMENT` with one `BadRequest` field violation per broken field.
/// At most [`MAX_VIOLATIONS`] are listed; the message counts the rest.
pub fn invalid_fields(invalid: &Invalid) -> Status {
    let mut details = ErrorDetails::new();
    let listed = &invalid.0[..invalid.0.len().min(MAX_VIOLATIONS)];
    for v in listed {
        details.add_bad_request_violation(v.field.clone(), v.description.clone());
    }
    details.set_error_info(INVALID_FIELDS, DOMAIN, HashMap::new());
    let unlisted = invalid.0.len() - listed.len();
    let mut message = match listed {
        [one] => format!("{}: {}", one.field, one.description),
        many => format!(
            "{} fields are invalid: {}",
            invalid.0.len(),
            many.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; ")
        ),
    };
    if unlisted > 0 {
        message.push_str(&format!("; and {unlisted} more not listed"));
    }
    Status::with_error_details(Code::InvalidArgument, message, details)
}

/// Reason of RESOURCE_EXHAUSTED when as many scanning searches run as allowed.
pub const SCANS_BUSY: &str = "SCANS_BUSY";

/// Reason of INVALID_ARGUMENT for a filter that scans too much.
pub const FILTER_TOO_COSTLY: &str = "FILTER_TOO_COSTLY";

/// `INVALID_ARGUMENT` for a filter no index can narrow that took longer
/// than `timeout_ms` to run: a field violation on `filter` saying how to
/// make it cheap.
pub fn filter_too_costly(timeout_ms: u128) -> Status {
    let description = format!(
        "no index can narrow this filter (it has no positive comparison on an indexed field; != and NOT \
         never use one) and it read rows for longer than {timeout_ms} ms; add such a condition"
    );
    let mut details = ErrorDetails::with_bad_request_violation("filter", description.clone());
    details.set_error_info(FILTER_TOO_COSTLY, DOMAIN, HashMap::new());
    Status::with_error_details(Code::InvalidArgument, format!("filter: {description}"), details)
}

/// `INVALID_ARGUMENT` for a page token the method did not issue.
pub fn invalid_page_token() -> Status {
    let mut details = ErrorDetails::with_bad_request_violation(
        "page_token",
        "not a page token issued by this method for this request; start again with an empty token",
    );
    details.set_error_info(INVALID_PAGE_TOKEN, DOMAIN, HashMap::new());
    Status::with_error_details(Code::InvalidArgument, "page_token is invalid", details)
}

/// `FAILED_PRECONDITION` with one `PreconditionFailure` violation.
pub fn failed_precondition(
    message: impl Into<String>,
    reason: &str,
    subject: impl Into<String>,
    description: impl Into<String>,
) -> Status {
    let mut details = ErrorDetails::with_precondition_failure_violation(reason, subject, description);
    details.set_error_info(reason, DOMAIN, HashMap::new());
    Status::with_error_details(Code::FailedPrecondition, message, details)
}

/// `ABORTED` for a stale etag on `what` (for example `patient 7`).
pub fn etag_mismatch(what: &str) -> Status {
    with_reason(
        Code::Aborted,
        format!(
            "{what} was changed by someone else: the etag is not the current one; read it again and retry"
        ),
        ETAG_MISMATCH,
    )
}

/// `UNAVAILABLE` because the service's database cannot be reached. Retryable.
pub fn database_unavailable() -> Status {
    with_reason(Code::Unavailable, "the database is unreachable; retry later", DATABASE_UNAVAILABLE)
}

/// `RESOURCE_EXHAUSTED` because the service is busier than it can serve
/// well (`what` is the resource). Retry later, with backoff; the database
/// and the service are up.
pub fn overloaded(what: &str) -> Status {
    with_reason(
        Code::ResourceExhausted,
        format!("the service is overloaded ({what}); retry with backoff"),
        OVERLOADED,
    )
}

/// `INTERNAL` with a generic message; the error itself goes to the log only,
/// so no SQL, driver text or secret reaches the client.
///
/// Only the error's message chain is logged (`Display`), never its `Debug`
/// form: a database error's detail can quote the row it was about.
pub fn internal(error: &(dyn std::error::Error + 'static)) -> Status {
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    tracing::error!(error = %chain, "internal error");
    Status::internal("internal error; it has been logged")
}
/// A gRPC code's name as grpc-ecosystem's metrics spell it (Go's names).
pub fn code_label(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}
