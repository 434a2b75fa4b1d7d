//! The gRPC adapter: implements `clinic.gateway.v1.GatewayService`.
//!
//! For one page it makes one `ListPatients` call and fetches the studies of
//! the whole page in batched `ListStudies` calls by `patient_ids`, never one
//! call per patient; then joins them in memory ([`crate::view::join`]).

use clinic_common::{
    deadline::Deadline,
    ids::PatientId,
    paging,
    validation::{Invalid, Text, check_text},
};
use clinic_proto::gateway::v1 as pb;
use tonic::{Request, Response, Status};

use crate::{downstream::Downstream, error::Result, view};

/// GatewayService over the two downstream services.
#[derive(Debug, Clone)]
pub struct GatewayApi {
    downstream: Downstream,
}

impl GatewayApi {
    /// The service over `downstream`.
    pub fn new(downstream: Downstream) -> Self {
        Self { downstream }
    }

    async fn list(
        &self,
        req: pb::ListPatientsWithStudiesRequest,
        deadline: Option<Deadline>,
    ) -> Result<pb::ListPatientsWithStudiesResponse> {
        paging::page_size(req.page_size, "page_size").map_err(Invalid::from)?;
        let page = self.downstream.list_patients(req.page_size, req.page_token, deadline).await?;
        let ids = page.patients.iter().map(|p| p.id).collect();
        let studies = self.downstream.first_studies_of(ids, deadline).await?;
        Ok(pb::ListPatientsWithStudiesResponse {
            patients: view::join(page.patients, studies),
            next_page_token: page.next_page_token,
        })
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
        Ok(Response::new(self.list(request.into_inner(), deadline).await?))
    }

    async fn get_patient_with_studies(
        &self,
        request: Request<pb::GetPatientWithStudiesRequest>,
    ) -> Result<Response<pb::PatientWithStudies>, Status> {
        let deadline = Deadline::of(&request);
        Ok(Response::new(self.get(request.into_inner(), deadline).await?))
    }
}
