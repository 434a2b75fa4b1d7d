//! Clinic's services together, each on a real socket, against real Postgres,
//! one fresh database per test: StudyService (which needs patients-service),
//! the cross-service delete cascade, and the gateway's listing view.

mod audit;
mod big_data;
mod cascade;
mod cascade_hardening;
mod gateway;
mod mtls;
mod replicas;
mod search;
mod security;
mod studies_create;
mod studies_hostile;
mod studies_list;
mod studies_read_update_delete;
