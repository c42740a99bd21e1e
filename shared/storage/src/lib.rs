//! HENDU's storage: the repositories every service uses, on MySQL, MongoDB and
//! Redis (paper, Figure 3), or on one embedded SQLite file with the same
//! behaviour.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use hendu_storage::{Storage, StorageConfig};
//!
//! // HENDU_MYSQL_URL, HENDU_MONGO_URL and HENDU_REDIS_URL, or a local file.
//! let config = StorageConfig::from_env("hendu.db".into())?;
//! let storage = Storage::connect(&config).await?;
//! let catalogue = storage.load_catalogue().await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`config`]: where the data lives, from the environment.
//! - [`credentials`]: API tokens and device secrets, and the key they are hashed with.
//! - [`model`]: the records, and the validation every value passes first.
//! - [`repo`]: [`RelationalStore`] (musics, radios, devices, users, plays) and
//!   [`DocumentStore`] (fingerprints, samples, raw results, binaries).
//! - [`queue`]: [`WorkQueue`], at-least-once work between services.
//! - [`events`]: [`EventBus`], live events.
//! - [`leases`]: [`Leases`], one holder per name at a time.
//! - [`shards`]: [`Shard`], which part of the catalogue a recogniser holds.
//! - [`catalogue`]: adding and deleting music across the stores, loading the
//!   matcher's catalogue.
//! - [`mysql`], [`mongo`], [`redis`]: the server implementations.
//! - [`embedded`]: all of it on one SQLite file.
//! - [`error`]: typed errors.

pub mod catalogue;
pub mod config;
pub mod credentials;
pub mod embedded;
pub mod error;
pub mod events;
mod hashing;
pub mod leases;
pub mod model;
pub mod mongo;
pub mod mysql;
pub mod queries;
pub mod queue;
pub mod redis;
mod relational;
pub mod repo;
pub mod shards;
#[cfg(feature = "testing")]
pub mod testing;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use config::{ConfigError, QueueConfig, ServerConfig, StorageConfig};
pub use error::{Result, StorageError, ValidationError};
pub use events::{Event, EventBus};
pub use leases::{Fence, Leases};
pub use queue::{Queue, WorkQueue};
pub use repo::{DocumentStore, Inserted, RelationalStore};
pub use shards::Shard;

use crate::embedded::{LocalBus, SqliteStore};
use crate::mongo::MongoStore;
use crate::mysql::MySqlStore;
use crate::redis::RedisStore;

/// Every store a service needs, behind traits.
#[derive(Debug, Clone)]
pub struct Storage {
    pub relational: Arc<dyn RelationalStore>,
    pub documents: Arc<dyn DocumentStore>,
    pub queue: Arc<dyn WorkQueue>,
    pub events: Arc<dyn EventBus>,
    pub leases: Arc<dyn Leases>,
    /// Where the data lives, for messages ("embedded store x.db", "servers").
    pub description: String,
    embedded: Option<Arc<SqliteStore>>,
}

impl Storage {
    /// Connects to what `config` names. Servers that do not answer yet are
    /// retried with backoff for `connect_timeout` (they may be starting too).
    ///
    /// # Errors
    /// [`StorageError`] from the first server that still fails at the deadline.
    pub async fn connect(config: &StorageConfig) -> Result<Self> {
        match config {
            StorageConfig::Embedded { path, queue } => Self::embedded(path, *queue).await,
            StorageConfig::Servers(s) => {
                let deadline = tokio::time::Instant::now() + s.connect_timeout;
                let mysql = retry("MySQL", deadline, || {
                    MySqlStore::connect(s.mysql_url.expose(), s.mysql_pool)
                })
                .await?;
                let mongo = retry("MongoDB", deadline, || {
                    MongoStore::connect(s.mongo_url.expose(), s.mongo_pool)
                })
                .await?;
                let redis = Arc::new(
                    retry("Redis", deadline, || {
                        RedisStore::connect(s.redis_url.expose(), &s.redis_prefix, s.queue)
                    })
                    .await?,
                );
                Ok(Self {
                    relational: Arc::new(mysql),
                    documents: Arc::new(mongo),
                    queue: redis.clone(),
                    events: redis.clone(),
                    leases: redis,
                    description: "MySQL, MongoDB and Redis servers".into(),
                    embedded: None,
                })
            }
        }
    }

    /// The embedded store in one SQLite file (created if missing).
    ///
    /// # Errors
    /// [`StorageError`] if the file cannot be opened or migrated.
    pub async fn embedded(path: &Path, queue: QueueConfig) -> Result<Self> {
        let store = Arc::new(SqliteStore::open(path, queue).await?);
        Ok(Self {
            relational: store.clone(),
            documents: store.clone(),
            queue: store.clone(),
            events: Arc::new(LocalBus::default()),
            leases: store.clone(),
            description: format!("embedded store {}", path.display()),
            embedded: Some(store),
        })
    }

    /// Asks every backend to answer: `(name, None)` when it does, `(name,
    /// Some(why))` when it does not. For readiness endpoints.
    pub async fn check(&self) -> Vec<(&'static str, Option<String>)> {
        let (relational, documents, queue) = tokio::join!(
            self.relational.ping(),
            self.documents.ping(),
            self.queue.ping()
        );
        let why = |r: Result<()>| r.err().map(|e| e.to_string());
        if self.embedded.is_some() {
            vec![("embedded store", why(relational.and(documents).and(queue)))]
        } else {
            vec![
                ("mysql", why(relational)),
                ("mongodb", why(documents)),
                ("redis", why(queue)),
            ]
        }
    }

    /// Closes the embedded store's file cleanly (its write-ahead log is folded
    /// back in); server connections simply close when dropped.
    pub async fn close(&self) {
        if let Some(store) = &self.embedded {
            store.close().await;
        }
    }
}

async fn retry<T, F, Fut>(what: &str, deadline: tokio::time::Instant, mut connect: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut delay = Duration::from_millis(100);
    loop {
        match connect().await {
            Ok(v) => return Ok(v),
            Err(e) if tokio::time::Instant::now() + delay < deadline && transient(&e) => {
                tracing::warn!(server = what, error = %e, retry_in_ms = delay.as_millis() as u64, "cannot connect yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether a connection error may go away by itself (server starting, network
/// blip), as opposed to a bad URL or a failed migration.
fn transient(e: &StorageError) -> bool {
    match e {
        StorageError::Sql(sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_)) => {
            true
        }
        StorageError::Mongo(e) => {
            !matches!(*e.kind, mongodb::error::ErrorKind::InvalidArgument { .. })
        }
        StorageError::Redis(e) => e.is_io_error() || e.is_connection_refusal() || e.is_timeout(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_server_is_retried_with_backoff_until_the_deadline() {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut attempts = 0;
        let got = retry("test", deadline, || {
            attempts += 1;
            let attempt = attempts;
            async move {
                if attempt < 4 {
                    Err(StorageError::Sql(sqlx::Error::PoolTimedOut))
                } else {
                    Ok(attempt)
                }
            }
        })
        .await;
        assert_eq!(got.unwrap(), 4);

        let started = tokio::time::Instant::now();
        let never = retry("test", started + Duration::from_secs(3), || async {
            Err::<(), _>(StorageError::Sql(sqlx::Error::PoolTimedOut))
        })
        .await;
        assert!(never.is_err());
        assert!(
            started.elapsed() <= Duration::from_secs(3),
            "gave up at the deadline"
        );

        let mut calls = 0;
        let fatal = retry("test", started + Duration::from_secs(60), || {
            calls += 1;
            async { Err::<(), _>(StorageError::Corrupt("bad migration".into())) }
        })
        .await;
        assert!(fatal.is_err());
        assert_eq!(calls, 1, "a permanent error is not retried");
    }
}
