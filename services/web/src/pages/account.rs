//! A person's account: who they are, and a new password (which signs every
//! other browser out).

use axum::Form;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use hendu_storage::model::{MIN_SECRET, Secret, SecretHash};
use maud::{Markup, html};
use serde::Deserialize;

use crate::Web;
use crate::error::{PageError, error_page};
use crate::session::restart_sessions;
use crate::view::{View, Viewer, page};

fn render(view: View, viewer: &Viewer, notice: Option<(bool, &str)>) -> Markup {
    html! {
        h1 { (view.t("Account", "Cuenta")) }
        dl.facts {
            dt { (view.t("Name", "Nombre")) } dd { (viewer.user.display_name) }
            dt { (view.t("E-mail", "Correo electrónico")) } dd { (viewer.user.email) }
        }
        section.narrow {
            h2 { (view.t("Change password", "Cambiar contraseña")) }
            @if let Some((ok, text)) = notice {
                p class=(if ok { "notice" } else { "problem" }) role=(if ok { "status" } else { "alert" }) { (text) }
            }
            form method="post" action="/account" {
                input type="hidden" name="csrf" value=(viewer.csrf);
                label for="current" { (view.t("Current password", "Contraseña actual")) }
                input #current type="password" name="current" autocomplete="current-password" required;
                label for="new" { (view.t("New password", "Contraseña nueva")) " (" (MIN_SECRET) "+)" }
                input #new type="password" name="new" autocomplete="new-password" minlength=(MIN_SECRET) required;
                label for="repeat" { (view.t("New password again", "Repita la contraseña nueva")) }
                input #repeat type="password" name="repeat" autocomplete="new-password" minlength=(MIN_SECRET) required;
                button type="submit" { (view.t("Change password", "Cambiar contraseña")) }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct AccountQuery {
    changed: Option<u8>,
}

pub async fn show(view: View, viewer: Viewer, Query(q): Query<AccountQuery>) -> Response {
    let notice = q.changed.map(|_| {
        (
            true,
            view.t(
                "Password changed. Other browsers were signed out.",
                "Contraseña cambiada. Se cerraron las sesiones de otros navegadores.",
            ),
        )
    });
    page(
        view,
        Some(&viewer),
        view.t("Account", "Cuenta"),
        render(view, &viewer, notice),
    )
    .into_response()
}

#[derive(Debug, Deserialize)]
pub struct PasswordForm {
    csrf: String,
    current: String,
    new: String,
    repeat: String,
}

pub async fn change_password(
    State(web): State<Web>,
    view: View,
    viewer: Viewer,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Form(f): Form<PasswordForm>,
) -> Response {
    if let Err(e) = viewer.check_csrf(&f.csrf) {
        return error_page(view, Some(&viewer), e);
    }
    let refuse = |status: StatusCode, text: &str| {
        let mut r = page(
            view,
            Some(&viewer),
            view.t("Account", "Cuenta"),
            render(view, &viewer, Some((false, text))),
        )
        .into_response();
        *r.status_mut() = status;
        r
    };
    if f.new != f.repeat {
        return refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            view.t(
                "The new passwords differ.",
                "Las contraseñas nuevas no coinciden.",
            ),
        );
    }
    if f.new.chars().count() < MIN_SECRET {
        return refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            view.t(
                "The new password is too short.",
                "La contraseña nueva es demasiado corta.",
            ),
        );
    }
    // The current password is checked (and limited) as at sign-in.
    match web
        .auth
        .sign_in(&viewer.user.email, &f.current, peer.ip())
        .await
    {
        Ok(_) => {}
        Err(e) if e.status == StatusCode::UNAUTHORIZED => {
            return refuse(
                StatusCode::FORBIDDEN,
                view.t(
                    "The current password is wrong.",
                    "La contraseña actual es incorrecta.",
                ),
            );
        }
        Err(e) => return error_page(view, Some(&viewer), PageError::Api(e)),
    }
    let changed = async {
        let hash = SecretHash::hash(&Secret::new(f.new.as_str())).await?;
        web.storage
            .relational
            .set_user_password(viewer.user.id, &hash)
            .await?;
        restart_sessions(&web, &viewer).await
    };
    match changed.await {
        Ok(cookie) => {
            // The new session has a new form token: the page is read again.
            let mut r = Redirect::to("/account?changed=1").into_response();
            r.headers_mut().append(header::SET_COOKIE, cookie);
            r
        }
        Err(e) => error_page(view, Some(&viewer), e),
    }
}
