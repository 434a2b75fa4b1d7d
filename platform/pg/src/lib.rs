//! The Postgres plumbing every Clinic service shares: the pool and its error
//! classification, schemas migrated by an owner role, idempotent creates,
//! coalesced point reads, leader election for background work, and the
//! failures every service shares ([`api_error::ApiError`]).
//!
//! # Layout
//! - [`db`]: settings, pool, error classification, the health probe,
//!   `table_row!` column lists.
//! - [`schema`]: a schema migrated by its owner role and used by a runtime
//!   role that owns nothing; the service's start-up check.
//! - [`api_error`]: the failures every service shares, mapped to statuses once.
//! - [`leader`]: background work run by one replica at a time.
//! - [`secrets`]: the service secret (the page-token key).
//! - `sql/`: the shared parts of every schema defined here (request ids, the
//!   service secret, row versions).
//! - [`idempotency`]: request ids bound to a fingerprint of the request, pruned.
//! - [`coalesce`]: point reads by id answered together when they queue.

pub mod api_error;
pub mod coalesce;
pub mod db;
pub mod idempotency;
pub mod leader;
pub mod schema;
pub mod secrets;
