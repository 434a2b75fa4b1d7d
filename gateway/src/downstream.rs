//! The gateway's clients of patients-service and studies-service: one reused
//! channel each, the caller's remaining deadline on every call.

use clinic_client::PeerClient;
use clinic_core::{
    context::Call,
    downstream::DownstreamExt,
    validation::{FieldViolation, Invalid},
};
use clinic_proto::{
    patients::v1::{
        GetPatientRequest, ListPatientsRequest, ListPatientsResponse, Patient,
        patient_service_client::PatientServiceClient,
    },
    studies::v1::{
        ListStudiesByPatientRequest, ListStudiesRequest, ListStudiesResponse, PatientStudies,
        study_service_client::StudyServiceClient,
    },
};
use tonic_types::StatusExt;

use crate::{
    error::Result,
    listing::{PatientQuery, Sources},
};

/// Studies shown per patient in the listing: the rest comes with a token.
const STUDIES_PER_PATIENT: i32 = 20;

/// Both downstream services.
#[derive(Debug, Clone)]
pub struct Downstream {
    /// patients-service.
    pub patients: PeerClient,
    /// studies-service.
    pub studies: PeerClient,
}

impl Downstream {
    /// One patient.
    pub async fn get_patient(&self, id: i64, call: &Call) -> Result<Patient> {
        let client = clinic_core::bounded!(PatientServiceClient::new(self.patients.channel()));
        let answer = self
            .patients
            .read(GetPatientRequest { id, ..Default::default() }, call, |r| async {
                client.clone().get_patient(r).await
            })
            .await;
        Ok(answer.downstream(self.patients.peer(), "reading the patient")?)
    }

    /// One page of one patient's studies.
    pub async fn studies_page(
        &self,
        patient_id: i64,
        page_size: i32,
        page_token: String,
        call: &Call,
    ) -> Result<ListStudiesResponse> {
        let message =
            ListStudiesRequest { page_size, page_token, patient_ids: vec![patient_id], ..Default::default() };
        let client = clinic_core::bounded!(StudyServiceClient::new(self.studies.channel()));
        let answer =
            self.studies.read(message, call, |r| async { client.clone().list_studies(r).await }).await;
        Ok(answer.downstream(self.studies.peer(), "listing the patient's studies")?)
    }
}

impl Sources for Downstream {
    /// One page of patients matching `query` (its `filter` and `order_by`).
    async fn list_patients(
        &self,
        query: &PatientQuery,
        page_size: i32,
        page_token: String,
        call: &Call,
    ) -> Result<ListPatientsResponse> {
        let message = ListPatientsRequest {
            page_size,
            page_token,
            filter: query.filter.clone(),
            order_by: query.order_by.clone(),
            show_deleted: query.show_deleted,
        };
        let client = clinic_core::bounded!(PatientServiceClient::new(self.patients.channel()));
        let answer =
            self.patients.read(message, call, |r| async { client.clone().list_patients(r).await }).await;
        Ok(answer.downstream(self.patients.peer(), "listing patients")?)
    }

    /// The first studies of each of `patient_ids` that match `study_filter`
    /// (all when empty), in one call, each with a token for the rest. A
    /// study filter studies-service refuses is the caller's `study_filter`.
    async fn first_studies_of(
        &self,
        patient_ids: Vec<i64>,
        study_filter: &str,
        show_deleted: bool,
        call: &Call,
    ) -> Result<Vec<PatientStudies>> {
        if patient_ids.is_empty() {
            return Ok(Vec::new());
        }
        let message = ListStudiesByPatientRequest {
            patient_ids,
            studies_per_patient: STUDIES_PER_PATIENT,
            filter: study_filter.to_owned(),
            show_deleted,
        };
        let client = clinic_core::bounded!(StudyServiceClient::new(self.studies.channel()));
        let answer = self
            .studies
            .read(message, call, |r| async { client.clone().list_studies_by_patient(r).await })
            .await;
        if let Err(status) = &answer
            && status.code() == tonic::Code::InvalidArgument
            && let Some(bad) = status.get_details_bad_request()
            && bad.field_violations.iter().any(|v| v.field == "filter")
        {
            let violations = bad.field_violations.into_iter().map(|v| {
                let field = if v.field == "filter" { "study_filter".to_owned() } else { v.field };
                FieldViolation::new(field, v.description)
            });
            return Err(Invalid(violations.collect()).into());
        }
        Ok(answer.downstream(self.studies.peer(), "listing the patients' studies")?.patients)
    }
}
