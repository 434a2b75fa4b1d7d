//! Real PostgreSQL for tests and local runs, with nothing installed or running
//! beforehand.
//!
//! [`PgCluster`] starts a private throwaway cluster from the machine's
//! PostgreSQL server binaries (initdb + pg_ctl into a temporary folder, on a
//! free port). [`TestDb`] gives each test a fresh database in which the
//! services' roles and schemas are provisioned the way production provisions
//! them, so tests run in parallel without seeing each other.
//!
//! # Layout
//! - [`mod@assert`]: checking error statuses the way clients do.
//! - [`auth`]: a trusted signing key, tokens for any role, clients carrying one.
//! - [`legacy`]: schemas as earlier releases left them, to test upgrades.
//! - [`keys`], [`cluster`], [`provision`]: re-exported from `clinic-dev-keys`
//!   and `clinic-pg-cluster`, which the dev tool uses too.
//! - [`service`]: test service settings and running a server in a test.
//! - [`testdb`]: one fresh database per test, on `DATABASE_URL` or a shared cluster.

pub mod assert;
pub mod auth;
pub mod legacy;
pub mod service;
pub mod testdb;

pub use clinic_dev_keys as keys;
pub use clinic_pg_cluster::{PgCluster, ServiceRole, cluster, provision};
pub use service::{Running, service_config};
pub use testdb::TestDb;
