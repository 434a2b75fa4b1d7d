//! PatientService as a client sees it: the real server on a real socket,
//! against real Postgres, one fresh database per test.

mod auth;
mod create;
mod deadlines;
mod delete;
mod feed;
mod helpers;
mod history;
mod hostile;
mod identifiers;
mod list;
mod outage;
mod overload;
mod read;
mod search;
mod server;
mod update;
mod upgrade;
