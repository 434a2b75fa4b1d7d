//! Hosting a Clinic process: the HTTP/2 server with health, reflection and
//! the layers in front of every rpc, graceful shutdown, and the `main` of
//! every service binary (serve, or `migrate` as the schema's owner).
//!
//! # Layout
//! - [`health`]: the `grpc.health.v1.Health` state of a process.
//! - [`public`]: routes answered without a token before any layer (the
//!   JWKS; a process may add its own).
//! - [`server`]: serving routes behind the layers, draining on shutdown.
//! - [`service`]: a service's shared configuration, serving with a
//!   database, and every binary's `main`.

pub mod health;
pub mod public;
pub mod server;
pub mod service;
