//! What studies-service needs from patients-service, over gRPC only: whether
//! a patient exists, and the outbox of patient deletions.

use clinic_client::PeerClient;
use clinic_core::{
    context::{Call, CallContext},
    downstream::DownstreamExt,
};
use clinic_proto::patients::{
    events::v1::{
        ListPatientEventsRequest, PatientEventType, patient_event_service_client::PatientEventServiceClient,
    },
    v1::{GetPatientRequest, patient_service_client::PatientServiceClient},
};
use tonic::Code;

use crate::{
    domain::{EventPage, PatientEvent, PatientEventKind, PatientId},
    error::{Error, Result},
};

/// Answers whether a patient exists.
#[tonic::async_trait]
pub trait PatientDirectory: std::fmt::Debug + Send + Sync + 'static {
    /// `Ok` if `patient` exists, `PatientNotFound` if not, asked on behalf
    /// of `call` (its caller, within its deadline).
    async fn ensure_exists(&self, patient: PatientId, call: &Call) -> Result<()>;
}

/// The source of patient events to apply.
#[tonic::async_trait]
pub trait PatientEvents: std::fmt::Debug + Send + Sync + 'static {
    /// Up to `limit` events after outbox position `after`, oldest first,
    /// with the newest sequence of the outbox.
    async fn events_after(&self, after: i64, limit: u32) -> Result<EventPage>;
}

/// patients-service over one shared channel.
#[derive(Debug, Clone)]
pub struct GrpcPatients(pub PeerClient);

#[tonic::async_trait]
impl PatientDirectory for GrpcPatients {
    async fn ensure_exists(&self, patient: PatientId, call: &Call) -> Result<()> {
        let client = clinic_core::bounded!(PatientServiceClient::new(self.0.channel()));
        let message = GetPatientRequest { id: patient.get(), ..Default::default() };
        match self.0.read(message, call, |r| async { client.clone().get_patient(r).await }).await {
            Err(status) if status.code() == Code::NotFound => Err(Error::PatientNotFound(patient)),
            answer => answer
                .downstream(self.0.peer(), "checking that the study's patient exists")
                .map(drop)
                .map_err(Into::into),
        }
    }
}

#[tonic::async_trait]
impl PatientEvents for GrpcPatients {
    async fn events_after(&self, after: i64, limit: u32) -> Result<EventPage> {
        let page_size = i32::try_from(limit).unwrap_or(i32::MAX);
        // Background work: the service's own token, no deadline.
        let call = CallContext::background("reading patient deletions");
        let request = self.0.request(ListPatientEventsRequest { after_sequence: after, page_size }, &call);
        let page = clinic_core::bounded!(PatientEventServiceClient::new(self.0.channel()))
            .list_patient_events(request)
            .await
            .downstream(self.0.peer(), "reading patient deletions")?;
        let events = page
            .events
            .iter()
            .map(|e| PatientEvent {
                sequence: e.sequence,
                patient_id: PatientId::from_stored(e.patient_id),
                kind: match e.r#type() {
                    PatientEventType::Deleted => PatientEventKind::Deleted,
                    PatientEventType::Undeleted => PatientEventKind::Undeleted,
                    _ => PatientEventKind::Unknown,
                },
                create_time: e.create_time.and_then(|t| {
                    chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
                }),
            })
            .collect();
        Ok(EventPage { events, last_sequence: page.last_sequence })
    }
}
