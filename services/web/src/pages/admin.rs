//! Administrators run the system here: users and roles, devices, stations
//! and their health (with an alert for every station down or silent), the
//! ownership claims and play disputes to settle, and the queues' dead
//! letters. Every page is for administrators only; every change is a form
//! with the session's token, logged with who made it.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use hendu_storage::Queue;
use hendu_storage::model::{
    ClaimState, Imei, NewUser, RadioStatus, Role, Secret, SecretHash, StationState,
};
use hendu_storage::queries::DisputeState;
use maud::{Markup, html};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::Web;
use crate::error::{PageError, error_page};
use crate::view::{View, Viewer, page};

/// Rows per page of an administration list.
pub const LIST: u32 = 500;

/// `?after=`: where a page of an administration list starts (after the
/// last row of the page before).
#[derive(Debug, Default, Deserialize)]
pub struct After {
    after: Option<i64>,
}

/// The link to the next page of a list, when this one is full.
fn next_page(view: View, path: &str, shown: usize, last: Option<String>) -> Markup {
    let join = if path.contains('?') { '&' } else { '?' };
    html! {
        @if shown >= LIST as usize {
            @if let Some(last) = last {
                p { a href={ (path) (join) "after=" (crate::session::encode(&last)) } { (view.t("Next page", "Página siguiente")) } }
            }
        }
    }
}
/// A station whose status is older than this has no replica reporting it.
const STALE_S: i64 = 60;

fn forbidden() -> PageError {
    PageError::Api(hendu_service::auth::forbidden("administer HENDU"))
}

fn check(viewer: &Viewer) -> Result<(), PageError> {
    if viewer.user.role == Role::Admin {
        Ok(())
    } else {
        Err(forbidden())
    }
}

fn shell(view: View, viewer: &Viewer, title: &str, alerts: &[Alert], body: Markup) -> Response {
    let sections = [
        ("/admin/users", view.t("Users", "Usuarios")),
        ("/admin/devices", view.t("Devices", "Dispositivos")),
        ("/admin/stations", view.t("Stations", "Emisoras")),
        ("/admin/claims", view.t("Claims", "Reclamos de propiedad")),
        (
            "/admin/disputes",
            view.t("Disputes", "Reclamos de reproducción"),
        ),
        (
            "/admin/dead-letters",
            view.t("Dead letters", "Mensajes fallidos"),
        ),
    ];
    let markup = html! {
        nav.sections aria-label=(view.t("Administration", "Administración")) {
            ul { @for (href, label) in sections { li { a href=(href) { (label) } } } }
        }
        @for a in alerts {
            p.problem role="alert" { (a.text) " " a href="/admin/stations" { (view.t("See the stations", "Ver las emisoras")) } }
        }
        (body)
    };
    page(view, Some(viewer), title, markup).into_response()
}

/// A station that needs someone: down or silent.
#[derive(Debug)]
pub struct Alert {
    text: String,
}

async fn alerts(web: &Web, view: View) -> Result<Vec<Alert>, PageError> {
    let rel = &web.storage.relational;
    let radios = rel.radios().await?;
    let statuses = rel.radio_statuses().await?;
    Ok(statuses
        .iter()
        .filter(|s| matches!(s.state, StationState::Down | StationState::Silent))
        .filter_map(|s| {
            let radio = radios.iter().find(|r| r.id == s.radio_id && r.enabled)?;
            let what = match s.state {
                StationState::Down => view.t("is down", "está caída"),
                _ => view.t("is silent", "está en silencio"),
            };
            Some(Alert {
                text: format!(
                    "{} {what} {} {}.",
                    radio.name,
                    view.t("since", "desde"),
                    view.when(s.since)
                ),
            })
        })
        .collect())
}

async fn respond(
    web: &Web,
    view: View,
    viewer: &Viewer,
    title: &str,
    body: Result<Markup, PageError>,
) -> Response {
    let shown = async {
        check(viewer)?;
        let body = body?;
        Ok::<_, PageError>((alerts(web, view).await?, body))
    };
    match shown.await {
        Ok((alerts, body)) => shell(view, viewer, title, &alerts, body),
        Err(e) => error_page(view, Some(viewer), e),
    }
}

/// After a change: back to the list, or the error.
fn done(view: View, viewer: &Viewer, outcome: Result<String, PageError>) -> Response {
    match outcome {
        Ok(to) => Redirect::to(&to).into_response(),
        Err(e) => error_page(view, Some(viewer), e),
    }
}

pub async fn overview(view: View, viewer: Viewer) -> Response {
    match check(&viewer) {
        Ok(()) => Redirect::to("/admin/stations").into_response(),
        Err(e) => error_page(view, Some(&viewer), e),
    }
}

// --- users

pub async fn users(
    State(web): State<Web>,
    view: View,
    viewer: Viewer,
    Query(page): Query<After>,
) -> Response {
    let body = async {
        check(&viewer)?;
        let users = web
            .storage
            .relational
            .users(page.after.unwrap_or(0), LIST)
            .await?;
        Ok(html! {
            h1 { (view.t("Users", "Usuarios")) }
            table {
                thead { tr {
                    th scope="col" { (view.t("E-mail", "Correo electrónico")) }
                    th scope="col" { (view.t("Name", "Nombre")) }
                    th scope="col" { (view.t("Role", "Rol")) }
                    th scope="col" { (view.t("State", "Estado")) }
                    th scope="col" { (view.t("Change", "Cambiar")) }
                } }
                tbody {
                    @for u in &users {
                        tr {
                            td { (u.email) }
                            td { (u.display_name) }
                            td { (u.role.as_str()) }
                            td { @if u.disabled { (view.t("disabled", "deshabilitado")) } @else { (view.t("active", "activo")) } }
                            td {
                                form.inline method="post" action={ "/admin/users/" (u.id) } {
                                    input type="hidden" name="csrf" value=(viewer.csrf);
                                    input type="hidden" name="action" value=(if u.disabled { "enable" } else { "disable" });
                                    button type="submit" disabled[u.id == viewer.user.id] {
                                        @if u.disabled { (view.t("Enable", "Habilitar")) } @else { (view.t("Disable", "Deshabilitar")) }
                                    }
                                }
                                form.inline method="post" action={ "/admin/users/" (u.id) } {
                                    input type="hidden" name="csrf" value=(viewer.csrf);
                                    input type="hidden" name="action" value="password";
                                    label.visually-hidden for={ "password-" (u.id) } { (view.t("New password for ", "Contraseña nueva para ")) (u.email) }
                                    input id={ "password-" (u.id) } type="password" name="password" autocomplete="new-password"
                                        minlength=(hendu_storage::model::MIN_SECRET) placeholder=(view.t("new password", "contraseña nueva")) required;
                                    button type="submit" { (view.t("Reset password", "Restablecer contraseña")) }
                                }
                            }
                        }
                    }
                }
            }
            (next_page(view, "/admin/users", users.len(), users.last().map(|u| u.id.to_string())))
            section.narrow {
                h2 { (view.t("New user", "Nuevo usuario")) }
                form method="post" action="/admin/users" {
                    input type="hidden" name="csrf" value=(viewer.csrf);
                    label for="email" { (view.t("E-mail", "Correo electrónico")) }
                    input #email type="email" name="email" required;
                    label for="name" { (view.t("Name", "Nombre")) }
                    input #name type="text" name="name" required;
                    label for="role" { (view.t("Role", "Rol")) }
                    select #role name="role" {
                        option value="musician" { (view.t("musician (owns tracks)", "músico (dueño de temas)")) }
                        option value="operator" { (view.t("operator (reads the plays of its stations)", "operador (lee las reproducciones de sus emisoras)")) }
                        option value="admin" { (view.t("administrator", "administrador")) }
                    }
                    label for="new-password" { (view.t("Password", "Contraseña")) " (" (hendu_storage::model::MIN_SECRET) "+)" }
                    input #new-password type="password" name="password" autocomplete="new-password" minlength=(hendu_storage::model::MIN_SECRET) required;
                    button type="submit" { (view.t("Create", "Crear")) }
                }
            }
        })
    };
    respond(&web, view, &viewer, view.t("Users", "Usuarios"), body.await).await
}

#[derive(Debug, Deserialize)]
pub struct NewUserForm {
    csrf: String,
    email: String,
    name: String,
    role: String,
    password: String,
}

pub async fn create_user(
    State(web): State<Web>,
    view: View,
    viewer: Viewer,
    Form(f): Form<NewUserForm>,
) -> Response {
    let outcome = async {
        check(&viewer)?;
        viewer.check_csrf(&f.csrf)?;
        let role = Role::parse_name(&f.role).map_err(|e| PageError::BadInput(e.to_string()))?;
        let new = NewUser::new(&f.email, &f.name, role, Secret::new(f.password.as_str()))
            .map_err(|e| PageError::BadInput(e.to_string()))?;
        let user = web.storage.relational.add_user(&new).await?;
        tracing::info!(
            user = user.id,
            role = role.as_str(),
            by = viewer.user.id,
            "user created"
        );
        Ok("/admin/users".to_owned())
    };
    done(view, &viewer, outcome.await)
}

#[derive(Debug, Deserialize)]
pub struct UserChange {
    csrf: String,
    action: String,
    password: Option<String>,
}

pub async fn change_user(
    State(web): State<Web>,
    view: View,
    viewer: Viewer,
    Path(id): Path<i64>,
    Form(f): Form<UserChange>,
) -> Response {
    let outcome = async {
        check(&viewer)?;
        viewer.check_csrf(&f.csrf)?;
        let rel = &web.storage.relational;
        rel.user(id).await?.ok_or(PageError::NotFound)?;
        match f.action.as_str() {
            "disable" | "enable" => {
                if id == viewer.user.id {
                    return Err(PageError::BadInput(
                        view.t(
                            "You cannot disable yourself.",
                            "No puede deshabilitarse a sí mismo.",
                        )
                        .into(),
                    ));
                }
                let disabled = f.action == "disable";
                rel.set_user_disabled(id, disabled).await?;
                if disabled {
                    rel.delete_sessions_of(id).await?;
                }
                tracing::info!(user = id, disabled, by = viewer.user.id, "user changed");
            }
            "password" => {
                let password = Secret::new(f.password.unwrap_or_default());
                if password.expose().chars().count() < hendu_storage::model::MIN_SECRET {
                    return Err(PageError::BadInput(
                        view.t(
                            "The password is too short.",
                            "La contraseña es demasiado corta.",
                        )
                        .into(),
                    ));
                }
                let hash = SecretHash::hash(&password).await?;
                rel.set_user_password(id, &hash).await?;
                rel.delete_sessions_of(id).await?;
                tracing::info!(
                    user = id,
                    by = viewer.user.id,
                    "password reset by an administrator"
                );
            }
            _ => return Err(PageError::BadInput("unknown action".into())),
        }
        Ok("/admin/users".to_owned())
    };
    done(view, &viewer, outcome.await)
}

// --- devices

pub async fn devices(
    State(web): State<Web>,
    view: View,
    viewer: Viewer,
    Query(page): Query<After>,
) -> Response {
    let body = async {
        check(&viewer)?;
        let devices = web
            .storage
            .relational
            .devices(page.after.unwrap_or(0), LIST)
            .await?;
        let operators: Vec<_> = web
            .storage
            .relational
            .users(0, LIST)
            .await?
            .into_iter()
            .filter(|u| u.role == Role::Operator)
            .collect();
        Ok(html! {
            h1 { (view.t("Devices", "Dispositivos")) }
            p.hint { (view.t("Register devices and rotate their secrets with the API (POST /v1/devices): a secret is shown once, to whoever configures the device.",
                "Los dispositivos se registran y sus secretos se renuevan con la API (POST /v1/devices): un secreto se muestra una sola vez, a quien configura el dispositivo.")) }
            table {
                thead { tr {
                    th scope="col" { "IMEI" }
                    th scope="col" { (view.t("Name", "Nombre")) }
                    th scope="col" { (view.t("Location", "Lugar")) }
                    th scope="col" { (view.t("State", "Estado")) }
                    th scope="col" { (view.t("Operator (event organiser)", "Operador (organizador del evento)")) }
                    th scope="col" { (view.t("Change", "Cambiar")) }
                } }
                tbody {
                    @for d in &devices {
                        tr {
                            td { code { (d.imei.as_str()) } }
                            td { (d.name) }
                            td { (d.location.as_deref().unwrap_or("")) }
                            td { @if d.enabled { (view.t("enabled", "habilitado")) } @else { (view.t("disabled", "deshabilitado")) } }
                            td {
                                form.inline method="post" action={ "/admin/devices/" (d.imei.as_str()) } {
                                    input type="hidden" name="csrf" value=(viewer.csrf);
                                    label.visually-hidden for={ "owner-" (d.id) } { (view.t("Operator of ", "Operador de ")) (d.name) }
                                    select id={ "owner-" (d.id) } name="owner" {
                                        option value="" selected[d.owner.is_none()] { (view.t("none", "ninguno")) }
                                        @for o in &operators {
                                            option value=(o.id) selected[d.owner == Some(o.id)] { (o.display_name) " (" (o.email) ")" }
                                        }
                                    }
                                    button type="submit" { (view.t("Assign", "Asignar")) }
                                }
                            }
                            td {
                                form.inline method="post" action={ "/admin/devices/" (d.imei.as_str()) } {
                                    input type="hidden" name="csrf" value=(viewer.csrf);
                                    input type="hidden" name="enabled" value=(if d.enabled { "false" } else { "true" });
                                    button type="submit" {
                                        @if d.enabled { (view.t("Disable", "Deshabilitar")) } @else { (view.t("Enable", "Habilitar")) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            (next_page(view, "/admin/devices", devices.len(), devices.last().map(|d| d.id.to_string())))
            @if devices.is_empty() { p { (view.t("No devices yet.", "Todavía no hay dispositivos.")) } }
        })
    };
    respond(
        &web,
        view,
        &viewer,
        view.t("Devices", "Dispositivos"),
        body.await,
    )
    .await
}

#[derive(Debug, Deserialize)]
pub struct DeviceChange {
    csrf: String,
    /// Enable or disable.
    enabled: Option<bool>,
    /// Give it to this operator (empty: to none).
    owner: Option<String>,
}

pub async fn change_device(
    State(web): State<Web>,
    view: View,
    viewer: Viewer,
    Path(raw): Path<String>,
    Form(f): Form<DeviceChange>,
) -> Response {
    let outcome = async {
        check(&viewer)?;
        viewer.check_csrf(&f.csrf)?;
        let imei = Imei::parse(&raw).map_err(|_| PageError::NotFound)?;
        let rel = &web.storage.relational;
        if let Some(enabled) = f.enabled {
            if !rel.set_device_enabled(&imei, enabled).await? {
                return Err(PageError::NotFound);
            }
            tracing::info!(imei = %imei.as_str(), enabled, by = viewer.user.id, "device changed");
        }
        if let Some(owner) = f.owner.as_deref().map(str::trim) {
            let owner = if owner.is_empty() {
                None
            } else {
                Some(owner.parse::<i64>().map_err(|_| {
                    PageError::BadInput(view.t("Choose an operator.", "Elija un operador.").into())
                })?)
            };
            hendu_service::accounts::operator(&web.storage, owner).await?;
            if !rel.set_device_owner(&imei, owner).await? {
                return Err(PageError::NotFound);
            }
            tracing::info!(imei = %imei.as_str(), owner, by = viewer.user.id, "device given to an operator");
        }
        Ok("/admin/devices".to_owned())
    };
    done(view, &viewer, outcome.await)
}

// --- stations

fn state_name(view: View, s: &RadioStatus, now: OffsetDateTime) -> String {
    if (now - s.updated_at).whole_seconds() > STALE_S {
        return view
            .t(
                "not monitored (no replica reports it)",
                "sin monitorear (ninguna réplica informa)",
            )
            .to_owned();
    }
    let name = match s.state {
        StationState::Connecting => view.t("connecting", "conectando"),
        StationState::Streaming => view.t("streaming", "transmitiendo"),
        StationState::Silent => view.t("silent", "en silencio"),
        StationState::Backoff => view.t("reconnecting", "reconectando"),
        StationState::Down => view.t("down", "caída"),
        StationState::UnsupportedCodec => view.t("unsupported codec", "códec no soportado"),
        StationState::Disabled => view.t("disabled", "deshabilitada"),
    };
    match &s.detail {
        Some(d) => format!("{name}: {d}"),
        None => name.to_owned(),
    }
}

pub async fn stations(State(web): State<Web>, view: View, viewer: Viewer) -> Response {
    let body = async {
        check(&viewer)?;
        let rel = &web.storage.relational;
        let radios = rel.radios().await?;
        let statuses = rel.radio_statuses().await?;
        let now = OffsetDateTime::now_utc();
        Ok(html! {
            h1 { (view.t("Stations", "Emisoras")) }
            p.hint { (view.t("Add and change stations with the API (/v1/radios). This page shows what the monitoring replica last reported.",
                "Las emisoras se agregan y cambian con la API (/v1/radios). Esta página muestra lo último que informó la réplica que las escucha.")) }
            table {
                thead { tr {
                    th scope="col" { (view.t("Station", "Emisora")) }
                    th scope="col" { (view.t("State", "Estado")) }
                    th scope="col" { (view.t("Since", "Desde")) }
                    th scope="col" { (view.t("Last sample", "Última muestra")) }
                    th.num scope="col" { (view.t("Silence (s)", "Silencio (s)")) }
                    th.num scope="col" { (view.t("Reconnects", "Reconexiones")) }
                    th scope="col" { (view.t("Now playing (stream title)", "Sonando (título emitido)")) }
                } }
                tbody {
                    @for r in &radios {
                        @let s = statuses.iter().find(|s| s.radio_id == r.id);
                        tr {
                            td { (r.name) @if !r.enabled { " (" (view.t("disabled", "deshabilitada")) ")" } }
                            @if let Some(s) = s {
                                td { (state_name(view, s, now)) }
                                td { (view.when(s.since)) }
                                td { (s.last_sample_end.map(|t| view.when(t)).unwrap_or_default()) }
                                td.num { (format!("{:.0}", s.silence_s)) }
                                td.num { (s.reconnects) }
                                td { (s.title.as_deref().unwrap_or("")) }
                            } @else {
                                td colspan="6" { (view.t("no report yet", "todavía sin informe")) }
                            }
                        }
                    }
                }
            }
            @if radios.is_empty() { p { (view.t("No stations yet.", "Todavía no hay emisoras.")) } }
        })
    };
    respond(
        &web,
        view,
        &viewer,
        view.t("Stations", "Emisoras"),
        body.await,
    )
    .await
}

// --- claims and disputes

pub async fn claims(
    State(web): State<Web>,
    view: View,
    viewer: Viewer,
    Query(page): Query<After>,
) -> Response {
    let body = async {
        check(&viewer)?;
        let rel = &web.storage.relational;
        let claims = rel
            .claims(ClaimState::Pending, page.after.unwrap_or(0), LIST)
            .await?;
        let mut rows = Vec::new();
        for c in &claims {
            let music = rel.music(c.music_id).await?;
            let owner = match music.as_ref().and_then(|m| m.owner) {
                Some(id) => rel.user(id).await?.map(|u| u.email),
                None => None,
            };
            let claimant = rel.user(c.claimant_id).await?.map(|u| u.email);
            rows.push((c, music.map(|m| m.title), owner, claimant));
        }
        Ok(html! {
            h1 { (view.t("Ownership claims", "Reclamos de propiedad")) }
            p.hint { (view.t("A musician uploaded audio that already belongs to someone else. Granting gives the track to the claimant.",
                "Un músico subió un audio que ya pertenece a otra persona. Aceptar le da el tema a quien reclama.")) }
            table {
                thead { tr {
                    th scope="col" { (view.t("Track", "Tema")) }
                    th scope="col" { (view.t("Owner", "Dueño")) }
                    th scope="col" { (view.t("Claimed by", "Reclamado por")) }
                    th scope="col" { (view.t("Since", "Desde")) }
                    th scope="col" { (view.t("Decide", "Decidir")) }
                } }
                tbody {
                    @for (c, title, owner, claimant) in &rows {
                        tr {
                            td { (title.as_deref().unwrap_or("?")) }
                            td { (owner.as_deref().unwrap_or("—")) }
                            td { (claimant.as_deref().unwrap_or("?")) }
                            td { (view.when(c.created_at)) }
                            td { (decide(&viewer, &format!("/admin/claims/{}", c.id), "grant",
                                view.t("Grant", "Aceptar"), view.t("Reject", "Rechazar"))) }
                        }
                    }
                }
            }
            (next_page(view, "/admin/claims", claims.len(), claims.last().map(|c| c.id.to_string())))
            @if rows.is_empty() { p { (view.t("No pending claims.", "No hay reclamos pendientes.")) } }
        })
    };
    respond(
        &web,
        view,
        &viewer,
        view.t("Claims", "Reclamos"),
        body.await,
    )
    .await
}

/// Two buttons, yes and no, posting `field=true|false` to `action`.
fn decide(viewer: &Viewer, action: &str, field: &str, yes: &str, no: &str) -> Markup {
    html! {
        @for (value, label) in [("true", yes), ("false", no)] {
            form.inline method="post" action=(action) {
                input type="hidden" name="csrf" value=(viewer.csrf);
                input type="hidden" name=(field) value=(value);
                button type="submit" { (label) }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ClaimDecision {
    csrf: String,
    grant: bool,
}

pub async fn settle_claim(
    State(web): State<Web>,
    view: View,
    viewer: Viewer,
    Path(id): Path<i64>,
    Form(f): Form<ClaimDecision>,
) -> Response {
    let outcome = async {
        check(&viewer)?;
        viewer.check_csrf(&f.csrf)?;
        web.storage
            .relational
            .resolve_claim(id, f.grant)
            .await?
            .ok_or(PageError::NotFound)?;
        tracing::info!(
            claim = id,
            grant = f.grant,
            by = viewer.user.id,
            "claim settled"
        );
        Ok("/admin/claims".to_owned())
    };
    done(view, &viewer, outcome.await)
}

pub async fn disputes(
    State(web): State<Web>,
    view: View,
    viewer: Viewer,
    Query(page): Query<After>,
) -> Response {
    let body = async {
        check(&viewer)?;
        let rel = &web.storage.relational;
        let open = rel
            .disputes(DisputeState::Open, page.after.unwrap_or(0), LIST)
            .await?;
        let mut rows = Vec::new();
        for d in &open {
            rows.push((d, rel.user(d.user_id).await?.map(|u| u.email)));
        }
        Ok(html! {
            h1 { (view.t("Play disputes", "Reclamos de reproducción")) }
            p.hint { (view.t("A musician thinks a play is wrong. Upholding records that the play was wrong; the play stays for the record.",
                "Un músico cree que una reproducción es incorrecta. Dar la razón registra que la reproducción era incorrecta; la reproducción queda registrada.")) }
            table {
                thead { tr {
                    th scope="col" { (view.t("Play", "Reproducción")) }
                    th scope="col" { (view.t("By", "Por")) }
                    th scope="col" { (view.t("Reason", "Motivo")) }
                    th scope="col" { (view.t("Since", "Desde")) }
                    th scope="col" { (view.t("Decide", "Decidir")) }
                } }
                tbody {
                    @for (d, who) in &rows {
                        tr {
                            td { a href={ "/plays/" (d.play_id) } { "#" (d.play_id) } }
                            td { (who.as_deref().unwrap_or("?")) }
                            td { (d.reason) }
                            td { (view.when(d.created_at)) }
                            td { (decide(&viewer, &format!("/admin/disputes/{}", d.id), "upheld",
                                view.t("Uphold", "Dar la razón"), view.t("Reject", "Rechazar"))) }
                        }
                    }
                }
            }
            (next_page(view, "/admin/disputes", open.len(), open.last().map(|d| d.id.to_string())))
            @if rows.is_empty() { p { (view.t("No open disputes.", "No hay reclamos abiertos.")) } }
        })
    };
    respond(
        &web,
        view,
        &viewer,
        view.t("Disputes", "Reclamos"),
        body.await,
    )
    .await
}

#[derive(Debug, Deserialize)]
pub struct DisputeDecision {
    csrf: String,
    upheld: bool,
}

pub async fn settle_dispute(
    State(web): State<Web>,
    view: View,
    viewer: Viewer,
    Path(id): Path<i64>,
    Form(f): Form<DisputeDecision>,
) -> Response {
    let outcome = async {
        check(&viewer)?;
        viewer.check_csrf(&f.csrf)?;
        web.storage
            .relational
            .resolve_dispute(id, f.upheld)
            .await?
            .ok_or(PageError::NotFound)?;
        tracing::info!(
            dispute = id,
            upheld = f.upheld,
            by = viewer.user.id,
            "dispute settled"
        );
        Ok("/admin/disputes".to_owned())
    };
    done(view, &viewer, outcome.await)
}

// --- dead letters

#[derive(Debug, Deserialize)]
pub struct DeadQuery {
    queue: Option<String>,
    /// The last entry of the page before.
    after: Option<String>,
}

pub async fn dead_letters(
    State(web): State<Web>,
    view: View,
    viewer: Viewer,
    Query(q): Query<DeadQuery>,
) -> Response {
    let body = async {
        check(&viewer)?;
        let queue = match q.queue.as_deref() {
            None => Queue::Samples,
            Some(name) => Queue::from_name(name).ok_or(PageError::NotFound)?,
        };
        let letters = web
            .storage
            .queue
            .dead_letters(queue, q.after.as_deref(), LIST as usize)
            .await?;
        Ok(html! {
            h1 { (view.t("Dead letters", "Mensajes fallidos")) }
            nav.periods aria-label=(view.t("Queue", "Cola")) {
                @for other in Queue::ALL {
                    @if other == queue { strong aria-current="page" { (other.name()) } }
                    @else { a href={ "/admin/dead-letters?queue=" (other.name()) } { (other.name()) } }
                }
            }
            p.hint { (view.t("Work that failed too often, or was refused, and was set aside so that the queue moves on. Requeue it once the cause is fixed, or discard it.",
                "Trabajo que falló demasiadas veces, o fue rechazado, y se apartó para que la cola siga. Vuelva a encolarlo cuando la causa esté resuelta, o descártelo.")) }
            table {
                thead { tr {
                    th scope="col" { (view.t("Set aside", "Apartado")) }
                    th scope="col" { (view.t("Reason", "Motivo")) }
                    th.num scope="col" { (view.t("Deliveries", "Entregas")) }
                    th scope="col" { (view.t("Entry", "Entrada")) }
                    th scope="col" { (view.t("Do", "Hacer")) }
                } }
                tbody {
                    @for l in &letters {
                        @let action = format!("/admin/dead-letters/{}/{}", queue.name(), l.id);
                        tr {
                            td { (view.when(l.dead_at)) }
                            td { (l.reason) }
                            td.num { (l.deliveries) }
                            td { code { (String::from_utf8_lossy(&l.payload[..l.payload.len().min(120)])) } }
                            td {
                                @for (value, label) in [("requeue", view.t("Requeue", "Reencolar")), ("discard", view.t("Discard", "Descartar"))] {
                                    form.inline method="post" action=(action) {
                                        input type="hidden" name="csrf" value=(viewer.csrf);
                                        input type="hidden" name="action" value=(value);
                                        button type="submit" { (label) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            (next_page(view, &format!("/admin/dead-letters?queue={}", queue.name()), letters.len(), letters.last().map(|l| l.id.clone())))
            @if letters.is_empty() { p { (view.t("Nothing was set aside.", "No se apartó nada.")) } }
        })
    };
    respond(
        &web,
        view,
        &viewer,
        view.t("Dead letters", "Mensajes fallidos"),
        body.await,
    )
    .await
}

#[derive(Debug, Deserialize)]
pub struct DeadAction {
    csrf: String,
    action: String,
}

pub async fn dead_letter(
    State(web): State<Web>,
    view: View,
    viewer: Viewer,
    Path((queue, id)): Path<(String, String)>,
    Form(f): Form<DeadAction>,
) -> Response {
    let outcome = async {
        check(&viewer)?;
        viewer.check_csrf(&f.csrf)?;
        let queue = Queue::from_name(&queue).ok_or(PageError::NotFound)?;
        let q = &web.storage.queue;
        let found = match f.action.as_str() {
            "requeue" => q.requeue_dead_letter(queue, &id).await?,
            "discard" => q.discard_dead_letter(queue, &id).await?,
            _ => return Err(PageError::BadInput("unknown action".into())),
        };
        if !found {
            return Err(PageError::NotFound);
        }
        tracing::info!(queue = queue.name(), dead_letter = %id, action = %f.action, by = viewer.user.id, "dead letter handled");
        Ok(format!("/admin/dead-letters?queue={}", queue.name()))
    };
    done(view, &viewer, outcome.await)
}
