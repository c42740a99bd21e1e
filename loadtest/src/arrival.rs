//! When requests are due, as offsets from the start of a run.
//!
//! A rate over time (flat, a linear ramp, steps) is spent by a process:
//! evenly spaced arrivals or a Poisson process. Both come from one
//! mechanism: arrival `k` is due when the rate's integral reaches the
//! `k`-th point of a unit-rate sequence (`0, 1, 2, ...` evenly, or sums of
//! exponential gaps for Poisson), so a ramp of Poisson arrivals is as easy
//! as a flat rate. Bursts (the HENDU paper's 100 requests every 5 s) and
//! the replay of a recorded trace of timestamps are the other two shapes.
//!
//! The schedule is fixed before the run: the generator sends at these
//! instants whatever the answers do (open loop).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// How a rate is spent as arrivals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Process {
    /// Evenly spaced at the rate.
    Uniform,
    /// A Poisson process at the rate (exponential gaps), seeded.
    Poisson,
}

impl std::str::FromStr for Process {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "uniform" | "constant" => Ok(Self::Uniform),
            "poisson" => Ok(Self::Poisson),
            _ => bail!("a process is uniform or poisson, not {s:?}"),
        }
    }
}

/// One stretch of a rate profile: the rate goes linearly from `from` to
/// `to` (requests per second) over `seconds`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Segment {
    pub seconds: f64,
    pub from: f64,
    pub to: f64,
}

impl Segment {
    /// Arrivals expected over the segment (the rate's integral).
    fn mass(&self) -> f64 {
        (self.from + self.to) / 2.0 * self.seconds
    }

    /// The time into the segment at which the rate's integral reaches `x`
    /// (`0 <= x <= mass`).
    fn time_of(&self, x: f64) -> f64 {
        let (a, b, t) = (self.from, self.to, self.seconds);
        // Integral a*s + (b-a)/(2t)*s^2 = x, solved in the form that stays
        // accurate when b is close to a (and for a = 0).
        let disc = (a * a + 2.0 * (b - a) * x / t).max(0.0);
        let denom = a + disc.sqrt();
        if denom <= 0.0 { 0.0 } else { 2.0 * x / denom }
    }
}

/// When requests are due.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "shape", rename_all = "lowercase")]
pub enum Arrivals {
    /// A piecewise-linear rate spent by `process`.
    Rate {
        process: Process,
        segments: Vec<Segment>,
        seed: u64,
    },
    /// `size` requests at once every `every_s`, for `seconds`.
    Bursts {
        size: u32,
        every_s: f64,
        seconds: f64,
    },
    /// The instants of a recorded trace (seconds from its first).
    Trace {
        file: String,
        #[serde(skip)]
        at_s: Vec<f64>,
    },
}

/// The longest run a schedule may describe (a day), and the most arrivals:
/// bounds on memory and time for whatever a file or a flag says.
pub const MAX_SECONDS: f64 = 86_400.0;
pub const MAX_RATE: f64 = 1_000_000.0;

impl Arrivals {
    /// Parses a rate over `seconds`: `R` (flat), `R1..R2` (a linear ramp
    /// over the whole run), or steps `R1/30s,R2/1m,...` (their durations
    /// add up to the run; `seconds` is then ignored).
    ///
    /// # Errors
    /// A malformed rate, a negative or absurd one, no duration.
    pub fn rate(spec: &str, seconds: Option<f64>, process: Process, seed: u64) -> Result<Self> {
        let spec = spec.trim();
        let segments = if spec.contains('/') {
            spec.split(',')
                .map(|step| {
                    let (rate, dur) = step
                        .split_once('/')
                        .with_context(|| format!("a step is RATE/DURATION, not {step:?}"))?;
                    let r = parse_rate(rate)?;
                    Ok(Segment {
                        seconds: parse_duration(dur)?.as_secs_f64(),
                        from: r,
                        to: r,
                    })
                })
                .collect::<Result<Vec<_>>>()?
        } else {
            let seconds = seconds.context("a rate needs the run's duration")?;
            let (from, to) = match spec.split_once("..") {
                Some((a, b)) => (parse_rate(a)?, parse_rate(b)?),
                None => {
                    let r = parse_rate(spec)?;
                    (r, r)
                }
            };
            vec![Segment { seconds, from, to }]
        };
        let total: f64 = segments.iter().map(|s| s.seconds).sum();
        ensure!(
            total > 0.0 && total <= MAX_SECONDS,
            "a run lasts more than 0 s and at most a day, not {total} s"
        );
        Ok(Self::Rate {
            process,
            segments,
            seed,
        })
    }

    /// Parses bursts `N/PERIOD` (e.g. `100/5s`) over `seconds`.
    ///
    /// # Errors
    /// A malformed spec, an empty or absurd burst.
    pub fn bursts(spec: &str, seconds: f64) -> Result<Self> {
        let (size, every) = spec
            .split_once('/')
            .with_context(|| format!("bursts are SIZE/PERIOD (100/5s), not {spec:?}"))?;
        let size: u32 = size
            .trim()
            .parse()
            .with_context(|| format!("a burst's size is a whole number, not {size:?}"))?;
        let every_s = parse_duration(every)?.as_secs_f64();
        ensure!(
            size > 0 && every_s > 0.0,
            "a burst has requests and a period"
        );
        ensure!(
            f64::from(size) / every_s <= MAX_RATE,
            "bursts of {size} every {every_s} s exceed {MAX_RATE} per second"
        );
        ensure!(
            seconds > 0.0 && seconds <= MAX_SECONDS,
            "a run lasts more than 0 s and at most a day"
        );
        Ok(Self::Bursts {
            size,
            every_s,
            seconds,
        })
    }

    /// Reads a trace: one instant per line, in seconds (a Unix time or
    /// relative; the first becomes 0), `#` comments, in order.
    ///
    /// # Errors
    /// An unreadable file, a bad line (named by its number), instants out
    /// of order, a trace longer than a day.
    pub fn trace(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the trace {}", path.display()))?;
        let mut at_s = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let t: f64 = line
                .parse()
                .ok()
                .filter(|t: &f64| t.is_finite())
                .with_context(|| {
                    format!("{}:{}: not a number of seconds", path.display(), n + 1)
                })?;
            if let Some(&last) = at_s.last() {
                ensure!(
                    t >= last,
                    "{}:{}: earlier than the line before",
                    path.display(),
                    n + 1
                );
            }
            at_s.push(t);
        }
        let first = *at_s.first().context("the trace has no instants")?;
        for t in &mut at_s {
            *t -= first;
        }
        ensure!(
            at_s.last().is_some_and(|&t| t <= MAX_SECONDS),
            "the trace lasts more than a day"
        );
        Ok(Self::Trace {
            file: path.display().to_string(),
            at_s,
        })
    }

    /// How long the schedule lasts.
    pub fn seconds(&self) -> f64 {
        match self {
            Self::Rate { segments, .. } => segments.iter().map(|s| s.seconds).sum(),
            Self::Bursts { seconds, .. } => *seconds,
            Self::Trace { at_s, .. } => at_s.last().map_or(0.0, |t| t + 1.0),
        }
    }

    /// How many arrivals to expect (exact but for Poisson).
    pub fn expected(&self) -> f64 {
        match self {
            Self::Rate { segments, .. } => segments.iter().map(Segment::mass).sum(),
            Self::Bursts {
                size,
                every_s,
                seconds,
            } => (seconds / every_s).ceil() * f64::from(*size),
            Self::Trace { at_s, .. } => at_s.len() as f64,
        }
    }

    /// The arrivals' offsets from the start, in order.
    pub fn schedule(&self) -> Box<dyn Iterator<Item = Duration> + Send> {
        match self {
            Self::Rate {
                process,
                segments,
                seed,
            } => Box::new(RateSchedule {
                segments: segments.clone(),
                index: 0,
                start_s: 0.0,
                before: 0.0,
                next: 0.0,
                process: *process,
                rng: SmallRng::seed_from_u64(*seed),
            }),
            Self::Bursts {
                size,
                every_s,
                seconds,
            } => {
                let (size, every_s, seconds) = (*size, *every_s, *seconds);
                Box::new(
                    (0u64..)
                        .map(move |k| k as f64 * every_s)
                        .take_while(move |t| *t < seconds)
                        .flat_map(move |t| {
                            std::iter::repeat_n(Duration::from_secs_f64(t), size as usize)
                        }),
                )
            }
            Self::Trace { at_s, .. } => {
                Box::new(at_s.clone().into_iter().map(Duration::from_secs_f64))
            }
        }
    }
}

/// Arrivals of a piecewise-linear rate: the unit-rate point `next` mapped
/// through the inverse of the rate's integral.
struct RateSchedule {
    segments: Vec<Segment>,
    index: usize,
    /// Where the current segment starts, in seconds.
    start_s: f64,
    /// The integral of the rate before the current segment.
    before: f64,
    next: f64,
    process: Process,
    rng: SmallRng,
}

impl Iterator for RateSchedule {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        loop {
            let segment = self.segments.get(self.index)?;
            let x = self.next - self.before;
            if x < segment.mass() {
                let t = self.start_s + segment.time_of(x);
                self.next += match self.process {
                    Process::Uniform => 1.0,
                    // An exponential gap of mean 1; 1 - u is in (0, 1].
                    Process::Poisson => -(1.0 - self.rng.random::<f64>()).ln(),
                };
                return Some(Duration::from_secs_f64(t));
            }
            self.before += segment.mass();
            self.start_s += segment.seconds;
            self.index += 1;
        }
    }
}

fn parse_rate(s: &str) -> Result<f64> {
    let r: f64 = s
        .trim()
        .parse()
        .with_context(|| format!("a rate is requests per second, not {s:?}"))?;
    ensure!(
        r.is_finite() && (0.0..=MAX_RATE).contains(&r),
        "a rate is between 0 and {MAX_RATE} per second, not {r}"
    );
    Ok(r)
}

/// `90`, `90s`, `500ms`, `10m`, `1h`.
///
/// # Errors
/// Anything else, and durations that are negative or over a day.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = number
        .parse()
        .with_context(|| format!("a duration is like 30s, 500ms, 10m or 1h, not {s:?}"))?;
    let seconds = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => bail!("a duration's unit is ms, s, m or h, not {unit:?}"),
    };
    ensure!(
        seconds.is_finite() && (0.0..=MAX_SECONDS).contains(&seconds),
        "a duration is between 0 and a day, not {s:?}"
    );
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(a: &Arrivals) -> Vec<f64> {
        a.schedule().map(|d| d.as_secs_f64()).collect()
    }

    #[test]
    fn a_flat_rate_is_evenly_spaced() {
        let a = Arrivals::rate("20", Some(10.0), Process::Uniform, 1).unwrap();
        let t = offsets(&a);
        assert_eq!(t.len(), 200);
        assert!(t.windows(2).all(|w| (w[1] - w[0] - 0.05).abs() < 1e-9));
        assert_eq!(t[0], 0.0);
    }

    #[test]
    fn a_ramp_spends_its_integral_and_speeds_up() {
        // 0 to 100 per second over 10 s: 500 arrivals, a quarter of them in
        // the first half.
        let a = Arrivals::rate("0..100", Some(10.0), Process::Uniform, 1).unwrap();
        let t = offsets(&a);
        assert_eq!(t.len(), 500);
        let first_half = t.iter().filter(|&&x| x < 5.0).count();
        assert!((124..=126).contains(&first_half), "{first_half}");
        let late_gap = t[499] - t[498];
        let early_gap = t[2] - t[1];
        assert!(late_gap < early_gap / 5.0);
    }

    #[test]
    fn steps_follow_one_another() {
        let a = Arrivals::rate("10/2s,50/1s,0/1s,10/1s", None, Process::Uniform, 1).unwrap();
        assert_eq!(a.seconds(), 5.0);
        let t = offsets(&a);
        assert_eq!(t.len(), 20 + 50 + 10);
        assert_eq!(t.iter().filter(|&&x| (2.0..3.0).contains(&x)).count(), 50);
        assert_eq!(t.iter().filter(|&&x| (3.0..4.0).contains(&x)).count(), 0);
    }

    #[test]
    fn poisson_arrivals_have_the_rate_and_exponential_gaps() {
        let a = Arrivals::rate("200", Some(100.0), Process::Poisson, 7).unwrap();
        let t = offsets(&a);
        // 20,000 expected; the standard deviation is about 141.
        assert!((19_500..=20_500).contains(&t.len()), "{}", t.len());
        let gaps: Vec<f64> = t.windows(2).map(|w| w[1] - w[0]).collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        // Exponential: the standard deviation equals the mean (uniform: 0).
        assert!(
            (var.sqrt() / mean - 1.0).abs() < 0.05,
            "cv {}",
            var.sqrt() / mean
        );
        // Seeded: the same schedule again.
        assert_eq!(t, offsets(&a));
    }

    #[test]
    fn bursts_arrive_together() {
        let a = Arrivals::bursts("100/5s", 600.0).unwrap();
        let t = offsets(&a);
        assert_eq!(t.len(), 100 * 120);
        assert_eq!(t.iter().filter(|&&x| x == 5.0).count(), 100);
        assert_eq!(a.expected(), 12_000.0);
    }

    #[test]
    fn a_trace_is_replayed_from_its_first_instant() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("trace.txt");
        std::fs::write(
            &file,
            "# recorded\n1700000000.5\n1700000000.5\n1700000001.25 # late\n",
        )
        .unwrap();
        let t = offsets(&Arrivals::trace(&file).unwrap());
        assert_eq!(t, vec![0.0, 0.0, 0.75]);
        std::fs::write(&file, "3\n2\n").unwrap();
        let e = Arrivals::trace(&file).unwrap_err().to_string();
        assert!(e.contains(":2: earlier"), "{e}");
    }

    #[test]
    fn bad_specs_are_refused_with_reasons() {
        for (spec, seconds) in [
            ("-1", Some(1.0)),
            ("x", Some(1.0)),
            ("10", None),
            ("10", Some(1e9)),
            ("5/0s", None),
        ] {
            assert!(
                Arrivals::rate(spec, seconds, Process::Uniform, 0).is_err(),
                "{spec}"
            );
        }
        assert!(Arrivals::bursts("0/5s", 10.0).is_err());
        assert!(parse_duration("10 fortnights").is_err());
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    }
}
