//! Where the data lives, from the environment.
//!
//! With none of `HENDU_MYSQL_URL`, `HENDU_MONGO_URL`, `HENDU_REDIS_URL` set,
//! everything goes to the embedded store; with all three set, to the servers.
//! Setting only some of them is an error naming the missing ones: a service
//! that silently wrote half its data to a local file would be worse.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::model::Secret;

/// Names of the environment variables (one place, so docs and code agree).
pub mod vars {
    pub const MYSQL_URL: &str = "HENDU_MYSQL_URL";
    pub const MONGO_URL: &str = "HENDU_MONGO_URL";
    pub const REDIS_URL: &str = "HENDU_REDIS_URL";
    pub const MYSQL_POOL: &str = "HENDU_MYSQL_POOL";
    pub const MONGO_POOL: &str = "HENDU_MONGO_POOL";
    pub const REDIS_PREFIX: &str = "HENDU_REDIS_PREFIX";
    pub const CLAIM_AFTER_MS: &str = "HENDU_QUEUE_CLAIM_AFTER_MS";
    pub const MAX_DELIVERIES: &str = "HENDU_QUEUE_MAX_DELIVERIES";
    pub const CONNECT_TIMEOUT_S: &str = "HENDU_CONNECT_TIMEOUT_S";
}

/// A configuration problem, naming the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error(
        "{missing} must be set too: the servers are used only when {} are all set",
        all_urls()
    )]
    Partial { missing: String },
    #[error("{var} is malformed: {reason}")]
    Malformed { var: &'static str, reason: String },
}

fn all_urls() -> String {
    [vars::MYSQL_URL, vars::MONGO_URL, vars::REDIS_URL].join(", ")
}

/// A connection URL whose password never prints.
#[derive(Clone)]
pub struct DbUrl(Secret);

impl DbUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(Secret::new(url))
    }

    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

impl fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match url::Url::parse(self.expose()) {
            Ok(mut u) => {
                if u.password().is_some() {
                    let _ = u.set_password(Some("***"));
                }
                write!(f, "{u}")
            }
            Err(_) => f.write_str("<unparsable url>"),
        }
    }
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub mysql_url: DbUrl,
    pub mongo_url: DbUrl,
    pub redis_url: DbUrl,
    /// Most connections to MySQL per process.
    pub mysql_pool: u32,
    /// Most connections to MongoDB per process.
    pub mongo_pool: u32,
    /// Prefix of every Redis key and channel (lets deployments, and tests, share a server).
    pub redis_prefix: String,
    pub queue: QueueConfig,
    /// How long start-up keeps retrying an unreachable server before giving up.
    pub connect_timeout: Duration,
}

/// Queue behaviour shared by both kinds of store.
#[derive(Debug, Clone, Copy)]
pub struct QueueConfig {
    /// An entry read and not acknowledged for this long goes to another consumer.
    pub claim_after: Duration,
    /// An entry delivered this many times without being acknowledged goes to
    /// the dead letters instead of being delivered again (at least 1).
    pub max_deliveries: u32,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            claim_after: Duration::from_secs(30),
            max_deliveries: 5,
        }
    }
}

/// Where the data lives.
#[derive(Debug, Clone)]
pub enum StorageConfig {
    /// One SQLite file.
    Embedded {
        path: PathBuf,
        queue: QueueConfig,
    },
    Servers(ServerConfig),
}

impl StorageConfig {
    /// From the process environment; `embedded` is the file used when no server is configured.
    ///
    /// # Errors
    /// [`ConfigError`] naming the variable that is missing or malformed.
    pub fn from_env(embedded: PathBuf) -> Result<Self, ConfigError> {
        Self::from_lookup(embedded, |k| std::env::var(k).ok())
    }

    /// As [`StorageConfig::from_env`], reading variables through `get`.
    ///
    /// # Errors
    /// As [`StorageConfig::from_env`].
    pub fn from_lookup(
        embedded: PathBuf,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let queue = QueueConfig {
            claim_after: Duration::from_millis(number(&get, vars::CLAIM_AFTER_MS, 30_000, 1)?),
            max_deliveries: u32::try_from(number(&get, vars::MAX_DELIVERIES, 5, 1)?).map_err(
                |_| ConfigError::Malformed {
                    var: vars::MAX_DELIVERIES,
                    reason: "too large".into(),
                },
            )?,
        };
        let urls = [vars::MYSQL_URL, vars::MONGO_URL, vars::REDIS_URL].map(|k| (k, get(k)));
        if urls.iter().all(|(_, v)| v.is_none()) {
            return Ok(Self::Embedded {
                path: embedded,
                queue,
            });
        }
        let missing: Vec<_> = urls
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| *k)
            .collect();
        if !missing.is_empty() {
            return Err(ConfigError::Partial {
                missing: missing.join(", "),
            });
        }
        let [mysql, mongo, redis] = urls.map(|(k, v)| (k, v.unwrap_or_default()));
        check_url(mysql.0, &mysql.1, &["mysql", "mariadb"])?;
        check_url(mongo.0, &mongo.1, &["mongodb", "mongodb+srv"])?;
        check_url(redis.0, &redis.1, &["redis", "rediss"])?;
        Ok(Self::Servers(ServerConfig {
            mysql_url: DbUrl::new(mysql.1),
            mongo_url: DbUrl::new(mongo.1),
            redis_url: DbUrl::new(redis.1),
            mysql_pool: number(&get, vars::MYSQL_POOL, 10, 1)? as u32,
            mongo_pool: number(&get, vars::MONGO_POOL, 10, 1)? as u32,
            redis_prefix: get(vars::REDIS_PREFIX).unwrap_or_else(|| "hendu:".into()),
            queue,
            connect_timeout: Duration::from_secs(number(&get, vars::CONNECT_TIMEOUT_S, 30, 0)?),
        }))
    }
}

fn number(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: u64,
    min: u64,
) -> Result<u64, ConfigError> {
    let Some(text) = get(var) else {
        return Ok(default);
    };
    let value: u64 = text.trim().parse().map_err(|_| ConfigError::Malformed {
        var,
        reason: format!("{text:?} is not a whole number"),
    })?;
    if value < min {
        return Err(ConfigError::Malformed {
            var,
            reason: format!("must be at least {min}"),
        });
    }
    Ok(value)
}

fn check_url(var: &'static str, value: &str, schemes: &[&str]) -> Result<(), ConfigError> {
    let url = url::Url::parse(value).map_err(|e| ConfigError::Malformed {
        var,
        reason: format!("not a URL ({e})"),
    })?;
    if !schemes.contains(&url.scheme()) {
        return Err(ConfigError::Malformed {
            var,
            reason: format!(
                "scheme {:?} is not one of {}",
                url.scheme(),
                schemes.join(", ")
            ),
        });
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::Malformed {
            var,
            reason: "no host".into(),
        });
    }
    Ok(())
}

/// The environment a service process needs to open `config`.
pub fn env_vars(config: &StorageConfig) -> Vec<(&'static str, String)> {
    match config {
        StorageConfig::Embedded { path, queue } => vec![
            ("HENDU_EMBEDDED_PATH", path.display().to_string()),
            (
                vars::CLAIM_AFTER_MS,
                queue.claim_after.as_millis().to_string(),
            ),
            (vars::MAX_DELIVERIES, queue.max_deliveries.to_string()),
        ],
        StorageConfig::Servers(s) => vec![
            (vars::MYSQL_URL, s.mysql_url.expose().to_owned()),
            (vars::MONGO_URL, s.mongo_url.expose().to_owned()),
            (vars::REDIS_URL, s.redis_url.expose().to_owned()),
            (vars::REDIS_PREFIX, s.redis_prefix.clone()),
            (
                vars::CLAIM_AFTER_MS,
                s.queue.claim_after.as_millis().to_string(),
            ),
            (vars::MAX_DELIVERIES, s.queue.max_deliveries.to_string()),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<StorageConfig, ConfigError> {
        StorageConfig::from_lookup("x.db".into(), |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn no_server_means_the_embedded_store() {
        assert!(matches!(config(&[]), Ok(StorageConfig::Embedded { .. })));
    }

    #[test]
    fn a_partial_or_malformed_setting_names_the_variable() {
        let e = config(&[(vars::MYSQL_URL, "mysql://root@localhost/test")]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("HENDU_MONGO_URL, HENDU_REDIS_URL must be set"),
            "{e}"
        );
        let e = config(&[
            (vars::MYSQL_URL, "postgres://localhost/x"),
            (vars::MONGO_URL, "mongodb://localhost"),
            (vars::REDIS_URL, "redis://localhost"),
        ])
        .unwrap_err();
        assert!(
            e.to_string().starts_with("HENDU_MYSQL_URL is malformed"),
            "{e}"
        );
        let e = config(&[(vars::CLAIM_AFTER_MS, "soon")]).unwrap_err();
        assert!(e.to_string().contains("HENDU_QUEUE_CLAIM_AFTER_MS"), "{e}");
        let e = config(&[(vars::MAX_DELIVERIES, "0")]).unwrap_err();
        assert!(e.to_string().contains("HENDU_QUEUE_MAX_DELIVERIES"), "{e}");
    }

    #[test]
    fn the_queue_settings_have_defaults_and_can_be_set() {
        let Ok(StorageConfig::Embedded { queue, .. }) = config(&[]) else {
            panic!("embedded");
        };
        assert_eq!(queue.max_deliveries, 5);
        assert_eq!(queue.claim_after, Duration::from_secs(30));
        let Ok(StorageConfig::Embedded { queue, .. }) = config(&[(vars::MAX_DELIVERIES, "2")])
        else {
            panic!("embedded");
        };
        assert_eq!(queue.max_deliveries, 2);
    }

    #[test]
    fn passwords_in_urls_never_print() {
        let c = config(&[
            (vars::MYSQL_URL, "mysql://hendu:s3cret@db:3306/hendu"),
            (vars::MONGO_URL, "mongodb://u:s3cret@mongo/hendu"),
            (vars::REDIS_URL, "redis://:s3cret@redis"),
        ])
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("mysql://hendu:***@db:3306/hendu"), "{shown}");
    }
}
