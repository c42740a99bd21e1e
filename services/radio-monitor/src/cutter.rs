//! Cuts a station's decoded audio into contiguous samples on the audio's
//! own sample clock, fingerprints each, and measures the level for dead air.
//!
//! # Capture instants
//! A sample is stamped with the wall-clock instant its first frame was on
//! air. Servers send a burst of buffered audio on connect (seconds of it,
//! older than now), then audio at the rate it is played. So the instant of
//! stream position `p` is estimated as the least `arrival - p` seen over the
//! decoded chunks: the burst's chunks arrive early for their position and do
//! not lower it, delays on the network only raise it. The estimate is frozen
//! when the connection's first sample is complete (the burst is long
//! decoded by then), and every later sample of the connection starts exactly
//! one sample length after the one before.
//!
//! A sample never starts before `not_before` (the end of the station's last
//! stored sample, whoever cut it): a sample that would is trimmed at the
//! front, by whole fingerprint frames, or dropped if nothing is left. So a
//! station's samples never overlap, and the burst's audio is used where it
//! is new.

use std::time::Duration;

use hendu_fingerprint::packed::pack_query;
use hendu_fingerprint::params::FRAME_SECONDS;
use hendu_fingerprint::{Fingerprinter, Peak};
use time::OffsetDateTime;

/// The shortest end of a connection kept as a sample.
pub const MIN_TAIL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
pub struct CutterConfig {
    /// Length of a sample.
    pub sample: Duration,
    /// Below this level (dBFS, RMS over a second) a second counts as silent.
    pub silence_dbfs: f64,
}

/// A finished sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Cut {
    pub captured_at: OffsetDateTime,
    pub duration_ms: u32,
    /// Packed peaks, frames from the sample's start.
    pub peaks: Vec<u8>,
    /// The first sample of this connection (a gap may come before it).
    pub first: bool,
}

/// What the cutter has to say after a chunk.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Sample(Cut),
    /// Once a second of audio: how long the audio has been silent (0 when
    /// the last second was not).
    Level {
        silent_s: f64,
    },
}

#[derive(Debug)]
struct Current {
    fingerprinter: Fingerprinter,
    peaks: Vec<Peak>,
    /// Frames still to take into this sample.
    left: u64,
    /// The sample's number in this connection.
    index: u64,
}

/// One connection's cutter (a new connection is a new time line).
#[derive(Debug)]
pub struct Cutter {
    config: CutterConfig,
    not_before: Option<OffsetDateTime>,
    rate: u32,
    /// Frames seen since the connection opened.
    pos: u64,
    /// Least `arrival - position` seen, in nanoseconds since the epoch.
    anchor_ns: Option<i128>,
    /// The first sample's instant, once its timing is frozen.
    base: Option<OffsetDateTime>,
    current: Option<Current>,
    samples: u64,
    /// Whether a sample came out of this connection yet.
    emitted: bool,
    level_sum: f64,
    level_frames: u64,
    silent_s: f64,
}

impl Cutter {
    pub fn new(config: CutterConfig, not_before: Option<OffsetDateTime>) -> Self {
        Self {
            config,
            not_before,
            rate: 0,
            pos: 0,
            anchor_ns: None,
            base: None,
            current: None,
            samples: 0,
            emitted: false,
            level_sum: 0.0,
            level_frames: 0,
            silent_s: 0.0,
        }
    }

    fn sample_frames(&self) -> u64 {
        (self.config.sample.as_secs_f64() * f64::from(self.rate)).round() as u64
    }

    /// Takes a chunk of mono audio at `rate` Hz that was decoded at `now`.
    ///
    /// # Panics
    /// If the rate is zero or changes (a new rate is a new connection).
    pub fn push(&mut self, samples: &[f32], rate: u32, now: OffsetDateTime, out: &mut Vec<Output>) {
        assert!(
            rate > 0 && (self.rate == 0 || self.rate == rate),
            "the rate is fixed"
        );
        self.rate = rate;
        let end = self.pos + samples.len() as u64;
        if self.base.is_none() {
            let estimate =
                now.unix_timestamp_nanos() - i128::from(end) * 1_000_000_000 / i128::from(rate);
            self.anchor_ns = Some(self.anchor_ns.map_or(estimate, |a| a.min(estimate)));
        }
        self.level(samples, out);
        let mut rest = samples;
        while !rest.is_empty() {
            let frames = self.sample_frames();
            let current = self.current.get_or_insert_with(|| Current {
                fingerprinter: Fingerprinter::for_query(rate),
                peaks: Vec::new(),
                left: frames,
                index: self.samples,
            });
            let n = (current.left as usize).min(rest.len());
            current.fingerprinter.push(&rest[..n], &mut current.peaks);
            current.left -= n as u64;
            rest = &rest[n..];
            if current.left == 0 {
                let done = self.current.take().expect("a sample is being cut");
                self.samples += 1;
                if let Some(cut) = self.finish(done, frames) {
                    out.push(Output::Sample(cut));
                }
            }
        }
        self.pos = end;
    }

    /// The connection's first instant, frozen at the first sample's end.
    fn base(&mut self) -> OffsetDateTime {
        if let Some(base) = self.base {
            return base;
        }
        let anchor = self.anchor_ns.unwrap_or_default();
        // Whole milliseconds (what the store keeps), rounded up.
        let ms = ceil_div(anchor, 1_000_000);
        let base = OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        self.base = Some(base);
        base
    }

    /// The stream ended: the sample being cut is kept if it holds at least
    /// [`MIN_TAIL`] of audio (a station that drops every 20 s still gives
    /// samples), shorter than the others.
    pub fn end(&mut self, out: &mut Vec<Output>) {
        let Some(done) = self.current.take() else {
            return;
        };
        let taken = self.sample_frames() - done.left;
        if (taken as f64) < MIN_TAIL.as_secs_f64() * f64::from(self.rate) {
            return;
        }
        self.samples += 1;
        if let Some(cut) = self.finish(done, taken) {
            out.push(Output::Sample(cut));
        }
    }

    /// `done`, holding `frames` of audio, as a sample.
    fn finish(&mut self, mut done: Current, frames: u64) -> Option<Cut> {
        done.fingerprinter.finish(&mut done.peaks);
        let mut sparse = Vec::new();
        done.fingerprinter.take_sparse(&mut sparse);
        let step_ms = self.config.sample.as_millis() as i64;
        let length_ms = (i128::from(frames) * 1000 / i128::from(self.rate)) as i64;
        let mut captured_at =
            self.base() + time::Duration::milliseconds(step_ms * done.index as i64);
        let mut duration_ms = length_ms;
        let mut peaks = done.peaks;
        if let Some(not_before) = self.not_before
            && captured_at < not_before
        {
            // Trim the front by whole frames.
            let overlap_ns = (not_before - captured_at).whole_nanoseconds();
            let frame_ns = (FRAME_SECONDS * 1e9).round() as i128;
            let frames = ceil_div(overlap_ns, frame_ns);
            let trimmed_ms = (frames * frame_ns / 1_000_000) as i64;
            if trimmed_ms >= length_ms {
                return None;
            }
            let cut_at = u32::try_from(frames).unwrap_or(u32::MAX);
            for list in [&mut peaks, &mut sparse] {
                list.retain(|p| p.frame >= cut_at);
                for p in list.iter_mut() {
                    p.frame -= cut_at;
                }
            }
            captured_at += time::Duration::milliseconds(trimmed_ms);
            duration_ms -= trimmed_ms;
        }
        let first = !self.emitted;
        self.emitted = true;
        self.not_before = None;
        Some(Cut {
            captured_at,
            duration_ms: duration_ms as u32,
            peaks: pack_query(&peaks, &sparse),
            first,
        })
    }

    /// Sums the level per second of audio; reports each second.
    fn level(&mut self, samples: &[f32], out: &mut Vec<Output>) {
        let second = u64::from(self.rate);
        let mut rest = samples;
        while !rest.is_empty() {
            let n = ((second - self.level_frames) as usize).min(rest.len());
            self.level_sum += rest[..n]
                .iter()
                .map(|&s| f64::from(s) * f64::from(s))
                .sum::<f64>();
            self.level_frames += n as u64;
            rest = &rest[n..];
            if self.level_frames == second {
                let rms = (self.level_sum / second as f64).sqrt();
                let dbfs = 20.0 * rms.max(1e-10).log10();
                if dbfs < self.config.silence_dbfs {
                    self.silent_s += 1.0;
                } else {
                    self.silent_s = 0.0;
                }
                out.push(Output::Level {
                    silent_s: self.silent_s,
                });
                self.level_sum = 0.0;
                self.level_frames = 0;
            }
        }
    }
}

/// `a / b` rounded towards positive infinity (`b` positive).
fn ceil_div(a: i128, b: i128) -> i128 {
    a.div_euclid(b) + i128::from(a.rem_euclid(b) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 8000;

    fn config() -> CutterConfig {
        CutterConfig {
            sample: Duration::from_secs(30),
            silence_dbfs: -50.0,
        }
    }

    fn at(s: f64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_780_000_000).unwrap() + time::Duration::seconds_f64(s)
    }

    fn tone(seconds: f64, amplitude: f32) -> Vec<f32> {
        (0..(seconds * f64::from(RATE)) as usize)
            .map(|i| amplitude * (i as f32 * 0.3).sin())
            .collect()
    }

    /// Feeds `audio` in 100 ms chunks, the first `burst_s` of it at once at
    /// `t0`, the rest at the rate it plays (each chunk decoded when its last
    /// frame arrives).
    fn stream(cutter: &mut Cutter, audio: &[f32], t0: f64, burst_s: f64) -> Vec<Output> {
        let mut out = Vec::new();
        let chunk = RATE as usize / 10;
        for (i, part) in audio.chunks(chunk).enumerate() {
            let end_s = ((i + 1) * chunk) as f64 / f64::from(RATE);
            let now = if end_s <= burst_s {
                t0
            } else {
                t0 + end_s - burst_s
            };
            cutter.push(part, RATE, at(now), &mut out);
        }
        out
    }

    fn cuts(out: &[Output]) -> Vec<&Cut> {
        out.iter()
            .filter_map(|o| match o {
                Output::Sample(c) => Some(c),
                Output::Level { .. } => None,
            })
            .collect()
    }

    #[test]
    fn samples_are_contiguous_and_stamped_with_the_air_time_despite_the_burst() {
        let mut cutter = Cutter::new(config(), None);
        // 4 s of burst: the stream's first frame went on air at t0 - 4 s.
        let out = stream(&mut cutter, &tone(100.0, 0.3), 100.0, 4.0);
        let cuts = cuts(&out);
        assert_eq!(cuts.len(), 3);
        let error = (cuts[0].captured_at - at(96.0)).as_seconds_f64();
        assert!(error.abs() < 0.01, "{error}");
        for w in cuts.windows(2) {
            assert_eq!(
                w[1].captured_at - w[0].captured_at,
                time::Duration::seconds(30)
            );
        }
        assert!(cuts[0].first && !cuts[1].first);
        assert!(
            cuts.iter()
                .all(|c| c.duration_ms == 30_000 && !c.peaks.is_empty())
        );
    }

    fn end(c: &Cut) -> OffsetDateTime {
        c.captured_at + time::Duration::milliseconds(i64::from(c.duration_ms))
    }

    #[test]
    fn a_sample_never_starts_before_the_stored_ones_end() {
        // The last stored sample ends 3 s into this connection's audio.
        let not_before = at(99.0);
        let mut cutter = Cutter::new(config(), Some(not_before));
        let out = stream(&mut cutter, &tone(70.0, 0.3), 100.0, 4.0);
        let cut = cuts(&out);
        assert_eq!(cut.len(), 2);
        // Trimmed by whole 16 ms frames: starts within a frame after.
        assert!(cut[0].captured_at >= not_before);
        assert!(cut[0].captured_at - not_before < time::Duration::milliseconds(16));
        assert!(cut[0].duration_ms < 27_000 && cut[0].first);
        // The next sample starts where the trimmed one ends.
        assert_eq!(end(cut[0]), cut[1].captured_at);
        assert_eq!(cut[1].duration_ms, 30_000);

        // Stored samples reaching past the first sample: it is dropped,
        // the second is trimmed.
        let mut cutter = Cutter::new(config(), Some(at(96.0 + 45.0)));
        let out = stream(&mut cutter, &tone(100.0, 0.3), 100.0, 4.0);
        let cut = cuts(&out);
        assert_eq!(cut.len(), 2);
        assert!(cut[0].first && cut[0].captured_at >= at(141.0));
        assert_eq!(end(cut[0]), cut[1].captured_at);

        // Stored samples ending long before: a gap, nothing trimmed.
        let mut cutter = Cutter::new(config(), Some(at(10.0)));
        let out = stream(&mut cutter, &tone(40.0, 0.3), 100.0, 4.0);
        let cut = cuts(&out);
        assert_eq!(cut[0].duration_ms, 30_000);
        assert!((cut[0].captured_at - at(96.0)).as_seconds_f64().abs() < 0.01);
    }

    #[test]
    fn a_connection_that_ends_keeps_a_tail_of_ten_seconds_or_more() {
        // 30 s, then 12.5 s: the tail is a shorter sample right after.
        let mut cutter = Cutter::new(config(), None);
        let mut out = stream(&mut cutter, &tone(42.5, 0.3), 100.0, 0.0);
        cutter.end(&mut out);
        let cut = cuts(&out);
        assert_eq!(cut.len(), 2);
        assert_eq!(end(cut[0]), cut[1].captured_at);
        assert_eq!(cut[1].duration_ms, 12_500);
        assert!(!cut[1].peaks.is_empty());
        // A tail under ten seconds is let go.
        let mut cutter = Cutter::new(config(), None);
        let mut out = stream(&mut cutter, &tone(39.0, 0.3), 100.0, 0.0);
        cutter.end(&mut out);
        assert_eq!(cuts(&out).len(), 1);
        // A connection shorter than a sample still gives one.
        let mut cutter = Cutter::new(config(), None);
        let mut out = stream(&mut cutter, &tone(20.0, 0.3), 100.0, 0.0);
        cutter.end(&mut out);
        let cut = cuts(&out);
        assert_eq!(cut.len(), 1);
        assert!(cut[0].first && cut[0].duration_ms == 20_000);
    }

    #[test]
    fn dead_air_is_counted_in_seconds_and_ends_with_sound() {
        let mut cutter = Cutter::new(config(), None);
        let mut audio = tone(3.0, 0.3);
        audio.extend(tone(5.0, 0.0001)); // -80 dBFS
        audio.extend(tone(2.0, 0.3));
        let out = stream(&mut cutter, &audio, 0.0, 0.0);
        let levels: Vec<f64> = out
            .iter()
            .filter_map(|o| match o {
                Output::Level { silent_s } => Some(*silent_s),
                Output::Sample(_) => None,
            })
            .collect();
        assert_eq!(levels, [0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 0.0, 0.0]);
    }
}
