//! gateway: the listing view of patients with their studies. It holds no
//! data; it asks patients-service for a page of patients and studies-service
//! for the studies of that whole page, and joins them.
//!
//! It is also where the system answers health and reflection through Envoy:
//! its reflection lists every public service of Clinic, and its health
//! mirrors each service's (see [`health`]).
//!
//! # Layout
//! - [`config`]: every setting, declared once.
//! - [`audit`]: AuditService for both services' trails at once.
//! - [`startup`]: building and running the gateway.
//! - [`listing`]: which patients a listing page shows and the calls that
//!   find them (the patients-first walk for `study_filter`), behind a trait.
//! - [`view`]: the join of patients and studies (no I/O).
//! - [`downstream`]: the clients of patients-service and studies-service.
//! - [`grpc`]: the GatewayService adapter.
//! - [`error`]: the gateway's error type and its one mapping to gRPC statuses.
//! - [`health`]: the system's health, mirrored from each service.
//! - [`site`]: the listing page's static files.

pub mod audit;
pub mod config;
pub mod downstream;
pub mod error;
pub mod grpc;
pub mod health;
pub mod listing;
pub mod site;
pub mod startup;
pub mod view;

pub use config::Config;
pub use startup::Application;
