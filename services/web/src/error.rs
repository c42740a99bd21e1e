//! Why a page cannot be shown, and the page that says so (with the status
//! an API would give).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hendu_service::ApiError;
use hendu_storage::StorageError;
use maud::html;

use crate::view::{View, Viewer, page};

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
