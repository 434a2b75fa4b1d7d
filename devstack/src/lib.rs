//! clinic-dev: runs Clinic on one machine, the way `make up` does, and the
//! chores around it.
//!
//! # Layout
//! - [`stack`]: `up`: PostgreSQL, the three services and Envoy, supervised.
//! - [`postgres`]: the local database (a kept private cluster, or `DATABASE_URL`).
//! - [`ports`]: where every process of the stack listens.
//! - [`envoy`]: Envoy's configuration rendered from `envoy/envoy.yaml.tmpl`.
//! - [`credentials`]: the development signing key, JWKS, tokens and TLS certificates.
//! - [`import`]: loading patients and studies from CSV through the API.

pub mod credentials;
pub mod envoy;
pub mod import;
pub mod ports;
pub mod postgres;
pub mod stack;
