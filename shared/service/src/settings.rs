//! Typed settings from the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use hendu_storage::{ConfigError, StorageConfig};

/// Names of the variables every service reads (storage's are in
/// [`hendu_storage::config::vars`]).
pub mod vars {
    pub const HTTP_ADDR: &str = "HENDU_HTTP_ADDR";
    pub const LOG: &str = "HENDU_LOG";
    pub const SHUTDOWN_GRACE_S: &str = "HENDU_SHUTDOWN_GRACE_S";
    pub const EMBEDDED_PATH: &str = "HENDU_EMBEDDED_PATH";
}

/// For each service's `--help`.
pub const ENV_HELP: &str = "\
Environment:
  HENDU_HTTP_ADDR             address to listen on (default 0.0.0.0:<the service's port>)
  HENDU_LOG                   log filter, e.g. info or hendu=debug,info (default info);
                              JSON lines unless stderr is a terminal
  HENDU_SHUTDOWN_GRACE_S      on SIGTERM, how long in-flight work may take (default 20)
  HENDU_MYSQL_URL, HENDU_MONGO_URL, HENDU_REDIS_URL
                              the servers (all three), or none for the embedded store
  HENDU_EMBEDDED_PATH         the embedded store's file (default ./hendu.db)
  HENDU_MYSQL_POOL, HENDU_MONGO_POOL, HENDU_REDIS_PREFIX, HENDU_QUEUE_CLAIM_AFTER_MS,
  HENDU_CONNECT_TIMEOUT_S     see docs/storage.md
Secrets in URLs are never printed.";

/// Settings every service has.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The service's name, in logs and metrics.
    pub service: &'static str,
    pub http_addr: SocketAddr,
    pub log: String,
    pub shutdown_grace: Duration,
    pub storage: StorageConfig,
}

impl Settings {
    /// # Errors
    /// [`ConfigError`] naming the variable that is missing or malformed.
    pub fn from_env(service: &'static str, default_port: u16) -> Result<Self, ConfigError> {
        Self::from_lookup(service, default_port, |k| std::env::var(k).ok())
    }

    /// As [`Settings::from_env`], reading variables through `get`.
    ///
    /// # Errors
    /// As [`Settings::from_env`].
    pub fn from_lookup(
        service: &'static str,
        default_port: u16,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let http_addr = match get(vars::HTTP_ADDR) {
            Some(v) => v.trim().parse().map_err(|_| ConfigError::Malformed {
                var: vars::HTTP_ADDR,
                reason: format!("{v:?} is not an address like 0.0.0.0:8080"),
            })?,
            None => SocketAddr::from(([0, 0, 0, 0], default_port)),
        };
        let shutdown_grace = match get(vars::SHUTDOWN_GRACE_S) {
            Some(v) => {
                Duration::from_secs(v.trim().parse().map_err(|_| ConfigError::Malformed {
                    var: vars::SHUTDOWN_GRACE_S,
                    reason: format!("{v:?} is not a whole number of seconds"),
                })?)
            }
            None => Duration::from_secs(20),
        };
        let embedded =
            get(vars::EMBEDDED_PATH).map_or_else(|| PathBuf::from("hendu.db"), PathBuf::from);
        Ok(Self {
            service,
            http_addr,
            log: get(vars::LOG).unwrap_or_else(|| "info".into()),
            shutdown_grace,
            storage: StorageConfig::from_lookup(embedded, get)?,
        })
    }
}

/// A name for this process among the replicas of its service: the host name
/// (a pod's name) and the process id.
pub fn default_replica() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into());
    format!("{host}-{}", std::process::id())
}

/// A service's own variable: `default` when unset or blank, an error naming
/// the variable when it does not parse (`what` says what was expected).
///
/// # Errors
/// [`ConfigError::Malformed`].
pub fn var_or<T: std::str::FromStr>(
    var: &'static str,
    default: T,
    what: &str,
) -> Result<T, ConfigError> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().map_err(|_| ConfigError::Malformed {
            var,
            reason: format!("{v:?} is not {what}"),
        }),
        _ => Ok(default),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors_name_the_variable() {
        let s = Settings::from_lookup("svc", 8081, |_| None).unwrap();
        assert_eq!(s.http_addr.port(), 8081);
        assert_eq!(s.log, "info");
        assert!(matches!(s.storage, StorageConfig::Embedded { .. }));
        let e = Settings::from_lookup("svc", 1, |k| {
            (k == vars::HTTP_ADDR).then(|| "nowhere".into())
        })
        .unwrap_err();
        assert!(
            e.to_string().starts_with("HENDU_HTTP_ADDR is malformed"),
            "{e}"
        );
    }
}
