//! What a run measured, second by second.
//!
//! Latency runs from a request's intended send time (not the moment it
//! went out) to its answer, so a server that stalls is charged for every
//! request that should have gone out meanwhile: no coordinated omission.
//! Each second of the run keeps an HDR histogram of the requests due in
//! it; answers are also counted by the second they arrived (throughput).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Latencies are kept in microseconds, 3 significant digits, up to an hour.
const MAX_US: u64 = 3_600_000_000;

pub fn histogram() -> Histogram<u64> {
    // Bounds valid by construction.
    Histogram::new_with_bounds(1, MAX_US, 3).unwrap_or_else(|_| unreachable!())
}

/// Milliseconds at quantile `q` (NaN when empty).
pub fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        f64::NAN
    } else {
        h.value_at_quantile(q) as f64 / 1000.0
    }
}

/// One second of the run.
#[derive(Debug, Clone)]
pub struct Second {
    /// Requests due in this second.
    pub due: u64,
    /// Of those, sent (the rest the generator could not start: over its
    /// in-flight bound).
    pub sent: u64,
    /// Successful answers that arrived in this second.
    pub answered_ok: u64,
    /// Failed answers that arrived in this second.
    pub answered_error: u64,
    /// Latency of the successful requests due in this second.
    pub latency: Histogram<u64>,
    /// How late the generator sent this second's requests.
    pub send_lag: Histogram<u64>,
    /// Errors of the requests due in this second, by kind.
    pub errors: BTreeMap<String, u64>,
}

impl Second {
    fn new() -> Self {
        Self {
            due: 0,
            sent: 0,
            answered_ok: 0,
            answered_error: 0,
            latency: histogram(),
            send_lag: histogram(),
            errors: BTreeMap::new(),
        }
    }
}

/// The run's measurements; shared by every request task.
#[derive(Debug)]
pub struct Recorder {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    seconds: Vec<Second>,
    total: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    ok: u64,
}

/// The whole run in one place, when it is over.
#[derive(Debug, Clone)]
pub struct Totals {
    pub seconds: Vec<Second>,
    pub latency: Histogram<u64>,
    pub errors: BTreeMap<String, u64>,
    pub ok: u64,
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, MAX_US)
}

impl Recorder {
    /// A recorder for a run of about `seconds` (it grows if the run is longer).
    pub fn new(seconds: f64) -> Self {
        let n = seconds.ceil().max(1.0) as usize;
        Self {
            inner: Mutex::new(Inner {
                seconds: (0..n).map(|_| Second::new()).collect(),
                total: histogram(),
                errors: BTreeMap::new(),
                ok: 0,
            }),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A request due at `due` went out `lag` late (`sent`), or was not
    /// started at all (`!sent`: counted as the error `not_sent`).
    pub fn due(&self, due: Duration, lag: Duration, sent: bool) {
        self.with(|i| {
            let s = i.second(due);
            s.due += 1;
            if sent {
                s.sent += 1;
                let _ = s.send_lag.record(micros(lag));
            } else {
                *s.errors.entry("not_sent".into()).or_default() += 1;
                *i.errors.entry("not_sent".into()).or_default() += 1;
            }
        });
    }

    /// The answer to a request due at `due` came at `at` (both from the
    /// start): a success, or an error of `kind`.
    pub fn answered(&self, due: Duration, at: Duration, error: Option<&str>) {
        let latency = micros(at.saturating_sub(due));
        self.with(|i| match error {
            None => {
                i.ok += 1;
                let _ = i.total.record(latency);
                let _ = i.second(due).latency.record(latency);
                i.second(at).answered_ok += 1;
            }
            Some(kind) => {
                *i.errors.entry(kind.to_owned()).or_default() += 1;
                *i.second(due).errors.entry(kind.to_owned()).or_default() += 1;
                i.second(at).answered_error += 1;
            }
        });
    }

    pub fn totals(&self) -> Totals {
        self.with(|i| Totals {
            seconds: i.seconds.clone(),
            latency: i.total.clone(),
            errors: i.errors.clone(),
            ok: i.ok,
        })
    }
}

impl Inner {
    fn second(&mut self, at: Duration) -> &mut Second {
        let k = at.as_secs() as usize;
        while self.seconds.len() <= k {
            self.seconds.push(Second::new());
        }
        &mut self.seconds[k]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_counts_from_the_intended_time_and_answers_by_their_second() {
        let r = Recorder::new(2.0);
        let ms = Duration::from_millis;
        r.due(ms(100), ms(0), true);
        // Sent late and answered late: 1.9 s from when it was due.
        r.due(ms(200), ms(1500), true);
        r.answered(ms(100), ms(110), None);
        r.answered(ms(200), ms(2100), None);
        r.due(ms(1200), ms(0), false);
        r.due(ms(1300), ms(0), true);
        r.answered(ms(1300), ms(1400), Some("http_503"));
        let t = r.totals();
        assert_eq!(t.ok, 2);
        assert_eq!(t.seconds.len(), 3);
        assert_eq!(t.seconds[0].due, 2);
        assert_eq!(t.seconds[0].latency.len(), 2);
        assert!(t.seconds[0].latency.max() >= 1_899_000);
        assert_eq!(t.seconds[0].answered_ok, 1);
        assert_eq!(t.seconds[2].answered_ok, 1);
        assert_eq!(t.seconds[1].due, 2);
        assert_eq!(t.seconds[1].sent, 1);
        assert_eq!(t.seconds[1].answered_error, 1);
        assert_eq!(t.errors["not_sent"], 1);
        assert_eq!(t.errors["http_503"], 1);
    }
}
