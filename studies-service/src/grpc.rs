//! The gRPC adapter: implements `clinic.studies.v1.StudyService` by turning
//! requests into domain values, checking patients with patients-service,
//! calling storage, and turning results back into protobuf.

use std::{pin::Pin, sync::Arc};

use clinic_changes::{
    Feed,
    watch::{self, Batch},
};
use clinic_core::{
    context::{Call, CallContext},
    paging::{self, PageTokens},
    resource::{self, timestamp},
    validation::{FieldViolation, Invalid},
};
use clinic_pg::api_error::ApiError;
use clinic_proto::{
    api::v1::ChangeKind as ChangeKindPb,
    studies::{guard::v1 as guard_pb, v1 as pb},
};
use clinic_query::search::{self, CursorTokens, Walk};
use prost::Message;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::{
    domain::{
        BodyPart, ChangeKind, Description, DicomUid, Etag, FILTER_FIELDS, PatientFilter, PatientId,
        RequestId, SORT_FIELDS, Study, StudyChange, StudyField, StudyFields, StudyId, StudyPatch,
        StudyRevision, StudyType, UrgencyLevel,
    },
    error::{Error, Result},
    patients::PatientDirectory,
    storage::StudyStore,
};

/// StudyService backed by [`StudyStore`] and a [`PatientDirectory`].
#[derive(Debug, Clone)]
pub struct StudyApi {
    /// Where studies are kept.
    pub store: StudyStore,
    /// Signs and checks ListStudies' page tokens.
    pub tokens: PageTokens,
    /// Asked whether a study's patient exists.
    pub patients: Arc<dyn PatientDirectory>,
    /// The studies' change feed.
    pub feed: Feed,
}

/// Scope page tokens of ListStudyRevisions are bound to.
const REVISIONS_SCOPE: &str = "clinic.studies.v1.StudyService/ListStudyRevisions";
/// A watch stream of studies' changes.
type ChangeStream = Pin<Box<dyn Stream<Item = Result<pb::WatchStudyChangesResponse, Status>> + Send>>;

impl StudyApi {
    /// Fails unless `patient` exists: patients known here to be deleted are
    /// refused without asking; the others are asked of patients-service.
    async fn ensure_patient(&self, patient: PatientId, call: &Call) -> Result<()> {
        if self.store.is_deleted_patient(patient).await? {
            return Err(Error::PatientNotFound(patient));
        }
        self.patients.ensure_exists(patient, call).await
    }

    async fn create(&self, req: pb::CreateStudyRequest, call: &Call) -> Result<Study> {
        let (new, request_id) = parse_create(req)?;
        call.concern([new.patient_id.get()]);
        if let Some(request_id) = &request_id
            && let Some(id) = self.store.created_by(call, request_id, &new).await?
        {
            return self.store.get(id).await;
        }
        self.ensure_patient(new.patient_id, call).await?;
        self.store.create(call, &new, request_id.as_ref()).await
    }

    async fn update(&self, req: pb::UpdateStudyRequest, call: &Call) -> Result<Study> {
        let (id, patch, etag) = parse_update(req)?;
        if let Some(patient) = patch.patient_id {
            self.ensure_patient(patient, call).await?;
        }
        self.store.update(call, id, &patch, etag.as_ref()).await
    }

    async fn get(&self, req: pb::GetStudyRequest, call: &Call) -> Result<Study> {
        let mut invalid = Invalid::default();
        let id = invalid.check(StudyId::parse(req.id, "id"));
        if req.revision < 0 {
            invalid.push("revision", "must not be negative");
        }
        let Some(id) = id.filter(|_| invalid.0.is_empty()) else { return Err(invalid.into()) };
        let current = self.store.get(id).await?;
        call.concern([current.fields.patient_id.get()]);
        if current.deleted.is_some() && !req.show_deleted {
            return Err(Error::Deleted(id));
        }
        if req.revision == 0 || current.etag == Etag::of_version(req.revision) {
            return Ok(current);
        }
        self.store.revision(id, req.revision).await
    }

    async fn list(&self, req: pb::ListStudiesRequest, call: &Call) -> Result<pb::ListStudiesResponse> {
        let mut invalid = Invalid::default();
        let size = invalid.check(paging::page_size(req.page_size, "page_size"));
        let patients = PatientFilter::parse(&req.patient_ids, "patient_ids").unwrap_or_else(|e| {
            invalid.0.extend(e.0);
            PatientFilter::default()
        });
        let filter = invalid.check(search::check_filter(&req.filter, FILTER_FIELDS));
        let order = invalid.check(search::check_order(&req.order_by, SORT_FIELDS));
        let (Some(size), Some(filter), Some(order), true) = (size, filter, order, invalid.0.is_empty())
        else {
            return Err(invalid.into());
        };
        let walk = Walk::new(&list_scope(&patients, req.show_deleted), &req.filter, order);
        let after = self.tokens.decode_walk(&walk, &req.page_token)?;
        let mut page = self
            .store
            .search(call, req.show_deleted, &patients, filter.as_ref(), &walk.order, after.as_ref(), size)
            .await?
            .map(|(study, cursor)| (study_pb(study), cursor));
        page.cut_to_bytes(paging::MAX_PAGE_BYTES, |(s, _)| s.encoded_len());
        let next_page_token = self.tokens.next_walk_token(&walk, &page);
        let studies: Vec<pb::Study> = page.items.into_iter().map(|(s, _)| s).collect();
        call.concern(patients.ids().iter().copied().chain(studies.iter().map(|s| s.patient_id)));
        Ok(pb::ListStudiesResponse { studies, next_page_token })
    }

    async fn list_by_patient(
        &self,
        req: pb::ListStudiesByPatientRequest,
        call: &Call,
    ) -> Result<pb::ListStudiesByPatientResponse> {
        let mut invalid = Invalid::default();
        let per_patient = invalid.check(studies_per_patient(req.studies_per_patient));
        if let Err(e) = PatientFilter::parse(&req.patient_ids, "patient_ids") {
            invalid.0.extend(e.0);
        }
        let filter = invalid.check(search::check_filter(&req.filter, FILTER_FIELDS));
        let (Some(per_patient), Some(filter), true) = (per_patient, filter, invalid.0.is_empty()) else {
            return Err(invalid.into());
        };
        let mut ids = req.patient_ids;
        call.concern(ids.iter().copied());
        let mut seen = std::collections::HashSet::new();
        ids.retain(|id| seen.insert(*id));
        let share = BY_PATIENT_BYTES / ids.len().max(1);
        let pages =
            self.store.first_of_patients(req.show_deleted, &ids, per_patient, share, filter.as_ref()).await?;
        let patients = pages
            .into_iter()
            .map(|(patient_id, page)| {
                let page = page.map(study_pb);
                // The rest continue as ListStudies of this patient, same filter, by id.
                let one = PatientFilter::one(PatientId::from_stored(patient_id));
                let walk = Walk::new(
                    &list_scope(&one, req.show_deleted),
                    &req.filter,
                    search::check_order("", SORT_FIELDS).expect("by id"),
                );
                let next_page_token = match page.items.last() {
                    Some(last) if page.more => self.tokens.encode(&walk.scope, last.id),
                    None if page.more => self.tokens.encode(&walk.scope, 0),
                    _ => String::new(),
                };
                pb::PatientStudies { patient_id, studies: page.items, next_page_token }
            })
            .collect();
        Ok(pb::ListStudiesByPatientResponse { patients })
    }
}

/// Most bytes of studies one ListStudiesByPatient answer carries: small
/// enough that a listing page of 1,000 patients with them stays under 4 MiB.
const BY_PATIENT_BYTES: usize = 2 << 20;

/// Default and largest `studies_per_patient` of ListStudiesByPatient.
const STUDIES_PER_PATIENT: (u32, u32) = (20, 100);

fn studies_per_patient(raw: i32) -> Result<u32, FieldViolation> {
    match u32::try_from(raw) {
        Err(_) => Err(FieldViolation::new("studies_per_patient", "must not be negative")),
        Ok(0) => Ok(STUDIES_PER_PATIENT.0),
        Ok(n) => Ok(n.min(STUDIES_PER_PATIENT.1)),
    }
}

/// Page tokens of ListStudies are bound to the method, the patient filter
/// and whether deleted studies are shown.
fn list_scope(filter: &PatientFilter, show_deleted: bool) -> String {
    let ids: Vec<String> = filter.ids().iter().map(i64::to_string).collect();
    let deleted = if show_deleted { "&show_deleted" } else { "" };
    format!("clinic.studies.v1.StudyService/ListStudies?patient_ids={}{deleted}", ids.join(","))
}

#[tonic::async_trait]
impl pb::study_service_server::StudyService for StudyApi {
    async fn create_study(
        &self,
        request: Request<pb::CreateStudyRequest>,
    ) -> Result<Response<pb::Study>, Status> {
        let call = CallContext::of(&request);
        Ok(Response::new(study_pb(self.create(request.into_inner(), &call).await?)))
    }

    async fn get_study(&self, request: Request<pb::GetStudyRequest>) -> Result<Response<pb::Study>, Status> {
        let call = CallContext::of(&request);
        Ok(Response::new(study_pb(self.get(request.into_inner(), &call).await?)))
    }

    async fn list_studies(
        &self,
        request: Request<pb::ListStudiesRequest>,
    ) -> Result<Response<pb::ListStudiesResponse>, Status> {
        let call = CallContext::of(&request);
        Ok(Response::new(self.list(request.into_inner(), &call).await?))
    }

    async fn list_studies_by_patient(
        &self,
        request: Request<pb::ListStudiesByPatientRequest>,
    ) -> Result<Response<pb::ListStudiesByPatientResponse>, Status> {
        let call = CallContext::of(&request);
        Ok(Response::new(self.list_by_patient(request.into_inner(), &call).await?))
    }

    async fn update_study(
        &self,
        request: Request<pb::UpdateStudyRequest>,
    ) -> Result<Response<pb::Study>, Status> {
        let call = CallContext::of(&request);
        Ok(Response::new(study_pb(self.update(request.into_inner(), &call).await?)))
    }

    async fn delete_study(&self, request: Request<pb::DeleteStudyRequest>) -> Result<Response<()>, Status> {
        let call = CallContext::of(&request);
        let req = request.into_inner();
        let mut invalid = Invalid::default();
        let id = invalid.check(StudyId::parse(req.id, "id"));
        let etag = invalid.check(Etag::parse(&req.etag, "etag"));
        let (Some(id), Some(etag)) = (id, etag) else { return Err(Error::from(invalid).into()) };
        self.store.delete(&call, id, etag.as_ref()).await?;
        Ok(Response::new(()))
    }

    async fn undelete_study(
        &self,
        request: Request<pb::UndeleteStudyRequest>,
    ) -> Result<Response<pb::Study>, Status> {
        let call = CallContext::of(&request);
        let req = request.into_inner();
        let mut invalid = Invalid::default();
        let id = invalid.check(StudyId::parse(req.id, "id"));
        let etag = invalid.check(Etag::parse(&req.etag, "etag"));
        let (Some(id), Some(etag)) = (id, etag) else { return Err(Error::from(invalid).into()) };
        Ok(Response::new(study_pb(self.store.undelete(&call, id, etag.as_ref()).await?)))
    }

    async fn list_study_revisions(
        &self,
        request: Request<pb::ListStudyRevisionsRequest>,
    ) -> Result<Response<pb::ListStudyRevisionsResponse>, Status> {
        let call = CallContext::of(&request);
        let req = request.into_inner();
        let mut invalid = Invalid::default();
        let id = invalid.check(StudyId::parse(req.id, "id"));
        let size = invalid.check(paging::page_size(req.page_size, "page_size"));
        let (Some(id), Some(size)) = (id, size) else { return Err(Error::from(invalid).into()) };
        let before = self.tokens.decode(REVISIONS_SCOPE, &req.page_token).map_err(ApiError::from)?;
        let page = self.store.revisions(id, before, size).await?;
        call.concern(page.items.iter().map(|r| r.study.fields.patient_id.get()));
        let next_page_token = self.tokens.next_token(REVISIONS_SCOPE, &page, |r| r.revision);
        Ok(Response::new(pb::ListStudyRevisionsResponse {
            revisions: page.items.into_iter().map(revision_pb).collect(),
            next_page_token,
        }))
    }

    async fn list_study_changes(
        &self,
        request: Request<pb::ListStudyChangesRequest>,
    ) -> Result<Response<pb::ListStudyChangesResponse>, Status> {
        let call = CallContext::of(&request);
        let req = request.into_inner();
        let read = |after, size| self.store.changes_after(after, size);
        let (changes, head_sequence) =
            watch::page(&self.feed, req.after_sequence, req.page_size, read).await?;
        call.concern(changes.iter().map(|c| c.patient_id.get()));
        let changes = changes.into_iter().map(change_pb).collect();
        Ok(Response::new(pb::ListStudyChangesResponse { changes, head_sequence }))
    }

    type WatchStudyChangesStream = ChangeStream;

    async fn watch_study_changes(
        &self,
        request: Request<pb::WatchStudyChangesRequest>,
    ) -> Result<Response<ChangeStream>, Status> {
        let call = CallContext::of(&request);
        let after = request.into_inner().after_sequence;
        let store = self.store.clone();
        let read = move |after, limit| {
            let store = store.clone();
            async move { Ok(store.changes_after(after, limit).await?) }
        };
        let stream = watch::open(&self.feed, after, call, read).await?.map(|batch| {
            batch.map(|Batch { changes, head }| pb::WatchStudyChangesResponse {
                changes: changes.into_iter().map(change_pb).collect(),
                head_sequence: head,
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The internal DeletionGuardService, for patients-service's non-forced deletes.
#[derive(Debug, Clone)]
pub struct GuardApi {
    /// Where reservations are kept.
    pub store: StudyStore,
}

#[tonic::async_trait]
impl guard_pb::deletion_guard_service_server::DeletionGuardService for GuardApi {
    async fn reserve_patient_deletion(
        &self,
        request: Request<guard_pb::ReservePatientDeletionRequest>,
    ) -> Result<Response<guard_pb::ReservePatientDeletionResponse>, Status> {
        let call = CallContext::of(&request);
        let patient = PatientId::parse(request.into_inner().patient_id, "patient_id").map_err(Error::from)?;
        let has_studies = self.store.reserve_deletion(&call, patient).await?;
        Ok(Response::new(guard_pb::ReservePatientDeletionResponse { has_studies }))
    }

    async fn cancel_patient_deletion(
        &self,
        request: Request<guard_pb::CancelPatientDeletionRequest>,
    ) -> Result<Response<()>, Status> {
        let call = CallContext::of(&request);
        let patient = PatientId::parse(request.into_inner().patient_id, "patient_id").map_err(Error::from)?;
        self.store.cancel_deletion(&call, patient).await?;
        Ok(Response::new(()))
    }
}

/// A protobuf enum number → a vocabulary value, matched by name.
fn vocabulary<T>(
    raw: i32,
    field: &str,
    proto_name: Option<&'static str>,
    prefix: &str,
    from_name: fn(&str) -> Option<T>,
) -> Result<T, FieldViolation> {
    match proto_name {
        None => Err(FieldViolation::new(field, format!("{raw} is not a known value"))),
        Some(name) if name.ends_with("_UNSPECIFIED") => Err(FieldViolation::new(field, "is required")),
        Some(name) => name
            .strip_prefix(prefix)
            .and_then(from_name)
            .ok_or_else(|| FieldViolation::new(field, format!("{name} is not supported"))),
    }
}

fn urgency_level(raw: i32, field: &str) -> Result<UrgencyLevel, FieldViolation> {
    let name = pb::UrgencyLevel::try_from(raw).ok().map(|v| v.as_str_name());
    vocabulary(raw, field, name, "URGENCY_LEVEL_", UrgencyLevel::from_name)
}

fn body_part(raw: i32, field: &str) -> Result<BodyPart, FieldViolation> {
    let name = pb::BodyPart::try_from(raw).ok().map(|v| v.as_str_name());
    vocabulary(raw, field, name, "BODY_PART_", BodyPart::from_name)
}

fn study_type(raw: i32, field: &str) -> Result<StudyType, FieldViolation> {
    let name = pb::StudyType::try_from(raw).ok().map(|v| v.as_str_name());
    vocabulary(raw, field, name, "STUDY_TYPE_", StudyType::from_name)
}

/// A request's Study Instance UID: none when empty.
fn instance_uid(raw: &str) -> Result<Option<DicomUid>, FieldViolation> {
    (!raw.trim().is_empty()).then(|| DicomUid::parse(raw, "study.study_instance_uid")).transpose()
}

/// CreateStudyRequest → the study to create and its idempotency key.
fn parse_create(req: pb::CreateStudyRequest) -> Result<(StudyFields, Option<RequestId>)> {
    let mut invalid = Invalid::default();
    let request_id = invalid.check(RequestId::parse(&req.request_id, "request_id"));
    let Some(s) = req.study else {
        invalid.push("study", "is required");
        return Err(invalid.into());
    };
    let patient_id = invalid.check(PatientId::parse(s.patient_id, "study.patient_id"));
    let urgency_level = invalid.check(urgency_level(s.urgency_level, "study.urgency_level"));
    let body_part = invalid.check(body_part(s.body_part, "study.body_part"));
    let description = invalid.check(Description::parse(&s.description, "study.description"));
    let study_type = invalid.check(study_type(s.study_type, "study.study_type"));
    let study_instance_uid = invalid.check(instance_uid(&s.study_instance_uid));
    match (patient_id, urgency_level, body_part, description, study_type, study_instance_uid, request_id) {
        (
            Some(patient_id),
            Some(urgency_level),
            Some(body_part),
            Some(description),
            Some(study_type),
            Some(study_instance_uid),
            Some(rid),
        ) => Ok((
            StudyFields { patient_id, urgency_level, body_part, description, study_type, study_instance_uid },
            rid,
        )),
        _ => Err(invalid.into()),
    }
}

/// UpdateStudyRequest → which study, what changes, and the etag to check.
fn parse_update(req: pb::UpdateStudyRequest) -> Result<(StudyId, StudyPatch, Option<Etag>)> {
    let Some(s) = req.study else {
        return Err(Invalid::one("study", "is required").into());
    };
    let mut invalid = Invalid::default();
    let id = invalid.check(StudyId::parse(s.id, "study.id"));
    let etag = invalid.check(Etag::parse(&s.etag, "study.etag"));
    let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
    let is_set = |f| match f {
        StudyField::PatientId => s.patient_id != 0,
        StudyField::UrgencyLevel => s.urgency_level != 0,
        StudyField::BodyPart => s.body_part != 0,
        StudyField::Description => !s.description.is_empty(),
        StudyField::StudyType => s.study_type != 0,
        StudyField::StudyInstanceUid => !s.study_instance_uid.is_empty(),
    };
    let fields = resource::fields_to_update(&paths, "update_mask", is_set, &mut invalid);
    let mut patch = StudyPatch::default();
    for field in fields {
        match field {
            StudyField::PatientId => {
                patch.patient_id = invalid.check(PatientId::parse(s.patient_id, "study.patient_id"))
            }
            StudyField::UrgencyLevel => {
                patch.urgency_level = invalid.check(urgency_level(s.urgency_level, "study.urgency_level"))
            }
            StudyField::BodyPart => {
                patch.body_part = invalid.check(body_part(s.body_part, "study.body_part"))
            }
            StudyField::Description => {
                patch.description = invalid.check(Description::parse(&s.description, "study.description"))
            }
            StudyField::StudyType => {
                patch.study_type = invalid.check(study_type(s.study_type, "study.study_type"))
            }
            StudyField::StudyInstanceUid => {
                patch.study_instance_uid = invalid.check(instance_uid(&s.study_instance_uid))
            }
        }
    }
    match (id, etag) {
        (Some(id), Some(etag)) if invalid.0.is_empty() => Ok((id, patch, etag)),
        _ => Err(invalid.into()),
    }
}

/// A vocabulary value → its protobuf number, by name.
fn proto_number(prefix: &str, name: &str, from_str_name: fn(&str) -> Option<i32>) -> i32 {
    from_str_name(&format!("{prefix}{name}")).unwrap_or_default()
}

/// A stored study → protobuf.
fn study_pb(s: Study) -> pb::Study {
    let f = s.fields;
    pb::Study {
        id: s.id.get(),
        patient_id: f.patient_id.get(),
        urgency_level: proto_number("URGENCY_LEVEL_", f.urgency_level.name(), |n| {
            pb::UrgencyLevel::from_str_name(n).map(Into::into)
        }),
        body_part: proto_number("BODY_PART_", f.body_part.name(), |n| {
            pb::BodyPart::from_str_name(n).map(Into::into)
        }),
        description: f.description.as_str().to_owned(),
        study_type: proto_number("STUDY_TYPE_", f.study_type.name(), |n| {
            pb::StudyType::from_str_name(n).map(Into::into)
        }),
        study_instance_uid: f.study_instance_uid.map(|u| u.as_str().to_owned()).unwrap_or_default(),
        create_time: Some(timestamp(s.create_time)),
        update_time: Some(timestamp(s.update_time)),
        etag: s.etag.as_str().to_owned(),
        delete_time: s.deleted.map(|d| timestamp(d.delete_time)),
        expire_time: s.deleted.map(|d| timestamp(d.expire_time)),
    }
}

fn kind_pb(kind: ChangeKind) -> i32 {
    match kind {
        ChangeKind::Created => ChangeKindPb::Created,
        ChangeKind::Updated => ChangeKindPb::Updated,
        ChangeKind::Deleted => ChangeKindPb::Deleted,
        ChangeKind::Undeleted => ChangeKindPb::Undeleted,
        ChangeKind::Purged => ChangeKindPb::Purged,
    }
    .into()
}

fn revision_pb(r: StudyRevision) -> pb::StudyRevision {
    pb::StudyRevision {
        revision: r.revision,
        kind: kind_pb(r.kind),
        revision_time: Some(timestamp(r.time)),
        actor: r.actor,
        cause: r.cause.unwrap_or_default(),
        study: Some(study_pb(r.study)),
    }
}

fn change_pb(c: StudyChange) -> pb::StudyChange {
    pb::StudyChange {
        sequence: c.sequence,
        kind: kind_pb(c.kind),
        study_id: c.study_id.get(),
        revision: c.revision,
        commit_time: Some(timestamp(c.commit_time)),
        actor: c.actor,
        cause: c.cause.unwrap_or_default(),
        patient_id: c.patient_id.get(),
        study: c.study.map(study_pb),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The proto enums and the domain vocabularies hold the same values.
    #[test]
    fn every_proto_value_maps_to_the_domain_and_back() {
        for v in UrgencyLevel::ALL {
            let n = proto_number("URGENCY_LEVEL_", v.name(), |n| {
                pb::UrgencyLevel::from_str_name(n).map(Into::into)
            });
            assert_eq!(urgency_level(n, "f"), Ok(*v));
        }
        for v in BodyPart::ALL {
            let n = proto_number("BODY_PART_", v.name(), |n| pb::BodyPart::from_str_name(n).map(Into::into));
            assert_eq!(body_part(n, "f"), Ok(*v), "{v:?}");
        }
        for v in StudyType::ALL {
            let n =
                proto_number("STUDY_TYPE_", v.name(), |n| pb::StudyType::from_str_name(n).map(Into::into));
            assert_eq!(study_type(n, "f"), Ok(*v), "{v:?}");
        }
        let proto_body_parts = (1..200).filter(|n| pb::BodyPart::try_from(*n).is_ok()).count();
        assert_eq!(proto_body_parts, BodyPart::ALL.len());
        let proto_types = (1..200).filter(|n| pb::StudyType::try_from(*n).is_ok()).count();
        assert_eq!(proto_types, StudyType::ALL.len());
    }

    #[test]
    fn unspecified_and_unknown_numbers_are_rejected() {
        assert_eq!(body_part(0, "f").unwrap_err().description, "is required");
        assert!(body_part(999, "f").unwrap_err().description.contains("not a known value"));
        assert!(urgency_level(-1, "f").is_err());
    }
}
