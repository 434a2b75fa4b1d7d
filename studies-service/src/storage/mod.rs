//! All SQL of studies-service, against the `studies` schema only.
//!
//! Writes that attach a study to a patient take a per-patient advisory lock
//! and consult `studies.deleted_patient` under it; the cascade ([`cascade`])
//! records a deleted patient there under the same lock, so a study can never
//! be attached to a patient after their deletion has been applied here.
//! Reads, updates and deletes go through the view `studies.live_study`,
//! which hides the studies of deleted patients until they are swept.

pub mod cascade;

use chrono::{DateTime, Utc};
use std::sync::LazyLock;

use clinic_audit::{
    audit,
    store::{delete_if_current, durable, why_not_written},
};
use clinic_core::context::Call;
use clinic_core::paging::{self, Page};
use clinic_pg::{
    coalesce::PointReads,
    db::patch_statement,
    idempotency::{self, Claim, Fingerprint},
};
use clinic_query::search::{Cursor, Order, ScanBound, Where};
use sqlx::{FromRow, PgConnection, PgPool, Postgres, QueryBuilder, Row, postgres::PgRow};

use crate::{
    SCHEMA,
    domain::{
        BodyPart, Description, Etag, PatientFilter, PatientId, RequestId, Study, StudyField, StudyFields,
        StudyId, StudyPatch, StudyType, UrgencyLevel,
    },
    error::{Error, Result},
};

clinic_pg::table_row!(
    /// A study as clients may see it (`studies.live_study`); `study_columns!()` lists its columns.
    #[derive(Clone)]
    StudyRow in "studies.live_study", study_columns {
        id: i64, patient_id: i64, urgency_level: String, body_part: String, description: String,
        study_type: String, version: i64, create_time: DateTime<Utc>, update_time: DateTime<Utc>,
    }
);

fn vocabulary<T>(parse: fn(&str) -> Option<T>, column: &str, value: &str) -> Result<T> {
    parse(value).ok_or_else(|| {
        clinic_pg::api_error::ApiError::corrupt(format!("unknown {column} {value:?} in studies.study")).into()
    })
}

impl TryFrom<StudyRow> for Study {
    type Error = Error;
    fn try_from(row: StudyRow) -> Result<Self> {
        Ok(Study {
            id: StudyId::from_stored(row.id),
            fields: StudyFields {
                patient_id: PatientId::from_stored(row.patient_id),
                urgency_level: vocabulary(UrgencyLevel::from_name, "urgency_level", &row.urgency_level)?,
                body_part: vocabulary(BodyPart::from_name, "body_part", &row.body_part)?,
                description: Description::from_stored(row.description),
                study_type: vocabulary(StudyType::from_name, "study_type", &row.study_type)?,
            },
            create_time: row.create_time,
            update_time: row.update_time,
            etag: Etag::of_version(row.version),
            deleted: None,
        })
    }
}

/// What one study is counted as when a page's bytes are bounded in SQL: its
/// description's bytes and a generous allowance for the rest (more than its
/// protobuf encoding takes), so a bound in these units bounds the answer.
const ROW_BYTES: &str = "(octet_length(description) + 128)";

/// The rows of `rows` (in walk order, each with its `running_bytes`) that
/// fit in `budget` bytes, and whether any did not.
fn within_bytes(rows: &[PgRow], budget: i64) -> Result<(Vec<&PgRow>, bool)> {
    let mut kept = Vec::with_capacity(rows.len());
    for row in rows {
        if row.try_get::<i64, _>("running_bytes")? > budget && !kept.is_empty() {
            return Ok((kept, true));
        }
        kept.push(row);
    }
    Ok((kept, false))
}

/// Takes the per-patient lock and fails with NOT_FOUND if the patient's
/// deletion has been applied or reserved here.
pub(crate) async fn lock_live_patient(conn: &mut PgConnection, patient: PatientId) -> Result<()> {
    sqlx::query("select pg_advisory_xact_lock($1)").bind(patient.get()).execute(&mut *conn).await?;
    let deleted: bool =
        sqlx::query_scalar("select exists (select 1 from studies.deleted_patient where patient_id = $1)")
            .bind(patient.get())
            .fetch_one(&mut *conn)
            .await?;
    if deleted { Err(Error::PatientNotFound(patient)) } else { Ok(()) }
}

/// Studies in Postgres.
#[derive(Debug, Clone)]
pub struct StudyStore {
    pub(crate) pool: PgPool,
    point_reads: PointReads<StudyRow>,
    scans: ScanBound,
}

/// The columns with an index (migration 0001): a search over every study
/// whose filter narrows neither is bounded by [`ScanBound`]; one by patients
/// probes each patient's studies through the index.
const INDEXED: &[&str] = &["patient_id", "id"];

/// What a create's request id is bound to: the validated study.
fn fingerprint(new: &StudyFields) -> Fingerprint {
    let patient_id = new.patient_id.get().to_be_bytes();
    Fingerprint::of(&[
        &patient_id,
        new.urgency_level.name().as_bytes(),
        new.body_part.name().as_bytes(),
        new.description.as_str().as_bytes(),
        new.study_type.name().as_bytes(),
    ])
}

impl StudyStore {
    /// A store on `pool`; searches over every study whose filter no index
    /// narrows run under `scan_timeout`.
    pub fn new(pool: PgPool, scan_timeout: std::time::Duration) -> Self {
        const ONE: &str = concat!("select ", study_columns!(), " from studies.live_study where id = $1");
        const MANY: &str =
            concat!("select ", study_columns!(), " from studies.live_study where id = any($1)");
        Self {
            point_reads: PointReads::start(pool.clone(), (ONE, MANY), |row| row.id),
            pool,
            scans: ScanBound::new(INDEXED, scan_timeout),
        }
    }

    /// Whether the deletion of `patient` has been applied or reserved here.
    pub async fn is_deleted_patient(&self, patient: PatientId) -> Result<bool> {
        Ok(sqlx::query_scalar("select exists (select 1 from studies.deleted_patient where patient_id = $1)")
            .bind(patient.get())
            .fetch_one(&self.pool)
            .await?)
    }

    /// The study an earlier create with `request_id` made, if any;
    /// `REQUEST_ID_REUSED` if that create was a different request.
    pub async fn created_by(
        &self,
        call: &Call,
        request_id: &RequestId,
        new: &StudyFields,
    ) -> Result<Option<StudyId>> {
        let mut conn = self.pool.acquire().await?;
        let subject = call.subject();
        let id = idempotency::earlier(&mut conn, SCHEMA, &subject, request_id, &fingerprint(new)).await?;
        Ok(id.map(StudyId::from_stored))
    }

    /// Inserts `new` unless its patient is known to be deleted. With a
    /// `request_id` seen before, returns the study that request created.
    pub async fn create(
        &self,
        call: &Call,
        new: &StudyFields,
        request_id: Option<&RequestId>,
    ) -> Result<Study> {
        let subject = call.subject();
        let mut tx = self.pool.begin().await?;
        if let Some(request_id) = request_id
            && let Claim::Done(id) =
                idempotency::claim(&mut tx, SCHEMA, &subject, request_id, &fingerprint(new)).await?
        {
            tx.rollback().await?;
            return self.get(StudyId::from_stored(id)).await;
        }
        lock_live_patient(&mut tx, new.patient_id).await?;
        let row: StudyRow = sqlx::query_as(concat!(
            "insert into studies.study (patient_id, urgency_level, body_part, description, study_type) \
             values ($1, $2, $3, $4, $5) returning ",
            study_columns!()
        ))
        .bind(new.patient_id.get())
        .bind(new.urgency_level.name())
        .bind(new.body_part.name())
        .bind(new.description.as_str())
        .bind(new.study_type.name())
        .fetch_one(&mut *tx)
        .await?;
        if let Some(request_id) = request_id {
            idempotency::record(&mut tx, SCHEMA, &subject, request_id, row.id).await?;
        }
        audit::record_in(&mut tx, SCHEMA, call, [row.patient_id]).await?;
        durable(call, tx.commit()).await?;
        row.try_into()
    }

    /// The study with `id`; reads arriving together share one statement
    /// ([`PointReads`]).
    pub async fn get(&self, id: StudyId) -> Result<Study> {
        self.point_reads.get(id).await?.try_into()
    }

    /// The page of up to `size` studies of `patients` (all when empty) that
    /// match `filter`, after `after` in `order`, each with where it stands.
    /// The page's bytes are bounded in SQL too (by `ROW_BYTES` per study,
    /// at most [`paging::MAX_PAGE_BYTES`]): no more than that is read into
    /// memory, whatever the descriptions hold; a page cut short by bytes has
    /// more to follow.
    pub async fn search(
        &self,
        call: &Call,
        patients: &PatientFilter,
        filter: Option<&Where>,
        order: &Order,
        after: Option<&Cursor>,
        size: u32,
    ) -> Result<Page<(Study, Cursor)>> {
        let fetch = paging::overfetch(size);
        let conditions = |query: &mut QueryBuilder<Postgres>| {
            if let Some(filter) = filter {
                query.push(" and ");
                filter.push(query);
            }
            if let Some(after) = after {
                query.push(" and ");
                order.push_after(query, after);
            }
        };
        let running = |query: &mut QueryBuilder<Postgres>| {
            query.push(format!(", sum({ROW_BYTES}) over ("));
            order.push_order_by(query);
            query.push(" rows between unbounded preceding and current row) as running_bytes");
        };
        let mut query = QueryBuilder::new("select * from (");
        if patients.ids().is_empty() {
            query.push(concat!("select ", study_columns!()));
            order.push_select(&mut query);
            running(&mut query);
            query.push(" from studies.live_study where true");
            conditions(&mut query);
        } else {
            // One index probe per patient on (patient_id, id), each limited,
            // then merged: a plan that stays right as a prepared (generic)
            // statement, which `patient_id = any($1) order by id` does not
            // (its generic plan walks the primary key).
            query.push("select s.*");
            running(&mut query);
            query.push(" from unnest(").push_bind(patients.ids().to_vec());
            query.push("::bigint[]) as p(patient_id) cross join lateral (select ");
            query.push(study_columns!());
            order.push_select(&mut query);
            query.push(" from studies.live_study where patient_id = p.patient_id");
            conditions(&mut query);
            order.push_order_by(&mut query);
            query.push(" limit ").push_bind(fetch);
            query.push(") s where true");
        }
        order.push_order_by(&mut query);
        query.push(" limit ").push_bind(fetch);
        query
            .push(format!(") bounded where running_bytes - {ROW_BYTES} < "))
            .push_bind(paging::MAX_PAGE_BYTES as i64);
        order.push_order_by_selected(&mut query);
        let scanned = if patients.ids().is_empty() { filter } else { None };
        let rows = self.scans.fetch_all(&self.pool, scanned, call.subject(), query).await?;
        let (rows, cut) = within_bytes(&rows, paging::MAX_PAGE_BYTES as i64)?;
        let items = rows
            .iter()
            .map(|row| Ok((Study::try_from(StudyRow::from_row(*row)?)?, order.cursor(row)?)))
            .collect::<Result<Vec<_>>>()?;
        let mut page = Page::from_overfetched(items, size);
        page.more |= cut;
        Ok(page)
    }

    /// The first studies (in id order) of each of `patients` that match
    /// `filter`: up to `per_patient` each, and no more than `share` bytes
    /// each (by `ROW_BYTES`), both bounded in SQL, so a request for 1,000
    /// patients reads a bounded amount whatever their studies hold. For each
    /// patient (in `patients`' order), the page and whether more follow.
    pub async fn first_of_patients(
        &self,
        patients: &[i64],
        per_patient: u32,
        share: usize,
        filter: Option<&Where>,
    ) -> Result<Vec<(i64, Page<Study>)>> {
        let mut query = QueryBuilder::new("select s.* from unnest(");
        query
            .push_bind(patients.to_vec())
            .push("::bigint[]) as p(patient_id) cross join lateral (select * from (select ");
        query.push(study_columns!());
        query.push(format!(
            ", sum({ROW_BYTES}) over (order by id rows between unbounded preceding and current row) as running_bytes"
        ));
        query.push(" from studies.live_study where patient_id = p.patient_id");
        if let Some(filter) = filter {
            query.push(" and ");
            filter.push(&mut query);
        }
        query.push(" order by id limit ").push_bind(i64::from(per_patient) + 1);
        query.push(format!(") bounded where running_bytes - {ROW_BYTES} < ")).push_bind(share as i64);
        query.push(" order by id) s");
        let rows = query.build().fetch_all(&self.pool).await?;
        let mut by_patient: std::collections::HashMap<i64, Vec<&PgRow>> = std::collections::HashMap::new();
        for row in &rows {
            by_patient.entry(row.try_get("patient_id")?).or_default().push(row);
        }
        patients
            .iter()
            .map(|patient| {
                let rows = by_patient.remove(patient).unwrap_or_default();
                let fetched = rows.len();
                let kept: Vec<&PgRow> = rows
                    .into_iter()
                    .take_while(|row| row.try_get::<i64, _>("running_bytes").is_ok_and(|b| b <= share as i64))
                    .collect();
                let cut = kept.len() < fetched;
                let studies = kept
                    .into_iter()
                    .map(|row| Study::try_from(StudyRow::from_row(row)?))
                    .collect::<Result<Vec<_>>>()?;
                let mut page = Page::from_overfetched(studies, per_patient);
                page.more |= cut;
                Ok((*patient, page))
            })
            .collect()
    }

    /// Applies `patch` if `etag` (when given) is still current, in one
    /// statement; moving the study checks the new patient under its lock.
    pub async fn update(
        &self,
        call: &Call,
        id: StudyId,
        patch: &StudyPatch,
        etag: Option<&Etag>,
    ) -> Result<Study> {
        let mut tx = self.pool.begin().await?;
        if let Some(patient) = patch.patient_id {
            lock_live_patient(&mut tx, patient).await?;
        }
        // The audit event concerns the patient the study belonged to, too.
        let before: Option<i64> =
            sqlx::query_scalar("select patient_id from studies.live_study where id = $1")
                .bind(id.get())
                .fetch_optional(&mut *tx)
                .await?;
        call.concern(before);
        static UPDATE: LazyLock<String> = LazyLock::new(|| {
            let columns: Vec<_> = StudyField::ALL.iter().map(|f| f.name()).collect();
            patch_statement(StudyRow::TABLE, &columns, "true", study_columns!())
        });
        let row: Option<StudyRow> = sqlx::query_as(UPDATE.as_str())
            .bind(id.get())
            .bind(patch.patient_id.map(PatientId::get))
            .bind(patch.urgency_level.map(UrgencyLevel::name))
            .bind(patch.body_part.map(BodyPart::name))
            .bind(patch.description.as_ref().map(|d| d.as_str()))
            .bind(patch.study_type.map(StudyType::name))
            .bind(etag.map(Etag::as_str))
            .fetch_optional(&mut *tx)
            .await?;
        match row {
            Some(row) => {
                audit::record_in(&mut tx, SCHEMA, call, [row.patient_id]).await?;
                durable(call, tx.commit()).await?;
                row.try_into()
            }
            None => {
                tx.rollback().await?;
                Err(why_not_written(&self.pool, StudyRow::TABLE, id).await.into())
            }
        }
    }

    /// Deletes the study if `etag` (when given) is still current.
    pub async fn delete(&self, call: &Call, id: StudyId, etag: Option<&Etag>) -> Result<()> {
        let deletion = delete_if_current(&self.pool, (SCHEMA, StudyRow::TABLE, "patient_id"), call, id, etag);
        if durable(call, deletion).await? {
            Ok(())
        } else {
            Err(why_not_written(&self.pool, StudyRow::TABLE, id).await.into())
        }
    }
}
