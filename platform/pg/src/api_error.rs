//! What can go wrong in any Clinic service, and its one mapping to a status.
//!
//! A service's own error type holds only what is particular to it (a taken
//! email, a patient who still has studies) next to an [`ApiError`]; the
//! failures every service shares are declared, worded and mapped here once.

use std::collections::HashMap;

use tonic::{Code, Status};

use crate::db;
use clinic_core::{
    downstream::DownstreamError,
    errors,
    ids::{Id, Kind},
    paging::InvalidPageToken,
    validation::{FieldViolation, Invalid},
};

/// Reason of ALREADY_EXISTS for a request id reused with another request.
pub const REQUEST_ID_REUSED: &str = "REQUEST_ID_REUSED";

/// A failure any Clinic service can meet.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Input fields break rules.
    #[error("{0}")]
    Invalid(#[from] Invalid),
    /// The page token was not issued by this method for this request.
    #[error("invalid page token")]
    InvalidPageToken,
    /// No resource of this kind has this id.
    #[error("{noun} {id} not found")]
    NotFound {
        /// The kind of resource (`patient`, `study`).
        noun: &'static str,
        /// The id asked for.
        id: i64,
    },
    /// The etag sent is not the current one; nothing changed.
    #[error("stale etag for {noun} {id}")]
    EtagMismatch {
        /// The kind of resource.
        noun: &'static str,
        /// Its id.
        id: i64,
    },
    /// A `request_id` already used by a different create.
    #[error("request id reused for a different request")]
    RequestIdReused,
    /// The caller's deadline left no time to make the change durable;
    /// nothing was written.
    #[error("deadline too close to commit")]
    DeadlineExceeded,
    /// Another service could not answer.
    #[error(transparent)]
    Downstream(#[from] DownstreamError),
    /// The database failed: unreachable, too slow, or something unexpected
    /// (see [`db::status`]).
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Every connection was busy for longer than the pool waits: the
    /// service is overloaded, not the database unreachable.
    #[error("no database connection came free in time")]
    Overloaded,
    /// The database failed one statement that answered several calls
    /// (see [`crate::coalesce`]).
    #[error("database: {0}")]
    SharedDatabase(std::sync::Arc<sqlx::Error>),
    /// As many searches that scan as the service runs at once (or this
    /// caller's one) are running (`clinic_query::search::ScanBound`).
    #[error("too many scans in flight")]
    ScansBusy,
    /// A filter no index can narrow ran past its shorter statement timeout
    /// (`clinic_query::search::ScanBound`).
    #[error("filter ran past {timeout_ms} ms")]
    FilterTooCostly {
        /// The timeout it ran into.
        timeout_ms: u128,
    },
}

impl ApiError {
    /// NOT_FOUND for `id`.
    pub fn not_found<K: Kind>(id: Id<K>) -> Self {
        Self::NotFound { noun: K::NOUN, id: id.get() }
    }

    /// ABORTED for a stale etag on `id`.
    pub fn etag_mismatch<K: Kind>(id: Id<K>) -> Self {
        Self::EtagMismatch { noun: K::NOUN, id: id.get() }
    }

    /// Stored data that breaks an invariant the code relies on: INTERNAL,
    /// with `what` in the log only.
    pub fn corrupt(what: String) -> Self {
        Self::Database(sqlx::Error::Decode(what.into()))
    }
}

impl From<FieldViolation> for ApiError {
    fn from(violation: FieldViolation) -> Self {
        Self::Invalid(violation.into())
    }
}

impl From<InvalidPageToken> for ApiError {
    fn from(_: InvalidPageToken) -> Self {
        Self::InvalidPageToken
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Self {
        match error {
            ApiError::Invalid(invalid) => errors::invalid_fields(&invalid),
            ApiError::InvalidPageToken => errors::invalid_page_token(),
            ApiError::FilterTooCostly { timeout_ms } => errors::filter_too_costly(timeout_ms),
            ApiError::ScansBusy => errors::with_reason(
                Code::ResourceExhausted,
                "as many searches that no index can narrow as this service runs at once are running \
                 (one per caller); retry later, or add a condition on an indexed field",
                errors::SCANS_BUSY,
            ),
            ApiError::NotFound { noun, id } => errors::with_reason_and_metadata(
                Code::NotFound,
                format!("{noun} {id} not found"),
                &format!("{}_NOT_FOUND", noun.to_uppercase()),
                HashMap::from([(format!("{noun}_id"), id.to_string())]),
            ),
            ApiError::EtagMismatch { noun, id } => errors::etag_mismatch(&format!("{noun} {id}")),
            ApiError::RequestIdReused => errors::with_reason(
                Code::AlreadyExists,
                "request_id was already used by a different create request; nothing was created. \
                 Send a new request_id with a new request",
                REQUEST_ID_REUSED,
            ),
            ApiError::DeadlineExceeded => errors::with_reason(
                Code::DeadlineExceeded,
                "the deadline left no time to make the change; nothing was written",
                errors::DEADLINE_EXCEEDED,
            ),
            ApiError::Downstream(e) => e.into(),
            ApiError::Database(e) => db::status(&e),
            ApiError::SharedDatabase(e) => db::status(&e),
            ApiError::Overloaded => {
                metrics::counter!("db_pool_acquire_timeouts_total").increment(1);
                errors::overloaded("every database connection is busy")
            }
        }
    }
}

/// Implements `From` for every failure [`ApiError`] holds on a service's
/// error type whose `Api` variant holds an `ApiError`, so `?` works on
/// validation, paging, database and downstream results alike.
#[macro_export]
macro_rules! api_error_conversions {
    ($error:ty) => {
        impl<E> From<E> for $error
        where
            E: $crate::api_error::IntoApiError,
        {
            fn from(error: E) -> Self {
                Self::Api(error.into_api_error())
            }
        }
    };
}

/// The failures that become an [`ApiError`]; see [`api_error_conversions`].
pub trait IntoApiError {
    /// The `ApiError` for `self`.
    fn into_api_error(self) -> ApiError;
}

macro_rules! into_api_error {
    ($($source:ty),+) => {$(
        impl IntoApiError for $source {
            fn into_api_error(self) -> ApiError {
                self.into()
            }
        }
    )+};
}

into_api_error!(ApiError, Invalid, FieldViolation, InvalidPageToken, DownstreamError, sqlx::Error);

#[cfg(test)]
mod tests {
    use tonic_types::StatusExt;

    use super::*;
    use clinic_core::ids::{PatientId, StudyId};

    #[test]
    fn not_found_names_the_kind_and_id_in_message_reason_and_metadata() {
        let status: Status = ApiError::not_found(StudyId::from_stored(9)).into();
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "study 9 not found");
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.reason, "STUDY_NOT_FOUND");
        assert_eq!(info.metadata.get("study_id").map(String::as_str), Some("9"));
        let status: Status = ApiError::not_found(PatientId::from_stored(4)).into();
        assert_eq!(status.get_details_error_info().unwrap().reason, "PATIENT_NOT_FOUND");
    }

    #[test]
    fn corrupt_data_is_internal_and_says_nothing() {
        let status: Status = ApiError::corrupt("unknown body_part \"X\"".into()).into();
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("body_part"));
    }
}
