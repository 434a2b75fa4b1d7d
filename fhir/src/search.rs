//! FHIR search parameters as the services' AIP-160 filters, AIP-132 orders
//! and page tokens. No I/O. An unknown parameter, modifier or prefix is
//! refused (400) unless the client asked for `Prefer: handling=lenient`;
//! then it is left out of the `self` link, which says what was applied.

use chrono::{Months, NaiveDate};

use crate::{model, outcome::Outcome};

/// The largest page (`_count`), as the services' `page_size`.
pub const MAX_COUNT: i32 = 1000;
/// The parameter carrying the services' page token in `next` links.
pub const PAGE_TOKEN: &str = "_page_token";

/// A search as the services run it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Search {
    /// The AIP-160 filter.
    pub filter: String,
    /// The AIP-132 order.
    pub order_by: String,
    /// `_count`; 0: the services' default.
    pub page_size: i32,
    /// Where to continue (from a `next` link).
    pub page_token: String,
    /// Patients: `_revinclude=ImagingStudy:subject`. Studies:
    /// `_include=ImagingStudy:subject`.
    pub include: bool,
    /// The parameters applied, for the `self` and `next` links.
    pub applied: Vec<(String, String)>,
}

/// A double-quoted filter literal.
fn quote(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `a OR b ...` over the comma-separated values of one parameter.
fn any_of(values: &str, each: impl Fn(&str) -> Result<String, Outcome>) -> Result<String, Outcome> {
    let parts = values.split(',').map(|v| each(v.trim())).collect::<Result<Vec<_>, _>>()?;
    Ok(if parts.len() == 1 {
        parts.into_iter().next().unwrap_or_default()
    } else {
        format!("({})", parts.join(" OR "))
    })
}

fn id_value(value: &str, name: &str) -> Result<i64, Outcome> {
    model::patient_reference(value).ok_or_else(|| {
        Outcome::invalid(name, format!("{name} takes ids (positive whole numbers), not {value:?}"))
    })
}

/// `birthdate` with its prefix: the range its (possibly partial) date
/// covers, compared as FHIR says.
fn birthdate(value: &str) -> Result<String, Outcome> {
    let (prefix, date) = match value.get(..2) {
        Some(p @ ("eq" | "ne" | "lt" | "gt" | "le" | "ge")) => (p, &value[2..]),
        Some(p) if p.chars().all(|c| c.is_ascii_lowercase()) => {
            return Err(Outcome::invalid(
                "birthdate",
                format!("prefix {p:?} is not supported (eq ne lt gt le ge)"),
            ));
        }
        _ => ("eq", value),
    };
    let bad =
        || Outcome::invalid("birthdate", format!("{date:?} is not a date (YYYY, YYYY-MM or YYYY-MM-DD)"));
    let (start, end) = match date.len() {
        4 => {
            let start = NaiveDate::parse_from_str(&format!("{date}-01-01"), "%Y-%m-%d").map_err(|_| bad())?;
            (start, start.checked_add_months(Months::new(12)).ok_or_else(bad)?)
        }
        7 => {
            let start = NaiveDate::parse_from_str(&format!("{date}-01"), "%Y-%m-%d").map_err(|_| bad())?;
            (start, start.checked_add_months(Months::new(1)).ok_or_else(bad)?)
        }
        10 => {
            let day = NaiveDate::parse_from_str(date, "%Y-%m-%d").map_err(|_| bad())?;
            (day, day.succ_opt().ok_or_else(bad)?)
        }
        _ => return Err(bad()),
    };
    let (start, end) = (quote(&start.to_string()), quote(&end.to_string()));
    Ok(match prefix {
        "eq" => format!("(birth_date >= {start} AND birth_date < {end})"),
        "ne" => format!("(birth_date < {start} OR birth_date >= {end})"),
        "lt" => format!("birth_date < {start}"),
        "le" => format!("birth_date < {end}"),
        "gt" => format!("birth_date >= {end}"),
        _ => format!("birth_date >= {start}"),
    })
}

/// `_count`.
fn count(value: &str) -> Result<i32, Outcome> {
    match value.parse::<i32>() {
        Ok(n) if n >= 1 => Ok(n.min(MAX_COUNT)),
        _ => Err(Outcome::invalid(
            "_count",
            format!("_count must be a whole number from 1 (at most {MAX_COUNT} are sent)"),
        )),
    }
}

/// `_sort` over `keys` (FHIR name → the services' field).
fn sort(value: &str, keys: &[(&str, &str)]) -> Result<String, Outcome> {
    let mut order = Vec::new();
    for key in value.split(',').map(str::trim) {
        let (name, desc) = key.strip_prefix('-').map_or((key, false), |k| (k, true));
        let Some((_, field)) = keys.iter().find(|(fhir, _)| *fhir == name) else {
            let known: Vec<&str> = keys.iter().map(|(k, _)| *k).collect();
            return Err(Outcome::invalid(
                "_sort",
                format!("cannot sort by {name:?} (by: {})", known.join(", ")),
            ));
        };
        order.push(if desc { format!("{field} desc") } else { (*field).to_owned() });
    }
    Ok(order.join(", "))
}

/// Parameters every search takes the same way; `Ok(true)` when `name` was one.
fn common(search: &mut Search, name: &str, value: &str) -> Result<bool, Outcome> {
    match name {
        "_count" => search.page_size = count(value)?,
        PAGE_TOKEN => search.page_token = value.to_owned(),
        "_format" if matches!(value, "json" | "application/fhir+json" | "application/json") => {}
        _ => return Ok(false),
    }
    Ok(true)
}

/// Refuses `name` unless `lenient`.
fn unknown(name: &str, lenient: bool, known: &str) -> Result<(), Outcome> {
    if lenient {
        return Ok(());
    }
    Err(Outcome::invalid(
        name,
        format!(
            "unknown or unsupported search parameter {name:?} (supported: {known}); send Prefer: handling=lenient to ignore it"
        ),
    ))
}

/// A Patient search.
pub fn patients(params: &[(String, String)], lenient: bool) -> Result<Search, Outcome> {
    const KNOWN: &str = "_id, identifier, family, given, name, birthdate, email, _count, _sort, _revinclude=ImagingStudy:subject";
    let mut search = Search::default();
    let mut filters = Vec::new();
    for (name, value) in params {
        let mut known = true;
        match name.as_str() {
            "_id" => filters.push(any_of(value, |v| Ok(format!("id = {}", id_value(v, "_id")?)))?),
            "identifier" => filters.push(any_of(value, |v| {
                if !v.contains('|') || v.starts_with('|') || v.ends_with('|') {
                    return Err(Outcome::invalid("identifier", "identifier takes system|value"));
                }
                Ok(format!("identifier = {}", quote(v)))
            })?),
            "family" => {
                filters.push(any_of(value, |v| Ok(format!("last_name = {}", quote(&format!("{v}*")))))?)
            }
            "given" => {
                filters.push(any_of(value, |v| Ok(format!("first_name = {}", quote(&format!("{v}*")))))?)
            }
            "name" => filters.push(any_of(value, |v| {
                let prefix = quote(&format!("{v}*"));
                Ok(format!("(last_name = {prefix} OR first_name = {prefix})"))
            })?),
            "birthdate" => filters.push(birthdate(value)?),
            "email" => filters.push(any_of(value, |v| Ok(format!("email = {}", quote(v))))?),
            "_sort" => {
                search.order_by = sort(
                    value,
                    &[
                        ("family", "last_name"),
                        ("given", "first_name"),
                        ("birthdate", "birth_date"),
                        ("_lastUpdated", "update_time"),
                        ("_id", "id"),
                    ],
                )?
            }
            "_revinclude" if matches!(value.as_str(), "ImagingStudy:subject" | "ImagingStudy:patient") => {
                search.include = true
            }
            _ => known = common(&mut search, name, value)?,
        }
        if known {
            search.applied.push((name.clone(), value.clone()));
        } else {
            unknown(name, lenient, KNOWN)?;
        }
    }
    search.filter = filters.join(" AND ");
    Ok(search)
}

/// An ImagingStudy search.
pub fn studies(params: &[(String, String)], lenient: bool) -> Result<Search, Outcome> {
    const KNOWN: &str = "_id, subject, patient, modality, identifier, _count, _sort=_lastUpdated, _include=ImagingStudy:subject";
    let mut search = Search::default();
    let mut filters = Vec::new();
    for (name, value) in params {
        let mut known = true;
        match name.as_str() {
            "_id" => filters.push(any_of(value, |v| Ok(format!("id = {}", id_value(v, "_id")?)))?),
            "subject" | "patient" => {
                filters.push(any_of(value, |v| Ok(format!("patient_id = {}", id_value(v, name)?)))?)
            }
            "modality" => filters.push(any_of(value, |v| {
                let code = v.strip_prefix(model::DICOM_DCM).and_then(|c| c.strip_prefix('|')).unwrap_or(v);
                let kind = clinic_radiology::StudyType::from_modality(code).ok_or_else(|| {
                    Outcome::invalid("modality", format!("{code:?} is not a modality Clinic keeps"))
                })?;
                Ok(format!("study_type = {}", kind.name()))
            })?),
            "identifier" => filters.push(any_of(value, |v| {
                let uid = v.strip_prefix(model::DICOM_UID).and_then(|u| u.strip_prefix('|')).unwrap_or(v);
                let uid = uid.strip_prefix("urn:oid:").ok_or_else(|| {
                    Outcome::invalid(
                        "identifier",
                        "identifier takes urn:dicom:uid|urn:oid:<Study Instance UID>",
                    )
                })?;
                Ok(format!("study_instance_uid = {}", quote(uid)))
            })?),
            "_sort" => search.order_by = sort(value, &[("_lastUpdated", "update_time"), ("_id", "id")])?,
            "_include" if matches!(value.as_str(), "ImagingStudy:subject" | "ImagingStudy:patient") => {
                search.include = true
            }
            _ => known = common(&mut search, name, value)?,
        }
        if known {
            search.applied.push((name.clone(), value.clone()));
        } else {
            unknown(name, lenient, KNOWN)?;
        }
    }
    search.filter = filters.join(" AND ");
    Ok(search)
}

/// The query string of `params`.
pub fn query_string(params: &[(String, String)]) -> String {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn patient_parameters_become_one_filter_and_order() {
        let s = patients(
            &p(&[
                ("family", "trev"),
                ("birthdate", "ge1990"),
                ("birthdate", "lt2000-06"),
                ("_sort", "-birthdate,family"),
            ]),
            false,
        )
        .unwrap();
        assert_eq!(
            s.filter,
            r#"last_name = "trev*" AND birth_date >= "1990-01-01" AND birth_date < "2000-06-01""#
        );
        assert_eq!(s.order_by, "birth_date desc, last_name");
        let eq = patients(&p(&[("birthdate", "1990-02")]), false).unwrap();
        assert_eq!(eq.filter, r#"(birth_date >= "1990-02-01" AND birth_date < "1990-03-01")"#);
        let quoted = patients(&p(&[("identifier", r#"urn:x|a"b"#)]), false).unwrap();
        assert_eq!(quoted.filter, r#"identifier = "urn:x|a\"b""#);
    }

    #[test]
    fn unknown_parameters_are_refused_unless_lenient() {
        let refused = patients(&p(&[("gender", "female")]), false).unwrap_err();
        assert_eq!(refused.expression, ["gender"]);
        let lenient = patients(&p(&[("gender", "female"), ("family", "x")]), true).unwrap();
        assert_eq!(lenient.applied, p(&[("family", "x")]));
        assert!(patients(&p(&[("birthdate", "sa1990")]), false).is_err());
        assert!(studies(&p(&[("modality", "XX")]), false).is_err());
        assert_eq!(
            studies(&p(&[("modality", "CR"), ("subject", "Patient/4")]), false).unwrap().filter,
            "study_type = XRAY AND patient_id = 4"
        );
    }
}
