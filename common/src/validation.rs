//! Field violations: how domain code says which input fields break which rule.
//!
//! Domain modules have no I/O and know nothing about gRPC; they return
//! [`Invalid`], which the gRPC adapters turn into `INVALID_ARGUMENT` with a
//! `google.rpc.BadRequest` (see [`crate::errors::invalid_fields`]).

use std::fmt;

/// One input field that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field in the request, dot-separated (`patient.email`).
    pub field: String,
    /// Human-readable reason, lowercase, without a trailing period.
    pub description: String,
}

impl FieldViolation {
    /// A violation of `field` for `description`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self { field: field.into(), description: description.into() }
    }
}

/// Input rejected by validation: every broken field at once, so a client can
/// fix them all in one round trip.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Invalid(pub Vec<FieldViolation>);

impl Invalid {
    /// Records a violation.
    pub fn push(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// A rejection for a single field.
    pub fn one(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self(vec![FieldViolation::new(field, description)])
    }

    /// Collects the error of `result` into `self`, returning its value if any.
    pub fn check<T>(&mut self, result: Result<T, FieldViolation>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(violation) => {
                self.0.push(violation);
                None
            }
        }
    }

    /// `Ok(value)` if nothing was recorded, otherwise `Err(self)`.
    pub fn finish<T>(self, value: impl FnOnce() -> T) -> Result<T, Invalid> {
        if self.0.is_empty() { Ok(value()) } else { Err(self) }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fields: Vec<_> = self.0.iter().map(|v| v.field.as_str()).collect();
        write!(f, "invalid fields: {}", fields.join(", "))
    }
}

impl std::error::Error for Invalid {}

impl From<FieldViolation> for Invalid {
    fn from(violation: FieldViolation) -> Self {
        Self(vec![violation])
    }
}
