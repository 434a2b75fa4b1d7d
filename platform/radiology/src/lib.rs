//! The radiology vocabulary a study is described with, and its DICOM codes:
//! written once for studies-service (which stores the names) and the FHIR
//! endpoint (which speaks the codes). No I/O.
//!
//! # Layout
//! One file: the vocabularies ([`UrgencyLevel`], [`BodyPart`], [`StudyType`])
//! with their DICOM codes, and [`DicomUid`].

use clinic_core::validation::FieldViolation;

clinic_core::named_enum! {
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

clinic_core::named_enum! {
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

clinic_core::named_enum! {
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

impl StudyType {
    /// The DICOM modality code (DICOM PS3.16 CID 29, code system
    /// `http://dicom.nema.org/resources/ontology/DCM`) a study of this type
    /// is made with. X-rays are DX (digital radiography), the code today's
    /// equipment writes.
    pub fn modality(self) -> &'static str {
        match self {
            StudyType::Xray => "DX",
            StudyType::Mammogram => "MG",
            StudyType::Ct => "CT",
            StudyType::Mri => "MR",
            StudyType::Ultrasound => "US",
            StudyType::Pet => "PT",
            StudyType::NuclearMedicine => "NM",
            StudyType::Fluoroscopy => "RF",
            StudyType::Angiography => "XA",
            StudyType::BoneDensitometry => "BMD",
        }
    }

    /// The study type of a DICOM modality code; CR (computed radiography)
    /// is an X-ray too.
    pub fn from_modality(code: &str) -> Option<Self> {
        match code {
            "CR" => Some(StudyType::Xray),
            _ => Self::ALL.iter().copied().find(|t| t.modality() == code),
        }
    }
}

impl BodyPart {
    /// The DICOM Body Part Examined term (PS3.16 Annex L).
    pub fn dicom_term(self) -> &'static str {
        match self {
            BodyPart::Breasts => "BREAST",
            BodyPart::CervicalSpine => "CSPINE",
            BodyPart::ThoracicSpine => "TSPINE",
            BodyPart::LumbarSpine => "LSPINE",
            other => other.name(),
        }
    }
}

/// Longest DICOM UID, in characters (PS3.5 9.1).
pub const MAX_UID_CHARS: usize = 64;

/// A DICOM UID such as a Study Instance UID: components of digits joined by
/// dots, no component with a leading zero (unless it is `0`), at most 64
/// characters (DICOM PS3.5 9.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DicomUid(String);

impl DicomUid {
    /// Validates `raw` (trimmed) as the UID in `field`.
    pub fn parse(raw: &str, field: &str) -> Result<Self, FieldViolation> {
        let uid = raw.trim();
        if uid.len() > MAX_UID_CHARS {
            return Err(FieldViolation::new(
                field,
                format!("must be at most {MAX_UID_CHARS} characters, not {}", uid.chars().count()),
            ));
        }
        let well_formed = !uid.is_empty()
            && uid.split('.').all(|c| {
                !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()) && (c == "0" || !c.starts_with('0'))
            });
        if !well_formed {
            return Err(FieldViolation::new(
                field,
                "must be a DICOM UID: digits in dot-separated components, none with a leading zero (e.g. 1.2.840.113619.2.55.3)",
            ));
        }
        Ok(Self(uid.to_owned()))
    }

    /// A UID read back from storage, which only holds valid ones.
    pub fn from_stored(uid: String) -> Self {
        Self(uid)
    }

    /// The UID.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_study_type_has_its_own_modality_and_back() {
        for t in StudyType::ALL {
            assert_eq!(StudyType::from_modality(t.modality()), Some(*t));
        }
        assert_eq!(StudyType::from_modality("CR"), Some(StudyType::Xray));
        assert_eq!(StudyType::from_modality("XX"), None);
    }

    #[test]
    fn uids_follow_dicom_syntax() {
        for ok in
            ["1.2.840.113619.2.55.3", "0.1", "2.25.329800735698586629295641978511506172918", &"1".repeat(64)]
        {
            assert!(DicomUid::parse(ok, "u").is_ok(), "{ok}");
        }
        for bad in ["", "1..2", ".1", "1.", "1.02", "1.2a", "1 .2", &"1".repeat(65), "urn:oid:1.2"] {
            assert!(DicomUid::parse(bad, "u").is_err(), "{bad:?}");
        }
    }
}
