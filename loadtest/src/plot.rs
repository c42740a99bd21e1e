//! A run's plots, each as SVG and PNG: throughput (requests due, successes
//! and errors answered, per second) and latency (p50, p99 and max of the
//! requests due in each second, on a log scale).
//!
//! Text is measured and drawn (PNG) with a TrueType font read from the system (DejaVu or
//! Liberation, as Debian installs them; `HENDU_PLOT_FONT` names another).

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::recorder::{Totals, ms};

const SIZE: (u32, u32) = (960, 440);
const FONTS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// Registers the font PNG text is drawn with, once.
fn font() -> Result<()> {
    static FONT: OnceLock<Result<(), String>> = OnceLock::new();
    FONT.get_or_init(|| {
        let named = std::env::var("HENDU_PLOT_FONT").ok();
        let path = named
            .iter()
            .map(String::as_str)
            .chain(FONTS)
            .find(|p| Path::new(p).is_file())
            .ok_or("no TrueType font for the PNG plots (Debian: fonts-dejavu-core; or HENDU_PLOT_FONT)")?;
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        // Plotters keeps fonts for the life of the process.
        plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(bytes.into_boxed_slice()))
            .map_err(|_| format!("{path} is not a font plotters can read"))
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// One line of a plot.
struct Line {
    label: &'static str,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

/// What a plot's axes say.
struct Axes<'a> {
    title: &'a str,
    x_desc: &'a str,
    y_desc: &'a str,
    /// A log scale for y.
    log: bool,
}

const RUN_TIME: &str = "seconds into the run";

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    axes: &Axes<'_>,
    lines: &[Line],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let Axes {
        title,
        x_desc,
        y_desc,
        log,
    } = *axes;
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("cannot draw the plot {title}: {e:?}");
    root.fill(&WHITE).map_err(e)?;
    let xmax = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let ys = || {
        lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.1))
            .filter(|y| y.is_finite())
    };
    let ymax = ys().fold(0.0, f64::max).max(if log { 1.0 } else { 1e-9 }) * 1.1;
    let mut chart = ChartBuilder::on(root);
    chart
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70);
    if log {
        let ymin = ys().filter(|y| *y > 0.0).fold(ymax, f64::min).max(0.01) / 2.0;
        let mut c = chart
            .build_cartesian_2d(0.0..xmax, (ymin..ymax).log_scale())
            .map_err(e)?;
        c.configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(e)?;
        for l in lines {
            let color = l.color;
            c.draw_series(LineSeries::new(
                l.points
                    .iter()
                    .copied()
                    .filter(|p| p.1.is_finite() && p.1 > 0.0),
                color.stroke_width(2),
            ))
            .map_err(e)?
            .label(l.label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        }
        legend(&mut c).map_err(e)?;
    } else {
        let mut c = chart.build_cartesian_2d(0.0..xmax, 0.0..ymax).map_err(e)?;
        c.configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(e)?;
        for l in lines {
            let color = l.color;
            c.draw_series(LineSeries::new(
                l.points.iter().copied().filter(|p| p.1.is_finite()),
                color.stroke_width(2),
            ))
            .map_err(e)?
            .label(l.label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        }
        legend(&mut c).map_err(e)?;
    }
    root.present().map_err(e)?;
    Ok(())
}

fn legend<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
}

/// Writes `name.svg` and `name.png` in `dir`.
fn both(dir: &Path, name: &str, axes: &Axes<'_>, lines: &[Line]) -> Result<()> {
    // Both back-ends measure text with the font.
    font()?;
    let svg = dir.join(format!("{name}.svg"));
    draw(
        &SVGBackend::new(&svg, SIZE).into_drawing_area(),
        axes,
        lines,
    )?;
    let png = dir.join(format!("{name}.png"));
    draw(
        &BitMapBackend::new(&png, SIZE).into_drawing_area(),
        axes,
        lines,
    )
}

/// Colours of the lines of [`curves`], in order.
const PALETTE: [RGBColor; 4] = [BLUE, RED, GREEN, MAGENTA];

/// Any measured curves against any x, as `name.svg` and `name.png` in
/// `dir`: `(label, points)` per line, at most four.
///
/// # Errors
/// A file that cannot be written, no font for the PNG.
pub fn curves(
    dir: &Path,
    name: &str,
    (title, x_desc, y_desc): (&str, &str, &str),
    log: bool,
    lines: &[(&'static str, Vec<(f64, f64)>)],
) -> Result<()> {
    let lines: Vec<Line> = lines
        .iter()
        .zip(PALETTE)
        .map(|((label, points), color)| Line {
            label,
            color,
            points: points.clone(),
        })
        .collect();
    let axes = Axes {
        title,
        x_desc,
        y_desc,
        log,
    };
    both(dir, name, &axes, &lines)
}

/// Requests due and answers per second.
///
/// # Errors
/// A file that cannot be written, no font for the PNG.
pub fn throughput(dir: &Path, totals: &Totals) -> Result<()> {
    let per = |f: fn(&crate::recorder::Second) -> u64| {
        totals
            .seconds
            .iter()
            .enumerate()
            .map(|(k, s)| (k as f64 + 0.5, f(s) as f64))
            .collect::<Vec<_>>()
    };
    both(
        dir,
        "throughput",
        &Axes {
            title: "Throughput",
            x_desc: RUN_TIME,
            y_desc: "requests per second",
            log: false,
        },
        &[
            Line {
                label: "due",
                color: RGBColor(120, 120, 120),
                points: per(|s| s.due),
            },
            Line {
                label: "answered, success",
                color: RGBColor(31, 119, 180),
                points: per(|s| s.answered_ok),
            },
            Line {
                label: "answered, error",
                color: RGBColor(214, 39, 40),
                points: per(|s| s.answered_error),
            },
        ],
    )
}

/// Latency percentiles of the requests due in each second.
///
/// # Errors
/// A file that cannot be written, no font for the PNG.
pub fn latency(dir: &Path, totals: &Totals) -> Result<()> {
    let at = |q: f64| {
        totals
            .seconds
            .iter()
            .enumerate()
            .map(|(k, s)| (k as f64 + 0.5, ms(&s.latency, q)))
            .collect::<Vec<_>>()
    };
    both(
        dir,
        "latency",
        &Axes {
            title: "Latency from the intended send time",
            x_desc: RUN_TIME,
            y_desc: "milliseconds (log)",
            log: true,
        },
        &[
            Line {
                label: "p50",
                color: RGBColor(31, 119, 180),
                points: at(0.5),
            },
            Line {
                label: "p99",
                color: RGBColor(255, 127, 14),
                points: at(0.99),
            },
            Line {
                label: "max",
                color: RGBColor(214, 39, 40),
                points: at(1.0),
            },
        ],
    )
}
