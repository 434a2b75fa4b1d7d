//! What patients-service needs to know about studies: whether a patient has
//! any, before a non-forced delete. patients-service does not own studies and
//! never reads their tables; it asks studies-service over gRPC.
//!
//! The forced-delete cascade does not go through here: the delete writes a
//! `deleted` event to the outbox (see `storage.rs`) and studies-service
//! removes the studies when it consumes it, even if it was down at the time.

use clinic_common::{
    client::{DownstreamExt, PeerClient},
    deadline::Deadline,
};
use clinic_proto::studies::v1::{ListStudiesRequest, study_service_client::StudyServiceClient};

use crate::{domain::PatientId, error::Result};

/// Answers whether a patient has studies.
#[tonic::async_trait]
pub trait StudiesLookup: std::fmt::Debug + Send + Sync + 'static {
    /// Whether `patient` has at least one study, asked within `deadline`.
    async fn has_studies(&self, patient: PatientId, deadline: Option<Deadline>) -> Result<bool>;
}

/// A lookup that knows of no studies, for running patients-service alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoStudies;

#[tonic::async_trait]
impl StudiesLookup for NoStudies {
    async fn has_studies(&self, _patient: PatientId, _deadline: Option<Deadline>) -> Result<bool> {
        Ok(false)
    }
}

/// Asks studies-service with `ListStudies` by patient id, one study at most.
#[derive(Debug, Clone)]
pub struct GrpcStudies(pub PeerClient);

#[tonic::async_trait]
impl StudiesLookup for GrpcStudies {
    async fn has_studies(&self, patient: PatientId, deadline: Option<Deadline>) -> Result<bool> {
        let ask =
            ListStudiesRequest { page_size: 1, page_token: String::new(), patient_ids: vec![patient.get()] };
        let page = StudyServiceClient::new(self.0.channel())
            .list_studies(self.0.request(ask, deadline))
            .await
            .downstream(self.0.peer(), "checking whether the patient has studies")?;
        Ok(!page.studies.is_empty())
    }
}
