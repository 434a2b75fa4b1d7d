//! Patient identifiers (system and value, one live patient per pair) and
//! conditional creates, which FHIR's `If-None-Exist` stands on.

use clinic_proto::patients::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{assert_invalid, assert_no_internals, patient, reason, spawn_app};

const MRN: &str = "https://clinic.example/mrn";

fn with_ids(mut p: pb::Patient, ids: &[(&str, &str)]) -> pb::Patient {
    p.identifiers =
        ids.iter().map(|(s, v)| pb::Identifier { system: (*s).into(), value: (*v).into() }).collect();
    p
}

fn filtered(filter: &str) -> pb::ListPatientsRequest {
    pb::ListPatientsRequest { filter: filter.into(), ..Default::default() }
}

#[tokio::test]
async fn identifiers_are_kept_in_order_found_by_filter_and_unique_among_live_patients() {
    let app = spawn_app().await;
    let ids = [(MRN, "A-0001"), ("urn:oid:2.16.840.1.113883.4.1", "123-45-6789")];
    let ana =
        app.create(with_ids(patient("Ana", "Ruiz", "1980-01-01", "ana@ejemplo.com"), &ids)).await.unwrap();
    let got: Vec<_> = ana.identifiers.iter().map(|i| (i.system.as_str(), i.value.as_str())).collect();
    assert_eq!(got, ids);
    assert_eq!(app.get(ana.id).await.unwrap().identifiers, ana.identifiers);

    let mut client = app.client.clone();
    let found = client.list_patients(filtered(&format!(r#"identifier = "{MRN}|A-0001""#))).await.unwrap();
    assert_eq!(found.into_inner().patients.iter().map(|p| p.id).collect::<Vec<_>>(), [ana.id]);
    let none = client.list_patients(filtered(&format!(r#"identifier = "{MRN}|A-000""#))).await.unwrap();
    assert!(none.into_inner().patients.is_empty(), "exact, not a prefix");
    let by_id = client.list_patients(filtered(&format!("id = {}", ana.id))).await.unwrap();
    assert_eq!(by_id.into_inner().patients.len(), 1);

    // The same pair on another patient: refused, on create and on update.
    let taken = app
        .create(with_ids(patient("Eva", "Sanz", "1981-01-01", "eva@ejemplo.com"), &[(MRN, "A-0001")]))
        .await;
    let status = taken.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (Code::AlreadyExists, "IDENTIFIER_ALREADY_EXISTS"));
    assert_no_internals(&status);
    assert!(!status.message().contains("A-0001"), "{status:?}");
    let eva = app
        .create(patient("Eva", "Sanz", "1981-01-01", "eva@ejemplo.com"))
        .await
        .expect("nothing half-written");
    let update =
        app.update(with_ids(pb::Patient { id: eva.id, ..Default::default() }, &[(MRN, "A-0001")]), &[]).await;
    assert_eq!(reason(&update.unwrap_err()), "IDENTIFIER_ALREADY_EXISTS");

    // Another system with the same value is another identifier.
    let eva = app
        .update(
            with_ids(
                pb::Patient { id: eva.id, ..Default::default() },
                &[("https://other.example/mrn", "A-0001")],
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(eva.identifiers.len(), 1);

    // A deleted patient's identifiers are free; undeleting it then fails.
    app.delete(ana.id, "", false).await.unwrap();
    let bea = app
        .create(with_ids(patient("Bea", "Gil", "1982-01-01", "bea@ejemplo.com"), &[(MRN, "A-0001")]))
        .await
        .unwrap();
    let undelete =
        client.undelete_patient(pb::UndeletePatientRequest { id: ana.id, ..Default::default() }).await;
    let status = undelete.unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_str()),
        (Code::FailedPrecondition, "IDENTIFIER_ALREADY_EXISTS")
    );

    // Clearing takes naming the field in the mask; then the pair is free.
    let bea = app.update(pb::Patient { id: bea.id, ..Default::default() }, &["identifiers"]).await.unwrap();
    assert!(bea.identifiers.is_empty());
    client.undelete_patient(pb::UndeletePatientRequest { id: ana.id, ..Default::default() }).await.unwrap();

    // Revisions keep the identifiers each version had.
    let revisions = app.revisions(bea.id, 10).await.unwrap();
    assert!(revisions[0].patient.as_ref().unwrap().identifiers.is_empty());
    assert_eq!(revisions[1].patient.as_ref().unwrap().identifiers.len(), 1);
}

#[tokio::test]
async fn identifiers_are_validated_each_at_its_own_path() {
    let app = spawn_app().await;
    let base = || patient("Ana", "Ruiz", "1980-01-01", "ana@ejemplo.com");
    assert_invalid(app.create(with_ids(base(), &[("mrn", "1")])).await, &["patient.identifiers[0].system"]);
    assert_invalid(
        app.create(with_ids(base(), &[(MRN, "1"), (MRN, " "), ("urn:x|y", "2")])).await,
        &["patient.identifiers[1].value", "patient.identifiers[2].system"],
    );
    assert_invalid(
        app.create(with_ids(base(), &[(MRN, "1"), (MRN, "1")])).await,
        &["patient.identifiers[1]"],
    );
    let long = "9".repeat(101);
    assert_invalid(
        app.create(with_ids(base(), &[(MRN, long.as_str())])).await,
        &["patient.identifiers[0].value"],
    );
    let many: Vec<(String, String)> = (0..21).map(|i| (MRN.to_owned(), i.to_string())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(s, v)| (s.as_str(), v.as_str())).collect();
    assert_invalid(app.create(with_ids(base(), &many)).await, &["patient.identifiers"]);
    let mut client = app.client.clone();
    let bad = client.list_patients(filtered(r#"identifier > "x|y""#)).await;
    assert_invalid(bad, &["filter"]);
}

/// The condition is not backed by any unique key (different emails, no
/// identifier): only the conditional creates taking turns keeps it to one.
#[tokio::test]
async fn sixteen_identical_conditional_creates_at_once_make_one_patient() {
    let app = spawn_app().await;
    let condition = r#"last_name = "Current" AND birth_date = "1990-01-01""#;
    let attempts = (0..16).map(|i| {
        let mut client = app.client.clone();
        let p = patient("Con", "Current", "1990-01-01", &format!("c{i}@ejemplo.com"));
        let request = pb::CreatePatientRequest {
            patient: Some(p),
            if_none_exist: condition.into(),
            ..Default::default()
        };
        async move { client.create_patient(request).await.map(|r| r.into_inner()) }
    });
    let outcomes = futures::future::join_all(attempts).await;
    let created: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
    assert_eq!(created.len(), 1, "{outcomes:?}");
    for refused in outcomes.iter().filter_map(|o| o.as_ref().err()) {
        assert_eq!((refused.code(), reason(refused).as_str()), (Code::AlreadyExists, "PATIENT_MATCH_EXISTS"));
        let info = refused.get_details_error_info().unwrap();
        assert_eq!(info.metadata["patient_id"], created[0].id.to_string());
    }
    assert_eq!(app.list_all(100).await.len(), 1);

    // Several matches: nothing created, FAILED_PRECONDITION.
    app.create(patient("Con", "Current", "1990-01-01", "other@ejemplo.com")).await.unwrap();
    let mut client = app.client.clone();
    let p = patient("Con", "Current", "1990-01-01", "third@ejemplo.com");
    let several = client
        .create_patient(pb::CreatePatientRequest {
            patient: Some(p),
            if_none_exist: condition.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (several.code(), reason(&several).as_str()),
        (Code::FailedPrecondition, "SEVERAL_PATIENTS_MATCH")
    );
    let bad = client
        .create_patient(pb::CreatePatientRequest {
            patient: Some(patient("Con", "Current", "1990-01-01", "fourth@ejemplo.com")),
            if_none_exist: "nonsense =".into(),
            ..Default::default()
        })
        .await;
    assert_invalid(bad, &["if_none_exist"]);
}
