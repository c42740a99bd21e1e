//! The pages. Each is a plain HTML document with working links and forms;
//! the script only adds live rows.

pub mod account;
pub mod admin;
pub mod dashboard;
pub mod play;
pub mod plays;
pub mod reports;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use hendu_service::ApiError;
use hendu_storage::StorageError;
use hendu_storage::model::Source;
use hendu_storage::queries::{Grouping, PlayFilter, PlayTotal};
use maud::html;
use serde::Deserialize;
use time::{OffsetDateTime, Time};

use crate::Web;
use crate::session::Viewer;
use crate::view::{LANG_COOKIE, Lang, View, page, parse_day};

/// Why a page cannot be shown.
#[derive(Debug)]
pub enum PageError {
    /// No session (a form posted after it expired).
    SignedOut,
    /// A form without this session's token.
    Csrf,
    NotFound,
    /// A filter or form value that makes no sense, named.
    BadInput(String),
    Api(ApiError),
}

impl From<StorageError> for PageError {
    fn from(e: StorageError) -> Self {
        Self::Api(e.into())
    }
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

/// An error as a page (the status is the same an API would give).
pub fn error_page(view: View, viewer: Option<&Viewer>, e: PageError) -> Response {
    let (status, text) = match &e {
        PageError::SignedOut => (
            StatusCode::UNAUTHORIZED,
            view.t(
                "Your session has ended. Sign in again.",
                "Su sesión terminó. Vuelva a iniciar sesión.",
            )
            .to_owned(),
        ),
        PageError::Csrf => (
            StatusCode::FORBIDDEN,
            view.t(
                "This form has expired or did not come from this site. Go back, reload the page and send it again.",
                "Este formulario caducó o no vino de este sitio. Vuelva atrás, recargue la página y envíelo de nuevo.",
            )
            .to_owned(),
        ),
        PageError::NotFound => (
            StatusCode::NOT_FOUND,
            view.t("There is nothing here.", "No hay nada aquí.").to_owned(),
        ),
        PageError::BadInput(what) => (StatusCode::BAD_REQUEST, what.clone()),
        PageError::Api(e) => (e.status, e.message.clone()),
    };
    let body = html! {
        section.narrow {
            h1 { (status.as_u16()) " · " (status.canonical_reason().unwrap_or("")) }
            p.problem role="alert" { (text) }
            p {
                @if viewer.is_some() {
                    a href="/dashboard" { (view.t("Back to the dashboard", "Volver al panel")) }
                } @else {
                    a href="/sign-in" { (view.t("Sign in", "Iniciar sesión")) }
                }
            }
        }
    };
    let mut r = page(view, viewer, view.t("Error", "Error"), body).into_response();
    *r.status_mut() = status;
    if let PageError::Api(ApiError {
        retry_after: Some(wait),
        ..
    }) = e
        && let Ok(v) = axum::http::HeaderValue::from_str(&wait.as_secs().max(1).to_string())
    {
        r.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
    }
    r
}

pub fn router(web: Web) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/assets/style.css", get(crate::view::style))
        .route("/assets/live.js", get(crate::view::script))
        .route("/lang/{code}", get(language))
        .route("/dashboard", get(dashboard::show))
        .route("/plays", get(plays::table))
        .route("/plays.csv", get(plays::csv))
        .route("/plays/{id}", get(play::show))
        .route("/plays/{id}/dispute", axum::routing::post(play::dispute))
        .route("/admin", get(admin::overview))
        .route("/admin/users", get(admin::users).post(admin::create_user))
        .route("/admin/users/{id}", axum::routing::post(admin::change_user))
        .route("/admin/devices", get(admin::devices))
        .route(
            "/admin/devices/{imei}",
            axum::routing::post(admin::change_device),
        )
        .route("/admin/stations", get(admin::stations))
        .route("/admin/claims", get(admin::claims))
        .route(
            "/admin/claims/{id}",
            axum::routing::post(admin::settle_claim),
        )
        .route("/admin/disputes", get(admin::disputes))
        .route(
            "/admin/disputes/{id}",
            axum::routing::post(admin::settle_dispute),
        )
        .route("/admin/dead-letters", get(admin::dead_letters))
        .route(
            "/admin/dead-letters/{queue}/{id}",
            axum::routing::post(admin::dead_letter),
        )
        .route("/reports", get(reports::show))
        .route("/reports.xlsx", get(reports::xlsx))
        .route("/reports/summary.csv", get(reports::summary_csv))
        .route(
            "/account",
            get(account::show).post(account::change_password),
        )
        .route("/live", get(crate::live::socket))
        .merge(crate::session::router())
        .with_state(web)
}

async fn home(viewer: Option<Viewer>) -> Redirect {
    match viewer {
        Some(_) => Redirect::to("/dashboard"),
        None => Redirect::to("/sign-in"),
    }
}

impl axum::extract::OptionalFromRequestParts<Web> for Viewer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        web: &Web,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(
            <Viewer as axum::extract::FromRequestParts<Web>>::from_request_parts(parts, web)
                .await
                .ok(),
        )
    }
}

/// The language switch: a preference cookie, then back to where it was used.
async fn language(
    axum::extract::Path(code): axum::extract::Path<String>,
    headers: axum::http::HeaderMap,
) -> Response {
    let lang = Lang::parse(&code).unwrap_or(Lang::En);
    let back = headers
        .get(axum::http::header::REFERER)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| {
            let host = headers.get(axum::http::header::HOST)?.to_str().ok()?;
            let rest = r.split_once("://")?.1.strip_prefix(host)?;
            rest.starts_with('/').then(|| rest.to_owned())
        })
        .unwrap_or_else(|| "/".to_owned());
    let mut r = Redirect::to(&back).into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(&format!(
        "{LANG_COOKIE}={}; Path=/; SameSite=Lax; Max-Age=31536000",
        lang.code()
    )) {
        r.headers_mut().append(axum::http::header::SET_COOKIE, v);
    }
    r
}

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
        Ok(Self {
            tracks: rel.play_totals(&all, Grouping::Track, 0, CHOICES).await?,
            sources: rel.play_totals(&all, Grouping::Source, 0, CHOICES).await?,
            locations: rel
                .play_totals(&all, Grouping::Location, 0, CHOICES)
                .await?
                .into_iter()
                .filter(|t| !t.key.is_empty())
                .collect(),
        })
    }
}
