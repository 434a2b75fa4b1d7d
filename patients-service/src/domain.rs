//! Patients as the clinic understands them: validated values and the rules
//! they obey. No I/O and no protobuf here; the gRPC adapter turns requests
//! into these types (collecting every violation at once) and storage only
//! ever sees values that passed.

use chrono::{DateTime, NaiveDate, Utc};
pub use clinic_changes::ChangeKind;
use clinic_changes::watch::Sequenced;
pub use clinic_core::resource::Deletion;
use clinic_core::validation::fold;
use clinic_core::validation::{FieldViolation, Text, check_text, is_invisible};
pub use clinic_core::{
    ids::PatientId,
    resource::{Etag, RequestId, Stored},
};
use clinic_query::search::{Field, Kind, SortField, SortKind};
use email_address::{EmailAddress, Options};
use unicode_normalization::UnicodeNormalization;

/// Longest name, in characters, after trimming.
pub const MAX_NAME_CHARS: usize = 100;
/// Longest name field looked at, in bytes (100 four-byte characters and
/// generous surrounding white space).
pub const MAX_NAME_BYTES: usize = 1024;
/// Longest email address (RFC 5321's limit on a path).
pub const MAX_EMAIL_CHARS: usize = 254;
/// Earliest accepted birth date.
pub const MIN_BIRTH_DATE: NaiveDate = NaiveDate::from_ymd_opt(1900, 1, 1).expect("valid date");

/// A first or last name: trimmed, NFC-normalised, 1 to 100 characters of
/// letters (any script), spaces, apostrophes, hyphens and periods, with at
/// least one letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonName(String);

impl PersonName {
    /// Validates `raw` as the name in `field`.
    pub fn parse(raw: &str, field: &str) -> Result<Self, FieldViolation> {
        let raw = check_text(raw, field, MAX_NAME_BYTES, Text::Prose)?;
        // NFC first, so "José" typed with a combining accent counts and is
        // stored like the precomposed one.
        let name: String = raw.trim().nfc().collect();
        let chars = name.chars().count();
        if chars == 0 {
            return Err(FieldViolation::new(field, "is required"));
        }
        if chars > MAX_NAME_CHARS {
            return Err(FieldViolation::new(
                field,
                format!("must be at most {MAX_NAME_CHARS} characters, not {chars}"),
            ));
        }
        if let Some(bad) = name.chars().find(|c| !is_name_char(*c)) {
            return Err(FieldViolation::new(
                field,
                format!("may contain only letters, spaces, apostrophes, hyphens and periods, not {bad:?}"),
            ));
        }
        if !name.chars().any(|c| c.is_alphabetic()) {
            return Err(FieldViolation::new(field, "must contain at least one letter"));
        }
        Ok(Self(name))
    }

    /// A name read back from storage, which only holds valid ones.
    pub fn from_stored(name: String) -> Self {
        Self(name)
    }

    /// The name as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Letters (any script, but not the invisible ones such as the Hangul
/// filler U+3164 that Unicode counts as letters), and name punctuation.
fn is_name_char(c: char) -> bool {
    (c.is_alphabetic() && !is_invisible(c)) || matches!(c, ' ' | '\'' | '\u{2019}' | '-' | '.')
}

/// A date of birth between 1900-01-01 and today.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BirthDate(NaiveDate);

impl BirthDate {
    /// Validates `raw` (`YYYY-MM-DD`) against `today`, the latest date that is
    /// "today" anywhere on Earth, so a baby born this morning in Kiribati is
    /// not rejected for being born in the future.
    pub fn parse(raw: &str, today: NaiveDate, field: &str) -> Result<Self, FieldViolation> {
        let raw = check_text(raw, field, 64, Text::Prose)?.trim();
        if raw.is_empty() {
            return Err(FieldViolation::new(field, "is required"));
        }
        let well_formed = raw.len() == 10
            && raw.bytes().enumerate().all(
                |(i, b)| {
                    if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() }
                },
            );
        if !well_formed {
            return Err(FieldViolation::new(field, format!("must be a date as YYYY-MM-DD, not {raw:?}")));
        }
        let date = NaiveDate::parse_from_str(raw, "%Y-%m-%d")
            .map_err(|_| FieldViolation::new(field, format!("{raw} is not a real calendar date")))?;
        if date > today {
            return Err(FieldViolation::new(field, "must not be in the future"));
        }
        if date < MIN_BIRTH_DATE {
            return Err(FieldViolation::new(field, "must not be before 1900-01-01"));
        }
        Ok(Self(date))
    }

    /// A date read back from storage, which only holds valid ones.
    pub fn from_stored(date: NaiveDate) -> Self {
        Self(date)
    }

    /// The date.
    pub fn get(self) -> NaiveDate {
        self.0
    }
}

/// The latest calendar date anywhere on Earth (UTC+14) at `now`.
pub fn latest_today(now: DateTime<Utc>) -> NaiveDate {
    (now + chrono::Duration::hours(14)).date_naive()
}

/// A syntactically valid email address with a domain that has a top-level
/// part, stored as given (trimmed, NFC-normalised, so one address has one
/// spelling); uniqueness ignores case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// Validates `raw` as the address in `field`.
    pub fn parse(raw: &str, field: &str) -> Result<Self, FieldViolation> {
        let normalised: String = check_text(raw, field, MAX_NAME_BYTES, Text::Prose)?.trim().nfc().collect();
        let email = normalised.as_str();
        if email.is_empty() {
            return Err(FieldViolation::new(field, "is required"));
        }
        let chars = email.chars().count();
        if chars > MAX_EMAIL_CHARS {
            return Err(FieldViolation::new(
                field,
                format!("must be at most {MAX_EMAIL_CHARS} characters, not {chars}"),
            ));
        }
        let options = Options::default().with_required_tld().without_display_text().without_domain_literal();
        EmailAddress::parse_with_options(email, options)
            .map_err(|e| FieldViolation::new(field, format!("is not a valid email address ({e})")))?;
        Ok(Self(email.to_owned()))
    }

    /// An address read back from storage, which only holds valid ones.
    pub fn from_stored(email: String) -> Self {
        Self(email)
    }

    /// The address as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Most identifiers a patient carries.
pub const MAX_IDENTIFIERS: usize = 20;
/// Longest identifier value, in characters.
pub const MAX_IDENTIFIER_VALUE_CHARS: usize = 100;
/// Longest identifier system URI, in bytes.
pub const MAX_IDENTIFIER_SYSTEM_BYTES: usize = 255;

/// One identifier of a patient: a value under the system (an absolute URI)
/// that issued it, such as a medical record number under the clinic's URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identifier {
    /// Who issued it: an absolute URI.
    pub system: String,
    /// The value: 1 to 100 printable characters.
    pub value: String,
}

impl Identifier {
    /// Validates one identifier; `field` is its path (`patient.identifiers[0]`).
    pub fn parse(system: &str, value: &str, field: &str) -> Result<Self, FieldViolation> {
        let system_field = format!("{field}.system");
        let system = check_text(system, &system_field, MAX_IDENTIFIER_SYSTEM_BYTES, Text::Token)?.trim();
        if !is_absolute_uri(system) {
            return Err(FieldViolation::new(
                system_field,
                "must be an absolute URI without spaces or `|` (e.g. https://clinic.example/mrn or urn:oid:1.2.3)",
            ));
        }
        let value_field = format!("{field}.value");
        let value = check_text(value, &value_field, MAX_IDENTIFIER_VALUE_CHARS * 4, Text::Token)?.trim();
        let chars = value.chars().count();
        if chars == 0 {
            return Err(FieldViolation::new(value_field, "is required"));
        }
        if chars > MAX_IDENTIFIER_VALUE_CHARS {
            return Err(FieldViolation::new(
                value_field,
                format!("must be at most {MAX_IDENTIFIER_VALUE_CHARS} characters, not {chars}"),
            ));
        }
        if value.chars().any(|c| c.is_control() || is_invisible(c)) {
            return Err(FieldViolation::new(value_field, "must hold only printable characters"));
        }
        Ok(Self { system: system.to_owned(), value: value.to_owned() })
    }

    /// `system|value`: how it is stored and searched (a URI holds no `|`,
    /// so the first one separates the two).
    pub fn key(&self) -> String {
        format!("{}|{}", self.system, self.value)
    }

    /// An identifier read back from storage (`system|value`).
    pub fn from_key(key: &str) -> Self {
        let (system, value) = key.split_once('|').unwrap_or(("", key));
        Self { system: system.to_owned(), value: value.to_owned() }
    }
}

/// `scheme:rest` (RFC 3986), with no white space or `|` anywhere.
fn is_absolute_uri(uri: &str) -> bool {
    let Some((scheme, rest)) = uri.split_once(':') else { return false };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !rest.is_empty()
        && !uri.chars().any(|c| c.is_whitespace() || c == '|' || c.is_control())
}

/// A patient's identifiers, at most one per system and value, in the order
/// given.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identifiers(Vec<Identifier>);

impl Identifiers {
    /// Validates `(system, value)` pairs of `field` (`patient.identifiers`),
    /// recording every violation in `invalid`.
    pub fn parse<'a>(
        pairs: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
        field: &str,
        invalid: &mut clinic_core::validation::Invalid,
    ) -> Option<Self> {
        if pairs.len() > MAX_IDENTIFIERS {
            invalid
                .push(field, format!("may hold at most {MAX_IDENTIFIERS} identifiers, not {}", pairs.len()));
            return None;
        }
        let before = invalid.0.len();
        let mut list: Vec<Identifier> = Vec::with_capacity(pairs.len());
        for (i, (system, value)) in pairs.enumerate() {
            let at = format!("{field}[{i}]");
            if let Some(id) = invalid.check(Identifier::parse(system, value, &at)) {
                if list.contains(&id) {
                    invalid.push(at, "repeats an identifier listed before it");
                } else {
                    list.push(id);
                }
            }
        }
        (invalid.0.len() == before).then_some(Self(list))
    }

    /// Identifiers read back from storage.
    pub fn from_keys(keys: &[String]) -> Self {
        Self(keys.iter().map(|k| Identifier::from_key(k)).collect())
    }

    /// Each as stored: `system|value`.
    pub fn keys(&self) -> Vec<String> {
        self.0.iter().map(Identifier::key).collect()
    }

    /// The identifiers, in order.
    pub fn as_slice(&self) -> &[Identifier] {
        &self.0
    }
}

clinic_core::resource_fields! {
    /// A patient's own fields: what a create sets and what is stored.
    fields PatientFields;
    /// The fields an update changes; `None` leaves a field as it is.
    patch PatientPatch;
    /// The fields of a patient an update mask may name.
    field PatientField;
    {
        /// Given name(s).
        first_name: PersonName => FirstName,
        /// Family name(s).
        last_name: PersonName => LastName,
        /// Date of birth.
        birth_date: BirthDate => BirthDate,
        /// Email address.
        email: Email => Email,
        /// Identifiers (system and value), unique per pair among live patients.
        identifiers: Identifiers => Identifiers,
    }
}

/// A stored patient.
pub type Patient = Stored<PatientId, PatientFields>;

/// One kept version of a patient: revision *n* is the patient at etag *n*.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientRevision {
    /// Its number, from 1.
    pub revision: i64,
    /// What made it.
    pub kind: ChangeKind,
    /// When.
    pub time: DateTime<Utc>,
    /// Who: a token subject, or the service for its own work.
    pub actor: String,
    /// The patient as it left it.
    pub patient: Patient,
}

/// One entry of the patients' change feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientChange {
    /// Its place in the feed: from 1, no gaps, in commit order.
    pub sequence: i64,
    /// What happened.
    pub kind: ChangeKind,
    /// To whom.
    pub patient_id: PatientId,
    /// The revision it made (for a purge, the last one).
    pub revision: i64,
    /// When it was committed.
    pub commit_time: DateTime<Utc>,
    /// Who made it.
    pub actor: String,
    /// The patient after it; none once purged.
    pub patient: Option<Patient>,
}

impl Sequenced for PatientChange {
    fn sequence(&self) -> i64 {
        self.sequence
    }

    fn patient(&self) -> i64 {
        self.patient_id.get()
    }
}

/// What ListPatients' `filter` may name: names and emails by their folded
/// keys (case and accents ignored, `*` for a prefix), dates and times, an
/// identifier (`"system|value"`, exactly) and the id.
pub const FILTER_FIELDS: &[Field] = &[
    Field { name: "first_name", sql: "first_name_key", kind: Kind::Folded },
    Field { name: "last_name", sql: "last_name_key", kind: Kind::Folded },
    Field { name: "email", sql: "email_key", kind: Kind::Folded },
    Field { name: "birth_date", sql: "birth_date", kind: Kind::Date },
    Field { name: "create_time", sql: "create_time", kind: Kind::Timestamp },
    Field { name: "update_time", sql: "update_time", kind: Kind::Timestamp },
    Field { name: "identifier", sql: "identifiers", kind: Kind::Token },
    Field { name: "id", sql: "id", kind: Kind::Integer },
];

/// What ListPatients' `order_by` may name (names by their folded keys).
pub const SORT_FIELDS: &[SortField] = &[
    SortField { name: "last_name", sql: "last_name_key", kind: SortKind::Text },
    SortField { name: "first_name", sql: "first_name_key", kind: SortKind::Text },
    SortField { name: "birth_date", sql: "birth_date", kind: SortKind::Date },
    SortField { name: "create_time", sql: "create_time", kind: SortKind::Time },
    SortField { name: "update_time", sql: "update_time", kind: SortKind::Time },
    SortField { name: "id", sql: "id", kind: SortKind::Int },
];

/// The folded search keys of a patient's names and email, stored with the
/// patient (see [`fold`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchKeys {
    /// `fold(first_name)`.
    pub first_name: String,
    /// `fold(last_name)`.
    pub last_name: String,
    /// `fold(email)`.
    pub email: String,
}

impl SearchKeys {
    /// The keys of `fields`.
    pub fn of(fields: &PatientFields) -> Self {
        Self {
            first_name: fold(fields.first_name.as_str()),
            last_name: fold(fields.last_name.as_str()),
            email: fold(fields.email.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 27).unwrap()
    }

    #[test]
    fn names_accept_any_script_and_name_punctuation() {
        for ok in [
            "José",
            "Treviño",
            "O'Brien",
            "Diana Laura",
            "Del Toro",
            "Jean-Luc",
            "St. John",
            "Zoë",
            "王",
            "Łukasz",
            "O\u{2019}Neil",
        ] {
            assert!(PersonName::parse(ok, "f").is_ok(), "{ok}");
        }
    }

    #[test]
    fn names_are_trimmed_and_normalised() {
        assert_eq!(PersonName::parse("  Jose  ", "f").unwrap().as_str(), "Jose");
        let decomposed = "Jose\u{301}";
        assert_eq!(PersonName::parse(decomposed, "f").unwrap().as_str(), "José");
    }

    #[test]
    fn names_reject_empty_long_and_foreign_characters() {
        for bad in ["", "   ", "R2D2", "a_b", "<script>", "--", "x@y"] {
            assert!(PersonName::parse(bad, "f").is_err(), "{bad:?}");
        }
        assert!(PersonName::parse(&"a".repeat(100), "f").is_ok());
        assert!(PersonName::parse(&"a".repeat(101), "f").is_err());
        assert!(PersonName::parse(&"é".repeat(100), "f").is_ok(), "counts characters, not bytes");
    }

    #[test]
    fn invisible_and_control_characters_do_not_make_a_name() {
        for bad in [
            "\u{3164}",
            "\u{3164}\u{3164}",
            "\u{200B}",
            "A\u{200B}na",
            "\u{202E}ana",
            "Ana\0",
            "\u{115F}\u{1160}",
        ] {
            assert!(PersonName::parse(bad, "f").is_err(), "{bad:?}");
        }
        assert!(PersonName::parse(&"a".repeat(2000), "f").unwrap_err().description.contains("bytes"));
    }

    #[test]
    fn emails_are_stored_in_one_normal_form() {
        let decomposed = Email::parse("jose\u{301}@ejemplo.com", "e").unwrap();
        assert_eq!(decomposed.as_str(), "jos\u{e9}@ejemplo.com");
        assert!(Email::parse("a\0@b.com", "e").is_err());
    }

    #[test]
    fn birth_dates_must_be_real_past_and_after_1900() {
        assert!(BirthDate::parse("1955-04-10", today(), "b").is_ok());
        assert!(BirthDate::parse("1900-01-01", today(), "b").is_ok());
        assert!(BirthDate::parse("2026-11-27", today(), "b").is_ok());
        for bad in [
            "",
            "1955-4-10",
            "10/04/1955",
            "1955-02-30",
            "2023-02-29",
            "1899-12-31",
            "2026-11-28",
            "19550410",
            "1955-04-10T00:00",
        ] {
            assert!(BirthDate::parse(bad, today(), "b").is_err(), "{bad:?}");
        }
        assert!(BirthDate::parse("2024-02-29", today(), "b").is_ok(), "leap day");
    }

    #[test]
    fn latest_today_is_ahead_of_utc() {
        let now = DateTime::parse_from_rfc3339("2026-11-27T12:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(latest_today(now), NaiveDate::from_ymd_opt(2026, 11, 28).unwrap());
    }

    #[test]
    fn emails_must_be_valid_addresses() {
        for ok in ["pepe@ejemplo.com", "Pepe.Perez+x@Ejemplo.COM", "a@b.co"] {
            assert!(Email::parse(ok, "e").is_ok(), "{ok}");
        }
        for bad in [
            "",
            "pepe",
            "pepe@",
            "@ejemplo.com",
            "pepe@localhost",
            "Pepe <pepe@ejemplo.com>",
            "a b@c.com",
            "pepe@@ejemplo.com",
        ] {
            assert!(Email::parse(bad, "e").is_err(), "{bad:?}");
        }
    }
}
