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
    pub const SHUTDOWN_DELAY_S: &str = "HENDU_SHUTDOWN_DELAY_S";
    pub const MAX_CONNECTIONS: &str = "HENDU_HTTP_MAX_CONNECTIONS";
    pub const MAX_REQUESTS: &str = "HENDU_HTTP_MAX_REQUESTS";
    pub const HEADER_TIMEOUT_S: &str = "HENDU_HTTP_HEADER_TIMEOUT_S";
    pub const BODY_TIMEOUT_S: &str = "HENDU_HTTP_BODY_TIMEOUT_S";
    pub const REQUEST_TIMEOUT_S: &str = "HENDU_HTTP_REQUEST_TIMEOUT_S";
    pub const FAULTS: &str = "HENDU_FAULTS";
    pub const FAULTS_MAX_MEMORY_MB: &str = "HENDU_FAULTS_MAX_MEMORY_MB";
}

/// For each service's `--help`.
pub const ENV_HELP: &str = "\
Environment:
  HENDU_HTTP_ADDR             address to listen on (default 0.0.0.0:<the service's port>)
  HENDU_LOG                   log filter, e.g. info or hendu=debug,info (default info);
                              JSON lines unless stderr is a terminal
  HENDU_SHUTDOWN_GRACE_S      on SIGTERM, how long in-flight work may take (default 20)
  HENDU_SHUTDOWN_DELAY_S      on SIGTERM, how long to keep serving with /readyz failing, so
                              that a balancer stops sending work first (default 0)
  HENDU_HTTP_MAX_CONNECTIONS  open connections at most; more wait (default 1024)
  HENDU_HTTP_MAX_REQUESTS     requests in progress at most; more get 503 busy (default 256)
  HENDU_HTTP_HEADER_TIMEOUT_S time to send a request's head (default 10)
  HENDU_HTTP_BODY_TIMEOUT_S   longest pause while sending a body (default 30)
  HENDU_HTTP_REQUEST_TIMEOUT_S
                              longest a request may take in all (default 600)
  HENDU_AUTH_KEY              key for hashing API tokens and device secrets (at least 32
                              characters, the same on every replica; default: a key made
                              once and kept in the database)
  HENDU_MYSQL_URL, HENDU_MONGO_URL, HENDU_REDIS_URL
                              the servers (all three), or none for the embedded store
  HENDU_EMBEDDED_PATH         the embedded store's file (default ./hendu.db)
  HENDU_MYSQL_POOL, HENDU_MONGO_POOL, HENDU_REDIS_PREFIX, HENDU_QUEUE_CLAIM_AFTER_MS,
  HENDU_QUEUE_MAX_DELIVERIES, HENDU_CONNECT_TIMEOUT_S
                              see docs/storage.md
  HENDU_FAULTS                on: fault injection for experiments, POST /v1/faults with an
                              administrator's token (see docs/faults.md); off (default): the
                              routes do not exist and nothing is injected
  HENDU_FAULTS_MAX_MEMORY_MB  most memory all live StressChaos memory faults may hold
                              together (default 1024, at most 4096)
Secrets in URLs are never printed.";

/// What one HTTP client can hold of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    pub max_connections: usize,
    pub max_requests: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub request_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_requests: 256,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(600),
        }
    }
}

impl HttpLimits {
    /// # Errors
    /// [`ConfigError::Malformed`] naming the variable.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let d = Self::default();
        let count = |var: &'static str, default: usize| -> Result<usize, ConfigError> {
            match get(var) {
                Some(v) => match v.trim().parse::<usize>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(ConfigError::Malformed {
                        var,
                        reason: format!("{v:?} is not a whole number above 0"),
                    }),
                },
                None => Ok(default),
            }
        };
        let secs = |var: &'static str, default: Duration| -> Result<Duration, ConfigError> {
            count(var, default.as_secs() as usize).map(|n| Duration::from_secs(n as u64))
        };
        Ok(Self {
            max_connections: count(vars::MAX_CONNECTIONS, d.max_connections)?,
            max_requests: count(vars::MAX_REQUESTS, d.max_requests)?,
            header_timeout: secs(vars::HEADER_TIMEOUT_S, d.header_timeout)?,
            body_timeout: secs(vars::BODY_TIMEOUT_S, d.body_timeout)?,
            request_timeout: secs(vars::REQUEST_TIMEOUT_S, d.request_timeout)?,
        })
    }

    /// # Errors
    /// As [`HttpLimits::from_lookup`].
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
    }
}

/// Settings every service has.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The service's name, in logs and metrics.
    pub service: &'static str,
    pub http_addr: SocketAddr,
    pub log: String,
    pub shutdown_grace: Duration,
    pub shutdown_delay: Duration,
    pub http: HttpLimits,
    pub storage: StorageConfig,
    pub faults: FaultSettings,
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
        let http_addr = http_addr(get, default_port)?;
        let shutdown_grace = match get(vars::SHUTDOWN_GRACE_S) {
            Some(v) => {
                Duration::from_secs(v.trim().parse().map_err(|_| ConfigError::Malformed {
                    var: vars::SHUTDOWN_GRACE_S,
                    reason: format!("{v:?} is not a whole number of seconds"),
                })?)
            }
            None => Duration::from_secs(20),
        };
        let shutdown_delay = match get(vars::SHUTDOWN_DELAY_S) {
            Some(v) => Duration::from_secs_f64(
                v.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s >= 0.0 && *s <= 3600.0)
                    .ok_or_else(|| ConfigError::Malformed {
                        var: vars::SHUTDOWN_DELAY_S,
                        reason: format!("{v:?} is not a number of seconds"),
                    })?,
            ),
            None => Duration::ZERO,
        };
        let http = HttpLimits::from_lookup(get)?;
        let faults = FaultSettings::from_lookup(get)?;
        let embedded =
            get(vars::EMBEDDED_PATH).map_or_else(|| PathBuf::from("hendu.db"), PathBuf::from);
        Ok(Self {
            service,
            http_addr,
            log: get(vars::LOG).unwrap_or_else(|| "info".into()),
            shutdown_grace,
            shutdown_delay,
            http,
            storage: StorageConfig::from_lookup(embedded, get)?,
            faults,
        })
    }
}

/// The address a service listens on: `HENDU_HTTP_ADDR`, or every interface
/// on `default_port`.
///
/// # Errors
/// [`ConfigError::Malformed`] when the variable is not an address.
pub fn http_addr(
    get: impl Fn(&str) -> Option<String>,
    default_port: u16,
) -> Result<SocketAddr, ConfigError> {
    match get(vars::HTTP_ADDR).filter(|v| !v.trim().is_empty()) {
        Some(v) => v.trim().parse().map_err(|_| ConfigError::Malformed {
            var: vars::HTTP_ADDR,
            reason: format!("{v:?} is not an address like 0.0.0.0:8080"),
        }),
        None => Ok(SocketAddr::from(([0, 0, 0, 0], default_port))),
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

/// A positive duration in seconds from a service's own variable, `default`
/// when unset or blank.
///
/// # Errors
/// [`ConfigError::Malformed`] for anything but a positive number of seconds.
pub fn seconds_or(var: &'static str, default: f64) -> Result<std::time::Duration, ConfigError> {
    let s: f64 = var_or(var, default, "a number of seconds")?;
    std::time::Duration::try_from_secs_f64(s)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| ConfigError::Malformed {
            var,
            reason: format!("{s} is not a positive number of seconds"),
        })
}

/// The most `HENDU_FAULTS_MAX_MEMORY_MB` may allow.
pub const MEMORY_BOUND_MB: u64 = 4096;
pub(crate) const MIB: u64 = 1024 * 1024;

/// `HENDU_FAULTS` and its bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultSettings {
    pub enabled: bool,
    /// The most memory all live StressChaos memory faults hold together.
    pub max_memory: u64,
}

impl Default for FaultSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            max_memory: 1024 * MIB,
        }
    }
}

impl FaultSettings {
    /// # Errors
    /// [`ConfigError::Malformed`] naming the variable.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let enabled = match get(vars::FAULTS).as_deref().map(str::trim) {
            None | Some("off") => false,
            Some("on") => true,
            Some(other) => {
                return Err(ConfigError::Malformed {
                    var: vars::FAULTS,
                    reason: format!("{other:?} is neither on nor off"),
                });
            }
        };
        let max_memory = match get(vars::FAULTS_MAX_MEMORY_MB) {
            None => Self::default().max_memory,
            Some(v) => match v.trim().parse::<u64>() {
                Ok(mb) if (1..=MEMORY_BOUND_MB).contains(&mb) => mb * MIB,
                _ => {
                    return Err(ConfigError::Malformed {
                        var: vars::FAULTS_MAX_MEMORY_MB,
                        reason: format!("{v:?} is not a whole number from 1 to {MEMORY_BOUND_MB}"),
                    });
                }
            },
        };
        Ok(Self {
            enabled,
            max_memory,
        })
    }

    /// # Errors
    /// As [`FaultSettings::from_lookup`].
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
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
