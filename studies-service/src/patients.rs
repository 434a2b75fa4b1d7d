//! What studies-service needs from patients-service, over gRPC only: whether
//! a patient exists, and the changes of its public feed the cascade acts on.

use std::{sync::Arc, time::Duration};

use clinic_client::PeerClient;
use clinic_core::{
    context::{Call, CallContext},
    downstream::{DownstreamError, DownstreamExt},
    resource::from_timestamp,
};
use clinic_proto::{
    api::v1::ChangeKind,
    patients::v1::{
        GetPatientRequest, WatchPatientChangesRequest, WatchPatientChangesResponse,
        patient_service_client::PatientServiceClient,
    },
};
use tokio::sync::Mutex;
use tonic::{Code, Streaming};

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

/// patients-service over one shared channel, and the cascade's watch of
/// its feed, kept open between reads.
#[derive(Debug, Clone)]
pub struct GrpcPatients {
    client: PeerClient,
    watch: Arc<Mutex<Option<OpenWatch>>>,
    wait: Duration,
}

/// A watch of patients' feed and how far it has delivered.
#[derive(Debug)]
struct OpenWatch {
    stream: Streaming<WatchPatientChangesResponse>,
    position: i64,
    head: i64,
}

impl GrpcPatients {
    /// patients-service through `client`; a read of the feed waits at most
    /// `wait` for a change before answering that there is none.
    pub fn new(client: PeerClient, wait: Duration) -> Self {
        Self { client, watch: Arc::default(), wait }
    }
}

#[tonic::async_trait]
impl PatientDirectory for GrpcPatients {
    async fn ensure_exists(&self, patient: PatientId, call: &Call) -> Result<()> {
        let client = clinic_core::bounded!(PatientServiceClient::new(self.client.channel()));
        let message = GetPatientRequest { id: patient.get(), ..Default::default() };
        match self.client.read(message, call, |r| async { client.clone().get_patient(r).await }).await {
            Err(status) if status.code() == Code::NotFound => Err(Error::PatientNotFound(patient)),
            answer => answer
                .downstream(self.client.peer(), "checking that the study's patient exists")
                .map(drop)
                .map_err(Into::into),
        }
    }
}

#[tonic::async_trait]
impl PatientEvents for GrpcPatients {
    /// The next batch of the watch, opened (again) from `after` unless it
    /// stands there: one long-lived stream, so following the feed costs one
    /// audited call and an audit event per batch delivered, not per poll.
    async fn events_after(&self, after: i64, _limit: u32) -> Result<EventPage> {
        const WHAT: &str = "following patients' changes";
        let mut slot = self.watch.lock().await;
        if slot.as_ref().is_some_and(|w| w.position != after) {
            *slot = None;
        }
        let watch = match slot.as_mut() {
            Some(watch) => watch,
            None => {
                // Background work: the service's own token, no deadline.
                let call = CallContext::background(WHAT);
                let request =
                    self.client.request(WatchPatientChangesRequest { after_sequence: after }, &call);
                let stream = clinic_core::bounded!(PatientServiceClient::new(self.client.channel()))
                    .watch_patient_changes(request)
                    .await
                    .downstream(self.client.peer(), WHAT)?;
                slot.insert(OpenWatch { stream, position: after, head: after })
            }
        };
        let message = match tokio::time::timeout(self.wait, watch.stream.message()).await {
            Err(_quiet) => return Ok(EventPage { last_sequence: watch.head, ..Default::default() }),
            Ok(Ok(Some(message))) => message,
            Ok(Ok(None)) => {
                let last_sequence = slot.take().map_or(after, |w| w.head);
                return Ok(EventPage { last_sequence, ..Default::default() });
            }
            Ok(Err(status)) => {
                *slot = None;
                return Err(DownstreamError { peer: self.client.peer(), doing: WHAT, status }.into());
            }
        };
        watch.head = message.head_sequence;
        if let Some(last) = message.changes.last() {
            watch.position = last.sequence;
        }
        let events = message
            .changes
            .into_iter()
            .map(|c| PatientEvent {
                sequence: c.sequence,
                patient_id: PatientId::from_stored(c.patient_id),
                kind: event_kind(c.kind),
                create_time: from_timestamp(c.commit_time),
                expire_time: c.patient.and_then(|p| from_timestamp(p.expire_time)),
            })
            .collect();
        Ok(EventPage { events, last_sequence: watch.head })
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
