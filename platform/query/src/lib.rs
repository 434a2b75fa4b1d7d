//! The query language of Clinic's lists: AIP-160 filters parsed once with
//! positions and limits, turned into parameterised SQL with AIP-132 orders
//! and keyset cursors that never skip or repeat under any order.
//!
//! # Layout
//! - [`filter`]: the filter language, parsed into a tree (no SQL).
//! - [`search`]: a service's field table, filters and orders as SQL, keyset
//!   cursors, and the bound on searches no index can narrow.

pub mod filter;
pub mod search;
