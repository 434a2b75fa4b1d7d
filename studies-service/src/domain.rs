//! Imaging studies as the clinic understands them: validated values, the
//! radiology vocabulary (from `clinic-radiology`), and the rules they obey.
//! No I/O and no protobuf.

use chrono::{DateTime, Utc};
pub use clinic_changes::ChangeKind;
use clinic_changes::watch::Sequenced;
pub use clinic_core::resource::Deletion;
use clinic_core::validation::{FieldViolation, Invalid, Text, check_text};
pub use clinic_core::{
    ids::{PatientId, StudyId},
    resource::{Etag, RequestId, Stored},
};
use clinic_query::search::{Field, Kind, SortField, SortKind};
pub use clinic_radiology::{BodyPart, DicomUid, StudyType, UrgencyLevel};

/// Longest description, in characters, after trimming.
pub const MAX_DESCRIPTION_CHARS: usize = 2000;
/// Most patient ids one ListStudies may filter by.
pub const MAX_PATIENT_IDS: usize = 1000;
/// Longest description looked at, in bytes (2000 four-byte characters and
/// generous surrounding white space).
pub const MAX_DESCRIPTION_BYTES: usize = 10_000;

/// A study's description or findings: trimmed, 1 to 2000 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description(String);

impl Description {
    /// Validates `raw` as the description in `field`.
    pub fn parse(raw: &str, field: &str) -> Result<Self, FieldViolation> {
        let text = check_text(raw, field, MAX_DESCRIPTION_BYTES, Text::Prose)?.trim();
        let chars = text.chars().count();
        if chars == 0 {
            Err(FieldViolation::new(field, "is required"))
        } else if chars > MAX_DESCRIPTION_CHARS {
            Err(FieldViolation::new(
                field,
                format!("must be at most {MAX_DESCRIPTION_CHARS} characters, not {chars}"),
            ))
        } else {
            Ok(Self(text.to_owned()))
        }
    }

    /// A description read back from storage, which only holds valid ones.
    pub fn from_stored(text: String) -> Self {
        Self(text)
    }

    /// The text as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The patient filter of ListStudies: distinct, positive, at most 1000 ids,
/// sorted so that the same set always means the same page-token scope.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PatientFilter(Vec<i64>);

impl PatientFilter {
    /// Validates `raw` as the ids in `field`; empty means no filter.
    pub fn parse(raw: &[i64], field: &str) -> Result<Self, Invalid> {
        if raw.len() > MAX_PATIENT_IDS {
            return Err(Invalid::one(
                field,
                format!("must hold at most {MAX_PATIENT_IDS} ids, not {}", raw.len()),
            ));
        }
        let mut invalid = Invalid::default();
        for (i, id) in raw.iter().enumerate().filter(|(_, id)| **id <= 0) {
            invalid.push(format!("{field}[{i}]"), format!("must be a positive patient id, not {id}"));
        }
        let mut ids = raw.to_vec();
        ids.sort_unstable();
        ids.dedup();
        invalid.finish(|| Self(ids))
    }

    /// The filter of one patient's studies.
    pub fn one(patient: PatientId) -> Self {
        Self(vec![patient.get()])
    }

    /// The ids, sorted and distinct; empty for no filter.
    pub fn ids(&self) -> &[i64] {
        &self.0
    }
}

clinic_core::resource_fields! {
    /// A study's own fields: what a create sets and what is stored.
    fields StudyFields;
    /// The fields an update changes; `None` leaves a field as it is.
    patch StudyPatch;
    /// The fields of a study an update mask may name.
    field StudyField;
    {
        /// The patient (who must exist); in a patch, moves the study.
        patient_id: PatientId => PatientId,
        /// How soon it must be read.
        urgency_level: UrgencyLevel => UrgencyLevel,
        /// The part examined.
        body_part: BodyPart => BodyPart,
        /// Description or findings.
        description: Description => Description,
        /// The modality.
        study_type: StudyType => StudyType,
        /// The DICOM Study Instance UID, when known; unique among studies.
        study_instance_uid: Option<DicomUid> => StudyInstanceUid,
    }
}

/// A stored study.
pub type Study = Stored<StudyId, StudyFields>;

/// One kept version of a study: revision *n* is the study at etag *n*.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StudyRevision {
    /// Its number, from 1.
    pub revision: i64,
    /// What made it.
    pub kind: ChangeKind,
    /// When.
    pub time: DateTime<Utc>,
    /// Who: a token subject, or the service for its own work.
    pub actor: String,
    /// Why, when made for another resource's change (`patients/12`).
    pub cause: Option<String>,
    /// The study as it left it.
    pub study: Study,
}

/// One entry of the studies' change feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StudyChange {
    /// Its place in the feed: from 1, no gaps, in commit order.
    pub sequence: i64,
    /// What happened.
    pub kind: ChangeKind,
    /// To which study.
    pub study_id: StudyId,
    /// The patient the study belonged to.
    pub patient_id: PatientId,
    /// The revision it made (for a purge, the last one).
    pub revision: i64,
    /// When it was committed.
    pub commit_time: DateTime<Utc>,
    /// Who made it.
    pub actor: String,
    /// Why, when made for another resource's change.
    pub cause: Option<String>,
    /// The study after it; none once purged.
    pub study: Option<Study>,
}

impl Sequenced for StudyChange {
    fn sequence(&self) -> i64 {
        self.sequence
    }

    fn patient(&self) -> i64 {
        self.patient_id.get()
    }
}

/// The cause a change of a study made for its patient's change carries.
pub fn patient_cause(patient: PatientId) -> String {
    format!("patients/{patient}")
}

/// What happened to a patient that the cascade acts on, as
/// patients-service's change feed says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatientEventKind {
    /// The patient was deleted: their studies are deleted with them.
    Deleted,
    /// A deleted patient was restored: so are the studies their delete
    /// took, and studies may refer to them again.
    Undeleted,
    /// The patient was erased: so are all their studies.
    Purged,
    /// A change the cascade does not act on (a create or update, or a kind
    /// a newer patients-service may publish): the cursor moves past it.
    Other,
}

/// One change of patients-service's feed, as the cascade needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientEvent {
    /// Position in patients-service's feed.
    pub sequence: i64,
    /// The patient concerned.
    pub patient_id: PatientId,
    /// What happened.
    pub kind: PatientEventKind,
    /// When it was committed (in patients-service's clock), if known.
    pub create_time: Option<DateTime<Utc>>,
    /// For a deletion, when the patient (and so their studies) will be
    /// purged.
    pub expire_time: Option<DateTime<Utc>>,
}

/// A batch of the feed's changes and how far the feed goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventPage {
    /// Changes after the cursor, oldest first.
    pub events: Vec<PatientEvent>,
    /// The feed's newest sequence when the batch was read.
    pub last_sequence: i64,
}

/// What ListStudies' `filter` may name: the patient, the vocabulary (by
/// name, with or without the proto prefix; urgency compares by rank) and
/// times.
pub const FILTER_FIELDS: &[Field] = &[
    Field { name: "patient_id", sql: "patient_id", kind: Kind::Integer },
    Field {
        name: "urgency_level",
        sql: "urgency_level",
        kind: Kind::Enum { prefix: "URGENCY_LEVEL_", values: UrgencyLevel::NAMES },
    },
    Field {
        name: "body_part",
        sql: "body_part",
        kind: Kind::Enum { prefix: "BODY_PART_", values: BodyPart::NAMES },
    },
    Field {
        name: "study_type",
        sql: "study_type",
        kind: Kind::Enum { prefix: "STUDY_TYPE_", values: StudyType::NAMES },
    },
    Field { name: "create_time", sql: "create_time", kind: Kind::Timestamp },
    Field { name: "update_time", sql: "update_time", kind: Kind::Timestamp },
    Field { name: "study_instance_uid", sql: "study_instance_uid", kind: Kind::Folded },
    Field { name: "id", sql: "id", kind: Kind::Integer },
];

/// What ListStudies' `order_by` may name; urgency sorts by rank (LOW, MID,
/// HIGH), not alphabetically.
pub const SORT_FIELDS: &[SortField] = &[
    SortField { name: "create_time", sql: "create_time", kind: SortKind::Time },
    SortField { name: "update_time", sql: "update_time", kind: SortKind::Time },
    SortField { name: "urgency_level", sql: URGENCY_RANK, kind: SortKind::Int },
    SortField { name: "id", sql: "id", kind: SortKind::Int },
];

/// A study's urgency as a number, lowest first (matches `UrgencyLevel`'s
/// declaration order; a test checks).
pub const URGENCY_RANK: &str = "array_position(array['LOW', 'MID', 'HIGH']::text[], urgency_level)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urgency_ranks_in_declaration_order() {
        let listed = UrgencyLevel::NAMES.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", ");
        assert!(URGENCY_RANK.contains(&listed), "{URGENCY_RANK}");
    }

    #[test]
    fn vocabulary_names_round_trip() {
        for v in BodyPart::ALL {
            assert_eq!(BodyPart::from_name(v.name()), Some(*v));
        }
        assert_eq!(StudyType::from_name("XRAY"), Some(StudyType::Xray));
        assert_eq!(UrgencyLevel::from_name("STAT"), None);
    }

    #[test]
    fn descriptions_are_trimmed_and_bounded() {
        assert_eq!(Description::parse("  NO FINDINGS ", "d").unwrap().as_str(), "NO FINDINGS");
        assert!(Description::parse("   ", "d").is_err());
        assert!(Description::parse(&"x".repeat(2000), "d").is_ok());
        assert!(Description::parse(&"x".repeat(2001), "d").is_err());
        assert!(Description::parse("línea 1\nlínea 2\t✓", "d").is_ok());
        assert!(Description::parse("NO\0FINDINGS", "d").is_err());
        assert!(Description::parse(&"😀".repeat(2000), "d").is_ok(), "2000 four-byte characters fit");
    }

    #[test]
    fn patient_filters_are_bounded_positive_sorted_and_distinct() {
        assert_eq!(PatientFilter::parse(&[3, 1, 3], "p").unwrap().ids(), &[1, 3]);
        let err = PatientFilter::parse(&[1, 0, -2], "p").unwrap_err();
        assert_eq!(err.0.iter().map(|v| v.field.as_str()).collect::<Vec<_>>(), ["p[1]", "p[2]"]);
        assert_eq!(
            PatientFilter::parse(&vec![-1; 100_000], "p").unwrap_err().0.len(),
            1,
            "too many: one violation"
        );
        assert!(PatientFilter::parse(&vec![1; 1000], "p").is_ok());
    }
}
