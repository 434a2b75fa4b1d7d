//! What patients-service needs to know about studies: whether a patient has
//! any, before a non-forced delete.
//!
//! This is a seam: patients-service does not own studies and never reads
//! their tables. [`NoStudies`] is the stand-in used until studies-service
//! answers the question over gRPC; the force-delete cascade is delivered with
//! studies-service itself.

use crate::{domain::PatientId, error::Result};

/// Answers whether a patient has studies.
#[tonic::async_trait]
pub trait StudiesLookup: Send + Sync + 'static {
    /// How many studies `patient` has (0 when none).
    async fn count_for(&self, patient: PatientId) -> Result<u64>;
}

/// A lookup that knows of no studies, for running patients-service alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoStudies;

#[tonic::async_trait]
impl StudiesLookup for NoStudies {
    async fn count_for(&self, _patient: PatientId) -> Result<u64> {
        Ok(0)
    }
}
