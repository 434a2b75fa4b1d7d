//! What can go wrong in studies-service beyond the failures every service
//! shares ([`ApiError`]), and the one place where each becomes a gRPC status.

use clinic_core::{
    errors,
    ids::{PatientId, StudyId},
};
use clinic_pg::api_error::ApiError;
use tonic::{Code, Status};

/// Reason of NOT_FOUND for a deleted study read without `show_deleted`.
pub const STUDY_DELETED: &str = "STUDY_DELETED";
/// Reason of FAILED_PRECONDITION for undeleting a study that is not deleted.
pub const STUDY_NOT_DELETED: &str = "STUDY_NOT_DELETED";
/// Reason of FAILED_PRECONDITION for undeleting a study whose patient is deleted.
pub const PATIENT_DELETED: &str = "PATIENT_DELETED";
/// Reason of ALREADY_EXISTS for a Study Instance UID another study has.
pub const STUDY_INSTANCE_UID_ALREADY_EXISTS: &str = "STUDY_INSTANCE_UID_ALREADY_EXISTS";
/// Reason of NOT_FOUND for a revision a study does not have.
pub const REVISION_NOT_FOUND: &str = "REVISION_NOT_FOUND";

/// A failed studies operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A failure every service can meet (invalid input, a study not found,
    /// a stale etag, the database, patients-service).
    #[error(transparent)]
    Api(ApiError),
    /// The study's patient does not exist, or its deletion has begun here:
    /// no study may be made for it.
    #[error("patient {0} not found")]
    PatientNotFound(PatientId),
    /// The study is deleted (and the request did not ask for deleted ones,
    /// or cannot apply to one).
    #[error("study {0} is deleted")]
    Deleted(StudyId),
    /// Undelete of a study that is not deleted.
    #[error("study {0} is not deleted")]
    NotDeleted(StudyId),
    /// Undelete of a study whose patient is deleted.
    #[error("study {study} cannot be undeleted: patient {patient} is deleted")]
    PatientDeleted {
        /// The study.
        study: StudyId,
        /// Its deleted patient.
        patient: PatientId,
    },
    /// Another study has this Study Instance UID.
    #[error("study instance uid already in use")]
    UidTaken,
    /// The study has no such revision.
    #[error("study {id} has no revision {revision}")]
    RevisionNotFound {
        /// The study.
        id: StudyId,
        /// The revision asked for.
        revision: i64,
    },
    /// The change feed cannot be read from where the consumer asks.
    #[error(transparent)]
    Feed(clinic_changes::FeedError),
}

clinic_pg::api_error_conversions!(Error);

/// Result of studies operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::Api(e) => e.into(),
            Error::PatientNotFound(patient) => ApiError::not_found(patient).into(),
            Error::Deleted(id) => errors::with_reason(
                Code::NotFound,
                format!("study {id} is deleted; set show_deleted to read it, or undelete it"),
                STUDY_DELETED,
            ),
            Error::NotDeleted(id) => errors::failed_precondition(
                format!("study {id} is not deleted"),
                STUDY_NOT_DELETED,
                format!("studies/{id}"),
                "the study is not deleted",
            ),
            Error::PatientDeleted { study, patient } => errors::failed_precondition(
                format!(
                    "study {study} cannot be undeleted while patient {patient} is deleted; undelete the patient, \
                     which restores the studies deleted with them"
                ),
                PATIENT_DELETED,
                format!("patients/{patient}"),
                "the study's patient is deleted",
            ),
            Error::UidTaken => errors::with_reason(
                Code::AlreadyExists,
                "study_instance_uid: another study already has this Study Instance UID",
                STUDY_INSTANCE_UID_ALREADY_EXISTS,
            ),
            Error::RevisionNotFound { id, revision } => errors::with_reason(
                Code::NotFound,
                format!("study {id} has no revision {revision}"),
                REVISION_NOT_FOUND,
            ),
            Error::Feed(e) => e.into(),
        }
    }
}
