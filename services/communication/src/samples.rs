//! `POST /v1/devices/{imei}/samples`: a sensor's sample in, queued for recognition.

use std::io::Cursor;

use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use hendu_fingerprint::packed::{BinPrecision, pack};
use hendu_fingerprint::wire::{MEDIA_TYPE, SampleFingerprint};
use hendu_fingerprint::{AudioReader, PeakProfile, fingerprint_reader};
use hendu_service::ApiError;
use hendu_storage::Queue;
use hendu_storage::model::{Device, Imei, NewSample, Secret, Source};
use hendu_storage::queue::SampleQueued;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::AppState;
use crate::auth::unauthorized;

pub const SECRET_HEADER: &str = "x-hendu-device-secret";
pub const CAPTURED_AT_HEADER: &str = "x-hendu-captured-at";
/// Capture instants further ahead of the server's clock are refused.
const MAX_CLOCK_AHEAD: time::Duration = time::Duration::minutes(10);

pub fn router(state: AppState, max_bytes: usize) -> Router {
    Router::new()
        .route(
            "/v1/devices/{imei}/samples",
            post(upload).layer(DefaultBodyLimit::max(max_bytes)),
        )
        .with_state(state)
}

/// The device, if the request proves to be it.
async fn authenticate(
    state: &AppState,
    raw: &str,
    headers: &HeaderMap,
) -> Result<Device, ApiError> {
    let imei =
        Imei::parse(raw).map_err(|e| ApiError::bad_request("invalid_imei", e.to_string()))?;
    let secret = headers
        .get(SECRET_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(Secret::new)
        .ok_or_else(|| {
            unauthorized(
                "missing_credentials",
                "send the device's secret in the X-Hendu-Device-Secret header",
            )
        })?;
    let wrong = || unauthorized("unauthorized", "unknown device or wrong secret");
    let device = state
        .storage
        .relational
        .device_by_imei(&imei)
        .await?
        .ok_or_else(wrong)?;
    if !state.auth.verify(&device.secret_hash, &secret).await {
        return Err(wrong());
    }
    if !device.enabled {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "device_disabled",
            "this device is disabled; an administrator can enable it",
        ));
    }
    Ok(device)
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

/// The sample's capture instant, duration and peaks, from either kind of body.
async fn fingerprint(
    headers: &HeaderMap,
    body: Bytes,
) -> Result<(OffsetDateTime, u32, Vec<u8>), ApiError> {
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
        let sample = SampleFingerprint::decode(&body)
            .map_err(|e| ApiError::unprocessable("invalid_fingerprint", e.to_string()))?;
        let at = OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(sample.captured_at_ms) * 1_000_000,
        )
        .map_err(|e| ApiError::unprocessable("invalid_fingerprint", e.to_string()))?;
        return Ok((
            at,
            sample.duration_ms,
            pack(&sample.peaks, BinPrecision::Fine),
        ));
    }
    let at = captured_at_header(headers)?;
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "empty_body",
            "the body holds no audio",
        ));
    }
    let decoded = tokio::task::spawn_blocking(move || {
        let mut reader = AudioReader::from_source(Box::new(Cursor::new(body)), None)?;
        fingerprint_reader(&mut reader, PeakProfile::QUERY)
    })
    .await
    .map_err(|e| ApiError::internal(&e))?
    .map_err(|e| ApiError::unprocessable("unsupported_audio", e.to_string()))?;
    let duration_ms = (decoded.duration_s * 1000.0).round() as u32;
    Ok((at, duration_ms, pack(&decoded.peaks, BinPrecision::Fine)))
}

#[tracing::instrument(skip_all, fields(imei = %imei))]
async fn upload(
    State(state): State<AppState>,
    Path(imei): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    // Who is asking comes first: a stranger learns nothing about the body.
    let device = authenticate(&state, &imei, &headers).await?;
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::payload_too_large(crate::vars::MAX_SAMPLE_BYTES)
        } else {
            ApiError::bad_request("bad_body", e.body_text())
        }
    })?;
    let (captured_at, duration_ms, peaks) = fingerprint(&headers, body).await?;
    if captured_at > OffsetDateTime::now_utc() + MAX_CLOCK_AHEAD {
        return Err(ApiError::unprocessable(
            "capture_time_in_future",
            format!(
                "the capture instant {captured_at} is ahead of the server's clock; check the device's clock"
            ),
        ));
    }
    let sample = NewSample::new(
        Source::Device(device.id),
        device.location.as_deref(),
        captured_at,
        duration_ms,
        peaks,
    )
    .map_err(|e| ApiError::unprocessable("invalid_input", e.to_string()))?;
    let stored = state.storage.documents.put_sample(&sample).await?;
    // Queued even when stored before: the first attempt may have died
    // before queueing it; recognition is idempotent per sample.
    let entry = SampleQueued {
        sample_id: sample.id.clone(),
        source: sample.source,
    };
    let payload = serde_json::to_vec(&entry).map_err(|e| ApiError::internal(&e))?;
    state
        .storage
        .queue
        .push(Queue::Samples, &payload)
        .await
        .map_err(ApiError::from)?;
    tracing::info!(sample = %sample.id, duration_ms, new = stored, "sample queued");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "sample_id": sample.id, "duplicate": !stored })),
    ))
}
