//! `POST /v1/devices/{imei}/samples`: a sensor's sample in, queued for recognition.
//!
//! The request is judged from its head first: the device and its secret,
//! then the declared length. Only a known device's body within the limit is
//! read, and audio is decoded behind the service's bounded CPU queue,
//! stopping at the duration limit or when the client goes away.

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use hendu_fingerprint::wire::MEDIA_TYPE;
use hendu_service::ApiError;
use hendu_service::audio;
use hendu_service::auth::{client_addr, unauthorized};
use hendu_storage::model::{Device, Imei};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::AppState;
use crate::ingest::{SampleBody, ingest};

pub const SECRET_HEADER: &str = "x-hendu-device-secret";
pub const CAPTURED_AT_HEADER: &str = "x-hendu-captured-at";
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/devices/{imei}/samples", post(upload))
        .with_state(state)
}

/// A sample taken in.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Accepted {
    /// The sample's id: the same for the same device, instant and content.
    sample_id: String,
    /// True when this sample was already taken (a resend).
    duplicate: bool,
}

/// A sensor's sample: audio (any format the engine decodes) or the
/// device's own fingerprint (`application/vnd.hendu.fingerprint`).
#[utoipa::path(post, path = "/v1/devices/{imei}/samples", operation_id = "upload_sample", tag = "devices",
    params(("imei" = String, Path, description = "The device's IMEI"),
        ("x-hendu-device-secret" = String, Header, description = "The device's secret"),
        ("x-hendu-captured-at" = String, Header, description = "When the sample's audio began (RFC 3339)")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "Audio or a fingerprint"),
    responses((status = 202, description = "Stored and queued for recognition", body = Accepted),
        (status = 400, description = "A header or body that cannot be read, named", body = hendu_service::openapi::ErrorBody),
        (status = 401, description = "Unknown device or wrong secret", body = hendu_service::openapi::ErrorBody),
        (status = 403, description = "A disabled device", body = hendu_service::openapi::ErrorBody),
        (status = 413, description = "Larger than HENDU_MAX_SAMPLE_BYTES", body = hendu_service::openapi::ErrorBody),
        (status = 422, description = "Audio that cannot be decoded or is too long", body = hendu_service::openapi::ErrorBody),
        (status = 429, description = "Too many failed attempts (Retry-After)", body = hendu_service::openapi::ErrorBody),
        (status = 503, description = "At capacity (Retry-After) or a store does not answer", body = hendu_service::openapi::ErrorBody)))]
#[tracing::instrument(skip_all, fields(imei = %imei))]
pub(crate) async fn upload(
    State(state): State<AppState>,
    Path(imei): Path<String>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let mut body = Some(body);
    match accept(&state, &imei, &parts, &mut body).await {
        Ok(answer) => answer.into_response(),
        Err(refusal) => {
            // Read what the client is still sending, so that it gets the answer.
            if let Some(body) = body.take() {
                audio::discard(body).await;
            }
            refusal.into_response()
        }
    }
}

/// The device, if the request's head proves to be it.
async fn authenticate(state: &AppState, raw: &str, parts: &Parts) -> Result<Device, ApiError> {
    let imei =
        Imei::parse(raw).map_err(|e| ApiError::bad_request("invalid_imei", e.to_string()))?;
    let secret = parts
        .headers
        .get(SECRET_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            unauthorized(
                "missing_credentials",
                "send the device's secret in the X-Hendu-Device-Secret header",
            )
        })?;
    state
        .auth
        .device(&imei, secret.trim(), client_addr(parts))
        .await
}

async fn accept(
    state: &AppState,
    imei: &str,
    parts: &Parts,
    body: &mut Option<Body>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    // Who is asking comes first: a stranger's body is never read.
    let device = authenticate(state, imei, parts).await?;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.max_sample_bytes as u64) {
        return Err(ApiError::payload_too_large(crate::vars::MAX_SAMPLE_BYTES));
    }
    let Some(raw) = body.take() else {
        return Err(ApiError::internal(&"the body was taken twice"));
    };
    let bytes =
        audio::read_limited(raw, state.max_sample_bytes, crate::vars::MAX_SAMPLE_BYTES).await?;
    let accepted = ingest(state, &device, sample_body(&parts.headers, bytes)?).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            sample_id: accepted.sample_id,
            duplicate: accepted.duplicate,
        }),
    ))
}

fn captured_at_header(headers: &HeaderMap) -> Result<OffsetDateTime, ApiError> {
    let raw = headers
        .get(CAPTURED_AT_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                "missing_capture_time",
                "audio samples need X-Hendu-Captured-At (RFC 3339, e.g. 2026-11-24T21:30:00Z)",
            )
        })?;
    OffsetDateTime::parse(raw.trim(), &Rfc3339).map_err(|e| {
        ApiError::bad_request(
            "invalid_capture_time",
            format!("X-Hendu-Captured-At {raw:?} is not RFC 3339: {e}"),
        )
    })
}

/// The body as a sample: the device's fingerprint by its media type,
/// otherwise audio captured at `X-Hendu-Captured-At`.
fn sample_body(headers: &HeaderMap, body: Bytes) -> Result<SampleBody, ApiError> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media == MEDIA_TYPE {
        return Ok(SampleBody::Fingerprint(body));
    }
    Ok(SampleBody::Audio {
        captured_at: captured_at_header(headers)?,
        audio: body,
    })
}
