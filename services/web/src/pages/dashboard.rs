//! The dashboard: plays over time (by day, week or month), by source, by
//! location and by track, each chart with its table; and the latest plays,
//! which grow live while the page is open.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use hendu_storage::queries::{Grouping, PlayFilter, PlayOrder, PlayPage, PlayRow, PlayTotal};
use maud::{Markup, html};
use serde::Deserialize;
use time::{Date, Duration, OffsetDateTime};

use crate::Web;
use crate::charts::{self, Bar};
use crate::error::{PageError, error_page};
use crate::pages::filters::start_of;
use crate::view::{View, Viewer, day, length, page, parse_day};

/// How plays over time are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// The last 30 days, a bar a day.
    #[default]
    Day,
    /// The last 12 weeks (Monday to Sunday).
    Week,
    /// The last 12 months.
    Month,
}

#[derive(Debug, Deserialize)]
pub struct DashboardQuery {
    #[serde(default)]
    period: Period,
}

/// The buckets of `period` up to `today`: (first day, label), in order.
pub fn buckets(period: Period, today: Date) -> Vec<(Date, String)> {
    match period {
        Period::Day => (0..30)
            .rev()
            .filter_map(|back| today.checked_sub(Duration::days(back)))
            .map(|d| (d, day(d)))
            .collect(),
        Period::Week => {
            let monday =
                today - Duration::days(i64::from(today.weekday().number_days_from_monday()));
            (0..12)
                .rev()
                .filter_map(|back| monday.checked_sub(Duration::weeks(back)))
                .map(|d| (d, day(d)))
                .collect()
        }
        Period::Month => {
            let mut firsts = Vec::new();
            let mut first = today.replace_day(1).unwrap_or(today);
            for _ in 0..12 {
                firsts.push((
                    first,
                    format!("{:04}-{:02}", first.year(), u8::from(first.month())),
                ));
                first = first
                    .previous_day()
                    .and_then(|d| d.replace_day(1).ok())
                    .unwrap_or(first);
            }
            firsts.reverse();
            firsts
        }
    }
}

/// Daily totals summed into `buckets` (each a bucket's first day).
pub fn into_buckets(buckets: &[(Date, String)], days: &[PlayTotal]) -> Vec<(String, u64, f64)> {
    let mut out: Vec<(String, u64, f64)> = buckets
        .iter()
        .map(|(_, label)| (label.clone(), 0, 0.0))
        .collect();
    for total in days {
        let Some(d) = parse_day(&total.key) else {
            continue;
        };
        if let Some(i) = buckets.iter().rposition(|(first, _)| *first <= d) {
            out[i].1 += total.plays;
            out[i].2 += total.seconds;
        }
    }
    out
}

const LATEST: u32 = 10;
const TOP: u32 = 10;

pub async fn show(
    State(web): State<Web>,
    view: View,
    viewer: Viewer,
    Query(q): Query<DashboardQuery>,
) -> Response {
    match render(&web, view, &viewer, q.period).await {
        Ok(body) => page(view, Some(&viewer), view.t("Dashboard", "Panel"), body).into_response(),
        Err(e) => error_page(view, Some(&viewer), e),
    }
}

async fn render(
    web: &Web,
    view: View,
    viewer: &Viewer,
    period: Period,
) -> Result<Markup, PageError> {
    let rel = &web.storage.relational;
    let today = view.local(OffsetDateTime::now_utc()).date();
    let buckets = buckets(period, today);
    let mut within = PlayFilter::scoped(viewer.scope());
    within.from = buckets.first().map(|(d, _)| start_of(view, *d));
    let days = rel
        .play_totals(&within, Grouping::Day, view.offset_s(), 400)
        .await?;
    let over_time = into_buckets(&buckets, &days);
    let by_source = rel.play_totals(&within, Grouping::Source, 0, TOP).await?;
    let by_location = rel.play_totals(&within, Grouping::Location, 0, TOP).await?;
    let by_track = rel.play_totals(&within, Grouping::Track, 0, TOP).await?;
    let latest = rel
        .play_rows(
            &PlayFilter::scoped(viewer.scope()),
            PlayPage {
                order: PlayOrder::Recorded,
                descending: true,
                offset: 0,
                limit: LATEST,
            },
        )
        .await?;
    let after = latest.first().map_or(0, |r| r.play.id);
    let plays: u64 = over_time.iter().map(|b| b.1).sum();
    let seconds: f64 = over_time.iter().map(|b| b.2).sum();
    let periods = [
        (Period::Day, view.t("By day", "Por día"), "day"),
        (Period::Week, view.t("By week", "Por semana"), "week"),
        (Period::Month, view.t("By month", "Por mes"), "month"),
    ];
    let bars: Vec<Bar> = over_time
        .iter()
        .map(|(label, n, _)| Bar {
            label: label.clone(),
            value: *n as f64,
        })
        .collect();
    let ranking = |totals: &[PlayTotal]| -> Vec<Bar> {
        totals
            .iter()
            .map(|t| Bar {
                label: if t.label.is_empty() {
                    view.t("(unknown)", "(desconocido)").to_owned()
                } else {
                    t.label.clone()
                },
                value: t.plays as f64,
            })
            .collect()
    };
    Ok(html! {
        h1 { (view.t("Your plays", "Sus reproducciones")) }
        nav.periods aria-label=(view.t("Period", "Período")) {
            @for (p, label, code) in periods {
                @if p == period {
                    strong aria-current="page" { (label) }
                } @else {
                    a href={ "/dashboard?period=" (code) } { (label) }
                }
            }
        }
        p.summary {
            strong { (plays) } " " (view.t("plays", "reproducciones")) ", "
            strong { (length(seconds)) } " " (view.t("played, since", "en total, desde")) " "
            (buckets.first().map(|(d, _)| day(*d)).unwrap_or_default())
        }
        section.pair {
            h2 { (view.t("Plays over time", "Reproducciones en el tiempo")) }
            (charts::columns(view.t("Plays over time", "Reproducciones en el tiempo"), &bars))
            details open[period != Period::Day] {
                summary { (view.t("The numbers, newest first", "Los números, del más reciente")) }
                table {
                    caption { (view.t("Plays over time", "Reproducciones en el tiempo")) }
                    thead { tr { th scope="col" { (view.t("Period", "Período")) } th.num scope="col" { (view.t("Plays", "Reproducciones")) } th.num scope="col" { (view.t("Time played", "Tiempo")) } } }
                    tbody {
                        @for (label, n, s) in over_time.iter().rev() {
                            tr { td { (label) } td.num { (n) } td.num { (length(*s)) } }
                        }
                    }
                }
            }
        }
        (ranked(view, view.t("By source", "Por fuente"), view.t("Source", "Fuente"), &by_source, &ranking(&by_source)))
        (ranked(view, view.t("By location", "Por lugar"), view.t("Location", "Lugar"), &by_location, &ranking(&by_location)))
        (ranked(view, view.t("Top tracks", "Temas más pasados"), view.t("Track", "Tema"), &by_track, &ranking(&by_track)))
        section {
            h2 #latest-heading { (view.t("Latest plays", "Últimas reproducciones")) }
            p.hint { (view.t("New plays appear here as they are recognised.", "Las reproducciones nuevas aparecen aquí al reconocerse.")) }
            (latest_table(view, &latest, after))
        }
    })
}

fn ranked(view: View, heading: &str, column: &str, totals: &[PlayTotal], bars: &[Bar]) -> Markup {
    html! {
        section.pair {
            h2 { (heading) }
            @if totals.is_empty() {
                p { (view.t("No plays in this period.", "No hay reproducciones en este período.")) }
            } @else {
                (charts::rows(heading, bars))
                table {
                    caption { (heading) }
                    thead { tr { th scope="col" { (column) } th.num scope="col" { (view.t("Plays", "Reproducciones")) } th.num scope="col" { (view.t("Time played", "Tiempo")) } } }
                    tbody {
                        @for (t, b) in totals.iter().zip(bars) {
                            tr { td { (b.label) } td.num { (t.plays) } td.num { (length(t.seconds)) } }
                        }
                    }
                }
            }
        }
    }
}

/// The latest plays; `data-after` tells the script where live plays start.
pub fn latest_table(view: View, rows: &[PlayRow], after: i64) -> Markup {
    html! {
        table #live-plays data-after=(after) data-live=(view.t("Live", "En vivo"))
            data-offline=(view.t("Reconnecting…", "Reconectando…"))
            aria-labelledby="latest-heading" aria-live="polite" {
            thead {
                tr {
                    th scope="col" { (view.t("Start", "Inicio")) }
                    th scope="col" { (view.t("Track", "Tema")) }
                    th scope="col" { (view.t("Source", "Fuente")) }
                    th scope="col" { (view.t("Location", "Lugar")) }
                    th.num scope="col" { (view.t("Played", "Duración")) }
                }
            }
            tbody {
                @for r in rows {
                    tr data-play=(r.play.id) {
                        td { a href={ "/plays/" (r.play.id) } { (view.when(r.play.started_at)) } }
                        td { (r.title) @if let Some(a) = &r.artist { " · " (a) } }
                        td { (r.source_name) }
                        td { (r.play.location.as_deref().unwrap_or("")) }
                        td.num { (length((r.play.ended_at - r.play.started_at).as_seconds_f64())) }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly by design.
mod tests {
    use super::*;

    #[test]
    fn periods_end_today_and_weeks_start_on_monday() {
        let today = parse_day("2026-12-04").unwrap(); // a Friday
        let days = buckets(Period::Day, today);
        assert_eq!(days.len(), 30);
        assert_eq!(days.last().unwrap().1, "2026-12-04");
        assert_eq!(days[0].1, "2026-11-05");
        let weeks = buckets(Period::Week, today);
        assert_eq!(weeks.len(), 12);
        assert_eq!(weeks.last().unwrap().1, "2026-11-30");
        assert!(
            weeks
                .iter()
                .all(|(d, _)| d.weekday() == time::Weekday::Monday)
        );
        let months = buckets(Period::Month, today);
        assert_eq!(months.len(), 12);
        assert_eq!(months[0].1, "2026-01");
        assert_eq!(months.last().unwrap().1, "2026-12");
    }

    #[test]
    fn days_are_summed_into_their_week() {
        let today = parse_day("2026-12-04").unwrap();
        let weeks = buckets(Period::Week, today);
        let total = |key: &str, plays| PlayTotal {
            key: key.into(),
            label: key.into(),
            plays,
            seconds: plays as f64 * 60.0,
            artist: None,
            isrc: None,
        };
        let summed = into_buckets(
            &weeks,
            &[
                total("2026-11-29", 2),
                total("2026-11-30", 3),
                total("2026-12-04", 4),
            ],
        );
        let n = summed.len();
        assert_eq!(summed[n - 1], ("2026-11-30".into(), 7, 420.0));
        assert_eq!(summed[n - 2], ("2026-11-23".into(), 2, 120.0));
    }
}
