//! The administrators' device API.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hendu_service::ApiError;
use hendu_storage::model::{Device, Imei, NewDevice, Secret};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::admin;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/devices", post(register))
        .route("/v1/devices/{imei}", get(one).patch(change))
        .with_state(state)
}

/// A device as the API shows it (never its secret).
#[derive(Debug, Serialize)]
pub struct DeviceView {
    pub id: i64,
    pub imei: String,
    pub name: String,
    pub location: Option<String>,
    pub enabled: bool,
}

impl From<Device> for DeviceView {
    fn from(d: Device) -> Self {
        Self {
            id: d.id,
            imei: d.imei.as_str().to_owned(),
            name: d.name,
            location: d.location,
            enabled: d.enabled,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Registration {
    imei: String,
    name: String,
    location: Option<String>,
    secret: String,
}

fn imei(s: &str) -> Result<Imei, ApiError> {
    Imei::parse(s).map_err(|e| ApiError::bad_request("invalid_imei", e.to_string()))
}

fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("the body is not valid: {e}")))
}

async fn register(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Result<Response, ApiError> {
    admin(&state.storage, &state.auth, &headers).await?;
    let r: Registration = json_body(&body)?;
    let new = NewDevice::new(
        imei(&r.imei)?,
        &r.name,
        r.location.as_deref(),
        Secret::new(r.secret),
    )
    .map_err(|e| ApiError::unprocessable("invalid_input", e.to_string()))?;
    let device = state.storage.relational.add_device(&new).await?;
    tracing::info!(imei = %device.imei.as_str(), device = device.id, "device registered");
    let location = format!("/v1/devices/{}", device.imei.as_str());
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(DeviceView::from(device)),
    )
        .into_response())
}

async fn found(state: &AppState, imei: &Imei) -> Result<Device, ApiError> {
    state
        .storage
        .relational
        .device_by_imei(imei)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no device has IMEI {}", imei.as_str())))
}

async fn one(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Json<DeviceView>, ApiError> {
    admin(&state.storage, &state.auth, &headers).await?;
    Ok(Json(found(&state, &imei(&raw)?).await?.into()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Change {
    enabled: bool,
}

async fn change(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Result<Json<DeviceView>, ApiError> {
    admin(&state.storage, &state.auth, &headers).await?;
    let imei = imei(&raw)?;
    let change: Change = json_body(&body)?;
    found(&state, &imei).await?;
    state
        .storage
        .relational
        .set_device_enabled(&imei, change.enabled)
        .await?;
    tracing::info!(imei = %imei.as_str(), enabled = change.enabled, "device changed");
    Ok(Json(found(&state, &imei).await?.into()))
}
