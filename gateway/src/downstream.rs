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
    studies::v1::{ListStudiesRequest, Study, study_service_client::StudyServiceClient},
};

use crate::error::Result;

/// Largest page the gateway asks studies-service for.
const STUDIES_PAGE: i32 = 1000;

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
        let answer = PatientServiceClient::new(self.patients.channel()).list_patients(request).await;
        Ok(answer.downstream(self.patients.peer(), "listing patients")?)
    }

    /// One patient.
    pub async fn get_patient(&self, id: i64, deadline: Option<Deadline>) -> Result<Patient> {
        let request = self.patients.request(GetPatientRequest { id }, deadline);
        let answer = PatientServiceClient::new(self.patients.channel()).get_patient(request).await;
        Ok(answer.downstream(self.patients.peer(), "reading the patient")?)
    }

    /// Every study of `patient_ids`, in batched `ListStudies` calls that
    /// follow `next_page_token` until the last page.
    pub async fn studies_of(&self, patient_ids: Vec<i64>, deadline: Option<Deadline>) -> Result<Vec<Study>> {
        let mut studies = Vec::new();
        if patient_ids.is_empty() {
            return Ok(studies);
        }
        let mut page_token = String::new();
        loop {
            let message =
                ListStudiesRequest { page_size: STUDIES_PAGE, page_token, patient_ids: patient_ids.clone() };
            let page = StudyServiceClient::new(self.studies.channel())
                .list_studies(self.studies.request(message, deadline))
                .await
                .downstream(self.studies.peer(), "listing the patients' studies")?;
            studies.extend(page.studies);
            if page.next_page_token.is_empty() {
                return Ok(studies);
            }
            page_token = page.next_page_token;
        }
    }
}
