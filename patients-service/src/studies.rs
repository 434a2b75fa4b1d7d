//! What patients-service needs from studies-service before a non-forced
//! delete: whether the patient has studies, decided so that no study can be
//! created between that answer and the delete. patients-service does not own
//! studies and never reads their tables; it asks studies-service over gRPC.
//!
//! studies-service answers under its per-patient lock and, when there are
//! no studies, reserves the deletion: from then on it refuses new studies
//! for the patient. If the delete then fails because the patient changed
//! (a stale etag), the reservation is cancelled; if it fails in a way that
//! leaves its outcome unknown, studies-service lifts the reservation itself
//! once it sees the patient still exists.
//!
//! The forced-delete cascade does not go through here: the delete writes a
//! `deleted` event to the outbox (see `storage.rs`) and studies-service
//! removes the studies when it consumes it, even if it was down at the time.

use clinic_client::PeerClient;
use clinic_core::{context::Call, downstream::DownstreamExt};
use clinic_proto::studies::guard::v1::{
    CancelPatientDeletionRequest, ReservePatientDeletionRequest,
    deletion_guard_service_client::DeletionGuardServiceClient,
};

use crate::{domain::PatientId, error::Result};

/// studies-service's side of a non-forced delete.
#[tonic::async_trait]
pub trait DeletionGuard: std::fmt::Debug + Send + Sync + 'static {
    /// Whether `patient` has studies; when not, no study can be created for
    /// them any more (the deletion is reserved).
    async fn reserve_deletion(&self, patient: PatientId, call: &Call) -> Result<bool>;

    /// Lifts the reservation of a deletion that did not happen.
    async fn cancel_deletion(&self, patient: PatientId, call: &Call) -> Result<()>;
}

/// A guard for running patients-service alone: no patient has studies.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoStudies;

#[tonic::async_trait]
impl DeletionGuard for NoStudies {
    async fn reserve_deletion(&self, _patient: PatientId, _call: &Call) -> Result<bool> {
        Ok(false)
    }

    async fn cancel_deletion(&self, _patient: PatientId, _call: &Call) -> Result<()> {
        Ok(())
    }
}

/// studies-service's DeletionGuardService.
#[derive(Debug, Clone)]
pub struct GrpcStudies(pub PeerClient);

#[tonic::async_trait]
impl DeletionGuard for GrpcStudies {
    async fn reserve_deletion(&self, patient: PatientId, call: &Call) -> Result<bool> {
        let request = self.0.request(ReservePatientDeletionRequest { patient_id: patient.get() }, call);
        let answer = clinic_core::bounded!(DeletionGuardServiceClient::new(self.0.channel()))
            .reserve_patient_deletion(request)
            .await
            .downstream(self.0.peer(), "checking whether the patient has studies")?;
        Ok(answer.has_studies)
    }

    async fn cancel_deletion(&self, patient: PatientId, call: &Call) -> Result<()> {
        let request = self.0.request(CancelPatientDeletionRequest { patient_id: patient.get() }, call);
        clinic_core::bounded!(DeletionGuardServiceClient::new(self.0.channel()))
            .cancel_patient_deletion(request)
            .await
            .downstream(self.0.peer(), "cancelling a deletion that did not happen")?;
        Ok(())
    }
}
