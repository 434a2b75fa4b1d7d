//! All SQL of studies-service, against the `studies` schema only.
//!
//! Writes that attach a study to a patient take a per-patient advisory lock
//! and consult `studies.deleted_patient` under it; the cascade ([`cascade`])
//! records a deleted patient there under the same lock, so a study can never
//! be attached to a patient after their deletion has been applied here.
//! Reads go through the view `studies.known_study` (each study with its
//! deletion, also one inherited from its patient not swept yet); updates
//! and deletes through `studies.live_study`, which hides deleted studies and
//! those of deleted patients. Every write names its actor
//! ([`clinic_changes::act_as`]) before the revision trigger records it.

pub mod cascade;

use chrono::{DateTime, Utc};
use std::sync::LazyLock;

use clinic_audit::audit::{AuditedStatement, mark_audited};
use clinic_audit::{audit, store::durable};
use clinic_changes::Written;
use clinic_core::context::Call;
use clinic_core::paging::{self, Page};
use clinic_pg::{
    api_error::ApiError,
    coalesce::PointReads,
    db::patch_statement,
    idempotency::{self, Claim, Fingerprint},
};
use clinic_query::search::{Cursor, Order, ScanBound, Where};
use sqlx::{AssertSqlSafe, FromRow, PgConnection, PgPool, Postgres, QueryBuilder, Row, postgres::PgRow};

use crate::{
    SCHEMA,
    domain::{
        BodyPart, ChangeKind, Deletion, Description, DicomUid, Etag, PatientFilter, PatientId, RequestId,
        Study, StudyChange, StudyField, StudyFields, StudyId, StudyPatch, StudyRevision, StudyType,
        UrgencyLevel,
    },
    error::{Error, Result},
};

/// The actor of the service's own work (the cascade, purges).
pub(crate) const SERVICE_ACTOR: &str = "clinic:studies-service";

/// The view of the studies clients see unless they ask for deleted ones.
const LIVE: &str = "studies.live_study";

clinic_pg::table_row!(
    /// A study with its deletion (`studies.known_study`); `study_columns!()` lists its columns.
    #[derive(Clone)]
    StudyRow in "studies.known_study", study_columns {
        id: i64, patient_id: i64, urgency_level: String, body_part: String, description: String,
        study_type: String, version: i64, create_time: DateTime<Utc>, update_time: DateTime<Utc>,
        delete_time: Option<DateTime<Utc>>, expire_time: Option<DateTime<Utc>>, study_instance_uid: String,
    }
);

/// A revision's columns, named as [`StudyRow`]'s (its snapshot), with its
/// kind, actor and cause.
const REVISION_COLUMNS: &str = "study_id as id, patient_id, urgency_level, body_part, description, \
    study_type, revision as version, create_time, revision_time as update_time, delete_time, expire_time, \
    study_instance_uid, kind, actor, cause";

/// A row of [`REVISION_COLUMNS`] as a revision.
fn revision_of(row: &PgRow) -> Result<StudyRevision> {
    let study: Study = StudyRow::from_row(row)?.try_into()?;
    Ok(StudyRevision {
        revision: row.try_get("version")?,
        kind: ChangeKind::from_stored(row.try_get("kind")?),
        time: study.update_time,
        actor: row.try_get("actor")?,
        cause: row.try_get("cause")?,
        study,
    })
}

/// A violation of the Study Instance UID's index is UidTaken; anything
/// else stays.
fn uid_taken_or(e: sqlx::Error) -> Error {
    match &e {
        sqlx::Error::Database(db) if db.constraint() == Some("study_instance_uid_key") => Error::UidTaken,
        _ => e.into(),
    }
}

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
                study_instance_uid: (!row.study_instance_uid.is_empty())
                    .then(|| DicomUid::from_stored(row.study_instance_uid)),
            },
            create_time: row.create_time,
            update_time: row.update_time,
            etag: Etag::of_version(row.version),
            deleted: Deletion::from_stored(row.delete_time, row.expire_time),
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
/// deletion has been applied or reserved here; names `actor` as who makes
/// the transaction's changes in the same round trip (the check runs after
/// the lock is held, in a statement of its own, so it sees every deletion
/// committed before).
pub(crate) async fn lock_live_patient(
    conn: &mut PgConnection,
    patient: PatientId,
    actor: &str,
) -> Result<()> {
    sqlx::query("select pg_advisory_xact_lock($1)").bind(patient.get()).execute(&mut *conn).await?;
    let deleted: bool = sqlx::query_scalar(
        "select exists (select 1 from studies.deleted_patient where patient_id = $1) \
         from (select set_config('clinic.actor', $2, true)) as acting",
    )
    .bind(patient.get())
    .bind(actor)
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
    /// How long a deleted study is kept, in days.
    pub(crate) retention_days: u32,
    /// Told after every committed write, to number its change at once.
    pub(crate) written: Written,
}

/// The columns with an index (migration 0001): a search over every study
/// whose filter narrows neither is bounded by [`ScanBound`]; one by patients
/// probes each patient's studies through the index.
const INDEXED: &[&str] = &["patient_id", "id", "study_instance_uid"];

/// What a create's request id is bound to: the validated study.
fn fingerprint(new: &StudyFields) -> Fingerprint {
    let patient_id = new.patient_id.get().to_be_bytes();
    Fingerprint::of(&[
        &patient_id,
        new.urgency_level.name().as_bytes(),
        new.body_part.name().as_bytes(),
        new.description.as_str().as_bytes(),
        new.study_type.name().as_bytes(),
        new.study_instance_uid.as_ref().map_or("", DicomUid::as_str).as_bytes(),
    ])
}

impl StudyStore {
    /// A store on `pool`, configured by `db` (how long a search over every
    /// study whose filter no index narrows may run, how many point reads run
    /// at once); deleted studies are kept `retention_days`.
    pub fn new(pool: PgPool, db: &clinic_pg::db::DbSettings, retention_days: u32, written: Written) -> Self {
        const ONE: &str = concat!("select ", study_columns!(), " from studies.known_study where id = $1");
        const MANY: &str =
            concat!("select ", study_columns!(), " from studies.known_study where id = any($1)");
        Self {
            point_reads: PointReads::start(pool.clone(), db.point_read_statements, (ONE, MANY), |row| row.id),
            pool,
            scans: ScanBound::new(INDEXED, db.filter_scan_timeout),
            retention_days,
            written,
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
        lock_live_patient(&mut tx, new.patient_id, &subject).await?;
        let row: StudyRow = sqlx::query_as(concat!(
            "insert into studies.study (patient_id, urgency_level, body_part, description, study_type, \
             study_instance_uid) values ($1, $2, $3, $4, $5, $6) returning ",
            study_columns!()
        ))
        .bind(new.patient_id.get())
        .bind(new.urgency_level.name())
        .bind(new.body_part.name())
        .bind(new.description.as_str())
        .bind(new.study_type.name())
        .bind(new.study_instance_uid.as_ref().map_or("", DicomUid::as_str))
        .fetch_one(&mut *tx)
        .await
        .map_err(uid_taken_or)?;
        if let Some(request_id) = request_id {
            idempotency::record(&mut tx, SCHEMA, &subject, request_id, row.id).await?;
        }
        audit::record_in(&mut tx, SCHEMA, call, [row.patient_id]).await?;
        durable(call, tx.commit()).await?;
        self.written.notify();
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
    #[allow(clippy::too_many_arguments)]
    pub async fn search(
        &self,
        call: &Call,
        show_deleted: bool,
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
            query.push(" from ").push(visible(show_deleted)).push(" where true");
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
            query.push(" from ").push(visible(show_deleted)).push(" where patient_id = p.patient_id");
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
        show_deleted: bool,
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
        query.push(" from ").push(visible(show_deleted)).push(" where patient_id = p.patient_id");
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
        let subject = call.subject();
        if let Some(patient) = patch.patient_id {
            lock_live_patient(&mut tx, patient, &subject).await?;
        }
        // The audit event concerns the patient the study belonged to, too;
        // the same round trip names who makes the change.
        let before: Option<i64> = sqlx::query_scalar(
            "select patient_id from studies.live_study, (select set_config('clinic.actor', $2, true)) as acting \
             where id = $1",
        )
        .bind(id.get())
        .bind(&subject)
        .fetch_optional(&mut *tx)
        .await?;
        call.concern(before);
        static UPDATE: LazyLock<String> = LazyLock::new(|| {
            let columns: Vec<_> = StudyField::ALL.iter().map(|f| f.name()).collect();
            patch_statement(LIVE, &columns, "true", study_columns!())
        });
        let row: Option<StudyRow> = sqlx::query_as(UPDATE.as_str())
            .bind(id.get())
            .bind(patch.patient_id.map(PatientId::get))
            .bind(patch.urgency_level.map(UrgencyLevel::name))
            .bind(patch.body_part.map(BodyPart::name))
            .bind(patch.description.as_ref().map(|d| d.as_str()))
            .bind(patch.study_type.map(StudyType::name))
            .bind(patch.study_instance_uid.as_ref().map(|u| u.as_ref().map_or("", DicomUid::as_str)))
            .bind(etag.map(Etag::as_str))
            .fetch_optional(&mut *tx)
            .await
            .map_err(uid_taken_or)?;
        match row {
            Some(row) => {
                audit::record_in(&mut tx, SCHEMA, call, [row.patient_id]).await?;
                durable(call, tx.commit()).await?;
                self.written.notify();
                row.try_into()
            }
            None => {
                tx.rollback().await?;
                Err(self.why_not_written(id, false).await)
            }
        }
    }

    /// Why a write of study `id` that needed it `deleted` (or live), and its
    /// etag if given, touched no row.
    async fn why_not_written(&self, id: StudyId, deleted: bool) -> Error {
        let found: std::result::Result<Option<bool>, sqlx::Error> =
            sqlx::query_scalar("select delete_time is not null from studies.known_study where id = $1")
                .bind(id.get())
                .fetch_optional(&self.pool)
                .await;
        match found {
            Ok(None) => ApiError::not_found(id).into(),
            Ok(Some(true)) if !deleted => Error::Deleted(id),
            Ok(Some(false)) if deleted => Error::NotDeleted(id),
            Ok(Some(_)) => ApiError::etag_mismatch(id).into(),
            Err(e) => e.into(),
        }
    }

    /// Marks the study deleted, to be purged after the retention, if `etag`
    /// (when given) is still current.
    pub async fn delete(&self, call: &Call, id: StudyId, etag: Option<&Etag>) -> Result<()> {
        static DELETE: LazyLock<AuditedStatement> = LazyLock::new(|| {
            AuditedStatement::new(
                SCHEMA,
                "update studies.live_study set delete_time = now(), expire_time = now() + make_interval(days => $3) \
                 where id = $1 and ($2::text is null or version::text = $2) returning patient_id",
                "changed.patient_id",
            )
        });
        let deletion = DELETE
            .query_as::<(i64,)>(call, |q| {
                q.bind(id.get()).bind(etag.map(Etag::as_str)).bind(self.retention_days())
            })
            .fetch_optional(&self.pool);
        match durable(call, deletion).await? {
            Some((patient,)) => {
                self.written.notify();
                call.concern([patient]);
                mark_audited(call, 1);
                Ok(())
            }
            None => Err(self.why_not_written(id, false).await),
        }
    }

    fn retention_days(&self) -> i32 {
        i32::try_from(self.retention_days).unwrap_or(i32::MAX)
    }

    /// Restores a study deleted on its own if `etag` (when given) is still
    /// current; one deleted with its patient comes back only with them.
    pub async fn undelete(&self, call: &Call, id: StudyId, etag: Option<&Etag>) -> Result<Study> {
        let mut tx = self.pool.begin().await?;
        let patient: Option<i64> = sqlx::query_scalar("select patient_id from studies.study where id = $1")
            .bind(id.get())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(patient) = patient else { return Err(ApiError::not_found(id).into()) };
        call.concern([patient]);
        let patient = PatientId::from_stored(patient);
        match lock_live_patient(&mut tx, patient, &call.subject()).await {
            Err(Error::PatientNotFound(_)) => return Err(Error::PatientDeleted { study: id, patient }),
            locked => locked?,
        }
        let row: Option<StudyRow> = sqlx::query_as(concat!(
            "update studies.study set delete_time = null, expire_time = null, delete_cause = null \
             where id = $1 and delete_time is not null and ($2::text is null or version::text = $2) returning ",
            study_columns!()
        ))
        .bind(id.get())
        .bind(etag.map(Etag::as_str))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Err(self.why_not_written(id, true).await);
        };
        audit::record_in(&mut tx, SCHEMA, call, [row.patient_id]).await?;
        durable(call, tx.commit()).await?;
        self.written.notify();
        row.try_into()
    }

    /// Purges up to `batch` deleted studies whose retention has ended, with
    /// an audit event naming their patients; returns how many.
    pub async fn purge_expired(&self, batch: i64) -> std::result::Result<u64, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        clinic_changes::act_as(&mut tx, SERVICE_ACTOR, None).await?;
        let mut patients: Vec<i64> = sqlx::query_scalar(
            "delete from studies.study where id in ( \
                 select id from studies.study where expire_time < now() order by expire_time limit $1 \
                 for update skip locked) returning patient_id",
        )
        .bind(batch)
        .fetch_all(&mut *tx)
        .await?;
        let count = patients.len() as u64;
        patients.sort_unstable();
        patients.dedup();
        audit::record_own_work(&mut tx, SCHEMA, SERVICE_ACTOR, "purge after retention", patients).await?;
        tx.commit().await?;
        self.written.notify();
        Ok(count)
    }

    /// Revision `revision` of study `id`.
    pub async fn revision(&self, id: StudyId, revision: i64) -> Result<Study> {
        let one = format!(
            "select {REVISION_COLUMNS} from studies.study_revision where study_id = $1 and revision = $2"
        );
        let row =
            sqlx::query(AssertSqlSafe(one)).bind(id.get()).bind(revision).fetch_optional(&self.pool).await?;
        match row {
            Some(row) => Ok(revision_of(&row)?.study),
            None => Err(Error::RevisionNotFound { id, revision }),
        }
    }

    /// Up to `size` revisions of study `id` older than `before` (all when
    /// none), newest first; NOT_FOUND if the study does not exist.
    pub async fn revisions(
        &self,
        id: StudyId,
        before: Option<i64>,
        size: u32,
    ) -> Result<Page<StudyRevision>> {
        let page = format!(
            "select {REVISION_COLUMNS} from studies.study_revision \
             where study_id = $1 and ($2::bigint is null or revision < $2) order by revision desc limit $3"
        );
        let rows = sqlx::query(AssertSqlSafe(page))
            .bind(id.get())
            .bind(before)
            .bind(paging::overfetch(size))
            .fetch_all(&self.pool)
            .await?;
        if rows.is_empty() && before.is_none() {
            return Err(ApiError::not_found(id).into());
        }
        let revisions = rows.iter().map(revision_of).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetched(revisions, size))
    }

    /// Up to `limit` changes of the feed after `sequence`, oldest first,
    /// each with the study as its revision left it while that is kept.
    pub async fn changes_after(&self, sequence: i64, limit: u32) -> Result<Vec<StudyChange>> {
        let rows = sqlx::query(
            "select c.sequence, c.commit_time, c.kind, c.resource_id, c.revision, c.actor, c.cause, \
                    coalesce(r.patient_id, substr(c.parent, 10)::bigint) as patient_id, r.study_id as id, \
                    r.urgency_level, r.body_part, r.description, r.study_type, r.revision as version, \
                    r.create_time, r.revision_time as update_time, r.delete_time, r.expire_time, \
                    r.study_instance_uid \
             from studies.change c left join studies.study_revision r \
               on r.study_id = c.resource_id and r.revision = c.revision \
             where c.sequence > $1 order by c.sequence limit $2",
        )
        .bind(sequence)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let change = |row: &PgRow| -> Result<StudyChange> {
            let kept = row.try_get::<Option<i64>, _>("id")?.is_some();
            Ok(StudyChange {
                sequence: row.try_get("sequence")?,
                kind: ChangeKind::from_stored(row.try_get("kind")?),
                study_id: StudyId::from_stored(row.try_get("resource_id")?),
                patient_id: PatientId::from_stored(row.try_get("patient_id")?),
                revision: row.try_get("revision")?,
                commit_time: row.try_get("commit_time")?,
                actor: row.try_get("actor")?,
                cause: row.try_get("cause")?,
                study: if kept { Some(StudyRow::from_row(row)?.try_into()?) } else { None },
            })
        };
        rows.iter().map(change).collect()
    }
}

/// The view a read walks: every study with `show_deleted`, else the live ones.
fn visible(show_deleted: bool) -> &'static str {
    if show_deleted { StudyRow::TABLE } else { LIVE }
}
