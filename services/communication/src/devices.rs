//! The administrators' device API.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hendu_service::accounts::{Field, json_body, operator};
use hendu_service::{ApiError, Principal};
use hendu_storage::credentials::{Purpose, new_device_secret};
use hendu_storage::model::{Device, Imei, LoginVerifier, NewDevice, Secret, UserId};
use serde::{Deserialize, Serialize};

use crate::AppState;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/devices", post(register))
        .route("/v1/devices/{imei}", get(one).patch(change))
        .with_state(state)
}

/// The devices API's part of the OpenAPI document (with a sensor's sample upload).
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    paths(register, one, change, crate::samples::upload),
    components(schemas(Registration, Change, DeviceView, WithSecret, crate::samples::Accepted)),
    tags((name = "devices", description = "Sensor devices and their samples"))
)]
pub struct Api;

/// A device as the API shows it (never its secret).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeviceView {
    pub id: i64,
    pub imei: String,
    pub name: String,
    pub location: Option<String>,
    pub enabled: bool,
    /// The operator (an event organiser) who reads its plays.
    pub owner_id: Option<UserId>,
    /// False for a device registered before secrets were made by the
    /// server: it cannot sign in until its secret is rotated.
    pub has_secret: bool,
    /// False for a device whose secret was made before the TCP protocol's
    /// v2 login: it signs in over REST and v1, and over v2 once its secret
    /// is rotated.
    pub tcp_v2_login: bool,
}

impl From<Device> for DeviceView {
    fn from(d: Device) -> Self {
        Self {
            id: d.id,
            imei: d.imei.as_str().to_owned(),
            name: d.name,
            location: d.location,
            enabled: d.enabled,
            owner_id: d.owner,
            has_secret: d.secret_digest.is_some(),
            tcp_v2_login: d.login_verifier.is_some(),
        }
    }
}

/// A device with its new secret: the only time the secret is shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct WithSecret {
    #[serde(flatten)]
    device: DeviceView,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

/// A device to register; the server makes its secret.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Registration {
    /// 15 digits with a valid Luhn check digit.
    imei: String,
    name: String,
    location: Option<String>,
    /// The operator (an event organiser) who reads its plays.
    owner_id: Option<UserId>,
    /// Refused with a clear message: secrets are the server's to make.
    #[schema(value_type = Option<Object>)]
    secret: Option<serde_json::Value>,
}

/// What the TCP protocol's v2 login is checked against, made from the secret.
fn login_verifier(secret: &Secret) -> LoginVerifier {
    LoginVerifier(hendu_sensor_protocol::login::stored_key(secret.expose()))
}

fn imei(s: &str) -> Result<Imei, ApiError> {
    Imei::parse(s).map_err(|e| ApiError::bad_request("invalid_imei", e.to_string()))
}

const WHAT: &str = "manage devices";

#[utoipa::path(post, path = "/v1/devices", operation_id = "register_device", tag = "devices", request_body = Registration, security(("token" = [])),
    responses((status = 201, description = "Registered, with its secret (shown only now)", body = WithSecret), (status = 400, description = "A request or IMEI that cannot be read, named", body = hendu_service::openapi::ErrorBody), (status = 401, description = "No live token", body = hendu_service::openapi::ErrorBody), (status = 403, description = "Administrators only", body = hendu_service::openapi::ErrorBody),
        (status = 409, description = "A device with this IMEI exists", body = hendu_service::openapi::ErrorBody),
        (status = 422, description = "A field that is not valid, named", body = hendu_service::openapi::ErrorBody)))]
async fn register(
    State(state): State<AppState>,
    principal: Principal,
    body: bytes::Bytes,
) -> Result<Response, ApiError> {
    principal.require_admin(WHAT)?;
    let r: Registration = json_body(&body)?;
    if r.secret.is_some() {
        return Err(ApiError::unprocessable(
            "invalid_input",
            "device secrets are made by the server and returned once; leave out `secret`",
        ));
    }
    let secret = new_device_secret();
    let digest = state
        .auth
        .key()
        .digest(Purpose::DeviceSecret, secret.expose());
    let new = NewDevice::new(imei(&r.imei)?, &r.name, r.location.as_deref(), digest)?
        .with_login_verifier(login_verifier(&secret))
        .owned_by(r.owner_id);
    operator(&state.storage, new.owner).await?;
    let device = state.storage.relational.add_device(&new).await?;
    tracing::info!(imei = %device.imei.as_str(), device = device.id, by = principal.user.id, "device registered");
    let location = format!("/v1/devices/{}", device.imei.as_str());
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(WithSecret {
            device: device.into(),
            secret: Some(secret.expose().to_owned()),
        }),
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

#[utoipa::path(get, path = "/v1/devices/{imei}", operation_id = "get_device", tag = "devices", params(("imei" = String, Path, description = "The device's IMEI")), security(("token" = [])),
    responses((status = 200, description = "The device", body = DeviceView), (status = 400, description = "A request or IMEI that cannot be read, named", body = hendu_service::openapi::ErrorBody), (status = 401, description = "No live token", body = hendu_service::openapi::ErrorBody), (status = 403, description = "Administrators only", body = hendu_service::openapi::ErrorBody), (status = 404, description = "No device has this IMEI", body = hendu_service::openapi::ErrorBody),))]
async fn one(
    State(state): State<AppState>,
    principal: Principal,
    Path(raw): Path<String>,
) -> Result<Json<DeviceView>, ApiError> {
    principal.require_admin(WHAT)?;
    Ok(Json(found(&state, &imei(&raw)?).await?.into()))
}

/// A change to a device.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Change {
    enabled: Option<bool>,
    /// The operator (an event organiser) who reads its plays; `null`: none.
    #[serde(default)]
    #[schema(value_type = Option<i64>)]
    owner_id: Field<UserId>,
    /// Makes a new secret (returned once); the old one stops working.
    #[serde(default)]
    rotate_secret: bool,
}

#[utoipa::path(patch, path = "/v1/devices/{imei}", operation_id = "change_device", tag = "devices", params(("imei" = String, Path, description = "The device's IMEI")), request_body = Change, security(("token" = [])),
    responses((status = 200, description = "The device as changed, with a new secret if rotated", body = WithSecret), (status = 400, description = "A request or IMEI that cannot be read, named", body = hendu_service::openapi::ErrorBody), (status = 401, description = "No live token", body = hendu_service::openapi::ErrorBody), (status = 403, description = "Administrators only", body = hendu_service::openapi::ErrorBody), (status = 404, description = "No device has this IMEI", body = hendu_service::openapi::ErrorBody),))]
async fn change(
    State(state): State<AppState>,
    principal: Principal,
    Path(raw): Path<String>,
    body: bytes::Bytes,
) -> Result<Response, ApiError> {
    principal.require_admin(WHAT)?;
    let imei = imei(&raw)?;
    let change: Change = json_body(&body)?;
    let current = found(&state, &imei).await?;
    if !matches!(change.owner_id, Field::Keep) {
        let owner = change.owner_id.apply(current.owner);
        operator(&state.storage, owner).await?;
        state
            .storage
            .relational
            .set_device_owner(&imei, owner)
            .await?;
        tracing::info!(imei = %imei.as_str(), owner, "device given to an operator");
    }
    if let Some(enabled) = change.enabled {
        state
            .storage
            .relational
            .set_device_enabled(&imei, enabled)
            .await?;
        tracing::info!(imei = %imei.as_str(), enabled, "device changed");
    }
    let secret = if change.rotate_secret {
        let secret = new_device_secret();
        let digest = state
            .auth
            .key()
            .digest(Purpose::DeviceSecret, secret.expose());
        state
            .storage
            .relational
            .set_device_secret(&imei, &digest, &login_verifier(&secret))
            .await?;
        tracing::info!(imei = %imei.as_str(), "device secret rotated");
        Some(secret)
    } else {
        None
    };
    Ok(Json(WithSecret {
        device: found(&state, &imei).await?.into(),
        secret: secret.map(|s| s.expose().to_owned()),
    })
    .into_response())
}
