//! How a page is shown to its viewer: in English or Spanish (the browser's
//! language, or the one chosen with the switch), with times in the viewer's
//! time zone (which the page's script tells the server in a cookie; UTC
//! until it has), inside one shell with the navigation.

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use time::{Date, Month, OffsetDateTime, UtcOffset};

use hendu_storage::model::User;

/// A signed-in person.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub user: User,
    /// What this session's forms must carry.
    pub csrf: String,
    /// The keyed digest of the session's secret (its row).
    pub(crate) digest: String,
}

pub const LANG_COOKIE: &str = "hendu_lang";
/// Minutes east of UTC, written by the page's script.
pub const TZ_COOKIE: &str = "hendu_tz";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Es,
}

impl Lang {
    pub fn code(self) -> &'static str {
        match self {
            Self::En => "en",
            Self::Es => "es",
        }
    }

    pub fn parse(code: &str) -> Option<Self> {
        match code.trim().get(..2)?.to_ascii_lowercase().as_str() {
            "en" => Some(Self::En),
            "es" => Some(Self::Es),
            _ => None,
        }
    }

    /// The first of English and Spanish in an `Accept-Language` list, by weight.
    fn accepted(header: &str) -> Option<Self> {
        let mut best: Option<(f32, Self)> = None;
        for part in header.split(',') {
            let mut fields = part.split(';');
            let Some(lang) = fields.next().and_then(Self::parse) else {
                continue;
            };
            let weight = fields
                .find_map(|f| f.trim().strip_prefix("q="))
                .and_then(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            if best.is_none_or(|(w, _)| weight > w) {
                best = Some((weight, lang));
            }
        }
        best.map(|(_, lang)| lang)
    }
}

/// `p` if it is a path of this site that is safe to redirect to: it starts
/// with one `/`, and holds only the characters of a plain path and query
/// (no `//`, backslash, control character, space or non-ASCII, which a
/// browser might turn into another site's address).
pub fn site_path(p: &str) -> Option<&str> {
    let plain = p
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/_.~%?=&:+,-".contains(&b));
    (plain && p.starts_with('/') && !p.starts_with("//") && p.len() <= 2048).then_some(p)
}

/// The value of cookie `name` in a request's headers.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// The viewer's language and time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    pub lang: Lang,
    pub zone: UtcOffset,
}

impl View {
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let lang = cookie(headers, LANG_COOKIE)
            .and_then(Lang::parse)
            .or_else(|| {
                headers
                    .get(header::ACCEPT_LANGUAGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(Lang::accepted)
            })
            .unwrap_or(Lang::En);
        let zone = cookie(headers, TZ_COOKIE)
            .and_then(|v| v.parse::<i32>().ok())
            .filter(|m| m.abs() <= 14 * 60)
            .and_then(|m| UtcOffset::from_whole_seconds(m * 60).ok())
            .unwrap_or(UtcOffset::UTC);
        Self { lang, zone }
    }

    /// The English or the Spanish text.
    pub fn t(self, en: &'static str, es: &'static str) -> &'static str {
        match self.lang {
            Lang::En => en,
            Lang::Es => es,
        }
    }

    pub fn local(self, t: OffsetDateTime) -> OffsetDateTime {
        t.to_offset(self.zone)
    }

    /// `2026-12-04 15:03:20`, in the viewer's zone.
    pub fn when(self, t: OffsetDateTime) -> String {
        let t = self.local(t);
        format!("{} {}", day(t.date()), clock(t))
    }

    /// `UTC-03:00`.
    pub fn zone_name(self) -> String {
        zone_name(self.zone)
    }

    /// Seconds east of UTC.
    pub fn offset_s(self) -> i32 {
        self.zone.whole_seconds()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for View {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::from_headers(&parts.headers))
    }
}

pub fn zone_name(zone: UtcOffset) -> String {
    let (h, m, _) = zone.as_hms();
    let sign = if zone.is_negative() { '-' } else { '+' };
    format!("UTC{sign}{:02}:{:02}", h.unsigned_abs(), m.unsigned_abs())
}

/// `2026-12-04`.
pub fn day(d: Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// `15:03:20`.
pub fn clock(t: OffsetDateTime) -> String {
    format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second())
}

/// `YYYY-MM-DD` as a date.
pub fn parse_day(s: &str) -> Option<Date> {
    let mut parts = s.trim().splitn(3, '-');
    let year = parts.next()?.parse().ok()?;
    let month = Month::try_from(parts.next()?.parse::<u8>().ok()?).ok()?;
    let day = parts.next()?.parse().ok()?;
    Date::from_calendar_date(year, month, day).ok()
}

/// `3:05` or `1:02:03`.
pub fn length(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

const STYLE: &str = include_str!("../assets/style.css");
const SCRIPT: &str = include_str!("../assets/live.js");

/// The stylesheet and the script, embedded in the binary.
pub async fn style() -> impl axum::response::IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLE,
    )
}

pub async fn script() -> impl axum::response::IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        SCRIPT,
    )
}

/// A whole page: the shell, the navigation for the signed-in viewer, `body`.
pub fn page(view: View, viewer: Option<&Viewer>, title: &str, body: Markup) -> Html<String> {
    let mut nav = vec![
        ("/dashboard", view.t("Dashboard", "Panel")),
        ("/plays", view.t("Plays", "Reproducciones")),
        ("/reports", view.t("Reports", "Informes")),
    ];
    if viewer.is_some_and(|v| v.user.role != hendu_storage::model::Role::Operator) {
        nav.push(("/catalogue", view.t("Catalogue", "Catálogo")));
    }
    if viewer.is_some_and(|v| v.user.role == hendu_storage::model::Role::Admin) {
        nav.push(("/admin", view.t("Administration", "Administración")));
    }
    nav.push(("/account", view.t("Account", "Cuenta")));
    let other = match view.lang {
        Lang::En => (Lang::Es, "Español"),
        Lang::Es => (Lang::En, "English"),
    };
    let markup = html! {
        (DOCTYPE)
        html lang=(view.lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · HENDU" }
                link rel="stylesheet" href="/assets/style.css";
                script src="/assets/live.js" defer {}
            }
            body {
                a.skip href="#main" { (view.t("Skip to content", "Ir al contenido")) }
                header.top {
                    a.brand href="/" { "HENDU" }
                    @if let Some(viewer) = viewer {
                        nav aria-label=(view.t("Main", "Principal")) {
                            ul {
                                @for (href, label) in &nav {
                                    li { a href=(href) { (label) } }
                                }
                            }
                        }
                        span.who { (viewer.user.display_name) " · " (role_name(view, viewer)) }
                        form.inline method="post" action="/sign-out" {
                            input type="hidden" name="csrf" value=(viewer.csrf);
                            button type="submit" { (view.t("Sign out", "Salir")) }
                        }
                    }
                    a.lang href={ "/lang/" (other.0.code()) } lang=(other.0.code()) { (other.1) }
                }
                @if viewer.is_some_and(|v| v.user.role != hendu_storage::model::Role::Musician) {
                    // Stations going down or silent, as they happen (the script).
                    div #live-alerts.alerts aria-live="assertive" {}
                }
                main #main { (body) }
                footer {
                    p { (view.t("Times are in ", "Horas en ")) (view.zone_name()) "." }
                }
            }
        }
    };
    Html(markup.into_string())
}

fn role_name(view: View, viewer: &Viewer) -> &'static str {
    use hendu_storage::model::Role;
    match viewer.user.role {
        Role::Admin => view.t("administrator", "administrador"),
        Role::Musician => view.t("musician", "músico"),
        Role::Operator => view.t("operator", "operador"),
    }
}

/// The language switch: a preference cookie, then back to where it was used.
pub async fn language(
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
            site_path(rest).map(str::to_owned)
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

/// A text that is already HTML (the charts' SVG).
pub fn raw(s: String) -> PreEscaped<String> {
    PreEscaped(s)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly by design.
mod tests {
    use super::*;

    #[test]
    fn the_language_is_the_browsers_first_of_the_two() {
        assert_eq!(Lang::accepted("es-PY,es;q=0.9,en;q=0.8"), Some(Lang::Es));
        assert_eq!(Lang::accepted("de;q=1, en;q=0.5, es;q=0.7"), Some(Lang::Es));
        assert_eq!(Lang::accepted("gn, en-GB"), Some(Lang::En));
        assert_eq!(Lang::accepted("de, fr"), None);
    }

    #[test]
    fn times_are_shown_in_the_viewers_zone() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, "a=b; hendu_tz=-180".parse().unwrap());
        let view = View::from_headers(&headers);
        assert_eq!(view.zone_name(), "UTC-03:00");
        let t = OffsetDateTime::from_unix_timestamp(1_790_000_000).unwrap();
        assert_eq!(view.when(t), "2026-09-21 11:13:20");
        headers.insert(header::COOKIE, "hendu_tz=99999".parse().unwrap());
        assert_eq!(View::from_headers(&headers).zone, UtcOffset::UTC);
    }

    #[test]
    fn lengths_and_days_read_as_people_write_them() {
        assert_eq!(length(185.4), "3:05");
        assert_eq!(length(3723.0), "1:02:03");
        assert_eq!(
            parse_day("2026-02-28").map(day).as_deref(),
            Some("2026-02-28")
        );
        assert!(parse_day("2026-02-30").is_none());
        assert!(parse_day("yesterday").is_none());
    }
}
