//! `GET /fhir/metadata`: the CapabilityStatement, listing exactly the
//! interactions and search parameters this endpoint serves.

use serde_json::{Value, json};

/// One search parameter: name, type, what it does.
type Param = (&'static str, &'static str, &'static str);

const PATIENT_PARAMS: &[Param] = &[
    ("_id", "token", "the patient's id; several comma-separated"),
    ("identifier", "token", "system|value, exactly"),
    ("family", "string", "the family name starts with it, ignoring case and accents"),
    ("given", "string", "the given names start with it, ignoring case and accents"),
    ("name", "string", "the family or given names start with it, ignoring case and accents"),
    ("birthdate", "date", "with the prefixes eq ne lt gt le ge; YYYY, YYYY-MM or YYYY-MM-DD"),
    ("email", "token", "the email, ignoring case"),
];

const STUDY_PARAMS: &[Param] = &[
    ("_id", "token", "the study's id; several comma-separated"),
    ("subject", "reference", "Patient/<id>"),
    ("patient", "reference", "Patient/<id>"),
    ("modality", "token", "a DICOM modality code (http://dicom.nema.org/resources/ontology/DCM)"),
    ("identifier", "token", "urn:dicom:uid|urn:oid:<Study Instance UID>"),
];

fn resource(type_: &str, params: &[Param], sorts: &[&str], extra: Value) -> Value {
    let interactions: Vec<Value> =
        ["read", "vread", "search-type", "create", "update", "delete", "history-instance"]
            .iter()
            .map(|code| json!({ "code": code }))
            .collect();
    let search_params: Vec<Value> = params
        .iter()
        .map(|(name, kind, doc)| json!({ "name": name, "type": kind, "documentation": doc }))
        .collect();
    let mut resource = json!({
        "type": type_,
        "versioning": "versioned",
        "readHistory": true,
        "updateCreate": false,
        "conditionalCreate": true,
        "conditionalRead": "not-supported",
        "conditionalUpdate": false,
        "conditionalDelete": "not-supported",
        "interaction": interactions,
        "searchParam": search_params,
        "extension": [{
            "url": "https://clinic.example/fhir/StructureDefinition/sort",
            "valueString": format!("_sort by {} (prefix - for descending)", sorts.join(", ")),
        }],
    });
    if let (Value::Object(target), Value::Object(more)) = (&mut resource, extra) {
        target.extend(more);
    }
    resource
}

/// The CapabilityStatement.
pub fn statement(base: &str) -> Value {
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-12-07",
        "kind": "instance",
        "software": { "name": "Clinic", "version": env!("CARGO_PKG_VERSION") },
        "implementation": { "description": "Clinic FHIR R4 endpoint", "url": base },
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json"],
        "rest": [{
            "mode": "server",
            "security": {
                "cors": true,
                "description": "Authorization: Bearer <JWT> of the configured issuer; roles viewer (read, search, history), clinician (create, update, delete studies), admin (everything)",
            },
            "resource": [
                resource("Patient", PATIENT_PARAMS, &["family", "given", "birthdate", "_lastUpdated", "_id"],
                    json!({ "searchRevInclude": ["ImagingStudy:subject"] })),
                resource("ImagingStudy", STUDY_PARAMS, &["_lastUpdated", "_id"],
                    json!({ "searchInclude": ["ImagingStudy:subject"] })),
            ],
        }],
    })
}
