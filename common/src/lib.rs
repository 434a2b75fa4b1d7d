//! What every Clinic service does the same way, written once.
//!
//! A service crate holds its domain rules, its SQL and its gRPC adapter; this
//! crate holds the plumbing around them, so the services differ only in what
//! they are about.
//!
//! # Layout
//! - [`client`]: channels to other services and deadline propagation.
//! - [`config`]: reading settings from environment variables with defaults.
//! - [`telemetry`]: tracing subscriber (text or JSON logs).
//! - [`server`]: hosting a gRPC service with health, reflection, per-rpc
//!   tracing, deadlines and graceful shutdown.
//! - [`layers`]: the tower layers the server puts in front of every rpc.
//! - [`errors`]: building `tonic::Status` values with rich error details.
//! - [`validation`]: field violations, the domain's way to reject input.
//! - [`paging`]: page sizes and tamper-evident keyset page tokens.
//! - [`resource`]: idempotency keys, etags, update masks, timestamps.
//! - [`db`]: Postgres pool settings, error classification and the health probe.

pub mod client;
pub mod config;
pub mod db;
pub mod errors;
pub mod layers;
pub mod paging;
pub mod resource;
pub mod server;
pub mod telemetry;
pub mod validation;
