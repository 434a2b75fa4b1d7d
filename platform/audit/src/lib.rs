//! Clinic's audit trail: every access to personal data, allowed or refused,
//! leaves an append-only event. Reads are recorded by a layer through a
//! group-commit writer; writes record theirs in their own transaction.
//!
//! # Layout
//! - [`audit`]: the events, the writer, the layer, `AuditService` and the
//!   gateway's intake.
//! - [`store`]: storage steps every service shares that must be audited
//!   (durable writes, audited conditional deletes).

pub mod audit;
pub mod store;
