//! What can go wrong in patients-service beyond the failures every service
//! shares ([`ApiError`]), and the one place where each becomes a gRPC status.

use clinic_core::errors;
use clinic_pg::api_error::ApiError;
use tonic::{Code, Status};

use crate::domain::PatientId;

/// Reason of ALREADY_EXISTS for an email another patient has.
pub const EMAIL_ALREADY_EXISTS: &str = "EMAIL_ALREADY_EXISTS";
/// Reason of ALREADY_EXISTS for an identifier another live patient has.
pub const IDENTIFIER_ALREADY_EXISTS: &str = "IDENTIFIER_ALREADY_EXISTS";
/// Reason of ALREADY_EXISTS for a conditional create that found its patient
/// (ErrorInfo metadata `patient_id` names them).
pub const PATIENT_MATCH_EXISTS: &str = "PATIENT_MATCH_EXISTS";
/// Reason of FAILED_PRECONDITION for a conditional create whose filter
/// matches several patients.
pub const SEVERAL_PATIENTS_MATCH: &str = "SEVERAL_PATIENTS_MATCH";
/// Reason of FAILED_PRECONDITION for deleting a patient who has studies.
pub const PATIENT_HAS_STUDIES: &str = "PATIENT_HAS_STUDIES";
/// Reason of NOT_FOUND for a deleted patient read without `show_deleted`.
pub const PATIENT_DELETED: &str = "PATIENT_DELETED";
/// Reason of FAILED_PRECONDITION for undeleting a patient that is not deleted.
pub const PATIENT_NOT_DELETED: &str = "PATIENT_NOT_DELETED";
/// Reason of NOT_FOUND for a revision a patient does not have.
pub const REVISION_NOT_FOUND: &str = "REVISION_NOT_FOUND";

/// A failed patients operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A failure every service can meet (invalid input, not found, a stale
    /// etag, the database, another service).
    #[error(transparent)]
    Api(ApiError),
    /// Another patient has this email (ignoring case).
    #[error("email already in use")]
    EmailTaken,
    /// Another live patient has one of these identifiers.
    #[error("identifier already in use")]
    IdentifierTaken,
    /// Undelete of a patient one of whose identifiers another patient has
    /// taken since.
    #[error("patient {0}'s identifier was taken since its delete")]
    IdentifierTakenSince(PatientId),
    /// A conditional create found the patient it describes.
    #[error("patient {0} matches the condition")]
    MatchExists(PatientId),
    /// A conditional create's filter matches several patients.
    #[error("several patients match the condition")]
    SeveralMatch,
    /// The patient still has studies and `force` was not set.
    #[error("patient {0} has studies")]
    HasStudies(PatientId),
    /// The patient is deleted (and the request did not ask for deleted ones,
    /// or cannot apply to one).
    #[error("patient {0} is deleted")]
    Deleted(PatientId),
    /// Undelete of a patient that is not deleted.
    #[error("patient {0} is not deleted")]
    NotDeleted(PatientId),
    /// Undelete of a patient whose email another patient has taken since.
    #[error("patient {0}'s email was taken since its delete")]
    EmailTakenSince(PatientId),
    /// The patient has no such revision.
    #[error("patient {id} has no revision {revision}")]
    RevisionNotFound {
        /// The patient.
        id: PatientId,
        /// The revision asked for.
        revision: i64,
    },
    /// The change feed cannot be read from where the consumer asks.
    #[error(transparent)]
    Feed(clinic_changes::FeedError),
}

clinic_pg::api_error_conversions!(Error);

/// Result of patients operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::Api(e) => e.into(),
            Error::EmailTaken => errors::with_reason(
                Code::AlreadyExists,
                "email: another patient already has this email address (compared ignoring case)",
                EMAIL_ALREADY_EXISTS,
            ),
            Error::IdentifierTaken => errors::with_reason(
                Code::AlreadyExists,
                "identifiers: another patient already has one of these identifiers (system and value)",
                IDENTIFIER_ALREADY_EXISTS,
            ),
            Error::IdentifierTakenSince(id) => errors::failed_precondition(
                format!("patient {id} cannot be undeleted: another patient has one of its identifiers now"),
                IDENTIFIER_ALREADY_EXISTS,
                format!("patients/{id}"),
                "another patient has one of the patient's identifiers",
            ),
            Error::MatchExists(id) => errors::with_reason_and_metadata(
                Code::AlreadyExists,
                format!("patient {id} matches if_none_exist; nothing was created"),
                PATIENT_MATCH_EXISTS,
                [("patient_id".to_owned(), id.to_string())].into(),
            ),
            Error::SeveralMatch => errors::failed_precondition(
                "several patients match if_none_exist; nothing was created: make the filter select one",
                SEVERAL_PATIENTS_MATCH,
                "if_none_exist",
                "the filter matches more than one patient",
            ),
            Error::HasStudies(id) => errors::failed_precondition(
                format!("patient {id} has studies; delete them first, or set force to delete them too"),
                PATIENT_HAS_STUDIES,
                format!("patients/{id}"),
                "the patient still has studies",
            ),
            Error::Deleted(id) => errors::with_reason(
                Code::NotFound,
                format!("patient {id} is deleted; set show_deleted to read it, or undelete it"),
                PATIENT_DELETED,
            ),
            Error::NotDeleted(id) => errors::failed_precondition(
                format!("patient {id} is not deleted"),
                PATIENT_NOT_DELETED,
                format!("patients/{id}"),
                "the patient is not deleted",
            ),
            Error::EmailTakenSince(id) => errors::failed_precondition(
                format!("patient {id} cannot be undeleted: another patient has its email address now"),
                EMAIL_ALREADY_EXISTS,
                format!("patients/{id}"),
                "another patient has the patient's email address",
            ),
            Error::RevisionNotFound { id, revision } => errors::with_reason(
                Code::NotFound,
                format!("patient {id} has no revision {revision}"),
                REVISION_NOT_FOUND,
            ),
            Error::Feed(e) => e.into(),
        }
    }
}
