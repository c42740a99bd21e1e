//! A musician's catalogue (an administrator's: all of it): upload a track
//! (title, artist, ISRC), see each track's state, delete one. The upload
//! goes through the same path as the hash-generator's API
//! ([`hendu_service::catalogue`]): spooled while hashed, fingerprinted behind
//! the CPU queue, stored with its owner or recorded as a claim. The form
//! works without JavaScript; the script shows the upload's progress.

use axum::Form;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use hendu_service::ApiError;
use hendu_service::catalogue::{self, Stored, Uploader};
use hendu_storage::model::{Music, MusicId, MusicState, Role};
use maud::{Markup, html};
use serde::Deserialize;

use crate::Web;
use crate::error::{PageError, error_page};
use crate::session::CsrfOnly;
use crate::view::{View, Viewer, length, page};

/// Tracks per page.
pub const PAGE: u32 = 100;
/// Uploads still being fingerprinted shown above the list (at most).
const INGESTING: u32 = 100;

fn check(viewer: &Viewer) -> Result<(), PageError> {
    match viewer.user.role {
        Role::Musician | Role::Admin => Ok(()),
        Role::Operator => Err(PageError::Api(hendu_service::auth::forbidden(
            "keep a catalogue",
        ))),
    }
}

/// The viewer's tracks in `state`, after `after`, in id order.
async fn tracks(
    web: &Web,
    viewer: &Viewer,
    state: MusicState,
    after: MusicId,
    limit: u32,
) -> Result<Vec<Music>, PageError> {
    let rel = &web.storage.relational;
    Ok(if viewer.user.role == Role::Admin {
        rel.musics(state, after, limit).await?
    } else {
        rel.musics_owned(viewer.user.id, state, after, limit)
            .await?
    })
}

/// What the page says above the list after a change.
#[derive(Debug, Clone, Copy)]
enum Notice {
    Added(MusicId),
    Again(MusicId),
    Deleted,
    Claimed,
}

#[derive(Debug, Default, Deserialize)]
pub struct CatalogueQuery {
    after: Option<MusicId>,
    added: Option<MusicId>,
    again: Option<MusicId>,
    deleted: Option<u8>,
    claimed: Option<u8>,
}

impl CatalogueQuery {
    fn notice(&self) -> Option<Notice> {
        self.added
            .map(Notice::Added)
            .or(self.again.map(Notice::Again))
            .or(self.deleted.map(|_| Notice::Deleted))
            .or(self.claimed.map(|_| Notice::Claimed))
    }
}

fn state_name(view: View, state: MusicState) -> &'static str {
    match state {
        MusicState::Ingesting => view.t("being fingerprinted", "en proceso"),
        MusicState::Ready => view.t("recognised in audio", "se reconoce"),
        MusicState::Deleting => view.t("being deleted", "borrándose"),
        MusicState::Deleted => view.t("deleted", "borrado"),
    }
}

async fn render(
    web: &Web,
    view: View,
    viewer: &Viewer,
    after: MusicId,
    notice: Option<Notice>,
    problem: Option<&str>,
) -> Result<Markup, PageError> {
    check(viewer)?;
    let ingesting = if after == 0 {
        tracks(web, viewer, MusicState::Ingesting, 0, INGESTING).await?
    } else {
        Vec::new()
    };
    let ready = tracks(web, viewer, MusicState::Ready, after, PAGE).await?;
    let next = (ready.len() == PAGE as usize)
        .then(|| ready.last().map(|m| m.id))
        .flatten();
    let admin = viewer.user.role == Role::Admin;
    let notice_text = notice.map(|n| match n {
        Notice::Added(id) => (
            id,
            view.t(
                "Track added: it is recognised from now on.",
                "Tema agregado: se reconoce desde ahora.",
            ),
        ),
        Notice::Again(id) => (
            id,
            view.t(
                "This audio was already in your catalogue: nothing changed.",
                "Este audio ya estaba en su catálogo: nada cambió.",
            ),
        ),
        Notice::Deleted => (
            0,
            view.t(
                "Track deleted: it is no longer recognised; its plays stay.",
                "Tema borrado: ya no se reconoce; sus reproducciones quedan.",
            ),
        ),
        Notice::Claimed => (
            0,
            view.t(
                "This audio is already in the catalogue under another owner. Your claim was recorded for an administrator.",
                "Este audio ya está en el catálogo con otro dueño. Su reclamo quedó registrado para un administrador.",
            ),
        ),
    });
    let rows = ingesting.iter().chain(ready.iter());
    Ok(html! {
        h1 { (view.t("Catalogue", "Catálogo")) }
        @if let Some((id, text)) = notice_text {
            p.notice role="status" data-music=(id) { (text) }
        }
        @if let Some(text) = problem {
            p.problem role="alert" { (text) }
        }
        section.narrow {
            h2 { (view.t("Add a track", "Agregar un tema")) }
            form #upload method="post" action="/catalogue" enctype="multipart/form-data"
                data-sending=(view.t("Sending", "Enviando"))
                data-working=(view.t("Fingerprinting…", "Procesando…"))
                data-failed=(view.t("The connection failed; nothing was stored. Try again.", "La conexión falló; no se guardó nada. Intente de nuevo.")) {
                // First, so that the token is checked before the audio is read.
                input type="hidden" name="csrf" value=(viewer.csrf);
                label for="file" { (view.t("Audio file", "Archivo de audio")) }
                input #file type="file" name="file" accept="audio/*,.opus,.ogg,.flac,.mp3,.m4a,.wav" required;
                label for="title" { (view.t("Title (default: the file's name)", "Título (por omisión: el nombre del archivo)")) }
                input #title type="text" name="title" maxlength="255";
                label for="artist" { (view.t("Artist", "Artista")) }
                input #artist type="text" name="artist" maxlength="255";
                label for="isrc" { "ISRC " (view.t("(optional, e.g. PYA012400001)", "(opcional, p. ej. PYA012400001)")) }
                input #isrc type="text" name="isrc" maxlength="15" pattern="[A-Za-z]{2}-?[A-Za-z0-9]{3}-?[0-9]{2}-?[0-9]{5}";
                progress #upload-progress max="100" value="0" hidden {}
                p #upload-status role="status" {}
                button type="submit" { (view.t("Upload", "Subir")) }
            }
        }
        h2 { (view.t("Tracks", "Temas")) }
        @if ingesting.is_empty() && ready.is_empty() {
            p { (view.t("No tracks yet.", "Todavía no hay temas.")) }
        } @else {
            table #tracks {
                thead { tr {
                    th scope="col" { (view.t("Title", "Título")) }
                    th scope="col" { (view.t("Artist", "Artista")) }
                    th scope="col" { "ISRC" }
                    th scope="col" { (view.t("Length", "Duración")) }
                    @if admin { th scope="col" { (view.t("Owner", "Dueño")) } }
                    th scope="col" { (view.t("State", "Estado")) }
                    th scope="col" { (view.t("Added", "Agregado")) }
                    th scope="col" { (view.t("Delete", "Borrar")) }
                } }
                tbody {
                    @for m in rows {
                        tr data-music=(m.id) {
                            td { (m.title) }
                            td { (m.artist.as_deref().unwrap_or("")) }
                            td { (m.isrc.as_deref().unwrap_or("")) }
                            td.num { (length(f64::from(m.duration_ms) / 1000.0)) }
                            @if admin { td { (m.owner.map(|o| o.to_string()).unwrap_or_default()) } }
                            td { (state_name(view, m.state)) }
                            td { (view.when(m.created_at)) }
                            td {
                                @if m.state == MusicState::Ready {
                                    form.inline method="post" action={ "/catalogue/" (m.id) "/delete" } {
                                        input type="hidden" name="csrf" value=(viewer.csrf);
                                        button type="submit" aria-label={ (view.t("Delete ", "Borrar ")) (m.title) } {
                                            (view.t("Delete", "Borrar"))
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if let Some(next) = next {
                p { a href={ "/catalogue?after=" (next) } { (view.t("Next tracks", "Temas siguientes")) } }
            }
        }
    })
}

fn catalogue_page(view: View, viewer: &Viewer, status: StatusCode, body: Markup) -> Response {
    let mut r = page(view, Some(viewer), view.t("Catalogue", "Catálogo"), body).into_response();
    *r.status_mut() = status;
    r
}

pub async fn show(
    State(web): State<Web>,
    view: View,
    viewer: Viewer,
    Query(q): Query<CatalogueQuery>,
) -> Response {
    match render(&web, view, &viewer, q.after.unwrap_or(0), q.notice(), None).await {
        Ok(body) => catalogue_page(view, &viewer, StatusCode::OK, body),
        Err(e) => error_page(view, Some(&viewer), e),
    }
}

/// `POST /catalogue`: the form's first field must be the session's token
/// (checked before any audio is read), then the audio and its details.
pub async fn upload(
    State(web): State<Web>,
    view: View,
    viewer: Viewer,
    mut form: Multipart,
) -> Response {
    if let Err(e) = check(&viewer) {
        return error_page(view, Some(&viewer), e);
    }
    let token = match form.next_field().await {
        Ok(Some(field)) if field.name() == Some("csrf") => {
            catalogue::text_field(field, "csrf").await.ok()
        }
        _ => None,
    };
    if let Err(e) = viewer.check_csrf(token.as_deref().unwrap_or("")) {
        return error_page(view, Some(&viewer), e);
    }
    let uploader = Uploader {
        user: &viewer.user,
        role: viewer.user.role,
    };
    let stored = async {
        let upload = catalogue::receive(form, &web.catalogue.spool).await?;
        catalogue::store(&web.catalogue, upload, uploader).await
    };
    match stored.await {
        Ok(Stored::Music(m)) if m.created => {
            tracing::info!(
                music = m.record.id,
                by = viewer.user.id,
                "track uploaded on the web"
            );
            Redirect::to(&format!("/catalogue?added={}", m.record.id)).into_response()
        }
        Ok(Stored::Music(m)) => {
            Redirect::to(&format!("/catalogue?again={}", m.record.id)).into_response()
        }
        Ok(Stored::Claimed) => Redirect::to("/catalogue?claimed=1").into_response(),
        Err(e) => refused(&web, view, &viewer, &e).await,
    }
}

/// The catalogue again, saying why the upload was refused, with its status.
async fn refused(web: &Web, view: View, viewer: &Viewer, e: &ApiError) -> Response {
    if e.status.is_server_error() && e.status != StatusCode::SERVICE_UNAVAILABLE {
        tracing::warn!(error = %e.message, "upload failed");
    }
    let text = format!(
        "{} {}",
        view.t("The upload was refused:", "La subida fue rechazada:"),
        e.message
    );
    match render(web, view, viewer, 0, None, Some(&text)).await {
        Ok(body) => catalogue_page(view, viewer, e.status, body),
        Err(page_error) => error_page(view, Some(viewer), page_error),
    }
}

/// `POST /catalogue/{id}/delete`: the track is no longer recognised; its
/// plays stay (royalties were paid on them).
pub async fn delete(
    State(web): State<Web>,
    view: View,
    viewer: Viewer,
    Path(id): Path<MusicId>,
    Form(f): Form<CsrfOnly>,
) -> Response {
    let deleted = async {
        check(&viewer)?;
        viewer.check_csrf(&f.csrf)?;
        let visible = web
            .storage
            .relational
            .music(id)
            .await?
            .filter(|m| m.state == MusicState::Ready)
            .filter(|m| viewer.user.role == Role::Admin || m.owner == Some(viewer.user.id));
        if visible.is_none() {
            return Err(PageError::NotFound);
        }
        web.storage.delete_music(id).await?;
        tracing::info!(music = id, by = viewer.user.id, "track deleted on the web");
        Ok(())
    };
    match deleted.await {
        Ok(()) => Redirect::to("/catalogue?deleted=1").into_response(),
        Err(e) => error_page(view, Some(&viewer), e),
    }
}
