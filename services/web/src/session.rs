//! Signing in and out. A session is a row in the store, found by the keyed
//! digest of the 256-bit secret in the browser's cookie (HttpOnly,
//! SameSite=Lax, Secure unless configured off); it ends after the idle
//! time without a page, at sign-out, and everywhere when the password
//! changes. Every form that changes something carries the session's CSRF
//! token, compared in constant time; the sign-in form, which has no session
//! yet, carries a token that must match a cookie of its own. Wrong
//! passwords are limited per address and per e-mail by the shared
//! [`hendu_service::Auth`], like the APIs' passwords.

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Router, routing::get, routing::post};
use hendu_storage::credentials::{Purpose, new_web_secret};
use hendu_storage::model::User;
use hendu_storage::queries::{PlayScope, WebSession};
use maud::html;
use serde::Deserialize;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::Web;
use crate::error::{PageError, error_page};
use crate::view::{View, Viewer, cookie, page};

pub const SESSION_COOKIE: &str = "hendu_session";
/// The sign-in form's own token (there is no session yet).
const FORM_COOKIE: &str = "hendu_form";

impl Viewer {
    /// The plays this person may see.
    pub fn scope(&self) -> PlayScope {
        PlayScope::of(self.user.id, self.user.role)
    }

    /// # Errors
    /// 403 when `presented` is not this session's token (a form posted from
    /// another site, or an old page).
    pub fn check_csrf(&self, presented: &str) -> Result<(), PageError> {
        if same(presented, &self.csrf) {
            Ok(())
        } else {
            Err(PageError::Csrf)
        }
    }
}

fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The session of a request, if it has a live one.
async fn viewer_of(web: &Web, headers: &HeaderMap) -> Result<Option<Viewer>, PageError> {
    let Some(secret) = cookie(headers, SESSION_COOKIE).filter(|s| s.len() == 64) else {
        return Ok(None);
    };
    let digest = web.auth.key().digest(Purpose::WebSession, secret).to_hex();
    let rel = &web.storage.relational;
    let Some(session) = rel.session(&digest).await? else {
        return Ok(None);
    };
    let Some(user) = rel.user(session.user_id).await?.filter(|u| !u.disabled) else {
        return Ok(None);
    };
    // Sliding expiry, written at most once per half of the idle time.
    let idle = time::Duration::try_from(web.config.session_idle).unwrap_or(time::Duration::HOUR);
    let now = OffsetDateTime::now_utc();
    if session.expires_at - now < idle / 2 {
        rel.extend_session(&digest, now + idle).await?;
    }
    Ok(Some(Viewer {
        user,
        csrf: session.csrf,
        digest,
    }))
}

/// Pages for signed-in people: without a session, a page is answered
/// with the way to the sign-in form.
impl FromRequestParts<Web> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, web: &Web) -> Result<Self, Self::Rejection> {
        match viewer_of(web, &parts.headers).await {
            Ok(Some(viewer)) => Ok(viewer),
            Ok(None) => {
                let path = parts
                    .uri
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_owned();
                let view = View::from_headers(&parts.headers);
                if parts.method == axum::http::Method::GET {
                    Err(Redirect::to(&format!("/sign-in?next={}", encode(&path))).into_response())
                } else {
                    Err(error_page(view, None, PageError::SignedOut))
                }
            }
            Err(e) => Err(error_page(View::from_headers(&parts.headers), None, e)),
        }
    }
}

/// `/`: the dashboard, or the way to sign in.
pub async fn home(viewer: Option<Viewer>) -> Redirect {
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

pub fn router() -> Router<Web> {
    Router::new()
        .route("/sign-in", get(sign_in_form).post(sign_in))
        .route("/sign-out", post(sign_out))
}

#[derive(Debug, Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

/// Where to go after signing in: a path of this site, or the dashboard.
fn local_path(next: Option<&str>) -> &str {
    next.and_then(crate::view::site_path)
        .unwrap_or("/dashboard")
}

/// Percent-encodes a path for a query parameter.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A cookie of this site; without `max_age_s` it lasts until the browser
/// closes (the session cookie: the store ends an idle session, and a
/// lifetime fixed at sign-in could not follow the sliding expiry).
fn set_cookie(web: &Web, name: &str, value: &str, max_age_s: Option<i64>) -> HeaderValue {
    let secure = if web.config.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    let age = max_age_s
        .map(|s| format!("; Max-Age={s}"))
        .unwrap_or_default();
    let line = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax{age}{secure}");
    HeaderValue::from_str(&line).unwrap_or_else(|_| HeaderValue::from_static("x=; Max-Age=0"))
}

fn form(view: View, token: &str, next: &str, email: &str, problem: Option<&str>) -> Response {
    let body = html! {
        section.narrow {
            h1 { (view.t("Sign in", "Iniciar sesión")) }
            @if let Some(problem) = problem {
                p.problem role="alert" { (problem) }
            }
            form method="post" action="/sign-in" {
                input type="hidden" name="form_token" value=(token);
                input type="hidden" name="next" value=(next);
                label for="email" { (view.t("E-mail", "Correo electrónico")) }
                input #email type="email" name="email" value=(email) autocomplete="username" required autofocus;
                label for="password" { (view.t("Password", "Contraseña")) }
                input #password type="password" name="password" autocomplete="current-password" required;
                button type="submit" { (view.t("Sign in", "Entrar")) }
            }
        }
    };
    page(view, None, view.t("Sign in", "Iniciar sesión"), body).into_response()
}

async fn sign_in_form(
    State(web): State<Web>,
    view: View,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<NextQuery>,
) -> Response {
    let next = local_path(q.next.as_deref()).to_owned();
    if let Ok(Some(_)) = viewer_of(&web, &headers).await {
        return Redirect::to(&next).into_response();
    }
    let token = new_web_secret();
    let mut response = form(view, &token, &next, "", None);
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&web, FORM_COOKIE, &token, Some(3600)),
    );
    response
}

#[derive(Debug, Deserialize)]
pub struct SignIn {
    email: String,
    password: String,
    form_token: String,
    next: Option<String>,
}

async fn sign_in(
    State(web): State<Web>,
    view: View,
    headers: HeaderMap,
    parts: axum::extract::ConnectInfo<std::net::SocketAddr>,
    Form(f): Form<SignIn>,
) -> Response {
    let next = local_path(f.next.as_deref()).to_owned();
    let expected = cookie(&headers, FORM_COOKIE).unwrap_or_default();
    if expected.is_empty() || !same(&f.form_token, expected) {
        return error_page(view, None, PageError::Csrf);
    }
    let again = |status: StatusCode, problem: &str| {
        let mut r = form(view, expected, &next, &f.email, Some(problem));
        *r.status_mut() = status;
        r
    };
    let user = match web.auth.sign_in(&f.email, &f.password, parts.0.ip()).await {
        Ok(user) => user,
        Err(e) if e.status == StatusCode::TOO_MANY_REQUESTS => {
            let mut r = again(
                e.status,
                view.t(
                    "Too many failed attempts. Wait a minute and try again.",
                    "Demasiados intentos fallidos. Espere un minuto y vuelva a intentarlo.",
                ),
            );
            if let Some(wait) = e.retry_after {
                r.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(wait.as_secs().max(1)),
                );
            }
            return r;
        }
        Err(e) if e.status == StatusCode::UNAUTHORIZED => {
            return again(
                e.status,
                view.t(
                    "Wrong e-mail or password.",
                    "Correo electrónico o contraseña incorrectos.",
                ),
            );
        }
        Err(e) => return error_page(view, None, PageError::Api(e)),
    };
    match start_session(&web, &user).await {
        Ok(cookie) => {
            let mut r = Redirect::to(&next).into_response();
            let headers = r.headers_mut();
            headers.append(header::SET_COOKIE, cookie);
            headers.append(
                header::SET_COOKIE,
                set_cookie(&web, FORM_COOKIE, "", Some(0)),
            );
            r
        }
        Err(e) => error_page(view, None, e),
    }
}

/// A new session for `user`: the `Set-Cookie` value that holds it.
///
/// # Errors
/// The store failing.
pub async fn start_session(web: &Web, user: &User) -> Result<HeaderValue, PageError> {
    let secret = new_web_secret();
    let now = OffsetDateTime::now_utc();
    let idle = time::Duration::try_from(web.config.session_idle).unwrap_or(time::Duration::HOUR);
    let session = WebSession {
        digest: web.auth.key().digest(Purpose::WebSession, &secret).to_hex(),
        user_id: user.id,
        csrf: new_web_secret(),
        created_at: now,
        expires_at: now + idle,
    };
    web.storage.relational.add_session(&session).await?;
    Ok(set_cookie(web, SESSION_COOKIE, &secret, None))
}

#[derive(Debug, Deserialize)]
pub struct CsrfOnly {
    pub csrf: String,
}

async fn sign_out(
    State(web): State<Web>,
    view: View,
    viewer: Viewer,
    Form(f): Form<CsrfOnly>,
) -> Response {
    if let Err(e) = viewer.check_csrf(&f.csrf) {
        return error_page(view, Some(&viewer), e);
    }
    if let Err(e) = web.storage.relational.delete_session(&viewer.digest).await {
        return error_page(view, Some(&viewer), e.into());
    }
    let mut r = Redirect::to("/sign-in").into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&web, SESSION_COOKIE, "", Some(0)),
    );
    r
}

/// Ends every session of `viewer`'s user and starts a new one for this
/// browser (after a password change).
///
/// # Errors
/// The store failing.
pub async fn restart_sessions(web: &Web, viewer: &Viewer) -> Result<HeaderValue, PageError> {
    web.storage
        .relational
        .delete_sessions_of(viewer.user.id)
        .await?;
    start_session(web, &viewer.user).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_path_of_this_site_is_followed_after_sign_in() {
        assert_eq!(local_path(Some("/plays?page=2")), "/plays?page=2");
        assert_eq!(local_path(Some("//evil.example")), "/dashboard");
        assert_eq!(local_path(Some("https://evil.example")), "/dashboard");
        assert_eq!(local_path(Some("/\\evil.example")), "/dashboard");
        assert_eq!(
            local_path(Some("/\t/evil.example")),
            "/dashboard",
            "browsers drop tabs"
        );
        assert_eq!(local_path(Some("/\n/evil.example")), "/dashboard");
        assert_eq!(
            local_path(Some("/plays?source=radio:3&from=2026-11-01")),
            "/plays?source=radio:3&from=2026-11-01"
        );
        assert_eq!(local_path(Some("/pláys")), "/dashboard");
        assert_eq!(local_path(None), "/dashboard");
        assert_eq!(encode("/plays?a=1&b"), "/plays%3Fa%3D1%26b");
    }
}
