//! Every failure as FHIR says it: an `OperationOutcome` with the HTTP status
//! and issue code that fit, mapped once from the services' gRPC statuses
//! (their `ErrorInfo` reasons and `BadRequest` field violations). Nothing
//! internal reaches the client: an unexpected failure says only that it
//! happened.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use tonic::Code;
use tonic_types::StatusExt;

/// The media type of every answer.
pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// A failed interaction: its HTTP status and one issue.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The HTTP status.
    pub status: StatusCode,
    /// The issue's code (FHIR IssueType: `invalid`, `not-found`, ...).
    pub code: &'static str,
    /// What went wrong, for people.
    pub diagnostics: String,
    /// The elements at fault (FHIRPath), for `invalid`.
    pub expression: Vec<String>,
}

impl Outcome {
    /// 400 `invalid` at `expression`.
    pub fn invalid(expression: impl Into<String>, diagnostics: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid",
            diagnostics: diagnostics.into(),
            expression: vec![expression.into()],
        }
    }

    /// 400 `invalid` about the request as a whole.
    pub fn bad_request(diagnostics: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid",
            diagnostics: diagnostics.into(),
            expression: vec![],
        }
    }

    /// 404 `not-found`.
    pub fn not_found(diagnostics: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "not-found",
            diagnostics: diagnostics.into(),
            expression: vec![],
        }
    }

    /// `code` with `status`, no element named.
    pub fn new(status: StatusCode, code: &'static str, diagnostics: impl Into<String>) -> Self {
        Self { status, code, diagnostics: diagnostics.into(), expression: vec![] }
    }

    /// The `OperationOutcome` resource.
    pub fn resource(&self) -> Value {
        let mut issue = json!({ "severity": "error", "code": self.code, "diagnostics": self.diagnostics });
        if !self.expression.is_empty() {
            issue["expression"] = json!(self.expression);
        }
        json!({ "resourceType": "OperationOutcome", "issue": [issue] })
    }

    /// A service's status as FHIR says it; `element` turns a field path of
    /// the gRPC request (`patient.birth_date`) into the FHIRPath of the
    /// resource's element (`Patient.birthDate`).
    pub fn from_status(status: &tonic::Status, element: fn(&str) -> String) -> Self {
        let reason = status.get_details_error_info().map(|i| i.reason).unwrap_or_default();
        let message = status.message().to_owned();
        let (http, code) = match (status.code(), reason.as_str()) {
            (Code::InvalidArgument, "FILTER_TOO_COSTLY") => (StatusCode::BAD_REQUEST, "too-costly"),
            (Code::InvalidArgument, _) => {
                let violations =
                    status.get_details_bad_request().map(|b| b.field_violations).unwrap_or_default();
                if violations.is_empty() {
                    return Self::bad_request(message);
                }
                let diagnostics: Vec<String> =
                    violations.iter().map(|v| format!("{}: {}", element(&v.field), v.description)).collect();
                return Self {
                    status: StatusCode::BAD_REQUEST,
                    code: "invalid",
                    diagnostics: diagnostics.join("; "),
                    expression: violations.iter().map(|v| element(&v.field)).collect(),
                };
            }
            (Code::NotFound, r) if r.ends_with("_DELETED") => (StatusCode::GONE, "deleted"),
            (Code::NotFound, _) => (StatusCode::NOT_FOUND, "not-found"),
            (Code::AlreadyExists, _) => (StatusCode::CONFLICT, "duplicate"),
            (Code::Aborted, _) => (StatusCode::PRECONDITION_FAILED, "conflict"),
            (Code::FailedPrecondition, "SEVERAL_PATIENTS_MATCH") => {
                (StatusCode::PRECONDITION_FAILED, "multiple-matches")
            }
            (Code::FailedPrecondition, _) => (StatusCode::CONFLICT, "conflict"),
            (Code::Unauthenticated, _) => (StatusCode::UNAUTHORIZED, "login"),
            (Code::PermissionDenied, _) => (StatusCode::FORBIDDEN, "forbidden"),
            (Code::ResourceExhausted, _) => (StatusCode::TOO_MANY_REQUESTS, "throttled"),
            (Code::Unavailable, _) => (StatusCode::SERVICE_UNAVAILABLE, "transient"),
            (Code::DeadlineExceeded | Code::Cancelled, _) => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            (Code::OutOfRange, _) => (StatusCode::BAD_REQUEST, "invalid"),
            _ => {
                tracing::error!(code = ?status.code(), "a service failed a FHIR interaction");
                return Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "exception",
                    "the server failed unexpectedly; the error is logged, retry later",
                );
            }
        };
        Self::new(http, code, message)
    }
}

impl IntoResponse for Outcome {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.resource().to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(path: &str) -> String {
        format!("X.{path}")
    }

    #[test]
    fn statuses_become_the_fhir_issue_codes() {
        let cases = [
            (tonic::Status::not_found("x"), StatusCode::NOT_FOUND, "not-found"),
            (tonic::Status::aborted("x"), StatusCode::PRECONDITION_FAILED, "conflict"),
            (tonic::Status::unauthenticated("x"), StatusCode::UNAUTHORIZED, "login"),
            (tonic::Status::permission_denied("x"), StatusCode::FORBIDDEN, "forbidden"),
            (tonic::Status::unavailable("x"), StatusCode::SERVICE_UNAVAILABLE, "transient"),
        ];
        for (status, http, code) in cases {
            let outcome = Outcome::from_status(&status, field);
            assert_eq!((outcome.status, outcome.code), (http, code));
        }
        let internal = Outcome::from_status(&tonic::Status::internal("relation \"x\" does not exist"), field);
        assert_eq!(internal.code, "exception");
        assert!(!internal.diagnostics.contains("relation"), "no internals");
    }
}
