use tonic::Code;

use clinic_testkit::assert::{assert_invalid, reason};

use crate::helpers::{spawn_app, study};

#[tokio::test]
async fn list_studies_by_patient_ids_returns_only_theirs_in_id_order_across_pages() {
    let app = spawn_app(&[]).await;
    let (a, b, c) = (app.create_patient(1).await, app.create_patient(2).await, app.create_patient(3).await);
    let mut expected = Vec::new();
    for round in 0..4 {
        for (patient, keep) in [(&a, true), (&b, false), (&c, true)] {
            let created = app.create_study(study(patient.id)).await.unwrap();
            if keep {
                expected.push(created.id);
            }
            let _ = round;
        }
    }

    let got: Vec<i64> = app.all_studies(&[c.id, a.id, c.id], 3).await.into_iter().map(|s| s.id).collect();

    assert_eq!(got, expected, "only the asked patients' studies, each once, in id order");
    assert_eq!(app.all_studies(&[], 5).await.len(), 12, "no filter lists every study");
}

#[tokio::test]
async fn list_studies_rejects_more_than_a_thousand_patient_ids_and_bad_ids() {
    let app = spawn_app(&[]).await;
    let too_many: Vec<i64> = (1..=1001).collect();
    assert_invalid(app.list_studies(&too_many, 10, "").await, &["patient_ids"]);
    let thousand: Vec<i64> = (1..=1000).collect();
    assert!(app.list_studies(&thousand, 10, "").await.unwrap().studies.is_empty());
    assert_invalid(app.list_studies(&[5, 0, -3], 10, "").await, &["patient_ids[1]", "patient_ids[2]"]);
    assert_invalid(app.list_studies(&[], -1, "").await, &["page_size"]);
}

#[tokio::test]
async fn a_page_token_is_bound_to_its_patient_filter() {
    let app = spawn_app(&[]).await;
    let (a, b) = (app.create_patient(1).await, app.create_patient(2).await);
    for _ in 0..3 {
        app.create_study(study(a.id)).await.unwrap();
        app.create_study(study(b.id)).await.unwrap();
    }
    let token = app.list_studies(&[a.id], 1, "").await.unwrap().next_page_token;

    assert!(app.list_studies(&[a.id], 1, &token).await.is_ok());
    for other_filter in [vec![b.id], vec![], vec![a.id, b.id]] {
        let status = app.list_studies(&other_filter, 1, &token).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(reason(&status), "INVALID_PAGE_TOKEN");
    }
}
