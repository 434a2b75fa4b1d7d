//! The audit trail: one event per rpc that reads or changes patient data.
//!
//! Events live in the owning service's schema (`<schema>.audit_event`),
//! append-only: the service's role cannot update them, and a trigger refuses
//! to delete any but those past the retention, and only while pruning.
//!
//! - A write records its event in its own transaction ([`record_in`]): the
//!   change and its trace commit together or not at all.
//! - Every other audited rpc (reads, writes that failed, calls refused for
//!   want of a role) is recorded by [`RecordAccess`] once the rpc has its
//!   outcome, through an [`AuditSink`]: in a service, [`AuditLog`] (group
//!   commit, one multi-row insert for every event queued meanwhile); in the
//!   gateway, which holds no data, patients-service's [`AuditIntakeApi`]. The
//!   reply waits for its event to be committed; if it cannot be, the caller
//!   gets UNAVAILABLE instead of the data, so no read goes unrecorded. A
//!   write whose own event rolled back with it (its commit failed) is
//!   recorded here too, with its failure.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use clinic_proto::audit::{intake::v1 as intake, v1 as pb};
use sqlx::{AssertSqlSafe, PgConnection, PgPool, postgres::PgConnectOptions};
use tokio::sync::{mpsc, oneshot};
use tonic::{Code, Request, Response, Status};

use clinic_auth::permission;
use clinic_core::{
    context::CallContext,
    errors,
    paging::{self, Page, PageTokens},
    resource::timestamp,
    settings::millis,
    validation::{Invalid, Text, check_text},
};
use clinic_pg::api_error::ApiError;

/// How often events past the retention are pruned. (The retention itself
/// is the owner's to set: `AUDIT_RETENTION_DAYS` of the migrate step.)
#[derive(Debug, Clone, clap::Args)]
pub struct AuditSettings {
    /// How often events past the retention are pruned, in milliseconds.
    #[arg(id = "audit_prune_interval", long = "audit-prune-interval-ms", env = "AUDIT_PRUNE_INTERVAL_MS", value_name = "MS", default_value = "3600000", value_parser = millis)]
    pub prune_interval: Duration,
}

/// Reason of UNAVAILABLE when an access cannot be recorded.
pub const AUDIT_UNAVAILABLE: &str = "AUDIT_UNAVAILABLE";

/// Events written per insert, at most.
const BATCH: usize = 512;

/// Longest one batch may take to be written (connecting included).
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest Postgres works on one batch's insert, below [`WRITE_TIMEOUT`].
const STATEMENT_TIMEOUT_MS: &str = "1500";

/// One access to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Who: the caller's `sub`.
    pub subject: String,
    /// The full method name.
    pub method: String,
    /// The patients concerned.
    pub patient_ids: Vec<i64>,
    /// The outcome, as the status code's name.
    pub code: &'static str,
    /// The request's id.
    pub request_id: String,
}

impl Event {
    /// The event of the rpc `call` ending with `code`.
    pub fn of(call: &CallContext, code: Code) -> Self {
        Self {
            subject: call.identity().map_or_else(|| "anonymous".to_owned(), |i| i.subject.clone()),
            method: call.method.clone(),
            patient_ids: call.patients(),
            code: code_name(code),
            request_id: call.request_id.clone(),
        }
    }
}

/// The name of a status code as the contract spells it (`NOT_FOUND`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

fn insert_statement(schema: &str) -> String {
    format!(
        "insert into {schema}.audit_event (subject, method, patient_ids, code, request_id) \
         select s, m, case when p = '' then '{{}}'::bigint[] else string_to_array(p, ',')::bigint[] end, c, r \
         from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) as e(s, m, p, c, r)"
    )
}

async fn insert(conn: &mut PgConnection, schema: &str, events: &[&Event]) -> Result<(), sqlx::Error> {
    let column = |f: &dyn Fn(&Event) -> String| events.iter().map(|e| f(e)).collect::<Vec<_>>();
    sqlx::query(AssertSqlSafe(insert_statement(schema)))
        .bind(column(&|e| e.subject.clone()))
        .bind(column(&|e| e.method.clone()))
        .bind(column(&|e| e.patient_ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")))
        .bind(column(&|e| e.code.to_owned()))
        .bind(column(&|e| e.request_id.clone()))
        .execute(conn)
        .await
        .map(drop)
}

/// What `call`'s audit event says of it: subject, method and request id
/// (`system` and `background` for work no rpc asked for).
fn event_binds(call: &CallContext) -> [String; 3] {
    match call.identity() {
        Some(_) => {
            let event = Event::of(call, Code::Ok);
            [event.subject, event.method, event.request_id]
        }
        None => ["system".to_owned(), "background".to_owned(), call.request_id.clone()],
    }
}

/// One data-modifying statement with `returning`, extended so that the same
/// statement inserts the call's audit event (outcome OK) for each row it
/// changes: the change and its trace in one atomic round trip. Built once
/// (its parameters are counted here, the event's are numbered after them),
/// bound per call by [`Self::query_as`], which adds the event's values.
#[derive(Debug)]
pub struct AuditedStatement {
    sql: String,
}

impl AuditedStatement {
    /// `statement` recording in `schema`'s trail; `patient` is the SQL
    /// expression, over the returned row `changed`, of the patient
    /// concerned. The statement then returns the changed rows.
    pub fn new(schema: &str, statement: &str, patient: &str) -> Self {
        let params = highest_parameter(statement);
        let (s, m, r) = (params + 1, params + 2, params + 3);
        Self {
            // `actor` names the caller as the transaction's `clinic.actor`
            // before the statement's after-row triggers run (they fire when
            // the whole statement is done): the revision and change they
            // record are the caller's, in the same round trip.
            sql: format!(
                "with changed as ({statement}), \
                 actor as (select set_config('clinic.actor', ${s}, true) as name), \
                 audited as (insert into {schema}.audit_event (subject, method, patient_ids, code, request_id) \
                             select actor.name, ${m}, array[{patient}]::bigint[], 'OK', ${r} from changed, actor) \
                 select * from changed"
            ),
        }
    }

    /// The statement for `call`: `own` binds the statement's parameters in
    /// order, then the event's are bound. Pass the number of rows it
    /// returns to [`mark_audited`].
    pub fn query_as<'q, O>(
        &'q self,
        call: &CallContext,
        own: impl FnOnce(
            sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
        ) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>
    where
        O: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
    {
        let [subject, method, request_id] = event_binds(call);
        own(sqlx::query_as(sqlx::AssertSqlSafe(self.sql.as_str())))
            .bind(subject)
            .bind(method)
            .bind(request_id)
    }
}

/// The highest `$n` placeholder of `statement` (0 when it has none).
fn highest_parameter(statement: &str) -> usize {
    let mut highest = 0;
    let mut rest = statement;
    while let Some(at) = rest.find('$') {
        rest = &rest[at + 1..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        highest = highest.max(digits.parse().unwrap_or(0));
    }
    highest
}

/// Notes that `call`'s event was written with its change, when an
/// [`AuditedStatement`] changed `rows` rows.
pub fn mark_audited(call: &CallContext, rows: usize) {
    if rows > 0 {
        call.mark_audited();
    }
}

/// Records that `call` delivered data of exactly `patients` (one batch of a
/// stream): an event of its own, so a long stream's trail names each batch.
pub async fn record_delivery(
    pool: &sqlx::PgPool,
    schema: &'static str,
    call: &CallContext,
    patients: Vec<i64>,
) -> Result<(), sqlx::Error> {
    let event = Event { patient_ids: patients, ..Event::of(call, Code::Ok) };
    insert(&mut *pool.acquire().await?, schema, &[&event]).await
}

/// Records work a service did on its own, with no caller behind it (a
/// purge after the retention, the delete cascade): `actor` names the
/// service, `what` the work, `patients` exactly whose records it touched;
/// in the transaction on `conn`, so the work and its trace commit together.
pub async fn record_own_work(
    conn: &mut PgConnection,
    schema: &str,
    actor: &str,
    what: &str,
    patients: Vec<i64>,
) -> Result<(), sqlx::Error> {
    if patients.is_empty() {
        return Ok(());
    }
    let event = Event {
        subject: actor.to_owned(),
        method: what.to_owned(),
        patient_ids: patients,
        code: "OK",
        request_id: clinic_core::context::new_request_id(),
    };
    insert(conn, schema, &[&event]).await
}

/// Records `call`'s event (outcome OK) in the transaction on `conn`,
/// concerning `patients` and those already noted, so the change and its
/// trace commit together. Background work (no caller) records nothing.
pub async fn record_in(
    conn: &mut PgConnection,
    schema: &'static str,
    call: &CallContext,
    patients: impl IntoIterator<Item = i64>,
) -> Result<(), sqlx::Error> {
    if call.identity().is_none() {
        return Ok(());
    }
    call.concern(patients);
    insert(conn, schema, &[&Event::of(call, Code::Ok)]).await?;
    call.mark_audited();
    Ok(())
}

/// The group-commit writer of one schema's audit events.
#[derive(Debug, Clone)]
pub struct AuditLog {
    queue: mpsc::Sender<(Event, oneshot::Sender<bool>)>,
}

impl AuditLog {
    /// Starts the writer for `schema`, on a connection of its own (made
    /// with `options`), so recording accesses never waits for the pool the
    /// accesses themselves use.
    pub fn start(options: PgConnectOptions, schema: &'static str) -> (Self, tokio::task::JoinHandle<()>) {
        // Postgres gives up on an insert before the writer does, so an event
        // reported as not written is really not written.
        let options = options.options([("statement_timeout", STATEMENT_TIMEOUT_MS)]);
        let (queue, mut incoming) = mpsc::channel::<(Event, oneshot::Sender<bool>)>(4 * BATCH);
        let writer = tokio::spawn(async move {
            let mut conn: Option<PgConnection> = None;
            let mut batch = Vec::with_capacity(BATCH);
            while let Some(first) = incoming.recv().await {
                batch.push(first);
                while batch.len() < BATCH {
                    match incoming.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                let events: Vec<&Event> = batch.iter().map(|(e, _)| e).collect();
                let written = tokio::time::timeout(WRITE_TIMEOUT, async {
                    if conn.is_none() {
                        conn = Some(sqlx::ConnectOptions::connect(&options).await?);
                    }
                    insert(conn.as_mut().expect("connected above"), schema, &events).await
                })
                .await
                .unwrap_or(Err(sqlx::Error::PoolTimedOut));
                if let Err(e) = &written {
                    // A broken or stuck connection is not reused.
                    conn = None;
                    metrics::counter!("audit_write_failures_total").increment(1);
                    tracing::error!(error = %e, events = batch.len(), "writing audit events failed");
                } else {
                    metrics::counter!("audit_events_written_total").increment(batch.len() as u64);
                    metrics::counter!("audit_write_batches_total").increment(1);
                }
                for (_, ack) in batch.drain(..) {
                    let _ = ack.send(written.is_ok());
                }
            }
        });
        (Self { queue }, writer)
    }

    /// Appends `event`; returns once it is committed, or false if it could
    /// not be.
    pub async fn append(&self, event: Event) -> bool {
        let (ack, committed) = oneshot::channel();
        if self.queue.send((event, ack)).await.is_err() {
            return false;
        }
        committed.await.unwrap_or(false)
    }
}

/// Where [`RecordAccess`] records events: a service's own trail
/// ([`AuditLog`]), or, for a process that holds no data, another service's
/// (the gateway's remote sink).
pub trait AuditSink: std::fmt::Debug + Send + Sync {
    /// Appends `event` of the rpc `call`; resolves once it is committed, or
    /// to false if it could not be.
    fn append(&self, event: Event, call: Arc<CallContext>) -> BoxFuture<bool>;
}

impl AuditSink for AuditLog {
    fn append(&self, event: Event, _call: Arc<CallContext>) -> BoxFuture<bool> {
        let log = self.clone();
        Box::pin(async move { AuditLog::append(&log, event).await })
    }
}

/// Events pruned per call of the pruning function.
const PRUNE_BATCH: i32 = 1000;

/// Deletes events past the retention the schema's owner set, in batches,
/// through the owner's function `<schema>.prune_audit_events` (the service's
/// role has no DELETE on its trail), which records an event of its own
/// (subject `clinic:<schema>`) for each batch it pruned.
pub async fn prune(pool: &PgPool, schema: &'static str) -> Result<u64, sqlx::Error> {
    let statement = format!("select {schema}.prune_audit_events($1)");
    let mut pruned = 0;
    loop {
        let batch: i64 =
            sqlx::query_scalar(AssertSqlSafe(statement.as_str())).bind(PRUNE_BATCH).fetch_one(pool).await?;
        pruned += u64::try_from(batch).unwrap_or(0);
        if batch < i64::from(PRUNE_BATCH) {
            return Ok(pruned);
        }
    }
}

/// Prunes `schema`'s events every `settings.prune_interval`.
pub fn spawn_pruner(
    pool: PgPool,
    schema: &'static str,
    settings: AuditSettings,
) -> tokio::task::JoinHandle<()> {
    clinic_pg::db::spawn_pruner("audit events past their retention", settings.prune_interval, move || {
        let pool = pool.clone();
        async move { prune(&pool, schema).await }
    })
}

use clinic_layers::{BoxFuture, Middleware, Next, response_code};

/// Records the event of every audited rpc that did not record it with its
/// change, once the rpc has its outcome (also when it failed, or was refused
/// for want of a role); the reply waits for the event.
#[derive(Debug, Clone)]
pub struct RecordAccess {
    sink: Arc<dyn AuditSink>,
}

impl RecordAccess {
    /// Records through `sink`.
    pub fn new(sink: Arc<dyn AuditSink>) -> Self {
        Self { sink }
    }
}

impl Middleware for RecordAccess {
    fn call(&self, req: clinic_layers::Request, next: Next) -> BoxFuture<clinic_layers::Response> {
        let audited = permission(req.uri().path()).is_some_and(|p| p.audited);
        let call = req.extensions().get::<Arc<CallContext>>().cloned();
        let (Some(call), true) = (call, audited) else {
            return next.run(req);
        };
        let (sink, response) = (self.sink.clone(), next.run(req));
        Box::pin(async move {
            let response = response.await;
            let code = response_code(&response);
            // Not recorded: a change whose event committed with it; calls of
            // no verified caller (anyone could fill the trail with those;
            // the log has them); calls shed for overload, which touched no
            // data and whose recording would add to the load a caller at full
            // blast makes (they are counted). A change whose commit failed
            // took its event with it, so its failure is recorded here.
            if code == Code::ResourceExhausted {
                metrics::counter!("audit_unrecorded_shed_total").increment(1);
                return response;
            }
            if (call.audited() && code == Code::Ok) || call.identity().is_none() {
                return response;
            }
            if sink.append(Event::of(&call, code), call.clone()).await || code != Code::Ok {
                // A failed call disclosed nothing: its own error says more
                // than the audit trail's.
                response
            } else {
                errors::with_reason(
                    Code::Unavailable,
                    "the access could not be recorded in the audit trail, so it is refused; retry later",
                    AUDIT_UNAVAILABLE,
                )
                .into_http()
            }
        })
    }
}

/// AuditIntakeService: records the audit events of rpcs served by a process
/// that holds no data (the gateway's listing), in this service's trail,
/// under the caller's own identity.
#[derive(Debug, Clone)]
pub struct AuditIntakeApi {
    log: AuditLog,
}

impl AuditIntakeApi {
    /// Takes events into `log`.
    pub fn new(log: AuditLog) -> Self {
        Self { log }
    }
}

/// The service whose rpcs' events the intake takes: the one that holds no
/// data of its own.
const RECORDED_THROUGH_INTAKE: &str = "clinic.gateway.v1.GatewayService/";

/// Patients one event names, at most: a listing page's largest.
const MAX_EVENT_PATIENTS: usize = paging::MAX_PAGE_SIZE as usize;

/// The event `req` asks to record, validated: an audited method of the
/// gateway, a status code's name, positive patient ids.
fn intake_event(
    req: intake::AppendAuditEventRequest,
    subject: &str,
    request_id: &str,
) -> Result<Event, Invalid> {
    let mut invalid = Invalid::default();
    let recordable = req.method.starts_with(RECORDED_THROUGH_INTAKE)
        && permission(&format!("/{}", req.method)).is_some_and(|p| p.audited);
    if !recordable {
        invalid.push("method", "must be an audited rpc of clinic.gateway.v1.GatewayService");
    }
    let code = (0..=16).map(Code::from_i32).map(code_name).find(|name| *name == req.code);
    if code.is_none() {
        invalid.push("code", "must be the name of a gRPC status code, such as OK");
    }
    if req.patient_ids.len() > MAX_EVENT_PATIENTS {
        invalid.push("patient_ids", format!("must name at most {MAX_EVENT_PATIENTS} patients"));
    } else if req.patient_ids.iter().any(|id| *id <= 0) {
        invalid.push("patient_ids", "must be positive patient ids");
    }
    let mut patient_ids = req.patient_ids;
    let mut seen = std::collections::HashSet::new();
    patient_ids.retain(|id| seen.insert(*id));
    invalid.finish(|| Event {
        subject: subject.to_owned(),
        method: req.method,
        patient_ids,
        code: code.unwrap_or("UNKNOWN"),
        request_id: request_id.to_owned(),
    })
}

#[tonic::async_trait]
impl intake::audit_intake_service_server::AuditIntakeService for AuditIntakeApi {
    async fn append_audit_event(
        &self,
        request: Request<intake::AppendAuditEventRequest>,
    ) -> Result<Response<()>, Status> {
        let call = request.extensions().get::<Arc<CallContext>>().cloned();
        let Some(identity) = call.as_ref().and_then(|c| c.identity().cloned()) else {
            return Err(clinic_auth::unauthenticated(clinic_auth::Rejection::Missing));
        };
        let request_id = call.map(|c| c.request_id.clone()).unwrap_or_default();
        let event =
            intake_event(request.into_inner(), &identity.subject, &request_id).map_err(ApiError::from)?;
        if self.log.append(event).await {
            Ok(Response::new(()))
        } else {
            Err(errors::with_reason(
                Code::Unavailable,
                "the event could not be recorded in the audit trail; retry later",
                AUDIT_UNAVAILABLE,
            ))
        }
    }
}

/// AuditService over one schema's events.
#[derive(Debug, Clone)]
pub struct AuditApi {
    pool: PgPool,
    schema: &'static str,
    tokens: PageTokens,
}

impl AuditApi {
    /// The events of `schema`, paged with `tokens`.
    pub fn new(pool: PgPool, schema: &'static str, tokens: PageTokens) -> Self {
        Self { pool, schema, tokens }
    }
}

/// The filters of a ListAuditEvents request, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditFilter {
    /// Only events concerning this patient.
    pub patient_id: Option<i64>,
    /// Only events of this subject.
    pub subject: Option<String>,
    /// Only events at or after this time.
    pub start: Option<DateTime<Utc>>,
    /// Only events before this time.
    pub end: Option<DateTime<Utc>>,
    /// Page size.
    pub size: u32,
}

fn time(t: &Option<prost_types::Timestamp>, field: &str, invalid: &mut Invalid) -> Option<DateTime<Utc>> {
    let t = t.as_ref()?;
    let parsed = DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(u32::MAX));
    if parsed.is_none() {
        invalid.push(field, "is not a valid timestamp");
    }
    parsed
}

impl AuditFilter {
    /// Validates the filters of `req`.
    pub fn parse(req: &pb::ListAuditEventsRequest) -> Result<Self, Invalid> {
        let mut invalid = Invalid::default();
        if req.patient_id < 0 {
            invalid.push("patient_id", "must be a positive patient id, or 0 for any");
        }
        let subject = invalid.check(check_text(&req.subject, "subject", 512, Text::Token));
        let size = invalid.check(paging::page_size(req.page_size, "page_size"));
        let start = time(&req.start_time, "start_time", &mut invalid);
        let end = time(&req.end_time, "end_time", &mut invalid);
        let size = size.unwrap_or_default();
        invalid.finish(|| Self {
            patient_id: (req.patient_id > 0).then_some(req.patient_id),
            subject: subject.filter(|s| !s.is_empty()).map(str::to_owned),
            start,
            end,
            size,
        })
    }

    /// The page-token scope of these filters.
    pub fn scope(&self) -> String {
        format!(
            "clinic.audit.v1.AuditService/ListAuditEvents?patient={:?}&subject={:?}&start={:?}&end={:?}",
            self.patient_id, self.subject, self.start, self.end
        )
    }
}

/// What one event is counted as when a page's bytes are bounded in SQL.
const EVENT_BYTES: &str = "(octet_length(subject) + octet_length(method) + octet_length(request_id) + 8 * cardinality(patient_ids) + 64)";

/// [`EVENT_BYTES`] of a fetched event.
fn event_bytes(row: &(i64, DateTime<Utc>, String, String, Vec<i64>, String, String)) -> usize {
    row.2.len() + row.3.len() + row.6.len() + 8 * row.4.len() + 64
}

/// Where a page of events stopped: the last event's time (microseconds) and id.
fn encode_position(time: DateTime<Utc>, id: i64) -> Vec<u8> {
    [time.timestamp_micros().to_be_bytes(), id.to_be_bytes()].concat()
}

fn decode_position(bytes: &[u8]) -> Option<(DateTime<Utc>, i64)> {
    let (time, id) = bytes.split_at_checked(8)?;
    let time = DateTime::from_timestamp_micros(i64::from_be_bytes(time.try_into().ok()?))?;
    Some((time, i64::from_be_bytes(id.try_into().ok()?)))
}

#[tonic::async_trait]
impl pb::audit_service_server::AuditService for AuditApi {
    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let req = request.into_inner();
        let filter = AuditFilter::parse(&req).map_err(ApiError::from)?;
        let scope = filter.scope();
        let before = match self.tokens.decode_bytes(&scope, &req.page_token).map_err(ApiError::from)? {
            Some(bytes) => Some(decode_position(&bytes).ok_or(ApiError::InvalidPageToken)?),
            None => None,
        };
        type Row = (i64, DateTime<Utc>, String, String, Vec<i64>, String, String);
        // Newest first by time, then id: ids follow insertion, not time
        // (each replica's clock stamps its own events), so paging by id
        // alone could skip events a merge by time then shows.
        // The page's bytes are bounded in SQL too (a listing's event names
        // up to 1,000 patients): at most MAX_PAGE_BYTES is read.
        let rows: Vec<Row> = sqlx::query_as(AssertSqlSafe(format!(
            "select id, time, subject, method, patient_ids, code, request_id from ( \
               select *, sum({EVENT_BYTES}) over (order by time desc, id desc rows between unbounded preceding and current row) as running \
               from {}.audit_event \
               where ($1::timestamptz is null or (time, id) < ($1, $2)) \
                 and ($3::bigint is null or patient_ids @> array[$3::bigint]) \
                 and ($4::text is null or subject = $4) \
                 and ($5::timestamptz is null or time >= $5) \
                 and ($6::timestamptz is null or time < $6) \
               order by time desc, id desc limit $7) bounded \
             where running - {EVENT_BYTES} < $8 \
             order by time desc, id desc",
            self.schema
        )))
        .bind(before.map(|(time, _)| time))
        .bind(before.map_or(0, |(_, id)| id))
        .bind(filter.patient_id)
        .bind(filter.subject.as_deref())
        .bind(filter.start)
        .bind(filter.end)
        .bind(paging::overfetch(filter.size))
        .bind(paging::MAX_PAGE_BYTES as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(ApiError::from)?;
        // The SQL keeps the event that crosses the bound, so the cut here
        // (the same count) sees it and says more follow.
        let mut page = Page::from_overfetched(rows, filter.size);
        page.cut_to_bytes(paging::MAX_PAGE_BYTES, event_bytes);
        let next_page_token = match (page.more, page.items.last()) {
            (true, Some(last)) => self.tokens.encode_bytes(&scope, &encode_position(last.1, last.0)),
            _ => String::new(),
        };
        let events = page
            .items
            .into_iter()
            .map(|(_, time, subject, method, patient_ids, code, request_id)| pb::AuditEvent {
                time: Some(timestamp(time)),
                subject,
                method,
                patient_ids,
                code,
                request_id,
            })
            .collect();
        Ok(Response::new(pb::ListAuditEventsResponse { events, next_page_token }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_audited_statement_numbers_the_events_parameters_after_its_own() {
        assert_eq!(highest_parameter("select 1"), 0);
        assert_eq!(highest_parameter("update t set a = $2, b = $12 where id = $1 and $3 is null"), 12);
        let statement =
            AuditedStatement::new("s", "delete from s.t where id = $1 and v = $2 returning id", "changed.id");
        assert!(statement.sql.contains("set_config('clinic.actor', $3, true)"), "{}", statement.sql);
        assert!(
            statement
                .sql
                .contains("select actor.name, $4, array[changed.id]::bigint[], 'OK', $5 from changed, actor")
        );
    }
}
