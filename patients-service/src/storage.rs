//! All SQL of patients-service, against the `patients` schema only.
//!
//! Every statement is schema-qualified. Uniqueness and concurrency are left to
//! Postgres: the email index decides duplicates (mapped by constraint name),
//! etags are compared in the same statement as the write, and idempotency
//! keys are claimed inside the creating transaction.

use chrono::{DateTime, NaiveDate, Utc};
use std::sync::LazyLock;

use clinic_audit::{
    audit::{self, AuditedStatement},
    store::durable,
};
use clinic_changes::Written;
use clinic_core::context::Call;
use clinic_core::paging::{self, Page};
use clinic_core::validation::fold;
use clinic_pg::{
    api_error::ApiError,
    coalesce::PointReads,
    db::{patch_statement, unique_violation},
    idempotency::{self, Claim, Fingerprint},
};
use clinic_query::search::{Cursor, Order, ScanBound, Where};
use sqlx::{FromRow, PgPool, QueryBuilder};

use crate::{
    SCHEMA,
    domain::{
        BirthDate, ChangeKind, Deletion, Email, Etag, Identifiers, Patient, PatientChange, PatientField,
        PatientFields, PatientId, PatientPatch, PatientRevision, PersonName, RequestId, SearchKeys,
    },
    error::{Error, Result},
};

/// Name of the unique index on `lower(email)` of live patients.
const EMAIL_UNIQUE_INDEX: &str = "patient_live_email_key";

/// Name the identifiers' claim (migration 0013) gives a taken identifier.
const IDENTIFIER_KEY: &str = "patient_identifier_key";

/// The advisory lock conditional creates take in turn, so that each one's
/// check sees every earlier one's patient.
const CONDITIONAL_CREATE_LOCK: i64 = 0x636c_696e_6963_0001;

/// Who the service's own writes name as their actor.
const SERVICE_ACTOR: &str = "clinic:patients-service";

/// The audit trail's name for purging what is past its retention.
pub const PURGE_AFTER_RETENTION: &str = "purge after retention";

clinic_pg::table_row!(
    /// A row of `patients.patient`; `patient_columns!()` lists its columns.
    #[derive(Clone)]
    PatientRow in "patients.patient", patient_columns {
        id: i64, first_name: String, last_name: String, birth_date: NaiveDate, email: String,
        identifiers: Vec<String>, version: i64, create_time: DateTime<Utc>, update_time: DateTime<Utc>,
        delete_time: Option<DateTime<Utc>>, expire_time: Option<DateTime<Utc>>,
    }
);

clinic_pg::table_row!(
    /// A row of `patients.patient_revision`.
    RevisionRow in "patients.patient_revision", revision_columns {
        patient_id: i64, revision: i64, kind: String, actor: String, revision_time: DateTime<Utc>,
        first_name: String, last_name: String, birth_date: NaiveDate, email: String,
        identifiers: Vec<String>, create_time: DateTime<Utc>, delete_time: Option<DateTime<Utc>>, expire_time: Option<DateTime<Utc>>,
    }
);

impl From<RevisionRow> for PatientRevision {
    fn from(row: RevisionRow) -> Self {
        PatientRevision {
            revision: row.revision,
            kind: ChangeKind::from_stored(&row.kind),
            time: row.revision_time,
            actor: row.actor,
            patient: Patient {
                id: PatientId::from_stored(row.patient_id),
                fields: PatientFields {
                    first_name: PersonName::from_stored(row.first_name),
                    last_name: PersonName::from_stored(row.last_name),
                    birth_date: BirthDate::from_stored(row.birth_date),
                    email: Email::from_stored(row.email),
                    identifiers: Identifiers::from_keys(&row.identifiers),
                },
                create_time: row.create_time,
                update_time: row.revision_time,
                etag: Etag::of_version(row.revision),
                deleted: Deletion::from_stored(row.delete_time, row.expire_time),
            },
        }
    }
}

/// A change of the feed, with the revision it made while that is kept.
#[derive(FromRow)]
struct ChangeRow {
    sequence: i64,
    kind: String,
    resource_id: i64,
    revision: i64,
    commit_time: DateTime<Utc>,
    actor: String,
    first_name: Option<String>,
    last_name: Option<String>,
    birth_date: Option<NaiveDate>,
    email: Option<String>,
    identifiers: Option<Vec<String>>,
    create_time: Option<DateTime<Utc>>,
    revision_time: Option<DateTime<Utc>>,
    delete_time: Option<DateTime<Utc>>,
    expire_time: Option<DateTime<Utc>>,
}

impl From<ChangeRow> for PatientChange {
    fn from(row: ChangeRow) -> Self {
        // The revision's snapshot, while it is kept (none once purged).
        let snapshot = match (
            row.first_name,
            row.last_name,
            row.birth_date,
            row.email,
            row.identifiers,
            row.create_time,
            row.revision_time,
        ) {
            (
                Some(first_name),
                Some(last_name),
                Some(birth_date),
                Some(email),
                Some(identifiers),
                Some(create_time),
                Some(revision_time),
            ) => Some(RevisionRow {
                patient_id: row.resource_id,
                revision: row.revision,
                kind: row.kind.clone(),
                actor: row.actor.clone(),
                revision_time,
                first_name,
                last_name,
                birth_date,
                email,
                identifiers,
                create_time,
                delete_time: row.delete_time,
                expire_time: row.expire_time,
            }),
            _ => None,
        };
        let patient = snapshot.map(|r| PatientRevision::from(r).patient);
        let id = PatientId::from_stored(row.resource_id);
        PatientChange {
            sequence: row.sequence,
            kind: ChangeKind::from_stored(&row.kind),
            patient_id: id,
            revision: row.revision,
            commit_time: row.commit_time,
            actor: row.actor,
            patient,
        }
    }
}

impl From<PatientRow> for Patient {
    fn from(row: PatientRow) -> Self {
        Patient {
            id: PatientId::from_stored(row.id),
            fields: PatientFields {
                first_name: PersonName::from_stored(row.first_name),
                last_name: PersonName::from_stored(row.last_name),
                birth_date: BirthDate::from_stored(row.birth_date),
                email: Email::from_stored(row.email),
                identifiers: Identifiers::from_keys(&row.identifiers),
            },
            create_time: row.create_time,
            update_time: row.update_time,
            etag: Etag::of_version(row.version),
            deleted: Deletion::from_stored(row.delete_time, row.expire_time),
        }
    }
}

/// A violation of the email index is EmailTaken, of an identifier
/// IdentifierTaken; anything else stays.
fn email_taken_or(e: ApiError) -> Error {
    match &e {
        ApiError::Database(db) if unique_violation(db) == Some(EMAIL_UNIQUE_INDEX) => Error::EmailTaken,
        ApiError::Database(db) if unique_violation(db) == Some(IDENTIFIER_KEY) => Error::IdentifierTaken,
        _ => e.into(),
    }
}

/// Patients in Postgres.
#[derive(Debug, Clone)]
pub struct PatientStore {
    pool: PgPool,
    point_reads: PointReads<PatientRow>,
    scans: ScanBound,
    /// Told after every committed write, to number its change at once.
    written: Written,
}

/// The search keys with an index (migrations 0001 and 0005): a filter that
/// narrows none of them is bounded by [`ScanBound`].
const INDEXED: &[&str] = &[
    "first_name_key",
    "last_name_key",
    "email_key",
    "birth_date",
    "create_time",
    "update_time",
    "id",
    "identifiers",
];

/// What a create's request id is bound to: the validated patient.
fn fingerprint(new: &PatientFields) -> Fingerprint {
    let birth_date = new.birth_date.get().to_string();
    Fingerprint::of(&[
        new.first_name.as_str().as_bytes(),
        new.last_name.as_str().as_bytes(),
        birth_date.as_bytes(),
        new.email.as_str().as_bytes(),
        new.identifiers.keys().join("\n").as_bytes(),
    ])
}

impl PatientStore {
    /// A store on `pool`, configured by `db` (how long a search whose filter
    /// no index narrows may run, how many point reads run at once).
    pub fn new(pool: PgPool, db: &clinic_pg::db::DbSettings, written: Written) -> Self {
        const ONE: &str = concat!("select ", patient_columns!(), " from patients.patient where id = $1");
        const MANY: &str =
            concat!("select ", patient_columns!(), " from patients.patient where id = any($1)");
        Self {
            point_reads: PointReads::start(pool.clone(), db.point_read_statements, (ONE, MANY), |row| row.id),
            pool,
            scans: ScanBound::new(INDEXED, db.filter_scan_timeout),
            written,
        }
    }

    /// Inserts `new`. With a `request_id` seen before, returns the patient
    /// that request created instead (or NOT_FOUND if it was deleted since).
    /// With `unless`, creates nothing if a live patient matches that filter
    /// (decided in turn with every other conditional create, so identical
    /// ones running together make one patient).
    pub async fn create(
        &self,
        call: &Call,
        new: &PatientFields,
        request_id: Option<&RequestId>,
        unless: Option<&Where>,
    ) -> Result<Patient> {
        if request_id.is_none() && unless.is_none() {
            // One statement (the insert and its audit event) is atomic on its
            // own: no BEGIN/COMMIT round trips.
            let row = durable(call, Self::insert(call, new).fetch_optional(&self.pool))
                .await
                .map_err(email_taken_or)?
                .ok_or(Error::EmailTaken)?;
            self.written.notify();
            audit::mark_audited(call, 1);
            return Ok(row.into());
        }
        let subject = call.subject();
        let mut tx = self.pool.begin().await?;
        if let Some(request_id) = request_id
            && let Claim::Done(id) =
                idempotency::claim(&mut tx, SCHEMA, &subject, request_id, &fingerprint(new)).await?
        {
            tx.rollback().await?;
            // The replay reads the patient the first create made: its event
            // names them.
            call.concern([id]);
            return self.get(PatientId::from_stored(id)).await;
        }
        if let Some(filter) = unless {
            sqlx::query("select pg_advisory_xact_lock($1)")
                .bind(CONDITIONAL_CREATE_LOCK)
                .execute(&mut *tx)
                .await?;
            let mut query =
                QueryBuilder::new("select id from patients.patient where delete_time is null and ");
            filter.push(&mut query);
            query.push(" order by id limit 2");
            let matches: Vec<i64> = query.build_query_scalar().fetch_all(&mut *tx).await?;
            if !matches.is_empty() {
                tx.rollback().await?;
                call.concern(matches.iter().copied());
                return Err(match matches[..] {
                    [one] => Error::MatchExists(PatientId::from_stored(one)),
                    _ => Error::SeveralMatch,
                });
            }
        }
        let row = Self::insert(call, new)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| email_taken_or(e.into()))?
            .ok_or(Error::EmailTaken)?;
        audit::mark_audited(call, 1);
        if let Some(request_id) = request_id {
            idempotency::record(&mut tx, SCHEMA, &subject, request_id, row.id).await?;
        }
        durable(call, tx.commit()).await?;
        self.written.notify();
        Ok(row.into())
    }

    /// The insert of `new` with its audit event, returning the stored row;
    /// run alone or inside the idempotent-create transaction.
    fn insert(
        call: &Call,
        new: &PatientFields,
    ) -> sqlx::query::QueryAs<'static, sqlx::Postgres, PatientRow, sqlx::postgres::PgArguments> {
        // A taken email inserts nothing, so Postgres raises no error (whose
        // detail would quote the email): no row back means EmailTaken.
        static INSERT: LazyLock<AuditedStatement> = LazyLock::new(|| {
            let insert = concat!(
                "insert into patients.patient (first_name, last_name, birth_date, email, identifiers, \
                 first_name_key, last_name_key, email_key, search_version) \
                 values ($1, $2, $3, $4, $8, $5, $6, $7, 1) on conflict ((lower(email))) where delete_time is null do nothing \
                 returning ",
                patient_columns!()
            );
            AuditedStatement::new(SCHEMA, insert, "changed.id")
        });
        let keys = SearchKeys::of(new);
        INSERT.query_as(call, |q| {
            q.bind(new.first_name.as_str().to_owned())
                .bind(new.last_name.as_str().to_owned())
                .bind(new.birth_date.get())
                .bind(new.email.as_str().to_owned())
                .bind(keys.first_name)
                .bind(keys.last_name)
                .bind(keys.email)
                .bind(new.identifiers.keys())
        })
    }

    /// The patient with `id`.
    /// Reads arriving together share one statement ([`PointReads`]).
    pub async fn get(&self, id: PatientId) -> Result<Patient> {
        Ok(self.point_reads.get(id).await?.into())
    }

    /// The page of up to `size` patients matching `filter`, after `after`
    /// in `order`, each with where it stands in that order.
    pub async fn search(
        &self,
        call: &Call,
        show_deleted: bool,
        filter: Option<&Where>,
        order: &Order,
        after: Option<&Cursor>,
        size: u32,
    ) -> Result<Page<(Patient, Cursor)>> {
        let mut query = QueryBuilder::new(concat!("select ", patient_columns!()));
        order.push_select(&mut query);
        query.push(if show_deleted {
            " from patients.patient where true"
        } else {
            " from patients.patient where delete_time is null"
        });
        if let Some(filter) = filter {
            query.push(" and ");
            filter.push(&mut query);
        }
        if let Some(after) = after {
            query.push(" and ");
            order.push_after(&mut query, after);
        }
        order.push_order_by(&mut query);
        query.push(" limit ").push_bind(paging::overfetch(size));
        // Prepared and cached per shape of filter and order, like every
        // statement: measured at a million patients, the generic plans
        // keep the (key, id) index walks a custom plan picks.
        let rows = self.scans.fetch_all(&self.pool, filter, call.subject(), query).await?;
        let items = rows
            .iter()
            .map(|row| Ok((Patient::from(PatientRow::from_row(row)?), order.cursor(row)?)))
            .collect::<std::result::Result<Vec<_>, sqlx::Error>>()?;
        Ok(Page::from_overfetched(items, size))
    }

    /// Recomputes the search keys of rows stored before this version
    /// computed them (`search_version` 0), a batch of 500 at a time; returns
    /// how many it updated.
    pub async fn reindex_search_keys(&self) -> Result<u64> {
        let mut total = 0;
        loop {
            let rows: Vec<(i64, String, String, String)> = sqlx::query_as(
                "select id, first_name, last_name, email from patients.patient \
                 where search_version = 0 order by id limit 500",
            )
            .fetch_all(&self.pool)
            .await?;
            if rows.is_empty() {
                return Ok(total);
            }
            let (mut ids, mut first, mut last, mut email) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for (id, f, l, e) in &rows {
                ids.push(*id);
                first.push(fold(f));
                last.push(fold(l));
                email.push(fold(e));
            }
            // Only rows no one changed meanwhile: a write sets its own keys.
            // Each is a revision, made by the service.
            total += sqlx::query(
                "update patients.patient p set first_name_key = k.f, last_name_key = k.l, email_key = k.e, \
                 search_version = 1 from unnest($1::bigint[], $2::text[], $3::text[], $4::text[]) as k(id, f, l, e) \
                 where p.id = k.id and p.search_version = 0 and set_config('clinic.actor', $5, true) is not null",
            )
            .bind(ids)
            .bind(first)
            .bind(last)
            .bind(email)
            .bind(SERVICE_ACTOR)
            .execute(&self.pool)
            .await?
            .rows_affected();
            self.written.notify();
        }
    }

    /// Applies `patch` if `etag` (when given) is still the current one, in
    /// one statement, so no concurrent write can slip in between.
    pub async fn update(
        &self,
        call: &Call,
        id: PatientId,
        patch: &PatientPatch,
        etag: Option<&Etag>,
    ) -> Result<Patient> {
        static UPDATE: LazyLock<AuditedStatement> = LazyLock::new(|| {
            let mut columns: Vec<_> = PatientField::ALL.iter().map(|f| f.name()).collect();
            // A changed name or email changes its search key with it.
            columns.extend(["first_name_key", "last_name_key", "email_key"]);
            let update =
                patch_statement(PatientRow::TABLE, &columns, "delete_time is null", patient_columns!());
            AuditedStatement::new(SCHEMA, &update, "changed.id")
        });
        let update = UPDATE
            .query_as::<PatientRow>(call, |q| {
                q.bind(id.get())
                    .bind(patch.first_name.as_ref().map(|n| n.as_str()))
                    .bind(patch.last_name.as_ref().map(|n| n.as_str()))
                    .bind(patch.birth_date.map(|d| d.get()))
                    .bind(patch.email.as_ref().map(|e| e.as_str()))
                    .bind(patch.identifiers.as_ref().map(Identifiers::keys))
                    .bind(patch.first_name.as_ref().map(|n| fold(n.as_str())))
                    .bind(patch.last_name.as_ref().map(|n| fold(n.as_str())))
                    .bind(patch.email.as_ref().map(|e| fold(e.as_str())))
                    .bind(etag.map(Etag::as_str))
            })
            .fetch_optional(&self.pool);
        let row = durable(call, update).await.map_err(email_taken_or)?;
        self.written.notify();
        audit::mark_audited(call, usize::from(row.is_some()));
        match row {
            Some(row) => Ok(row.into()),
            None => Err(self.why_not_written(id, false).await),
        }
    }

    /// Why a write of patient `id` that needed it `deleted` (or live), and
    /// its etag if given, touched no row.
    async fn why_not_written(&self, id: PatientId, deleted: bool) -> Error {
        let found: std::result::Result<Option<bool>, sqlx::Error> =
            sqlx::query_scalar("select delete_time is not null from patients.patient where id = $1")
                .bind(id.get())
                .fetch_optional(&self.pool)
                .await;
        match found {
            Ok(None) => ApiError::not_found(id).into(),
            Ok(Some(is_deleted)) if is_deleted != deleted => {
                if is_deleted {
                    Error::Deleted(id)
                } else {
                    Error::NotDeleted(id)
                }
            }
            Ok(Some(_)) => ApiError::etag_mismatch(id).into(),
            Err(e) => e.into(),
        }
    }

    /// Marks the patient deleted, to be purged after `retention_days`, if
    /// `etag` (when given) is still the current one; its DELETED change is
    /// what studies-service's cascade follows.
    pub async fn delete(
        &self,
        call: &Call,
        id: PatientId,
        etag: Option<&Etag>,
        retention_days: u32,
    ) -> Result<()> {
        static DELETE: LazyLock<AuditedStatement> = LazyLock::new(|| {
            AuditedStatement::new(
                SCHEMA,
                "update patients.patient set delete_time = now(), expire_time = now() + make_interval(days => $3) \
                 where id = $1 and delete_time is null and ($2::text is null or version::text = $2) returning id",
                "changed.id",
            )
        });
        let deletion = DELETE
            .query_as::<(i64,)>(call, |q| {
                q.bind(id.get())
                    .bind(etag.map(Etag::as_str))
                    .bind(i32::try_from(retention_days).unwrap_or(i32::MAX))
            })
            .fetch_optional(&self.pool);
        let deleted = durable(call, deletion).await?;
        self.written.notify();
        if deleted.is_none() {
            return Err(self.why_not_written(id, false).await);
        }
        audit::mark_audited(call, 1);
        Ok(())
    }

    /// Restores a deleted patient if `etag` (when given) is still the
    /// current one; fails if its email was taken since.
    pub async fn undelete(&self, call: &Call, id: PatientId, etag: Option<&Etag>) -> Result<Patient> {
        static UNDELETE: LazyLock<AuditedStatement> = LazyLock::new(|| {
            let undelete = concat!(
                "update patients.patient set delete_time = null, expire_time = null \
                 where id = $1 and delete_time is not null and ($2::text is null or version::text = $2) returning ",
                patient_columns!()
            );
            AuditedStatement::new(SCHEMA, undelete, "changed.id")
        });
        let taken_since = |e: ApiError| match email_taken_or(e) {
            Error::EmailTaken => Error::EmailTakenSince(id),
            Error::IdentifierTaken => Error::IdentifierTakenSince(id),
            other => other,
        };
        let undeletion = UNDELETE
            .query_as::<PatientRow>(call, |q| q.bind(id.get()).bind(etag.map(Etag::as_str)))
            .fetch_optional(&self.pool);
        let undeleted = durable(call, undeletion).await.map_err(taken_since)?;
        self.written.notify();
        let Some(row) = undeleted else {
            return Err(self.why_not_written(id, true).await);
        };
        audit::mark_audited(call, 1);
        Ok(row.into())
    }

    /// Erases the patient and every revision now, deleted or not, leaving
    /// a PURGED change (on which the cascade erases their studies).
    pub async fn purge(&self, call: &Call, id: PatientId) -> Result<()> {
        static PURGE: LazyLock<AuditedStatement> = LazyLock::new(|| {
            AuditedStatement::new(
                SCHEMA,
                "delete from patients.patient where id = $1 returning id",
                "changed.id",
            )
        });
        let purge = PURGE.query_as::<(i64,)>(call, |q| q.bind(id.get())).fetch_optional(&self.pool);
        let purged = durable(call, purge).await?;
        self.written.notify();
        if purged.is_none() {
            return Err(ApiError::not_found(id).into());
        }
        audit::mark_audited(call, 1);
        Ok(())
    }

    /// Purges up to `batch` deleted patients whose retention has ended,
    /// with an audit event naming them; returns how many.
    pub async fn purge_expired(&self, batch: i64) -> std::result::Result<u64, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("select set_config('clinic.actor', $1, true)")
            .bind(SERVICE_ACTOR)
            .execute(&mut *tx)
            .await?;
        let purged: Vec<i64> = sqlx::query_scalar(
            "delete from patients.patient where id in ( \
                 select id from patients.patient where expire_time < now() order by expire_time limit $1 \
                 for update skip locked) returning id",
        )
        .bind(batch)
        .fetch_all(&mut *tx)
        .await?;
        let count = purged.len() as u64;
        audit::record_own_work(&mut tx, SCHEMA, SERVICE_ACTOR, PURGE_AFTER_RETENTION, purged).await?;
        tx.commit().await?;
        self.written.notify();
        Ok(count)
    }

    /// Revision `revision` of patient `id`.
    pub async fn revision(&self, id: PatientId, revision: i64) -> Result<Patient> {
        const ONE: &str = concat!(
            "select ",
            revision_columns!(),
            " from patients.patient_revision where patient_id = $1 and revision = $2"
        );
        let row: Option<RevisionRow> =
            sqlx::query_as(ONE).bind(id.get()).bind(revision).fetch_optional(&self.pool).await?;
        match row {
            Some(row) => Ok(PatientRevision::from(row).patient),
            None => {
                self.get(id).await?;
                Err(Error::RevisionNotFound { id, revision })
            }
        }
    }

    /// Up to `size` revisions of patient `id` older than `before` (all when
    /// none), newest first; NOT_FOUND if the patient does not exist.
    pub async fn revisions(
        &self,
        id: PatientId,
        before: Option<i64>,
        size: u32,
    ) -> Result<Page<PatientRevision>> {
        const PAGE: &str = concat!(
            "select ",
            revision_columns!(),
            " from patients.patient_revision where patient_id = $1 and ($2::bigint is null or revision < $2) \
             order by revision desc limit $3"
        );
        let rows: Vec<RevisionRow> = sqlx::query_as(PAGE)
            .bind(id.get())
            .bind(before)
            .bind(paging::overfetch(size))
            .fetch_all(&self.pool)
            .await?;
        if rows.is_empty() && before.is_none() {
            return Err(ApiError::not_found(id).into());
        }
        Ok(Page::from_overfetched(rows.into_iter().map(PatientRevision::from).collect(), size))
    }

    /// Up to `limit` changes of the feed after `sequence`, oldest first.
    pub async fn changes_after(&self, sequence: i64, limit: u32) -> Result<Vec<PatientChange>> {
        let rows: Vec<ChangeRow> = sqlx::query_as(
            "select c.sequence, c.kind, c.resource_id, c.revision, c.commit_time, c.actor, \
                    r.first_name, r.last_name, r.birth_date, r.email, r.identifiers, r.create_time, r.revision_time, \
                    r.delete_time, r.expire_time \
             from patients.change c left join patients.patient_revision r \
               on r.patient_id = c.resource_id and r.revision = c.revision \
             where c.sequence > $1 order by c.sequence limit $2",
        )
        .bind(sequence)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(PatientChange::from).collect())
    }
}
