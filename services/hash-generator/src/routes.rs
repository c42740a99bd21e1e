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
use hendu_storage::model::{Claim, ClaimState, Music, MusicId, MusicState, Role};
use serde::Deserialize;

use hendu_service::catalogue::{self, Stored};

use crate::AppState;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/v1/musics",
            post(upload).layer(DefaultBodyLimit::max(state.catalogue.max_upload)),
        )
        .route("/v1/musics", get(list))
        .route("/v1/musics/{id}", get(one).delete(remove))
        .route("/v1/claims", get(claims))
        .route("/v1/claims/{id}", post(resolve))
        .with_state(state)
}

const CATALOGUE: &[Role] = &[Role::Musician, Role::Admin];

/// The catalogue API's part of the OpenAPI document.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    paths(upload, list, one, remove, claims, resolve),
    components(schemas(UploadForm, MusicsPage, Music, MusicState, ClaimsPage, Claim, ClaimState, Decision, ClaimAnswer)),
    tags((name = "tracks", description = "The catalogue: tracks and ownership claims"))
)]
pub struct Api;

/// The form of an upload (`multipart/form-data`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Read field by field from the stream, documented here.
struct UploadForm {
    /// The audio: MP3, AAC, FLAC, Ogg Vorbis or Opus, WAV, AIFF, ALAC, ...
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    /// Default: the file's name without its extension.
    title: Option<String>,
    artist: Option<String>,
    /// The recording's ISRC (`PYA012400001`, dashes allowed).
    isrc: Option<String>,
    /// Administrators only: the musician the track belongs to.
    owner_id: Option<i64>,
}

/// A page of tracks.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct MusicsPage {
    musics: Vec<Music>,
    /// The `after` of the next page, if there may be one.
    next_after: Option<MusicId>,
}

/// Pending claims.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct ClaimsPage {
    claims: Vec<Claim>,
}

/// A settled claim.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct ClaimAnswer {
    claim: Claim,
}

#[utoipa::path(post, path = "/v1/musics", operation_id = "upload_track", tag = "tracks",
    request_body(content = UploadForm, content_type = "multipart/form-data"), security(("token" = [])),
    responses((status = 201, description = "Fingerprinted and stored; recognised from now on", body = Music),
        (status = 200, description = "The same owner's audio, already stored", body = Music),
        (status = 400, description = "A request that cannot be read, named", body = hendu_service::openapi::ErrorBody), (status = 401, description = "No live token", body = hendu_service::openapi::ErrorBody), (status = 403, description = "The token's role may not", body = hendu_service::openapi::ErrorBody),
        (status = 409, description = "Another owner's audio: a claim was recorded", body = hendu_service::openapi::ErrorBody),
        (status = 413, description = "Larger than HENDU_MAX_UPLOAD_BYTES", body = hendu_service::openapi::ErrorBody),
        (status = 422, description = "Not audio this build decodes, longer than HENDU_MAX_TRACK_S, or a field that is not valid", body = hendu_service::openapi::ErrorBody),
        (status = 503, description = "At capacity (Retry-After) or a store does not answer", body = hendu_service::openapi::ErrorBody)))]
#[tracing::instrument(skip_all, fields(user = principal.user.id))]
async fn upload(
    State(state): State<AppState>,
    principal: Principal,
    form: Multipart,
) -> Result<Response, ApiError> {
    principal.require(CATALOGUE, "upload tracks")?;
    let catalogue = &state.catalogue;
    let upload = catalogue::receive(form, &catalogue.spool).await?;
    match catalogue::store(catalogue, upload, (&principal).into()).await? {
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

#[utoipa::path(get, path = "/v1/musics", operation_id = "list_tracks", tag = "tracks",
    params(("after" = Option<i64>, Query, description = "Tracks after this id (default 0)"),
        ("limit" = Option<u32>, Query, description = "1 to 1000 (default 100)")), security(("token" = [])),
    responses((status = 200, description = "The token's user's tracks (an administrator's: all)", body = MusicsPage), (status = 400, description = "A request that cannot be read, named", body = hendu_service::openapi::ErrorBody), (status = 401, description = "No live token", body = hendu_service::openapi::ErrorBody), (status = 403, description = "The token's role may not", body = hendu_service::openapi::ErrorBody),))]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(page): Query<Page>,
) -> Result<Response, ApiError> {
    principal.require(CATALOGUE, "list tracks")?;
    check_page(&page)?;
    let relational = &state.catalogue.storage.relational;
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
    Ok(Json(MusicsPage {
        musics,
        next_after: next.flatten(),
    })
    .into_response())
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
        .catalogue
        .storage
        .relational
        .music(id)
        .await?
        .filter(|m| m.state == MusicState::Ready)
        .filter(|m| principal.is_admin() || m.owner == Some(principal.user.id))
        .ok_or_else(|| ApiError::not_found(format!("music {id} does not exist")))
}

#[utoipa::path(get, path = "/v1/musics/{id}", operation_id = "get_track", tag = "tracks", params(("id" = i64, Path, description = "The track's id")), security(("token" = [])),
    responses((status = 200, description = "The track", body = Music), (status = 401, description = "No live token", body = hendu_service::openapi::ErrorBody), (status = 403, description = "The token's role may not", body = hendu_service::openapi::ErrorBody), (status = 404, description = "No such track, or another owner's", body = hendu_service::openapi::ErrorBody),))]
async fn one(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<MusicId>,
) -> Result<Json<Music>, ApiError> {
    Ok(Json(visible_music(&state, &principal, id).await?))
}

#[utoipa::path(delete, path = "/v1/musics/{id}", operation_id = "delete_track", tag = "tracks", params(("id" = i64, Path, description = "The track's id")), security(("token" = [])),
    responses((status = 204, description = "No longer recognised; its plays stay"), (status = 401, description = "No live token", body = hendu_service::openapi::ErrorBody), (status = 403, description = "The token's role may not", body = hendu_service::openapi::ErrorBody), (status = 404, description = "No such track, or another owner's", body = hendu_service::openapi::ErrorBody),))]
async fn remove(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<MusicId>,
) -> Result<StatusCode, ApiError> {
    visible_music(&state, &principal, id).await?;
    state.catalogue.storage.delete_music(id).await?;
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

#[utoipa::path(get, path = "/v1/claims", operation_id = "list_claims", tag = "tracks",
    params(("after" = Option<i64>, Query, description = "Claims after this id (default 0)"),
        ("limit" = Option<u32>, Query, description = "1 to 1000 (default 100)")), security(("token" = [])),
    responses((status = 200, description = "Pending claims (administrators)", body = ClaimsPage), (status = 400, description = "A request that cannot be read, named", body = hendu_service::openapi::ErrorBody), (status = 401, description = "No live token", body = hendu_service::openapi::ErrorBody), (status = 403, description = "The token's role may not", body = hendu_service::openapi::ErrorBody),))]
async fn claims(
    State(state): State<AppState>,
    principal: Principal,
    Query(q): Query<ClaimsQuery>,
) -> Result<Json<ClaimsPage>, ApiError> {
    principal.require_admin("see claims")?;
    check_page(&Page {
        after: q.after,
        limit: q.limit,
    })?;
    let claims = state
        .catalogue
        .storage
        .relational
        .claims(ClaimState::Pending, q.after, q.limit)
        .await?;
    Ok(Json(ClaimsPage { claims }))
}

/// An administrator's decision on a claim.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Decision {
    grant: bool,
}

#[utoipa::path(post, path = "/v1/claims/{id}", operation_id = "settle_claim", tag = "tracks",
    params(("id" = i64, Path, description = "The claim's id")), request_body = Decision, security(("token" = [])),
    responses((status = 200, description = "Settled: granted, the track changes owner", body = ClaimAnswer), (status = 400, description = "A request that cannot be read, named", body = hendu_service::openapi::ErrorBody), (status = 401, description = "No live token", body = hendu_service::openapi::ErrorBody), (status = 403, description = "The token's role may not", body = hendu_service::openapi::ErrorBody),
        (status = 404, description = "No such pending claim", body = hendu_service::openapi::ErrorBody)))]
async fn resolve(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<i64>,
    body: bytes::Bytes,
) -> Result<Json<ClaimAnswer>, ApiError> {
    principal.require_admin("settle claims")?;
    let decision: Decision = json_body(&body)?;
    let claim = state
        .catalogue
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
    Ok(Json(ClaimAnswer { claim }))
}
