//! The gateway's clients of patients-service and studies-service: one reused
//! channel each, the caller's remaining deadline on every call.

use std::time::Duration;

use clinic_common::{
    client::{self, Failure},
    layers::Deadline,
};
use clinic_proto::{
    patients::v1::{
        GetPatientRequest, ListPatientsRequest, ListPatientsResponse, Patient,
        patient_service_client::PatientServiceClient,
    },
    studies::v1::{ListStudiesRequest, Study, study_service_client::StudyServiceClient},
};
use tonic::{Status, transport::Channel};

use crate::error::{Error, Result, Service};

/// Largest page the gateway asks studies-service for.
const STUDIES_PAGE: i32 = 1000;

/// Both downstream services.
#[derive(Debug, Clone)]
pub struct Downstream {
    patients: PatientServiceClient<Channel>,
    studies: StudyServiceClient<Channel>,
    ceiling: Duration,
}

fn failure(service: Service, status: Status) -> Error {
    match client::classify(&status) {
        Failure::Unavailable => Error::Unavailable(service, status.message().to_owned()),
        Failure::DeadlineExceeded => Error::DeadlineExceeded(service),
        Failure::Answered(_) if service == Service::Patients => Error::PatientsAnswered(status),
        Failure::Answered(code) => Error::Failed(service, format!("{code:?}: {}", status.message())),
    }
}

impl Downstream {
    /// Clients over the two channels; no call waits longer than `ceiling`.
    pub fn new(patients: Channel, studies: Channel, ceiling: Duration) -> Self {
        Self {
            patients: PatientServiceClient::new(patients),
            studies: StudyServiceClient::new(studies),
            ceiling,
        }
    }

    /// One page of patients.
    pub async fn list_patients(
        &self,
        page_size: i32,
        page_token: String,
        deadline: Option<Deadline>,
    ) -> Result<ListPatientsResponse> {
        let request = client::request(ListPatientsRequest { page_size, page_token }, deadline, self.ceiling);
        self.patients
            .clone()
            .list_patients(request)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| failure(Service::Patients, s))
    }

    /// One patient.
    pub async fn get_patient(&self, id: i64, deadline: Option<Deadline>) -> Result<Patient> {
        let request = client::request(GetPatientRequest { id }, deadline, self.ceiling);
        self.patients
            .clone()
            .get_patient(request)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| failure(Service::Patients, s))
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
            let page = self
                .studies
                .clone()
                .list_studies(client::request(message, deadline, self.ceiling))
                .await
                .map_err(|s| failure(Service::Studies, s))?
                .into_inner();
            studies.extend(page.studies);
            if page.next_page_token.is_empty() {
                return Ok(studies);
            }
            page_token = page.next_page_token;
        }
    }
}
