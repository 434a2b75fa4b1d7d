//! Clinic's resources as FHIR R4 resources and back: `Patient` ↔ a Clinic
//! patient, `ImagingStudy` ↔ a study. No I/O. An element Clinic cannot keep
//! is refused (400 naming it), never silently dropped.

use chrono::{DateTime, SecondsFormat, Utc};
use clinic_proto::{patients::v1 as ppb, studies::v1 as spb};
use clinic_radiology::{BodyPart, StudyType};
use serde_json::{Map, Value, json};

use crate::outcome::Outcome;

/// The code system of DICOM modalities (ImagingStudy.modality).
pub const DICOM_DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
/// The identifier system of DICOM UIDs (values are `urn:oid:<uid>`).
pub const DICOM_UID: &str = "urn:dicom:uid";
/// The extension holding a study's body part.
pub const BODY_PART_EXTENSION: &str = "https://clinic.example/fhir/StructureDefinition/body-part";
/// The code system of body parts: Clinic's names, which follow DICOM Body
/// Part Examined (the display is the DICOM term).
pub const BODY_PART_SYSTEM: &str = "https://clinic.example/fhir/CodeSystem/body-part";
/// The extension holding a study's urgency.
pub const URGENCY_EXTENSION: &str = "https://clinic.example/fhir/StructureDefinition/urgency";
/// FHIR's request priorities: routine (LOW), urgent (MID), stat (HIGH).
pub const PRIORITY_SYSTEM: &str = "http://hl7.org/fhir/request-priority";

/// An instant as FHIR writes it (UTC, milliseconds).
pub fn instant(t: &Option<prost_types::Timestamp>) -> String {
    let t = t.unwrap_or_default();
    DateTime::<Utc>::from_timestamp(t.seconds, t.nanos.max(0) as u32)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The `Patient` resource of a Clinic patient.
pub fn patient_resource(p: &ppb::Patient) -> Value {
    let mut resource = json!({
        "resourceType": "Patient",
        "id": p.id.to_string(),
        "meta": { "versionId": p.etag, "lastUpdated": instant(&p.update_time) },
        "active": p.delete_time.is_none(),
        "name": [{
            "use": "official",
            "family": p.last_name,
            "given": p.first_name.split_whitespace().collect::<Vec<_>>(),
        }],
        "telecom": [{ "system": "email", "value": p.email }],
        "birthDate": p.birth_date,
    });
    if !p.identifiers.is_empty() {
        resource["identifier"] =
            p.identifiers.iter().map(|i| json!({ "system": i.system, "value": i.value })).collect();
    }
    resource
}

/// The `ImagingStudy` resource of a Clinic study.
pub fn study_resource(s: &spb::Study) -> Value {
    let mut resource = json!({
        "resourceType": "ImagingStudy",
        "id": s.id.to_string(),
        "meta": { "versionId": s.etag, "lastUpdated": instant(&s.update_time) },
        "status": "available",
        "subject": { "reference": format!("Patient/{}", s.patient_id) },
        "description": s.description,
    });
    if let Some(t) =
        vocabulary_name(spb::StudyType::try_from(s.study_type).ok().map(|t| t.as_str_name()), "STUDY_TYPE_")
            .and_then(StudyType::from_name)
    {
        resource["modality"] = json!([{ "system": DICOM_DCM, "code": t.modality() }]);
    }
    if !s.study_instance_uid.is_empty() {
        resource["identifier"] =
            json!([{ "system": DICOM_UID, "value": format!("urn:oid:{}", s.study_instance_uid) }]);
    }
    let mut extensions = Vec::new();
    if let Some(part) =
        vocabulary_name(spb::BodyPart::try_from(s.body_part).ok().map(|b| b.as_str_name()), "BODY_PART_")
            .and_then(BodyPart::from_name)
    {
        extensions.push(json!({
            "url": BODY_PART_EXTENSION,
            "valueCoding": { "system": BODY_PART_SYSTEM, "code": part.name(), "display": part.dicom_term() },
        }));
    }
    let priority = match spb::UrgencyLevel::try_from(s.urgency_level) {
        Ok(spb::UrgencyLevel::Low) => Some("routine"),
        Ok(spb::UrgencyLevel::Mid) => Some("urgent"),
        Ok(spb::UrgencyLevel::High) => Some("stat"),
        _ => None,
    };
    if let Some(code) = priority {
        extensions.push(
            json!({ "url": URGENCY_EXTENSION, "valueCoding": { "system": PRIORITY_SYSTEM, "code": code } }),
        );
    }
    if !extensions.is_empty() {
        resource["extension"] = Value::Array(extensions);
    }
    resource
}

fn vocabulary_name<'a>(name: Option<&'a str>, prefix: &str) -> Option<&'a str> {
    name.and_then(|n| n.strip_prefix(prefix))
}

/// The resource of `type_` in a request body, checked to be one: a JSON
/// object with that `resourceType` and, when `id` is given (an update),
/// that id or none. Returns its elements.
pub fn parse_body(body: &[u8], type_: &str, id: Option<i64>) -> Result<Map<String, Value>, Outcome> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Outcome::bad_request(format!("the body is not JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(Outcome::bad_request(format!("the body must be a {type_} resource (a JSON object)")));
    };
    if map.get("resourceType").and_then(Value::as_str) != Some(type_) {
        return Err(Outcome::invalid(
            format!("{type_}.resourceType"),
            format!("resourceType must be {type_}"),
        ));
    }
    if let (Some(id), Some(given)) = (id, map.get("id"))
        && given.as_str() != Some(id.to_string().as_str())
    {
        return Err(Outcome::invalid(
            format!("{type_}.id"),
            format!("the resource's id must be the id in the URL ({id})"),
        ));
    }
    Ok(map)
}

/// Refuses any element of `object` (at `path`) outside `allowed`.
fn only(object: &Map<String, Value>, path: &str, allowed: &[&str]) -> Result<(), Outcome> {
    match object.keys().find(|k| !allowed.contains(&k.as_str())) {
        None => Ok(()),
        Some(key) => Err(Outcome::invalid(
            format!("{path}.{key}"),
            format!("Clinic does not keep {path}.{key}; leave it out (kept: {})", allowed.join(", ")),
        )),
    }
}

fn array<'a>(object: &'a Map<String, Value>, key: &str, path: &str) -> Result<&'a [Value], Outcome> {
    match object.get(key) {
        None => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(Outcome::invalid(format!("{path}.{key}"), "must be an array")),
    }
}

fn object<'a>(value: &'a Value, path: &str) -> Result<&'a Map<String, Value>, Outcome> {
    value.as_object().ok_or_else(|| Outcome::invalid(path, "must be an object"))
}

fn string(object: &Map<String, Value>, key: &str, path: &str) -> Result<String, Outcome> {
    match object.get(key) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(Outcome::invalid(format!("{path}.{key}"), "must be a string")),
    }
}

/// A `Patient` resource's elements as a Clinic patient.
pub fn patient_from(map: &Map<String, Value>) -> Result<ppb::Patient, Outcome> {
    only(
        map,
        "Patient",
        &["resourceType", "id", "meta", "text", "identifier", "active", "name", "telecom", "birthDate"],
    )?;
    if let Some(active) = map.get("active")
        && active != &Value::Bool(true)
    {
        return Err(Outcome::invalid(
            "Patient.active",
            "Clinic keeps active patients only: to retire a patient, DELETE it (it is kept, and can be restored)",
        ));
    }
    let names = array(map, "name", "Patient")?;
    if names.len() > 1 {
        return Err(Outcome::invalid("Patient.name", "Clinic keeps one name per patient"));
    }
    let (mut first_name, mut last_name) = (String::new(), String::new());
    if let Some(name) = names.first() {
        let name = object(name, "Patient.name[0]")?;
        only(name, "Patient.name[0]", &["use", "text", "family", "given"])?;
        last_name = string(name, "family", "Patient.name[0]")?;
        let given = array(name, "given", "Patient.name[0]")?;
        let given: Option<Vec<&str>> = given.iter().map(Value::as_str).collect();
        first_name =
            given.ok_or_else(|| Outcome::invalid("Patient.name[0].given", "must be strings"))?.join(" ");
    }
    let mut email = String::new();
    for (i, telecom) in array(map, "telecom", "Patient")?.iter().enumerate() {
        let path = format!("Patient.telecom[{i}]");
        let telecom = object(telecom, &path)?;
        only(telecom, &path, &["system", "value", "use", "rank"])?;
        if telecom.get("system").and_then(Value::as_str) != Some("email") || !email.is_empty() {
            return Err(Outcome::invalid(
                path,
                "Clinic keeps one contact point: the patient's email (system email)",
            ));
        }
        email = string(telecom, "value", &path)?;
    }
    let mut identifiers = Vec::new();
    for (i, identifier) in array(map, "identifier", "Patient")?.iter().enumerate() {
        let path = format!("Patient.identifier[{i}]");
        let identifier = object(identifier, &path)?;
        only(identifier, &path, &["system", "value"])?;
        identifiers.push(ppb::Identifier {
            system: string(identifier, "system", &path)?,
            value: string(identifier, "value", &path)?,
        });
    }
    Ok(ppb::Patient {
        first_name,
        last_name,
        birth_date: string(map, "birthDate", "Patient")?,
        email,
        identifiers,
        ..Default::default()
    })
}

/// Where a patient field violation of the gRPC API sits in `Patient`.
pub fn patient_element(field: &str) -> String {
    let field = field.strip_prefix("patient.").unwrap_or(field);
    match field {
        "first_name" => "Patient.name[0].given".into(),
        "last_name" => "Patient.name[0].family".into(),
        "birth_date" => "Patient.birthDate".into(),
        "email" => "Patient.telecom[0].value".into(),
        "if_none_exist" | "filter" => "If-None-Exist".into(),
        other => match other.strip_prefix("identifiers") {
            Some(rest) => format!("Patient.identifier{rest}"),
            None => format!("Patient.{other}"),
        },
    }
}

/// Where a study field violation of the gRPC API sits in `ImagingStudy`.
pub fn study_element(field: &str) -> String {
    let field = field.strip_prefix("study.").unwrap_or(field);
    match field {
        "patient_id" => "ImagingStudy.subject".into(),
        "description" => "ImagingStudy.description".into(),
        "study_type" => "ImagingStudy.modality".into(),
        "study_instance_uid" => "ImagingStudy.identifier".into(),
        "body_part" => format!("ImagingStudy.extension('{BODY_PART_EXTENSION}')"),
        "urgency_level" => format!("ImagingStudy.extension('{URGENCY_EXTENSION}')"),
        other => format!("ImagingStudy.{other}"),
    }
}

/// The patient id of a reference (`Patient/12`, or a full URL ending so).
pub fn patient_reference(reference: &str) -> Option<i64> {
    let rest = reference.rsplit_once("Patient/").map(|(_, r)| r).unwrap_or(reference);
    rest.parse().ok().filter(|id: &i64| *id > 0)
}

/// An `ImagingStudy` resource's elements as a Clinic study.
pub fn study_from(map: &Map<String, Value>) -> Result<spb::Study, Outcome> {
    only(
        map,
        "ImagingStudy",
        &[
            "resourceType",
            "id",
            "meta",
            "text",
            "identifier",
            "status",
            "modality",
            "subject",
            "description",
            "extension",
        ],
    )?;
    let status = string(map, "status", "ImagingStudy")?;
    if !matches!(status.as_str(), "" | "available" | "registered") {
        return Err(Outcome::invalid(
            "ImagingStudy.status",
            "Clinic keeps studies that are registered or available",
        ));
    }
    let mut study =
        spb::Study { description: string(map, "description", "ImagingStudy")?, ..Default::default() };
    if let Some(subject) = map.get("subject") {
        let subject = object(subject, "ImagingStudy.subject")?;
        let reference = string(subject, "reference", "ImagingStudy.subject")?;
        study.patient_id = patient_reference(&reference).ok_or_else(|| {
            Outcome::invalid("ImagingStudy.subject.reference", "must reference a Patient: Patient/<id>")
        })?;
    }
    let modalities = array(map, "modality", "ImagingStudy")?;
    if modalities.len() > 1 {
        return Err(Outcome::invalid("ImagingStudy.modality", "Clinic keeps one modality per study"));
    }
    if let Some(coding) = modalities.first() {
        let coding = object(coding, "ImagingStudy.modality[0]")?;
        only(coding, "ImagingStudy.modality[0]", &["system", "code", "display"])?;
        let system = string(coding, "system", "ImagingStudy.modality[0]")?;
        let code = string(coding, "code", "ImagingStudy.modality[0]")?;
        let kind =
            (system.is_empty() || system == DICOM_DCM).then(|| StudyType::from_modality(&code)).flatten();
        let kind = kind.ok_or_else(|| {
            let known: Vec<&str> = StudyType::ALL.iter().map(|t| t.modality()).collect();
            Outcome::invalid(
                "ImagingStudy.modality[0]",
                format!("must be a DICOM modality of {DICOM_DCM}: {}", known.join(", ")),
            )
        })?;
        study.study_type =
            spb::StudyType::from_str_name(&format!("STUDY_TYPE_{}", kind.name())).map_or(0, Into::into);
    }
    for (i, identifier) in array(map, "identifier", "ImagingStudy")?.iter().enumerate() {
        let path = format!("ImagingStudy.identifier[{i}]");
        let identifier = object(identifier, &path)?;
        only(identifier, &path, &["system", "value", "use"])?;
        let value = string(identifier, "value", &path)?;
        match (string(identifier, "system", &path)?.as_str(), value.strip_prefix("urn:oid:")) {
            (DICOM_UID, Some(uid)) if study.study_instance_uid.is_empty() => {
                study.study_instance_uid = uid.to_owned()
            }
            _ => {
                return Err(Outcome::invalid(
                    path,
                    format!(
                        "Clinic keeps one identifier per study: its Study Instance UID (system {DICOM_UID}, value urn:oid:<uid>)"
                    ),
                ));
            }
        }
    }
    for (i, extension) in array(map, "extension", "ImagingStudy")?.iter().enumerate() {
        let path = format!("ImagingStudy.extension[{i}]");
        let extension = object(extension, &path)?;
        let code =
            extension.get("valueCoding").and_then(|c| c.get("code")).and_then(Value::as_str).unwrap_or("");
        match extension.get("url").and_then(Value::as_str) {
            Some(BODY_PART_EXTENSION) => {
                let part = BodyPart::from_name(code).ok_or_else(|| {
                    Outcome::invalid(
                        &path,
                        format!("valueCoding.code must be a body part of {BODY_PART_SYSTEM}"),
                    )
                })?;
                study.body_part =
                    spb::BodyPart::from_str_name(&format!("BODY_PART_{}", part.name())).map_or(0, Into::into);
            }
            Some(URGENCY_EXTENSION) => {
                study.urgency_level = match code {
                    "routine" => spb::UrgencyLevel::Low,
                    "urgent" | "asap" => spb::UrgencyLevel::Mid,
                    "stat" => spb::UrgencyLevel::High,
                    _ => {
                        return Err(Outcome::invalid(
                            &path,
                            format!(
                                "valueCoding.code must be one of {PRIORITY_SYSTEM}: routine, urgent, stat"
                            ),
                        ));
                    }
                }
                .into();
            }
            _ => {
                return Err(Outcome::invalid(
                    path,
                    format!("Clinic keeps the extensions {BODY_PART_EXTENSION} and {URGENCY_EXTENSION} only"),
                ));
            }
        }
    }
    Ok(study)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patient_goes_to_fhir_and_back_unchanged() {
        let patient = ppb::Patient {
            id: 7,
            first_name: "Diana Laura".into(),
            last_name: "Del Toro".into(),
            birth_date: "1990-02-03".into(),
            email: "dl@ejemplo.com".into(),
            etag: "3".into(),
            identifiers: vec![ppb::Identifier {
                system: "https://clinic.example/mrn".into(),
                value: "A1".into(),
            }],
            ..Default::default()
        };
        let resource = patient_resource(&patient);
        assert_eq!(resource["name"][0]["given"], json!(["Diana", "Laura"]));
        assert_eq!(resource["meta"]["versionId"], "3");
        let back = patient_from(resource.as_object().unwrap()).unwrap();
        assert_eq!(
            (back.first_name, back.last_name, back.birth_date, back.email, back.identifiers),
            (patient.first_name, patient.last_name, patient.birth_date, patient.email, patient.identifiers)
        );
    }

    #[test]
    fn elements_clinic_cannot_keep_are_refused_by_name() {
        let refused = |body: Value| patient_from(body.as_object().unwrap()).unwrap_err().expression;
        assert_eq!(refused(json!({ "resourceType": "Patient", "gender": "female" })), ["Patient.gender"]);
        assert_eq!(
            refused(json!({ "resourceType": "Patient", "telecom": [{ "system": "phone", "value": "1" }] })),
            ["Patient.telecom[0]"]
        );
        assert_eq!(refused(json!({ "resourceType": "Patient", "active": false })), ["Patient.active"]);
    }

    #[test]
    fn a_study_goes_to_fhir_and_back_unchanged() {
        let study = spb::Study {
            id: 3,
            patient_id: 7,
            urgency_level: spb::UrgencyLevel::High.into(),
            body_part: spb::BodyPart::Breasts.into(),
            study_type: spb::StudyType::Mammogram.into(),
            description: "NO FINDINGS".into(),
            study_instance_uid: "1.2.840.1".into(),
            ..Default::default()
        };
        let resource = study_resource(&study);
        assert_eq!(resource["modality"][0]["code"], "MG");
        assert_eq!(resource["identifier"][0]["value"], "urn:oid:1.2.840.1");
        let back = study_from(resource.as_object().unwrap()).unwrap();
        assert_eq!(back, spb::Study { id: 0, ..study });
    }
}
