//! The gRPC adapter: implements `clinic.patients.v1.PatientService` by turning
//! requests into domain values, calling storage, and turning results back
//! into protobuf. Failures become statuses in `error.rs`, nowhere else.

use std::{pin::Pin, sync::Arc};

use chrono::{DateTime, Utc};
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
use clinic_proto::{api::v1::ChangeKind as ChangeKindPb, patients::v1 as pb};
use clinic_query::search::{self, CursorTokens, Walk, Where};
use prost::Message;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::{
    domain::{
        BirthDate, ChangeKind, Email, Etag, FILTER_FIELDS, Identifiers, Patient, PatientChange, PatientField,
        PatientFields, PatientId, PatientPatch, PatientRevision, PersonName, RequestId, SORT_FIELDS,
        latest_today,
    },
    error::{Error, Result},
    storage::PatientStore,
    studies::DeletionGuard,
};

/// Validates ListPatients' page size, filter and order.
fn parse_list(req: &pb::ListPatientsRequest) -> Result<(u32, Option<Where>, Walk)> {
    let mut invalid = Invalid::default();
    let size = invalid.check(paging::page_size(req.page_size, "page_size"));
    let filter = invalid.check(search::check_filter(&req.filter, FILTER_FIELDS));
    let order = invalid.check(search::check_order(&req.order_by, SORT_FIELDS));
    match (size, filter, order) {
        (Some(size), Some(filter), Some(order)) => {
            let scope = if req.show_deleted { LIST_WITH_DELETED_SCOPE } else { LIST_SCOPE };
            Ok((size, filter, Walk::new(scope, &req.filter, order)))
        }
        _ => Err(invalid.into()),
    }
}

/// Scope page tokens of ListPatients are bound to.
const LIST_SCOPE: &str = "clinic.patients.v1.PatientService/ListPatients";
/// Scope of ListPatients' tokens with `show_deleted`: a token of one walk
/// does not continue the other.
const LIST_WITH_DELETED_SCOPE: &str = "clinic.patients.v1.PatientService/ListPatients?show_deleted";
/// Scope page tokens of ListPatientRevisions are bound to.
const REVISIONS_SCOPE: &str = "clinic.patients.v1.PatientService/ListPatientRevisions";

/// PatientService backed by [`PatientStore`].
#[derive(Debug, Clone)]
pub struct PatientApi {
    /// Where patients are kept.
    pub store: PatientStore,
    /// Signs and checks ListPatients' page tokens.
    pub tokens: PageTokens,
    /// Asked whether a patient has studies before a non-forced delete.
    pub studies: Arc<dyn DeletionGuard>,
    /// The patients' change feed.
    pub feed: Feed,
}

impl PatientApi {
    async fn delete(&self, req: pb::DeletePatientRequest, call: &Call) -> Result<()> {
        let mut invalid = Invalid::default();
        let id = invalid.check(PatientId::parse(req.id, "id"));
        let etag = invalid.check(Etag::parse(&req.etag, "etag"));
        let (Some(id), Some(etag)) = (id, etag) else { return Err(invalid.into()) };
        call.concern([id.get()]);
        let current = self.store.get(id).await?;
        if current.deleted.is_some() {
            return Err(Error::Deleted(id));
        }
        if etag.as_ref().is_some_and(|e| *e != current.etag) {
            return Err(ApiError::etag_mismatch(id).into());
        }
        let retention = self.feed.settings().delete_retention_days;
        if req.force {
            return self.store.delete(call, id, etag.as_ref(), retention).await;
        }
        if self.studies.reserve_deletion(id, call).await? {
            return Err(Error::HasStudies(id));
        }
        let deleted = self.store.delete(call, id, etag.as_ref(), retention).await;
        if let Err(Error::Api(ApiError::EtagMismatch { .. })) = &deleted {
            // The patient exists and was not deleted: studies may be created
            // again. (Other failures may have deleted it after all; there
            // studies-service checks later and lifts the reservation itself.)
            if let Err(e) = self.studies.cancel_deletion(id, call).await {
                tracing::warn!(error = %e, "cancelling a deletion reservation failed; studies-service will lift it");
            }
        }
        deleted
    }

    async fn get(&self, req: pb::GetPatientRequest, call: &Call) -> Result<Patient> {
        let mut invalid = Invalid::default();
        let id = invalid.check(PatientId::parse(req.id, "id"));
        if req.revision < 0 {
            invalid.push("revision", "must not be negative");
        }
        let Some(id) = id.filter(|_| invalid.0.is_empty()) else { return Err(invalid.into()) };
        call.concern([id.get()]);
        let current = self.store.get(id).await?;
        if current.deleted.is_some() && !req.show_deleted {
            return Err(Error::Deleted(id));
        }
        if req.revision == 0 || current.etag == Etag::of_version(req.revision) {
            return Ok(current);
        }
        self.store.revision(id, req.revision).await
    }
}

/// A watch stream of patients' changes.
type ChangeStream = Pin<Box<dyn Stream<Item = Result<pb::WatchPatientChangesResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::patient_service_server::PatientService for PatientApi {
    async fn create_patient(
        &self,
        request: Request<pb::CreatePatientRequest>,
    ) -> Result<Response<pb::Patient>, Status> {
        let call = CallContext::of(&request);
        let (new, request_id, unless) = parse_create(request.into_inner(), Utc::now())?;
        let patient = self.store.create(&call, &new, request_id.as_ref(), unless.as_ref()).await?;
        Ok(Response::new(patient_pb(patient)))
    }

    async fn get_patient(
        &self,
        request: Request<pb::GetPatientRequest>,
    ) -> Result<Response<pb::Patient>, Status> {
        let call = CallContext::of(&request);
        Ok(Response::new(patient_pb(self.get(request.into_inner(), &call).await?)))
    }

    async fn list_patients(
        &self,
        request: Request<pb::ListPatientsRequest>,
    ) -> Result<Response<pb::ListPatientsResponse>, Status> {
        let call = CallContext::of(&request);
        let req = request.into_inner();
        let (size, filter, walk) = parse_list(&req)?;
        let after = self.tokens.decode_walk(&walk, &req.page_token).map_err(ApiError::from)?;
        let mut page = self
            .store
            .search(&call, req.show_deleted, filter.as_ref(), &walk.order, after.as_ref(), size)
            .await?
            .map(|(patient, cursor)| (patient_pb(patient), cursor));
        page.cut_to_bytes(paging::MAX_PAGE_BYTES, |(p, _)| p.encoded_len());
        let next_page_token = self.tokens.next_walk_token(&walk, &page);
        let patients: Vec<pb::Patient> = page.items.into_iter().map(|(p, _)| p).collect();
        call.concern(patients.iter().map(|p| p.id));
        Ok(Response::new(pb::ListPatientsResponse { patients, next_page_token }))
    }

    async fn update_patient(
        &self,
        request: Request<pb::UpdatePatientRequest>,
    ) -> Result<Response<pb::Patient>, Status> {
        let call = CallContext::of(&request);
        let (id, patch, etag) = parse_update(request.into_inner(), Utc::now())?;
        call.concern([id.get()]);
        let patient = self.store.update(&call, id, &patch, etag.as_ref()).await?;
        Ok(Response::new(patient_pb(patient)))
    }

    async fn delete_patient(
        &self,
        request: Request<pb::DeletePatientRequest>,
    ) -> Result<Response<()>, Status> {
        let call = CallContext::of(&request);
        self.delete(request.into_inner(), &call).await?;
        Ok(Response::new(()))
    }

    async fn undelete_patient(
        &self,
        request: Request<pb::UndeletePatientRequest>,
    ) -> Result<Response<pb::Patient>, Status> {
        let call = CallContext::of(&request);
        let req = request.into_inner();
        let mut invalid = Invalid::default();
        let id = invalid.check(PatientId::parse(req.id, "id"));
        let etag = invalid.check(Etag::parse(&req.etag, "etag"));
        let (Some(id), Some(etag)) = (id, etag) else { return Err(Error::from(invalid).into()) };
        call.concern([id.get()]);
        Ok(Response::new(patient_pb(self.store.undelete(&call, id, etag.as_ref()).await?)))
    }

    async fn purge_patient(&self, request: Request<pb::PurgePatientRequest>) -> Result<Response<()>, Status> {
        let call = CallContext::of(&request);
        let id = PatientId::parse(request.into_inner().id, "id").map_err(Error::from)?;
        call.concern([id.get()]);
        self.store.purge(&call, id).await?;
        Ok(Response::new(()))
    }

    async fn list_patient_revisions(
        &self,
        request: Request<pb::ListPatientRevisionsRequest>,
    ) -> Result<Response<pb::ListPatientRevisionsResponse>, Status> {
        let call = CallContext::of(&request);
        let req = request.into_inner();
        let mut invalid = Invalid::default();
        let id = invalid.check(PatientId::parse(req.id, "id"));
        let size = invalid.check(paging::page_size(req.page_size, "page_size"));
        let (Some(id), Some(size)) = (id, size) else { return Err(Error::from(invalid).into()) };
        call.concern([id.get()]);
        let before = self.tokens.decode(REVISIONS_SCOPE, &req.page_token).map_err(ApiError::from)?;
        let page = self.store.revisions(id, before, size).await?;
        let next_page_token = self.tokens.next_token(REVISIONS_SCOPE, &page, |r| r.revision);
        Ok(Response::new(pb::ListPatientRevisionsResponse {
            revisions: page.items.into_iter().map(revision_pb).collect(),
            next_page_token,
        }))
    }

    async fn list_patient_changes(
        &self,
        request: Request<pb::ListPatientChangesRequest>,
    ) -> Result<Response<pb::ListPatientChangesResponse>, Status> {
        let call = CallContext::of(&request);
        let req = request.into_inner();
        let read = |after, size| self.store.changes_after(after, size);
        let (changes, head_sequence) =
            watch::page(&self.feed, req.after_sequence, req.page_size, read).await?;
        call.concern(changes.iter().map(|c| c.patient_id.get()));
        let changes = changes.into_iter().map(change_pb).collect();
        Ok(Response::new(pb::ListPatientChangesResponse { changes, head_sequence }))
    }

    type WatchPatientChangesStream = ChangeStream;

    async fn watch_patient_changes(
        &self,
        request: Request<pb::WatchPatientChangesRequest>,
    ) -> Result<Response<ChangeStream>, Status> {
        let call = CallContext::of(&request);
        let after = request.into_inner().after_sequence;
        let store = self.store.clone();
        let read = move |after, limit| {
            let store = store.clone();
            async move { Ok(store.changes_after(after, limit).await?) }
        };
        let stream = watch::open(&self.feed, after, call, read).await?.map(|batch| {
            batch.map(|Batch { changes, head }| pb::WatchPatientChangesResponse {
                changes: changes.into_iter().map(change_pb).collect(),
                head_sequence: head,
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// CreatePatientRequest → the patient to create, its idempotency key and
/// its condition, reporting every broken field at once.
fn parse_create(
    req: pb::CreatePatientRequest,
    now: DateTime<Utc>,
) -> Result<(PatientFields, Option<RequestId>, Option<Where>)> {
    let mut invalid = Invalid::default();
    let request_id = invalid.check(RequestId::parse(&req.request_id, "request_id"));
    let unless = invalid.check(
        search::check_filter(&req.if_none_exist, FILTER_FIELDS)
            .map_err(|v| FieldViolation::new("if_none_exist", v.description)),
    );
    let Some(p) = req.patient else {
        invalid.push("patient", "is required");
        return Err(invalid.into());
    };
    let first_name = invalid.check(PersonName::parse(&p.first_name, "patient.first_name"));
    let last_name = invalid.check(PersonName::parse(&p.last_name, "patient.last_name"));
    let birth_date = invalid.check(BirthDate::parse(&p.birth_date, latest_today(now), "patient.birth_date"));
    let email = invalid.check(Email::parse(&p.email, "patient.email"));
    let identifiers = Identifiers::parse(identifier_pairs(&p), "patient.identifiers", &mut invalid);
    match (first_name, last_name, birth_date, email, identifiers, request_id, unless) {
        (
            Some(first_name),
            Some(last_name),
            Some(birth_date),
            Some(email),
            Some(identifiers),
            Some(request_id),
            Some(unless),
        ) => {
            Ok((PatientFields { first_name, last_name, birth_date, email, identifiers }, request_id, unless))
        }
        _ => Err(invalid.into()),
    }
}

/// UpdatePatientRequest → which patient, what changes, and the etag to check.
fn parse_update(
    req: pb::UpdatePatientRequest,
    now: DateTime<Utc>,
) -> Result<(PatientId, PatientPatch, Option<Etag>)> {
    let Some(p) = req.patient else {
        return Err(Invalid::one("patient", "is required").into());
    };
    let mut invalid = Invalid::default();
    let id = invalid.check(PatientId::parse(p.id, "patient.id"));
    let etag = invalid.check(Etag::parse(&p.etag, "patient.etag"));
    let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
    let is_set = |f| match f {
        PatientField::FirstName => !p.first_name.is_empty(),
        PatientField::LastName => !p.last_name.is_empty(),
        PatientField::BirthDate => !p.birth_date.is_empty(),
        PatientField::Email => !p.email.is_empty(),
        PatientField::Identifiers => !p.identifiers.is_empty(),
    };
    let fields = resource::fields_to_update(&paths, "update_mask", is_set, &mut invalid);
    let mut patch = PatientPatch::default();
    for field in fields {
        match field {
            PatientField::FirstName => {
                patch.first_name = invalid.check(PersonName::parse(&p.first_name, "patient.first_name"))
            }
            PatientField::LastName => {
                patch.last_name = invalid.check(PersonName::parse(&p.last_name, "patient.last_name"))
            }
            PatientField::BirthDate => {
                patch.birth_date =
                    invalid.check(BirthDate::parse(&p.birth_date, latest_today(now), "patient.birth_date"))
            }
            PatientField::Email => patch.email = invalid.check(Email::parse(&p.email, "patient.email")),
            PatientField::Identifiers => {
                patch.identifiers =
                    Identifiers::parse(identifier_pairs(&p), "patient.identifiers", &mut invalid)
            }
        }
    }
    match (id, etag) {
        (Some(id), Some(etag)) if invalid.0.is_empty() => Ok((id, patch, etag)),
        _ => Err(invalid.into()),
    }
}

/// The (system, value) pairs of a request's patient.
fn identifier_pairs(p: &pb::Patient) -> impl ExactSizeIterator<Item = (&str, &str)> {
    p.identifiers.iter().map(|i| (i.system.as_str(), i.value.as_str()))
}

/// A stored patient → protobuf.
fn patient_pb(p: Patient) -> pb::Patient {
    let f = p.fields;
    pb::Patient {
        id: p.id.get(),
        first_name: f.first_name.as_str().to_owned(),
        last_name: f.last_name.as_str().to_owned(),
        birth_date: f.birth_date.get().format("%Y-%m-%d").to_string(),
        email: f.email.as_str().to_owned(),
        create_time: Some(timestamp(p.create_time)),
        update_time: Some(timestamp(p.update_time)),
        etag: p.etag.as_str().to_owned(),
        delete_time: p.deleted.map(|d| timestamp(d.delete_time)),
        expire_time: p.deleted.map(|d| timestamp(d.expire_time)),
        identifiers: f
            .identifiers
            .as_slice()
            .iter()
            .map(|i| pb::Identifier { system: i.system.clone(), value: i.value.clone() })
            .collect(),
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

fn revision_pb(r: PatientRevision) -> pb::PatientRevision {
    pb::PatientRevision {
        revision: r.revision,
        kind: kind_pb(r.kind),
        revision_time: Some(timestamp(r.time)),
        actor: r.actor,
        patient: Some(patient_pb(r.patient)),
    }
}

fn change_pb(c: PatientChange) -> pb::PatientChange {
    pb::PatientChange {
        sequence: c.sequence,
        kind: kind_pb(c.kind),
        patient_id: c.patient_id.get(),
        revision: c.revision,
        commit_time: Some(timestamp(c.commit_time)),
        actor: c.actor,
        patient: c.patient.map(patient_pb),
    }
}
