//! The API of the hash-generator. Every route needs a token: musicians see
//! and delete only their own tracks (another's is "not found"),
//! administrators all of them; operators none.

use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hendu_service::accounts::json_body;
use hendu_service::{ApiError, Principal};
use hendu_storage::model::{ClaimState, Music, MusicId, MusicState, Role};
use serde::Deserialize;
use serde_json::json;

use crate::AppState;
use crate::ingest::{self, Stored};

pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/v1/musics",
            post(upload).layer(DefaultBodyLimit::max(state.max_upload)),
        )
        .route("/v1/musics", get(list))
        .route("/v1/musics/{id}", get(one).delete(remove))
        .route("/v1/claims", get(claims))
        .route("/v1/claims/{id}", post(resolve))
        .with_state(state)
}

const CATALOGUE: &[Role] = &[Role::Musician, Role::Admin];

#[tracing::instrument(skip_all, fields(user = principal.user.id))]
async fn upload(
    State(state): State<AppState>,
    principal: Principal,
    form: Multipart,
) -> Result<Response, ApiError> {
    principal.require(CATALOGUE, "upload tracks")?;
    let upload = ingest::receive(form, &state.spool).await?;
    match ingest::store(&state, upload, &principal).await? {
        Stored::Music(stored) => {
            let status = if stored.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let location = format!("/v1/musics/{}", stored.record.id);
            Ok((status, [(header::LOCATION, location)], Json(stored.record)).into_response())
        }
        Stored::Claimed => Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_claimed",
            "this audio is already in the catalogue under another owner; \
             your claim was recorded for an administrator",
        )),
    }
}

#[derive(Debug, Deserialize)]
struct Page {
    #[serde(default)]
    after: MusicId,
    #[serde(default = "default_limit")]
    limit: u32,
}

fn default_limit() -> u32 {
    100
}

fn check_page(page: &Page) -> Result<(), ApiError> {
    if page.limit == 0 || page.limit > 1000 {
        return Err(ApiError::bad_request(
            "invalid_input",
            "limit must be within 1..=1000",
        ));
    }
    Ok(())
}

async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(page): Query<Page>,
) -> Result<Response, ApiError> {
    principal.require(CATALOGUE, "list tracks")?;
    check_page(&page)?;
    let relational = &state.storage.relational;
    let musics = if principal.is_admin() {
        relational
            .musics(MusicState::Ready, page.after, page.limit)
            .await?
    } else {
        relational
            .musics_owned(principal.user.id, MusicState::Ready, page.after, page.limit)
            .await?
    };
    let next = (musics.len() == page.limit as usize).then(|| musics.last().map(|m| m.id));
    Ok(Json(json!({ "musics": musics, "next_after": next.flatten() })).into_response())
}

/// A ready music the caller may see; anything else is "not found", so ids
/// reveal nothing of other owners' tracks.
async fn visible_music(
    state: &AppState,
    principal: &Principal,
    id: MusicId,
) -> Result<Music, ApiError> {
    principal.require(CATALOGUE, "see tracks")?;
    state
        .storage
        .relational
        .music(id)
        .await?
        .filter(|m| m.state == MusicState::Ready)
        .filter(|m| principal.is_admin() || m.owner == Some(principal.user.id))
        .ok_or_else(|| ApiError::not_found(format!("music {id} does not exist")))
}

async fn one(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<MusicId>,
) -> Result<Json<Music>, ApiError> {
    Ok(Json(visible_music(&state, &principal, id).await?))
}

async fn remove(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<MusicId>,
) -> Result<StatusCode, ApiError> {
    visible_music(&state, &principal, id).await?;
    state.storage.delete_music(id).await?;
    tracing::info!(music = id, by = principal.user.id, "music deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct ClaimsQuery {
    #[serde(default)]
    after: i64,
    #[serde(default = "default_limit")]
    limit: u32,
}

async fn claims(
    State(state): State<AppState>,
    principal: Principal,
    Query(q): Query<ClaimsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    principal.require_admin("see claims")?;
    check_page(&Page {
        after: q.after,
        limit: q.limit,
    })?;
    let claims = state
        .storage
        .relational
        .claims(ClaimState::Pending, q.after, q.limit)
        .await?;
    Ok(Json(json!({ "claims": claims })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Decision {
    grant: bool,
}

async fn resolve(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<i64>,
    body: bytes::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    principal.require_admin("settle claims")?;
    let decision: Decision = json_body(&body)?;
    let claim = state
        .storage
        .relational
        .resolve_claim(id, decision.grant)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no pending claim {id}")))?;
    tracing::info!(
        claim = id,
        grant = decision.grant,
        by = principal.user.id,
        "claim settled"
    );
    Ok(Json(json!({ "claim": claim })))
}
