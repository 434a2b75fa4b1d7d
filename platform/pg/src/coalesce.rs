//! Point reads by id, coalesced.
//!
//! Under load most of a point read's cost is per statement, not per row: a
//! round trip, a wake-up on each side, a plan execution. [`PointReads`] runs
//! a few statements at once (`DB_POINT_READ_STATEMENTS`, fewer than the
//! pool's connections); a read that arrives while all of them are busy
//! waits for the next free slot together with every other read queued
//! meanwhile, and they are answered by one `where id = any($1)` statement.
//! Nothing waits for a batch to fill: a read that finds a slot free runs
//! alone, at once.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use sqlx::PgPool;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::Instrument;

use crate::api_error::ApiError;
use clinic_core::ids::{Id, Kind};

/// The most reads one statement answers.
pub const MAX_BATCH: usize = 128;

/// A read's answer: its row (or none), or why not — the statement's error,
/// or `None` when no connection came free in time.
type Reply<R> = oneshot::Sender<Result<Option<R>, Option<Arc<sqlx::Error>>>>;

/// Reads of rows by id through one statement per batch; clone to share.
pub struct PointReads<R> {
    queue: mpsc::UnboundedSender<(i64, Reply<R>, tracing::Span)>,
    statements: Arc<AtomicU64>,
}

impl<R> std::fmt::Debug for PointReads<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PointReads").finish_non_exhaustive()
    }
}

impl<R> Clone for PointReads<R> {
    fn clone(&self) -> Self {
        Self { queue: self.queue.clone(), statements: self.statements.clone() }
    }
}

impl<R> PointReads<R>
where
    R: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Clone + Send + Unpin + 'static,
{
    /// Starts the reader on `pool`: `one` reads the row whose id is `$1`,
    /// `many` the rows whose ids are in `$1::bigint[]`, and `id_of` tells a
    /// row's id. A read alone takes `one`, whose generic plan Postgres
    /// caches; `many` is planned per execution (an array's custom plan
    /// always looks cheaper), a cost shared by its batch. At most
    /// `statements` run at once (and never more than the pool has
    /// connections); a batch that
    /// finds none free within the pool's acquire timeout fails as overload
    /// (RESOURCE_EXHAUSTED), never as an unreachable database.
    pub fn start(
        pool: PgPool,
        statements: u32,
        (one, many): (&'static str, &'static str),
        id_of: fn(&R) -> i64,
    ) -> Self {
        let (queue, mut incoming) = mpsc::unbounded_channel::<(i64, Reply<R>, tracing::Span)>();
        let slots =
            Arc::new(Semaphore::new(statements.clamp(1, pool.options().get_max_connections()) as usize));
        let wait = pool.options().get_acquire_timeout();
        let statements = Arc::new(AtomicU64::new(0));
        let counted = statements.clone();
        tokio::spawn(async move {
            while let Some(first) = incoming.recv().await {
                let slot = tokio::time::timeout(wait, slots.clone().acquire_owned()).await;
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match incoming.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                let Ok(Ok(slot)) = slot else {
                    for (_, reply, _) in batch {
                        let _ = reply.send(Err(None));
                    }
                    continue;
                };
                metrics::histogram!("db_point_read_batch_size").record(batch.len() as f64);
                counted.fetch_add(1, Ordering::Relaxed);
                let pool = pool.clone();
                // The statement's span joins the first read's trace.
                let span = batch[0].2.clone();
                tokio::spawn(
                    async move {
                        let ids: Vec<i64> = batch.iter().map(|(id, _, _)| *id).collect();
                        let rows = match ids.as_slice() {
                            [id] => sqlx::query_as::<_, R>(one).bind(id).fetch_all(&pool).await,
                            _ => sqlx::query_as::<_, R>(many).bind(&ids).fetch_all(&pool).await,
                        };
                        drop(slot);
                        match rows {
                            // The common case, a read alone: its row moves
                            // to it, no map and no copy.
                            Ok(mut rows) if batch.len() == 1 => {
                                if let Some((_, reply, _)) = batch.pop() {
                                    let _ = reply.send(Ok(rows.pop()));
                                }
                            }
                            Ok(rows) => {
                                let by_id: HashMap<i64, R> =
                                    rows.into_iter().map(|r| (id_of(&r), r)).collect();
                                for (id, reply, _) in batch {
                                    let _ = reply.send(Ok(by_id.get(&id).cloned()));
                                }
                            }
                            Err(error) => {
                                let error = Arc::new(error);
                                for (_, reply, _) in batch {
                                    let _ = reply.send(Err(Some(error.clone())));
                                }
                            }
                        }
                    }
                    .instrument(span),
                );
            }
        });
        Self { queue, statements }
    }

    /// How many statements have answered reads so far (fewer than the
    /// reads, under load).
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    /// Row `id`, or NOT_FOUND.
    pub async fn get<K: Kind>(&self, id: Id<K>) -> Result<R, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((id.get(), reply, tracing::Span::current()))
            .map_err(|_| ApiError::Database(sqlx::Error::PoolClosed))?;
        match answer.await {
            Ok(Ok(Some(row))) => Ok(row),
            Ok(Ok(None)) => Err(ApiError::not_found(id)),
            Ok(Err(Some(error))) => Err(ApiError::SharedDatabase(error)),
            Ok(Err(None)) => Err(ApiError::Overloaded),
            Err(_) => Err(ApiError::Database(sqlx::Error::PoolClosed)),
        }
    }
}
