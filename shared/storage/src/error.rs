//! The crate's errors: typed validation failures, and backend failures.

/// Why a value was refused before it reached a database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    #[error("{field} must not be empty")]
    Empty { field: &'static str },
    #[error("{field} is {len} characters long; at most {max} are allowed")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{field} must not contain control characters")]
    ControlCharacter { field: &'static str },
    #[error("{field} must not contain invisible or text-direction characters")]
    Invisible { field: &'static str },
    #[error("IMEI must be 15 digits, got {0:?}")]
    ImeiFormat(String),
    #[error("IMEI {0} fails its Luhn check digit")]
    ImeiCheckDigit(String),
    #[error("invalid stream URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("invalid e-mail address {0:?}")]
    Email(String),
    #[error("{field} must be at least {min} characters long")]
    TooShort { field: &'static str, min: usize },
    #[error("{field} is out of range: {reason}")]
    Range { field: &'static str, reason: String },
    #[error("{field} may only contain letters, digits, '-', '_', ':' and '.'")]
    Charset { field: &'static str },
}

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("{what} {id} does not exist")]
    NotFound { what: &'static str, id: String },
    /// A unique value is taken by a different record (same name, other data).
    #[error("{0}")]
    Conflict(String),
    #[error("MySQL/SQLite: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("MongoDB: {0}")]
    Mongo(#[from] mongodb::error::Error),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("stored data is damaged: {0}")]
    Corrupt(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("password hashing: {0}")]
    Hash(String),
    /// A write under a lease that has since been taken over (its fencing
    /// token is lower than one that already wrote).
    #[error("the lease on {0} was taken over; this holder's writes are refused")]
    Fenced(String),
}

impl StorageError {
    pub(crate) fn not_found(what: &'static str, id: impl ToString) -> Self {
        Self::NotFound {
            what,
            id: id.to_string(),
        }
    }

    pub(crate) fn corrupt(what: impl ToString) -> Self {
        Self::Corrupt(what.to_string())
    }
}

/// Result of storage operations.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
