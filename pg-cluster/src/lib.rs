//! Real PostgreSQL with nothing installed or running beforehand: a private
//! throwaway cluster from the machine's server binaries, and the roles and
//! schemas each Clinic service expects, provisioned as production does. The
//! dev tool (`clinic-dev up`) and the test kit both run on it.
//!
//! # Layout
//! - [`cluster`]: finding the binaries, starting, stopping and reaping a
//!   cluster (TLS on, as production connects).
//! - [`provision`]: the owner and runtime roles and the schemas of each
//!   service.

pub mod cluster;
pub mod provision;

pub use cluster::PgCluster;
pub use provision::ServiceRole;
