//! Clinic's audit trail: every access to personal data, allowed or refused,
//! leaves an append-only event. Reads are recorded by a layer through a
//! group-commit writer; writes record theirs in their own transaction.
//!
//! # Layout
//! - [`audit`]: the events, the writer, the layer, `AuditService` and the
//!   gateway's intake.
//! - [`store`]: storage steps every service shares that must be audited
//!   (durable writes, audited conditional deletes).
//! - `sql/audit_trail.sql`: the trail's tables, applied to every service's
//!   schema as the shared part [`AUDIT_TRAIL`].

pub mod audit;
pub mod store;

/// The audit trail's tables, its append-only triggers and its pruning
/// function: applied to every service's schema by its migrate step (see
/// [`clinic_pg::schema`]).
pub const AUDIT_TRAIL: clinic_pg::schema::SharedDdl =
    clinic_pg::schema::SharedDdl { name: "audit_trail", steps: &[include_str!("../sql/audit_trail.sql")] };
