//! Mutual TLS between Clinic's own processes, the option for a network
//! without a mesh: every call between the services (the gateway's, a
//! study's patient check, the cascade's outbox reads) goes over TLS with
//! both ends' certificates checked, and a caller without a certificate of
//! the system's CA is refused before any rpc.

use std::time::Duration;

use clinic_proto::{
    gateway::v1 as gpb,
    patients::v1::{self as ppb, patient_service_client::PatientServiceClient},
};
use clinic_testkit::auth::admin;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use system_tests::{eventually, spawn_system_with_mtls, study};

#[tokio::test]
async fn calls_between_the_services_go_over_mutual_tls_and_callers_without_a_certificate_are_refused() {
    let system = spawn_system_with_mtls().await;
    let mtls = system.mtls.clone().unwrap();
    let patient = system.create_patient(1).await;
    // studies-service asks patients-service whether the patient exists.
    system.create_study(study(patient.id)).await.expect("studies-service reaches patients-service");
    // The gateway calls both.
    let listing = system
        .gateway_client
        .clone()
        .list_patients_with_studies(gpb::ListPatientsWithStudiesRequest {
            page_size: 10,
            ..Default::default()
        })
        .await
        .expect("the gateway reaches both services")
        .into_inner();
    assert_eq!(listing.patients.len(), 1);
    assert_eq!(listing.patients[0].studies.len(), 1);
    // The cascade reads patients-service's outbox with its own token.
    system.delete_patient(patient.id, true).await.unwrap();
    eventually(Duration::from_secs(10), "the studies of a deleted patient go", || async {
        system.all_studies(&[patient.id], 100).await.is_empty()
    })
    .await;

    let get = |endpoint: Endpoint| async move {
        let channel = endpoint.connect_timeout(Duration::from_secs(2)).connect_lazy();
        PatientServiceClient::new(admin(channel))
            .get_patient(ppb::GetPatientRequest { id: 1, ..Default::default() })
            .await
    };
    let ca = Certificate::from_pem(std::fs::read(&mtls.ca).unwrap());
    let https = || Endpoint::from_shared(format!("https://{}", system.patients_addr)).unwrap();
    let plaintext = get(Endpoint::from_shared(format!("http://{}", system.patients_addr)).unwrap()).await;
    assert!(plaintext.is_err(), "plaintext is refused");
    let anonymous = get(https()
        .tls_config(ClientTlsConfig::new().ca_certificate(ca.clone()).domain_name("127.0.0.1"))
        .unwrap())
    .await;
    assert!(anonymous.is_err(), "a TLS client without a certificate is refused");
    let foreign = clinic_testkit::keys::certificates(&[]).unwrap();
    let stranger = get(https()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(ca.clone())
                .identity(Identity::from_pem(foreign.cert_pem, foreign.key_pem))
                .domain_name("127.0.0.1"),
        )
        .unwrap())
    .await;
    assert!(stranger.is_err(), "a certificate of another CA is refused");
    let member = get(https()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(ca)
                .identity(Identity::from_pem(
                    std::fs::read(&mtls.cert).unwrap(),
                    std::fs::read(&mtls.key).unwrap(),
                ))
                .domain_name("127.0.0.1"),
        )
        .unwrap())
    .await;
    assert_eq!(
        member.unwrap_err().code(),
        tonic::Code::NotFound,
        "the system's own certificate gets an answer"
    );
}
