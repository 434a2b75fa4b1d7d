//! What every resource-owning service shares: idempotency keys, etags,
//! update masks and timestamps. Pure values, no I/O.

use chrono::{DateTime, Utc};

use crate::validation::{FieldViolation, Invalid, Text, check_text};

/// Longest idempotency key, in characters.
pub const MAX_REQUEST_ID_CHARS: usize = 128;
/// Longest etag a request may carry, in bytes (ours are short numbers).
pub const MAX_ETAG_BYTES: usize = 64;

/// Fields of every resource that only the server sets.
pub const OUTPUT_ONLY_FIELDS: [&str; 4] = ["id", "create_time", "update_time", "etag"];

/// An idempotency key of a create: non-empty, at most 128 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// `None` for an empty key (no idempotency asked for).
    pub fn parse(raw: &str, field: &str) -> Result<Option<Self>, FieldViolation> {
        let raw = check_text(raw, field, MAX_REQUEST_ID_CHARS * 4, Text::Token)?;
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
    /// The etag a request sent in `field`: `None` when empty (no
    /// precondition); refused when too long or holding control characters.
    pub fn parse(raw: &str, field: &str) -> Result<Option<Self>, FieldViolation> {
        let raw = check_text(raw, field, MAX_ETAG_BYTES, Text::Token)?;
        Ok((!raw.is_empty()).then(|| Self(raw.to_owned())))
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

/// An enum whose values have stable names: a resource's updatable fields
/// (their API and column names), a stored vocabulary. Declared with
/// [`named_enum!`](crate::named_enum).
pub trait Named: Copy + PartialEq + 'static {
    /// Every value, in declaration order.
    const ALL: &'static [Self];
    /// The value's stable name.
    fn name(self) -> &'static str;
}

/// Declares an enum whose values have stable names: `ALL`, `name()`,
/// `from_name()` and [`Named`](crate::resource::Named), from one list.
#[macro_export]
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// Every value's stable name, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($text,)+];

            /// The stable name.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The value with stable name `name`.
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl $crate::resource::Named for $name {
            const ALL: &'static [Self] = $name::ALL;
            fn name(self) -> &'static str {
                $name::name(self)
            }
        }
    };
}

/// Declares, from one list of a resource's writable fields, their values
/// (`fields`: what a create sets and what is stored), the changes of an
/// update (`patch`, each field optional) and the fields an update mask may
/// name (`field`, a [`Named`] enum whose names are the fields' own), so the
/// three can never disagree.
#[macro_export]
macro_rules! resource_fields {
    (
        $(#[$new_meta:meta])* fields $new:ident;
        $(#[$patch_meta:meta])* patch $patch:ident;
        $(#[$field_meta:meta])* field $field:ident;
        { $( $(#[$doc:meta])* $name:ident: $ty:ty => $variant:ident ),+ $(,)? }
    ) => {
        $(#[$new_meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $new {
            $( $(#[$doc])* pub $name: $ty, )+
        }

        $(#[$patch_meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct $patch {
            $( $(#[$doc])* pub $name: Option<$ty>, )+
        }

        $(#[$field_meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $field {
            $( #[doc = concat!("`", stringify!($name), "`")] $variant, )+
        }

        impl $field {
            /// Every field, in declaration order.
            pub const ALL: &'static [$field] = &[$($field::$variant,)+];

            /// The field's name in the API and its column.
            pub fn name(self) -> &'static str {
                match self {
                    $($field::$variant => stringify!($name),)+
                }
            }
        }

        impl $crate::resource::Named for $field {
            const ALL: &'static [Self] = $field::ALL;
            fn name(self) -> &'static str {
                $field::name(self)
            }
        }
    };
}

/// Parses an update mask: each path must name one of the updatable fields
/// `F` once; output-only and unknown paths are violations of `field`.
pub fn parse_update_mask<F: Named>(paths: &[String], field: &str) -> Result<Vec<F>, Invalid> {
    let mut invalid = Invalid::default();
    let mut fields = Vec::with_capacity(paths.len());
    for path in paths {
        let path = path.trim();
        match F::ALL.iter().find(|f| f.name() == path) {
            Some(f) if !fields.contains(f) => fields.push(*f),
            Some(_) => {}
            None if OUTPUT_ONLY_FIELDS.contains(&path) => {
                invalid.push(field, format!("{path:?} is output only and cannot be updated"))
            }
            None => {
                let names: Vec<_> = F::ALL.iter().map(|f| f.name()).collect();
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
pub fn fields_to_update<F: Named>(
    paths: &[String],
    field: &str,
    is_set: impl Fn(F) -> bool,
    invalid: &mut Invalid,
) -> Vec<F> {
    if !paths.is_empty() {
        return parse_update_mask(paths, field).unwrap_or_else(|mask| {
            invalid.0.extend(mask.0);
            Vec::new()
        });
    }
    let fields: Vec<F> = F::ALL.iter().copied().filter(|f| is_set(*f)).collect();
    if fields.is_empty() {
        invalid.push(field, "names no field to update: list paths in update_mask or set at least one field");
    }
    fields
}

/// A resource as stored: its server-assigned id, its fields, and what the
/// server keeps about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored<I, T> {
    /// Server-assigned id.
    pub id: I,
    /// The resource's own fields.
    pub fields: T,
    /// When it was created.
    pub create_time: DateTime<Utc>,
    /// When it last changed.
    pub update_time: DateTime<Utc>,
    /// The current version tag.
    pub etag: Etag,
    /// Set while it is deleted: kept, hidden unless asked for, until its
    /// retention ends (AIP-164).
    pub deleted: Option<Deletion>,
}

/// When a resource was deleted and when it will be purged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deletion {
    /// When it was deleted.
    pub delete_time: DateTime<Utc>,
    /// When it will be purged: the delete time plus the retention.
    pub expire_time: DateTime<Utc>,
}

impl Deletion {
    /// The deletion stored as these two columns (both set or neither).
    pub fn from_stored(
        delete_time: Option<DateTime<Utc>>,
        expire_time: Option<DateTime<Utc>>,
    ) -> Option<Self> {
        Some(Self { delete_time: delete_time?, expire_time: expire_time? })
    }
}

/// The time a protobuf timestamp names, if it is one (set, and in range).
pub fn from_timestamp(t: Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    t.and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?))
}

/// A protobuf timestamp.
pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_optional_bounded_and_printable() {
        assert_eq!(RequestId::parse("", "r"), Ok(None));
        assert!(RequestId::parse("abc", "r").unwrap().is_some());
        assert!(RequestId::parse(&"x".repeat(129), "r").is_err());
        assert!(RequestId::parse("a\0b", "r").is_err());
    }

    #[test]
    fn etags_are_optional_and_short() {
        assert_eq!(Etag::parse("", "e"), Ok(None));
        assert_eq!(Etag::parse("3", "e").unwrap().unwrap().as_str(), "3");
        assert!(Etag::parse(&"9".repeat(65), "e").is_err());
        assert!(Etag::parse("1\0", "e").is_err());
    }

    crate::named_enum! {
        /// Fields of a test resource.
        Field {
            /// a
            A = "a",
            /// b
            B = "b",
            /// c
            C = "c",
        }
    }

    #[test]
    fn an_empty_mask_means_every_set_field_and_nothing_set_is_invalid() {
        let mut invalid = Invalid::default();
        assert_eq!(
            fields_to_update(&[], "m", |f: Field| f != Field::B, &mut invalid),
            vec![Field::A, Field::C]
        );
        assert!(invalid.0.is_empty());
        assert!(fields_to_update::<Field>(&[], "m", |_| false, &mut invalid).is_empty());
        assert_eq!(invalid.0[0].field, "m");
        assert_eq!(Field::NAMES, ["a", "b", "c"]);
    }

    #[test]
    fn named_enums_round_trip_their_names() {
        assert_eq!(Field::from_name("b"), Some(Field::B));
        assert_eq!(Field::from_name("B"), None);
        assert!(Field::ALL.iter().all(|f| Field::from_name(f.name()) == Some(*f)));
    }

    #[test]
    fn update_masks_accept_each_field_once_and_reject_the_rest() {
        let paths = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse_update_mask::<Field>(&paths(&["b", "a", "b"]), "m").unwrap(),
            vec![Field::B, Field::A]
        );
        let err = parse_update_mask::<Field>(&paths(&["id", "x"]), "m").unwrap_err();
        assert!(err.0[0].description.contains("output only"));
        assert!(err.0[1].description.contains("updatable fields are a, b, c"));
    }
}
