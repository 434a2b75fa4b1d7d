//! The gRPC adapter: implements `clinic.gateway.v1.GatewayService`.
//!
//! For one page it makes one `ListPatients` call and fetches the studies of
//! the whole page in one `ListStudiesByPatient` call, never one call per
//! patient; then joins them in memory ([`crate::view::join`]). With a
//! `study_filter` it walks patients-side first, a bounded number of rounds
//! per page (see `GatewayApi::walk`).

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use clinic_core::{
    deadline::Deadline,
    ids::PatientId,
    paging,
    validation::{Invalid, Text, check_text},
};
use clinic_pg::api_error::ApiError;
use clinic_proto::gateway::v1 as pb;
use clinic_query::filter;
use tonic::{Request, Response, Status};

use crate::{
    downstream::{Downstream, PatientQuery},
    error::{Error, Result},
    view,
};

/// Most rounds (a ListPatients and a ListStudiesByPatient each) one page of
/// a listing with `study_filter` takes; the chunks they list adapt to the
/// rate of matches ([`next_chunk`]).
const MAX_ROUNDS: u32 = 4;

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
struct MatchRates(std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, f64>>>);

/// Study filters whose match rates are remembered, at most.
const RATES_KEPT: usize = 256;

impl MatchRates {
    fn first_chunk(&self, study_filter: &str, size: usize) -> usize {
        let rate = self.0.lock().expect("rates lock").get(study_filter.trim()).copied();
        match rate {
            Some(rate) if rate > 0.0 => ((size as f64 * 1.25 / rate).ceil() as usize).clamp(size, 4 * size),
            _ => size,
        }
        .min(paging::MAX_PAGE_SIZE as usize)
    }

    fn record(&self, study_filter: &str, examined: usize, matched: usize) {
        if examined == 0 {
            return;
        }
        let mut rates = self.0.lock().expect("rates lock");
        if rates.len() >= RATES_KEPT && !rates.contains_key(study_filter.trim()) {
            rates.clear();
        }
        rates.insert(study_filter.trim().to_owned(), matched as f64 / examined as f64);
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
    fn binding(filter: &str, study_filter: &str, order_by: &str) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::new()
            .chain_update(filter.trim())
            .chain_update([0])
            .chain_update(study_filter.trim())
            .chain_update([0])
            .chain_update(order_by.trim())
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

/// GatewayService over the two downstream services.
#[derive(Debug, Clone)]
pub struct GatewayApi {
    downstream: Downstream,
    rates: MatchRates,
}

impl GatewayApi {
    /// The service over `downstream`.
    pub fn new(downstream: Downstream) -> Self {
        Self { downstream, rates: MatchRates::default() }
    }

    async fn list(
        &self,
        req: pb::ListPatientsWithStudiesRequest,
        deadline: Option<Deadline>,
    ) -> Result<pb::ListPatientsWithStudiesResponse> {
        let size = paging::page_size(req.page_size, "page_size").map_err(Invalid::from)?;
        if let Err(violation) = filter::parse(&req.study_filter) {
            return Err(Invalid::one("study_filter", violation.description).into());
        }
        let query = PatientQuery { filter: req.filter.clone(), order_by: req.order_by.clone() };
        if req.study_filter.trim().is_empty() {
            let page = self.downstream.list_patients(&query, req.page_size, req.page_token, deadline).await?;
            let ids = page.patients.iter().map(|p| p.id).collect();
            let studies = self.downstream.first_studies_of(ids, "", deadline).await?;
            return Ok(pb::ListPatientsWithStudiesResponse {
                patients: view::join(page.patients, studies),
                next_page_token: page.next_page_token,
            });
        }
        let binding = WalkToken::binding(&req.filter, &req.study_filter, &req.order_by);
        let start = WalkToken::decode(&req.page_token, &binding)?;
        let (patients, next) = self.walk(&query, &req.study_filter, size as usize, start, deadline).await?;
        let next_page_token =
            next.map(|patients| WalkToken { patients, binding }.encode()).unwrap_or_default();
        Ok(pb::ListPatientsWithStudiesResponse { patients, next_page_token })
    }

    /// Fills a page of patients who match `query` and have studies matching
    /// `study_filter`, in `query`'s order, from patients-service's walk at
    /// `start`: each round lists patients (as many as the rate of matches so
    /// far calls for) and asks for the matching studies of all of them at once;
    /// at most [`MAX_ROUNDS`] rounds, so a page may come back short (even
    /// empty) when matches are rare, with the token to go on. Returns the
    /// page and patients-service's token after the last patient examined.
    async fn walk(
        &self,
        query: &PatientQuery,
        study_filter: &str,
        size: usize,
        start: String,
        deadline: Option<Deadline>,
    ) -> Result<(Vec<pb::PatientWithStudies>, Option<String>)> {
        let mut found: Vec<pb::PatientWithStudies> = Vec::new();
        let mut token = start;
        // Start from what this study filter matched last time, if known.
        let mut chunk = self.rates.first_chunk(study_filter, size.max(1));
        let (mut examined_total, mut matched_total) = (0, 0);
        for _ in 0..MAX_ROUNDS {
            let page = self.downstream.list_patients(query, chunk as i32, token.clone(), deadline).await?;
            let ids: Vec<i64> = page.patients.iter().map(|p| p.id).collect();
            let studies = self.downstream.first_studies_of(ids, study_filter, deadline).await?;
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
                let exact =
                    self.downstream.list_patients(query, upto as i32, token.clone(), deadline).await?;
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

    async fn get(
        &self,
        req: pb::GetPatientWithStudiesRequest,
        deadline: Option<Deadline>,
    ) -> Result<pb::PatientWithStudies> {
        let mut invalid = Invalid::default();
        let id = invalid.check(PatientId::parse(req.id, "id"));
        invalid.check(paging::page_size(req.page_size, "page_size"));
        invalid.check(check_text(&req.page_token, "page_token", 1024, Text::Token));
        let Some(id) = id.filter(|_| invalid.0.is_empty()) else { return Err(invalid.into()) };
        let patient = self.downstream.get_patient(id.get(), deadline).await?;
        let page = self.downstream.studies_page(id.get(), req.page_size, req.page_token, deadline).await?;
        Ok(view::with_studies(patient, page.studies, page.next_page_token))
    }
}

#[tonic::async_trait]
impl pb::gateway_service_server::GatewayService for GatewayApi {
    async fn list_patients_with_studies(
        &self,
        request: Request<pb::ListPatientsWithStudiesRequest>,
    ) -> Result<Response<pb::ListPatientsWithStudiesResponse>, Status> {
        let deadline = Deadline::of(&request);
        let page = self.list(request.into_inner(), deadline).await?;
        // The listing's audit event names every patient it shows.
        clinic_core::context::concern(page.patients.iter().filter_map(|p| p.patient.as_ref().map(|p| p.id)));
        Ok(Response::new(page))
    }

    async fn get_patient_with_studies(
        &self,
        request: Request<pb::GetPatientWithStudiesRequest>,
    ) -> Result<Response<pb::PatientWithStudies>, Status> {
        let deadline = Deadline::of(&request);
        let request = request.into_inner();
        if request.id > 0 {
            clinic_core::context::concern([request.id]);
        }
        Ok(Response::new(self.get(request, deadline).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::next_chunk;

    #[test]
    fn a_known_rate_sizes_the_first_round() {
        let rates = super::MatchRates::default();
        assert_eq!(rates.first_chunk("urgency_level = HIGH", 50), 50, "unknown: the page size");
        rates.record("urgency_level = HIGH", 300, 200);
        assert_eq!(rates.first_chunk(" urgency_level = HIGH ", 50), 94, "two in three: 50 × 1.25 × 1.5");
        rates.record("body_part = HEART", 1000, 1);
        assert_eq!(rates.first_chunk("body_part = HEART", 50), 200, "at most four times the page");
    }

    #[test]
    fn chunks_follow_the_rate_of_matches_within_bounds() {
        assert_eq!(next_chunk(17, 50, 33, 50), 33, "two in three match: about 17 × 1.5 × 1.25");
        assert_eq!(next_chunk(49, 50, 1, 50), 200, "rare: at most four times the last chunk");
        assert_eq!(next_chunk(50, 50, 0, 50), 200, "none yet: four times");
        assert_eq!(next_chunk(10, 10, 10, 10), 13);
        assert_eq!(next_chunk(900, 1000, 100, 1000), 1000, "never past a page's maximum");
    }
}
