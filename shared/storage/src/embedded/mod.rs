//! The embedded store: everything in one SQLite file, for the `hendu`
//! default and for users without servers.
//!
//! - [`relational`]: the MySQL tables.
//! - [`documents`]: the MongoDB collections and the binaries (in 256 KiB chunks).
//! - [`queue`]: the Redis work queue, with the same at-least-once semantics;
//!   entries live in the file, so they survive a crash and can be shared by
//!   several processes on one machine; [`groups`]: the recognition shards'
//!   consumer groups beside the queue's own.
//! - [`leases`]: the Redis leases, as rows with an expiry.
//! - [`LocalBus`]: the Redis pub/sub events, within one process.
//!
//! The file runs in WAL mode with `synchronous = NORMAL`: a committed write
//! survives a process crash; a power cut may lose the last transactions but
//! never corrupts the file.

mod documents;
mod groups;
mod leases;
mod queue;
mod relational;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::{Notify, broadcast};

use crate::config::QueueConfig;
use crate::error::Result;
use crate::events::{Event, EventBus};
use crate::queue::DeadCounts;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// One SQLite file holding the relational tables, the documents and the queue.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    queue: QueueConfig,
    pushed: Arc<Notify>,
    dead: DeadCounts,
}

impl SqliteStore {
    /// Opens (creating if needed) the store file and applies migrations.
    ///
    /// # Errors
    /// [`crate::StorageError`] if the file cannot be opened or is not a HENDU store.
    pub async fn open(path: &Path, queue: QueueConfig) -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        // Processes opening a new file at the same instant would each apply
        // the migrations (sqlx does not lock SQLite), and a connection's first
        // statements (switching a new file to WAL) can meet another's
        // migration and fail as locked: serialise opening on a lock file.
        let lock_path = path.with_extension("migrate-lock");
        let lock = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::create(&lock_path)?;
            file.lock()?;
            Ok::<_, std::io::Error>(file)
        })
        .await
        .map_err(std::io::Error::other)??;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        let migrated = MIGRATOR.run(&pool).await;
        drop(lock);
        migrated?;
        Ok(Self {
            pool,
            queue,
            pushed: Arc::new(Notify::new()),
            dead: DeadCounts::default(),
        })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes the pool, checkpointing the write-ahead log into the file.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Events within one process (a broadcast channel).
#[derive(Debug, Clone)]
pub struct LocalBus {
    sender: broadcast::Sender<Event>,
}

impl Default for LocalBus {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(1024).0,
        }
    }
}

#[async_trait]
impl EventBus for LocalBus {
    async fn publish(&self, event: &Event) -> Result<()> {
        // No subscriber is not an error: events are fire and forget.
        let _ = self.sender.send(event.clone());
        Ok(())
    }

    async fn subscribe(&self) -> Result<BoxStream<'static, Event>> {
        let receiver = self.sender.subscribe();
        Ok(futures_util::stream::unfold(receiver, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(event) => return Some((event, rx)),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "event subscriber lagged; events dropped");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .boxed())
    }
}
