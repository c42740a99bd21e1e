//! `hendu-web`: the pages people use. Musicians see where and when their
//! tracks were played, live; operators read the plays of their stations;
//! everyone signs in with e-mail and password.
//!
//! Pages are rendered on the server and work without JavaScript; the one
//! script adds live updates. Sessions live in the store (the process keeps
//! none), so any replica serves any request. Live updates are part of this
//! service rather than a seventh one: each replica reads a recognised play
//! from the store once and hands it to all of its open pages, so an open
//! page costs a WebSocket and no store work, and replicas scale on the
//! same metric either way.
//!
//! # Layout
//! - [`session`]: signing in and out, the session cookie, CSRF tokens.
//! - [`pages`]: the dashboard, the plays table and its CSV, a play's page,
//!   usage reports (page, CSV, XLSX), the catalogue (uploads), the account.
//! - [`api`]: the JSON API behind the pages (plays, a play, reports), in the OpenAPI document.
//! - [`live`]: new plays pushed to open pages, with catch-up after a reconnect.
//! - [`view`]: the page shell, times in the viewer's zone, the two languages.
//! - [`error`]: why a page cannot be shown, as a page.
//! - [`charts`]: bar charts as SVG, drawn on the server.

pub mod api;
pub mod charts;
pub mod error;
pub mod live;
pub mod pages;
pub mod session;
pub mod view;

use std::sync::Arc;
use std::time::Duration;

use hendu_service::catalogue::{Catalogue, Clean, UploadConfig};
use hendu_service::settings::{seconds_or, var_or};
use hendu_service::{Application, Auth};
use hendu_storage::Storage;

pub const SERVICE: &str = "web";
pub const DEFAULT_PORT: u16 = 8085;

pub mod vars {
    pub const SESSION_H: &str = "HENDU_WEB_SESSION_H";
    pub const SECURE_COOKIES: &str = "HENDU_WEB_SECURE_COOKIES";
    pub const MAX_SOCKETS: &str = "HENDU_WEB_MAX_SOCKETS";
    pub const MAX_SOCKETS_PER_PERSON: &str = "HENDU_WEB_MAX_SOCKETS_PER_PERSON";
    pub const PING_S: &str = "HENDU_WEB_PING_S";
}

const HELP: &str =
    "  HENDU_WEB_SESSION_H        a session ends after this many hours without a page
                             (default 12)
  HENDU_WEB_SECURE_COOKIES   send the session cookie over HTTPS only (default true;
                             `hendu serve` on a loopback address: false)
  HENDU_WEB_MAX_SOCKETS      most open live pages (WebSockets) per replica
                             (default 10000)
  HENDU_WEB_MAX_SOCKETS_PER_PERSON  most of one person's open live pages per
                             replica (default 20)
  HENDU_WEB_PING_S           how often an open page is pinged (default 25)
The catalogue page's uploads, as the hash-generator's:
{UPLOADS}
See docs/services.md (the web service).

Default port: 8085.";

/// Serves the web pages and their live updates.
#[derive(Debug, clap::Parser)]
#[command(
    name = "hendu-web",
    version,
    after_help = format!(
        "{}\n{}",
        hendu_service::settings::ENV_HELP,
        HELP.replace("{UPLOADS}", hendu_service::catalogue::HELP)
    )
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<hendu_service::healthcheck::ServiceCommand>,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Uploads on the catalogue page, as the hash-generator takes them.
    pub upload: UploadConfig,
    /// A session unused this long ends.
    pub session_idle: Duration,
    pub secure_cookies: bool,
    pub max_sockets: usize,
    pub max_sockets_per_person: usize,
    pub ping_every: Duration,
}

impl Config {
    /// # Errors
    /// A malformed variable, named.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::with_secure_default(true)
    }

    /// For `hendu serve` on `host`: on a loopback address (a browser on the
    /// same machine, over plain HTTP) the cookie is not HTTPS-only unless
    /// the variable says so.
    ///
    /// # Errors
    /// A malformed variable, named.
    pub fn from_env_on(host: std::net::IpAddr) -> anyhow::Result<Self> {
        Self::with_secure_default(!host.is_loopback())
    }

    fn with_secure_default(secure: bool) -> anyhow::Result<Self> {
        let hours: f64 = var_or(vars::SESSION_H, 12.0, "a number of hours")?;
        if !(hours > 0.0 && hours <= 24.0 * 31.0) {
            anyhow::bail!("{} must be within (0, 744] hours", vars::SESSION_H);
        }
        Ok(Self {
            upload: UploadConfig::from_env()?,
            session_idle: Duration::from_secs_f64(hours * 3600.0),
            secure_cookies: var_or(vars::SECURE_COOKIES, secure, "true or false")?,
            max_sockets: var_or(vars::MAX_SOCKETS, 10_000, "a whole number")?,
            max_sockets_per_person: var_or(vars::MAX_SOCKETS_PER_PERSON, 20, "a whole number")?,
            ping_every: seconds_or(vars::PING_S, 25.0)?,
        })
    }
}

/// Workbooks built at once per replica (more wait: 503 `busy`).
pub const WORKBOOKS: usize = 2;

/// What every page handler shares.
#[derive(Debug, Clone)]
pub struct Web {
    pub storage: Storage,
    pub auth: Auth,
    pub config: Arc<Config>,
    pub live: live::Hub,
    /// Where the catalogue page's uploads go.
    pub catalogue: Catalogue,
    /// Workbooks being built (each held whole in memory).
    pub workbooks: Arc<tokio::sync::Semaphore>,
}

impl axum::extract::FromRef<Web> for Auth {
    fn from_ref(web: &Web) -> Self {
        web.auth.clone()
    }
}

/// Adds the pages and the live updates to `app`.
pub fn install(app: &mut Application, config: &Config) {
    let live = live::Hub::new(config.max_sockets, config.max_sockets_per_person);
    let web = Web {
        storage: app.storage.clone(),
        auth: app.auth.clone(),
        config: Arc::new(config.clone()),
        live: live.clone(),
        // The catalogue's rows are the hash-generator's to clean.
        catalogue: Catalogue::install(app, &config.upload, Clean::Spool),
        workbooks: Arc::new(tokio::sync::Semaphore::new(WORKBOOKS)),
    };
    app.route(api::router(web.clone()));
    app.document(<api::Api as utoipa::OpenApi>::openapi());
    app.route(router(web));
    let storage = app.storage.clone();
    app.worker("live", live::ALLOWANCE, move |beat, stop| async move {
        live.run(storage, beat, stop).await;
    });
}

/// What every answer of the web service says besides: not to be framed by
/// another site (clickjacking), not to be sniffed as another type, no
/// referrer beyond this site, and pages never cached (they are a person's).
async fn page_headers(mut r: axum::response::Response) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let headers = r.headers_mut();
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("frame-ancestors 'none'"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

/// Every page and the live updates.
pub fn router(web: Web) -> axum::Router {
    axum::Router::new()
        .route("/", axum::routing::get(session::home))
        .route("/assets/style.css", axum::routing::get(view::style))
        .route("/assets/live.js", axum::routing::get(view::script))
        .route("/lang/{code}", axum::routing::get(view::language))
        .route("/dashboard", axum::routing::get(pages::dashboard::show))
        .route("/plays", axum::routing::get(pages::plays::table))
        .route("/plays.csv", axum::routing::get(pages::plays::csv))
        .route("/plays/{id}", axum::routing::get(pages::play::show))
        .route(
            "/plays/{id}/dispute",
            axum::routing::post(pages::play::dispute),
        )
        .route("/admin", axum::routing::get(pages::admin::overview))
        .route(
            "/admin/users",
            axum::routing::get(pages::admin::users).post(pages::admin::create_user),
        )
        .route(
            "/admin/users/{id}",
            axum::routing::post(pages::admin::change_user),
        )
        .route("/admin/devices", axum::routing::get(pages::admin::devices))
        .route(
            "/admin/devices/{imei}",
            axum::routing::post(pages::admin::change_device),
        )
        .route(
            "/admin/stations",
            axum::routing::get(pages::admin::stations),
        )
        .route("/admin/claims", axum::routing::get(pages::admin::claims))
        .route(
            "/admin/claims/{id}",
            axum::routing::post(pages::admin::settle_claim),
        )
        .route(
            "/admin/disputes",
            axum::routing::get(pages::admin::disputes),
        )
        .route(
            "/admin/disputes/{id}",
            axum::routing::post(pages::admin::settle_dispute),
        )
        .route(
            "/admin/dead-letters",
            axum::routing::get(pages::admin::dead_letters),
        )
        .route(
            "/admin/dead-letters/{queue}/{id}",
            axum::routing::post(pages::admin::dead_letter),
        )
        .route("/reports", axum::routing::get(pages::reports::show))
        .route("/reports.xlsx", axum::routing::get(pages::reports::xlsx))
        .route(
            "/reports/summary.csv",
            axum::routing::get(pages::reports::summary_csv),
        )
        .route(
            "/catalogue",
            axum::routing::get(pages::catalogue::show)
                .post(pages::catalogue::upload)
                .layer(axum::extract::DefaultBodyLimit::max(
                    web.catalogue.max_upload,
                )),
        )
        .route(
            "/catalogue/{id}/delete",
            axum::routing::post(pages::catalogue::delete),
        )
        .route(
            "/account",
            axum::routing::get(pages::account::show).post(pages::account::change_password),
        )
        .route("/live", axum::routing::get(live::socket))
        .merge(session::router())
        .with_state(web)
        .layer(axum::middleware::map_response(page_headers))
}
