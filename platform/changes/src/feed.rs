//! The sequencer, the live head of the feed, positions and pruning.

use std::{sync::Arc, time::Duration};

use sqlx::{
    AssertSqlSafe, PgPool,
    postgres::{PgListener, PgPoolOptions},
};
use tokio::{
    sync::{Notify, watch},
    task::JoinHandle,
};
use tonic::{Code, Status};

use clinic_core::{errors, validation::Invalid};

/// How many changes one numbering takes at most.
const NUMBERING_BATCH: i64 = 1000;

/// How often the sequencer looks for unnumbered changes and refreshes the
/// head without being woken: for writes made behind the services' back (an
/// operator's fix in psql) and a notification lost while its connection
/// was down, never the way the services' own changes are delivered.
const SAFETY_NET: Duration = Duration::from_secs(1);

/// Tells this replica's sequencer that a change was committed: the
/// services' writes wake it in-process, so no writing transaction pays for
/// a `NOTIFY` (which serialises the commits of every notifying transaction
/// in the cluster and cost inserts two thirds of their rate).
#[derive(Debug, Clone, Default)]
pub struct Written(Arc<Notify>);

impl Written {
    /// A change was committed: number it now.
    pub fn notify(&self) {
        self.0.notify_one();
    }
}

/// Why a feed cannot be read from where a consumer asks.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// A negative position.
    #[error("after_sequence must not be negative")]
    Negative,
    /// The changes after the position are past the retention and pruned.
    #[error(
        "changes after sequence {after} are past the feed's retention (the oldest kept follows {pruned_through})"
    )]
    Expired {
        /// The position asked for.
        after: i64,
        /// The newest pruned sequence.
        pruned_through: i64,
    },
    /// The watcher did not accept a batch within the send timeout.
    #[error("the watcher did not keep up; resume after sequence {after}")]
    TooSlow {
        /// The last sequence it was sent.
        after: i64,
    },
    /// The server is shutting down.
    #[error("the server is shutting down; resume after sequence {after}")]
    ShuttingDown {
        /// The last sequence sent.
        after: i64,
    },
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<FeedError> for Status {
    fn from(error: FeedError) -> Self {
        match &error {
            FeedError::Negative => {
                errors::invalid_fields(&Invalid::one("after_sequence", "must not be negative"))
            }
            FeedError::Expired { .. } => {
                errors::with_reason(Code::OutOfRange, error.to_string(), "CHANGES_EXPIRED")
            }
            FeedError::TooSlow { .. } => {
                errors::with_reason(Code::ResourceExhausted, error.to_string(), "CONSUMER_TOO_SLOW")
            }
            FeedError::ShuttingDown { .. } => {
                errors::with_reason(Code::Unavailable, error.to_string(), "SERVER_SHUTTING_DOWN")
            }
            FeedError::Database(e) => clinic_pg::db::status(e),
        }
    }
}

/// One service's change feed, as this replica serves it.
#[derive(Debug, Clone)]
pub struct Feed {
    pool: PgPool,
    schema: &'static str,
    head: watch::Receiver<i64>,
    closing: watch::Receiver<bool>,
    settings: crate::FeedSettings,
    written: Written,
}

/// This replica's running feed: its sequencer, which stops when this is
/// dropped, and the switch that ends its watch streams at shutdown.
#[derive(Debug)]
pub struct Closer {
    closing: watch::Sender<bool>,
    _sequencer: AbortOnDrop,
}

impl Closer {
    /// `shutdown`, after which every watch stream ends at once with
    /// UNAVAILABLE naming where to resume, so a drain is not held up by
    /// them: what a server serves until.
    pub fn ending_watches(
        &self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = ()> + Send + 'static {
        let closing = self.closing.clone();
        async move {
            shutdown.await;
            closing.send_replace(true);
        }
    }
}

impl Feed {
    /// The feed of `schema`, with this replica's sequencer and the listener
    /// that keeps the head current running in the returned task.
    pub async fn start(
        pool: PgPool,
        schema: &'static str,
        settings: crate::FeedSettings,
    ) -> Result<(Self, Closer), sqlx::Error> {
        let first = head_in_db(&pool, schema).await?;
        let (set_head, head) = watch::channel(first);
        let (close, closing) = watch::channel(false);
        let written = Written::default();
        let sequencer =
            AbortOnDrop(tokio::spawn(run_sequencer(pool.clone(), schema, set_head, written.clone())));
        let closer = Closer { closing: close, _sequencer: sequencer };
        Ok((Self { pool, schema, head, closing, settings, written }, closer))
    }

    /// What the service's writes tell once they have committed.
    pub fn written(&self) -> Written {
        self.written.clone()
    }

    /// The pool and schema it reads, for what is recorded alongside.
    pub(crate) fn store(&self) -> (&PgPool, &'static str) {
        (&self.pool, self.schema)
    }

    /// The settings it serves with.
    pub fn settings(&self) -> &crate::FeedSettings {
        &self.settings
    }

    /// The newest sequence this replica knows of.
    pub fn head(&self) -> i64 {
        *self.head.borrow()
    }

    /// The head, to wait for it to move.
    pub(crate) fn subscribe(&self) -> watch::Receiver<i64> {
        self.head.clone()
    }

    /// Whether the server is shutting down, to wait for it.
    pub(crate) fn closing(&self) -> watch::Receiver<bool> {
        self.closing.clone()
    }

    /// Checks that a consumer can read on from `after`: not negative and not
    /// older than the retention kept.
    pub async fn check_position(&self, after: i64) -> Result<(), FeedError> {
        if after < 0 {
            return Err(FeedError::Negative);
        }
        let pruned_through: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "select pruned_through from {}.change_head",
            self.schema
        )))
        .fetch_one(&self.pool)
        .await?;
        if after < pruned_through {
            return Err(FeedError::Expired { after, pruned_through });
        }
        Ok(())
    }

    /// Removes up to `batch` changes older than the retention, oldest first,
    /// and remembers the newest removed; returns how many went.
    pub async fn prune(&self, batch: i64) -> Result<u64, sqlx::Error> {
        prune(&self.pool, self.schema, self.settings.change_retention_days, batch).await
    }

    /// Prunes in the background, every `prune_interval`, on whichever
    /// replica runs it (one, behind the schema's leader lock).
    pub fn spawn_pruner(&self) -> JoinHandle<()> {
        let feed = self.clone();
        clinic_pg::db::spawn_pruner(
            "changes past the feed's retention",
            self.settings.change_prune_interval,
            move || {
                let feed = feed.clone();
                async move { feed.prune(10_000).await }
            },
        )
    }
}

async fn head_in_db(pool: &PgPool, schema: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(AssertSqlSafe(format!("select sequence from {schema}.change_head")))
        .fetch_one(pool)
        .await
}

async fn prune(pool: &PgPool, schema: &str, retention_days: u32, batch: i64) -> Result<u64, sqlx::Error> {
    let pruned: Option<(i64, i64)> = sqlx::query_as(AssertSqlSafe(format!(
        "with old as (
             select id from {schema}.change
             where sequence is not null and commit_time < now() - make_interval(days => $1)
             order by sequence limit $2
         ),
         gone as (delete from {schema}.change c using old where c.id = old.id returning c.sequence),
         head as (
             update {schema}.change_head set pruned_through = greatest(pruned_through, (select max(sequence) from gone))
             where exists (select 1 from gone) returning pruned_through
         )
         select count(*), (select pruned_through from head) from gone having count(*) > 0"
    )))
    .bind(i32::try_from(retention_days).unwrap_or(i32::MAX))
    .bind(batch)
    .fetch_optional(pool)
    .await?;
    Ok(pruned.map_or(0, |(count, _)| count as u64))
}

/// Numbers the committed changes that have no sequence yet, under the
/// schema's numbering lock, and announces the new head at commit; returns
/// the new head if it numbered any.
pub async fn number_committed(pool: &PgPool, schema: &str) -> Result<Option<i64>, sqlx::Error> {
    let waiting: bool = sqlx::query_scalar(AssertSqlSafe(format!(
        "select exists (select 1 from {schema}.change where sequence is null)"
    )))
    .fetch_one(pool)
    .await?;
    if !waiting {
        return Ok(None);
    }
    let mut tx = pool.begin().await?;
    sqlx::query("select pg_advisory_xact_lock(hashtext('clinic.changes.' || $1))")
        .bind(schema)
        .execute(&mut *tx)
        .await?;
    // Only rows whose writers committed before this statement are seen, in
    // the order of their ids; all get their numbers at this commit.
    let head: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
        "with next as (
             select id, row_number() over (order by id) as n
             from {schema}.change where sequence is null order by id limit $1
         ),
         head as (
             update {schema}.change_head set sequence = sequence + (select count(*) from next)
             where exists (select 1 from next)
             returning sequence - (select count(*) from next) as base
         ),
         numbered as (
             update {schema}.change c set sequence = head.base + next.n, commit_time = clock_timestamp()
             from next, head where c.id = next.id
             returning c.sequence
         )
         select max(sequence) from numbered"
    )))
    .bind(NUMBERING_BATCH)
    .fetch_one(&mut *tx)
    .await?;
    if let Some(head) = head {
        sqlx::query("select pg_notify($1, $2)")
            .bind(format!("{schema}_change_sequenced"))
            .bind(head.to_string())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(head)
}

/// The sequencer and head listener of one replica: wakes on every commit
/// of this replica that wrote a change ([`Written`]), on every numbering
/// (its own or another replica's, by `NOTIFY`), and every [`SAFETY_NET`],
/// until aborted.
async fn run_sequencer(pool: PgPool, schema: &'static str, head: watch::Sender<i64>, wake: Written) {
    // Numbering on this replica's own commits runs beside the listener
    // (numberings serialise on the advisory lock), and ends with it.
    let numbering = {
        let (pool, head) = (pool.clone(), head.clone());
        AbortOnDrop(tokio::spawn(async move {
            loop {
                wake.0.notified().await;
                number_until_done(&pool, schema, &head).await;
            }
        }))
    };
    let _numbering = numbering;
    let written = format!("{schema}_change_written");
    let sequenced = format!("{schema}_change_sequenced");
    let listener_pool = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .connect_lazy_with((*pool.connect_options()).clone());
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut listener = match PgListener::connect_with(&listener_pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, schema, "change feed: cannot listen yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if let Err(e) = listener.listen_all([written.as_str(), sequenced.as_str()]).await {
            tracing::warn!(error = %e, schema, "change feed: LISTEN failed; retrying");
            tokio::time::sleep(backoff).await;
            continue;
        }
        backoff = Duration::from_millis(100);
        // Anything committed while nobody listened.
        catch_up(&pool, schema, &head).await;
        loop {
            let next = tokio::time::timeout(SAFETY_NET, listener.try_recv()).await;
            match next {
                Ok(Ok(Some(notification))) => {
                    let mut number = notification.channel() == written;
                    advance(&head, notification.payload());
                    while let Some(more) = listener.next_buffered() {
                        number |= more.channel() == written;
                        advance(&head, more.payload());
                    }
                    if number {
                        number_until_done(&pool, schema, &head).await;
                    }
                }
                Err(_elapsed) => catch_up(&pool, schema, &head).await,
                Ok(Ok(None)) => {
                    tracing::warn!(schema, "change feed: listener reconnected");
                    catch_up(&pool, schema, &head).await;
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, schema, "change feed: listener failed; reconnecting");
                    break;
                }
            }
        }
    }
}

/// A task that ends when this is dropped.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn advance(head: &watch::Sender<i64>, payload: &str) {
    if let Ok(sequence) = payload.parse::<i64>() {
        head.send_if_modified(|current| {
            let newer = sequence > *current;
            if newer {
                *current = sequence;
            }
            newer
        });
    }
}

async fn number_until_done(pool: &PgPool, schema: &str, head: &watch::Sender<i64>) {
    loop {
        match number_committed(pool, schema).await {
            Ok(Some(sequence)) => advance(head, &sequence.to_string()),
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, schema, "change feed: numbering failed; retrying on the next wake-up");
                return;
            }
        }
    }
}

async fn catch_up(pool: &PgPool, schema: &str, head: &watch::Sender<i64>) {
    number_until_done(pool, schema, head).await;
    match head_in_db(pool, schema).await {
        Ok(sequence) => advance(head, &sequence.to_string()),
        Err(e) => tracing::warn!(error = %e, schema, "change feed: cannot read the head"),
    }
}
