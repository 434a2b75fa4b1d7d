//! The gRPC adapter: implements `clinic.gateway.v1.GatewayService`.
//!
//! The listing's walk lives in [`crate::listing`]; the join in
//! [`crate::view`]. Here: requests in, statuses out, and the patients each
//! call concerns (for its audit event).

use clinic_core::{
    context::{Call, CallContext},
    ids::PatientId,
    paging,
    validation::{Invalid, Text, check_text},
};
use clinic_proto::gateway::v1 as pb;
use tonic::{Request, Response, Status};

use crate::{downstream::Downstream, error::Result, listing::Listing, view};

/// GatewayService over the two downstream services.
#[derive(Debug, Clone)]
pub struct GatewayApi {
    downstream: Downstream,
    listing: Listing,
}

impl GatewayApi {
    /// The service over `downstream`.
    pub fn new(downstream: Downstream) -> Self {
        Self { downstream, listing: Listing::default() }
    }

    async fn get(
        &self,
        req: pb::GetPatientWithStudiesRequest,
        call: &Call,
    ) -> Result<pb::PatientWithStudies> {
        let mut invalid = Invalid::default();
        let id = invalid.check(PatientId::parse(req.id, "id"));
        invalid.check(paging::page_size(req.page_size, "page_size"));
        invalid.check(check_text(&req.page_token, "page_token", 1024, Text::Token));
        let Some(id) = id.filter(|_| invalid.0.is_empty()) else { return Err(invalid.into()) };
        let patient = self.downstream.get_patient(id.get(), call).await?;
        let page = self.downstream.studies_page(id.get(), req.page_size, req.page_token, call).await?;
        Ok(view::with_studies(patient, page.studies, page.next_page_token))
    }
}

#[tonic::async_trait]
impl pb::gateway_service_server::GatewayService for GatewayApi {
    async fn list_patients_with_studies(
        &self,
        request: Request<pb::ListPatientsWithStudiesRequest>,
    ) -> Result<Response<pb::ListPatientsWithStudiesResponse>, Status> {
        let call = CallContext::of(&request);
        let page = self.listing.page(&self.downstream, request.into_inner(), &call).await?;
        // The listing's audit event names every patient it shows.
        call.concern(page.patients.iter().filter_map(|p| p.patient.as_ref().map(|p| p.id)));
        Ok(Response::new(page))
    }

    async fn get_patient_with_studies(
        &self,
        request: Request<pb::GetPatientWithStudiesRequest>,
    ) -> Result<Response<pb::PatientWithStudies>, Status> {
        let call = CallContext::of(&request);
        let request = request.into_inner();
        if request.id > 0 {
            call.concern([request.id]);
        }
        Ok(Response::new(self.get(request, &call).await?))
    }
}
