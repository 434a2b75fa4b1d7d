//! Imaging studies as the clinic understands them: validated values, the
//! radiology vocabulary, and the rules they obey. No I/O and no protobuf.

use chrono::{DateTime, Utc};
pub use clinic_common::resource::{Etag, RequestId};
use clinic_common::validation::{FieldViolation, Invalid};

/// Longest description, in characters, after trimming.
pub const MAX_DESCRIPTION_CHARS: usize = 2000;
/// Most patient ids one ListStudies may filter by.
pub const MAX_PATIENT_IDS: usize = 1000;

/// A study's server-assigned id: positive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StudyId(i64);

impl StudyId {
    /// Parses the id of `field`: it must be positive.
    pub fn parse(raw: i64, field: &str) -> Result<Self, FieldViolation> {
        if raw > 0 { Ok(Self(raw)) } else { Err(FieldViolation::new(field, "must be a positive study id")) }
    }

    /// An id read back from storage.
    pub fn from_stored(raw: i64) -> Self {
        Self(raw)
    }

    /// The raw value.
    pub fn get(self) -> i64 {
        self.0
    }
}

impl std::fmt::Display for StudyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The id of the patient a study belongs to. Owned by patients-service;
/// here it is only a reference, checked over gRPC, never a foreign key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PatientRef(i64);

impl PatientRef {
    /// Parses the patient id of `field`: it must be positive.
    pub fn parse(raw: i64, field: &str) -> Result<Self, FieldViolation> {
        if raw > 0 { Ok(Self(raw)) } else { Err(FieldViolation::new(field, "must be a positive patient id")) }
    }

    /// An id read back from storage or from a trusted event.
    pub fn from_stored(raw: i64) -> Self {
        Self(raw)
    }

    /// The raw value.
    pub fn get(self) -> i64 {
        self.0
    }
}

impl std::fmt::Display for PatientRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Declares a closed vocabulary: a Rust enum whose values have a stable,
/// readable name, used in Postgres (checked by a constraint) and matched to
/// the protobuf enum value `<PREFIX>_<NAME>`.
macro_rules! vocabulary {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The stable name, as stored.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The value with stable name `name`.
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

vocabulary! {
    /// How soon a study must be read.
    UrgencyLevel {
        /// Routine.
        Low = "LOW",
        /// Priority.
        Mid = "MID",
        /// Urgent (STAT).
        High = "HIGH",
    }
}

vocabulary! {
    /// The part of the body examined; names follow DICOM Body Part Examined.
    BodyPart {
        /// DICOM STOMACH.
        Stomach = "STOMACH",
        /// DICOM NECK.
        Neck = "NECK",
        /// DICOM CHEST.
        Chest = "CHEST",
        /// DICOM BREAST.
        Breasts = "BREASTS",
        /// DICOM ABDOMEN.
        Abdomen = "ABDOMEN",
        /// DICOM PELVIS.
        Pelvis = "PELVIS",
        /// DICOM HEAD.
        Head = "HEAD",
        /// DICOM BRAIN.
        Brain = "BRAIN",
        /// DICOM SKULL.
        Skull = "SKULL",
        /// DICOM CSPINE.
        CervicalSpine = "CERVICAL_SPINE",
        /// DICOM TSPINE.
        ThoracicSpine = "THORACIC_SPINE",
        /// DICOM LSPINE.
        LumbarSpine = "LUMBAR_SPINE",
        /// DICOM SPINE.
        Spine = "SPINE",
        /// DICOM HEART.
        Heart = "HEART",
        /// DICOM SHOULDER.
        Shoulder = "SHOULDER",
        /// DICOM ELBOW.
        Elbow = "ELBOW",
        /// DICOM WRIST.
        Wrist = "WRIST",
        /// DICOM HAND.
        Hand = "HAND",
        /// DICOM HIP.
        Hip = "HIP",
        /// DICOM KNEE.
        Knee = "KNEE",
        /// DICOM ANKLE.
        Ankle = "ANKLE",
        /// DICOM FOOT.
        Foot = "FOOT",
        /// DICOM KIDNEY.
        Kidney = "KIDNEY",
        /// DICOM LIVER.
        Liver = "LIVER",
    }
}

vocabulary! {
    /// The kind of study; names follow DICOM modalities.
    StudyType {
        /// DICOM CR/DX.
        Xray = "XRAY",
        /// DICOM MG.
        Mammogram = "MAMMOGRAM",
        /// DICOM CT.
        Ct = "CT",
        /// DICOM MR.
        Mri = "MRI",
        /// DICOM US.
        Ultrasound = "ULTRASOUND",
        /// DICOM PT.
        Pet = "PET",
        /// DICOM NM.
        NuclearMedicine = "NUCLEAR_MEDICINE",
        /// DICOM RF.
        Fluoroscopy = "FLUOROSCOPY",
        /// DICOM XA.
        Angiography = "ANGIOGRAPHY",
        /// DICOM BMD.
        BoneDensitometry = "BONE_DENSITOMETRY",
    }
}

/// A study's description or findings: trimmed, 1 to 2000 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description(String);

impl Description {
    /// Validates `raw` as the description in `field`.
    pub fn parse(raw: &str, field: &str) -> Result<Self, FieldViolation> {
        let text = raw.trim();
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
        let mut invalid = Invalid::default();
        if raw.len() > MAX_PATIENT_IDS {
            invalid.push(field, format!("must hold at most {MAX_PATIENT_IDS} ids, not {}", raw.len()));
        }
        for (i, id) in raw.iter().enumerate().filter(|(_, id)| **id <= 0) {
            invalid.push(format!("{field}[{i}]"), format!("must be a positive patient id, not {id}"));
        }
        let mut ids = raw.to_vec();
        ids.sort_unstable();
        ids.dedup();
        invalid.finish(|| Self(ids))
    }

    /// The ids, sorted and distinct; empty for no filter.
    pub fn ids(&self) -> &[i64] {
        &self.0
    }
}

/// A study to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewStudy {
    /// The patient.
    pub patient_id: PatientRef,
    /// How soon it must be read.
    pub urgency_level: UrgencyLevel,
    /// The part examined.
    pub body_part: BodyPart,
    /// Description or findings.
    pub description: Description,
    /// The modality.
    pub study_type: StudyType,
}

/// The fields an update changes; `None` leaves a field as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StudyPatch {
    /// Move the study to this patient (who must exist).
    pub patient_id: Option<PatientRef>,
    /// New urgency.
    pub urgency_level: Option<UrgencyLevel>,
    /// New body part.
    pub body_part: Option<BodyPart>,
    /// New description.
    pub description: Option<Description>,
    /// New modality.
    pub study_type: Option<StudyType>,
}

/// The fields of a study an update mask may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StudyField {
    /// `patient_id`
    PatientId,
    /// `urgency_level`
    UrgencyLevel,
    /// `body_part`
    BodyPart,
    /// `description`
    Description,
    /// `study_type`
    StudyType,
}

impl StudyField {
    /// Every updatable field.
    pub const ALL: [StudyField; 5] = [
        StudyField::PatientId,
        StudyField::UrgencyLevel,
        StudyField::BodyPart,
        StudyField::Description,
        StudyField::StudyType,
    ];

    /// The field's name in the API.
    pub fn name(self) -> &'static str {
        match self {
            StudyField::PatientId => "patient_id",
            StudyField::UrgencyLevel => "urgency_level",
            StudyField::BodyPart => "body_part",
            StudyField::Description => "description",
            StudyField::StudyType => "study_type",
        }
    }
}

/// A stored study.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Study {
    /// Server-assigned id.
    pub id: StudyId,
    /// The patient.
    pub patient_id: PatientRef,
    /// How soon it must be read.
    pub urgency_level: UrgencyLevel,
    /// The part examined.
    pub body_part: BodyPart,
    /// Description or findings.
    pub description: String,
    /// The modality.
    pub study_type: StudyType,
    /// When it was created.
    pub create_time: DateTime<Utc>,
    /// When it last changed.
    pub update_time: DateTime<Utc>,
    /// The current version tag.
    pub etag: Etag,
}

/// A patient deletion published by patients-service, to be applied here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatientDeleted {
    /// Position in patients-service's outbox.
    pub sequence: i64,
    /// The deleted patient.
    pub patient_id: PatientRef,
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn patient_filters_are_bounded_positive_sorted_and_distinct() {
        assert_eq!(PatientFilter::parse(&[3, 1, 3], "p").unwrap().ids(), &[1, 3]);
        let err = PatientFilter::parse(&[1, 0, -2], "p").unwrap_err();
        assert_eq!(err.0.iter().map(|v| v.field.as_str()).collect::<Vec<_>>(), ["p[1]", "p[2]"]);
        assert!(PatientFilter::parse(&vec![1; 1001], "p").is_err());
        assert!(PatientFilter::parse(&vec![1; 1000], "p").is_ok());
    }
}
