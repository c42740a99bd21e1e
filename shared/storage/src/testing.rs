//! Private places for test data, on either kind of backend (feature `testing`).
//!
//! Server tests get their own MySQL database, MongoDB database and Redis key
//! prefix, all dropped when the [`Place`] is dropped, so tests run in
//! parallel and leave nothing behind. Servers come from `HENDU_TEST_MYSQL_URL`
//! (default `mysql://root@127.0.0.1:3306/test`), `HENDU_TEST_MONGO_URL`
//! (default `mongodb://127.0.0.1:37017`) and `HENDU_TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379`); `scripts/test.sh` starts any that is missing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)] // Test support fails loudly.

use std::time::Duration;

use sqlx::Connection;

use crate::StorageConfig;
use crate::config::{DbUrl, QueueConfig, ServerConfig};

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
#[derive(Debug)]
pub struct Place {
    pub config: StorageConfig,
    cleanup: Option<Cleanup>,
    _dir: Option<tempfile::TempDir>,
}

#[derive(Debug)]
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
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "hendu_t{}_{}_{}",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl Place {
    pub async fn new(kind: Kind) -> Self {
        match kind {
            Kind::Embedded => Self::embedded(),
            Kind::Servers => Self::servers().await,
        }
    }

    pub fn embedded() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = StorageConfig::Embedded {
            path: dir.path().join("hendu.db"),
            queue: QueueConfig {
                claim_after: CLAIM_AFTER,
                ..QueueConfig::default()
            },
        };
        Self {
            config,
            cleanup: None,
            _dir: Some(dir),
        }
    }

    pub async fn servers() -> Self {
        let MysqlDatabase {
            admin,
            name,
            url: mysql,
        } = MysqlDatabase::create().await;
        let mut mongo =
            url::Url::parse(&env_or("HENDU_TEST_MONGO_URL", "mongodb://127.0.0.1:37017")).unwrap();
        mongo.set_path(&name);
        let redis = env_or("HENDU_TEST_REDIS_URL", "redis://127.0.0.1:6379");
        let config = StorageConfig::Servers(ServerConfig {
            mysql_url: DbUrl::new(mysql),
            mongo_url: DbUrl::new(mongo.to_string()),
            redis_url: DbUrl::new(redis.clone()),
            mysql_pool: 5,
            mongo_pool: 5,
            redis_prefix: format!("{name}:"),
            queue: QueueConfig {
                claim_after: CLAIM_AFTER,
                ..QueueConfig::default()
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

/// A new, empty database of its own on the test MySQL server, for tests
/// that need MySQL alone.
#[derive(Debug)]
pub struct MysqlDatabase {
    /// The server's URL as the test command gives it (`HENDU_TEST_MYSQL_URL`).
    pub admin: String,
    pub name: String,
    /// The URL of the new database.
    pub url: String,
}

impl MysqlDatabase {
    pub async fn create() -> Self {
        let name = unique_name();
        let admin = env_or("HENDU_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test");
        let mut conn = sqlx::MySqlConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!("MariaDB/MySQL at {admin} is not reachable ({e}); run scripts/test.sh, which starts it")
        });
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        let mut url = url::Url::parse(&admin).unwrap();
        url.set_path(&name);
        Self {
            admin,
            name,
            url: url.to_string(),
        }
    }

    /// Drops the database.
    pub async fn drop_database(self) {
        let mut conn = sqlx::MySqlConnection::connect(&self.admin).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {}",
            self.name
        )))
        .execute(&mut conn)
        .await
        .unwrap();
    }
}

impl Place {
    /// Deletes every stored sample and raw result (a benchmark's rounds start
    /// from the same store). MongoDB only; nothing for the embedded store.
    pub async fn forget_samples(&self) {
        let Some(c) = &self.cleanup else {
            return;
        };
        let client = mongodb::Client::with_uri_str(&c.mongo).await.unwrap();
        let db = client.database(&c.name);
        for name in [crate::mongo::SAMPLES, crate::mongo::RAW_RESULTS] {
            db.collection::<mongodb::bson::Document>(name)
                .delete_many(mongodb::bson::doc! {})
                .await
                .unwrap();
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
                if let Ok(redis) = crate::redis::RedisStore::connect(
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

pub use crate::config::env_vars;

/// A user with `role` (password `"twelve chars!"`) and an API token for
/// them, made directly in the store: for tests of the services' routes.
///
/// # Panics
/// If the store refuses (tests fail loudly).
#[allow(clippy::unwrap_used)]
pub async fn user_with_token(
    storage: &crate::Storage,
    email: &str,
    role: crate::model::Role,
) -> (crate::model::User, String) {
    use crate::credentials::{AuthKey, issue_token};
    use crate::model::{NewToken, NewUser, Secret};
    let user = match storage.relational.user_by_email(email).await.unwrap() {
        Some(u) => u,
        None => {
            let new = NewUser::new(email, email, role, Secret::new("twelve chars!")).unwrap();
            storage.relational.add_user(&new).await.unwrap()
        }
    };
    let key = AuthKey::load(storage).await.unwrap();
    let issued = issue_token(&key);
    storage
        .relational
        .add_token(&NewToken::new(&issued.public_id, &issued.digest, &user, "test").unwrap())
        .await
        .unwrap();
    (user, issued.token.expose().to_owned())
}
