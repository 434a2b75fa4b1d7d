//! StudyService as a client sees it, and the integrity rules that span
//! patients-service and studies-service: both services on real sockets,
//! against real Postgres, one fresh database per test.

mod cascade;
mod create;
mod helpers;
mod list;
mod read_update_delete;
