//! Importing patients and studies from CSV files through the public API.
//!
//! Every row of every file is checked first, with the services' own domain
//! rules, so a bad row is reported (file, line, field) before anything is
//! written. Writes then go through the API with idempotency keys (retried
//! safely while a service is briefly unavailable); if one is still refused,
//! everything this run created is deleted again: nothing is half-imported.
//! The CSVs may have spaces after commas, like the seed's.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    time::Duration,
};

use clinic_dev_keys::bearer::Authed;
use clinic_proto::{
    patients::v1::{self as ppb, patient_service_client::PatientServiceClient},
    studies::v1::{self as spb, study_service_client::StudyServiceClient},
};
use patients_service::domain::{BirthDate, Email, PersonName, latest_today};
use studies_service::domain::{BodyPart, Description, StudyType, UrgencyLevel};
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// A row that cannot be imported, or a file that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("{}:{line}: {field}: {message}", file.display())]
pub struct ImportError {
    /// The file.
    pub file: PathBuf,
    /// The 1-based line (0 when the file itself is the problem).
    pub line: u64,
    /// The column, or `file`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl ImportError {
    fn new(file: &Path, line: u64, field: &str, message: impl Into<String>) -> Self {
        Self { file: file.to_owned(), line, field: field.to_owned(), message: message.into() }
    }
}

/// A validated patient row.
#[derive(Debug, Clone)]
pub struct PatientRow {
    /// Line in the file.
    pub line: u64,
    /// The file's own id for the patient, which studies refer to.
    pub csv_id: Option<i64>,
    /// The patient to create.
    pub patient: ppb::Patient,
}

/// A validated study row.
#[derive(Debug, Clone)]
pub struct StudyRow {
    /// Line in the file.
    pub line: u64,
    /// The patient id as written in the file.
    pub csv_patient_id: i64,
    /// The study to create (its `patient_id` is set when written).
    pub study: spb::Study,
}

/// What an import created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Patients created.
    pub patients: usize,
    /// Studies created.
    pub studies: usize,
}

struct Table {
    file: PathBuf,
    columns: HashMap<String, usize>,
    rows: Vec<(u64, csv::StringRecord)>,
}

impl Table {
    fn read(file: &Path, required: &[&str]) -> Result<Self, ImportError> {
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_path(file)
            .map_err(|e| ImportError::new(file, 0, "file", e.to_string()))?;
        let headers =
            reader.headers().map_err(|e| ImportError::new(file, 1, "header", e.to_string()))?.clone();
        let columns: HashMap<String, usize> =
            headers.iter().enumerate().map(|(i, h)| (h.to_ascii_lowercase(), i)).collect();
        for column in required {
            if !columns.contains_key(*column) {
                return Err(ImportError::new(file, 1, column, "column is missing from the header"));
            }
        }
        let mut rows = Vec::new();
        for record in reader.records() {
            let record = record.map_err(|e| {
                let line = e.position().map_or(0, |p| p.line());
                ImportError::new(file, line, "row", e.to_string())
            })?;
            let line = record.position().map_or(0, |p| p.line());
            rows.push((line, record));
        }
        Ok(Self { file: file.to_owned(), columns, rows })
    }

    fn get<'r>(&self, record: &'r csv::StringRecord, column: &str) -> Option<&'r str> {
        self.columns.get(column).and_then(|i| record.get(*i))
    }
}

/// Reads and validates a patients file (`first_name, last_name, birth_date,
/// email` and optionally `id`).
pub fn read_patients(file: &Path) -> Result<Vec<PatientRow>, ImportError> {
    let table = Table::read(file, &["first_name", "last_name", "birth_date", "email"])?;
    let today = latest_today(chrono::Utc::now());
    let mut emails = HashMap::new();
    let mut ids = HashSet::new();
    let mut rows = Vec::with_capacity(table.rows.len());
    for (line, record) in &table.rows {
        let value = |column: &str| table.get(record, column).unwrap_or_default();
        let bad = |field: &str, message: String| ImportError::new(&table.file, *line, field, message);
        let first = PersonName::parse(value("first_name"), "first_name")
            .map_err(|v| bad("first_name", v.description))?;
        let last = PersonName::parse(value("last_name"), "last_name")
            .map_err(|v| bad("last_name", v.description))?;
        let birth = BirthDate::parse(value("birth_date"), today, "birth_date")
            .map_err(|v| bad("birth_date", v.description))?;
        let email = Email::parse(value("email"), "email").map_err(|v| bad("email", v.description))?;
        if let Some(earlier) = emails.insert(email.as_str().to_lowercase(), *line) {
            return Err(bad("email", format!("the same email as line {earlier}")));
        }
        let csv_id = match table.get(record, "id").filter(|v| !v.is_empty()) {
            None => None,
            Some(raw) => {
                let id: i64 = raw.parse().map_err(|_| bad("id", format!("{raw:?} is not a whole number")))?;
                if !ids.insert(id) {
                    return Err(bad("id", format!("id {id} appears twice")));
                }
                Some(id)
            }
        };
        rows.push(PatientRow {
            line: *line,
            csv_id,
            patient: ppb::Patient {
                first_name: first.as_str().to_owned(),
                last_name: last.as_str().to_owned(),
                birth_date: birth.get().format("%Y-%m-%d").to_string(),
                email: email.as_str().to_owned(),
                ..Default::default()
            },
        });
    }
    Ok(rows)
}

fn vocabulary<T: Copy>(
    raw: &str,
    parse: fn(&str) -> Option<T>,
    all: &[T],
    name: fn(T) -> &'static str,
) -> Result<T, String> {
    let normalised = raw.trim().to_ascii_uppercase().replace([' ', '-'], "_");
    parse(&normalised).ok_or_else(|| {
        let names: Vec<_> = all.iter().map(|v| name(*v)).collect();
        format!("{raw:?} is not one of {}", names.join(", "))
    })
}

/// Reads and validates a studies file (`urgency_level, body_part,
/// description, type, patient_id`). With `known_patients`, each
/// `patient_id` must be one of them (the patients file's ids).
pub fn read_studies(
    file: &Path,
    known_patients: Option<&HashSet<i64>>,
) -> Result<Vec<StudyRow>, ImportError> {
    let table = Table::read(file, &["urgency_level", "body_part", "description", "patient_id"])?;
    let type_column = if table.columns.contains_key("type") { "type" } else { "study_type" };
    if !table.columns.contains_key(type_column) {
        return Err(ImportError::new(file, 1, "type", "column is missing from the header"));
    }
    let mut rows = Vec::with_capacity(table.rows.len());
    for (line, record) in &table.rows {
        let value = |column: &str| table.get(record, column).unwrap_or_default();
        let bad = |field: &str, message: String| ImportError::new(&table.file, *line, field, message);
        let urgency = vocabulary(
            value("urgency_level"),
            UrgencyLevel::from_name,
            UrgencyLevel::ALL,
            UrgencyLevel::name,
        )
        .map_err(|m| bad("urgency_level", m))?;
        let body_part = vocabulary(value("body_part"), BodyPart::from_name, BodyPart::ALL, BodyPart::name)
            .map_err(|m| bad("body_part", m))?;
        let study_type =
            vocabulary(value(type_column), StudyType::from_name, StudyType::ALL, StudyType::name)
                .map_err(|m| bad(type_column, m))?;
        let description = Description::parse(value("description"), "description")
            .map_err(|v| bad("description", v.description))?;
        let raw_patient = value("patient_id");
        let patient_id: i64 =
            raw_patient.parse().ok().filter(|id| *id > 0).ok_or_else(|| {
                bad("patient_id", format!("{raw_patient:?} is not a positive whole number"))
            })?;
        if known_patients.is_some_and(|known| !known.contains(&patient_id)) {
            return Err(bad("patient_id", format!("no patient with id {patient_id} in the patients file")));
        }
        let proto = |prefix: &str, name: &str, from: fn(&str) -> Option<i32>| {
            from(&format!("{prefix}{name}")).unwrap_or(0)
        };
        rows.push(StudyRow {
            line: *line,
            csv_patient_id: patient_id,
            study: spb::Study {
                urgency_level: proto("URGENCY_LEVEL_", urgency.name(), |n| {
                    spb::UrgencyLevel::from_str_name(n).map(Into::into)
                }),
                body_part: proto("BODY_PART_", body_part.name(), |n| {
                    spb::BodyPart::from_str_name(n).map(Into::into)
                }),
                study_type: proto("STUDY_TYPE_", study_type.name(), |n| {
                    spb::StudyType::from_str_name(n).map(Into::into)
                }),
                description: description.as_str().to_owned(),
                ..Default::default()
            },
        });
    }
    Ok(rows)
}

/// Calls `f` until it succeeds or fails with something other than
/// UNAVAILABLE (at most 5 tries, 200 ms apart): safe for creates because
/// each carries an idempotency key.
async fn with_retries<T, F, Fut>(mut f: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let mut tries = 0;
    loop {
        match f().await {
            Err(status) if status.code() == Code::Unavailable && tries < 4 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => return other,
        }
    }
}

fn refused(file: &Path, line: u64, status: &Status) -> ImportError {
    let (field, message) =
        match status.get_details_bad_request().and_then(|b| b.field_violations.into_iter().next()) {
            Some(v) => (v.field.rsplit('.').next().unwrap_or("row").to_owned(), v.description),
            None if status.code() == Code::AlreadyExists => ("email".to_owned(), status.message().to_owned()),
            None if status.code() == Code::NotFound => ("patient_id".to_owned(), status.message().to_owned()),
            None => ("row".to_owned(), format!("{:?}: {}", status.code(), status.message())),
        };
    ImportError::new(file, line, &field, format!("refused by the server: {message}"))
}

/// Imports `patients` and `studies` through the API on `channel` (Envoy, or
/// the services' own addresses: both clients use it), as the caller whose
/// token the channel carries (creating needs `clinician`; undoing a failed
/// import deletes patients, which needs `admin`). With a
/// patients file, studies' `patient_id`s are the patients file's `id`s;
/// without one, they are ids of patients that already exist.
pub async fn import(
    channel: Authed,
    patients: Option<&Path>,
    studies: Option<&Path>,
) -> Result<Summary, ImportError> {
    let patient_rows = patients.map(read_patients).transpose()?.unwrap_or_default();
    let known: Option<HashSet<i64>> =
        patients.map(|_| patient_rows.iter().filter_map(|r| r.csv_id).collect());
    let study_rows = studies.map(|f| read_studies(f, known.as_ref())).transpose()?.unwrap_or_default();

    let run = format!("{:016x}", rand::random::<u64>());
    let patient_client = PatientServiceClient::new(channel.clone());
    let study_client = StudyServiceClient::new(channel);
    let mut created_patients = Vec::new();
    let mut created_studies = Vec::new();
    let mut id_map = HashMap::new();

    let outcome: Result<(), ImportError> = async {
        for row in &patient_rows {
            let request = ppb::CreatePatientRequest {
                patient: Some(row.patient.clone()),
                request_id: format!("import-{run}-patient-{}", row.line),
                ..Default::default()
            };
            let created = with_retries(|| {
                let mut client = patient_client.clone();
                let request = request.clone();
                async move { client.create_patient(request).await.map(|r| r.into_inner()) }
            })
            .await
            .map_err(|s| refused(patients.unwrap_or(Path::new("patients")), row.line, &s))?;
            created_patients.push(created.id);
            if let Some(csv_id) = row.csv_id {
                id_map.insert(csv_id, created.id);
            }
        }
        for row in &study_rows {
            let patient_id =
                if patients.is_some() { id_map[&row.csv_patient_id] } else { row.csv_patient_id };
            let request = spb::CreateStudyRequest {
                study: Some(spb::Study { patient_id, ..row.study.clone() }),
                request_id: format!("import-{run}-study-{}", row.line),
            };
            let created = with_retries(|| {
                let mut client = study_client.clone();
                let request = request.clone();
                async move { client.create_study(request).await.map(|r| r.into_inner()) }
            })
            .await
            .map_err(|s| refused(studies.unwrap_or(Path::new("studies")), row.line, &s))?;
            created_studies.push(created.id);
        }
        Ok(())
    }
    .await;

    if let Err(error) = outcome {
        for id in created_studies {
            let _ =
                study_client.clone().delete_study(spb::DeleteStudyRequest { id, etag: String::new() }).await;
        }
        for id in created_patients {
            let _ = patient_client
                .clone()
                .delete_patient(ppb::DeletePatientRequest { id, etag: String::new(), force: true })
                .await;
        }
        return Err(error);
    }
    Ok(Summary { patients: patient_rows.len(), studies: study_rows.len() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, contents: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "clinic-import-{}-{:x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn the_seed_files_read_cleanly_despite_spaces_after_commas() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data");
        let patients = read_patients(&root.join("patients.csv")).unwrap();
        assert_eq!(patients.len(), 4);
        assert_eq!(patients[2].patient.first_name, "Diana Laura");
        assert_eq!(patients[2].csv_id, Some(3));
        let ids: HashSet<i64> = patients.iter().filter_map(|p| p.csv_id).collect();
        let studies = read_studies(&root.join("studies.csv"), Some(&ids)).unwrap();
        assert_eq!(studies.len(), 4);
        assert_eq!(studies[3].study.body_part(), spb::BodyPart::Breasts);
        assert_eq!(studies[3].study.study_type(), spb::StudyType::Mammogram);
    }

    #[test]
    fn a_bad_row_is_reported_with_file_line_and_field() {
        let file = write(
            "p.csv",
            "first_name, last_name, birth_date, email, id\nAna, Ruiz, 1990-01-01, ana@x.com, 1\nBea, Soto, 1990-02-30, bea@x.com, 2\n",
        );
        let error = read_patients(&file).unwrap_err();
        assert_eq!((error.line, error.field.as_str()), (3, "birth_date"));
        assert!(error.to_string().starts_with(&format!("{}:3: birth_date:", file.display())), "{error}");
    }

    #[test]
    fn studies_must_use_known_vocabulary_and_known_patients() {
        let file = write(
            "s.csv",
            "urgency_level, body_part, description, type, patient_id\nHIGH, ELBOWS, x, XRAY, 1\n",
        );
        assert_eq!(read_studies(&file, None).unwrap_err().field, "body_part");
        let file = write(
            "s.csv",
            "urgency_level, body_part, description, type, patient_id\nHIGH, NECK, x, XRAY, 9\n",
        );
        let known = HashSet::from([1]);
        assert_eq!(read_studies(&file, Some(&known)).unwrap_err().field, "patient_id");
    }

    #[test]
    fn duplicate_emails_in_one_file_are_caught_before_writing() {
        let file = write(
            "p.csv",
            "first_name,last_name,birth_date,email\nAna,Ruiz,1990-01-01,ana@x.com\nAna,Ruiz,1990-01-01,ANA@x.com\n",
        );
        let error = read_patients(&file).unwrap_err();
        assert_eq!((error.line, error.field.as_str()), (3, "email"));
    }
}
