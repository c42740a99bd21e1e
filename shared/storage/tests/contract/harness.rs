//! One fresh, private store per test, on either kind of backend (the places
//! come from `hendu_storage::testing`).

use std::time::Duration;

use hendu_storage::config::{DbUrl, QueueConfig, ServerConfig};
pub use hendu_storage::testing::{CLAIM_AFTER, Kind, Place};
use hendu_storage::{Storage, StorageConfig};

/// A test's private store, open.
pub struct Harness {
    pub storage: Storage,
    pub config: StorageConfig,
    _place: Place,
}

impl Harness {
    pub async fn new(kind: Kind) -> Self {
        Self::open(Place::new(kind).await).await
    }

    /// With entries going to the dead letters after `max` deliveries.
    pub async fn with_max_deliveries(kind: Kind, max: u32) -> Self {
        let mut place = Place::new(kind).await;
        match &mut place.config {
            StorageConfig::Embedded { queue, .. } => queue.max_deliveries = max,
            StorageConfig::Servers(s) => s.queue.max_deliveries = max,
        }
        Self::open(place).await
    }

    async fn open(place: Place) -> Self {
        let storage = Storage::connect(&place.config).await.unwrap_or_else(|e| {
            panic!(
                "cannot open {:?}: {e}; run scripts/test.sh, which starts the servers",
                place.config
            )
        });
        Self {
            storage,
            config: place.config.clone(),
            _place: place,
        }
    }
}

/// A config as one environment value, for a child process.
pub fn config_to_env(config: &StorageConfig) -> String {
    match config {
        StorageConfig::Embedded { path, .. } => format!("embedded\n{}", path.display()),
        StorageConfig::Servers(s) => format!(
            "servers\n{}\n{}\n{}\n{}",
            s.mysql_url.expose(),
            s.mongo_url.expose(),
            s.redis_url.expose(),
            s.redis_prefix
        ),
    }
}

pub fn config_from_env(value: &str) -> StorageConfig {
    let parts: Vec<&str> = value.split('\n').collect();
    let queue = QueueConfig {
        claim_after: CLAIM_AFTER,
        ..QueueConfig::default()
    };
    match parts[..] {
        ["embedded", path] => StorageConfig::Embedded {
            path: path.into(),
            queue,
        },
        ["servers", mysql, mongo, redis, prefix] => StorageConfig::Servers(ServerConfig {
            mysql_url: DbUrl::new(mysql),
            mongo_url: DbUrl::new(mongo),
            redis_url: DbUrl::new(redis),
            mysql_pool: 2,
            mongo_pool: 2,
            redis_prefix: prefix.into(),
            queue,
            connect_timeout: Duration::from_secs(5),
        }),
        _ => panic!("bad consumer config {value:?}"),
    }
}
