//! What the plays table, its CSV, the dashboard and the reports share: the
//! filters as the query string has them, the choices the filter form offers,
//! and files to save.

use axum::response::{IntoResponse, Response};
use hendu_storage::model::MusicState;
use hendu_storage::model::Source;
use hendu_storage::queries::{Grouping, PlayFilter, PlayScope, PlayTotal};
use serde::Deserialize;
use time::{OffsetDateTime, Time};

use crate::Web;
use crate::error::PageError;
use crate::view::{View, Viewer, parse_day};

/// A file to save: its type, its name, never cached.
pub fn download(body: axum::body::Body, kind: &'static str, name: &str) -> Response {
    let disposition =
        axum::http::HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
            .unwrap_or_else(|_| axum::http::HeaderValue::from_static("attachment"));
    let mut r = body.into_response();
    let headers = r.headers_mut();
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static(kind),
    );
    headers.insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    headers.insert(axum::http::header::CONTENT_DISPOSITION, disposition);
    r
}

/// The filters of the plays table, its CSV and the dashboard, as the
/// query string has them (an empty field does not filter).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Filters {
    pub track: Option<String>,
    pub source: Option<String>,
    pub location: Option<String>,
    /// First day, `YYYY-MM-DD`, in the viewer's zone.
    pub from: Option<String>,
    /// Last day, included.
    pub to: Option<String>,
}

fn set(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// `radio:3` or `device:7`.
pub fn parse_source(s: &str) -> Option<Source> {
    let (kind, id) = s.split_once(':')?;
    let id = id.parse().ok()?;
    match kind {
        "radio" => Some(Source::Radio(id)),
        "device" => Some(Source::Device(id)),
        _ => None,
    }
}

pub fn source_key(source: Source) -> String {
    format!("{}:{}", source.kind(), source.id())
}

/// Local midnight of `day` in the viewer's zone.
pub fn start_of(view: View, day: time::Date) -> OffsetDateTime {
    day.with_time(Time::MIDNIGHT).assume_offset(view.zone)
}

impl Filters {
    /// The store's filter for `viewer`.
    ///
    /// # Errors
    /// [`PageError::BadInput`] naming the field that is not understood.
    pub fn to_filter(&self, view: View, viewer: &Viewer) -> Result<PlayFilter, PageError> {
        let bad = |field: &str| {
            PageError::BadInput(format!(
                "{} {field}",
                view.t("Cannot read the filter", "No se entiende el filtro")
            ))
        };
        let mut f = PlayFilter::scoped(viewer.scope());
        if let Some(t) = set(&self.track) {
            f.music = Some(t.parse().map_err(|_| bad("track"))?);
        }
        if let Some(s) = set(&self.source) {
            f.source = Some(parse_source(s).ok_or_else(|| bad("source"))?);
        }
        f.location = set(&self.location).map(str::to_owned);
        if let Some(d) = set(&self.from) {
            f.from = Some(start_of(view, parse_day(d).ok_or_else(|| bad("from"))?));
        }
        if let Some(d) = set(&self.to) {
            let day = parse_day(d).ok_or_else(|| bad("to"))?;
            f.to = Some(start_of(view, day.next_day().ok_or_else(|| bad("to"))?));
        }
        Ok(f)
    }

    /// These filters as a query string (for links that keep them).
    pub fn query(&self) -> String {
        let mut out = Vec::new();
        for (k, v) in [
            ("track", &self.track),
            ("source", &self.source),
            ("location", &self.location),
            ("from", &self.from),
            ("to", &self.to),
        ] {
            if let Some(v) = set(v) {
                out.push(format!("{k}={}", crate::session::encode(v)));
            }
        }
        out.join("&")
    }
}

/// What the filter form offers: the viewer's tracks, sources and locations.
#[derive(Debug, Default)]
pub struct Choices {
    pub tracks: Vec<PlayTotal>,
    pub sources: Vec<PlayTotal>,
    pub locations: Vec<PlayTotal>,
}

/// Most entries a filter's list offers.
const CHOICES: u32 = 500;

impl Choices {
    pub async fn of(web: &Web, viewer: &Viewer) -> Result<Self, PageError> {
        let all = PlayFilter::scoped(viewer.scope());
        let rel = &web.storage.relational;
        // A musician's tracks and the catalogue are in `musics`, read by
        // index; an operator's tracks are the ones heard on their stations.
        let catalogue = match viewer.scope() {
            PlayScope::OwnedBy(owner) => Some(
                rel.musics_owned(owner, MusicState::Ready, 0, CHOICES)
                    .await?,
            ),
            PlayScope::Everything => Some(rel.musics(MusicState::Ready, 0, CHOICES).await?),
            PlayScope::OperatedBy(_) => None,
        };
        let tracks = match catalogue {
            Some(musics) => musics
                .into_iter()
                .map(|m| PlayTotal {
                    key: m.id.to_string(),
                    label: m.title,
                    plays: 0,
                    seconds: 0.0,
                    artist: m.artist,
                    isrc: m.isrc,
                })
                .collect(),
            None => rel.play_totals(&all, Grouping::Track, 0, CHOICES).await?,
        };
        // An administrator's sources are every station and device, and an
        // operator's their stations and devices (events): read from their
        // tables, not from the plays. A musician's are only those their tracks were heard on.
        let choice = |key: String, label: &str| PlayTotal {
            key,
            label: label.to_owned(),
            plays: 0,
            seconds: 0.0,
            artist: None,
            isrc: None,
        };
        let listed = match viewer.scope() {
            PlayScope::OwnedBy(_) => None,
            PlayScope::Everything => {
                let mut sources = Vec::new();
                for r in rel.radios().await? {
                    sources.push((Source::Radio(r.id), r.name, r.location));
                }
                for d in rel.devices(0, CHOICES).await? {
                    sources.push((Source::Device(d.id), d.name, d.location));
                }
                Some(sources)
            }
            PlayScope::OperatedBy(operator) => {
                let mut sources: Vec<_> = rel
                    .radios()
                    .await?
                    .into_iter()
                    .filter(|r| r.owner == Some(operator))
                    .map(|r| (Source::Radio(r.id), r.name, r.location))
                    .collect();
                for d in rel.devices_owned(operator, 0, CHOICES).await? {
                    sources.push((Source::Device(d.id), d.name, d.location));
                }
                Some(sources)
            }
        };
        let (sources, locations) = match listed {
            Some(listed) => {
                let mut places: Vec<String> =
                    listed.iter().filter_map(|(_, _, l)| l.clone()).collect();
                places.sort();
                places.dedup();
                (
                    listed
                        .iter()
                        .take(CHOICES as usize)
                        .map(|(s, name, _)| choice(source_key(*s), name))
                        .collect(),
                    places.iter().map(|l| choice(l.clone(), l)).collect(),
                )
            }
            None => (
                rel.play_totals(&all, Grouping::Source, 0, CHOICES).await?,
                rel.play_totals(&all, Grouping::Location, 0, CHOICES)
                    .await?
                    .into_iter()
                    .filter(|t| !t.key.is_empty())
                    .collect(),
            ),
        };
        Ok(Self {
            tracks,
            sources,
            locations,
        })
    }
}
