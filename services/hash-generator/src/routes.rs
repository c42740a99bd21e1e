//! The API of the hash-generator.

use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hendu_service::ApiError;
use hendu_storage::model::{Music, MusicId, MusicState};
use serde::Deserialize;
use serde_json::json;

use crate::AppState;
use crate::ingest;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/v1/musics",
            post(upload).layer(DefaultBodyLimit::max(state.max_upload)),
        )
        .route("/v1/musics", get(list))
        .route("/v1/musics/{id}", get(one).delete(remove))
        .with_state(state)
}

#[tracing::instrument(skip_all)]
async fn upload(State(state): State<AppState>, form: Multipart) -> Result<Response, ApiError> {
    let upload = ingest::receive(form).await?;
    let stored = ingest::store(&state.storage, upload).await?;
    let status = if stored.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let location = format!("/v1/musics/{}", stored.record.id);
    Ok((status, [(header::LOCATION, location)], Json(stored.record)).into_response())
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

async fn list(
    State(state): State<AppState>,
    Query(page): Query<Page>,
) -> Result<Response, ApiError> {
    if page.limit == 0 || page.limit > 1000 {
        return Err(ApiError::bad_request(
            "invalid_input",
            "limit must be within 1..=1000",
        ));
    }
    let musics = state
        .storage
        .relational
        .musics(MusicState::Ready, page.after, page.limit)
        .await?;
    let next = (musics.len() == page.limit as usize).then(|| musics.last().map(|m| m.id));
    Ok(Json(json!({ "musics": musics, "next_after": next.flatten() })).into_response())
}

async fn ready_music(state: &AppState, id: MusicId) -> Result<Music, ApiError> {
    state
        .storage
        .relational
        .music(id)
        .await?
        .filter(|m| m.state == MusicState::Ready)
        .ok_or_else(|| ApiError::not_found(format!("music {id} does not exist")))
}

async fn one(
    State(state): State<AppState>,
    Path(id): Path<MusicId>,
) -> Result<Json<Music>, ApiError> {
    Ok(Json(ready_music(&state, id).await?))
}

async fn remove(
    State(state): State<AppState>,
    Path(id): Path<MusicId>,
) -> Result<StatusCode, ApiError> {
    state.storage.delete_music(id).await?;
    Ok(StatusCode::NO_CONTENT)
}
