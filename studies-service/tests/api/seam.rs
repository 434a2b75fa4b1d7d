//! The collaborators of studies-service can be replaced: its rules hold
//! whatever answers the patient checks and supplies the deletions.

use std::time::{Duration, Instant};

use clinic_proto::studies::v1 as pb;
use studies_service::domain::PatientEventKind;
use tonic::Code;

use crate::helpers::{spawn_app, study};

#[tokio::test]
async fn a_study_is_created_only_for_a_patient_the_directory_knows() {
    let app = spawn_app(&[7]).await;
    let mut client = app.client.clone();
    let created = client
        .create_study(pb::CreateStudyRequest { study: Some(study(7)), request_id: String::new() })
        .await
        .expect("patient 7 is known")
        .into_inner();
    assert_eq!(created.patient_id, 7);
    let refused = client
        .create_study(pb::CreateStudyRequest { study: Some(study(8)), request_id: String::new() })
        .await
        .expect_err("patient 8 is unknown");
    assert_eq!(refused.code(), Code::NotFound);
}

#[tokio::test]
async fn a_deletion_from_the_event_source_removes_the_studies_and_refuses_new_ones() {
    let app = spawn_app(&[3]).await;
    let mut client = app.client.clone();
    client
        .create_study(pb::CreateStudyRequest { study: Some(study(3)), request_id: String::new() })
        .await
        .expect("created");
    app.patient_feed.publish(3, PatientEventKind::Deleted);
    let list = pb::ListStudiesRequest { patient_ids: vec![3], ..Default::default() };
    let give_up = Instant::now() + Duration::from_secs(10);
    while !client.list_studies(list.clone()).await.expect("listed").into_inner().studies.is_empty() {
        assert!(Instant::now() < give_up, "the deletion was not applied within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = client
        .create_study(pb::CreateStudyRequest { study: Some(study(3)), request_id: String::new() })
        .await
        .expect_err("the patient is deleted, although the directory still knows them");
    assert_eq!(refused.code(), Code::NotFound);
}
