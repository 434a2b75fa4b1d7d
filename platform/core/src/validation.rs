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

/// Most violations one response reports: the rest are counted, not listed,
/// so a hostile request cannot make a huge error.
pub const MAX_VIOLATIONS: usize = 20;

/// Which control characters a text field may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Text {
    /// None at all (keys, tags, tokens).
    Token,
    /// Tabs and line breaks, which trimming or the field's own rules then
    /// judge (names and emails lose surrounding ones; descriptions keep
    /// them); other controls not.
    Prose,
}

/// Checks the cheap, universal rules of a text field before any other work:
/// at most `max_bytes` bytes (so a huge value costs nothing more), no NUL
/// or other control characters (Postgres refuses NUL; controls corrupt logs
/// and screens), and no bidirectional overrides or isolates, which make a
/// text display as something other than what it is.
pub fn check_text<'a>(
    raw: &'a str,
    field: &str,
    max_bytes: usize,
    kind: Text,
) -> Result<&'a str, FieldViolation> {
    if raw.len() > max_bytes {
        return Err(FieldViolation::new(
            field,
            format!("must be at most {max_bytes} bytes, not {}", raw.len()),
        ));
    }
    let allowed = |c: char| kind == Text::Prose && matches!(c, '\t' | '\n' | '\r');
    if let Some(bad) = raw.chars().find(|c| (c.is_control() && !allowed(*c)) || is_bidi_control(*c)) {
        return Err(FieldViolation::new(
            field,
            format!("must not contain control characters such as U+{:04X}", u32::from(bad)),
        ));
    }
    Ok(raw)
}

/// Unicode's default-ignorable code points: characters that display as
/// nothing (zero-width spaces and joiners, Hangul fillers, variation
/// selectors, tags, bidi controls), so a value made of them looks empty.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFF8}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// Unicode's explicit bidirectional formatting characters (embeddings,
/// overrides, isolates): the "Trojan Source" characters.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
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

/// `text` as search compares it: decomposed (NFKD), without combining
/// marks, lower-cased, so "JOSÉ", "jose" and "José" (with a combining
/// accent) are all "jose". Stored next to names and emails as their search
/// keys, and applied to the values a filter compares them with.
pub fn fold(text: &str) -> String {
    use unicode_normalization::{UnicodeNormalization, char::is_combining_mark};
    text.nfkd().filter(|c| !is_combining_mark(*c)).flat_map(char::to_lowercase).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_ignores_case_accents_and_how_they_are_encoded() {
        assert_eq!(fold("JOSÉ"), "jose");
        assert_eq!(fold("Jose\u{301}"), "jose");
        assert_eq!(fold("Treviño"), "trevino");
        assert_eq!(fold("ÅNGSTRÖM"), "angstrom");
        assert_eq!(fold("王 😀"), "王 😀");
    }

    #[test]
    fn text_is_bounded_before_anything_else() {
        let long = "\0".repeat(11);
        let err = check_text(&long, "f", 10, Text::Token).unwrap_err();
        assert!(err.description.contains("at most 10 bytes"), "{err:?}");
    }

    #[test]
    fn text_refuses_controls_and_bidi_overrides() {
        for bad in ["a\0b", "a\u{7}", "a\u{1b}[31m", "abc\u{202E}fed", "x\u{2066}y"] {
            assert!(check_text(bad, "f", 100, Text::Prose).is_err(), "{bad:?}");
        }
        assert!(check_text("line\nnext\tcell", "f", 100, Text::Prose).is_ok());
        assert!(check_text("line\nnext", "f", 100, Text::Token).is_err());
        assert!(check_text("José Treviño 王 😀", "f", 100, Text::Token).is_ok());
    }

    #[test]
    fn fillers_and_zero_widths_are_invisible_letters_are_not() {
        for c in ['\u{3164}', '\u{200B}', '\u{FEFF}', '\u{115F}', '\u{E0041}'] {
            assert!(is_invisible(c), "{c:?}");
        }
        for c in ['a', 'é', '王', ' ', '-'] {
            assert!(!is_invisible(c), "{c:?}");
        }
    }
}
