//! What the services that take audio from clients share: the answer for
//! audio that is refused, and work tied to the request that asked for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;
use futures_util::StreamExt;
use hendu_fingerprint::DecodeError;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;

/// The answer for audio that could not be fingerprinted: 422 with a code
/// saying which limit or problem (`audio_too_long`, `sample_rate_too_high`,
/// `too_many_channels`, `unsupported_audio`). `limit_var` names the setting
/// of the duration limit.
pub fn refused(e: DecodeError, limit_var: &str) -> ApiError {
    match e {
        DecodeError::TooLong { limit_s } => ApiError::unprocessable(
            "audio_too_long",
            format!("the audio is longer than this service accepts ({limit_s} s, {limit_var})"),
        ),
        DecodeError::SampleRate(rate) => ApiError::unprocessable(
            "sample_rate_too_high",
            format!("{rate} Hz is above the highest sample rate accepted (192 kHz)"),
        ),
        DecodeError::Channels(n) => ApiError::unprocessable(
            "too_many_channels",
            format!("{n} channels is more than accepted (8)"),
        ),
        DecodeError::Cancelled => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "cancelled",
            "the work was cancelled (the service is stopping)",
        )
        .retry_after(Duration::from_secs(1)),
        DecodeError::Io(e) => ApiError::internal(&e),
        other => ApiError::unprocessable("unsupported_audio", other.to_string()),
    }
}

/// A flag for blocking work (decoding) that is set when the request that
/// asked for it goes away (the client disconnected: the handler's future is
/// dropped) or when the service stops.
#[derive(Debug)]
pub struct CancelOnDrop {
    flag: Arc<AtomicBool>,
    watcher: tokio::task::JoinHandle<()>,
}

impl CancelOnDrop {
    pub fn new(stopping: &CancellationToken) -> Self {
        let flag = Arc::new(AtomicBool::new(false));
        let (set, stop) = (flag.clone(), stopping.clone());
        let watcher = tokio::spawn(async move {
            stop.cancelled().await;
            set.store(true, Ordering::Release);
        });
        Self { flag, watcher }
    }

    /// The flag to hand to the blocking work.
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.flag.clone()
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.flag.store(true, Ordering::Release);
        self.watcher.abort();
    }
}

/// Reads and throws away up to 1 MiB of a body the service refused (within
/// 2 s), so that the answer reaches a client that is still sending instead
/// of a connection reset.
pub async fn discard(body: Body) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let mut stream = body.into_data_stream();
        let mut seen = 0usize;
        while let Some(Ok(chunk)) = stream.next().await {
            seen += chunk.len();
            if seen > 1 << 20 {
                break;
            }
        }
    })
    .await;
}

/// The body, up to `limit` bytes.
///
/// # Errors
/// 413 `payload_too_large` (naming `limit_var`) past the limit; 408 when the
/// body stalled; 400 when it broke off.
pub async fn read_limited(
    body: Body,
    limit: usize,
    limit_var: &str,
) -> Result<bytes::Bytes, ApiError> {
    let mut stream = body.into_data_stream();
    let mut out = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            if std::error::Error::source(&e)
                .is_some_and(|s| s.is::<tower_http::timeout::TimeoutError>())
                || e.to_string().contains("timed out")
            {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    "the body stopped arriving (HENDU_HTTP_BODY_TIMEOUT_S)",
                )
            } else {
                ApiError::bad_request("bad_body", "the body broke off")
            }
        })?;
        if out.len() + chunk.len() > limit {
            return Err(ApiError::payload_too_large(limit_var));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}
