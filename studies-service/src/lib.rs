//! studies-service: owns the clinic's imaging studies, in the Postgres schema
//! `studies`, and serves `clinic.studies.v1.StudyService`.
//!
//! Studies refer to patients owned by patients-service. Creating or moving a
//! study asks patients-service whether the patient exists; deleting a patient
//! (and undeleting or purging one) reaches here through patients-service's
//! public change feed, which
//! [`consumer`] applies durably and idempotently.
//!
//! # Layout
//! - [`config`]: every setting, declared once.
//! - [`startup`]: building and running the service.
//! - [`domain`]: validated study values, the radiology vocabulary (no I/O).
//! - [`storage`]: every SQL statement, against the `studies` schema.
//! - [`grpc`]: the StudyService adapter (protobuf ↔ domain).
//! - [`error`]: the service's error type and its one mapping to gRPC statuses.
//! - [`patients`]: the gRPC clients of patients-service.
//! - [`consumer`]: applies patient deletions, undeletes and purges from
//!   patients-service's change feed.
//! - `migrations/`: the schema's own tables, embedded; run by `studies-service
//!   migrate` as the schema's owner role, then the shared parts of
//!   [`OWNED_SCHEMA`] (audit trail, request ids, service secret, row
//!   versions, change feed); checked at start-up.

pub mod config;
pub mod consumer;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod patients;
pub mod startup;
pub mod storage;

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
pub const SCHEMA: &str = "studies";
/// The login role this service connects as; it owns nothing and has the
/// rights its migrations grant it.
pub const ROLE: &str = "clinic_studies";
/// The login role that owns [`SCHEMA`] and runs its migrations.
pub const OWNER_ROLE: &str = "clinic_studies_owner";

/// The service's migrations, embedded at build time; the history lives in
/// its own schema. Run as [`OWNER_ROLE`] by `studies-service migrate`.
pub fn migrator() -> sqlx::migrate::Migrator {
    sqlx::migrate!("./migrations")
}

/// The schema, its roles, its migrations and the shared parts it holds.
pub const OWNED_SCHEMA: OwnedSchema = OwnedSchema {
    name: SCHEMA,
    owner_role: OWNER_ROLE,
    runtime_role: ROLE,
    migrator,
    baseline: Some(Baseline { version: 8, replaces_through: 7 }),
    resource_table: "study",
    shared: &[&AUDIT_TRAIL, &REQUEST_IDS, &SERVICE_SECRET, &ROW_VERSIONS, &CHANGES],
};
