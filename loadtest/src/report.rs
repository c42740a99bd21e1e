//! A run's results directory:
//!
//! - `summary.json`: the run's provenance (revision, machine, date, the
//!   command and settings), the totals, latency percentiles, errors by
//!   kind, the generator's own lateness, and the end-to-end latency;
//! - `seconds.csv`: per second, requests due and sent, answers (successes,
//!   errors) that arrived, and the latency percentiles of the requests due;
//! - `errors.csv`: errors by kind;
//! - `latency.hgrm`: the whole run's latency distribution in HdrHistogram's
//!   percentile format (plottable with HdrHistogram's own tools);
//! - `throughput.svg|png`, `latency.svg|png`: the plots (see [`crate::plot`]).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::recorder::{Totals, ms};

fn max_ms(h: &Histogram<u64>) -> f64 {
    if h.is_empty() {
        f64::NAN
    } else {
        h.max() as f64 / 1000.0
    }
}

/// JSON has no NaN: absent figures are null.
fn num(x: f64) -> Value {
    if x.is_finite() {
        json!((x * 1000.0).round() / 1000.0)
    } else {
        Value::Null
    }
}

/// The summary of `totals` over a run of `seconds`.
pub fn summary(totals: &Totals, seconds: f64) -> Value {
    let due: u64 = totals.seconds.iter().map(|s| s.due).sum();
    let sent: u64 = totals.seconds.iter().map(|s| s.sent).sum();
    let mut lag = crate::recorder::histogram();
    for s in &totals.seconds {
        let _ = lag.add(&s.send_lag);
    }
    let l = &totals.latency;
    json!({
        "requests": {
            "due": due,
            "sent": sent,
            "ok": totals.ok,
            "errors": totals.errors.values().sum::<u64>(),
            "ok_per_s": num(totals.ok as f64 / seconds.max(1e-9)),
        },
        "latency_ms": {
            "mean": num(if l.is_empty() { f64::NAN } else { l.mean() / 1000.0 }),
            "p50": num(ms(l, 0.5)),
            "p90": num(ms(l, 0.9)),
            "p99": num(ms(l, 0.99)),
            "p99_9": num(ms(l, 0.999)),
            "max": num(max_ms(l)),
        },
        "errors": totals.errors,
        "generator_send_lag_ms": {
            "p50": num(ms(&lag, 0.5)),
            "p99": num(ms(&lag, 0.99)),
            "max": num(max_ms(&lag)),
        },
    })
}

/// Writes the results directory (the plots too).
///
/// # Errors
/// A file that cannot be written.
pub fn write(dir: &Path, totals: &Totals, summary: &Value) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let put = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    };
    put(
        "summary.json",
        serde_json::to_string_pretty(summary)? + "\n",
    )?;

    let mut csv = String::from(
        "second,due,sent,answered_ok,answered_error,latency_p50_ms,latency_p90_ms,latency_p99_ms,latency_max_ms,send_lag_p99_ms\n",
    );
    for (k, s) in totals.seconds.iter().enumerate() {
        let cell = |x: f64| {
            if x.is_finite() {
                format!("{x:.3}")
            } else {
                String::new()
            }
        };
        let _ = writeln!(
            csv,
            "{k},{},{},{},{},{},{},{},{},{}",
            s.due,
            s.sent,
            s.answered_ok,
            s.answered_error,
            cell(ms(&s.latency, 0.5)),
            cell(ms(&s.latency, 0.9)),
            cell(ms(&s.latency, 0.99)),
            cell(max_ms(&s.latency)),
            cell(ms(&s.send_lag, 0.99)),
        );
    }
    put("seconds.csv", csv)?;

    let mut errors = String::from("kind,count\n");
    for (kind, n) in &totals.errors {
        let _ = writeln!(errors, "{kind},{n}");
    }
    put("errors.csv", errors)?;
    put("latency.hgrm", hgrm(&totals.latency))?;
    crate::plot::throughput(dir, totals)?;
    crate::plot::latency(dir, totals)?;
    Ok(())
}

/// HdrHistogram's percentile distribution text, in milliseconds.
pub fn hgrm(h: &Histogram<u64>) -> String {
    let mut out = format!(
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    if h.is_empty() {
        return out;
    }
    for v in h.iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        let inverse = if q < 1.0 {
            format!("{:>14.2}", 1.0 / (1.0 - q))
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "{:>12.3} {:>14.12} {:>10} {}",
            v.value_iterated_to() as f64 / 1000.0,
            q,
            v.count_since_last_iteration(),
            inverse
        );
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]\n#[Max     = {:>12.3}, Total count    = {:>12}]",
        h.mean() / 1000.0,
        h.stdev() / 1000.0,
        h.max() as f64 / 1000.0,
        h.len()
    );
    out
}

/// Where, on what, when and how a run was made.
pub fn provenance(settings: Value) -> Value {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|t| {
        t.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_owned())
    });
    let memory_gib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
        t.lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| (kb / 1024.0 / 1024.0 * 10.0).round() / 10.0)
    });
    let date = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    json!({
        "date": date,
        "revision": git(&["rev-parse", "HEAD"]).map(|r| if dirty { format!("{r}-dirty") } else { r }),
        "generator": format!("hendu-load {}", env!("CARGO_PKG_VERSION")),
        // The services are started from the generator's own target folder.
        "build": if cfg!(debug_assertions) { "dev profile (dependencies optimised, HENDU's crates at opt-level 1)" } else { "release profile" },
        "command": std::env::args().collect::<Vec<_>>(),
        "machine": {
            "cpu": cpu,
            "cores": std::thread::available_parallelism().map(|n| n.get()).ok(),
            "memory_gib": memory_gib,
            "os": std::env::consts::OS,
        },
        "settings": settings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recorder::Recorder;
    use std::time::Duration;

    #[test]
    fn a_results_directory_has_every_file_and_the_figures_agree() {
        let r = Recorder::new(3.0);
        for k in 0..300u64 {
            let due = Duration::from_millis(k * 10);
            r.due(due, Duration::from_micros(50), true);
            let took = Duration::from_millis(if k % 100 == 99 { 500 } else { 20 });
            let error = (k % 50 == 7).then_some("http_503");
            r.answered(due, due + took, error);
        }
        let totals = r.totals();
        let s = summary(&totals, 3.0);
        assert_eq!(s["requests"]["due"], 300);
        assert_eq!(s["requests"]["ok"], 294);
        assert_eq!(s["errors"]["http_503"], 6);
        let p50 = s["latency_ms"]["p50"].as_f64().unwrap();
        assert!((19.9..20.1).contains(&p50), "{p50}");
        let max = s["latency_ms"]["max"].as_f64().unwrap();
        assert!((499.0..501.0).contains(&max), "{max}");
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &totals, &s).unwrap();
        for f in [
            "summary.json",
            "seconds.csv",
            "errors.csv",
            "latency.hgrm",
            "throughput.svg",
            "throughput.png",
            "latency.svg",
            "latency.png",
        ] {
            let len = std::fs::metadata(dir.path().join(f)).unwrap().len();
            assert!(len > 20, "{f}: {len} bytes");
        }
        let csv = std::fs::read_to_string(dir.path().join("seconds.csv")).unwrap();
        assert_eq!(csv.lines().count(), 1 + 4);
        assert!(csv.lines().nth(1).unwrap().starts_with("0,100,100,"));
        let png = std::fs::read(dir.path().join("latency.png")).unwrap();
        assert_eq!(&png[1..4], b"PNG");
    }
}
