//! The plays table: filtered by track, source, location and period,
//! sorted by any column, paged; and the same plays as CSV.

use axum::body::Body;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use hendu_storage::queries::{PlayFilter, PlayOrder, PlayPage, PlayRow};
use maud::{Markup, html};
use serde::Deserialize;

use crate::Web;
use crate::error::{PageError, error_page};
use crate::pages::filters::{Choices, Filters};
use crate::view::{View, Viewer, clock, day, length, page};

/// Rows per page of the table.
pub const PAGE: u32 = 50;
/// Rows per store read while writing a CSV.
const CSV_BATCH: u32 = 1000;
/// Most rows in one CSV (narrow the period for more).
pub const CSV_MAX: u64 = 1_000_000;

#[derive(Debug, Deserialize)]
pub struct TableQuery {
    #[serde(flatten)]
    filters: Filters,
    sort: Option<String>,
    dir: Option<String>,
    page: Option<u32>,
}

const COLUMNS: [(&str, PlayOrder); 5] = [
    ("start", PlayOrder::Started),
    ("track", PlayOrder::Track),
    ("source", PlayOrder::Source),
    ("location", PlayOrder::Location),
    ("duration", PlayOrder::Duration),
];

fn order(sort: Option<&str>) -> (&'static str, PlayOrder) {
    COLUMNS
        .iter()
        .find(|(name, _)| Some(*name) == sort)
        .copied()
        .unwrap_or(COLUMNS[0])
}

pub async fn table(
    State(web): State<Web>,
    view: View,
    viewer: Viewer,
    Query(q): Query<TableQuery>,
) -> Response {
    match render(&web, view, &viewer, &q).await {
        Ok(body) => {
            page(view, Some(&viewer), view.t("Plays", "Reproducciones"), body).into_response()
        }
        Err(e) => error_page(view, Some(&viewer), e),
    }
}

async fn render(
    web: &Web,
    view: View,
    viewer: &Viewer,
    q: &TableQuery,
) -> Result<Markup, PageError> {
    let filter = q.filters.to_filter(view, viewer)?;
    let (sort, by) = order(q.sort.as_deref());
    let descending = q.dir.as_deref() != Some("asc");
    let rel = &web.storage.relational;
    let total = rel.count_plays(&filter).await?;
    let pages = total.div_ceil(u64::from(PAGE)).max(1);
    let number = u64::from(q.page.unwrap_or(1).max(1)).min(pages);
    let rows = rel
        .play_rows(
            &filter,
            PlayPage {
                order: by,
                descending,
                offset: u32::try_from((number - 1) * u64::from(PAGE)).unwrap_or(u32::MAX),
                limit: PAGE,
            },
        )
        .await?;
    let choices = Choices::of(web, viewer).await?;
    let kept = q.filters.query();
    let link = |sort: &str, dir: &str, page: u64| {
        let mut parts = vec![
            format!("sort={sort}"),
            format!("dir={dir}"),
            format!("page={page}"),
        ];
        if !kept.is_empty() {
            parts.push(kept.clone());
        }
        format!("/plays?{}", parts.join("&"))
    };
    let dir = if descending { "desc" } else { "asc" };
    let headings = [
        view.t("Start", "Inicio"),
        view.t("Track", "Tema"),
        view.t("Source", "Fuente"),
        view.t("Location", "Lugar"),
        view.t("Played", "Duración"),
    ];
    let selected = |v: &Option<String>, key: &str| v.as_deref() == Some(key);
    Ok(html! {
        h1 { (view.t("Plays", "Reproducciones")) }
        form.filters method="get" action="/plays" {
            div {
                label for="track" { (view.t("Track", "Tema")) }
                select #track name="track" {
                    option value="" { (view.t("All", "Todos")) }
                    @for t in &choices.tracks {
                        option value=(t.key) selected[selected(&q.filters.track, &t.key)] { (t.label) }
                    }
                }
            }
            div {
                label for="source" { (view.t("Source", "Fuente")) }
                select #source name="source" {
                    option value="" { (view.t("All", "Todas")) }
                    @for t in &choices.sources {
                        option value=(t.key) selected[selected(&q.filters.source, &t.key)] { (t.label) }
                    }
                }
            }
            div {
                label for="location" { (view.t("Location", "Lugar")) }
                select #location name="location" {
                    option value="" { (view.t("All", "Todos")) }
                    @for t in &choices.locations {
                        option value=(t.key) selected[selected(&q.filters.location, &t.key)] { (t.label) }
                    }
                }
            }
            div {
                label for="from" { (view.t("From", "Desde")) }
                input #from type="date" name="from" value=(q.filters.from.as_deref().unwrap_or(""));
            }
            div {
                label for="to" { (view.t("To", "Hasta")) }
                input #to type="date" name="to" value=(q.filters.to.as_deref().unwrap_or(""));
            }
            input type="hidden" name="sort" value=(sort);
            input type="hidden" name="dir" value=(dir);
            button type="submit" { (view.t("Filter", "Filtrar")) }
        }
        p.summary {
            (total) " " (view.t("plays", "reproducciones"))
            " · "
            a href={ "/plays.csv" @if !kept.is_empty() { "?" (kept) } } download { (view.t("Export CSV", "Exportar CSV")) }
        }
        table.plays {
            caption { (view.t("Plays", "Reproducciones")) ", " (view.t("page", "página")) " " (number) " / " (pages) }
            thead {
                tr {
                    @for ((name, _), heading) in COLUMNS.iter().zip(headings) {
                        @let here = *name == sort;
                        @let next = if here && descending { "asc" } else { "desc" };
                        th scope="col" aria-sort=(if here { if descending { "descending" } else { "ascending" } } else { "none" }) {
                            a href=(link(name, next, 1)) { (heading) @if here { (if descending { " ↓" } else { " ↑" }) } }
                        }
                    }
                    th scope="col" { (view.t("Confidence", "Confianza")) }
                }
            }
            tbody {
                @for r in &rows {
                    tr {
                        td { a href={ "/plays/" (r.play.id) } { (view.when(r.play.started_at)) } }
                        td { (r.title) @if let Some(a) = &r.artist { " · " (a) } }
                        td { (r.source_name) }
                        td { (r.play.location.as_deref().unwrap_or("")) }
                        td.num { (length(seconds(r))) }
                        td.num { (format!("{:.2}", r.play.score)) }
                    }
                }
            }
        }
        @if rows.is_empty() {
            p { (view.t("No plays match these filters.", "Ninguna reproducción coincide con estos filtros.")) }
        }
        nav.pages aria-label=(view.t("Pages", "Páginas")) {
            @if number > 1 {
                a rel="prev" href=(link(sort, dir, number - 1)) { "← " (view.t("Newer", "Anterior")) }
            }
            " " (view.t("Page", "Página")) " " (number) " / " (pages) " "
            @if number < pages {
                a rel="next" href=(link(sort, dir, number + 1)) { (view.t("Older", "Siguiente")) " →" }
            }
        }
    })
}

pub fn seconds(r: &PlayRow) -> f64 {
    (r.play.ended_at - r.play.started_at).as_seconds_f64()
}

/// The CSV columns, documented in docs/web.md.
pub const CSV_HEADER: &str = "play_id,started_at_utc,date,start_time,end_time,utc_offset,duration_s,title,artist,isrc,source_kind,source,location,confidence\r\n";

/// A text cell: quoted when needed, and never read as a formula by a
/// spreadsheet (a leading `=`, `+`, `-`, `@`, tab or return gets a `'`).
pub fn cell(s: &str) -> String {
    let guarded = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if guarded.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", guarded.replace('"', "\"\""))
    } else {
        guarded
    }
}

/// One play as a CSV line.
pub fn csv_line(view: View, r: &PlayRow) -> String {
    let start = view.local(r.play.started_at);
    let end = view.local(r.play.ended_at);
    let utc = r.play.started_at;
    format!(
        "{},{}T{}.{:03}Z,{},{},{},{},{:.3},{},{},{},{},{},{},{:.3}\r\n",
        r.play.id,
        day(utc.date()),
        clock(utc),
        utc.millisecond(),
        day(start.date()),
        clock(start),
        clock(end),
        view.zone_name(),
        seconds(r),
        cell(&r.title),
        cell(r.artist.as_deref().unwrap_or("")),
        r.isrc.as_deref().unwrap_or(""),
        r.play.source.kind(),
        cell(&r.source_name),
        cell(r.play.location.as_deref().unwrap_or("")),
        r.play.score,
    )
}

/// The filtered plays as CSV, in the order they were recorded, written as
/// they are read (a batch at a time, each read continuing from the last
/// play of the one before); more than [`CSV_MAX`] plays are refused (400)
/// before anything is written.
pub async fn csv(
    State(web): State<Web>,
    view: View,
    viewer: Viewer,
    Query(filters): Query<Filters>,
) -> Response {
    let filter = match filters.to_filter(view, &viewer) {
        Ok(f) => f,
        Err(e) => return error_page(view, Some(&viewer), e),
    };
    match web.storage.relational.count_plays(&filter).await {
        Ok(n) if n > CSV_MAX => {
            let e = PageError::BadInput(format!(
                "{n} {} {CSV_MAX}; {}",
                view.t(
                    "plays are more than one file holds:",
                    "reproducciones son más de las que caben en un archivo:"
                ),
                view.t(
                    "choose a shorter period or one source",
                    "elija un período más corto o una fuente"
                ),
            ));
            return error_page(view, Some(&viewer), e);
        }
        Ok(_) => {}
        Err(e) => return error_page(view, Some(&viewer), e.into()),
    }
    struct Cursor {
        web: Web,
        filter: PlayFilter,
        offset: u64,
        after: i64,
        done: bool,
    }
    let start = Cursor {
        web,
        filter,
        offset: 0,
        after: 0,
        done: false,
    };
    let header = stream::once(async { Ok::<_, std::io::Error>(CSV_HEADER.to_owned()) });
    let body = stream::unfold(start, move |mut c| async move {
        if c.done || c.offset >= CSV_MAX {
            return None;
        }
        let limit =
            u32::try_from((CSV_MAX - c.offset).min(u64::from(CSV_BATCH))).unwrap_or(CSV_BATCH);
        let mut filter = c.filter.clone();
        filter.after = Some(c.after);
        let rows = c
            .web
            .storage
            .relational
            .play_rows(
                &filter,
                PlayPage {
                    order: PlayOrder::Recorded,
                    descending: false,
                    offset: 0,
                    limit,
                },
            )
            .await;
        match rows {
            Ok(rows) => {
                c.done = rows.len() < limit as usize;
                c.offset += rows.len() as u64;
                c.after = rows.last().map_or(c.after, |r| r.play.id);
                let text: String = rows.iter().map(|r| csv_line(view, r)).collect();
                Some((Ok(text), c))
            }
            Err(e) => {
                // The answer has begun: end it short, and say so in the log.
                tracing::error!(error = %e, "a CSV export stopped: the store failed");
                c.done = true;
                Some((Err(std::io::Error::other("the store failed")), c))
            }
        }
    });
    let body = Body::from_stream(futures_util::StreamExt::chain(header, body));
    crate::pages::filters::download(body, "text/csv; charset=utf-8", "hendu-plays.csv")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cell_is_quoted_when_it_must_be_and_never_a_formula() {
        assert_eq!(cell("Mi canción"), "Mi canción");
        assert_eq!(cell("Uno, dos"), "\"Uno, dos\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(cell("-5 dB"), "'-5 dB");
    }
}
