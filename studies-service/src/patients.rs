//! What studies-service needs from patients-service, over gRPC only: whether
//! a patient exists, and the changes of its public feed the cascade acts on.

use clinic_client::PeerClient;
use clinic_core::{
    context::{Call, CallContext},
    downstream::DownstreamExt,
};
use clinic_proto::{
    api::v1::ChangeKind,
    patients::v1::{
        GetPatientRequest, ListPatientChangesRequest, patient_service_client::PatientServiceClient,
    },
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

/// The source of patient changes to apply.
#[tonic::async_trait]
pub trait PatientEvents: std::fmt::Debug + Send + Sync + 'static {
    /// Up to `limit` changes after feed position `after`, oldest first,
    /// with the newest sequence of the feed.
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
        let call = CallContext::background("following patients' changes");
        let request = self.0.request(ListPatientChangesRequest { after_sequence: after, page_size }, &call);
        let page = clinic_core::bounded!(PatientServiceClient::new(self.0.channel()))
            .list_patient_changes(request)
            .await
            .downstream(self.0.peer(), "following patients' changes")?;
        let time = |t: Option<prost_types::Timestamp>| {
            t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
        };
        let events = page
            .changes
            .into_iter()
            .map(|c| PatientEvent {
                sequence: c.sequence,
                patient_id: PatientId::from_stored(c.patient_id),
                kind: event_kind(c.kind),
                create_time: time(c.commit_time),
                expire_time: c.patient.and_then(|p| time(p.expire_time)),
            })
            .collect();
        Ok(EventPage { events, last_sequence: page.head_sequence })
    }
}

/// What the cascade does with a change of kind `kind` (its protobuf
/// number): a kind a newer patients-service adds is passed over.
fn event_kind(kind: i32) -> PatientEventKind {
    match ChangeKind::try_from(kind) {
        Ok(ChangeKind::Deleted) => PatientEventKind::Deleted,
        Ok(ChangeKind::Undeleted) => PatientEventKind::Undeleted,
        Ok(ChangeKind::Purged) => PatientEventKind::Purged,
        _ => PatientEventKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cascade_acts_on_deletes_undeletes_and_purges_and_passes_over_the_rest() {
        assert_eq!(event_kind(ChangeKind::Deleted.into()), PatientEventKind::Deleted);
        assert_eq!(event_kind(ChangeKind::Undeleted.into()), PatientEventKind::Undeleted);
        assert_eq!(event_kind(ChangeKind::Purged.into()), PatientEventKind::Purged);
        assert_eq!(event_kind(ChangeKind::Created.into()), PatientEventKind::Other);
        assert_eq!(event_kind(ChangeKind::Updated.into()), PatientEventKind::Other);
        assert_eq!(event_kind(99), PatientEventKind::Other, "a kind added later");
    }
}
