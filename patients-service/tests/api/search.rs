//! ListPatients' `filter` and `order_by`: every field and operator, case and
//! accents, prefixes, precedence, errors with positions, and keyset paging
//! under any order while patients come and go.

use std::{
    collections::{BTreeMap, HashSet},
    time::{Duration, Instant},
};

use clinic_proto::patients::v1 as pb;
use sqlx::ConnectOptions;
use tonic::Code;

use crate::helpers::{TestApp, patient, reason, spawn_app};

impl TestApp {
    async fn search(
        &self,
        filter: &str,
        order_by: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<pb::ListPatientsResponse, tonic::Status> {
        self.client
            .clone()
            .list_patients(pb::ListPatientsRequest {
                page_size,
                page_token: page_token.into(),
                filter: filter.into(),
                order_by: order_by.into(),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner())
    }

    /// Every patient matching, page by page, as "first last".
    async fn found(&self, filter: &str, order_by: &str) -> Vec<String> {
        let mut names = Vec::new();
        let mut token = String::new();
        loop {
            let page =
                self.search(filter, order_by, 3, &token).await.unwrap_or_else(|s| panic!("{filter}: {s:?}"));
            names.extend(page.patients.iter().map(|p| format!("{} {}", p.first_name, p.last_name)));
            if page.next_page_token.is_empty() {
                return names;
            }
            token = page.next_page_token;
        }
    }

    async fn violation(&self, filter: &str, order_by: &str) -> (String, String) {
        let status = self.search(filter, order_by, 10, "").await.expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument);
        let bad = tonic_types::StatusExt::get_details_bad_request(&status).expect("BadRequest");
        let v = &bad.field_violations[0];
        (v.field.clone(), v.description.clone())
    }
}

async fn people(app: &TestApp) {
    for (first, last, birth, email) in [
        ("José", "Treviño", "1990-05-05", "jose@ejemplo.com"),
        ("Jose\u{301}", "Trevino", "1985-01-01", "jose2@ejemplo.com"),
        ("JOSÉ", "Álvarez", "1970-03-03", "JOSE3@EJEMPLO.COM"),
        ("Ana", "Borges", "2001-12-31", "ana@ejemplo.com"),
        ("Anabel", "Trevor", "1990-05-04", "anabel@ejemplo.com"),
        ("Bruno", "alvarez", "1960-07-07", "bruno@ejemplo.com"),
    ] {
        app.create(patient(first, last, birth, email)).await.expect("created");
    }
}

#[tokio::test]
async fn names_and_emails_match_ignoring_case_and_accents_with_prefixes() {
    let app = spawn_app().await;
    people(&app).await;
    for filter in [r#"first_name = "jose""#, r#"first_name = "JOSÉ""#, "first_name = \"Jose\u{301}\""] {
        assert_eq!(app.found(filter, "").await, ["José Treviño", "José Trevino", "JOSÉ Álvarez"], "{filter}");
    }
    assert_eq!(app.found(r#"last_name = "trevino""#, "").await, ["José Treviño", "José Trevino"]);
    assert_eq!(
        app.found(r#"last_name = "trev*""#, "").await,
        ["José Treviño", "José Trevino", "Anabel Trevor"]
    );
    assert_eq!(app.found(r#"last_name = "TRÉV*""#, "").await.len(), 3);
    assert_eq!(
        app.found(r#"last_name != "trev*""#, "").await,
        ["JOSÉ Álvarez", "Ana Borges", "Bruno alvarez"]
    );
    assert_eq!(app.found(r#"email = "jose3@ejemplo.com""#, "").await, ["JOSÉ Álvarez"]);
    assert_eq!(app.found(r#"email = "ana*""#, "").await, ["Ana Borges", "Anabel Trevor"]);
    assert_eq!(
        app.found(r#"first_name = "an%*""#, "").await,
        Vec::<String>::new(),
        "% is a character, not a wildcard"
    );
    assert_eq!(
        app.found(r#"last_name > "borges""#, "").await,
        ["José Treviño", "José Trevino", "Anabel Trevor"]
    );
}

#[tokio::test]
async fn dates_and_times_compare_with_every_operator() {
    let app = spawn_app().await;
    people(&app).await;
    let born = |filter: &'static str| {
        let app = &app;
        async move { app.found(filter, "birth_date").await }
    };
    assert_eq!(born(r#"birth_date = "1990-05-05""#).await, ["José Treviño"]);
    assert_eq!(born(r#"birth_date >= "1990-05-04""#).await, ["Anabel Trevor", "José Treviño", "Ana Borges"]);
    assert_eq!(born(r#"birth_date > "1990-05-04""#).await, ["José Treviño", "Ana Borges"]);
    assert_eq!(born(r#"birth_date < "1970-03-03""#).await, ["Bruno alvarez"]);
    assert_eq!(born(r#"birth_date <= "1970-03-03""#).await, ["Bruno alvarez", "JOSÉ Álvarez"]);
    assert_eq!(born(r#"birth_date != "1990-05-05""#).await.len(), 5);

    let newest =
        app.search("", "create_time desc", 1, "").await.unwrap().patients.remove(0).create_time.unwrap();
    let marker = chrono::DateTime::from_timestamp(newest.seconds, newest.nanos as u32).unwrap();
    app.create(patient("Late", "Comer", "1999-09-09", "late@ejemplo.com")).await.unwrap();
    let after = format!(r#"create_time > "{}""#, marker.to_rfc3339());
    assert_eq!(app.found(&after, "").await, ["Late Comer"]);
    let before =
        format!(r#"create_time <= "{}" AND update_time <= "{}""#, marker.to_rfc3339(), marker.to_rfc3339());
    assert_eq!(app.found(&before, "").await.len(), 6);
    assert_eq!(app.found(r#"create_time >= "2000-01-01""#, "").await.len(), 7, "a date is midnight UTC");
}

#[tokio::test]
async fn or_binds_tighter_than_and_and_not_and_parentheses_work() {
    let app = spawn_app().await;
    people(&app).await;
    // AIP-160: a AND b OR c is a AND (b OR c).
    assert_eq!(
        app.found(r#"first_name = "jose" AND last_name = "alvarez" OR last_name = "borges""#, "").await,
        ["JOSÉ Álvarez"]
    );
    assert_eq!(
        app.found(r#"(first_name = "jose" AND last_name = "alvarez") OR last_name = "borges""#, "").await,
        ["JOSÉ Álvarez", "Ana Borges"]
    );
    assert_eq!(
        app.found(r#"NOT last_name = "trev*" AND NOT first_name = "bruno""#, "").await,
        ["JOSÉ Álvarez", "Ana Borges"]
    );
    assert_eq!(app.found(r#"NOT (first_name = "jose" OR first_name = "ana*")"#, "").await, ["Bruno alvarez"]);
}

#[tokio::test]
async fn order_by_any_field_either_way_with_id_breaking_ties() {
    let app = spawn_app().await;
    people(&app).await;
    assert_eq!(
        app.found("", "last_name, first_name").await,
        ["Bruno alvarez", "JOSÉ Álvarez", "Ana Borges", "José Treviño", "José Trevino", "Anabel Trevor"],
        "names sort by their folded form: Álvarez next to alvarez, then bruno before jose"
    );
    assert_eq!(
        app.found("", "last_name desc").await,
        ["Anabel Trevor", "José Treviño", "José Trevino", "Ana Borges", "JOSÉ Álvarez", "Bruno alvarez"],
        "ties (trevino, alvarez) by id, ascending"
    );
    assert_eq!(app.found("", "birth_date desc").await[0], "Ana Borges");
    assert_eq!(app.found("", "id desc").await[0], "Bruno alvarez");
    assert_eq!(
        app.found(r#"first_name = "jose""#, "birth_date").await,
        ["JOSÉ Álvarez", "José Trevino", "José Treviño"]
    );
    let by_update = app.found("", "update_time desc, first_name").await;
    assert_eq!(by_update.len(), 6);
}

#[tokio::test]
async fn bad_filters_and_orders_say_what_and_where() {
    let app = spawn_app().await;
    let cases = [
        (r#"lastname = "x""#, "unknown field `lastname`", " at 1"),
        (r#"birth_date = "1990-02-30""#, "expected a date", " at 14"),
        (r#"last_name = "x"#, "unterminated string", " at 13"),
        ("last_name = smith", "expected a double-quoted string", " at 13"),
        (r#"last_name = "a" OR"#, "expected a field name", " at 19"),
        (r#"(last_name = "a""#, "expected `)`", " at 17"),
        (r#"last_name = "a" last_name = "b""#, "expected AND, OR or the end", " at 17"),
        (r#"create_time > "soon""#, "expected a time", " at 15"),
        (r#"birth_date < "1990*""#, "expected a date", " at 14"),
        (r#"last_name < "tr*""#, "a prefix (`*`) needs `=` or `!=`", " at 13"),
    ];
    for (filter, what, at) in cases {
        let (field, description) = app.violation(filter, "").await;
        assert_eq!(field, "filter");
        assert!(description.contains(what) && description.ends_with(at), "{filter}: {description}");
    }
    let (field, description) = app.violation("", "email").await;
    assert_eq!(
        (field.as_str(), description.contains("cannot order by `email`")),
        ("order_by", true),
        "{description}"
    );
    let (field, _) = app.violation("", "last_name sideways").await;
    assert_eq!(field, "order_by");
    let deep = "(".repeat(100);
    assert!(app.violation(&deep, "").await.1.contains("nested deeper"));
}

#[tokio::test]
async fn a_token_works_only_with_its_filter_and_order() {
    let app = spawn_app().await;
    people(&app).await;
    let page = app.search(r#"last_name = "trev*""#, "last_name", 1, "").await.unwrap();
    assert!(!page.next_page_token.is_empty());
    for (filter, order) in
        [(r#"last_name = "t*""#, "last_name"), (r#"last_name = "trev*""#, "first_name"), ("", "")]
    {
        let refused = app.search(filter, order, 1, &page.next_page_token).await.unwrap_err();
        assert_eq!(
            (refused.code(), reason(&refused)),
            (Code::InvalidArgument, "INVALID_PAGE_TOKEN".into()),
            "{filter} / {order}"
        );
    }
    assert!(app.search(r#"last_name = "trev*""#, "last_name", 1, &page.next_page_token).await.is_ok());
    // The plain walk's tokens are what they always were.
    let plain = app.search("", "", 2, "").await.unwrap();
    assert_eq!(app.list(2, &plain.next_page_token).await.unwrap().patients.len(), 2);
}

/// Walking a filtered, name-ordered list while patients are created and
/// deleted between pages: every patient that matched throughout is seen
/// exactly once, in order; nothing is seen twice.
#[tokio::test]
async fn paging_a_filtered_ordered_walk_under_change_repeats_and_skips_nothing() {
    let app = spawn_app().await;
    let surnames = ["Zamora", "Ávila", "Núñez", "Ortiz", "Ibáñez", "Cruz", "Lara", "Mora", "Paz", "Soto"];
    let mut ids = BTreeMap::new();
    for n in 0..60 {
        let last = surnames[n % surnames.len()];
        let first = if n % 3 == 0 { "Eva" } else { "Luis" };
        let created =
            app.create(patient(first, last, "1980-01-01", &format!("walk{n}@ejemplo.com"))).await.unwrap();
        ids.insert(created.id, (first, last));
    }
    let filter = r#"first_name = "luis" AND birth_date = "1980-01-01""#;
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut deleted = HashSet::new();
    let mut round = 0;
    loop {
        let page = app.search(filter, "last_name desc, first_name", 7, &token).await.unwrap();
        seen.extend(page.patients.iter().map(|p| (p.id, p.last_name.clone())));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        // Churn between pages: new matching patients, and one deleted.
        round += 1;
        app.create(patient(
            "Luis",
            surnames[round % surnames.len()],
            "1980-01-01",
            &format!("churn{round}@ejemplo.com"),
        ))
        .await
        .unwrap();
        let victim = *ids.keys().nth(round * 5).unwrap();
        app.delete(victim, "", true).await.unwrap();
        deleted.insert(victim);
    }
    let unique: HashSet<i64> = seen.iter().map(|(id, _)| *id).collect();
    assert_eq!(unique.len(), seen.len(), "no patient twice");
    let folded: Vec<String> = seen.iter().map(|(_, l)| clinic_core::validation::fold(l)).collect();
    assert!(folded.windows(2).all(|w| w[0] >= w[1]), "in last_name desc order: {folded:?}");
    for (id, (first, _)) in &ids {
        if *first == "Luis" && !deleted.contains(id) {
            assert!(unique.contains(id), "patient {id} matched throughout but was skipped");
        }
    }
}

/// Rows loaded behind the service's back get exact search keys soon after
/// (approximate ones at once).
#[tokio::test]
async fn patients_stored_without_search_keys_become_searchable() {
    let app = spawn_app().await;
    let mut admin = app.db.admin_options().connect().await.unwrap();
    sqlx::query(
        "insert into patients.patient (first_name, last_name, birth_date, email) \
         values ('Åsa', 'Ångström', '1975-05-05', 'asa@ejemplo.com')",
    )
    .execute(&mut admin)
    .await
    .unwrap();
    // The service starts its background pass at start-up; restart it so
    // the pass runs again over the new row.
    let db = app.shutdown().await;
    let app = crate::helpers::spawn_app_on(db).await;
    let give_up = Instant::now() + Duration::from_secs(10);
    while app.found(r#"last_name = "angstrom""#, "").await.is_empty() {
        assert!(Instant::now() < give_up, "never searchable");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.found(r#"first_name = "asa""#, "").await, ["Åsa Ångström"]);
}

/// The cost rule: a filter no index can narrow (here `!=` on an email
/// prefix, which matches nothing and so reads every row) runs under its own
/// short statement timeout and, past it, is INVALID_ARGUMENT
/// (FILTER_TOO_COSTLY) naming the filter; one an index narrows answers.
#[tokio::test]
async fn a_filter_no_index_can_narrow_is_bounded_and_refused_past_its_timeout() {
    let app = crate::helpers::spawn_app_with(clinic_testkit::TestDb::create().await, |config| {
        config.service.db.filter_scan_timeout = std::time::Duration::from_millis(1);
    })
    .await;
    let mut admin = app.db.admin_options().connect().await.unwrap();
    sqlx::query(
        "insert into patients.patient (first_name, last_name, birth_date, email, first_name_key, last_name_key, email_key) \
         select 'Ana', 'Lopez', date '1980-01-01', 'p' || i || '@cost.test', 'ana', 'lopez', 'p' || i || '@cost.test' \
         from generate_series(1, 100000) as i",
    )
    .execute(&mut admin)
    .await
    .unwrap();
    let list = |filter: &str| {
        let mut client = app.client.clone();
        let request = pb::ListPatientsRequest { page_size: 10, filter: filter.into(), ..Default::default() };
        async move { client.list_patients(request).await }
    };
    let refused = list(r#"email != "*""#).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert_eq!(reason(&refused), "FILTER_TOO_COSTLY");
    use tonic_types::StatusExt;
    let bad = refused.get_details_bad_request().expect("a BadRequest");
    assert_eq!(bad.field_violations.len(), 1);
    assert_eq!(bad.field_violations[0].field, "filter");
    clinic_testkit::assert::assert_no_internals(&refused);
    let narrowed = list(r#"last_name = "lop*" AND email != "*""#).await.unwrap().into_inner();
    assert!(narrowed.patients.is_empty(), "an index narrows it, it answers");
}
