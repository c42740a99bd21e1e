//! One fresh, private store per test, on either kind of backend.
//!
//! Server tests use their own MySQL database, MongoDB database and Redis key
//! prefix, all dropped when the test ends, so tests run in parallel and leave
//! nothing behind. Servers come from `HENDU_TEST_MYSQL_URL` (default
//! `mysql://root@127.0.0.1:3306/test`), `HENDU_TEST_MONGO_URL` (default
//! `mongodb://127.0.0.1:37017`) and `HENDU_TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379`); `scripts/test.sh` starts any that is missing.

use std::time::Duration;

use hendu_storage::config::{DbUrl, QueueConfig, ServerConfig};
use hendu_storage::{Storage, StorageConfig};
use sqlx::Connection;

/// Entries unacknowledged this long go to another consumer (short, for tests).
pub const CLAIM_AFTER: Duration = Duration::from_millis(600);

fn env_or(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Embedded,
    Servers,
}

/// A test's private place for data, not yet opened. Dropping it deletes the data.
pub struct Place {
    pub config: StorageConfig,
    cleanup: Option<Cleanup>,
    _dir: Option<tempfile::TempDir>,
}

/// A test's private store, open.
pub struct Harness {
    pub storage: Storage,
    pub config: StorageConfig,
    _place: Place,
}

struct Cleanup {
    mysql_admin: String,
    name: String,
    mongo: String,
    redis: String,
}

fn unique_name() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "hendu_t{}_{}_{}",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl Harness {
    pub async fn new(kind: Kind) -> Self {
        let place = Place::new(kind).await;
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

impl Place {
    pub async fn new(kind: Kind) -> Self {
        match kind {
            Kind::Embedded => Self::embedded(),
            Kind::Servers => Self::servers().await,
        }
    }

    fn embedded() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = StorageConfig::Embedded {
            path: dir.path().join("hendu.db"),
            queue: QueueConfig {
                claim_after: CLAIM_AFTER,
            },
        };
        Self {
            config,
            cleanup: None,
            _dir: Some(dir),
        }
    }

    async fn servers() -> Self {
        let name = unique_name();
        let admin = env_or("HENDU_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test");
        let mut conn = sqlx::MySqlConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!("MariaDB/MySQL at {admin} is not reachable ({e}); run scripts/test.sh, which starts it")
        });
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        let mut mysql = url::Url::parse(&admin).unwrap();
        mysql.set_path(&name);
        let mut mongo =
            url::Url::parse(&env_or("HENDU_TEST_MONGO_URL", "mongodb://127.0.0.1:37017")).unwrap();
        mongo.set_path(&name);
        let redis = env_or("HENDU_TEST_REDIS_URL", "redis://127.0.0.1:6379");
        let config = StorageConfig::Servers(ServerConfig {
            mysql_url: DbUrl::new(mysql.to_string()),
            mongo_url: DbUrl::new(mongo.to_string()),
            redis_url: DbUrl::new(redis.clone()),
            mysql_pool: 5,
            mongo_pool: 5,
            redis_prefix: format!("{name}:"),
            queue: QueueConfig {
                claim_after: CLAIM_AFTER,
            },
            connect_timeout: Duration::from_secs(5),
        });
        let cleanup = Cleanup {
            mysql_admin: admin,
            name,
            mongo: mongo.to_string(),
            redis,
        };
        Self {
            config,
            cleanup: Some(cleanup),
            _dir: None,
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let Some(c) = self.cleanup.take() else {
            return;
        };
        // Drop cannot await: clean up on a thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok(mut conn) = sqlx::MySqlConnection::connect(&c.mysql_admin).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {}",
                        c.name
                    )))
                    .execute(&mut conn)
                    .await;
                }
                if let Ok(client) = mongodb::Client::with_uri_str(&c.mongo).await {
                    let _ = client.database(&c.name).drop().await;
                }
                if let Ok(redis) = hendu_storage::redis::RedisStore::connect(
                    &c.redis,
                    &format!("{}:", c.name),
                    QueueConfig::default(),
                )
                .await
                {
                    let _ = redis.delete_all().await;
                }
            });
        })
        .join();
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
