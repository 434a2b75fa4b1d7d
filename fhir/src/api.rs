//! The FHIR interactions: each one request to the services' gRPC APIs (two
//! for `_include`/`_revinclude` and conditional creates), made with the
//! caller's token, so the services check the roles and write the audit
//! trail exactly as for their own clients.

use std::time::Duration;

use axum::{
    Router,
    body::Bytes,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use clinic_client::PeerClient;
use clinic_proto::{
    patients::v1::{self as ppb, patient_service_client::PatientServiceClient},
    studies::v1::{self as spb, study_service_client::StudyServiceClient},
};
use serde_json::{Value, json};
use tonic::{Code, Request, metadata::MetadataValue};
use tonic_types::StatusExt;

use crate::{
    capability, model,
    outcome::{FHIR_JSON, Outcome},
    search::{self, PAGE_TOKEN, Search},
};

/// Both services, called on the caller's behalf.
#[derive(Debug, Clone)]
pub struct Fhir {
    patients: PeerClient,
    studies: PeerClient,
    timeout: Duration,
}

impl Fhir {
    /// The endpoint over `patients` and `studies`, each call waiting at most
    /// `timeout`.
    pub fn new(patients: PeerClient, studies: PeerClient, timeout: Duration) -> Self {
        Self { patients, studies, timeout }
    }

    fn patients(&self) -> PatientServiceClient<clinic_client::Observed> {
        clinic_core::bounded!(PatientServiceClient::new(self.patients.channel()))
    }

    fn studies(&self) -> StudyServiceClient<clinic_client::Observed> {
        clinic_core::bounded!(StudyServiceClient::new(self.studies.channel()))
    }
}

/// What a request carries on to the services, and where it came in.
struct Caller {
    authorization: Option<MetadataValue<tonic::metadata::Ascii>>,
    request_id: Option<MetadataValue<tonic::metadata::Ascii>>,
    /// The endpoint's base URL as the client reached it.
    base: String,
    /// `Prefer: handling=lenient`.
    lenient: bool,
}

impl Caller {
    fn of(headers: &HeaderMap) -> Self {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let metadata = |name: &str| text(name).and_then(|v| v.parse().ok());
        let host = text("x-forwarded-host").or(text(header::HOST.as_str())).unwrap_or("localhost");
        let scheme = text("x-forwarded-proto").unwrap_or("http");
        Self {
            authorization: metadata("authorization"),
            request_id: metadata("x-request-id"),
            base: format!("{scheme}://{host}/fhir"),
            lenient: text("prefer").is_some_and(|p| p.split(';').any(|p| p.trim() == "handling=lenient")),
        }
    }

    fn request<T>(&self, fhir: &Fhir, message: T) -> Request<T> {
        let mut request = clinic_client::request(message, None, fhir.timeout);
        let metadata = request.metadata_mut();
        if let Some(value) = &self.authorization {
            metadata.insert("authorization", value.clone());
        }
        if let Some(value) = &self.request_id {
            metadata.insert("x-request-id", value.clone());
        }
        request
    }
}

/// The routes of `/fhir`.
pub fn router(fhir: Fhir) -> Router {
    Router::new()
        .route("/fhir/metadata", get(metadata))
        .route("/fhir/Patient", get(search_patients).post(create_patient))
        .route("/fhir/Patient/_search", axum::routing::post(search_patients_posted))
        .route("/fhir/Patient/{id}", get(read_patient).put(update_patient).delete(delete_patient))
        .route("/fhir/Patient/{id}/_history", get(patient_history))
        .route("/fhir/Patient/{id}/_history/{version}", get(vread_patient))
        .route("/fhir/ImagingStudy", get(search_studies).post(create_study))
        .route("/fhir/ImagingStudy/_search", axum::routing::post(search_studies_posted))
        .route("/fhir/ImagingStudy/{id}", get(read_study).put(update_study).delete(delete_study))
        .route("/fhir/ImagingStudy/{id}/_history", get(study_history))
        .route("/fhir/ImagingStudy/{id}/_history/{version}", get(vread_study))
        .fallback(unsupported)
        .method_not_allowed_fallback(not_allowed)
        .with_state(fhir)
}

type Answer = Result<Response, Outcome>;

async fn unsupported() -> Outcome {
    Outcome::not_found("this FHIR endpoint serves Patient and ImagingStudy only (see /fhir/metadata)")
}

async fn not_allowed() -> Outcome {
    Outcome::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "not-supported",
        "this interaction is not supported (see /fhir/metadata)",
    )
}

async fn metadata(headers: HeaderMap) -> Response {
    json_response(StatusCode::OK, &capability::statement(&Caller::of(&headers).base))
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    response
}

/// A resource with its `ETag` (and `Location` when `created`).
fn resource_response(status: StatusCode, resource: Value, caller: &Caller) -> Response {
    let version = resource["meta"]["versionId"].as_str().unwrap_or_default().to_owned();
    let location = format!(
        "{}/{}/{}/_history/{version}",
        caller.base,
        resource["resourceType"].as_str().unwrap_or_default(),
        resource["id"].as_str().unwrap_or_default()
    );
    let mut response = json_response(status, &resource);
    let headers = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&format!("W/\"{version}\"")) {
        headers.insert(header::ETAG, etag);
    }
    if status == StatusCode::CREATED
        && let Ok(location) = HeaderValue::from_str(&location)
    {
        headers.insert(header::LOCATION, location);
    }
    response
}

/// An id in a URL: anything but a positive number names no resource.
fn id(raw: &str, type_: &str) -> Result<i64, Outcome> {
    raw.parse().ok().filter(|id: &i64| *id > 0).ok_or_else(|| Outcome::not_found(format!("no {type_}/{raw}")))
}

/// `If-Match: W/"3"` → the etag `3`; none: empty.
fn if_match(headers: &HeaderMap) -> String {
    let raw = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()).unwrap_or("");
    raw.trim().trim_start_matches("W/").trim_matches('"').to_owned()
}

fn params(query: Option<&str>, body: Option<&[u8]>) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> =
        form_urlencoded::parse(query.unwrap_or("").as_bytes()).into_owned().collect();
    if let Some(body) = body {
        all.extend(form_urlencoded::parse(body).into_owned());
    }
    all
}

/// A `searchset` Bundle of `entries` (resource, mode), with `self` and, when
/// the services gave a token, `next`.
fn searchset(
    caller: &Caller,
    type_: &str,
    search: &Search,
    next: &str,
    entries: Vec<(Value, &str)>,
) -> Value {
    let link =
        |params: &[(String, String)]| format!("{}/{type_}?{}", caller.base, search::query_string(params));
    let mut links = vec![json!({ "relation": "self", "url": link(&search.applied) })];
    if !next.is_empty() {
        let mut params: Vec<_> = search.applied.iter().filter(|(k, _)| k != PAGE_TOKEN).cloned().collect();
        params.push((PAGE_TOKEN.to_owned(), next.to_owned()));
        links.push(json!({ "relation": "next", "url": link(&params) }));
    }
    let entries: Vec<Value> = entries
        .into_iter()
        .map(|(resource, mode)| {
            let url = format!(
                "{}/{}/{}",
                caller.base,
                resource["resourceType"].as_str().unwrap_or_default(),
                resource["id"].as_str().unwrap_or_default()
            );
            json!({ "fullUrl": url, "resource": resource, "search": { "mode": mode } })
        })
        .collect();
    json!({ "resourceType": "Bundle", "type": "searchset", "link": links, "entry": entries })
}

/// A `history` Bundle of one resource's revisions, newest first.
fn history(caller: &Caller, type_: &str, id: i64, next: &str, revisions: Vec<(i32, Value, String)>) -> Value {
    let url = format!("{}/{type_}/{id}/_history", caller.base);
    let mut links = vec![json!({ "relation": "self", "url": url })];
    if !next.is_empty() {
        links.push(json!({ "relation": "next", "url": format!("{url}?{}", search::query_string(&[(PAGE_TOKEN.to_owned(), next.to_owned())])) }));
    }
    let entries: Vec<Value> = revisions
        .into_iter()
        .map(|(kind, resource, time)| {
            let version = resource["meta"]["versionId"].as_str().unwrap_or_default().to_owned();
            let (method, status) = match clinic_proto::api::v1::ChangeKind::try_from(kind) {
                Ok(clinic_proto::api::v1::ChangeKind::Created) => ("POST", "201 Created"),
                Ok(clinic_proto::api::v1::ChangeKind::Deleted) => ("DELETE", "204 No Content"),
                _ => ("PUT", "200 OK"),
            };
            let mut entry = json!({
                "fullUrl": format!("{}/{type_}/{id}", caller.base),
                "request": { "method": method, "url": format!("{type_}/{id}") },
                "response": { "status": status, "etag": format!("W/\"{version}\""), "lastModified": time },
            });
            if method != "DELETE" {
                entry["resource"] = resource;
            }
            entry
        })
        .collect();
    json!({ "resourceType": "Bundle", "type": "history", "link": links, "entry": entries })
}

fn history_page(query: Option<&str>) -> Result<(i32, String), Outcome> {
    let mut size = 0;
    let mut token = String::new();
    for (name, value) in params(query, None) {
        match name.as_str() {
            "_count" => {
                size = value
                    .parse::<i32>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| Outcome::invalid("_count", "must be a whole number from 1"))?
            }
            PAGE_TOKEN => token = value,
            other => return Err(Outcome::invalid(other, "history takes _count only")),
        }
    }
    Ok((size, token))
}

fn patient_status(status: tonic::Status) -> Outcome {
    Outcome::from_status(&status, model::patient_element)
}

fn study_status(status: tonic::Status) -> Outcome {
    Outcome::from_status(&status, model::study_element)
}

/// A version in a URL: anything but a positive number names none.
fn revision(raw: &str) -> Result<i64, Outcome> {
    raw.parse().ok().filter(|v: &i64| *v > 0).ok_or_else(|| Outcome::not_found(format!("no version {raw}")))
}

/// The answer to a vread of the version that deleted `type_/id`: 410.
fn deletion_version(type_: &str, id: i64, revision: i64) -> Outcome {
    Outcome::new(StatusCode::GONE, "deleted", format!("version {revision} of {type_}/{id} is its deletion"))
}

async fn read_patient(State(fhir): State<Fhir>, Path(raw): Path<String>, headers: HeaderMap) -> Answer {
    let caller = Caller::of(&headers);
    let id = id(&raw, "Patient")?;
    let request = caller.request(&fhir, ppb::GetPatientRequest { id, ..Default::default() });
    let patient = fhir.patients().get_patient(request).await.map_err(patient_status)?.into_inner();
    Ok(resource_response(StatusCode::OK, model::patient_resource(&patient), &caller))
}

async fn vread_patient(
    State(fhir): State<Fhir>,
    Path((raw, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    let caller = Caller::of(&headers);
    let id = id(&raw, "Patient")?;
    let revision = revision(&version)?;
    let request = caller.request(&fhir, ppb::GetPatientRequest { id, revision, show_deleted: true });
    let patient = fhir.patients().get_patient(request).await.map_err(patient_status)?.into_inner();
    if patient.delete_time.is_some() {
        return Err(deletion_version("Patient", id, revision));
    }
    Ok(resource_response(StatusCode::OK, model::patient_resource(&patient), &caller))
}

async fn patient_history(
    State(fhir): State<Fhir>,
    Path(raw): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Answer {
    let caller = Caller::of(&headers);
    let id = id(&raw, "Patient")?;
    let (page_size, page_token) = history_page(query.as_deref())?;
    let request = caller.request(&fhir, ppb::ListPatientRevisionsRequest { id, page_size, page_token });
    let page = fhir.patients().list_patient_revisions(request).await.map_err(patient_status)?.into_inner();
    let revisions = page
        .revisions
        .into_iter()
        .map(|r| {
            (
                r.kind,
                model::patient_resource(&r.patient.unwrap_or_default()),
                model::instant(&r.revision_time),
            )
        })
        .collect();
    Ok(json_response(StatusCode::OK, &history(&caller, "Patient", id, &page.next_page_token, revisions)))
}

async fn search_patients(state: State<Fhir>, RawQuery(query): RawQuery, headers: HeaderMap) -> Answer {
    run_patient_search(state.0, params(query.as_deref(), None), headers).await
}

async fn search_patients_posted(
    state: State<Fhir>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    run_patient_search(state.0, params(query.as_deref(), Some(&body)), headers).await
}

async fn run_patient_search(fhir: Fhir, params: Vec<(String, String)>, headers: HeaderMap) -> Answer {
    let caller = Caller::of(&headers);
    let search = search::patients(&params, caller.lenient)?;
    let request = caller.request(
        &fhir,
        ppb::ListPatientsRequest {
            page_size: search.page_size,
            page_token: search.page_token.clone(),
            filter: search.filter.clone(),
            order_by: search.order_by.clone(),
            show_deleted: false,
        },
    );
    let page = fhir.patients().list_patients(request).await.map_err(search_status)?.into_inner();
    let mut entries: Vec<(Value, &str)> =
        page.patients.iter().map(|p| (model::patient_resource(p), "match")).collect();
    if search.include && !page.patients.is_empty() {
        let ids: Vec<i64> = page.patients.iter().map(|p| p.id).collect();
        let mut token = String::new();
        loop {
            let message = spb::ListStudiesRequest {
                page_size: search::MAX_COUNT,
                page_token: token,
                patient_ids: ids.clone(),
                ..Default::default()
            };
            let studies = fhir
                .studies()
                .list_studies(caller.request(&fhir, message))
                .await
                .map_err(study_status)?
                .into_inner();
            entries.extend(studies.studies.iter().map(|s| (model::study_resource(s), "include")));
            if studies.next_page_token.is_empty() {
                break;
            }
            token = studies.next_page_token;
        }
    }
    Ok(json_response(StatusCode::OK, &searchset(&caller, "Patient", &search, &page.next_page_token, entries)))
}

/// A search's failure: a filter problem is the parameters' fault.
fn search_status(status: tonic::Status) -> Outcome {
    let mut outcome = patient_status(status);
    if outcome.code == "invalid" {
        outcome.expression = vec![];
    }
    outcome
}

/// A conditional create's condition: the standard `If-None-Exist` header,
/// or (as some clients, such as fhirpy, send it) the POST's query string.
fn condition<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Result<Option<&'a str>, Outcome> {
    let header = match headers.get("if-none-exist").map(|v| v.to_str()) {
        None => None,
        Some(Ok(raw)) => Some(raw.trim_start_matches('?')),
        Some(Err(_)) => return Err(Outcome::invalid("If-None-Exist", "is not readable text")),
    };
    match (header, query.filter(|q| !q.is_empty())) {
        (Some(_), Some(_)) => {
            Err(Outcome::bad_request("send the condition in If-None-Exist or in the query, not both"))
        }
        (header, query) => Ok(header.or(query)),
    }
}

async fn create_patient(
    State(fhir): State<Fhir>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let caller = Caller::of(&headers);
    let patient = model::patient_from(&model::parse_body(&body, "Patient", None)?)?;
    let if_none_exist = match condition(&headers, query.as_deref())? {
        None => String::new(),
        Some(raw) => {
            let condition = search::patients(&params(Some(raw), None), false)
                .map_err(|o| Outcome::invalid("If-None-Exist", o.diagnostics))?;
            if condition.filter.is_empty()
                || condition.include
                || !condition.order_by.is_empty()
                || condition.page_size != 0
            {
                return Err(Outcome::invalid(
                    "If-None-Exist",
                    "If-None-Exist takes search parameters that select patients (identifier=system|value, ...)",
                ));
            }
            condition.filter
        }
    };
    let message =
        ppb::CreatePatientRequest { patient: Some(patient), request_id: String::new(), if_none_exist };
    match fhir.patients().create_patient(caller.request(&fhir, message)).await {
        Ok(created) => Ok(resource_response(
            StatusCode::CREATED,
            model::patient_resource(&created.into_inner()),
            &caller,
        )),
        Err(status) if status.code() == Code::AlreadyExists && reason(&status) == "PATIENT_MATCH_EXISTS" => {
            let id = status
                .get_details_error_info()
                .and_then(|i| i.metadata.get("patient_id").and_then(|id| id.parse().ok()))
                .unwrap_or_default();
            let request = caller.request(&fhir, ppb::GetPatientRequest { id, ..Default::default() });
            let found = fhir.patients().get_patient(request).await.map_err(patient_status)?.into_inner();
            Ok(resource_response(StatusCode::OK, model::patient_resource(&found), &caller))
        }
        Err(status) => Err(patient_status(status)),
    }
}

fn reason(status: &tonic::Status) -> String {
    status.get_details_error_info().map(|i| i.reason).unwrap_or_default()
}

async fn update_patient(
    State(fhir): State<Fhir>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let caller = Caller::of(&headers);
    let id = id(&raw, "Patient")?;
    let mut patient = model::patient_from(&model::parse_body(&body, "Patient", Some(id))?)?;
    patient.id = id;
    patient.etag = if_match(&headers);
    let paths = ["first_name", "last_name", "birth_date", "email", "identifiers"].map(String::from).to_vec();
    let message = ppb::UpdatePatientRequest {
        patient: Some(patient),
        update_mask: Some(prost_types::FieldMask { paths }),
    };
    let updated =
        fhir.patients().update_patient(caller.request(&fhir, message)).await.map_err(patient_status)?;
    Ok(resource_response(StatusCode::OK, model::patient_resource(&updated.into_inner()), &caller))
}

async fn delete_patient(
    State(fhir): State<Fhir>,
    Path(raw): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Answer {
    let caller = Caller::of(&headers);
    let id = id(&raw, "Patient")?;
    let mut force = false;
    for (name, value) in params(query.as_deref(), None) {
        match (name.as_str(), value.as_str()) {
            ("_cascade", "delete") => force = true,
            _ => {
                return Err(Outcome::invalid(
                    name,
                    "delete takes _cascade=delete only (to delete the patient's studies too)",
                ));
            }
        }
    }
    let message = ppb::DeletePatientRequest { id, etag: if_match(&headers), force };
    match fhir.patients().delete_patient(caller.request(&fhir, message)).await {
        Ok(_) => Ok(StatusCode::NO_CONTENT.into_response()),
        // Deleting what is deleted already is done (FHIR's delete is idempotent).
        Err(status) if reason(&status) == "PATIENT_DELETED" => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(status) => Err(patient_status(status)),
    }
}

async fn read_study(State(fhir): State<Fhir>, Path(raw): Path<String>, headers: HeaderMap) -> Answer {
    let caller = Caller::of(&headers);
    let id = id(&raw, "ImagingStudy")?;
    let request = caller.request(&fhir, spb::GetStudyRequest { id, ..Default::default() });
    let study = fhir.studies().get_study(request).await.map_err(study_status)?.into_inner();
    Ok(resource_response(StatusCode::OK, model::study_resource(&study), &caller))
}

async fn vread_study(
    State(fhir): State<Fhir>,
    Path((raw, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    let caller = Caller::of(&headers);
    let id = id(&raw, "ImagingStudy")?;
    let revision = revision(&version)?;
    let request = caller.request(&fhir, spb::GetStudyRequest { id, revision, show_deleted: true });
    let study = fhir.studies().get_study(request).await.map_err(study_status)?.into_inner();
    if study.delete_time.is_some() {
        return Err(deletion_version("ImagingStudy", id, revision));
    }
    Ok(resource_response(StatusCode::OK, model::study_resource(&study), &caller))
}

async fn study_history(
    State(fhir): State<Fhir>,
    Path(raw): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Answer {
    let caller = Caller::of(&headers);
    let id = id(&raw, "ImagingStudy")?;
    let (page_size, page_token) = history_page(query.as_deref())?;
    let request = caller.request(&fhir, spb::ListStudyRevisionsRequest { id, page_size, page_token });
    let page = fhir.studies().list_study_revisions(request).await.map_err(study_status)?.into_inner();
    let revisions = page
        .revisions
        .into_iter()
        .map(|r| {
            (r.kind, model::study_resource(&r.study.unwrap_or_default()), model::instant(&r.revision_time))
        })
        .collect();
    Ok(json_response(StatusCode::OK, &history(&caller, "ImagingStudy", id, &page.next_page_token, revisions)))
}

async fn search_studies(state: State<Fhir>, RawQuery(query): RawQuery, headers: HeaderMap) -> Answer {
    run_study_search(state.0, params(query.as_deref(), None), headers).await
}

async fn search_studies_posted(
    state: State<Fhir>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    run_study_search(state.0, params(query.as_deref(), Some(&body)), headers).await
}

async fn run_study_search(fhir: Fhir, params: Vec<(String, String)>, headers: HeaderMap) -> Answer {
    let caller = Caller::of(&headers);
    let search = search::studies(&params, caller.lenient)?;
    let (page, entries) = list_studies(&fhir, &caller, &search).await?;
    Ok(json_response(StatusCode::OK, &searchset(&caller, "ImagingStudy", &search, &page, entries)))
}

/// One page of a study search (with its patients for `_include`) and the
/// token of the next.
async fn list_studies(
    fhir: &Fhir,
    caller: &Caller,
    search: &Search,
) -> Result<(String, Vec<(Value, &'static str)>), Outcome> {
    let message = spb::ListStudiesRequest {
        page_size: search.page_size,
        page_token: search.page_token.clone(),
        filter: search.filter.clone(),
        order_by: search.order_by.clone(),
        ..Default::default()
    };
    let page = fhir.studies().list_studies(caller.request(fhir, message)).await.map_err(|s| {
        let mut outcome = study_status(s);
        outcome.expression.clear();
        outcome
    })?;
    let page = page.into_inner();
    let mut entries: Vec<(Value, &str)> =
        page.studies.iter().map(|s| (model::study_resource(s), "match")).collect();
    if search.include && !page.studies.is_empty() {
        let mut ids: Vec<i64> = page.studies.iter().map(|s| s.patient_id).collect();
        ids.sort_unstable();
        ids.dedup();
        let filter = ids.iter().map(|id| format!("id = {id}")).collect::<Vec<_>>().join(" OR ");
        let message = ppb::ListPatientsRequest { page_size: search::MAX_COUNT, filter, ..Default::default() };
        let patients =
            fhir.patients().list_patients(caller.request(fhir, message)).await.map_err(patient_status)?;
        entries
            .extend(patients.into_inner().patients.iter().map(|p| (model::patient_resource(p), "include")));
    }
    Ok((page.next_page_token, entries))
}

async fn create_study(
    State(fhir): State<Fhir>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let caller = Caller::of(&headers);
    let study = model::study_from(&model::parse_body(&body, "ImagingStudy", None)?)?;
    // A conditional create names the study's own Study Instance UID, which
    // one study at most holds: the services' unique index makes it atomic.
    let condition = match condition(&headers, query.as_deref())? {
        None => None,
        Some(raw) => {
            let condition = search::studies(&params(Some(raw), None), false)
                .map_err(|o| Outcome::invalid("If-None-Exist", o.diagnostics))?;
            let own = format!("study_instance_uid = \"{}\"", study.study_instance_uid);
            if study.study_instance_uid.is_empty() || condition.filter != own {
                return Err(Outcome::invalid(
                    "If-None-Exist",
                    "on ImagingStudy, If-None-Exist takes identifier=urn:dicom:uid|urn:oid:<uid> with the study's own Study Instance UID",
                ));
            }
            Some(condition)
        }
    };
    if let Some(condition) = &condition {
        let (_, found) = list_studies(&fhir, &caller, condition).await?;
        if let Some((resource, _)) = found.into_iter().next() {
            return Ok(resource_response(StatusCode::OK, resource, &caller));
        }
    }
    let message = spb::CreateStudyRequest { study: Some(study), request_id: String::new() };
    match fhir.studies().create_study(caller.request(&fhir, message)).await {
        Ok(created) => {
            Ok(resource_response(StatusCode::CREATED, model::study_resource(&created.into_inner()), &caller))
        }
        // Another conditional create won the race: its study is the match.
        Err(status) if reason(&status) == "STUDY_INSTANCE_UID_ALREADY_EXISTS" && condition.is_some() => {
            let condition = condition.unwrap_or_default();
            match list_studies(&fhir, &caller, &condition).await?.1.into_iter().next() {
                Some((resource, _)) => Ok(resource_response(StatusCode::OK, resource, &caller)),
                None => Err(study_status(status)),
            }
        }
        Err(status) => Err(study_status(status)),
    }
}

async fn update_study(
    State(fhir): State<Fhir>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let caller = Caller::of(&headers);
    let id = id(&raw, "ImagingStudy")?;
    let mut study = model::study_from(&model::parse_body(&body, "ImagingStudy", Some(id))?)?;
    study.id = id;
    study.etag = if_match(&headers);
    let paths =
        ["patient_id", "urgency_level", "body_part", "description", "study_type", "study_instance_uid"]
            .map(String::from)
            .to_vec();
    let message =
        spb::UpdateStudyRequest { study: Some(study), update_mask: Some(prost_types::FieldMask { paths }) };
    let updated = fhir.studies().update_study(caller.request(&fhir, message)).await.map_err(study_status)?;
    Ok(resource_response(StatusCode::OK, model::study_resource(&updated.into_inner()), &caller))
}

async fn delete_study(State(fhir): State<Fhir>, Path(raw): Path<String>, headers: HeaderMap) -> Answer {
    let caller = Caller::of(&headers);
    let id = id(&raw, "ImagingStudy")?;
    let message = spb::DeleteStudyRequest { id, etag: if_match(&headers) };
    match fhir.studies().delete_study(caller.request(&fhir, message)).await {
        Ok(_) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(status) if reason(&status) == "STUDY_DELETED" => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(status) => Err(study_status(status)),
    }
}
