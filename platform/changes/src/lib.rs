//! Clinic's change feeds: every committed revision of a service's resources,
//! numbered without gaps in commit order, read a page at a time or watched
//! live, and resumable from any point within the feed's retention.
//!
//! A write records its change in its own transaction (the resource table's
//! revision trigger calls `<schema>.record_change`, which takes the actor
//! from the transaction's `clinic.actor` setting); the row has no sequence
//! yet. Each replica runs a [`Feed`], whose sequencer the service wakes
//! in-process after each commit ([`Written`]; no `NOTIFY` on the write path,
//! which would serialise every writer's commit) and which numbers the
//! committed rows under one advisory lock,
//! from a counter, in one transaction: so concurrent writers that commit out
//! of order still never make a reader see *n+1* before *n*, and a rolled-back
//! write leaves nothing to number. The numbering's own notification wakes
//! every replica's watchers.
//!
//! # Layout
//! - `sql/changes.sql`: the feed's tables and `record_change`, applied to
//!   every service's schema as the shared part [`CHANGES`].
//! - [`feed`]: the sequencer, the live head, positions and pruning.
//! - [`watch`]: a server stream that replays from a position, then follows.

pub mod feed;
pub mod watch;

use std::time::Duration;

use clinic_core::settings::millis;
use clinic_pg::schema::SharedDdl;

pub use feed::{Feed, FeedError, Written};

/// The feed's tables and `record_change`, applied to every service's schema
/// by its migrate step (see [`clinic_pg::schema`]).
pub const CHANGES: SharedDdl = SharedDdl {
    name: "changes",
    steps: &[
        include_str!("../sql/changes.sql"),
        include_str!("../sql/changes_parent.sql"),
        include_str!("../sql/changes_quiet.sql"),
    ],
};

/// The transaction setting that names who makes a change (a token's
/// subject, or the service for its own work).
pub const ACTOR_SETTING: &str = "clinic.actor";

/// The transaction setting that names why a change was made for someone
/// else's (`patients/12`).
pub const CAUSE_SETTING: &str = "clinic.cause";

/// What happened to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// It was created (revision 1).
    Created,
    /// Its fields changed.
    Updated,
    /// It was deleted (kept until its retention ends).
    Deleted,
    /// A deleted resource was restored.
    Undeleted,
    /// It was erased with all its revisions; the change names ids only.
    Purged,
}

impl ChangeKind {
    /// The kind as stored (`CREATED`).
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Created => "CREATED",
            ChangeKind::Updated => "UPDATED",
            ChangeKind::Deleted => "DELETED",
            ChangeKind::Undeleted => "UNDELETED",
            ChangeKind::Purged => "PURGED",
        }
    }

    /// The kind stored as `stored` (a check constraint keeps the set closed).
    pub fn from_stored(stored: &str) -> Self {
        match stored {
            "CREATED" => ChangeKind::Created,
            "DELETED" => ChangeKind::Deleted,
            "UNDELETED" => ChangeKind::Undeleted,
            "PURGED" => ChangeKind::Purged,
            _ => ChangeKind::Updated,
        }
    }
}

/// How long deleted resources and changes are kept, and how watchers are
/// served.
#[derive(Debug, Clone, clap::Args)]
pub struct FeedSettings {
    /// How long a deleted resource is kept before it is purged with its
    /// revisions, in days (its `expire_time` is the delete time plus this).
    #[arg(long = "delete-retention-days", env = "DELETE_RETENTION_DAYS", value_name = "DAYS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    pub delete_retention_days: u32,
    /// How often deleted resources past their retention are purged, in
    /// milliseconds (bounded batches, on one replica).
    #[arg(long = "purge-interval-ms", env = "PURGE_INTERVAL_MS", value_name = "MS", default_value = "600000", value_parser = millis)]
    pub purge_interval: Duration,
    /// How long the change feed keeps a change, in days: a consumer can
    /// resume from any sequence this recent; an older one is OUT_OF_RANGE
    /// (reason CHANGES_EXPIRED).
    #[arg(long = "change-retention-days", env = "CHANGE_RETENTION_DAYS", value_name = "DAYS", default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..))]
    pub change_retention_days: u32,
    /// How often an idle watch stream sends a heartbeat with the feed's
    /// current sequence, in milliseconds.
    #[arg(long = "watch-heartbeat-ms", env = "WATCH_HEARTBEAT_MS", value_name = "MS", default_value = "5000", value_parser = millis)]
    pub watch_heartbeat: Duration,
    /// How long a watcher may take to accept a batch, in milliseconds; one
    /// that takes longer is ended with RESOURCE_EXHAUSTED (reason
    /// CONSUMER_TOO_SLOW) and resumes from its last sequence.
    #[arg(long = "watch-send-timeout-ms", env = "WATCH_SEND_TIMEOUT_MS", value_name = "MS", default_value = "10000", value_parser = millis)]
    pub watch_send_timeout: Duration,
    /// How often changes past the retention are pruned, in milliseconds.
    #[arg(long = "change-prune-interval-ms", env = "CHANGE_PRUNE_INTERVAL_MS", value_name = "MS", default_value = "600000", value_parser = millis)]
    pub change_prune_interval: Duration,
}

impl Default for FeedSettings {
    fn default() -> Self {
        Self {
            delete_retention_days: 30,
            purge_interval: Duration::from_secs(600),
            change_retention_days: 7,
            watch_heartbeat: Duration::from_secs(5),
            watch_send_timeout: Duration::from_secs(10),
            change_prune_interval: Duration::from_secs(600),
        }
    }
}

/// Names who makes the changes of the transaction on `conn` (`actor`), and
/// why when they are made for another resource's change (`cause`), for the
/// revisions and changes its writes record.
pub async fn act_as(
    conn: &mut sqlx::PgConnection,
    actor: &str,
    cause: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "select set_config('clinic.actor', $1, true), set_config('clinic.cause', coalesce($2, ''), true)",
    )
    .bind(actor)
    .bind(cause)
    .execute(conn)
    .await?;
    Ok(())
}
