//! Server-assigned ids: one positive-id type for every kind of resource.
//!
//! `Id<Patient>` and `Id<Study>` are distinct types, so a study id can never
//! be passed where a patient id is expected, yet the rule (positive, never
//! reused) and its error message are written once.

use std::{fmt, hash::Hash, marker::PhantomData};

use crate::validation::FieldViolation;

/// A kind of resource that has ids.
pub trait Kind: 'static {
    /// The resource's name in messages (`patient`, `study`).
    const NOUN: &'static str;
}

/// Marker of patient ids.
#[derive(Debug)]
pub enum Patient {}

impl Kind for Patient {
    const NOUN: &'static str = "patient";
}

/// Marker of study ids.
#[derive(Debug)]
pub enum Study {}

impl Kind for Study {
    const NOUN: &'static str = "study";
}

/// The id of a patient, owned by patients-service.
pub type PatientId = Id<Patient>;
/// The id of a study, owned by studies-service.
pub type StudyId = Id<Study>;

/// A positive id of a `K`.
pub struct Id<K: Kind>(i64, PhantomData<fn() -> K>);

impl<K: Kind> Id<K> {
    /// Parses the id in `field`: it must be positive.
    pub fn parse(raw: i64, field: &str) -> Result<Self, FieldViolation> {
        if raw > 0 {
            Ok(Self(raw, PhantomData))
        } else {
            Err(FieldViolation::new(field, format!("must be a positive {} id", K::NOUN)))
        }
    }

    /// An id read back from storage or a trusted peer, which only hold valid ones.
    pub fn from_stored(raw: i64) -> Self {
        Self(raw, PhantomData)
    }

    /// The raw value.
    pub fn get(self) -> i64 {
        self.0
    }
}

impl<K: Kind> Clone for Id<K> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K: Kind> Copy for Id<K> {}
impl<K: Kind> PartialEq for Id<K> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl<K: Kind> Eq for Id<K> {}
impl<K: Kind> PartialOrd for Id<K> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<K: Kind> Ord for Id<K> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}
impl<K: Kind> Hash for Id<K> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}
impl<K: Kind> fmt::Debug for Id<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", K::NOUN, self.0)
    }
}
impl<K: Kind> fmt::Display for Id<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_positive_and_name_their_kind() {
        assert_eq!(PatientId::parse(7, "id").unwrap().get(), 7);
        assert_eq!(PatientId::parse(0, "id").unwrap_err().description, "must be a positive patient id");
        assert_eq!(StudyId::parse(-1, "id").unwrap_err().description, "must be a positive study id");
    }
}
