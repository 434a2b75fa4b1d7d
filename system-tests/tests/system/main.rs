//! Clinic's services together, each on a real socket, against real Postgres,
//! one fresh database per test: StudyService's calls to patients-service,
//! the cross-service delete cascade, the gateway's listing view, security,
//! the audit trail and replicas. Each service's own CRUD is tested in its
//! own crate.

mod audit;
mod big_data;
mod cascade;
mod cascade_hardening;
mod gateway;
mod mtls;
mod replicas;
mod search;
mod security;
mod studies_with_patients;
