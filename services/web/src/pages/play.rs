//! One play: what was heard, where, when and for how long, how sure the
//! engine was, and the evidence (the source's samples over the play, with
//! the station's stream title at the time as a hint); and a way to dispute it.

use axum::Form;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use hendu_storage::model::{Play, Role, SampleSpan};
use hendu_storage::queries::{PlayFilter, PlayOrder, PlayPage, PlayRow, PlayScope};
use maud::{Markup, html};
use serde::Deserialize;
use time::Duration;

use crate::Web;
use crate::error::{PageError, error_page};
use crate::view::{View, Viewer, length, page};

/// Most samples shown as a play's evidence.
const EVIDENCE: u32 = 400;
/// Longest dispute reason.
pub const MAX_REASON: usize = 2000;

/// The play `id` if a viewer with `scope` may see it (another owner's play
/// is not found).
pub(crate) async fn visible(web: &Web, scope: PlayScope, id: i64) -> Result<PlayRow, PageError> {
    let mut filter = PlayFilter::scoped(scope);
    filter.play = Some(id);
    let page = PlayPage {
        order: PlayOrder::Recorded,
        descending: false,
        offset: 0,
        limit: 1,
    };
    web.storage
        .relational
        .play_rows(&filter, page)
        .await?
        .into_iter()
        .next()
        .ok_or(PageError::NotFound)
}

/// The samples of `p`'s source that overlap it: each is 30 s long, so the
/// first may have begun before it.
pub(crate) async fn evidence(web: &Web, p: &Play) -> Result<Vec<SampleSpan>, PageError> {
    Ok(web
        .storage
        .documents
        .sample_spans(
            p.source,
            p.started_at - Duration::seconds(60),
            p.ended_at,
            EVIDENCE,
        )
        .await?
        .into_iter()
        .filter(|s| s.end() > p.started_at)
        .collect())
}

pub async fn show(
    State(web): State<Web>,
    view: View,
    viewer: Viewer,
    Path(id): Path<i64>,
) -> Response {
    match render(&web, view, &viewer, id, None).await {
        Ok(body) => page(view, Some(&viewer), view.t("Play", "Reproducción"), body).into_response(),
        Err(e) => error_page(view, Some(&viewer), e),
    }
}

async fn render(
    web: &Web,
    view: View,
    viewer: &Viewer,
    id: i64,
    problem: Option<&str>,
) -> Result<Markup, PageError> {
    let row = visible(web, viewer.scope(), id).await?;
    let p = &row.play;
    let samples = evidence(web, p).await?;
    let disputes = web.storage.relational.disputes_of(p.id).await?;
    let mine = disputes.iter().find(|d| d.user_id == viewer.user.id);
    let kind = match p.source {
        hendu_storage::model::Source::Radio(_) => view.t("station", "emisora"),
        hendu_storage::model::Source::Device(_) => view.t("sensor", "sensor"),
    };
    Ok(html! {
        h1 { (row.title) @if let Some(a) = &row.artist { " · " (a) } }
        dl.facts {
            dt { (view.t("Source", "Fuente")) } dd { (row.source_name) " (" (kind) ")" }
            dt { (view.t("Location", "Lugar")) } dd { (p.location.as_deref().unwrap_or("—")) }
            dt { (view.t("Start", "Inicio")) } dd { (view.when(p.started_at)) }
            dt { (view.t("End", "Fin")) } dd { (view.when(p.ended_at)) }
            dt { (view.t("Played for", "Duración")) } dd { (length((p.ended_at - p.started_at).as_seconds_f64())) }
            dt { (view.t("Confidence", "Confianza")) } dd { (format!("{:.2}", p.score)) }
            dt { (view.t("Play id", "Id de reproducción")) } dd { (p.id) }
        }
        section {
            h2 #evidence { (view.t("Evidence", "Evidencia")) }
            p.hint { (view.t(
                "The samples of this source that overlap the play. A station's stream title is what the station itself announced at the time: a hint, not proof.",
                "Las muestras de esta fuente que se solapan con la reproducción. El título de una emisora es lo que la propia emisora anunciaba en ese momento: un indicio, no una prueba.")) }
            @if samples.is_empty() {
                p { (view.t("The samples of this play are no longer stored.", "Las muestras de esta reproducción ya no se guardan.")) }
            } @else {
                table aria-labelledby="evidence" {
                    thead { tr {
                        th scope="col" { (view.t("Captured", "Capturada")) }
                        th scope="col" { (view.t("Length", "Duración")) }
                        th scope="col" { (view.t("Stream title", "Título emitido")) }
                        th scope="col" { (view.t("Sample", "Muestra")) }
                    } }
                    tbody {
                        @for s in &samples {
                            tr {
                                td { (view.when(s.captured_at)) }
                                td.num { (length(f64::from(s.duration_ms) / 1000.0)) }
                                td { (s.title.as_deref().unwrap_or("")) }
                                td { code { (s.id) } }
                            }
                        }
                    }
                }
            }
        }
        section {
            h2 { (view.t("Dispute", "Reclamo")) }
            @if let Some(d) = mine {
                p { (view.t("You disputed this play: ", "Usted reclamó esta reproducción: ")) q { (d.reason) } " (" (d.state.as_str()) ")" }
            } @else if viewer.user.role == Role::Musician {
                @if let Some(problem) = problem {
                    p.problem role="alert" { (problem) }
                }
                form method="post" action={ "/plays/" (p.id) "/dispute" } {
                    input type="hidden" name="csrf" value=(viewer.csrf);
                    label for="reason" { (view.t("Why is this play wrong?", "¿Por qué es incorrecta esta reproducción?")) }
                    textarea #reason name="reason" rows="3" maxlength=(MAX_REASON) required {}
                    button type="submit" { (view.t("Dispute this play", "Reclamar esta reproducción")) }
                }
            } @else {
                @for d in &disputes {
                    p { q { (d.reason) } " (" (d.state.as_str()) ")" }
                }
                @if disputes.is_empty() { p { (view.t("Nobody disputed this play.", "Nadie reclamó esta reproducción.")) } }
            }
        }
        p { a href="/plays" { (view.t("All plays", "Todas las reproducciones")) } }
    })
}

#[derive(Debug, Deserialize)]
pub struct DisputeForm {
    csrf: String,
    reason: String,
}

/// A musician's dispute of one of their plays, for an administrator.
pub async fn dispute(
    State(web): State<Web>,
    view: View,
    viewer: Viewer,
    Path(id): Path<i64>,
    Form(f): Form<DisputeForm>,
) -> Response {
    let outcome = async {
        viewer.check_csrf(&f.csrf)?;
        let row = visible(&web, viewer.scope(), id).await?;
        if viewer.user.role != Role::Musician {
            return Err(PageError::Api(hendu_service::auth::forbidden(
                "dispute plays (musicians dispute their own)",
            )));
        }
        let reason = f.reason.trim();
        let problem = if reason.is_empty() {
            Some(view.t(
                "Say why the play is wrong.",
                "Diga por qué la reproducción es incorrecta.",
            ))
        } else if reason.chars().count() > MAX_REASON
            || reason
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\r')
        {
            Some(view.t(
                "The reason is too long or has characters that cannot be shown.",
                "El motivo es demasiado largo o tiene caracteres que no se pueden mostrar.",
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            let body = render(&web, view, &viewer, id, Some(problem)).await?;
            let mut r =
                page(view, Some(&viewer), view.t("Play", "Reproducción"), body).into_response();
            *r.status_mut() = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
            return Ok(r);
        }
        web.storage
            .relational
            .add_dispute(row.play.id, viewer.user.id, reason)
            .await?;
        Ok(Redirect::to(&format!("/plays/{id}")).into_response())
    };
    outcome
        .await
        .unwrap_or_else(|e| error_page(view, Some(&viewer), e))
}
