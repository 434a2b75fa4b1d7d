//! studies-service's calls to the real patients-service (its CRUD is tested
//! alone in `studies-service/tests/api`, with stand-ins).

use tonic::Code;

use system_tests::{assert_no_internals, reason, spawn_system, study};

#[tokio::test]
async fn create_study_while_patients_service_is_down_is_unavailable_and_writes_nothing() {
    let mut system = spawn_system().await;
    let patient = system.create_patient(1).await;
    system.stop_patients().await;

    let status = system.create_study(study(patient.id)).await.unwrap_err();

    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(reason(&status), "PATIENTS_SERVICE_UNAVAILABLE");
    assert_no_internals(&status);
    assert!(system.all_studies(&[], 100).await.is_empty(), "nothing was written");

    system.start_patients().await;
    system.create_study(study(patient.id)).await.expect("works again once patients-service is back");
}
