//! The stations API: administrators register, change and remove stations;
//! operators see the stations that belong to them and how they are doing.
//!
//! - `POST /v1/radios`, `GET /v1/radios`, `GET/PATCH/DELETE /v1/radios/{id}`
//! - `GET /v1/radios/{id}/health`, `GET /v1/radios/health`: each station's
//!   state as the replica listening to it last reported it.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hendu_service::accounts::{Field, json_body, operator};
use hendu_service::{ApiError, Principal};
use hendu_storage::Storage;
use hendu_storage::model::{NewRadio, Radio, RadioId, RadioStatus, Role, StationState, UserId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

#[derive(Debug, Clone)]
pub struct StationsState {
    pub storage: Storage,
    pub auth: hendu_service::Auth,
    /// A status not written for this long means no replica listens.
    pub stale_after: std::time::Duration,
}

impl axum::extract::FromRef<StationsState> for hendu_service::Auth {
    fn from_ref(state: &StationsState) -> Self {
        state.auth.clone()
    }
}

pub fn router(state: StationsState) -> Router {
    Router::new()
        .route("/v1/radios", get(list).post(add))
        .route("/v1/radios/health", get(health_all))
        .route("/v1/radios/{id}", get(one).patch(change).delete(remove))
        .route("/v1/radios/{id}/health", get(health_one))
        .with_state(state)
}

const WHAT: &str = "manage radio stations";

/// The stations API's part of the OpenAPI document.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    paths(add, list, one, change, remove, health_all, health_one),
    components(schemas(Registration, Change, Radio, Health, RadioStatus, StationState)),
    tags((name = "stations", description = "Radio stations and their health"))
)]
pub struct Api;

/// A station to register.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Registration {
    name: String,
    stream_url: String,
    location: Option<String>,
    country: Option<String>,
    /// The operator the station belongs to.
    owner_id: Option<UserId>,
    #[serde(default = "yes")]
    enabled: bool,
}

fn yes() -> bool {
    true
}

/// A change to a station: an absent field is kept, `null` clears it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Change {
    name: Option<String>,
    stream_url: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    location: Field<String>,
    /// ISO 3166-1 alpha-2.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    country: Field<String>,
    /// The operator the station belongs to.
    #[serde(default)]
    #[schema(value_type = Option<i64>)]
    owner_id: Field<UserId>,
    enabled: Option<bool>,
}

#[utoipa::path(post, path = "/v1/radios", operation_id = "register_station", tag = "stations", request_body = Registration, security(("token" = [])),
    responses((status = 201, description = "Registered; listened to within seconds", body = Radio),
        (status = 200, description = "Already registered with this stream", body = Radio),
        (status = 400, description = "Not JSON of this shape (`invalid_json`)", body = hendu_service::openapi::ErrorBody), (status = 401, description = "No live token", body = hendu_service::openapi::ErrorBody), (status = 403, description = "The token's role may not", body = hendu_service::openapi::ErrorBody), (status = 422, description = "A field that is not valid, named", body = hendu_service::openapi::ErrorBody),))]
async fn add(
    State(state): State<StationsState>,
    principal: Principal,
    body: bytes::Bytes,
) -> Result<Response, ApiError> {
    principal.require_admin(WHAT)?;
    let r: Registration = json_body(&body)?;
    let new = NewRadio::new(&r.name, &r.stream_url, r.location.as_deref())?
        .in_country(r.country.as_deref())?
        .owned_by(r.owner_id)
        .enabled(r.enabled);
    operator(&state.storage, new.owner).await?;
    let added = state.storage.relational.add_radio(&new).await?;
    let radio = added.record;
    tracing::info!(radio = radio.id, name = %radio.name, by = principal.user.id, created = added.created, "station registered");
    let status = if added.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        [(header::LOCATION, format!("/v1/radios/{}", radio.id))],
        Json(radio),
    )
        .into_response())
}

/// The stations `principal` may see: all for an administrator, its own for
/// an operator.
fn may_see(principal: &Principal, radio: &Radio) -> bool {
    principal.is_admin() || radio.owner == Some(principal.user.id)
}

#[utoipa::path(get, path = "/v1/radios", operation_id = "list_stations", tag = "stations", security(("token" = [])),
    responses((status = 200, description = "The stations the token's user may see", body = Vec<Radio>), (status = 401, description = "No live token", body = hendu_service::openapi::ErrorBody), (status = 403, description = "The token's role may not", body = hendu_service::openapi::ErrorBody),))]
async fn list(
    State(state): State<StationsState>,
    principal: Principal,
) -> Result<Json<Vec<Radio>>, ApiError> {
    principal.require(&[Role::Admin, Role::Operator], "list radio stations")?;
    let radios = state.storage.relational.radios().await?;
    Ok(Json(
        radios
            .into_iter()
            .filter(|r| may_see(&principal, r))
            .collect(),
    ))
}

async fn found(
    state: &StationsState,
    principal: &Principal,
    id: RadioId,
) -> Result<Radio, ApiError> {
    match state.storage.relational.radio(id).await? {
        // Someone else's station is as unknown as a missing one.
        Some(r) if may_see(principal, &r) => Ok(r),
        _ => Err(ApiError::not_found(format!("no radio station has id {id}"))),
    }
}

#[utoipa::path(get, path = "/v1/radios/{id}", operation_id = "get_station", tag = "stations", params(("id" = i64, Path, description = "The station's id")), security(("token" = [])),
    responses((status = 200, description = "The station", body = Radio), (status = 401, description = "No live token", body = hendu_service::openapi::ErrorBody), (status = 403, description = "The token's role may not", body = hendu_service::openapi::ErrorBody), (status = 404, description = "No such station, or another operator's", body = hendu_service::openapi::ErrorBody),))]
async fn one(
    State(state): State<StationsState>,
    principal: Principal,
    Path(id): Path<RadioId>,
) -> Result<Json<Radio>, ApiError> {
    principal.require(&[Role::Admin, Role::Operator], "see radio stations")?;
    Ok(Json(found(&state, &principal, id).await?))
}

#[utoipa::path(patch, path = "/v1/radios/{id}", operation_id = "change_station", tag = "stations", params(("id" = i64, Path, description = "The station's id")), request_body = Change, security(("token" = [])),
    responses((status = 200, description = "The station as changed", body = Radio),
        (status = 400, description = "Not JSON of this shape (`invalid_json`)", body = hendu_service::openapi::ErrorBody), (status = 401, description = "No live token", body = hendu_service::openapi::ErrorBody), (status = 403, description = "The token's role may not", body = hendu_service::openapi::ErrorBody), (status = 404, description = "No such station, or another operator's", body = hendu_service::openapi::ErrorBody), (status = 422, description = "A field that is not valid, named", body = hendu_service::openapi::ErrorBody),))]
async fn change(
    State(state): State<StationsState>,
    principal: Principal,
    Path(id): Path<RadioId>,
    body: bytes::Bytes,
) -> Result<Json<Radio>, ApiError> {
    principal.require_admin(WHAT)?;
    let change: Change = json_body(&body)?;
    let current = found(&state, &principal, id).await?;
    let name = change.name.unwrap_or(current.name.clone());
    let url = change.stream_url.unwrap_or(current.stream_url.clone());
    let location = change.location.apply(current.location.clone());
    let country = change.country.apply(current.country.clone());
    let new = NewRadio::new(&name, &url, location.as_deref())?
        .in_country(country.as_deref())?
        .owned_by(change.owner_id.apply(current.owner))
        .enabled(change.enabled.unwrap_or(current.enabled));
    operator(&state.storage, new.owner).await?;
    let updated = state
        .storage
        .relational
        .update_radio(id, &new)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no radio station has id {id}")))?;
    tracing::info!(
        radio = id,
        by = principal.user.id,
        enabled = updated.enabled,
        "station changed"
    );
    Ok(Json(updated))
}

#[utoipa::path(delete, path = "/v1/radios/{id}", operation_id = "delete_station", tag = "stations", params(("id" = i64, Path, description = "The station's id")), security(("token" = [])),
    responses((status = 204, description = "Deleted; no longer listened to"),
        (status = 409, description = "It has plays: disable it instead", body = hendu_service::openapi::ErrorBody), (status = 401, description = "No live token", body = hendu_service::openapi::ErrorBody), (status = 403, description = "The token's role may not", body = hendu_service::openapi::ErrorBody), (status = 404, description = "No such station, or another operator's", body = hendu_service::openapi::ErrorBody),))]
async fn remove(
    State(state): State<StationsState>,
    principal: Principal,
    Path(id): Path<RadioId>,
) -> Result<StatusCode, ApiError> {
    principal.require_admin(WHAT)?;
    if state.storage.relational.delete_radio(id).await? {
        tracing::info!(radio = id, by = principal.user.id, "station deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no radio station has id {id}")))
    }
}

/// A station's health as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    pub radio_id: RadioId,
    pub name: String,
    pub enabled: bool,
    /// `disabled` for a disabled station; `null` before any replica reported.
    pub state: Option<StationState>,
    /// True when no replica has reported for longer than the lease: nobody
    /// listens (all replicas down, or all full).
    pub stale: bool,
    /// What the listening replica last wrote.
    pub status: Option<RadioStatus>,
}

fn health_of(
    radio: Radio,
    status: Option<RadioStatus>,
    stale_after: std::time::Duration,
) -> Health {
    let now = OffsetDateTime::now_utc();
    let stale = radio.enabled
        && status
            .as_ref()
            .is_none_or(|s| (now - s.updated_at).unsigned_abs() > stale_after);
    let state = if radio.enabled {
        status.as_ref().map(|s| s.state)
    } else {
        Some(StationState::Disabled)
    };
    Health {
        radio_id: radio.id,
        name: radio.name,
        enabled: radio.enabled,
        state,
        stale,
        status,
    }
}

#[utoipa::path(get, path = "/v1/radios/health", operation_id = "list_station_health", tag = "stations", security(("token" = [])),
    responses((status = 200, description = "Each station's state as its listener last reported it", body = Vec<Health>), (status = 401, description = "No live token", body = hendu_service::openapi::ErrorBody), (status = 403, description = "The token's role may not", body = hendu_service::openapi::ErrorBody),))]
async fn health_all(
    State(state): State<StationsState>,
    principal: Principal,
) -> Result<Json<Vec<Health>>, ApiError> {
    principal.require(&[Role::Admin, Role::Operator], "see radio stations")?;
    let radios = state.storage.relational.radios().await?;
    let mut statuses: std::collections::HashMap<RadioId, RadioStatus> = state
        .storage
        .relational
        .radio_statuses()
        .await?
        .into_iter()
        .map(|s| (s.radio_id, s))
        .collect();
    Ok(Json(
        radios
            .into_iter()
            .filter(|r| may_see(&principal, r))
            .map(|r| {
                let status = statuses.remove(&r.id);
                health_of(r, status, state.stale_after)
            })
            .collect(),
    ))
}

#[utoipa::path(get, path = "/v1/radios/{id}/health", operation_id = "get_station_health", tag = "stations", params(("id" = i64, Path, description = "The station's id")), security(("token" = [])),
    responses((status = 200, description = "The station's state", body = Health), (status = 401, description = "No live token", body = hendu_service::openapi::ErrorBody), (status = 403, description = "The token's role may not", body = hendu_service::openapi::ErrorBody), (status = 404, description = "No such station, or another operator's", body = hendu_service::openapi::ErrorBody),))]
async fn health_one(
    State(state): State<StationsState>,
    principal: Principal,
    Path(id): Path<RadioId>,
) -> Result<Json<Health>, ApiError> {
    principal.require(&[Role::Admin, Role::Operator], "see radio stations")?;
    let radio = found(&state, &principal, id).await?;
    let status = state
        .storage
        .relational
        .radio_statuses()
        .await?
        .into_iter()
        .find(|s| s.radio_id == id);
    Ok(Json(health_of(radio, status, state.stale_after)))
}
