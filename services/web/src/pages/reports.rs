//! Usage reports for rights organisations and operators: the plays of a
//! source (or of every source the viewer may see) over a period, as a
//! printable page, as CSV (the summary here; every play from the plays
//! table's CSV) and as an XLSX workbook with both. The columns are in
//! docs/web.md.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use hendu_storage::queries::{Grouping, PlayFilter, PlayOrder, PlayPage, PlayRow, PlayTotal};
use maud::{Markup, html};
use serde::Deserialize;
use time::{Date, OffsetDateTime};

use crate::Web;
use crate::error::{PageError, error_page};
use crate::pages::filters::{Choices, Filters, download};
use crate::pages::plays::{cell, seconds};
use crate::view::{View, Viewer, clock, day, length, page, parse_day};

/// Plays listed on the report's page (the files have them all).
const ON_PAGE: u32 = 500;
/// Tracks in a report's summary.
const TRACKS: u32 = 10_000;
/// Most plays in a workbook (a spreadsheet is not the place for more; the
/// CSV has no limit but the plays table's).
pub const XLSX_MAX: u32 = 200_000;

#[derive(Debug, Clone, Deserialize)]
pub struct ReportQuery {
    source: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

/// The period of a report: the days asked for, or the last whole month.
fn period(view: View, q: &ReportQuery) -> (String, String) {
    let today = view.local(OffsetDateTime::now_utc()).date();
    let first_of_month = today.replace_day(1).unwrap_or(today);
    let last_month_end = first_of_month.previous_day().unwrap_or(today);
    let last_month_start = last_month_end.replace_day(1).unwrap_or(last_month_end);
    // Written back as understood (a day that does not parse is kept for
    // the filter to refuse by name).
    let or = |v: &Option<String>, d: Date| {
        v.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map_or_else(
                || day(d),
                |s| parse_day(s).map_or_else(|| s.to_owned(), day),
            )
    };
    (or(&q.from, last_month_start), or(&q.to, last_month_end))
}

fn filters(view: View, q: &ReportQuery) -> Filters {
    let (from, to) = period(view, q);
    Filters {
        source: q.source.clone(),
        from: Some(from),
        to: Some(to),
        ..Filters::default()
    }
}

struct Report {
    filters: Filters,
    source_name: String,
    tracks: Vec<PlayTotal>,
    plays: u64,
    seconds: f64,
}

async fn report(
    web: &Web,
    view: View,
    viewer: &Viewer,
    q: &ReportQuery,
) -> Result<(Report, PlayFilter), PageError> {
    let filters = filters(view, q);
    let filter = filters.to_filter(view, viewer)?;
    let tracks = web
        .storage
        .relational
        .play_totals(&filter, Grouping::Track, 0, TRACKS)
        .await?;
    let source_name = match filter.source {
        None => view.t("all your sources", "todas sus fuentes").to_owned(),
        Some(_) => web
            .storage
            .relational
            .play_totals(&filter, Grouping::Source, 0, 1)
            .await?
            .into_iter()
            .next()
            .map_or_else(
                || view.t("(no plays)", "(sin reproducciones)").to_owned(),
                |t| t.label,
            ),
    };
    // Over every play (the list of tracks may be cut short): by source,
    // of which there are far fewer.
    let by_source = web
        .storage
        .relational
        .play_totals(&filter, Grouping::Source, 0, u32::MAX)
        .await?;
    let plays = by_source.iter().map(|t| t.plays).sum();
    let seconds = by_source.iter().map(|t| t.seconds).sum();
    Ok((
        Report {
            filters,
            source_name,
            tracks,
            plays,
            seconds,
        },
        filter,
    ))
}

fn rows_page(limit: u32) -> PlayPage {
    PlayPage {
        order: PlayOrder::Started,
        descending: false,
        offset: 0,
        limit,
    }
}

pub async fn show(
    State(web): State<Web>,
    view: View,
    viewer: Viewer,
    Query(q): Query<ReportQuery>,
) -> Response {
    let rendered = async {
        let (r, filter) = report(&web, view, &viewer, &q).await?;
        let rows = web
            .storage
            .relational
            .play_rows(&filter, rows_page(ON_PAGE))
            .await?;
        let choices = Choices::of(&web, &viewer).await?;
        Ok::<_, PageError>(render(view, &r, &rows, &choices))
    };
    match rendered.await {
        Ok(body) => page(view, Some(&viewer), view.t("Report", "Informe"), body).into_response(),
        Err(e) => error_page(view, Some(&viewer), e),
    }
}

fn render(view: View, r: &Report, rows: &[PlayRow], choices: &Choices) -> Markup {
    let kept = r.filters.query();
    let from = r.filters.from.clone().unwrap_or_default();
    let to = r.filters.to.clone().unwrap_or_default();
    html! {
        h1 { (view.t("Usage report", "Informe de uso")) }
        form.filters.no-print method="get" action="/reports" {
            div {
                label for="source" { (view.t("Source", "Fuente")) }
                select #source name="source" {
                    option value="" { (view.t("All", "Todas")) }
                    @for t in &choices.sources {
                        option value=(t.key) selected[r.filters.source.as_deref() == Some(t.key.as_str())] { (t.label) }
                    }
                }
            }
            div {
                label for="from" { (view.t("From", "Desde")) }
                input #from type="date" name="from" value=(from);
            }
            div {
                label for="to" { (view.t("To", "Hasta")) }
                input #to type="date" name="to" value=(to);
            }
            button type="submit" { (view.t("Show", "Mostrar")) }
        }
        p.summary {
            strong { (r.source_name) } ", " (from) " – " (to) " (" (view.zone_name()) "): "
            strong { (r.plays) } " " (view.t("plays", "reproducciones")) ", "
            strong { (length(r.seconds)) } " " (view.t("played", "en total"))
        }
        p.no-print {
            a href={ "/reports.xlsx?" (kept) } download { (view.t("Download XLSX", "Descargar XLSX")) }
            " · "
            a href={ "/reports/summary.csv?" (kept) } download { (view.t("Summary as CSV", "Resumen en CSV")) }
            " · "
            a href={ "/plays.csv?" (kept) } download { (view.t("Every play as CSV", "Cada reproducción en CSV")) }
        }
        @if r.plays == 0 {
            p { (view.t("No plays in this period.", "No hay reproducciones en este período.")) }
        }
        h2 #by-track { (view.t("By track", "Por tema")) }
        table aria-labelledby="by-track" {
            thead { tr {
                th scope="col" { (view.t("Title", "Título")) }
                th scope="col" { (view.t("Artist", "Artista")) }
                th scope="col" { "ISRC" }
                th.num scope="col" { (view.t("Plays", "Reproducciones")) }
                th.num scope="col" { (view.t("Time played", "Tiempo")) }
            } }
            tbody {
                @for t in &r.tracks {
                    tr {
                        td { (t.label) }
                        td { (t.artist.as_deref().unwrap_or("")) }
                        td { (t.isrc.as_deref().unwrap_or("")) }
                        td.num { (t.plays) }
                        td.num { (length(t.seconds)) }
                    }
                }
            }
        }
        h2 #every-play { (view.t("Every play", "Cada reproducción")) }
        @if u64::try_from(rows.len()).unwrap_or(0) < r.plays {
            p.hint { (view.t("The first ", "Las primeras ")) (rows.len()) (view.t(" plays; the files have them all.", " reproducciones; los archivos las tienen todas.")) }
        }
        table aria-labelledby="every-play" {
            thead { tr {
                th scope="col" { (view.t("Date", "Fecha")) }
                th scope="col" { (view.t("Start", "Inicio")) }
                th.num scope="col" { (view.t("Played", "Duración")) }
                th scope="col" { (view.t("Title", "Título")) }
                th scope="col" { (view.t("Artist", "Artista")) }
                th scope="col" { "ISRC" }
                th scope="col" { (view.t("Source", "Fuente")) }
                th scope="col" { (view.t("Location", "Lugar")) }
            } }
            tbody {
                @for row in rows {
                    @let start = view.local(row.play.started_at);
                    tr {
                        td { (day(start.date())) }
                        td { a href={ "/plays/" (row.play.id) } { (clock(start)) } }
                        td.num { (length(seconds(row))) }
                        td { (row.title) }
                        td { (row.artist.as_deref().unwrap_or("")) }
                        td { (row.isrc.as_deref().unwrap_or("")) }
                        td { (row.source_name) }
                        td { (row.play.location.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
    }
}

/// The summary's columns, documented in docs/web.md.
pub const SUMMARY_HEADER: &str =
    "source,period_from,period_to,utc_offset,title,artist,isrc,plays,duration_s\r\n";

pub async fn summary_csv(
    State(web): State<Web>,
    view: View,
    viewer: Viewer,
    Query(q): Query<ReportQuery>,
) -> Response {
    let (r, _) = match report(&web, view, &viewer, &q).await {
        Ok(r) => r,
        Err(e) => return error_page(view, Some(&viewer), e),
    };
    let mut out = String::from(SUMMARY_HEADER);
    for t in &r.tracks {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{:.3}\r\n",
            cell(&r.source_name),
            r.filters.from.as_deref().unwrap_or(""),
            r.filters.to.as_deref().unwrap_or(""),
            view.zone_name(),
            cell(&t.label),
            cell(t.artist.as_deref().unwrap_or("")),
            t.isrc.as_deref().unwrap_or(""),
            t.plays,
            t.seconds,
        ));
    }
    download(
        out.into(),
        "text/csv; charset=utf-8",
        "hendu-report-summary.csv",
    )
}

pub async fn xlsx(
    State(web): State<Web>,
    view: View,
    viewer: Viewer,
    Query(q): Query<ReportQuery>,
) -> Response {
    // A workbook is built whole in memory: a few at a time per replica.
    let Ok(_building) = web.workbooks.clone().try_acquire_owned() else {
        return error_page(
            view,
            Some(&viewer),
            PageError::Api(hendu_service::error::busy(std::time::Duration::from_secs(
                5,
            ))),
        );
    };
    let built = async {
        let (r, filter) = report(&web, view, &viewer, &q).await?;
        if r.plays > u64::from(XLSX_MAX) {
            return Err(PageError::BadInput(format!(
                "{} {} {XLSX_MAX}; {}",
                r.plays,
                view.t(
                    "plays are more than a workbook holds here:",
                    "reproducciones son más de las que caben aquí en un libro:"
                ),
                view.t(
                    "choose a shorter period or one source, or use the CSV",
                    "elija un período más corto o una fuente, o use el CSV"
                ),
            )));
        }
        let rows = web
            .storage
            .relational
            .play_rows(&filter, rows_page(XLSX_MAX))
            .await?;
        tokio::task::spawn_blocking(move || workbook(view, &r, &rows))
            .await
            .map_err(|e| PageError::Api(hendu_service::ApiError::internal(&e)))?
            .map_err(|e| PageError::Api(hendu_service::ApiError::internal(&e)))
    };
    match built.await {
        Ok(bytes) => download(
            bytes.into(),
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "hendu-report.xlsx",
        ),
        Err(e) => error_page(view, Some(&viewer), e),
    }
}

/// The workbook: a summary sheet by track, and a sheet of every play.
fn workbook(
    view: View,
    r: &Report,
    rows: &[PlayRow],
) -> Result<Vec<u8>, rust_xlsxwriter::XlsxError> {
    use rust_xlsxwriter::{Format, Workbook};
    let mut book = Workbook::new();
    let bold = Format::new().set_bold();
    let seconds_format = Format::new().set_num_format("0.000");
    let summary = book.add_worksheet().set_name("Summary")?;
    summary.write_string_with_format(0, 0, "Usage report", &bold)?;
    summary.write_string(1, 0, "Source")?;
    summary.write_string(1, 1, &r.source_name)?;
    summary.write_string(2, 0, "Period")?;
    summary.write_string(
        2,
        1,
        format!(
            "{} to {} ({})",
            r.filters.from.as_deref().unwrap_or(""),
            r.filters.to.as_deref().unwrap_or(""),
            view.zone_name()
        ),
    )?;
    summary.write_string(3, 0, "Plays")?;
    summary.write_number(3, 1, r.plays as f64)?;
    let head = 5;
    for (c, name) in ["Title", "Artist", "ISRC", "Plays", "Duration played (s)"]
        .iter()
        .enumerate()
    {
        summary.write_string_with_format(head, c as u16, *name, &bold)?;
    }
    for (i, t) in r.tracks.iter().enumerate() {
        let row = head + 1 + i as u32;
        summary.write_string(row, 0, &t.label)?;
        summary.write_string(row, 1, t.artist.as_deref().unwrap_or(""))?;
        summary.write_string(row, 2, t.isrc.as_deref().unwrap_or(""))?;
        summary.write_number(row, 3, t.plays as f64)?;
        summary.write_number_with_format(row, 4, t.seconds, &seconds_format)?;
    }
    summary.set_column_width(0, 36)?;
    summary.set_column_width(1, 28)?;
    summary.set_column_width(2, 14)?;
    summary.set_column_width(4, 20)?;

    let plays = book.add_worksheet().set_name("Plays")?;
    let columns = [
        "Date",
        "Start time",
        "End time",
        "UTC offset",
        "Duration played (s)",
        "Title",
        "Artist",
        "ISRC",
        "Source",
        "Location",
        "Play id",
    ];
    for (c, name) in columns.iter().enumerate() {
        plays.write_string_with_format(0, c as u16, *name, &bold)?;
    }
    for (i, p) in rows.iter().enumerate() {
        let row = 1 + i as u32;
        let start = view.local(p.play.started_at);
        let end = view.local(p.play.ended_at);
        plays.write_string(row, 0, day(start.date()))?;
        plays.write_string(row, 1, clock(start))?;
        plays.write_string(row, 2, clock(end))?;
        plays.write_string(row, 3, view.zone_name())?;
        plays.write_number_with_format(row, 4, seconds(p), &seconds_format)?;
        plays.write_string(row, 5, &p.title)?;
        plays.write_string(row, 6, p.artist.as_deref().unwrap_or(""))?;
        plays.write_string(row, 7, p.isrc.as_deref().unwrap_or(""))?;
        plays.write_string(row, 8, &p.source_name)?;
        plays.write_string(row, 9, p.play.location.as_deref().unwrap_or(""))?;
        plays.write_number(row, 10, p.play.id as f64)?;
    }
    plays.set_freeze_panes(1, 0)?;
    plays.set_column_width(5, 36)?;
    plays.set_column_width(8, 24)?;
    book.save_to_buffer()
}
