//! ListStudies' `filter` and `order_by`, and the listing view with
//! `filter`, `study_filter` and `order_by`, across the two services.

use std::collections::{BTreeMap, HashSet};

use clinic_proto::{
    gateway::v1 as gpb,
    studies::v1::{self as pb, BodyPart, StudyType, UrgencyLevel},
};
use tonic::Code;

use system_tests::{TestSystem, reason, spawn_system};

fn study(patient_id: i64, urgency: UrgencyLevel, part: BodyPart, kind: StudyType) -> pb::Study {
    pb::Study {
        patient_id,
        urgency_level: urgency.into(),
        body_part: part.into(),
        study_type: kind.into(),
        description: "SEARCH".into(),
        ..Default::default()
    }
}

async fn studies(
    system: &TestSystem,
    patient_ids: &[i64],
    filter: &str,
    order_by: &str,
) -> Result<Vec<pb::Study>, tonic::Status> {
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = system
            .study_client
            .clone()
            .list_studies(pb::ListStudiesRequest {
                page_size: 2,
                page_token: token,
                patient_ids: patient_ids.to_vec(),
                filter: filter.into(),
                order_by: order_by.into(),
                show_deleted: false,
            })
            .await?
            .into_inner();
        all.extend(page.studies);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        token = page.next_page_token;
    }
}

#[tokio::test]
async fn studies_filter_by_vocabulary_patient_and_time_and_order_by_urgency_rank() {
    let system = spawn_system().await;
    let a = system.create_patient(1).await.id;
    let b = system.create_patient(2).await.id;
    use BodyPart::*;
    use StudyType::*;
    use UrgencyLevel::*;
    let mut ids = BTreeMap::new();
    for (n, (patient, urgency, part, kind)) in [
        (a, High, Chest, Xray),
        (a, Low, Chest, Ct),
        (a, Mid, Knee, Mri),
        (b, High, Knee, Xray),
        (b, Low, Head, Xray),
    ]
    .into_iter()
    .enumerate()
    {
        ids.insert(n, system.create_study(study(patient, urgency, part, kind)).await.unwrap().id);
    }
    let found = |s: Vec<pb::Study>| s.into_iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(found(studies(&system, &[], "urgency_level = HIGH", "").await.unwrap()), [ids[&0], ids[&3]]);
    assert_eq!(
        found(studies(&system, &[], "urgency_level = URGENCY_LEVEL_HIGH", "").await.unwrap()),
        [ids[&0], ids[&3]]
    );
    assert_eq!(
        found(studies(&system, &[], "urgency_level >= MID", "").await.unwrap()),
        [ids[&0], ids[&2], ids[&3]]
    );
    assert_eq!(
        found(studies(&system, &[], "urgency_level < HIGH AND urgency_level != LOW", "").await.unwrap()),
        [ids[&2]]
    );
    assert_eq!(
        found(studies(&system, &[], "urgency_level = HIGH AND body_part = CHEST", "").await.unwrap()),
        [ids[&0]]
    );
    assert_eq!(
        found(studies(&system, &[], "study_type = XRAY AND NOT body_part = KNEE", "").await.unwrap()),
        [ids[&0], ids[&4]]
    );
    assert_eq!(
        found(studies(&system, &[b], "study_type = STUDY_TYPE_XRAY", "").await.unwrap()),
        [ids[&3], ids[&4]]
    );
    assert_eq!(found(studies(&system, &[], &format!("patient_id = {a}"), "").await.unwrap()).len(), 3);
    assert_eq!(
        found(
            studies(&system, &[], r#"create_time >= "2000-01-01" AND update_time < "2999-01-01""#, "")
                .await
                .unwrap()
        )
        .len(),
        5
    );

    let by_urgency = found(studies(&system, &[], "", "urgency_level desc").await.unwrap());
    assert_eq!(
        by_urgency,
        [ids[&0], ids[&3], ids[&2], ids[&1], ids[&4]],
        "HIGH, MID, LOW (rank, not alphabet), then id"
    );
    let by_urgency_in_a = found(studies(&system, &[a], "", "urgency_level, create_time desc").await.unwrap());
    assert_eq!(by_urgency_in_a, [ids[&1], ids[&2], ids[&0]]);
    let newest_first =
        found(studies(&system, &[a, b], "body_part = KNEE", "create_time desc").await.unwrap());
    assert_eq!(newest_first, [ids[&3], ids[&2]]);

    for (filter, what) in [
        ("urgency_level = URGENT", "`urgency_level` takes one of LOW, MID, HIGH"),
        ("body_part = \"CHEST\" AND colour = RED", "unknown field `colour`"),
        (r#"patient_id = "a""#, "expected a whole number"),
    ] {
        let status = studies(&system, &[], filter, "").await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        let bad = tonic_types::StatusExt::get_details_bad_request(&status).unwrap();
        assert!(
            bad.field_violations[0].field == "filter" && bad.field_violations[0].description.contains(what),
            "{bad:?}"
        );
    }
    let status = studies(&system, &[], "", "body_part").await.unwrap_err();
    assert_eq!(reason(&status), "INVALID_FIELDS");
}

async fn listing(
    system: &TestSystem,
    filter: &str,
    study_filter: &str,
    order_by: &str,
    page_size: i32,
) -> Result<(Vec<gpb::PatientWithStudies>, usize), tonic::Status> {
    let mut all = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = system
            .gateway_client
            .clone()
            .list_patients_with_studies(gpb::ListPatientsWithStudiesRequest {
                page_size,
                page_token: token,
                filter: filter.into(),
                study_filter: study_filter.into(),
                order_by: order_by.into(),
                show_deleted: false,
            })
            .await?
            .into_inner();
        pages += 1;
        assert!(page.patients.len() <= page_size as usize);
        all.extend(page.patients);
        if page.next_page_token.is_empty() {
            return Ok((all, pages));
        }
        token = page.next_page_token;
    }
}

/// 40 patients; `urgent` decides who gets a HIGH study (besides LOW ones
/// for everybody). The listing with `study_filter` must show exactly those
/// patients, each with only their HIGH studies, in order, once each.
async fn check_study_filter(urgent: impl Fn(usize) -> bool) {
    let system = spawn_system().await;
    let mut expected = Vec::new();
    for n in 0..40 {
        let patient = system.create_patient(n).await;
        system
            .create_study(study(patient.id, UrgencyLevel::Low, BodyPart::Head, StudyType::Ct))
            .await
            .unwrap();
        if urgent(n) {
            let high = system
                .create_study(study(patient.id, UrgencyLevel::High, BodyPart::Chest, StudyType::Xray))
                .await
                .unwrap();
            expected.push((patient.id, vec![high.id]));
        }
    }
    let (found, pages) = listing(&system, "", "urgency_level = HIGH", "", 5).await.unwrap();
    let got: Vec<(i64, Vec<i64>)> = found
        .iter()
        .map(|p| (p.patient.as_ref().unwrap().id, p.studies.iter().map(|s| s.id).collect()))
        .collect();
    assert_eq!(got, expected, "exactly the patients with a HIGH study, in id order, each with only those");
    assert!(pages <= expected.len() / 5 + 3, "{pages} pages for {} matches", expected.len());
    let unique: HashSet<i64> = got.iter().map(|(id, _)| *id).collect();
    assert_eq!(unique.len(), got.len());
}

#[tokio::test]
async fn the_listing_with_a_study_filter_where_matches_are_dense() {
    check_study_filter(|n| n % 5 != 0).await;
}

#[tokio::test]
async fn the_listing_with_a_study_filter_where_matches_are_rare() {
    check_study_filter(|n| n == 3 || n == 37).await;
}

#[tokio::test]
async fn the_listing_filters_and_orders_patients_and_binds_its_tokens() {
    let system = spawn_system().await;
    for n in 0..6 {
        let patient = system.create_patient(n).await;
        let urgency = if n % 2 == 0 { UrgencyLevel::High } else { UrgencyLevel::Low };
        system.create_study(study(patient.id, urgency, BodyPart::Knee, StudyType::Mri)).await.unwrap();
    }
    let status = listing(&system, r#"email = "p*""#, "", "email desc", 4).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "email is not a sort field");
    let (desc, _) = listing(&system, r#"email = "p*""#, "", "id desc", 4).await.unwrap();
    let ids: Vec<i64> = desc.iter().map(|p| p.patient.as_ref().unwrap().id).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]) && ids.len() == 6, "{ids:?}");
    let (urgent, _) = listing(&system, "", "urgency_level = HIGH", "id desc", 2).await.unwrap();
    assert_eq!(urgent.len(), 3);
    assert!(
        urgent.iter().all(|p| p.studies.iter().all(|s| s.urgency_level == i32::from(UrgencyLevel::High)))
    );

    // A token is bound to its filters and order.
    let first = system
        .gateway_client
        .clone()
        .list_patients_with_studies(gpb::ListPatientsWithStudiesRequest {
            page_size: 1,
            study_filter: "urgency_level = HIGH".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let refused = system
        .gateway_client
        .clone()
        .list_patients_with_studies(gpb::ListPatientsWithStudiesRequest {
            page_size: 1,
            page_token: first.next_page_token,
            study_filter: "urgency_level = LOW".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!((refused.code(), reason(&refused)), (Code::InvalidArgument, "INVALID_PAGE_TOKEN".into()));

    // A bad study filter is the caller's `study_filter`, with its position.
    for bad in ["urgency_level = SOON", "urgency_level ="] {
        let status = listing(&system, "", bad, "", 5).await.unwrap_err();
        let violations = tonic_types::StatusExt::get_details_bad_request(&status).unwrap().field_violations;
        assert_eq!(violations[0].field, "study_filter", "{bad}: {violations:?}");
        assert!(violations[0].description.contains(" at "), "{violations:?}");
    }
}
