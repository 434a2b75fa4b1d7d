//! patients-service: owns the clinic's patients, in the Postgres schema
//! `patients`, and serves `clinic.patients.v1.PatientService`, whose public
//! change feed studies-service's delete cascade follows too.
//!
//! `main` only runs an [`Application`] built from [`Config`]; tests build the
//! very same application on port 0 against their own database.
//!
//! # Layout
//! - [`config`]: every setting, declared once.
//! - [`startup`]: building and running the service.
//! - [`domain`]: validated patient values and their rules (no I/O).
//! - [`storage`]: every SQL statement, against the `patients` schema.
//! - [`grpc`]: the PatientService adapter.
//! - [`error`]: the service's error type and its one mapping to gRPC statuses.
//! - [`studies`]: asking studies-service whether a patient has studies.
//! - `migrations/`: the schema's own tables, embedded; run by `patients-service
//!   migrate` as the schema's owner role, then the shared parts of
//!   [`OWNED_SCHEMA`] (audit trail, request ids, service secret, row
//!   versions, change feed); checked at start-up.

pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod startup;
pub mod storage;
pub mod studies;

use clinic_audit::AUDIT_TRAIL;
use clinic_changes::CHANGES;
use clinic_pg::{
    idempotency::REQUEST_IDS,
    schema::{Baseline, OwnedSchema, ROW_VERSIONS},
    secrets::SERVICE_SECRET,
};

pub use config::Config;
pub use startup::Application;

/// The Postgres schema this service owns.
pub const SCHEMA: &str = "patients";
/// The login role this service connects as; it owns nothing and has the
/// rights its migrations grant it.
pub const ROLE: &str = "clinic_patients";
/// The login role that owns [`SCHEMA`] and runs its migrations.
pub const OWNER_ROLE: &str = "clinic_patients_owner";

/// The service's migrations, embedded at build time; the history lives in
/// its own schema. Run as [`OWNER_ROLE`] by `patients-service migrate`.
pub fn migrator() -> sqlx::migrate::Migrator {
    sqlx::migrate!("./migrations")
}

/// The schema, its roles, its migrations and the shared parts it holds.
pub const OWNED_SCHEMA: OwnedSchema = OwnedSchema {
    name: SCHEMA,
    owner_role: OWNER_ROLE,
    runtime_role: ROLE,
    migrator,
    baseline: Some(Baseline { version: 9, replaces_through: 8 }),
    resource_table: "patient",
    shared: &[&AUDIT_TRAIL, &REQUEST_IDS, &SERVICE_SECRET, &ROW_VERSIONS, &CHANGES],
};
