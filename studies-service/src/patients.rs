//! What studies-service needs from patients-service, over gRPC only: whether
//! a patient exists, and the outbox of patient deletions.

use std::time::Duration;

use clinic_common::{
    client::{self, Failure},
    layers::Deadline,
};
use clinic_proto::patients::{
    events::v1::{
        ListPatientEventsRequest, PatientEventType, patient_event_service_client::PatientEventServiceClient,
    },
    v1::{GetPatientRequest, patient_service_client::PatientServiceClient},
};
use tonic::{Code, Status, transport::Channel};

use crate::{
    domain::{PatientDeleted, PatientRef},
    error::{Error, Result},
};

/// Answers whether a patient exists.
#[tonic::async_trait]
pub trait PatientDirectory: Send + Sync + 'static {
    /// `Ok` if `patient` exists, `PatientNotFound` if not, asked within `deadline`.
    async fn ensure_exists(&self, patient: PatientRef, deadline: Option<Deadline>) -> Result<()>;
}

/// The source of patient deletions to apply.
#[tonic::async_trait]
pub trait PatientEvents: Send + Sync + 'static {
    /// Up to `limit` deletions after outbox position `after`, oldest first.
    async fn deletions_after(&self, after: i64, limit: u32) -> Result<Vec<PatientDeleted>>;
}

/// patients-service over one shared channel.
#[derive(Debug, Clone)]
pub struct GrpcPatients {
    patients: PatientServiceClient<Channel>,
    events: PatientEventServiceClient<Channel>,
    ceiling: Duration,
}

impl GrpcPatients {
    /// Clients over `channel`; no call waits longer than `ceiling`.
    pub fn new(channel: Channel, ceiling: Duration) -> Self {
        Self {
            patients: PatientServiceClient::new(channel.clone()),
            events: PatientEventServiceClient::new(channel),
            ceiling,
        }
    }
}

fn downstream_error(status: &Status) -> Error {
    match client::classify(status) {
        Failure::Unavailable => Error::PatientsUnavailable(status.message().to_owned()),
        Failure::DeadlineExceeded => Error::DeadlineExceeded,
        Failure::Answered(code) => Error::PatientsFailed(format!("{code:?}: {}", status.message())),
    }
}

#[tonic::async_trait]
impl PatientDirectory for GrpcPatients {
    async fn ensure_exists(&self, patient: PatientRef, deadline: Option<Deadline>) -> Result<()> {
        let request = client::request(GetPatientRequest { id: patient.get() }, deadline, self.ceiling);
        match self.patients.clone().get_patient(request).await {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::NotFound => Err(Error::PatientNotFound(patient)),
            Err(status) => Err(downstream_error(&status)),
        }
    }
}

#[tonic::async_trait]
impl PatientEvents for GrpcPatients {
    async fn deletions_after(&self, after: i64, limit: u32) -> Result<Vec<PatientDeleted>> {
        let page_size = i32::try_from(limit).unwrap_or(i32::MAX);
        let request = client::request(
            ListPatientEventsRequest { after_sequence: after, page_size },
            None,
            self.ceiling,
        );
        let events =
            self.events.clone().list_patient_events(request).await.map_err(|s| downstream_error(&s))?;
        Ok(events
            .into_inner()
            .events
            .into_iter()
            .filter(|e| e.r#type() == PatientEventType::Deleted)
            .map(|e| PatientDeleted {
                sequence: e.sequence,
                patient_id: PatientRef::from_stored(e.patient_id),
            })
            .collect())
    }
}
