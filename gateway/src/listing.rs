//! The listing view's walk: which patients a page of
//! `ListPatientsWithStudies` shows, and which calls find them.
//!
//! Without a `study_filter` a page is one `ListPatients` page and one
//! `ListStudiesByPatient` call for its ids, never one call per patient. With
//! one, the walk goes patients-first: each round lists a chunk of patients
//! (as many as the rate of matches calls for) and asks for the matching
//! studies of all of them at once, at most [`MAX_ROUNDS`] rounds per page.
//! The walk only needs the two calls of [`Sources`], so it is tested here
//! without servers.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use clinic_core::{context::Call, paging, validation::Invalid};
use clinic_pg::api_error::ApiError;
use clinic_proto::{gateway::v1 as pb, patients::v1::ListPatientsResponse, studies::v1::PatientStudies};
use clinic_query::filter;

use crate::{
    error::{Error, Result},
    view,
};

/// Most rounds (a ListPatients and a ListStudiesByPatient each) one page of
/// a listing with `study_filter` takes; the chunks they list adapt to the
/// rate of matches (`next_chunk`).
pub const MAX_ROUNDS: u32 = 4;

/// Which patients a listing asks patients-service for, and in what order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatientQuery {
    /// ListPatients' `filter`.
    pub filter: String,
    /// ListPatients' `order_by`.
    pub order_by: String,
    /// Whether deleted patients (and deleted studies) are listed too.
    pub show_deleted: bool,
}

/// The two calls a listing makes (`crate::downstream::Downstream` makes
/// them to the services; the tests, to patients and studies in memory).
pub trait Sources: Send + Sync {
    /// One page of patients matching `query`, from `page_token`.
    fn list_patients(
        &self,
        query: &PatientQuery,
        page_size: i32,
        page_token: String,
        call: &Call,
    ) -> impl Future<Output = Result<ListPatientsResponse>> + Send;

    /// The first studies of each of `patient_ids` that match `study_filter`
    /// (all when empty), deleted ones too with `show_deleted`, each with a
    /// token for the rest.
    fn first_studies_of(
        &self,
        patient_ids: Vec<i64>,
        study_filter: &str,
        show_deleted: bool,
        call: &Call,
    ) -> impl Future<Output = Result<Vec<PatientStudies>>> + Send;
}

/// A `study_filter` as sent, checked once: the text studies-service is
/// asked with (trimmed), or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StudyFilter(String);

impl StudyFilter {
    /// `text` if it parses as a filter; INVALID_ARGUMENT on `study_filter`
    /// otherwise.
    pub fn parse(text: &str) -> Result<Option<Self>> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        match filter::parse(text) {
            Ok(_) => Ok(Some(Self(text.to_owned()))),
            Err(violation) => Err(Invalid::one("study_filter", violation.description).into()),
        }
    }

    /// The filter's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How many patients the next round lists, to find `wanted` more matches
/// after `matched` of `examined` did: as many as the rate seen so far says
/// (a quarter more, for luck), at least `wanted`, at most four times the
/// last chunk (none matched: four times), never past a page's maximum.
fn next_chunk(wanted: usize, examined: usize, matched: usize, last: usize) -> usize {
    let grown = last.saturating_mul(4);
    let estimate = if matched == 0 { grown } else { (wanted * examined * 5).div_ceil(matched * 4) };
    estimate.clamp(wanted, grown).min(paging::MAX_PAGE_SIZE as usize)
}

/// The share of patients each recent study filter matched, so a walk can
/// list about as many patients in its first round as it needs: the
/// selectivity a planner would estimate, learnt from the walks themselves.
#[derive(Debug, Clone, Default)]
pub struct MatchRates(Arc<Mutex<HashMap<String, f64>>>);

/// Study filters whose match rates are remembered, at most.
const RATES_KEPT: usize = 256;

impl MatchRates {
    fn first_chunk(&self, study_filter: &StudyFilter, size: usize) -> usize {
        let rate = self.0.lock().expect("rates lock").get(study_filter.as_str()).copied();
        match rate {
            Some(rate) if rate > 0.0 => ((size as f64 * 1.25 / rate).ceil() as usize).clamp(size, 4 * size),
            _ => size,
        }
        .min(paging::MAX_PAGE_SIZE as usize)
    }

    fn record(&self, study_filter: &StudyFilter, examined: usize, matched: usize) {
        if examined == 0 {
            return;
        }
        let mut rates = self.0.lock().expect("rates lock");
        if rates.len() >= RATES_KEPT && !rates.contains_key(study_filter.as_str()) {
            rates.clear();
        }
        rates.insert(study_filter.as_str().to_owned(), matched as f64 / examined as f64);
    }
}

/// Where a listing with `study_filter` goes on: patients-service's page
/// token after the last patient examined, and a digest of the filters and
/// order it belongs to. The inner token is signed by patients-service and
/// bound to `filter` and `order_by`; the digest binds `study_filter` too.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct WalkToken {
    patients: String,
    binding: String,
}

impl WalkToken {
    fn binding(query: &PatientQuery, study_filter: &StudyFilter) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::new()
            .chain_update(query.filter.trim())
            .chain_update([0])
            .chain_update(study_filter.as_str())
            .chain_update([0])
            .chain_update(query.order_by.trim())
            .chain_update([u8::from(query.show_deleted)])
            .finalize();
        URL_SAFE_NO_PAD.encode(&digest[..12])
    }

    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).expect("a token serialises"))
    }

    /// The patients token where `token` goes on; empty for the first page.
    fn decode(token: &str, binding: &str) -> Result<String> {
        if token.is_empty() {
            return Ok(String::new());
        }
        let invalid = || Error::Api(ApiError::InvalidPageToken);
        if token.len() > 4096 {
            return Err(invalid());
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
        let decoded: WalkToken = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
        if decoded.binding != binding || decoded.patients.is_empty() {
            return Err(invalid());
        }
        Ok(decoded.patients)
    }
}

/// The listing: pages of patients with their first studies.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    rates: MatchRates,
}

impl Listing {
    /// One page of `req` from `sources`.
    pub async fn page<S: Sources>(
        &self,
        sources: &S,
        req: pb::ListPatientsWithStudiesRequest,
        call: &Call,
    ) -> Result<pb::ListPatientsWithStudiesResponse> {
        let size = paging::page_size(req.page_size, "page_size").map_err(Invalid::from)?;
        let study_filter = StudyFilter::parse(&req.study_filter)?;
        let query = PatientQuery {
            filter: req.filter.clone(),
            order_by: req.order_by.clone(),
            show_deleted: req.show_deleted,
        };
        let Some(study_filter) = study_filter else {
            let page = sources.list_patients(&query, req.page_size, req.page_token, call).await?;
            let ids = page.patients.iter().map(|p| p.id).collect();
            let studies = sources.first_studies_of(ids, "", query.show_deleted, call).await?;
            return Ok(pb::ListPatientsWithStudiesResponse {
                patients: view::join(page.patients, studies),
                next_page_token: page.next_page_token,
            });
        };
        let binding = WalkToken::binding(&query, &study_filter);
        let start = WalkToken::decode(&req.page_token, &binding)?;
        let (patients, next) = self.walk(sources, &query, &study_filter, size as usize, start, call).await?;
        let next_page_token =
            next.map(|patients| WalkToken { patients, binding }.encode()).unwrap_or_default();
        Ok(pb::ListPatientsWithStudiesResponse { patients, next_page_token })
    }

    /// Fills a page of patients who match `query` and have studies matching
    /// `study_filter`, in `query`'s order, from patients-service's walk at
    /// `start`: each round lists patients (as many as the rate of matches so
    /// far calls for) and asks for the matching studies of all of them at
    /// once; at most [`MAX_ROUNDS`] rounds, so a page may come back short
    /// (even empty) when matches are rare, with the token to go on. Returns
    /// the page and patients-service's token after the last patient examined.
    async fn walk<S: Sources>(
        &self,
        sources: &S,
        query: &PatientQuery,
        study_filter: &StudyFilter,
        size: usize,
        start: String,
        call: &Call,
    ) -> Result<(Vec<pb::PatientWithStudies>, Option<String>)> {
        let mut found: Vec<pb::PatientWithStudies> = Vec::new();
        let mut token = start;
        // Start from what this study filter matched last time, if known.
        let mut chunk = self.rates.first_chunk(study_filter, size.max(1));
        let (mut examined_total, mut matched_total) = (0, 0);
        for _ in 0..MAX_ROUNDS {
            let page = sources.list_patients(query, chunk as i32, token.clone(), call).await?;
            let ids: Vec<i64> = page.patients.iter().map(|p| p.id).collect();
            let studies =
                sources.first_studies_of(ids, study_filter.as_str(), query.show_deleted, call).await?;
            let matching: Vec<pb::PatientWithStudies> = view::join(page.patients.clone(), studies)
                .into_iter()
                .filter(|p| !p.studies.is_empty() || !p.next_studies_page_token.is_empty())
                .collect();
            let wanted = size - found.len();
            if matching.len() > wanted {
                // The page fills inside this chunk: continue right after its
                // last patient, which a walk of exactly that many gives.
                let last = matching[wanted - 1].patient.as_ref().map_or(0, |p| p.id);
                let upto = page.patients.iter().position(|p| p.id == last).map_or(chunk, |i| i + 1);
                let exact = sources.list_patients(query, upto as i32, token.clone(), call).await?;
                if exact.patients.last().map(|p| p.id) == Some(last) {
                    found.extend(matching.into_iter().take(wanted));
                    return Ok((found, Some(exact.next_page_token).filter(|t| !t.is_empty())));
                }
                // Patients were added in between meanwhile: stop before
                // this chunk; the next call sees it again.
                return Ok((found, Some(token)));
            }
            let examined = page.patients.len();
            let matched = matching.len();
            examined_total += examined;
            matched_total += matched;
            self.rates.record(study_filter, examined_total, matched_total);
            found.extend(matching);
            if page.next_page_token.is_empty() {
                return Ok((found, None));
            }
            token = page.next_page_token;
            if found.len() == size {
                break;
            }
            chunk = next_chunk(size - found.len(), examined, matched, chunk);
        }
        Ok((found, Some(token)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use clinic_proto::{patients::v1::Patient, studies::v1::Study};

    use super::*;

    fn call() -> Call {
        clinic_core::context::CallContext::background("test")
    }

    fn filter(text: &str) -> StudyFilter {
        StudyFilter::parse(text).unwrap().unwrap()
    }

    #[test]
    fn a_known_rate_sizes_the_first_round() {
        let rates = MatchRates::default();
        let high = filter("urgency_level = HIGH");
        assert_eq!(rates.first_chunk(&high, 50), 50, "unknown: the page size");
        rates.record(&high, 300, 200);
        assert_eq!(
            rates.first_chunk(&filter(" urgency_level = HIGH "), 50),
            94,
            "two in three: 50 × 1.25 × 1.5"
        );
        let heart = filter("body_part = HEART");
        rates.record(&heart, 1000, 1);
        assert_eq!(rates.first_chunk(&heart, 50), 200, "at most four times the page");
    }

    #[test]
    fn chunks_follow_the_rate_of_matches_within_bounds() {
        assert_eq!(next_chunk(17, 50, 33, 50), 33, "two in three match: about 17 × 1.5 × 1.25");
        assert_eq!(next_chunk(49, 50, 1, 50), 200, "rare: at most four times the last chunk");
        assert_eq!(next_chunk(50, 50, 0, 50), 200, "none yet: four times");
        assert_eq!(next_chunk(10, 10, 10, 10), 13);
        assert_eq!(next_chunk(900, 1000, 100, 1000), 1000, "never past a page's maximum");
    }

    #[test]
    fn a_study_filter_is_checked_once_and_kept_trimmed() {
        assert_eq!(StudyFilter::parse("  ").unwrap(), None);
        assert_eq!(filter(" body_part = HEART ").as_str(), "body_part = HEART");
        let Err(Error::Api(ApiError::Invalid(invalid))) = StudyFilter::parse("body_part = ") else {
            panic!("accepted")
        };
        assert_eq!(invalid.0[0].field, "study_filter");
    }

    /// Patients 1..=n in id order; the patients in `matching` have a study
    /// that matches any filter, the others none. Counts the calls.
    struct Fake {
        patients: Vec<i64>,
        matching: Vec<i64>,
        lists: AtomicUsize,
        study_calls: AtomicUsize,
    }

    impl Fake {
        fn new(n: i64, matching: impl Fn(i64) -> bool) -> Self {
            let patients: Vec<i64> = (1..=n).collect();
            let matching = patients.iter().copied().filter(|id| matching(*id)).collect();
            Self { patients, matching, lists: AtomicUsize::new(0), study_calls: AtomicUsize::new(0) }
        }
    }

    impl Sources for Fake {
        async fn list_patients(
            &self,
            _: &PatientQuery,
            page_size: i32,
            page_token: String,
            _: &Call,
        ) -> Result<ListPatientsResponse> {
            self.lists.fetch_add(1, Ordering::Relaxed);
            let after: i64 = if page_token.is_empty() { 0 } else { page_token.parse().unwrap() };
            let page: Vec<i64> =
                self.patients.iter().copied().filter(|id| *id > after).take(page_size as usize).collect();
            let more = page.last().is_some_and(|last| self.patients.last() != Some(last));
            Ok(ListPatientsResponse {
                patients: page.iter().map(|id| Patient { id: *id, ..Default::default() }).collect(),
                next_page_token: if more { page.last().unwrap().to_string() } else { String::new() },
            })
        }

        async fn first_studies_of(
            &self,
            patient_ids: Vec<i64>,
            study_filter: &str,
            _: bool,
            _: &Call,
        ) -> Result<Vec<PatientStudies>> {
            self.study_calls.fetch_add(1, Ordering::Relaxed);
            Ok(patient_ids
                .into_iter()
                .map(|id| PatientStudies {
                    patient_id: id,
                    studies: if study_filter.is_empty() || self.matching.contains(&id) {
                        vec![Study { id: id * 10, patient_id: id, ..Default::default() }]
                    } else {
                        vec![]
                    },
                    next_page_token: String::new(),
                })
                .collect())
        }
    }

    fn request(size: i32, study_filter: &str, token: &str) -> pb::ListPatientsWithStudiesRequest {
        pb::ListPatientsWithStudiesRequest {
            page_size: size,
            study_filter: study_filter.to_owned(),
            page_token: token.to_owned(),
            ..Default::default()
        }
    }

    fn ids(page: &pb::ListPatientsWithStudiesResponse) -> Vec<i64> {
        page.patients.iter().map(|p| p.patient.as_ref().unwrap().id).collect()
    }

    #[tokio::test]
    async fn without_a_study_filter_a_page_is_two_calls_whatever_its_size() {
        let fake = Fake::new(100, |_| true);
        let page = Listing::default().page(&fake, request(50, "", ""), &call()).await.unwrap();
        assert_eq!(ids(&page), (1..=50).collect::<Vec<_>>());
        assert!(page.patients.iter().all(|p| p.studies.len() == 1));
        assert_eq!((fake.lists.into_inner(), fake.study_calls.into_inner()), (1, 1));
    }

    #[tokio::test]
    async fn a_walk_with_a_study_filter_neither_skips_nor_repeats_a_match() {
        let fake = Fake::new(1000, |id| id % 7 == 0);
        let listing = Listing::default();
        let (mut seen, mut token) = (Vec::new(), String::new());
        for _ in 0..1000 {
            let page = listing.page(&fake, request(10, "body_part = HEART", &token), &call()).await.unwrap();
            assert!(page.patients.len() <= 10);
            seen.extend(ids(&page));
            token = page.next_page_token;
            if token.is_empty() {
                break;
            }
        }
        assert_eq!(seen, (1..=1000).filter(|id| id % 7 == 0).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn rare_matches_end_a_page_after_the_bounded_rounds_with_a_token_to_go_on() {
        let fake = Fake::new(100_000, |id| id == 99_999);
        let page =
            Listing::default().page(&fake, request(10, "body_part = HEART", ""), &call()).await.unwrap();
        assert!(
            page.patients.is_empty() && !page.next_page_token.is_empty(),
            "a short page, not a long wait"
        );
        assert_eq!(fake.study_calls.into_inner(), MAX_ROUNDS as usize);
    }

    #[tokio::test]
    async fn a_token_of_another_study_filter_is_refused() {
        let fake = Fake::new(100, |id| id % 2 == 0);
        let listing = Listing::default();
        let page = listing.page(&fake, request(5, "body_part = HEART", ""), &call()).await.unwrap();
        let other =
            listing.page(&fake, request(5, "body_part = BRAIN", &page.next_page_token), &call()).await;
        assert!(matches!(other, Err(Error::Api(ApiError::InvalidPageToken))));
    }
}
