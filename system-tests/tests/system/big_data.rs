//! A patient whose studies add up to far more than one message may carry:
//! 5,000 studies with 2,000-character CJK and emoji descriptions (about 35
//! MB). Every answer stays bounded in bytes, none fails, and every study
//! can still be fetched, page by page.

use std::collections::BTreeSet;

use clinic_proto::{gateway::v1 as gpb, studies::v1 as pb};
use prost::Message;
use sqlx::ConnectOptions;

use system_tests::{TestSystem, spawn_system, study};

const HEAVY: usize = 5000;
const MESSAGE_LIMIT: usize = 4 << 20;

async fn heavy_patient(system: &TestSystem) -> (i64, i64) {
    let heavy = system.create_patient(1).await;
    let light = system.create_patient(2).await;
    for _ in 0..2 {
        system.create_study(study(light.id)).await.unwrap();
    }
    let mut admin = system.db.admin_options().connect().await.unwrap();
    sqlx::query(
        "insert into studies.study (patient_id, urgency_level, body_part, description, study_type) \
         select $1, 'HIGH', 'CHEST', repeat('病😀', 1000), 'CT' from generate_series(1, $2)",
    )
    .bind(heavy.id)
    .bind(HEAVY as i64)
    .execute(&mut admin)
    .await
    .unwrap();
    (heavy.id, light.id)
}

#[tokio::test]
async fn the_listing_serves_a_patient_whose_studies_exceed_any_message() {
    let system = spawn_system().await;
    let (heavy, light) = heavy_patient(&system).await;

    let page = system
        .gateway_client
        .clone()
        .list_patients_with_studies(gpb::ListPatientsWithStudiesRequest {
            page_size: 50,
            ..Default::default()
        })
        .await
        .expect("the listing answers")
        .into_inner();

    assert!(page.encoded_len() <= MESSAGE_LIMIT, "{} bytes", page.encoded_len());
    let first = &page.patients[0];
    assert_eq!(first.patient.as_ref().unwrap().id, heavy);
    assert!(first.studies.len() <= 20);
    assert!(!first.next_studies_page_token.is_empty(), "the rest is a token away");
    let second = &page.patients[1];
    assert_eq!((second.patient.as_ref().unwrap().id, second.studies.len()), (light, 2));
    assert!(second.next_studies_page_token.is_empty());

    // The token continues exactly where the listing stopped, to the end.
    let mut seen: Vec<i64> = first.studies.iter().map(|s| s.id).collect();
    let mut token = first.next_studies_page_token.clone();
    let mut pages = 0;
    while !token.is_empty() {
        let more = system
            .gateway_client
            .clone()
            .get_patient_with_studies(gpb::GetPatientWithStudiesRequest {
                id: heavy,
                page_size: 1000,
                page_token: token,
            })
            .await
            .expect("a page of the rest")
            .into_inner();
        assert!(more.encoded_len() <= MESSAGE_LIMIT, "{} bytes", more.encoded_len());
        seen.extend(more.studies.iter().map(|s| s.id));
        token = more.next_studies_page_token;
        pages += 1;
    }
    assert!(pages >= 8, "35 MB cannot come in fewer than 8 bounded pages, came in {pages}");
    assert_eq!(seen.len(), HEAVY, "every study, once");
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), HEAVY);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in id order");
}

#[tokio::test]
async fn list_studies_pages_by_bytes_as_well_as_by_count() {
    let system = spawn_system().await;
    let (heavy, _) = heavy_patient(&system).await;
    let mut token = String::new();
    let mut total = 0;
    loop {
        let page: pb::ListStudiesResponse =
            system.list_studies(&[heavy], 1000, &token).await.expect("a page");
        assert!(page.encoded_len() <= MESSAGE_LIMIT, "{} bytes", page.encoded_len());
        assert!(page.studies.len() < 1000, "a page of 1000 heavy studies would be 7 MB");
        total += page.studies.len();
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(total, HEAVY);
}
