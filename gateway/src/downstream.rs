//! The gateway's clients of patients-service and studies-service: one reused
//! channel each, the caller's remaining deadline on every call.

use clinic_common::{
    client::{DownstreamExt, PeerClient},
    deadline::Deadline,
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

use crate::error::Result;

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
    /// One page of patients.
    pub async fn list_patients(
        &self,
        page_size: i32,
        page_token: String,
        deadline: Option<Deadline>,
    ) -> Result<ListPatientsResponse> {
        let request = self.patients.request(ListPatientsRequest { page_size, page_token }, deadline);
        let answer = clinic_common::bounded!(PatientServiceClient::new(self.patients.channel()))
            .list_patients(request)
            .await;
        Ok(answer.downstream(self.patients.peer(), "listing patients")?)
    }

    /// One patient.
    pub async fn get_patient(&self, id: i64, deadline: Option<Deadline>) -> Result<Patient> {
        let request = self.patients.request(GetPatientRequest { id }, deadline);
        let answer = clinic_common::bounded!(PatientServiceClient::new(self.patients.channel()))
            .get_patient(request)
            .await;
        Ok(answer.downstream(self.patients.peer(), "reading the patient")?)
    }

    /// The first studies of each of `patient_ids`, in one call, each with a
    /// token for the rest.
    pub async fn first_studies_of(
        &self,
        patient_ids: Vec<i64>,
        deadline: Option<Deadline>,
    ) -> Result<Vec<PatientStudies>> {
        if patient_ids.is_empty() {
            return Ok(Vec::new());
        }
        let message = ListStudiesByPatientRequest { patient_ids, studies_per_patient: STUDIES_PER_PATIENT };
        let answer = clinic_common::bounded!(StudyServiceClient::new(self.studies.channel()))
            .list_studies_by_patient(self.studies.request(message, deadline))
            .await;
        Ok(answer.downstream(self.studies.peer(), "listing the patients' studies")?.patients)
    }

    /// One page of one patient's studies.
    pub async fn studies_page(
        &self,
        patient_id: i64,
        page_size: i32,
        page_token: String,
        deadline: Option<Deadline>,
    ) -> Result<ListStudiesResponse> {
        let message = ListStudiesRequest { page_size, page_token, patient_ids: vec![patient_id] };
        let answer = clinic_common::bounded!(StudyServiceClient::new(self.studies.channel()))
            .list_studies(self.studies.request(message, deadline))
            .await;
        Ok(answer.downstream(self.studies.peer(), "listing the patient's studies")?)
    }
}
