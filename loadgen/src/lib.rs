//! The instruments `clinic-bench` measures with, apart from what it
//! measures: the load generator, where the CPU went, and pgbench as the
//! physical baseline on the same tables.
//!
//! # Layout
//! - [`load`]: one rpc at a fixed concurrency for a fixed time over several
//!   HTTP/2 connections, latencies in an HDR histogram.
//! - [`cpu`]: the cores each process group used during a scenario.
//! - [`pgbench`]: pgbench with the services' statements, prepared.

pub mod cpu;
pub mod load;
pub mod pgbench;
