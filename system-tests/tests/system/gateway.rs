//! The listing view: patients with their studies, through the gateway.

use std::time::{Duration, Instant};

use clinic_proto::gateway::v1 as pb;
use tokio_stream_compat::list_services;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use system_tests::{TestSystem, assert_invalid, eventually, reason, spawn_system, study};

async fn list(
    system: &TestSystem,
    page_size: i32,
    page_token: &str,
) -> Result<pb::ListPatientsWithStudiesResponse, tonic::Status> {
    system
        .gateway_client
        .clone()
        .list_patients_with_studies(pb::ListPatientsWithStudiesRequest {
            page_size,
            page_token: page_token.into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

/// Patients with 0 to 3 studies each, over several pages: each patient once,
/// in id order, with exactly their studies in id order.
#[tokio::test]
async fn the_listing_pages_patients_in_id_order_each_with_exactly_their_studies() {
    let system = spawn_system().await;
    let mut expected = Vec::new();
    for n in 0..11 {
        let patient = system.create_patient(n).await;
        let mut ids = Vec::new();
        for _ in 0..(n % 4) {
            ids.push(system.create_study(study(patient.id)).await.unwrap().id);
        }
        expected.push((patient.id, ids));
    }

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = list(&system, 4, &token).await.unwrap();
        pages += 1;
        for entry in page.patients {
            let patient = entry.patient.unwrap();
            assert!(entry.studies.iter().all(|s| s.patient_id == patient.id), "only their own studies");
            seen.push((patient.id, entry.studies.iter().map(|s| s.id).collect::<Vec<_>>()));
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn get_patient_with_studies_returns_one_patient_and_their_studies() {
    let system = spawn_system().await;
    let patient = system.create_patient(1).await;
    let other = system.create_patient(2).await;
    let s1 = system.create_study(study(patient.id)).await.unwrap();
    system.create_study(study(other.id)).await.unwrap();
    let s2 = system.create_study(study(patient.id)).await.unwrap();

    let view = system
        .gateway_client
        .clone()
        .get_patient_with_studies(pb::GetPatientWithStudiesRequest { id: patient.id, ..Default::default() })
        .await
        .unwrap()
        .into_inner();

    assert_eq!(view.patient.unwrap(), patient);
    assert_eq!(view.studies, vec![s1, s2]);
}

#[tokio::test]
async fn get_patient_with_studies_of_an_unknown_patient_is_not_found_and_bad_ids_are_invalid() {
    let system = spawn_system().await;
    let status = system
        .gateway_client
        .clone()
        .get_patient_with_studies(pb::GetPatientWithStudiesRequest { id: 4040, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(reason(&status), "PATIENT_NOT_FOUND");
    let bad = system
        .gateway_client
        .clone()
        .get_patient_with_studies(pb::GetPatientWithStudiesRequest { id: 0, ..Default::default() })
        .await;
    assert_invalid(bad, &["id"]);
}

#[tokio::test]
async fn bad_page_sizes_and_tokens_are_invalid() {
    let system = spawn_system().await;
    assert_invalid(list(&system, -1, "").await, &["page_size"]);
    let status = list(&system, 10, "not-a-token").await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(reason(&status), "INVALID_PAGE_TOKEN");
}

#[tokio::test]
async fn a_deleted_patient_never_shows_in_the_listing() {
    let system = spawn_system().await;
    let (kept, gone) = (system.create_patient(1).await, system.create_patient(2).await);
    system.create_study(study(gone.id)).await.unwrap();
    system.delete_patient(gone.id, true).await.unwrap();

    let page = list(&system, 50, "").await.unwrap();
    let ids: Vec<i64> = page.patients.iter().map(|p| p.patient.as_ref().unwrap().id).collect();
    assert_eq!(ids, vec![kept.id], "right after DeletePatient returns");
}

/// With studies-service down the listing fails fast, naming the service,
/// instead of showing patients without their studies; patient CRUD goes on;
/// and the listing recovers when studies-service is back.
#[tokio::test]
async fn with_studies_service_down_the_listing_fails_fast_and_recovers() {
    let mut system = spawn_system().await;
    let patient = system.create_patient(1).await;
    system.create_study(study(patient.id)).await.unwrap();
    system.stop_studies().await;

    let mut request = tonic::Request::new(pb::ListPatientsWithStudiesRequest {
        page_size: 10,
        page_token: String::new(),
        ..Default::default()
    });
    request.set_timeout(Duration::from_secs(5));
    let started = Instant::now();
    let status = system.gateway_client.clone().list_patients_with_studies(request).await.unwrap_err();
    let took = started.elapsed();

    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(reason(&status), "STUDIES_SERVICE_UNAVAILABLE");
    assert!(status.message().contains("studies-service"), "{}", status.message());
    assert!(took < Duration::from_secs(2), "failed after {took:?}, not fast");
    system.create_patient(2).await;

    system.start_studies().await;
    eventually(Duration::from_secs(10), "the listing recovers", || async {
        list(&system, 10, "").await.is_ok()
    })
    .await;
    let page = list(&system, 10, "").await.unwrap();
    assert_eq!(page.patients.len(), 2);
    assert_eq!(page.patients[0].studies.len(), 1);
}

#[tokio::test]
async fn with_patients_service_down_the_listing_is_unavailable_naming_it() {
    let mut system = spawn_system().await;
    system.stop_patients().await;
    let status = list(&system, 10, "").await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(reason(&status), "PATIENTS_SERVICE_UNAVAILABLE");
    assert!(status.message().contains("patients-service"));
}

async fn health(system: &TestSystem, service: &str) -> ServingStatus {
    HealthClient::new(system.gateway_channel.clone())
        .check(HealthCheckRequest { service: service.into() })
        .await
        .unwrap()
        .into_inner()
        .status()
}

/// The gateway answers health for the whole system: each service's name
/// mirrors that service, and the empty name is SERVING only when all are.
#[tokio::test]
async fn gateway_health_mirrors_each_service_and_the_system() {
    let mut system = spawn_system().await;
    let all = [
        "",
        "clinic.gateway.v1.GatewayService",
        "clinic.patients.v1.PatientService",
        "clinic.studies.v1.StudyService",
    ];
    eventually(Duration::from_secs(10), "everything SERVING", || async {
        let mut ok = true;
        for name in all {
            ok &= health(&system, name).await == ServingStatus::Serving;
        }
        ok
    })
    .await;

    system.stop_studies().await;
    eventually(Duration::from_secs(10), "studies NOT_SERVING", || async {
        health(&system, "clinic.studies.v1.StudyService").await == ServingStatus::NotServing
    })
    .await;
    assert_eq!(health(&system, "").await, ServingStatus::NotServing);
    assert_eq!(health(&system, "clinic.patients.v1.PatientService").await, ServingStatus::Serving);

    system.start_studies().await;
    eventually(Duration::from_secs(10), "system SERVING again", || async {
        health(&system, "").await == ServingStatus::Serving
    })
    .await;
}

#[tokio::test]
async fn gateway_reflection_lists_every_public_service() {
    let system = spawn_system().await;
    let services = list_services(system.gateway_channel.clone()).await;
    for name in [
        "clinic.patients.v1.PatientService",
        "clinic.studies.v1.StudyService",
        "clinic.gateway.v1.GatewayService",
        "grpc.health.v1.Health",
    ] {
        assert!(services.contains(&name.to_owned()), "{name} missing from {services:?}");
    }
    assert!(!services.iter().any(|s| s.contains("events")), "internal services are not listed: {services:?}");
}

mod tokio_stream_compat {
    use tonic::transport::Channel;
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };

    /// The services a reflection v1alpha client (like grpcurl 1.8) sees.
    pub async fn list_services(channel: Channel) -> Vec<String> {
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = ServerReflectionClient::new(channel)
            .server_reflection_info(futures::stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        match stream.message().await.unwrap().unwrap().message_response.unwrap() {
            MessageResponse::ListServicesResponse(list) => list.service.into_iter().map(|s| s.name).collect(),
            other => panic!("unexpected {other:?}"),
        }
    }
}
