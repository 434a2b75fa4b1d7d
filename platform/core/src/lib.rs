//! The pure core every Clinic crate builds on: the rules and shapes of
//! resources, ids, input validation, errors as gRPC statuses, paging and
//! deadlines. Nothing here does I/O, so all of it is tested in-process.
//!
//! # Layout
//! A module uses only modules listed above it:
//! - [`defaults`]: the default ports and addresses, written once.
//! - [`settings`]: helpers for the clap-derived settings.
//! - [`validation`]: field violations, the domain's way to reject input.
//! - [`ids`]: one positive-id type for patients and studies.
//! - [`deadline`]: the caller's deadline and `grpc-timeout` parsing.
//! - [`errors`]: building `tonic::Status` values with rich error details.
//! - [`downstream`]: a failed call to another service, and how it is
//!   reported to our own caller.
//! - [`paging`]: page sizes, the one-row-more page cut, tamper-evident tokens.
//! - [`resource`]: idempotency keys, etags, update masks, timestamps.
//! - [`context`]: the rpc being handled: request id, caller, roles, audit data.

pub mod context;
pub mod deadline;
pub mod defaults;
pub mod downstream;
pub mod errors;
pub mod ids;
pub mod paging;
pub mod resource;
pub mod settings;
pub mod validation;
