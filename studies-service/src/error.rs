//! What can go wrong in studies-service: only the failures every service
//! shares, mapped to statuses once in `clinic_pg::api_error`.

pub use clinic_pg::api_error::ApiError as Error;

/// Result of studies operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
