//! Memory per call is bounded before the rows are read: the worst
//! ListStudiesByPatient a viewer may send (1,000 patients × 100 studies, each
//! with a 2,000-character description), four at once, keeps the process's
//! allocations (the service's and this test client's, in one process) far
//! inside a container's limit. A test binary of its own, so nothing else
//! allocates while it measures.

#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use clinic_proto::studies::v1 as pb;
use sqlx::ConnectOptions;

#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

/// Patients per call, and studies of each: the largest a request may ask for.
const PATIENTS: i64 = 1000;
const STUDIES_EACH: i64 = 100;

/// The most the four calls may add to the process's peak allocation: half
/// the services' 256 MiB container limit.
const BUDGET: usize = 128 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_worst_list_studies_by_patient_calls_at_once_stay_within_a_bounded_memory() {
    let app = helpers::spawn_app(&[]).await;
    let mut admin = app.db.admin_options().connect().await.unwrap();
    sqlx::query(
        "insert into studies.study (patient_id, urgency_level, body_part, description, study_type) \
         select p, 'LOW', 'CHEST', repeat('x', 2000), 'XRAY' \
         from generate_series(1, $1) as p, generate_series(1, $2) as s",
    )
    .bind(PATIENTS)
    .bind(STUDIES_EACH)
    .execute(&mut admin)
    .await
    .unwrap();
    let request = pb::ListStudiesByPatientRequest {
        patient_ids: (1..=PATIENTS).collect(),
        studies_per_patient: STUDIES_EACH as i32,
        ..Default::default()
    };
    let before = ALLOCATOR.allocated();
    let calls = (0..4).map(|_| {
        let (mut client, request) = (app.client.clone(), request.clone());
        tokio::spawn(async move { client.list_studies_by_patient(request).await })
    });
    let answers = futures::future::join_all(calls).await;
    let grew = ALLOCATOR.max_allocated().saturating_sub(before);
    println!("four worst calls at once: peak allocation grew by {} MiB", grew >> 20);
    assert!(grew < BUDGET, "four worst calls at once grew the peak allocation by {} MiB", grew >> 20);
    for answer in answers {
        let answer = answer.unwrap().expect("the call succeeds").into_inner();
        assert_eq!(answer.patients.len(), PATIENTS as usize);
        assert!(
            answer.patients.iter().all(|p| !p.next_page_token.is_empty()),
            "the rest of each patient's studies follows by token"
        );
    }
}
