//! Bar charts as SVG, drawn on the server: no chart library and no script.
//! Every chart has a table of the same numbers beside it (the table is the
//! accessible form; the chart is marked as an image with a summary).

use maud::{Markup, html};

/// One bar: its label and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub label: String,
    pub value: f64,
}

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 200.0;
const AXIS: f64 = 24.0;

fn nice_max(max: f64) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|m| *m >= max)
        .unwrap_or(max)
}

/// Vertical bars over time (`bars` in order), labelled below every few.
pub fn columns(summary: &str, bars: &[Bar]) -> Markup {
    let top = nice_max(bars.iter().map(|b| b.value).fold(0.0, f64::max));
    let n = bars.len().max(1) as f64;
    let slot = (WIDTH - AXIS) / n;
    let every = (bars.len() / 8).max(1);
    let plot = HEIGHT - AXIS;
    html! {
        svg.chart viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" aria-label=(summary) {
            line x1=(AXIS) y1=(plot) x2=(WIDTH) y2=(plot) class="axis" {}
            text x="0" y="12" class="tick" { (fmt(top)) }
            text x="0" y=(plot) class="tick" { "0" }
            @for (i, bar) in bars.iter().enumerate() {
                @let h = (bar.value / top * (plot - 8.0)).max(0.0);
                @let x = AXIS + i as f64 * slot;
                rect x=(r1(x + slot * 0.1)) y=(r1(plot - h)) width=(r1(slot * 0.8)) height=(r1(h)) class="bar" {
                    title { (bar.label) ": " (fmt(bar.value)) }
                }
                @if i % every == 0 {
                    text x=(r1(x + slot / 2.0)) y=(HEIGHT - 6.0) class="tick" text-anchor="middle" { (short(&bar.label)) }
                }
            }
        }
    }
}

/// Horizontal bars, largest first (rankings: sources, places, tracks).
pub fn rows(summary: &str, bars: &[Bar]) -> Markup {
    let top = nice_max(bars.iter().map(|b| b.value).fold(0.0, f64::max));
    let line = 22.0;
    let height = (bars.len().max(1) as f64) * line;
    let label_w = 200.0;
    html! {
        svg.chart viewBox={ "0 0 " (WIDTH) " " (height) } role="img" aria-label=(summary) {
            @for (i, bar) in bars.iter().enumerate() {
                @let y = i as f64 * line;
                @let w = (bar.value / top * (WIDTH - label_w - 60.0)).max(0.0);
                text x="0" y=(r1(y + 15.0)) class="tick" { (clip(&bar.label, 28)) }
                rect x=(label_w) y=(r1(y + 3.0)) width=(r1(w)) height="16" class="bar" {
                    title { (bar.label) ": " (fmt(bar.value)) }
                }
                text x=(r1(label_w + w + 6.0)) y=(r1(y + 15.0)) class="tick" { (fmt(bar.value)) }
            }
        }
    }
}

fn r1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn fmt(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// `2026-12-04` as `12-04`; other labels as they are.
fn short(label: &str) -> &str {
    if label.len() == 10 && label.as_bytes().get(4) == Some(&b'-') {
        &label[5..]
    } else {
        label
    }
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(n - 1).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scale_ends_at_a_round_number_above_the_largest_bar() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(12.0), 20.0);
        assert_eq!(nice_max(480.0), 500.0);
    }

    #[test]
    fn a_chart_has_one_bar_per_value_each_with_its_number() {
        let bars = [
            Bar {
                label: "2026-12-01".into(),
                value: 3.0,
            },
            Bar {
                label: "2026-12-02".into(),
                value: 0.0,
            },
        ];
        let svg = columns("plays per day", &bars).into_string();
        assert_eq!(svg.matches("<rect").count(), 2);
        assert!(svg.contains("<title>2026-12-01: 3</title>"));
        assert!(svg.contains(r#"aria-label="plays per day""#));
        let svg = rows("by source", &bars).into_string();
        assert_eq!(svg.matches("<rect").count(), 2);
    }
}
