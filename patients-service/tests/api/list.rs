use std::collections::HashSet;

use sqlx::ConnectOptions;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{assert_invalid, reason, spawn_app, spawn_app_on};

fn assert_invalid_page_token(result: Result<impl std::fmt::Debug, tonic::Status>) {
    let status = result.expect_err("expected INVALID_ARGUMENT");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(reason(&status), "INVALID_PAGE_TOKEN");
    let bad = status.get_details_bad_request().expect("BadRequest");
    assert_eq!(bad.field_violations[0].field, "page_token");
}

/// Inserts `n` patients behind the API's back, for volume.
async fn bulk_insert(app: &crate::helpers::TestApp, n: i64) {
    let mut conn = app.db.admin_options().connect().await.unwrap();
    sqlx::query(
        "insert into patients.patient (first_name, last_name, birth_date, email) \
         select 'Bulk', 'Patient', date '1990-01-01', 'bulk' || g || '@ejemplo.com' from generate_series(1, $1) g",
    )
    .bind(n)
    .execute(&mut conn)
    .await
    .unwrap();
}

#[tokio::test]
async fn list_patients_on_an_empty_collection_is_one_empty_last_page() {
    let app = spawn_app().await;
    let page = app.list(0, "").await.unwrap();
    assert!(page.patients.is_empty());
    assert!(page.next_page_token.is_empty());
}

#[tokio::test]
async fn paging_120_patients_by_50_returns_each_once_in_id_order() {
    let app = spawn_app().await;
    let mut created = Vec::new();
    for n in 0..120 {
        created.push(app.create_nth(n).await.id);
    }

    let first = app.list(50, "").await.unwrap();
    let second = app.list(50, &first.next_page_token).await.unwrap();
    let third = app.list(50, &second.next_page_token).await.unwrap();

    assert_eq!((first.patients.len(), second.patients.len(), third.patients.len()), (50, 50, 20));
    assert!(!first.next_page_token.is_empty() && !second.next_page_token.is_empty());
    assert!(third.next_page_token.is_empty(), "the last page has no next token");
    let ids: Vec<i64> = [first, second, third].into_iter().flat_map(|p| p.patients).map(|p| p.id).collect();
    assert_eq!(ids, created, "each patient once, in id order");
}

#[tokio::test]
async fn an_exactly_full_last_page_has_no_next_token() {
    let app = spawn_app().await;
    for n in 0..4 {
        app.create_nth(n).await;
    }
    let page = app.list(4, "").await.unwrap();
    assert_eq!(page.patients.len(), 4);
    assert!(page.next_page_token.is_empty());
}

#[tokio::test]
async fn page_size_zero_means_fifty_and_large_sizes_are_clamped_to_a_thousand() {
    let app = spawn_app().await;
    bulk_insert(&app, 1005).await;
    assert_eq!(app.list(0, "").await.unwrap().patients.len(), 50);
    assert_eq!(app.list(5000, "").await.unwrap().patients.len(), 1000);
    assert_eq!(app.list(i32::MAX, "").await.unwrap().patients.len(), 1000);
}

#[tokio::test]
async fn negative_page_size_is_invalid() {
    let app = spawn_app().await;
    assert_invalid(app.list(-1, "").await, &["page_size"]);
}

#[tokio::test]
async fn altered_or_invented_page_tokens_are_rejected() {
    let app = spawn_app().await;
    for n in 0..3 {
        app.create_nth(n).await;
    }
    let token = app.list(1, "").await.unwrap().next_page_token;
    let mut altered = token.clone().into_bytes();
    let i = altered.len() / 2;
    altered[i] = if altered[i] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();

    for bad in [altered.as_str(), "garbage", "MTIz", "%%%", &token[..token.len() - 2]] {
        assert_invalid_page_token(app.list(1, bad).await);
    }
}

#[tokio::test]
async fn a_page_token_from_another_deployment_is_rejected() {
    let one = spawn_app().await;
    let other = spawn_app().await;
    for n in 0..3 {
        one.create_nth(n).await;
        other.create_nth(n).await;
    }
    let token = one.list(1, "").await.unwrap().next_page_token;
    assert_invalid_page_token(other.list(1, &token).await);
}

/// Keyset paging: rows inserted and deleted between pages never cause a
/// repeat, and every row that existed for the whole walk is seen.
#[tokio::test]
async fn paging_while_patients_are_inserted_and_deleted_never_repeats_or_skips() {
    let app = spawn_app().await;
    let mut initial = Vec::new();
    for n in 0..60 {
        initial.push(app.create_nth(n).await.id);
    }
    let mut deleted = HashSet::new();
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut extra = 1000;
    loop {
        let page = app.list(7, &token).await.unwrap();
        seen.extend(page.patients.iter().map(|p| p.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        // Between pages: delete one row already seen and one not yet seen,
        // and insert two new ones (which land after the cursor).
        let last = *seen.last().unwrap();
        if let Some(&behind) = seen.iter().rev().nth(2)
            && deleted.insert(behind)
        {
            app.delete(behind, "", false).await.unwrap();
        }
        if let Some(&ahead) = initial.iter().find(|&&id| id > last + 3 && !deleted.contains(&id)) {
            deleted.insert(ahead);
            app.delete(ahead, "", false).await.unwrap();
        }
        for _ in 0..2 {
            extra += 1;
            app.create_nth(extra).await;
        }
    }

    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no patient is returned twice");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "ids ascend across pages");
    for id in initial.iter().filter(|id| !deleted.contains(id)) {
        assert!(unique.contains(id), "patient {id} existed for the whole walk but was skipped");
    }
}

#[tokio::test]
async fn a_page_token_stays_valid_across_a_service_restart() {
    let app = spawn_app().await;
    let ids: Vec<i64> = {
        let mut ids = Vec::new();
        for n in 0..3 {
            ids.push(app.create_nth(n).await.id);
        }
        ids
    };
    let token = app.list(2, "").await.unwrap().next_page_token;
    let db = app.shutdown().await;

    let restarted = spawn_app_on(db).await;
    let page = restarted.list(2, &token).await.unwrap();
    assert_eq!(page.patients.iter().map(|p| p.id).collect::<Vec<_>>(), vec![ids[2]]);
}
