//! A server stream that replays a feed from a position, then follows it.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use clinic_core::context::Call;
use clinic_pg::api_error::ApiError;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::Stream;
use tonic::Status;

use crate::feed::{Feed, FeedError};

/// How many changes one message carries at most.
pub const BATCH: u32 = 500;

/// What a watch stream sends: the changes after the previous message's, or
/// none (a heartbeat), with the feed's head as this replica knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch<T> {
    /// The changes, oldest first.
    pub changes: Vec<T>,
    /// The feed's newest sequence: an idle consumer may checkpoint it.
    pub head: i64,
}

/// A change as a feed reads it.
pub trait Sequenced {
    /// Its sequence.
    fn sequence(&self) -> i64;
    /// The patient whose record it changed, named in the audit trail of
    /// its delivery.
    fn patient(&self) -> i64;
}

/// Reads up to `limit` changes after a sequence, oldest first (and records
/// that they were delivered, e.g. an audit event naming their patients).
pub type Load<T> =
    Arc<dyn Fn(i64, u32) -> Pin<Box<dyn Future<Output = Result<Vec<T>, Status>> + Send>> + Send + Sync>;

/// Changes per page of a feed when the request asks for 0.
pub const DEFAULT_PAGE: u32 = 100;

/// One page of `feed` after `after` (a List…Changes rpc): at most
/// `page_size` changes (0: [`DEFAULT_PAGE`], at most 1000) read with
/// `read`, and the head to report with them; OUT_OF_RANGE past the
/// retention.
pub async fn page<T, F, Fut, E>(
    feed: &Feed,
    after: i64,
    page_size: i32,
    read: F,
) -> Result<(Vec<T>, i64), Status>
where
    T: Sequenced,
    F: FnOnce(i64, u32) -> Fut,
    Fut: Future<Output = Result<Vec<T>, E>>,
    Status: From<E>,
{
    let size = clinic_core::paging::page_size_or(page_size, DEFAULT_PAGE, "page_size")
        .map_err(|violation| <Status as From<ApiError>>::from(ApiError::from(violation)))?;
    feed.check_position(after).await?;
    let changes = read(after, size).await?;
    let last = changes.last().map_or(after, Sequenced::sequence);
    Ok((changes, feed.head().max(last)))
}

/// A watch of `feed` for `call` after `after` (OUT_OF_RANGE past the
/// retention), reading with `read`; each non-empty batch's delivery is
/// recorded in the feed's audit trail, naming exactly the patients whose
/// records it carried.
pub async fn open<T, F, Fut>(feed: &Feed, after: i64, call: Call, read: F) -> Result<WatchStream<T>, Status>
where
    T: Sequenced + Send + 'static,
    F: Fn(i64, u32) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<T>, Status>> + Send + 'static,
{
    feed.check_position(after).await?;
    let (pool, schema) = feed.store();
    let (pool, read) = (pool.clone(), Arc::new(read));
    let load: Load<T> = Arc::new(move |after, limit| {
        let (pool, call, read) = (pool.clone(), call.clone(), read.clone());
        Box::pin(async move {
            let changes = read(after, limit).await?;
            if !changes.is_empty() {
                let mut patients: Vec<i64> = changes.iter().map(Sequenced::patient).collect();
                patients.sort_unstable();
                patients.dedup();
                clinic_audit::audit::record_delivery(&pool, schema, &call, patients)
                    .await
                    .map_err(|e| Status::from(ApiError::from(e)))?;
            }
            Ok(changes)
        })
    });
    Ok(watch(feed.clone(), after, load))
}

/// A watch stream's messages, then the status that ended it (if not OK).
#[derive(Debug)]
pub struct WatchStream<T> {
    batches: mpsc::Receiver<Batch<T>>,
    end: Option<oneshot::Receiver<Status>>,
}

impl<T> Stream for WatchStream<T> {
    type Item = Result<Batch<T>, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(batch) = ready!(self.batches.poll_recv(cx)) {
            return Poll::Ready(Some(Ok(batch)));
        }
        let Some(end) = self.end.as_mut() else { return Poll::Ready(None) };
        let status = ready!(Pin::new(end).poll(cx)).ok();
        self.end = None;
        Poll::Ready(status.map(Err))
    }
}

/// A watch of `feed` after `after`: the changes committed since, then each
/// new one as it is numbered, in batches; a heartbeat when idle for the
/// feed's heartbeat interval. Ends with OUT_OF_RANGE when the changes it
/// needs were pruned, RESOURCE_EXHAUSTED when the consumer does not take a
/// batch within the send timeout, UNAVAILABLE when the server shuts down;
/// each names the sequence to resume after.
pub fn watch<T: Sequenced + Send + 'static>(feed: Feed, after: i64, load: Load<T>) -> WatchStream<T> {
    let (tx, batches) = mpsc::channel(1);
    let (end_tx, end) = oneshot::channel();
    tokio::spawn(async move {
        if let Err(status) = follow(&feed, after, &load, &tx).await {
            let _ = end_tx.send(status);
        }
    });
    WatchStream { batches, end: Some(end) }
}

async fn follow<T: Sequenced + Send>(
    feed: &Feed,
    after: i64,
    load: &Load<T>,
    tx: &mpsc::Sender<Batch<T>>,
) -> Result<(), Status> {
    let mut head = feed.subscribe();
    let mut closing = feed.closing();
    let settings = feed.settings().clone();
    let mut position = after;
    loop {
        if *closing.borrow() {
            return Err(FeedError::ShuttingDown { after: position }.into());
        }
        let known = *head.borrow_and_update();
        let message = if position < known {
            let changes = load(position, BATCH).await?;
            // Sequences have no gaps: a missing one was pruned.
            if let Some(first) = changes.first()
                && first.sequence() != position + 1
            {
                return Err(
                    FeedError::Expired { after: position, pruned_through: first.sequence() - 1 }.into()
                );
            }
            let Some(last) = changes.last().map(Sequenced::sequence) else {
                // The head ran ahead of what this replica can read yet.
                tokio::task::yield_now().await;
                continue;
            };
            Batch { changes, head: known.max(last) }
        } else {
            tokio::select! {
                changed = head.changed() => {
                    if changed.is_err() {
                        return Err(FeedError::ShuttingDown { after: position }.into());
                    }
                    continue;
                }
                _ = closing.changed() => continue,
                () = tokio::time::sleep(settings.watch_heartbeat) => Batch { changes: Vec::new(), head: known },
                () = tx.closed() => return Ok(()),
            }
        };
        let last = message.changes.last().map(Sequenced::sequence);
        match tokio::time::timeout(settings.watch_send_timeout, tx.send(message)).await {
            Ok(Ok(())) => position = last.unwrap_or(position),
            Ok(Err(_gone)) => return Ok(()),
            Err(_slow) => return Err(FeedError::TooSlow { after: position }.into()),
        }
    }
}
