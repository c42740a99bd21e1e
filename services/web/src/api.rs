//! The JSON API behind the pages, for tools: the plays a token's user may
//! see (filtered, sorted, paged), one play with its evidence and disputes,
//! and usage reports. The same queries as the pages, with the same scope
//! (a musician's tracks, an operator's stations, an administrator's all);
//! times are RFC 3339 instants. Tracks and stations are the
//! hash-generator's and the radio monitor's (`/v1/musics`, `/v1/radios`).

use axum::extract::{Path, Query, State};
use axum::{Json, Router, routing::get};
use hendu_service::openapi::ErrorBody;
use hendu_service::{ApiError, Principal};
use hendu_storage::model::{MusicId, PlayId};
use hendu_storage::queries::{Grouping, PlayFilter, PlayOrder, PlayPage, PlayRow, PlayScope};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::Web;
use crate::error::PageError;
use crate::pages::filters::{parse_source, source_key};
use crate::pages::play::{evidence, visible};

/// Most plays per answer.
pub const MAX_LIMIT: u32 = 1000;
/// Tracks and sources in a report.
const REPORT_ROWS: u32 = 10_000;

pub fn router(web: Web) -> Router {
    Router::new()
        .route("/v1/plays", get(plays))
        .route("/v1/plays/{id}", get(play))
        .route("/v1/reports", get(report))
        .with_state(web)
}

/// This module's part of the OpenAPI document.
#[derive(Debug, OpenApi)]
#[openapi(
    paths(plays, play, report),
    components(schemas(
        PlayJson, SourceJson, PlaysPage, PlayDetail, SampleJson, DisputeJson, ReportJson,
        ReportLine
    )),
    tags((name = "plays", description = "Plays and usage reports"))
)]
pub struct Api;

impl From<PageError> for ApiError {
    fn from(e: PageError) -> Self {
        match e {
            PageError::NotFound => ApiError::not_found("no such play"),
            PageError::BadInput(what) => ApiError::bad_request("invalid_input", what),
            PageError::Api(e) => e,
            PageError::SignedOut | PageError::Csrf => {
                hendu_service::auth::unauthorized("unauthorized", "a token is needed")
            }
        }
    }
}

/// Where a play was heard.
#[derive(Debug, Serialize, ToSchema)]
pub struct SourceJson {
    /// `radio` or `device`.
    kind: &'static str,
    id: i64,
    /// The station's or device's name.
    name: String,
    /// `radio:3`: the value of the `source` filter.
    key: String,
}

/// A play: a track heard on a source from `started_at` to `ended_at`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlayJson {
    id: PlayId,
    music_id: MusicId,
    title: String,
    artist: Option<String>,
    isrc: Option<String>,
    source: SourceJson,
    location: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    ended_at: OffsetDateTime,
    /// Time played, seconds.
    duration_s: f64,
    /// The filter's score of the play, within [0, 1].
    confidence: f64,
}

impl From<PlayRow> for PlayJson {
    fn from(row: PlayRow) -> Self {
        let p = row.play;
        Self {
            id: p.id,
            music_id: p.music_id,
            title: row.title,
            artist: row.artist,
            isrc: row.isrc,
            source: SourceJson {
                kind: p.source.kind(),
                id: p.source.id(),
                name: row.source_name,
                key: source_key(p.source),
            },
            location: p.location,
            started_at: p.started_at,
            ended_at: p.ended_at,
            duration_s: (p.ended_at - p.started_at).as_seconds_f64(),
            confidence: p.score,
        }
    }
}

/// The filters of the plays and of reports. An empty value does not filter.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PlaysQuery {
    /// A track's id (`music_id`).
    track: Option<String>,
    /// `radio:<id>` or `device:<id>`.
    source: Option<String>,
    /// Exactly this location.
    location: Option<String>,
    /// Plays that started at or after this instant (RFC 3339).
    from: Option<String>,
    /// Plays that started before this instant (RFC 3339).
    to: Option<String>,
    /// `start` (default), `track`, `source`, `location`, `duration` or `recorded`.
    sort: Option<String>,
    /// `desc` (default) or `asc`.
    dir: Option<String>,
    /// Plays to skip (default 0).
    offset: Option<u32>,
    /// Plays to answer, 1 to 1000 (default 100).
    limit: Option<u32>,
}

fn set(v: Option<&String>) -> Option<&str> {
    v.map(|s| s.trim()).filter(|s| !s.is_empty())
}

fn instant(v: Option<&String>, name: &str) -> Result<Option<OffsetDateTime>, ApiError> {
    set(v)
        .map(|s| {
            OffsetDateTime::parse(s, &Rfc3339).map_err(|_| {
                ApiError::bad_request(
                    "invalid_input",
                    format!("`{name}` must be an RFC 3339 instant, like 2026-11-01T00:00:00Z"),
                )
            })
        })
        .transpose()
}

impl PlaysQuery {
    fn filter(&self, scope: PlayScope) -> Result<PlayFilter, ApiError> {
        let mut f = PlayFilter::scoped(scope);
        if let Some(t) = set(self.track.as_ref()) {
            f.music = Some(t.parse().map_err(|_| {
                ApiError::bad_request("invalid_input", "`track` must be a track's id")
            })?);
        }
        if let Some(s) = set(self.source.as_ref()) {
            f.source = Some(parse_source(s).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_input",
                    "`source` must be radio:<id> or device:<id>",
                )
            })?);
        }
        f.location = set(self.location.as_ref()).map(str::to_owned);
        f.from = instant(self.from.as_ref(), "from")?;
        f.to = instant(self.to.as_ref(), "to")?;
        Ok(f)
    }

    fn page(&self) -> Result<PlayPage, ApiError> {
        let order = match set(self.sort.as_ref()).unwrap_or("start") {
            "start" => PlayOrder::Started,
            "track" => PlayOrder::Track,
            "source" => PlayOrder::Source,
            "location" => PlayOrder::Location,
            "duration" => PlayOrder::Duration,
            "recorded" => PlayOrder::Recorded,
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_input",
                    "`sort` must be start, track, source, location, duration or recorded",
                ));
            }
        };
        let descending = match set(self.dir.as_ref()).unwrap_or("desc") {
            "desc" => true,
            "asc" => false,
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_input",
                    "`dir` must be asc or desc",
                ));
            }
        };
        let limit = self.limit.unwrap_or(100);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(ApiError::bad_request(
                "invalid_input",
                format!("`limit` must be within 1..={MAX_LIMIT}"),
            ));
        }
        Ok(PlayPage {
            order,
            descending,
            offset: self.offset.unwrap_or(0),
            limit,
        })
    }
}

/// A page of plays.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlaysPage {
    plays: Vec<PlayJson>,
    /// Plays the filters select, in all.
    total: u64,
    /// The `offset` of the next page, if there is one.
    next_offset: Option<u32>,
}

type QueryOf = Result<Query<PlaysQuery>, axum::extract::rejection::QueryRejection>;

/// The query string, and the filter it makes within the caller's scope.
fn scoped(query: QueryOf, principal: &Principal) -> Result<(PlaysQuery, PlayFilter), ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_input", e.body_text()))?;
    let filter = q.filter(PlayScope::of(principal.user.id, principal.role))?;
    Ok((q, filter))
}

/// The plays the token's user may see.
#[utoipa::path(
    get, path = "/v1/plays", operation_id = "list_plays", tag = "plays",
    params(PlaysQuery),
    security(("token" = [])),
    responses(
        (status = 200, description = "A page of plays", body = PlaysPage),
        (status = 400, description = "A filter that cannot be read, named", body = ErrorBody),
        (status = 401, description = "No live token", body = ErrorBody),
        (status = 503, description = "A store does not answer", body = ErrorBody),
    )
)]
pub async fn plays(
    State(web): State<Web>,
    principal: Principal,
    query: QueryOf,
) -> Result<Json<PlaysPage>, ApiError> {
    let (q, filter) = scoped(query, &principal)?;
    let page = q.page()?;
    let rel = &web.storage.relational;
    let total = rel.count_plays(&filter).await?;
    let rows = rel.play_rows(&filter, page).await?;
    let end = u64::from(page.offset) + rows.len() as u64;
    let next_offset = (end < total).then(|| u32::try_from(end).ok()).flatten();
    Ok(Json(PlaysPage {
        plays: rows.into_iter().map(PlayJson::from).collect(),
        total,
        next_offset,
    }))
}

/// A sample of the play's source that overlaps it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SampleJson {
    id: String,
    #[serde(with = "time::serde::rfc3339")]
    captured_at: OffsetDateTime,
    duration_s: f64,
    /// A station's stream title at the time: a hint, never proof.
    stream_title: Option<String>,
}

/// A dispute of the play.
#[derive(Debug, Serialize, ToSchema)]
pub struct DisputeJson {
    id: i64,
    reason: String,
    /// `open`, `upheld` or `rejected`.
    state: &'static str,
}

/// A play with its evidence and disputes.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlayDetail {
    play: PlayJson,
    evidence: Vec<SampleJson>,
    disputes: Vec<DisputeJson>,
}

/// One play, if the token's user may see it.
#[utoipa::path(
    get, path = "/v1/plays/{id}", operation_id = "get_play", tag = "plays",
    params(("id" = i64, Path, description = "The play's id")),
    security(("token" = [])),
    responses(
        (status = 200, description = "The play, its evidence and disputes", body = PlayDetail),
        (status = 401, description = "No live token", body = ErrorBody),
        (status = 404, description = "No such play, or another owner's", body = ErrorBody),
        (status = 503, description = "A store does not answer", body = ErrorBody),
    )
)]
pub async fn play(
    State(web): State<Web>,
    principal: Principal,
    id: Result<Path<i64>, axum::extract::rejection::PathRejection>,
) -> Result<Json<PlayDetail>, ApiError> {
    let Path(id) = id.map_err(|_| ApiError::not_found("no such play"))?;
    let row = visible(&web, PlayScope::of(principal.user.id, principal.role), id).await?;
    let samples = evidence(&web, &row.play).await?;
    let mut disputes = web.storage.relational.disputes_of(row.play.id).await?;
    // A musician sees their own disputes; others see all of the play's.
    if principal.role == hendu_storage::model::Role::Musician {
        disputes.retain(|d| d.user_id == principal.user.id);
    }
    Ok(Json(PlayDetail {
        play: row.into(),
        evidence: samples
            .into_iter()
            .map(|s| SampleJson {
                duration_s: f64::from(s.duration_ms) / 1000.0,
                id: s.id,
                captured_at: s.captured_at,
                stream_title: s.title,
            })
            .collect(),
        disputes: disputes
            .into_iter()
            .map(|d| DisputeJson {
                id: d.id,
                reason: d.reason,
                state: d.state.as_str(),
            })
            .collect(),
    }))
}

/// A line of a report: a track's or a source's plays.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReportLine {
    /// The music id, or the source's key (`radio:3`).
    key: String,
    /// The track's title, or the source's name.
    name: String,
    /// Of a track.
    artist: Option<String>,
    isrc: Option<String>,
    plays: u64,
    /// Time played, seconds.
    seconds: f64,
}

/// A usage report: the plays of a period (and source), by track and by
/// source, with their totals.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReportJson {
    #[serde(with = "time::serde::rfc3339::option")]
    from: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    to: Option<OffsetDateTime>,
    source: Option<String>,
    tracks: Vec<ReportLine>,
    sources: Vec<ReportLine>,
    plays: u64,
    seconds: f64,
}

/// A usage report over the plays the token's user may see.
#[utoipa::path(
    get, path = "/v1/reports", operation_id = "get_report", tag = "plays",
    params(
        ("source" = Option<String>, Query, description = "`radio:<id>` or `device:<id>`; all the user's sources if absent"),
        ("from" = Option<String>, Query, description = "Plays that started at or after this instant (RFC 3339)"),
        ("to" = Option<String>, Query, description = "Plays that started before this instant (RFC 3339)"),
    ),
    security(("token" = [])),
    responses(
        (status = 200, description = "The report", body = ReportJson),
        (status = 400, description = "A filter that cannot be read, named", body = ErrorBody),
        (status = 401, description = "No live token", body = ErrorBody),
        (status = 503, description = "A store does not answer", body = ErrorBody),
    )
)]
pub async fn report(
    State(web): State<Web>,
    principal: Principal,
    query: QueryOf,
) -> Result<Json<ReportJson>, ApiError> {
    let (_, filter) = scoped(query, &principal)?;
    let rel = &web.storage.relational;
    let line = |t: hendu_storage::queries::PlayTotal| ReportLine {
        key: t.key,
        name: t.label,
        artist: t.artist,
        isrc: t.isrc,
        plays: t.plays,
        seconds: t.seconds,
    };
    let tracks = rel
        .play_totals(&filter, Grouping::Track, 0, REPORT_ROWS)
        .await?;
    let sources = rel
        .play_totals(&filter, Grouping::Source, 0, u32::MAX)
        .await?;
    Ok(Json(ReportJson {
        from: filter.from,
        to: filter.to,
        source: filter.source.map(source_key),
        plays: sources.iter().map(|t| t.plays).sum(),
        seconds: sources.iter().map(|t| t.seconds).sum(),
        tracks: tracks.into_iter().map(line).collect(),
        sources: sources.into_iter().map(line).collect(),
    }))
}
