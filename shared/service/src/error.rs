//! The one error shape of every HENDU API:
//! `{"error": {"code": "<stable code>", "message": "<for humans>"}}`.
//! Internal details are logged, never sent.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hendu_storage::StorageError;
use serde_json::json;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable, for programs: `invalid_input`, `not_found`, `unsupported_audio`, ...
    pub code: &'static str,
    pub message: String,
    /// Sent as `Retry-After` (whole seconds, at least 1).
    pub retry_after: Option<std::time::Duration>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The same answer with `Retry-After`.
    #[must_use]
    pub fn retry_after(mut self, wait: std::time::Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 413 `payload_too_large`, naming the variable that sets the limit.
    pub fn payload_too_large(limit_var: &str) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the upload is larger than this service accepts ({limit_var})"),
        )
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// Logs `error` and answers 500 without its details.
    pub fn internal(error: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %error, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the service's logs",
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

/// 503 `busy`: the service's work queue is full; retry after `wait`.
pub fn busy(wait: std::time::Duration) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy",
        "the service is at capacity; retry shortly",
    )
    .retry_after(wait)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": { "code": self.code, "message": self.message } }));
        let mut response = (self.status, body).into_response();
        if let Some(wait) = self.retry_after {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(v) = axum::http::HeaderValue::from_str(&secs.to_string()) {
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, v);
            }
        }
        response
    }
}

impl From<hendu_storage::ValidationError> for ApiError {
    fn from(e: hendu_storage::ValidationError) -> Self {
        Self::unprocessable("invalid_input", e.to_string())
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Invalid(v) => Self::unprocessable("invalid_input", v.to_string()),
            StorageError::NotFound { .. } => Self::not_found(e.to_string()),
            StorageError::Conflict(m) => Self::new(StatusCode::CONFLICT, "conflict", m),
            StorageError::Sql(_)
            | StorageError::Mongo(_)
            | StorageError::Redis(_)
            | StorageError::Io(_) => {
                tracing::error!(error = %e, "storage unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    "a database did not answer; retry later",
                )
                .retry_after(std::time::Duration::from_secs(5))
            }
            StorageError::Fenced(_) => Self::new(
                StatusCode::CONFLICT,
                "conflict",
                "another replica took this work over",
            ),
            other => Self::internal(&other),
        }
    }
}
