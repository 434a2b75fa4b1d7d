//! The scenarios of the main run, one function each: what one scenario
//! calls, on which port, with whose token. [`Scenarios`] holds what they
//! share (the channels, the identities, the load) and records the cores
//! each process group used during each.

use std::{collections::BTreeMap, sync::Arc, time::Instant};

use clinic_dev_keys::bearer::authed;
use clinic_proto::{
    gateway::v1::{ListPatientsWithStudiesRequest, gateway_service_client::GatewayServiceClient},
    patients::v1::{
        CreatePatientRequest, ListPatientsRequest, Patient, patient_service_client::PatientServiceClient,
    },
    studies::v1::{ListStudiesRequest, study_service_client::StudyServiceClient},
};
use tonic::transport::Channel;

use crate::{
    auth::Bearers,
    cpu,
    load::{self, Load, Outcome},
};

/// What the scenarios share.
pub struct Scenarios {
    /// The load every scenario runs at.
    pub load: Load,
    /// Connections straight to patients-service.
    pub direct: Vec<Channel>,
    /// One identity per worker.
    pub bearers: Bearers,
    /// Patients preloaded (ids 1..=n).
    pub patients: u64,
    /// The processes whose cores are counted.
    pub processes: Vec<(&'static str, Option<u32>)>,
    /// The cores each process group used during each scenario.
    pub cpu: Vec<(String, BTreeMap<String, f64>)>,
}

impl Scenarios {
    /// Runs `call` as the scenario `name` on `channels` at `load`, and
    /// records the cores used meanwhile.
    pub async fn run<F, Fut>(&mut self, name: &str, channels: &[Channel], load: Load, call: F) -> Outcome
    where
        F: Fn(Channel, usize, u64) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), tonic::Status>> + Send + 'static,
    {
        let before = cpu::snapshot(&self.processes);
        let started = Instant::now();
        let outcome = load::run(name, channels, load, call).await;
        let after = cpu::snapshot(&self.processes);
        self.cpu.push((name.to_owned(), cpu::cores_used(&before, &after, started.elapsed().as_secs_f64())));
        outcome
    }

    /// GetPatient of patients spread over the whole table, on `channels`
    /// (`name` says which path), at `load`.
    pub async fn get_patient(&mut self, name: &str, channels: &[Channel], load: Load) -> Outcome {
        let (bearers, n) = (self.bearers.clone(), self.patients.max(1));
        let call = move |channel, worker, seq| {
            load::get_patient(channel, bearers.of(worker), 1 + load::spread(worker, seq, n) as i64)
        };
        self.run(name, channels, load, call).await
    }

    /// GetPatient straight to patients-service with a token the verifier
    /// has not cached: a signature check per call.
    pub async fn get_patient_new_tokens(&mut self, tokens: Vec<Arc<str>>) -> Outcome {
        let (direct, load, n) = (self.direct.clone(), self.load, self.patients.max(1));
        let call = move |channel, worker: usize, seq: u64| {
            let token = tokens[(seq as usize * 64 + worker) % tokens.len()].clone();
            load::get_patient(channel, token, 1 + load::spread(worker, seq, n) as i64)
        };
        self.run("get_patient_direct_new_tokens", &direct, load, call).await
    }

    /// ListPatients pages of 50 straight to patients-service: `filter` and
    /// `order_by` as given, from `page_token` (empty: the first page).
    pub async fn list_patients(
        &mut self,
        name: &str,
        filter: &'static str,
        order_by: &'static str,
        page_token: String,
    ) -> Outcome {
        let direct = self.direct.clone();
        self.list_patients_on(name, &direct, filter, order_by, page_token).await
    }

    /// [`Self::list_patients`] on `channels` (Envoy, or the service).
    pub async fn list_patients_on(
        &mut self,
        name: &str,
        channels: &[Channel],
        filter: &'static str,
        order_by: &'static str,
        page_token: String,
    ) -> Outcome {
        let (load, bearers) = (self.load, self.bearers.clone());
        let call = move |channel, worker, _| {
            let (bearer, page_token) = (bearers.of(worker), page_token.clone());
            async move {
                PatientServiceClient::new(authed(channel, &bearer))
                    .list_patients(ListPatientsRequest {
                        page_size: 50,
                        page_token,
                        filter: filter.into(),
                        order_by: order_by.into(),
                        ..Default::default()
                    })
                    .await
                    .map(|_| ())
            }
        };
        self.run(name, channels, load, call).await
    }

    /// The first page of the listing view, 50 patients with their studies
    /// (only those with a study matching `study_filter`, when given), on
    /// `channels` (Envoy or the gateway itself).
    pub async fn listing(&mut self, name: &str, channels: &[Channel], study_filter: &'static str) -> Outcome {
        let (load, bearers) = (self.load, self.bearers.clone());
        let call = move |channel, worker, _| listing_first_page(channel, bearers.of(worker), study_filter);
        self.run(name, channels, load, call).await
    }

    /// ListStudies of the 50 patients of a listing page, straight to
    /// studies-service on `channels`.
    pub async fn list_studies_50_patients(&mut self, channels: &[Channel]) -> Outcome {
        let (load, bearers) = (self.load, self.bearers.clone());
        let page_ids: Vec<i64> = (1..=50).collect();
        let call = move |channel, worker, _| {
            let (patient_ids, bearer) = (page_ids.clone(), bearers.of(worker));
            async move {
                StudyServiceClient::new(authed(channel, &bearer))
                    .list_studies(ListStudiesRequest {
                        page_size: 1000,
                        page_token: String::new(),
                        patient_ids,
                        ..Default::default()
                    })
                    .await
                    .map(|_| ())
            }
        };
        self.run("list_studies_50_patients", channels, load, call).await
    }

    /// CreatePatient straight to patients-service as the scenario `name`,
    /// each with an email of its own (`run_id` keeps runs apart).
    pub async fn create_patient(&mut self, name: &str, run_id: u32) -> Outcome {
        let (direct, load, bearers) = (self.direct.clone(), self.load, self.bearers.clone());
        let call = move |channel, worker, seq| {
            let bearer = bearers.of(worker);
            async move {
                let patient = Patient {
                    first_name: "Load".into(),
                    last_name: "Test".into(),
                    birth_date: "1980-02-29".into(),
                    email: format!("load-{run_id:x}-{worker}-{seq}@ejemplo.com"),
                    ..Default::default()
                };
                PatientServiceClient::new(authed(channel, &bearer))
                    .create_patient(CreatePatientRequest {
                        patient: Some(patient),
                        request_id: String::new(),
                        ..Default::default()
                    })
                    .await
                    .map(|_| ())
            }
        };
        self.run(name, &direct, load, call).await
    }
}

/// The first page of the listing view, 50 patients with their studies
/// (only those with a study matching `study_filter`, when given).
pub async fn listing_first_page(
    channel: Channel,
    token: Arc<str>,
    study_filter: &'static str,
) -> Result<(), tonic::Status> {
    GatewayServiceClient::new(authed(channel, &token))
        .list_patients_with_studies(ListPatientsWithStudiesRequest {
            page_size: 50,
            page_token: String::new(),
            study_filter: study_filter.into(),
            ..Default::default()
        })
        .await
        .map(|_| ())
}

/// A ListPatients token for a page near the end of the collection.
pub async fn deep_token(channel: Channel, token: &str, patients: u64) -> Result<String, tonic::Status> {
    let mut client = PatientServiceClient::new(authed(channel, token));
    let mut token = String::new();
    loop {
        let page = client
            .list_patients(ListPatientsRequest {
                page_size: 1000,
                page_token: token.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        let last = page.patients.last().map_or(0, |p| p.id) as u64;
        if page.next_page_token.is_empty() || last + 1000 >= patients {
            return Ok(page.next_page_token);
        }
        token = page.next_page_token;
    }
}
