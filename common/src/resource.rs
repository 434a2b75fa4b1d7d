//! What every resource-owning service shares: idempotency keys, etags,
//! update masks and timestamps. Pure values, no I/O.

use chrono::{DateTime, Utc};

use crate::validation::{FieldViolation, Invalid};

/// Longest idempotency key.
pub const MAX_REQUEST_ID_CHARS: usize = 128;

/// Fields of every resource that only the server sets.
pub const OUTPUT_ONLY_FIELDS: [&str; 4] = ["id", "create_time", "update_time", "etag"];

/// An idempotency key of a create: non-empty, at most 128 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// `None` for an empty key (no idempotency asked for).
    pub fn parse(raw: &str, field: &str) -> Result<Option<Self>, FieldViolation> {
        let chars = raw.chars().count();
        if raw.is_empty() {
            Ok(None)
        } else if chars > MAX_REQUEST_ID_CHARS {
            Err(FieldViolation::new(
                field,
                format!("must be at most {MAX_REQUEST_ID_CHARS} characters, not {chars}"),
            ))
        } else {
            Ok(Some(Self(raw.to_owned())))
        }
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An opaque version tag. A non-empty etag sent back must equal the current
/// one for a write to go ahead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Etag(String);

impl Etag {
    /// `None` for an empty etag (no precondition).
    pub fn from_request(raw: &str) -> Option<Self> {
        (!raw.is_empty()).then(|| Self(raw.to_owned()))
    }

    /// The etag of a stored version.
    pub fn of_version(version: i64) -> Self {
        Self(version.to_string())
    }

    /// The tag.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Parses an update mask: each path must name one of `updatable` (API name,
/// value) once; output-only and unknown paths are violations of `field`.
pub fn parse_update_mask<F: Copy + PartialEq>(
    paths: &[String],
    field: &str,
    updatable: &[(&'static str, F)],
) -> Result<Vec<F>, Invalid> {
    let mut invalid = Invalid::default();
    let mut fields = Vec::with_capacity(paths.len());
    for path in paths {
        let path = path.trim();
        match updatable.iter().find(|(name, _)| *name == path) {
            Some((_, f)) if !fields.contains(f) => fields.push(*f),
            Some(_) => {}
            None if OUTPUT_ONLY_FIELDS.contains(&path) => {
                invalid.push(field, format!("{path:?} is output only and cannot be updated"))
            }
            None => {
                let names: Vec<_> = updatable.iter().map(|(name, _)| *name).collect();
                invalid.push(
                    field,
                    format!("unknown field path {path:?}; updatable fields are {}", names.join(", ")),
                )
            }
        }
    }
    invalid.finish(|| fields)
}

/// The fields an update changes: those `paths` names, or, when the mask is
/// empty, every field `is_set` in the request message (the contract's rule).
/// Broken paths, or nothing to update, are recorded in `invalid` against
/// `field` (the mask's path in the request).
pub fn fields_to_update<F: Copy + PartialEq>(
    paths: &[String],
    field: &str,
    updatable: &[(&'static str, F)],
    is_set: impl Fn(F) -> bool,
    invalid: &mut Invalid,
) -> Vec<F> {
    if !paths.is_empty() {
        return parse_update_mask(paths, field, updatable).unwrap_or_else(|mask| {
            invalid.0.extend(mask.0);
            Vec::new()
        });
    }
    let fields: Vec<F> = updatable.iter().map(|(_, f)| *f).filter(|f| is_set(*f)).collect();
    if fields.is_empty() {
        invalid.push(field, "names no field to update: list paths in update_mask or set at least one field");
    }
    fields
}

/// A protobuf timestamp.
pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_optional_and_bounded() {
        assert_eq!(RequestId::parse("", "r"), Ok(None));
        assert!(RequestId::parse("abc", "r").unwrap().is_some());
        assert!(RequestId::parse(&"x".repeat(129), "r").is_err());
    }

    #[test]
    fn an_empty_mask_means_every_set_field_and_nothing_set_is_invalid() {
        let updatable = [("a", 1), ("b", 2), ("c", 3)];
        let mut invalid = Invalid::default();
        assert_eq!(fields_to_update(&[], "m", &updatable, |f| f != 2, &mut invalid), vec![1, 3]);
        assert!(invalid.0.is_empty());
        assert!(fields_to_update(&[], "m", &updatable, |_| false, &mut invalid).is_empty());
        assert_eq!(invalid.0[0].field, "m");
    }

    #[test]
    fn update_masks_accept_each_field_once_and_reject_the_rest() {
        let paths = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let updatable = [("a", 1), ("b", 2)];
        assert_eq!(parse_update_mask(&paths(&["b", "a", "b"]), "m", &updatable).unwrap(), vec![2, 1]);
        let err = parse_update_mask(&paths(&["id", "c"]), "m", &updatable).unwrap_err();
        assert!(err.0[0].description.contains("output only"));
        assert!(err.0[1].description.contains("updatable fields are a, b"));
    }
}
